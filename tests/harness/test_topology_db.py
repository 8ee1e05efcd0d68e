"""Topology files as graphs, and the db's proxy wiring (proxies and configs, no node process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exapyte import config as config_mod
from exapyte.control import topology as topo
from harness.db import ClusterDB, proxy_name
from harness.toxiproxy import find_or_start

REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = REPO / "topologies"


@pytest.mark.parametrize("name,nodes,regions", [("single-region", 3, 1), ("three-region", 5, 3), ("five-region", 5, 5)])
def test_the_shipped_topologies_load(name: str, nodes: int, regions: int, tmp_path: Path) -> None:
    graph = topo.load(TOPOLOGIES / f"{name}.json")
    assert graph.number_of_nodes() == nodes and len(topo.regions(graph)) == regions
    assert graph.graph["protocol"] == "raft"
    for a, b, data in graph.edges(data=True):
        assert data["wan"] == (topo.region_of(graph, a) != topo.region_of(graph, b))
        assert (data["latency_ms"] > 0) == data["wan"]
    assert topo.draw(graph, tmp_path / "t.png").stat().st_size > 10_000


def test_three_region_latencies_and_region_graph() -> None:
    graph = topo.load(TOPOLOGIES / "three-region.json")
    assert sorted(d["latency_ms"] for _, _, d in topo.region_graph(graph).edges(data=True)) == [35, 75, 90]
    assert topo.latency_ms(graph, "n1", "n2") == 0 and topo.latency_ms(graph, "n1", "n5") == 90


def test_shipped_topologies_use_their_own_port_ranges() -> None:
    seen: set[int] = set()
    for path in sorted(TOPOLOGIES.glob("*-region.json")):
        cfg = config_mod.load(path)
        ports = {n.port for n in cfg.cluster.nodes} | {n.resolved_pub_port for n in cfg.cluster.nodes}
        assert not ports & seen and not ports & {7401, 7501}
        seen |= ports


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    return path


def _cluster(links: list[dict]) -> dict:
    return {"cluster": {
        "nodes": [{"id": "a", "port": 7991, "region": "x"}, {"id": "b", "port": 7992, "region": "y"},
                  {"id": "c", "port": 7993, "region": "z"}],
        "regions": [{"id": "x"}, {"id": "y"}, {"id": "z"}], "links": links}}


def test_a_bad_topology_gets_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(topo.TopologyError, match="no link between regions 'x' and 'z'"):
        topo.load(_write(tmp_path, _cluster([{"a": "x", "b": "y", "latency_ms": 5}, {"a": "y", "b": "z", "latency_ms": 5}])))
    with pytest.raises(topo.TopologyError, match="more than once"):
        topo.load(_write(tmp_path, _cluster([{"a": "x", "b": "y"}, {"a": "y", "b": "x"}, {"a": "x", "b": "z"},
                                             {"a": "y", "b": "z"}])))
    with pytest.raises(topo.TopologyError, match="not valid JSON"):
        bad = tmp_path / "bad.json"
        bad.write_text("{nodes")
        topo.load(bad)
    with pytest.raises(topo.TopologyError, match="cannot read"):
        topo.load(tmp_path / "missing.json")
    with pytest.raises(topo.TopologyError, match="latency_ms"):
        topo.load(_write(tmp_path, _cluster([{"a": "x", "b": "y", "latency_ms": -1}])))


def test_db_dials_every_directed_link_through_its_own_proxy(tmp_path: Path) -> None:
    with find_or_start(prefer="exapyte") as handle:
        db = ClusterDB(TOPOLOGIES / "three-region.json", tmp_path, toxiproxy=handle, bugs=("stale-reads",))
        paths = db.prepare()
        try:
            assert len(db.proxies) == 5 * 4
            listens = set(db.listen.values())
            assert len(listens) == 20
            n1 = config_mod.load(paths["n1"])
            assert n1.node_id == "n1" and n1.unsafe.enabled and n1.unsafe.bugs == ("stale-reads",)
            assert n1.peer_endpoint("n5") == f"tcp://{db.listen[('n1', 'n5')]}"
            assert set(n1.network.peer_endpoints) == {"n2", "n3", "n4", "n5"}
            # WAN latency on inter-region links only, both streams.
            assert db.toxics("n1", "n5") == {"wan_upstream", "wan_downstream"}
            assert db.toxics("n1", "n2") == set()
            api = db._client.proxies()
            wan = {t.name: t for t in api[proxy_name("n1", "n5")].toxics().values()}
            assert wan["wan_upstream"].attributes["latency"] == 90
            db.cut("n1", "n2")
            db.cut("n3", "n4", mode="blackhole")
            api = db._client.proxies()
            assert api[proxy_name("n1", "n2")].enabled is False
            assert "partition_upstream" in api[proxy_name("n3", "n4")].toxics()
            db.add_toxic("n1", "n3", "spike", "latency", {"latency": 100, "jitter": 10})
            for src, dst in [("n1", "n2"), ("n3", "n4")]:
                db.uncut(src, dst)
            db.remove_toxic("n1", "n3", "spike")
            api = db._client.proxies()
            assert api[proxy_name("n1", "n2")].enabled is True
            assert set(api[proxy_name("n3", "n4")].toxics()) == set()  # same region: no WAN latency
            assert set(api[proxy_name("n1", "n3")].toxics()) == {"wan_upstream", "wan_downstream"}
        finally:
            db.teardown()
        assert handle.kind == "exapyte"
