"""Faults are data computed from the topology graph; no proxy or process is touched here."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest

from exapyte.config import KNOWN_BUGS
from exapyte.control import topology as topo
from harness import generator as gen
from harness.generator import NEMESIS, Op, Rand
from harness.nemesis import (
    BUG_FAULTS,
    CLOCK_BUMP_MS,
    CLOCK_FAST_RATE,
    CLOCK_MODES,
    CLOCK_SLOW_RATE,
    FaultSchedule,
    Nemesis,
    bridge,
    choose_clock_fault,
    choose_fault,
    cuts_between,
    default_faults,
    fault_family,
    isolate_node,
    isolate_region,
    majority_minority,
    one_way,
    parse_faults,
    reachable,
    ring,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def three_region() -> nx.Graph:
    return topo.load(REPO / "topologies" / "three-region.json")


@pytest.fixture
def five_region() -> nx.Graph:
    return topo.load(REPO / "topologies" / "five-region.json")


def test_cuts_between_is_both_directions_of_every_crossing_link() -> None:
    assert cuts_between([["a"], ["b", "c"]]) == {("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")}


def test_isolate_node_and_region(three_region: nx.Graph) -> None:
    cuts = isolate_node(three_region, "n1")
    assert len(cuts) == 2 * 4 and all("n1" in pair for pair in cuts)
    region = isolate_region(three_region, "us-east")  # n1, n2
    assert ("n1", "n2") not in region and ("n1", "n3") in region and ("n5", "n2") in region
    assert len(region) == 2 * 2 * 3


def test_majority_minority_splits_into_a_majority_and_the_rest(five_region: nx.Graph) -> None:
    cuts, (big, small), _ = majority_minority(five_region, Rand.seeded(1))
    assert len(big) == 3 and len(small) == 2 and not set(big) & set(small)
    reach = reachable(five_region, cuts)
    assert all(reach[n] == set(big) - {n} for n in big)


def test_bridge_node_sees_both_halves(five_region: nx.Graph) -> None:
    cuts, middle, _ = bridge(five_region, Rand.seeded(4))
    reach = reachable(five_region, cuts)
    assert reach[middle] == set(five_region.nodes) - {middle}
    others = [n for n in five_region.nodes if n != middle]
    assert all(len(reach[n]) == 2 for n in others)  # itself excluded: the bridge and one more


def test_ring_gives_each_node_a_different_majority(five_region: nx.Graph) -> None:
    cuts, order, _ = ring(five_region, Rand.seeded(2))
    reach = reachable(five_region, cuts)
    views = {frozenset(reach[n] | {n}) for n in order}
    assert all(len(v) == 3 for v in views) and len(views) == 5
    assert all((a, b) in cuts for a, b in [(order[0], order[2])])


def test_one_way_node_is_heard_but_hears_nobody(three_region: nx.Graph) -> None:
    cuts, node, _ = one_way(three_region, Rand.seeded(3))
    assert all((other, node) in cuts for other in three_region.nodes if other != node)
    assert not any(src == node for src, _ in cuts)


def test_choose_fault_is_deterministic_for_a_seed(three_region: nx.Graph) -> None:
    a, _ = choose_fault(three_region, "partition", Rand.seeded(11))
    b, _ = choose_fault(three_region, "partition", Rand.seeded(11))
    assert a == b and a["cuts"] and a["description"]
    kill, _ = choose_fault(three_region, "kill", Rand.seeded(5))
    assert 1 <= len(kill["nodes"]) <= 2  # a minority of 5
    latency, _ = choose_fault(three_region, "latency", Rand.seeded(5))
    assert latency["latency_ms"] > 0 and latency["links"]


def test_parse_faults_with_clear_errors() -> None:
    assert parse_faults("partition,kill") == ("partition", "kill")
    assert parse_faults("partition,clock") == ("partition", "clock")
    assert parse_faults("none") == ()
    with pytest.raises(ValueError, match="allowed"):
        parse_faults("meteor")


def test_clock_faults_stay_within_bounds_and_replay_from_the_seed(five_region: nx.Graph) -> None:
    seen_modes = set()
    rand = Rand.seeded(3)
    for _ in range(200):
        fault, rand = choose_fault(five_region, "clock", rand)
        assert fault["kind"] == "clock" and fault_family(fault) == "clock"
        assert 1 <= len(fault["nodes"]) <= 2 and set(fault["nodes"]) <= set(five_region.nodes)  # a minority of 5
        mode = fault["mode"]
        seen_modes.add(mode)
        if mode == "bump":
            assert CLOCK_BUMP_MS[0] <= fault["shift_ms"] <= CLOCK_BUMP_MS[1] and fault["rate"] == 1.0
            assert f"+{fault['shift_ms']} ms" in fault["description"]
        elif mode == "fast":
            assert CLOCK_FAST_RATE[0] <= fault["rate"] <= CLOCK_FAST_RATE[1] and fault["shift_ms"] == 0
        else:
            assert mode == "slow" and CLOCK_SLOW_RATE[0] <= fault["rate"] <= CLOCK_SLOW_RATE[1] <= 1
        # what the node accepts (exapyte.runtime.node._on_clock)
        assert 0 < fault["rate"] <= 100 and abs(fault["shift_ms"]) <= 3_600_000
        json.dumps(fault)
    assert seen_modes == set(CLOCK_MODES)
    assert choose_fault(five_region, "clock", Rand.seeded(9)) == choose_fault(five_region, "clock", Rand.seeded(9))
    only_fast, _ = choose_clock_fault(five_region, Rand.seeded(1), modes=("fast",))
    assert only_fast["mode"] == "fast"


def test_clock_faults_are_applied_and_reset_through_the_db(three_region: nx.Graph) -> None:
    db = FakeDb()
    nemesis = Nemesis(db)  # type: ignore[arg-type]
    fault = {"kind": "clock", "mode": "fast", "nodes": ["n1", "n4"], "shift_ms": 0, "rate": 8.0,
             "description": "clock of n1,n4 runs fast (x8)"}
    nemesis.start(fault)
    assert db.calls == [("clock_fault", "n1", {"shift_ms": 0.0, "rate": 8.0}),
                        ("clock_fault", "n4", {"shift_ms": 0.0, "rate": 8.0})]
    assert nemesis.describe_active() == ["clock of n1,n4 runs fast (x8)"]
    nemesis.stop("clock")
    assert db.calls[2:] == [("reset_clock", "n1", {}), ("reset_clock", "n4", {})]
    schedule = FaultSchedule(three_region, ("clock",), 1_000_000_000, Rand.seeded(2))
    ops = gen.drain(gen.time_limit(10, gen.nemesis(schedule)), concurrency=1)
    assert [o.f for _, o in ops[:2]] == ["start-clock", "stop-clock"]


def test_each_bug_brings_the_faults_that_expose_it() -> None:
    assert set(BUG_FAULTS) == set(KNOWN_BUGS)
    assert default_faults(()) == ("partition",)  # a plain run still injects faults
    assert default_faults(("stale-reads",)) == ("partition",)
    assert "kill" in default_faults(("ack-before-fsync",))
    assert {"partition", "clock"} <= set(default_faults(("no-term-check",)))
    both = default_faults(("stale-reads", "no-term-check"))
    assert len(both) == len(set(both)) and both[0] == "partition"
    for bug in KNOWN_BUGS:
        assert parse_faults(list(default_faults((bug,)))) == default_faults((bug,))


def test_fault_schedule_alternates_start_and_stop(three_region: nx.Graph) -> None:
    schedule = FaultSchedule(three_region, ("partition", "kill"), 2_000_000_000, Rand.seeded(1))
    ops = gen.drain(gen.time_limit(30, gen.nemesis(schedule)), concurrency=1)
    fs = [o.f for _, o in ops]
    assert len(fs) >= 8
    for start, stop in zip(fs[::2], fs[1::2]):
        assert start.startswith("start-") and stop == "stop-" + start[len("start-"):]
    assert all(o.process == NEMESIS for _, o in ops)


class FakeDb:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self.calls.append((name, *args, kwargs) if kwargs or name in ("clock_fault", "reset_clock") else (name, *args))
        return call


def test_nemesis_applies_and_heals_through_thin_effects(three_region: nx.Graph) -> None:
    db = FakeDb()
    nemesis = Nemesis(db)  # type: ignore[arg-type]
    fault, _ = choose_fault(three_region, "partition", Rand.seeded(1))
    nemesis.start(fault)
    # the cuts, then one read-back of what the fault layer holds (recorded in the history)
    assert {c[0] for c in db.calls[:-1]} == {"cut"} and len(db.calls) == len(fault["cuts"]) + 1
    assert db.calls[-1] == ("applied_cuts",)
    assert nemesis.describe_active() == [fault["description"]]
    with pytest.raises(RuntimeError, match="already active"):
        nemesis.start(fault)
    nemesis.start({"kind": "pause", "nodes": ["n2"], "description": "pause n2"})
    assert nemesis.heal() == ["partition", "pause"]
    names = [c[0] for c in db.calls]
    assert names.count("uncut") == len(fault["cuts"]) and "resume" in names and names[-1] == "heal_all"
    assert nemesis.active == {}


def test_a_partitions_completion_records_what_the_fault_layer_held(three_region: nx.Graph) -> None:
    class Db(FakeDb):
        def applied_cuts(self) -> dict:
            cut = sum(c[0] == "cut" for c in self.calls) - sum(c[0] == "uncut" for c in self.calls)
            return {"layer": "iptables", "rules": cut}

    nemesis = Nemesis(Db())  # type: ignore[arg-type]
    fault, _ = choose_fault(three_region, "partition", Rand.seeded(4))
    kind, value = nemesis.invoke(Op(f="start-partition", value=fault, process=NEMESIS))
    assert kind == "info" and value["applied"] == {"layer": "iptables", "rules": len(fault["cuts"])}
    assert "applied" not in fault  # the generator's value is left as it was
    kind, value = nemesis.invoke(Op(f="stop-partition", value=fault, process=NEMESIS))
    assert value["applied"]["rules"] == 0
    kill = {"kind": "kill", "nodes": ["n1"], "description": "kill n1"}
    assert nemesis.invoke(Op(f="start-kill", value=kill, process=NEMESIS)) == ("info", kill)
    with pytest.raises(ValueError, match="cut_mode must be one of blackhole, down, drop, reject"):
        Nemesis(Db(), cut_mode="sever")  # type: ignore[arg-type]


def test_transfer_faults_hand_leadership_over_through_the_db(three_region: nx.Graph) -> None:
    targets = set()
    rand = Rand.seeded(3)
    for _ in range(30):
        fault, rand = choose_fault(three_region, "transfer", rand)
        assert fault["kind"] == "transfer" and fault["to"] in three_region.nodes
        targets.add(fault["to"])
    assert len(targets) > 1  # not always the same node

    class Db(FakeDb):
        def transfer_leader(self, to: str) -> dict:
            self.calls.append(("transfer_leader", to))
            return {"result": f"leadership transfer to {to} started", "from": "n1"}

    db = Db()
    nemesis = Nemesis(db)  # type: ignore[arg-type]
    kind, value = nemesis.invoke(Op(f="start-transfer", value=fault, process="nemesis"))
    assert kind == "info" and value["applied"]["result"].endswith("started")
    assert db.calls == [("transfer_leader", fault["to"])]
    nemesis.invoke(Op(f="stop-transfer", value=fault, process="nemesis"))
    assert db.calls == [("transfer_leader", fault["to"])]  # nothing to undo
