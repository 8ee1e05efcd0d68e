"""The distribution demo's plots (networkx on matplotlib, no display): for each strategy, the
topology with where every shard's replicas and leader sit, before and after the node add.

Each function reads ``results.json``'s content only, so plots can be redrawn from a saved run.
A node is drawn in its region's colour (the added node hatched grey while it holds nothing),
region links carry their one-way latency, and under each node its shards are listed: ``[3]``
when the node leads shard 3, ``3`` when it holds a replica. A hierarchical shard is named by
its region's initials and index (``ue1`` for ``us-east/s0001``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import networkx as nx  # noqa: E402

from exapyte.control import topology as topo  # noqa: E402

SHARDS_PER_LINE = 6
NODE_SPACING = 0.55  # between two nodes of a region, room for their shard lists


def short_name(shard: str) -> str:
    """``s0003`` -> ``3``; ``us-east/s0001`` -> ``ue1``; ``default`` stays."""
    region, sep, base = shard.rpartition("/")
    index = str(int(base[1:])) if base.startswith("s") and base[1:].isdigit() else base
    if not sep:
        return index
    return "".join(part[0] for part in region.split("-") if part) + index


def node_graph(results: dict[str, Any], spare: str, spare_region: str) -> nx.Graph:
    """The topology's nodes plus the added one, every two joined (latency on WAN edges)."""
    nodes = dict(results["topology"]["nodes"])
    nodes[spare] = spare_region
    regions = results["topology"]["regions"]
    latency = {frozenset((link["a"], link["b"])): float(link["latency_ms"])
               for link in results["topology"]["links"]}
    graph = nx.Graph(regions={r: r for r in regions}, region_links=latency)
    for node, region in nodes.items():
        graph.add_node(node, region=region)
    for a in nodes:
        for b in nodes:
            if a < b:
                wan = nodes[a] != nodes[b]
                graph.add_edge(a, b, wan=wan,
                               latency_ms=latency.get(frozenset((nodes[a], nodes[b])), 0.0) if wan else 0.0)
    return graph


def layout(graph: nx.Graph) -> dict[str, tuple[float, float]]:
    """Regions on a circle, each region's nodes side by side around its centre."""
    import math

    region_list = topo.regions(graph)
    pos: dict[str, tuple[float, float]] = {}
    for r_index, region in enumerate(region_list):
        angle = 2 * math.pi * r_index / max(1, len(region_list)) + math.pi / 2
        cx, cy = (1.2 * math.cos(angle), 1.2 * math.sin(angle)) if len(region_list) > 1 else (0.0, 0.0)
        members = topo.nodes_in_region(graph, region)
        for n_index, node in enumerate(members):
            pos[node] = (cx + NODE_SPACING * (n_index - (len(members) - 1) / 2), cy)
    return pos


def _shard_lines(placement: dict[str, dict[str, Any]], node: str) -> str:
    held = [(g, v["leader"] == node) for g, v in sorted(placement.items())
            if node in v["voters"] + v["learners"]]
    if not held:
        return "(nothing)"
    names = [f"[{short_name(g)}]" if leads else short_name(g) for g, leads in held]
    lines = [" ".join(names[i : i + SHARDS_PER_LINE]) for i in range(0, len(names), SHARDS_PER_LINE)]
    leads = sum(1 for _, lead in held if lead)
    return f"{len(held)} replicas, {leads} led\n" + "\n".join(lines)


def _draw_panel(ax: Any, graph: nx.Graph, placement: dict[str, dict[str, Any]], spare: str,
                title: str) -> None:
    pos = layout(graph)
    region_list = topo.regions(graph)
    cmap = plt.get_cmap("tab10")
    colour = {r: cmap(i % 10) for i, r in enumerate(region_list)}
    empty = not any(spare in v["voters"] + v["learners"] for v in placement.values())
    intra = [(a, b) for a, b, d in graph.edges(data=True) if not d["wan"]]
    nx.draw_networkx_edges(graph, pos, edgelist=intra, ax=ax, edge_color="#999999", width=1.5)
    nx.draw_networkx_nodes(
        graph, pos, ax=ax, node_size=700, edgecolors="#333333",
        node_color=["#bbbbbb" if (n == spare and empty) else colour[topo.region_of(graph, n)]
                    for n in graph.nodes],
    )
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=9, font_color="white", font_weight="bold")
    centres: dict[str, tuple[float, float]] = {}
    for region in region_list:
        members = topo.nodes_in_region(graph, region)
        centres[region] = (sum(pos[n][0] for n in members) / len(members),
                           sum(pos[n][1] for n in members) / len(members))
    for pair, ms in graph.graph["region_links"].items():
        a, b = sorted(pair)
        (x1, y1), (x2, y2) = centres[a], centres[b]
        ax.plot([x1, x2], [y1, y2], color="#4c72b0", alpha=0.3, linewidth=6, zorder=0)
        ax.text((x1 + x2) / 2, (y1 + y2) / 2, f"{ms:g} ms", ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "fc": "white", "ec": "#4c72b0", "alpha": 0.9})
    for region, (x, y) in centres.items():
        ax.text(x, y + 0.16, region, ha="center", va="center",
                fontsize=10, color=colour[region], fontweight="bold")
    for node, (x, y) in pos.items():
        ax.text(x, y - 0.09, _shard_lines(placement, node), ha="center", va="top", fontsize=6.5,
                family="monospace",
                bbox={"boxstyle": "round", "fc": "white", "ec": "#cccccc", "alpha": 0.85})
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.35, max(xs) + 0.35)
    ax.set_ylim(min(ys) - 0.45, max(ys) + 0.3)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def placement_figure(results: dict[str, Any], strategy: str, path: Path) -> Path:
    entry = results["strategies"][strategy]
    move = entry["move"]
    graph = node_graph(results, move["node"], move["region"])
    fig, axes = plt.subplots(1, 2, figsize=(15, 7.5), dpi=100)
    try:
        _draw_panel(axes[0], graph, entry["placement_before"], move["node"],
                    f"{strategy}: before adding {move['node']} ({entry['groups']} groups)")
        source = "run in the simulator" if move["after_source"] == "simulator" else "planned (not run)"
        _draw_panel(axes[1], graph, move["placement_after"], move["node"],
                    f"after adding {move['node']} in {move['region']}: {move['moves']} moves, "
                    f"{source}; keys whose replicas changed {move['keys_changed_fraction']:.2f}")
        fig.suptitle("[n] leads shard n; n holds a replica of it; links: one-way latency", fontsize=9)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def write_all(results: dict[str, Any], out_dir: Path) -> list[Path]:
    return [placement_figure(results, s, out_dir / f"placement_{s}.png")
            for s in results["strategies"]]
