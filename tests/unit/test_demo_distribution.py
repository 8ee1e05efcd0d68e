"""The distribution demo end to end with tiny parameters: results.json's fields, the PNGs, and
measured figures against hand-computed ones (the hops of a strong read, the keys a node add
moves in the centralized group)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exapyte import cli
from exapyte.demos import distribution
from exapyte.demos.distribution import DistParams
from exapyte.demos.placement_plots import short_name
from exapyte.distribution import ShardedStrategy

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "three-region.json"
TINY = DistParams(
    topology=str(TOPOLOGY), shards=3, shards_per_region=2, keys_per_region=12,
    clients_per_region=1, steady_s=1.5, hop_requests=3, workers=1,
)
REGIONS = ["us-east", "us-west", "ap-northeast"]
FOUNDERS = ["n1", "n2", "n3", "n4", "n5"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("distribution")
    assert distribution.main(str(out), params=TINY) == 0
    return json.loads((out / "results.json").read_text()), out


def test_results_hold_every_measure_for_every_strategy(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    assert results["topology"]["regions"] == REGIONS
    assert sorted(results["strategies"]) == sorted(distribution.STRATEGIES)
    keys = TINY.keys_per_region * len(REGIONS)
    for name, entry in results["strategies"].items():
        assert entry["preload"] == {"keys": keys, "failed": 0}, name
        nodes = entry["load"]["per_node"]
        assert sorted(nodes) == [*FOUNDERS, "n6"] and nodes["n6"]["spare"]
        assert nodes["n6"]["keys_held"] == 0 and nodes["n6"]["replicas"] == 0, name
        assert entry["load"]["requests_served"] == sum(n["requests_served"] for n in nodes.values())
        assert entry["load"]["requests_served"] > 0, name
        for region in REGIONS:
            lat = entry["latency"][region]
            for op in ("write", "read"):
                if lat[op]["count"]:
                    assert 0 < lat[op]["p50_ms"] <= lat[op]["p99_ms"], (name, region, op)
            assert lat["write"]["count"] + lat["read"]["count"] > 0, (name, region)
        hops = entry["hops"]
        assert hops["requests"] == 2 * TINY.hop_requests * len(REGIONS)
        assert hops["completed"] == hops["requests"], name
        assert hops["per_request"] is not None and hops["per_request"] >= 0
        move = entry["move"]
        assert move["node"] == "n6" and move["region"] == TINY.add_region
        assert move["ideal_fraction"] == pytest.approx(1 / 6, abs=1e-4)
        assert 0 < move["keys_changed_fraction"] <= 1 and 0 < move["assignments_moved_fraction"] <= 1
        assert move["executed"] and move["after_source"] == "simulator", (name, move["error"])
        assert move["after_matches_plan"], name
        assert any("n6" in g["voters"] for g in move["placement_after"].values()), name
        assert move["keys_held_after"]["n6"] > 0, name  # the added node caught up
        assert entry["invariant_checks"] > 0


def test_every_founder_holds_every_key_in_the_centralized_group(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    nodes = results["strategies"]["centralized"]["load"]["per_node"]
    keys = TINY.keys_per_region * len(REGIONS)
    assert [nodes[n]["keys_held"] for n in FOUNDERS] == [keys] * 5
    # only the leader (pinned to n1) answers: strong reads and writes all go to it
    assert [nodes[n]["requests_served"] > 0 for n in FOUNDERS] == [True, False, False, False, False]


def test_hierarchical_keys_stay_in_their_region(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    entry = results["strategies"]["hierarchical"]
    nodes = entry["load"]["per_node"]
    # each region's keys voted on by its own nodes only (12 keys per region, every region node
    # votes on them); async replication, the hierarchical default, adds one learner per other
    # region, so a node also holds copies of other regions' keys
    assert all(nodes[n]["keys_held"] >= TINY.keys_per_region for n in FOUNDERS)
    for group, spec in entry["placement_before"].items():
        region = group.split("/")[0]
        assert {nodes[v]["region"] for v in spec["voters"]} == {region}
        learner_regions = sorted(nodes[n]["region"] for n in spec["learners"])
        assert learner_regions == sorted(set(REGIONS) - {region}), group
    # a request on a key of the client's region never leaves the region
    local = [s for s in entry["hops"]["samples"] if s["local"]]
    assert local and all(s["hops"] == 0 for s in local)


def test_a_strong_read_crosses_regions_as_often_as_counted_by_hand(
    run: tuple[dict[str, Any], Path],
) -> None:
    """Centralized, leader n1 (us-east): a strong read is one read-index heartbeat round, a
    Heartbeat and its answer with each follower. From a client in us-east that is 2 x 3 = 6
    messages across regions (n3, n4 in us-west, n5 in Tokyo; n2 is next door); from us-west 6
    plus the request and its answer over the WAN = 8."""
    results, _ = run
    entry = results["strategies"]["centralized"]
    assert entry["leaders_pinned"] == 1
    reads = [s for s in entry["hops"]["samples"] if s["op"] == "read" and s["leader"] == "n1"]
    assert len(reads) == TINY.hop_requests * len(REGIONS)
    by_region = {r: {s["hops"] for s in reads if s["region"] == r} for r in REGIONS}
    assert by_region == {"us-east": {6}, "us-west": {8}, "ap-northeast": {8}}
    # a write's entry reaches each of the three remote followers and is acknowledged: >= 6
    writes = [s for s in entry["hops"]["samples"] if s["op"] == "write" and s["region"] == "us-east"]
    assert writes and all(s["by_category"]["replication"] >= 6 for s in writes)


def test_the_keys_a_node_add_moves_match_a_hand_count(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    central = results["strategies"]["centralized"]["move"]
    # the one group gains n6: every key's replica set changes, one assignment in five is new
    assert central["keys_changed_fraction"] == 1.0
    assert central["assignments_moved_fraction"] == pytest.approx(1 / 5)
    # sharded: recount from the placements in results.json and the key names
    entry = results["strategies"]["sharded"]
    strategy = ShardedStrategy(TINY.shards, TINY.virtual_nodes)
    before = {g: set(v["voters"] + v["learners"]) for g, v in entry["placement_before"].items()}
    after = {g: set(v["voters"] + v["learners"]) for g, v in entry["move"]["planned_after"].items()}
    keys = [f"{r}:k{i:04d}" for r in REGIONS for i in range(TINY.keys_per_region)]
    changed = sum(before[strategy.shard_of(k)] != after[strategy.shard_of(k)] for k in keys)
    assert entry["move"]["keys_changed_fraction"] == pytest.approx(changed / len(keys), abs=1e-4)


def test_the_placement_pngs_are_written(run: tuple[dict[str, Any], Path]) -> None:
    _, out = run
    for name in distribution.STRATEGIES:
        data = (out / f"placement_{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name


def test_shard_names_in_the_plots() -> None:
    assert short_name("s0003") == "3"
    assert short_name("us-east/s0001") == "ue1"
    assert short_name("default") == "default"


def test_bad_parameters_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="remote_share"):
        distribution.params_from(["remote_share=2"])
    with pytest.raises(ValueError, match="allowed: centralized"):
        distribution.params_from(["strategies=ring"])
    assert cli.main(["--demo", "distribution", "--param", "nope=1"]) == 2
    assert cli.main(["--demo", "distribution", "--real"]) == 2
