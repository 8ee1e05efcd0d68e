"""Topologies: a cluster file seen as a networkx graph of nodes, regions and WAN links.

Theory of operation
-------------------
A topology file *is* an exapyte config file (see ``docs/topologies.md``): ``cluster.nodes`` says
where each node listens and in which region it lives, ``cluster.regions`` declares the regions and
``cluster.links`` gives the one-way latency between two regions. :func:`load` validates the file
with :func:`exapyte.config.load` and then checks what a topology needs on top of a config:

- every region that holds a node is declared, and every pair of such regions has a link (a WAN
  latency must be known for every inter-region path, or the harness could not model it);
- a link is declared once (``a``/``b`` in either order) and never joins a region to itself.

The graph has one vertex per **node** (attributes ``region``, ``host``, ``port``, ``pub_port``)
and an edge between every two nodes (attributes ``latency_ms``: the one-way latency, 0 inside a
region, and ``wan``: whether the edge crosses regions). ``graph.graph`` keeps the ``regions``
(id -> name) and the ``region_links`` ({a, b} -> latency_ms). :func:`region_graph` gives the
region-level view. Every function here is pure except :func:`draw`, which writes a PNG.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx

from exapyte import config as config_mod
from exapyte.config import Config
from exapyte.errors import ConfigError

__all__ = [
    "TopologyError",
    "describe",
    "draw",
    "from_config",
    "latency_ms",
    "load",
    "nodes_in_region",
    "region_graph",
    "region_of",
    "regions",
]


class TopologyError(ConfigError):
    """A topology file is unreadable, invalid as a config, or incomplete as a topology."""


def load(path: str | Path) -> nx.Graph:
    """Read and validate a topology file; returns its node graph. Raises :class:`TopologyError`."""
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        raise TopologyError(f"bad topology file: {exc}") from None
    try:
        graph = from_config(cfg)
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None
    graph.graph["source"] = str(path)
    return graph


def from_config(cfg: Config) -> nx.Graph:
    """The node graph of an already validated config (see the module docstring)."""
    declared = {r.id: (r.name or r.id) for r in cfg.cluster.regions}
    used = list(dict.fromkeys(n.region for n in cfg.cluster.nodes))
    if not declared:
        if len(used) > 1:
            raise TopologyError(
                f"field 'cluster.regions': nodes use regions {used} but none is declared; "
                "declare each region and a link between every two of them"
            )
        declared = {used[0]: used[0]}
    links: dict[frozenset[str], float] = {}
    for i, link in enumerate(cfg.cluster.links):
        pair = frozenset((link.a, link.b))
        if len(pair) == 1:
            raise TopologyError(
                f"field 'cluster.links[{i}]': a link joins two different regions, got {link.a!r} twice"
            )
        if pair in links:
            raise TopologyError(
                f"field 'cluster.links[{i}]': the link {link.a}-{link.b} is declared more than once"
            )
        links[pair] = float(link.latency_ms)
    for a, b in itertools.combinations(used, 2):
        if frozenset((a, b)) not in links:
            raise TopologyError(
                f"field 'cluster.links': no link between regions {a!r} and {b!r}; every two regions "
                "that hold nodes need a link with its one-way latency_ms"
            )
    graph = nx.Graph(regions=declared, region_links=links, protocol=cfg.consensus.protocol)
    for spec in cfg.cluster.nodes:
        graph.add_node(
            spec.id, region=spec.region, host=spec.host, port=spec.port, pub_port=spec.resolved_pub_port
        )
    for a, b in itertools.combinations(cfg.cluster.nodes, 2):
        wan = a.region != b.region
        graph.add_edge(
            a.id, b.id, latency_ms=links[frozenset((a.region, b.region))] if wan else 0.0, wan=wan
        )
    return graph


def region_of(graph: nx.Graph, node: str) -> str:
    return str(graph.nodes[node]["region"])


def regions(graph: nx.Graph) -> list[str]:
    """Regions that hold at least one node, in the order their first node appears."""
    return list(dict.fromkeys(region_of(graph, n) for n in graph.nodes))


def nodes_in_region(graph: nx.Graph, region: str) -> list[str]:
    return [n for n in graph.nodes if region_of(graph, n) == region]


def latency_ms(graph: nx.Graph, a: str, b: str) -> float:
    """One-way latency between two nodes (0 within a region)."""
    if a == b:
        return 0.0
    return float(graph.edges[a, b]["latency_ms"])


def region_graph(graph: nx.Graph) -> nx.Graph:
    """One vertex per region (attribute ``nodes``), one edge per link (``latency_ms``)."""
    out = nx.Graph()
    for region in regions(graph):
        out.add_node(region, nodes=nodes_in_region(graph, region), name=graph.graph["regions"].get(region, region))
    for pair, latency in graph.graph["region_links"].items():
        a, b = sorted(pair)
        if a in out and b in out:
            out.add_edge(a, b, latency_ms=latency)
    return out


def _layout(graph: nx.Graph) -> dict[str, tuple[float, float]]:
    """Regions on a circle, each region's nodes on a small circle around its centre."""
    import math

    region_list = regions(graph)
    pos: dict[str, tuple[float, float]] = {}
    for r_index, region in enumerate(region_list):
        angle = 2 * math.pi * r_index / max(1, len(region_list)) + math.pi / 2
        cx, cy = (math.cos(angle), math.sin(angle)) if len(region_list) > 1 else (0.0, 0.0)
        members = nodes_in_region(graph, region)
        for n_index, node in enumerate(members):
            a = 2 * math.pi * n_index / max(1, len(members))
            radius = 0.22 if len(members) > 1 else 0.0
            pos[node] = (cx + radius * math.cos(a), cy + radius * math.sin(a))
    return pos


