"""Each fault kind really happens, and partitions have the shapes they claim."""

from __future__ import annotations

import random

import pytest

from exapyte.sim import (
    FAULT_KINDS,
    SimSpec,
    World,
    partition_links,
    plan_faults,
    run_seed,
)
from exapyte.sim.faults import PARTITION_SHAPES
from exapyte.sim.network import Delay, Network
from exapyte.sim.scheduler import NS_PER_MS, NS_PER_S, Scheduler

NODES5 = ("n1", "n2", "n3", "n4", "n5")


def test_every_fault_kind_happens_and_is_counted() -> None:
    result = run_seed(SimSpec(seed=12, fault_s=8.0))
    assert result.ok, result.detail
    c = result.counters
    for kind in FAULT_KINDS:
        assert c[f"fault_{kind}"] > 0, kind
    assert c["net_dropped_partition"] > 0
    assert c["storage_crashes"] > 0 and c["restarts"] > 0
    assert c["queued_paused"] + c["dropped_paused"] > 0
    assert c["net_dropped_loss"] > 0
    assert c["net_duplicated"] > 0
    assert c["net_reordered"] > 0
    assert c["snapshots_taken"] > 0
    assert c["invariant_checks"] > 1000


def test_drift_changes_a_node_tick_rate() -> None:
    world = World(SimSpec(seed=2, faults=("drift",), ops=10, fault_s=2.0))
    node = world.nodes["n1"]
    nominal = world._tick_ns(node)
    node.drift.append(2.0)
    assert world._tick_ns(node) == pytest.approx(nominal / 2, rel=0.01)


def test_faults_subset_only_plans_those_kinds() -> None:
    faults = plan_faults(random.Random(1), NODES5, ("crash", "pause"), (0, 20 * NS_PER_S))
    assert faults and {f.kind for f in faults} <= {"crash", "pause"}
    assert all(0 <= f.start_ns < f.end_ns <= 20 * NS_PER_S for f in faults)
    assert faults == plan_faults(random.Random(1), NODES5, ("pause", "crash"), (0, 20 * NS_PER_S))


def _peers(links: tuple[tuple[str, str], ...], node: str) -> set[str]:
    return {b for a, b in links if a == node} | {a for a, b in links if b == node}


@pytest.mark.parametrize("seed", range(5))
def test_partition_shapes(seed: int) -> None:
    rng = random.Random(seed)
    iso = partition_links("isolate-node", NODES5, rng)
    victims = [n for n in NODES5 if len(_peers(iso, n)) == 4]
    assert len(victims) == 1 and len(iso) == 8  # cut both ways from the 4 others

    halves = set(partition_links("majority-minority", NODES5, rng))
    assert len(halves) == 2 * 2 * 3  # minority of 2, majority of 3, both directions
    assert all((b, a) in halves for a, b in halves)

    bridge = set(partition_links("bridge", NODES5, rng))
    bridges = [n for n in NODES5 if not _peers(tuple(bridge), n)]
    assert len(bridges) == 1  # the bridge node reaches everyone
    assert len(bridge) == 2 * 2 * 2

    one_way = set(partition_links("one-way", NODES5, rng))
    assert len(one_way) == 4
    assert all((b, a) not in one_way for a, b in one_way)
    assert len({dst for _, dst in one_way}) == 1  # every link into one node: it hears nobody

    ring = set(partition_links("ring", NODES5, rng))
    assert len(ring) == 2 * 5  # on 5 nodes each node misses the 2 across the ring, both ways

    rand = set(partition_links("random", NODES5, rng))
    assert rand and all((b, a) in rand for a, b in rand)


def test_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="allowed"):
        partition_links("spiral", NODES5, random.Random(0))
    with pytest.raises(ValueError, match="regions"):
        partition_links("isolate-region", NODES5, random.Random(0))


@pytest.mark.parametrize("seed", range(6))
def test_one_way_gives_the_same_cuts_in_the_harness_and_the_simulator(seed: int) -> None:
    """The one shape, one meaning: the node the simulator picks hears nobody, as in the harness."""
    import networkx as nx

    from harness.generator import Rand
    from harness.nemesis import one_way

    sim_cut = set(partition_links("one-way", NODES5, random.Random(seed)))
    (victim,) = {dst for _, dst in sim_cut}
    graph = nx.complete_graph(NODES5)
    rand = Rand.seeded(seed)
    while True:  # the harness draws its node with its own randomness: take a draw that picks the same
        cuts, node, rand = one_way(graph, rand)
        if node == victim:
            break
    assert set(cuts) == sim_cut == {(other, victim) for other in NODES5 if other != victim}
    for shape in ("isolate-node", "majority-minority", "bridge", "random"):
        links = partition_links(shape, NODES5, random.Random(seed))
        assert all((b, a) in links for a, b in links)  # the symmetric shapes are symmetric in both
    assert "ring" not in PARTITION_SHAPES


def _network(**kw: object) -> tuple[Scheduler, Network, list[tuple[str, str, object]]]:
    sched = Scheduler()
    got: list[tuple[str, str, object]] = []
    net = Network(sched, random.Random(0), ("a", "b", "c"), lambda f, t, m: got.append((f, t, m)), **kw)  # type: ignore[arg-type]
    return sched, net, got


def test_cut_links_drop_messages_including_those_in_flight() -> None:
    sched, net, got = _network()
    net.send("a", "b", 1)
    net.set_blocked({("a", "b")})  # the partition starts while 1 is in flight
    net.send("a", "b", 2)
    net.send("b", "a", 3)  # one-way: the other direction still works
    sched.run_until(NS_PER_S)
    assert got == [("b", "a", 3)]
    assert net.counters["dropped_partition"] == 2
    net.heal()
    net.send("a", "b", 4)
    sched.run_until(2 * NS_PER_S)
    assert got[-1] == ("a", "b", 4)


def test_plain_links_are_fifo_and_reordering_overtakes() -> None:
    sched, net, got = _network()
    net.links[("a", "b")].delay = Delay("exponential", 0.1, mean_ms=5.0)
    for i in range(200):
        net.send("a", "b", i)
    sched.run_until(NS_PER_S)
    assert [m for _, _, m in got] == list(range(200))
    got.clear()
    net.reorder = 0.5
    for i in range(200):
        net.send("a", "b", i)
    sched.run_until(2 * NS_PER_S)
    assert sorted(m for _, _, m in got) == list(range(200))
    assert [m for _, _, m in got] != list(range(200))
    assert net.counters["reordered"] > 0


def test_loss_duplication_and_bounded_queues() -> None:
    sched, net, got = _network(queue_max=10)
    for i in range(50):
        net.send("a", "b", i)  # all sent in the same instant: only 10 fit in the link
    sched.run_until(NS_PER_S)
    assert len(got) == 10 and net.counters["dropped_queue_full"] == 40
    got.clear()
    net.loss, net.dup = 0.3, 0.3
    for i in range(5):
        net.send("a", "c", i)
        sched.run_until(sched.now_ns + 10 * NS_PER_MS)
    for i in range(300):
        net.send("b", "c", i)
        sched.run_until(sched.now_ns + NS_PER_MS * 10)
    assert net.counters["dropped_loss"] > 0 and net.counters["duplicated"] > 0


def test_client_links_are_never_impaired() -> None:
    sched, net, got = _network()
    net.loss, net.dup = 1.0, 1.0
    net.set_blocked({("a", "c0"), ("c0", "a")})
    net.send("c0", "a", "req")
    net.send("a", "c0", "reply")
    sched.run_until(NS_PER_S)
    assert sorted(m for _, _, m in got) == ["reply", "req"]  # type: ignore[type-var]
