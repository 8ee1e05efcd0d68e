"""The Zab paper's correctness properties (§III: integrity, total order, agreement, local and
global primary order; and the replicated-log invariants: one leader per epoch, log matching,
leader completeness, state-machine safety) under message loss, duplication, reordering,
partitions and crash-restarts, in a seeded in-memory network. The cluster checks the
invariants over every node's ``observe()`` after every step; the §III properties are checked
over what each node applied."""

from __future__ import annotations

import random

import pytest

from exapyte.errors import InvariantViolation
from tests.protocol.zab_helpers import check_zab_properties, zab_cluster


def chaos(seed: int, ids: tuple[str, ...], steps: int) -> None:
    rng = random.Random(seed)
    c = zab_cluster(ids, seed=seed)
    c.drop_rate = 0.1
    c.dup_rate = 0.1
    c.reorder = True
    down: set[str] = set()
    written = 0
    for step in range(steps):
        roll = rng.random()
        if roll < 0.04 and len(down) < (len(ids) - 1) // 2:
            victim = rng.choice(sorted(set(ids) - down))
            c.crash(victim)
            down.add(victim)
        elif roll < 0.10 and down:
            back = rng.choice(sorted(down))
            down.discard(back)
            c.restart(back)
        elif roll < 0.14:
            nodes = list(ids)
            rng.shuffle(nodes)
            cut = rng.randrange(1, len(nodes))
            c.partition(nodes[:cut], nodes[cut:])
        elif roll < 0.20:
            c.cut_links.clear()
        leader = c.leader()
        if leader is not None and rng.random() < 0.5:
            c.propose(leader, f"k{written % 7}={written}".encode())
            written += 1
        c.tick()
        c.deliver()
    for node in sorted(down):
        c.restart(node)
    c.heal()
    leader = c.wait_leader()
    c.put("final", "1")
    c.run(60)
    check_zab_properties(c)
    states = [c.hosts[n].kv.data for n in c.ids]
    assert all(s == states[0] for s in states), c.describe()
    assert states[0].get("final") == "1"
    assert all(c.core(n).log.committed == c.core(leader).log.committed for n in c.ids)


@pytest.mark.parametrize("seed", range(8))
def test_safety_and_convergence_under_faults_three_nodes(seed: int) -> None:
    chaos(seed, ("n1", "n2", "n3"), 250)


@pytest.mark.parametrize("seed", range(3))
def test_safety_and_convergence_under_faults_five_nodes(seed: int) -> None:
    chaos(100 + seed, ("n1", "n2", "n3", "n4", "n5"), 200)


def test_the_property_checks_can_fail() -> None:
    # Agreement: two nodes applying different entries at one index is reported.
    c = zab_cluster(seed=1)
    c.put("a", "1")
    other = c.hosts["n2"].applied_log
    e = other[-1]
    other[-1] = type(e)(e.term, e.index, e.kind, b"a=forged")
    with pytest.raises(AssertionError):
        check_zab_properties(c)


def test_the_invariant_checker_sees_zab_logs() -> None:
    # A forged divergent committed entry on one node must trip the cluster's checker.
    c = zab_cluster(seed=1)
    c.put("a", "1")
    log = c.core("n2").log
    last = log._entries[-1]
    log._entries[-1] = type(last)(last.term, last.index, last.kind, b"a=forged")
    with pytest.raises(InvariantViolation):
        c.check_invariants()