def draw(graph: nx.Graph, path: str | Path, *, title: str | None = None, cut: Iterable[tuple[str, str]] = ()) -> Path:
    """Write a PNG of the topology: nodes coloured by region, WAN links labelled with latency.

    ``cut`` lists directed pairs to draw as cut (dashed red), e.g. the links of a partition.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    pos = _layout(graph)
    region_list = regions(graph)
    cmap = plt.get_cmap("tab10")
    colour = {r: cmap(i % 10) for i, r in enumerate(region_list)}
    cut_pairs = {frozenset(p) for p in cut}
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    try:
        intra = [(a, b) for a, b, d in graph.edges(data=True) if not d["wan"]]
        wan = [(a, b) for a, b, d in graph.edges(data=True) if d["wan"]]
        nx.draw_networkx_edges(graph, pos, edgelist=intra, ax=ax, edge_color="#999999", width=1.5)
        nx.draw_networkx_edges(graph, pos, edgelist=wan, ax=ax, edge_color="#cccccc", width=1.0, style="dotted")
        if cut_pairs:
            cut_edges = [(a, b) for a, b in graph.edges if frozenset((a, b)) in cut_pairs]
            nx.draw_networkx_edges(graph, pos, edgelist=cut_edges, ax=ax, edge_color="#d62728", width=2.0, style="dashed")
        nx.draw_networkx_nodes(
            graph, pos, ax=ax, node_size=900,
            node_color=[colour[region_of(graph, n)] for n in graph.nodes], edgecolors="#333333",
        )
        nx.draw_networkx_labels(graph, pos, ax=ax, font_size=10, font_color="white", font_weight="bold")
        rg = region_graph(graph)
        centres = {
            r: (
                sum(pos[n][0] for n in rg.nodes[r]["nodes"]) / len(rg.nodes[r]["nodes"]),
                sum(pos[n][1] for n in rg.nodes[r]["nodes"]) / len(rg.nodes[r]["nodes"]),
            )
            for r in rg.nodes
        }
        for a, b, d in rg.edges(data=True):
            (x1, y1), (x2, y2) = centres[a], centres[b]
            ax.plot([x1, x2], [y1, y2], color="#4c72b0", alpha=0.35, linewidth=6, zorder=0)
            ax.text((x1 + x2) / 2, (y1 + y2) / 2, f"{d['latency_ms']:g} ms", ha="center", va="center",
                    fontsize=9, bbox={"boxstyle": "round", "fc": "white", "ec": "#4c72b0", "alpha": 0.9})
        points = [tuple(p) for p in pos.values()]
        for r, (x, y) in centres.items():
            norm = (x * x + y * y) ** 0.5
            dx, dy = (x / norm * 0.42, y / norm * 0.42) if norm > 1e-9 else (0.0, 0.35)
            ax.text(x + dx, y + dy, graph.graph["regions"].get(r, r),
                    ha="center", va="center", fontsize=11, color=colour[r], fontweight="bold")
            points.append((x + dx, y + dy))
        ax.set_title(title or f"{graph.number_of_nodes()} nodes in {len(region_list)} region(s)")
        ax.set_axis_off()
        # Texts do not take part in autoscaling: frame every node and region label explicitly,
        # with room for the labels' width, so nothing runs into the title or the edge.
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.set_xlim(min(xs) - 0.45, max(xs) + 0.45)
        ax.set_ylim(min(ys) - 0.2, max(ys) + 0.2)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def describe(graph: nx.Graph) -> dict[str, Any]:
    """A JSON-ready summary: regions with their nodes, and the region links."""
    return {
        "nodes": {n: dict(graph.nodes[n]) for n in graph.nodes},
        "regions": {r: nodes_in_region(graph, r) for r in regions(graph)},
        "links": [
            {"a": sorted(p)[0], "b": sorted(p)[1], "latency_ms": v}
            for p, v in graph.graph["region_links"].items()
        ],
    }
