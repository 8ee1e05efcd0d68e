"""The ``hold`` fault: links that keep what crosses them while down and deliver it late."""

from __future__ import annotations

import random

from exapyte.sim import FAULT_KINDS, SimSpec, World, plan_faults, run_seed
from exapyte.sim.cli import _faults
from exapyte.sim.faults import ALL_FAULT_KINDS
from exapyte.sim.network import Network
from exapyte.sim.scheduler import NS_PER_MS, NS_PER_S, Scheduler
from tests.mutants.mutants import HELD

NODES5 = ("n1", "n2", "n3", "n4", "n5")


def _network(**kw: object) -> tuple[Scheduler, Network, list[tuple[int, str, str, object]]]:
    sched = Scheduler()
    got: list[tuple[int, str, str, object]] = []
    net = Network(
        sched, random.Random(0), ("a", "b", "c"),
        lambda f, t, m: got.append((sched.now_ns, f, t, m)), **kw,  # type: ignore[arg-type]
    )
    return sched, net, got


def test_a_held_link_delivers_everything_in_send_order_when_the_hold_ends() -> None:
    sched, net, got = _network()
    net.send("a", "b", 0)  # in flight when the hold begins: held too, not lost
    net.set_held({("a", "b"): 0.0})
    for i in range(1, 50):
        net.send("a", "b", i)
    net.send("b", "a", "back")  # the other direction is not held
    sched.run_until(500 * NS_PER_MS)
    assert [m for _, _, _, m in got] == ["back"]
    assert net.counters["held"] == 50 and net.counters["released"] == 0
    net.set_held({})
    sched.run_until(NS_PER_S)
    late = [(t, m) for t, f, _, m in got if f == "a"]
    assert [m for _, m in late] == list(range(50))  # FIFO, the in-flight one first
    assert all(t >= 500 * NS_PER_MS for t, _ in late)  # delivered after the hold, not before
    assert net.counters["released"] == 50
    assert net.counters["dropped_partition"] == net.counters["dropped_loss"] == 0
    assert net.links[("a", "b")].in_flight == 0


def test_a_shuffled_release_delivers_each_message_once_out_of_order() -> None:
    sched, net, got = _network()
    net.loss, net.dup = 1.0, 1.0  # a held message is never lost or duplicated (TCP)
    net.set_held({("a", "b"): 1.0})
    for i in range(100):
        net.send("a", "b", i)
    net.loss = net.dup = 0.0
    net.set_held({})
    sched.run_until(NS_PER_S)
    order = [m for _, _, _, m in got]
    assert sorted(order) == list(range(100))  # type: ignore[type-var]
    assert order != list(range(100))
    assert net.counters["reordered"] > 0


def test_held_messages_count_against_the_queue_bound_and_a_cut_drops_them() -> None:
    sched, net, got = _network(queue_max=10)
    net.set_held({("a", "b"): 0.0, ("a", "c"): 0.0})
    for i in range(30):
        net.send("a", "b", i)
        net.send("a", "c", i)
    assert net.counters["held"] == 20 and net.counters["dropped_queue_full"] == 40
    net.heal()  # ends the holds: both queues leave
    net.set_blocked({("a", "c")})  # a link cut while the released messages cross it drops them
    sched.run_until(NS_PER_S)
    assert [m for _, _, t, m in got if t == "b"] == list(range(10))
    assert not [m for _, _, t, m in got if t == "c"]
    assert net.counters["dropped_partition"] == 10


def test_hold_is_planned_only_when_named_and_leaves_the_other_kinds_unchanged() -> None:
    window = (0, 20 * NS_PER_S)
    default = plan_faults(random.Random(3), NODES5, FAULT_KINDS, window)
    assert all(f.kind != "hold" for f in default)
    with_hold = plan_faults(random.Random(3), NODES5, FAULT_KINDS + ("hold",), window)
    assert tuple(f for f in with_hold if f.kind != "hold") == default
    holds = [f for f in with_hold if f.kind == "hold"]
    assert holds and all(f.links and f.shape for f in holds)
    assert {f.rate == 0.0 for f in holds} == {True, False}  # in order and shuffled ones
    assert "hold" in ALL_FAULT_KINDS and "hold" not in FAULT_KINDS
    assert _faults("hold,loss") == ("hold", "loss")


def test_a_hold_run_is_deterministic_and_releases_everything() -> None:
    spec = SimSpec(seed=1, protocol="multipaxos", faults=("hold",), profile=HELD,  # the mutant's
                   ops=60, fault_s=3.0)
    first = run_seed(spec, keep_history=True)
    second = run_seed(spec, keep_history=True)
    assert first.ok, first.detail
    assert first.trace_hash == second.trace_hash and first.counters == second.counters
    assert first.history_jsonl == second.history_jsonl
    c = first.counters
    assert c["fault_hold"] == len(World(spec).faults) > 0
    assert c["net_held"] > 0 and c["net_released"] == c["net_held"]
    assert '"start-hold"' in first.history_jsonl
