"""The rebalance fault: node changes during a sharded run, moving replicas with membership
changes in each shard's log (the product's planner and move program), clients following
stale-config redirects, linearizability per key across moves, and the checks that catch the
routing mutants."""

from __future__ import annotations

import json
import random

import pytest

from exapyte.control import rebalance
from exapyte.control.rebalance import Change, Drop, GroupState, Note, Query, Settle
from exapyte.distribution import Move
from exapyte.sim import SimSpec, World, run_seed
from exapyte.sim.cli import main as sim_main
from exapyte.sim.faults import REBALANCE, SHARDED_FAULT_KINDS, plan_rebalances
from exapyte.sim.judge import check_linearizable
from exapyte.sim.scheduler import NS_PER_S

SHARDED = {"shards": 4, "keys": 8, "ops": 80, "fault_s": 5.0}


def _rebalance_run(seed: int, **kwargs: object) -> SimSpec:
    return SimSpec(seed=seed, faults=("partition", "crash", REBALANCE), **{**SHARDED, **kwargs})


@pytest.fixture(scope="module")
def moved() -> tuple[SimSpec, object]:
    spec = _rebalance_run(9)  # add n4, then remove n2
    return spec, run_seed(spec, keep_history=True)


def test_a_rebalance_moves_replicas_and_the_run_passes(moved: tuple[SimSpec, object]) -> None:
    _, result = moved
    assert result.ok, f"{result.check}: {result.detail}"  # type: ignore[attr-defined]
    c = result.counters  # type: ignore[attr-defined]
    assert c["fault_rebalance"] >= 2 and c["moves_done"] >= 2
    assert c["groups_dropped"] >= 1  # a source dropped its replica after its removal
    assert c["config_redirects"] > 0  # clients routed by a stale descriptor were redirected
    assert c["admin_requests"] > 0


def test_the_spare_node_hosts_replicas_after_it_was_added() -> None:
    world = World(_rebalance_run(9))
    assert world.node_ids == ("n1", "n2", "n3", "n4") and world.founders == ("n1", "n2", "n3")
    assert not any("n4" in g.members for g in world.placement)
    world.run()
    hosted = [g for g, _ in world.nodes["n4"].replicas()]
    assert hosted, "n4 was added but hosts no replica"
    for group in hosted:
        voters = world.admin_groups()[group].voters
        assert len(voters) == 3


def test_a_rebalance_run_is_deterministic(moved: tuple[SimSpec, object]) -> None:
    spec, result = moved
    again = run_seed(spec, keep_history=True)
    assert again.trace_hash == result.trace_hash  # type: ignore[attr-defined]
    assert again.history_jsonl == result.history_jsonl  # type: ignore[attr-defined]


def test_a_key_history_spanning_a_move_is_checked_as_one(moved: tuple[SimSpec, object]) -> None:
    _, result = moved
    records = [json.loads(line) for line in result.history_jsonl.splitlines()]  # type: ignore[attr-defined]
    moves = [r["time"] for r in records if r["f"] == "start-rebalance"]
    assert moves
    first = moves[0]
    # A key written (ok) before the first move and read (ok) after it.
    spanning = None
    for key in sorted({r.get("key") for r in records if r.get("key") is not None}):
        ops = [r for r in records if r.get("key") == key and r["type"] == "ok"]
        if any(r["f"] == "write" and r["time"] < first for r in ops) and any(
            r["f"] == "read" and r["time"] > first and r.get("value") is not None for r in ops
        ):
            spanning = key
            break
    assert spanning is not None, "no key has a write before a move and a read after it"
    assert check_linearizable(result.history_jsonl)[0] is True  # type: ignore[attr-defined]
    # The same history with the key's last read after the move answering the value written
    # before it was overwritten: the one history of that key is not linearizable any more.
    writes = [r for r in records if r.get("key") == spanning and r["f"] == "write" and r["type"] == "ok"]
    reads = [r for r in records if r.get("key") == spanning and r["f"] == "read" and r["type"] == "ok"
             and r["time"] > first]
    stale = writes[0]["value"]
    last_read = reads[-1]
    later_writes = [w for w in writes if w["time"] < last_read["time"] and w["value"] != stale]
    assert later_writes, "the key was written once only"
    last_read["value"] = stale
    tampered = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    assert check_linearizable(tampered)[0] is False


def test_rebalances_are_planned_one_after_the_other() -> None:
    window = (0, 30 * NS_PER_S)
    faults = plan_rebalances(random.Random(3), ("n1", "n2", "n3"), ("n4",), window)
    assert len(faults) >= 4
    assert (faults[0].action, faults[0].node) == ("add", "n4")
    for before, after in zip(faults, faults[1:]):
        assert before.end_ns < after.start_ns  # never two node changes at once
    actions = [f.action for f in faults]
    assert actions[1::2] == ["remove"] * len(actions[1::2])
    assert actions[2::2] == ["add"] * len(actions[2::2])
    for removed, added in zip(faults[1::2], faults[2::2]):
        assert removed.node == added.node  # the node removed comes back
    assert faults == plan_rebalances(random.Random(3), ("n1", "n2", "n3"), ("n4",), window)


def test_without_shards_there_is_no_spare_and_no_rebalance() -> None:
    world = World(SimSpec(seed=1, faults=SHARDED_FAULT_KINDS))
    assert world.node_ids == ("n1", "n2", "n3") and not world.rebalancing
    assert all(f.kind != REBALANCE for f in world.planned_faults)


def test_the_cli_refuses_rebalance_without_shards() -> None:
    assert sim_main(["--faults", "crash,rebalance", "--ops", "5"]) == 2


def test_a_source_is_dropped_only_once_every_member_applied_its_removal() -> None:
    program = rebalance.move_program(Move("s0", 0, remove="n1"))
    assert program.send(None) == Query("s0")
    state = GroupState("s0", ("n1", "n2", "n3"), (), "n2", 10)
    assert program.send(state) == Change("s0", "remove", "n1")
    assert program.send(None) == Note("s0: n1 removed")
    assert program.send(None) == Settle("s0")
    assert isinstance(program.send(True), Drop)
    unsettled = rebalance.move_program(Move("s0", 0, remove="n1"))
    unsettled.send(None)
    unsettled.send(state)
    unsettled.send(None)
    assert unsettled.send(None) == Settle("s0")
    note = unsettled.send(False)
    assert isinstance(note, Note) and "keeps its replica" in note.text
    with pytest.raises(StopIteration):
        unsettled.send(None)  # no Drop
