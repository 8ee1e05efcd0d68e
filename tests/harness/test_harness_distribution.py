"""Short real-process runs of the harness on shards and on every consensus protocol.

Each starts real nodes behind per-link proxies on free ports (a copy of the topology), as
test_harness_smoke.py does; a run whose cluster does not form fails with the setup error, it
is never skipped. What they check beyond a valid verdict: every node's config carries the
protocol and the distribution; the register workload's keys cover every shard, round-robin (no
shard has two keys more than another, however few keys a slow run reached); each keyed event records its key's shard as ``group``, and each definite completion
the ``index`` and ``replica`` of its reply; the final status names a leader for every group.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from exapyte import config as config_mod
from exapyte import distribution
from exapyte.protocol import registry
from exapyte.wire import CONTROL_GROUP
from harness.history import read_events
from harness.runner import RunOutcome
from tests.harness.test_harness_smoke import run, topology_on_free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def client_events(outcome: RunOutcome) -> list[dict]:
    return [e.to_dict() for e in read_events(outcome.run_dir / "history.jsonl") if e.process != "nemesis"]


def shard_of(outcome: RunOutcome):  # type: ignore[no-untyped-def]
    cfg = config_mod.load(outcome.run_dir / "config" / "base.json")
    strategy, placement = distribution.from_config(cfg)
    return strategy.shard_of, [g.id for g in placement.groups]


def assert_routed_by_shard(outcome: RunOutcome, groups_expected: int) -> None:
    results = outcome.results
    of, groups = shard_of(outcome)
    assert len(groups) == groups_expected
    events = [e for e in client_events(outcome) if e.get("key") is not None]
    assert events
    for e in events:
        assert e["group"] == of(e["key"]), e
    definite = [e for e in events if e["type"] in ("ok", "fail")]
    # index is [term, index] of the state read or the entry written
    assert definite and all(isinstance(e.get("index"), list) and e["index"][0] >= 0 and e["index"][1] > 0
                            for e in definite if e["type"] == "ok")
    assert all(e.get("replica") in {"n1", "n2", "n3", "n4", "n5"} for e in definite if e["type"] == "ok")
    # a write is answered by a voter of its key's group (its leader)
    placement = results["cluster"]["placement"]
    for e in definite:
        if e["type"] == "ok" and e["f"] in ("write", "cas"):
            assert e["replica"] in placement[e["group"]], e
    keys_per_shard = Counter(of(k) for k in {e["key"] for e in events if e["f"] != "read" or e["type"] != "invoke"})
    assert set(keys_per_shard) == set(groups), keys_per_shard
    assert max(keys_per_shard.values()) - min(keys_per_shard.values()) <= 1, keys_per_shard
    final = results["cluster"]["final_status"]
    assert final["without_leader"] == [], final
    assert sum(final["leaders_per_node"].values()) == groups_expected
    for group, st in final["groups"].items():
        assert st["leader"] in placement[group], (group, st)
    assert final["control_leader"] in {"n1", "n2", "n3"}  # the control plane's group
    samples = [json.loads(line) for line in (outcome.run_dir / "status.jsonl").read_text().splitlines()]
    assert any(set(s.get("groups", {})) and set(s["groups"]) <= {*groups, CONTROL_GROUP} for s in samples)
    # election safety is checked in every group, the control group's included
    assert results["checkers"]["election-safety"]["evidence"]["groups"] == groups_expected + 1


def node_config(outcome: RunOutcome) -> dict:
    return json.loads((outcome.run_dir / "config" / "n1.json").read_text())


def test_sharded_run_under_partitions_and_kills_is_valid_and_routes_by_shard(tmp_path: Path) -> None:
    outcome = run(tmp_path, topology=topology_on_free_ports(tmp_path, "three-region"), distribution="sharded",
                  shards=4, nemesis=("partition", "kill"), time_s=8.0, nemesis_interval_s=1.5, ops_per_key=4)
    results = outcome.results
    assert outcome.valid is True, results["checkers"]
    cfg = node_config(outcome)
    assert cfg["distribution"] == {"strategy": "sharded", "shards": 4, "replication_factor": 3}
    assert cfg["consensus"]["protocol"] == "raft"
    assert {f["fault"] for f in results["faults"]} <= {"partition", "kill"} and results["faults"]
    assert results["cluster"]["shards"] == 4 and results["cluster"]["groups"] == 4
    assert results["cluster"]["voters_per_group"] == 3
    assert_routed_by_shard(outcome, 4)
    report = (outcome.run_dir / "report.html").read_text()
    assert "raft, sharded (4 shards)" in report and "Leaders at the end" in report


def test_hierarchical_run_on_three_regions_is_valid_and_keeps_shards_in_their_region(tmp_path: Path) -> None:
    outcome = run(tmp_path, topology=topology_on_free_ports(tmp_path, "three-region"), distribution="hierarchical",
                  shards=2, nemesis=("partition",), time_s=8.0, nemesis_interval_s=1.5, ops_per_key=3)
    results = outcome.results
    assert outcome.valid is True, results["checkers"]
    assert node_config(outcome)["distribution"]["strategy"] == "hierarchical"
    assert_routed_by_shard(outcome, 6)
    regions = {n: spec["region"] for n, spec in results["topology"]["nodes"].items()}
    placement = results["cluster"]["placement"]
    assert {g.split("/")[0] for g in placement} == {"us-east", "us-west", "ap-northeast"}
    for group, voters in placement.items():
        assert {regions[v] for v in voters} == {group.split("/")[0]}, (group, voters)
    # the replication factor is capped region by region: ap-northeast has one node, the others two
    assert results["cluster"]["voters_per_group"] == "1-2"
    assert {len(v) for g, v in placement.items() if not g.startswith("ap-")} == {2}


@pytest.mark.parametrize("protocol", [p for p in registry.names() if p != "raft"])
def test_other_protocols_under_partitions_and_kills_are_valid(tmp_path: Path, protocol: str) -> None:
    outcome = run(tmp_path, protocol=protocol, nemesis=("partition", "kill"), time_s=6.0, nemesis_interval_s=1.5)
    results = outcome.results
    assert outcome.valid is True, results["checkers"]
    assert node_config(outcome)["consensus"]["protocol"] == protocol
    assert results["cluster"]["protocol"] == protocol and results["counts"]["ok"] > 50
    assert f"{protocol}, centralized" in (outcome.run_dir / "report.html").read_text()
    assert results["cluster"]["final_status"]["without_leader"] == []


@pytest.mark.parametrize("protocol", [p for p in registry.names() if p != "raft"])
def test_other_protocols_on_shards_are_valid(tmp_path: Path, protocol: str) -> None:
    outcome = run(tmp_path, protocol=protocol, distribution="sharded", shards=3, nemesis=("kill",),
                  time_s=6.0, nemesis_interval_s=1.5)
    assert outcome.valid is True, outcome.results["checkers"]
    assert_routed_by_shard(outcome, 3)


def test_rebalance_nemesis_moves_replicas_and_the_run_stays_valid(tmp_path: Path) -> None:
    outcome = run(tmp_path, topology=topology_on_free_ports(tmp_path, "three-region"),
                  distribution="sharded", shards=4, nemesis=("rebalance",), time_s=10.0,
                  nemesis_interval_s=1.0, ops_per_key=6)
    assert outcome.valid is True, outcome.results["checkers"]
    moves = [
        e["value"]["applied"]["moves"]
        for e in (r.to_dict() for r in read_events(outcome.run_dir / "history.jsonl"))
        if e["process"] == "nemesis" and e["f"].endswith("-rebalance") and e["type"] == "info"
        and isinstance(e.get("value"), dict) and "applied" in e["value"]
    ]
    assert moves and any(m for m in moves), moves  # replicas moved off a node and back
