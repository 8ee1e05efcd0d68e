"""Multi-Paxos safety under faults, and robustness to forged input.

The invariants (checked after every step by the cluster's InvariantChecker): at most one leader
per round; no two values chosen for one slot and a chosen value never changes (Lamport, "Paxos
Made Simple" §2.1's safety requirements, per instance of §3); every leader holds every value
chosen under an earlier ballot (P2c, §2.2); no two replicas apply different values at one slot
(state-machine safety, §3).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exapyte.protocol.multipaxos.messages import (
    Accept,
    Accepted,
    AcceptedSlot,
    Heartbeat,
    HeartbeatAck,
    Prepare,
    Promise,
    Reject,
    Snapshot,
    SnapshotAck,
    TimeoutNow,
)
from exapyte.protocol.types import ConfState, Entry, EntryKind, Role, SnapshotMeta
from tests.protocol.paxos_helpers import paxos_cluster

BIG = 2**62


@pytest.mark.parametrize("seed", range(12))
def test_pms_2_1_safety_under_loss_duplication_reordering_partitions_and_crashes(seed: int) -> None:
    rng = random.Random(seed)
    ids = ("n1", "n2", "n3", "n4", "n5") if seed % 3 == 0 else ("n1", "n2", "n3")
    c = paxos_cluster(ids, seed=seed, max_entries_per_msg=3, max_inflight_msgs=4)
    c.drop_rate, c.dup_rate, c.reorder = 0.15, 0.1, True
    written = 0
    for step in range(400):
        leader = c.leader()
        if leader is not None and rng.random() < 0.5:
            if c.propose(leader, f"k{written % 7}={written}".encode()) is not None:
                written += 1
        c.tick()
        c.deliver(max_messages=rng.randrange(1, 40))
        roll = rng.random()
        if roll < 0.02 and len(c.alive) > len(ids) // 2 + 1:
            c.crash(rng.choice(sorted(c.alive)))
        elif roll < 0.06:
            for n in c.ids:
                if n not in c.alive:
                    c.restart(n)
        elif roll < 0.08:
            cut = rng.sample(ids, len(ids) // 2)
            c.partition(cut, [n for n in ids if n not in cut])
        elif roll < 0.12:
            c.cut_links.clear()
        elif roll < 0.13 and c.leader() is not None:
            lead = c.leader()
            assert lead is not None
            if c.hosts[lead].kv.applied > c.core(lead).log.offset:
                c.snapshot(lead)
    c.heal()
    for n in c.ids:
        if n not in c.alive:
            c.restart(n)
    leader = c.wait_leader(max_ticks=400)
    c.put("final", "x")
    c.run(10)
    states = {n: c.hosts[n].kv.data for n in c.ids}
    assert all(s == states[leader] for s in states.values()), c.describe()
    assert states[leader]["final"] == "x"
    # every acknowledged write is in the final state's history (applied, same index and term)
    applied = {(e.index, e.term): e.data for e in c.hosts[leader].applied_log}
    snap_floor = c.core(leader).log.offset
    for (index, term), (_, data) in c.proposed.items():
        if data in c.acked and index > snap_floor and (index, term) in applied:
            assert applied[(index, term)] == data


# --- forged input ------------------------------------------------------------------------------

NUMBERS = st.one_of(st.integers(0, 12), st.sampled_from([BIG, BIG + 1, -1, 2**63]))
NAMES = st.sampled_from(["n1", "n2", "n3", "n4", "x9", ""])


def _entries(draw: Any) -> tuple[Entry, ...]:
    first = draw(NUMBERS)
    kinds = st.sampled_from([int(k) for k in EntryKind] + [7])
    count = draw(st.integers(0, 3))
    return tuple(
        Entry(draw(NUMBERS), first + i if draw(st.booleans()) else draw(NUMBERS),
              draw(kinds), draw(st.binary(max_size=4)))
        for i in range(count)
    )


@st.composite
def forged(draw: Any, to: str) -> Any:
    """A well-typed message from a stranger, or a stale or malformed one from a member, or an
    answer nobody asked for: input a correct member never sends."""
    kind = draw(st.sampled_from(["prepare", "promise", "accept", "accepted", "heartbeat",
                                 "hb_ack", "reject", "snapshot", "snapshot_ack", "timeout"]))
    frm = draw(NAMES)
    dest = to if draw(st.integers(0, 9)) else "n7"
    n = lambda: draw(NUMBERS)  # noqa: E731
    if kind == "prepare":
        return Prepare(frm, dest, n(), n(), n(), draw(st.booleans()), draw(st.booleans()))
    if kind == "promise":
        slots = tuple(AcceptedSlot(n(), draw(NAMES), e) for e in _entries(draw))
        return Promise(frm, dest, n(), n(), n(), slots, draw(st.booleans()), draw(st.booleans()))
    if kind == "accept":
        return Accept(frm, dest, n(), _entries(draw), n())
    if kind == "accepted":
        return Accepted(frm, dest, n(), n(), n(), n())
    if kind == "heartbeat":
        return Heartbeat(frm, dest, n(), n(), n())
    if kind == "hb_ack":
        return HeartbeatAck(frm, dest, n(), n(), n())
    if kind == "reject":
        return Reject(frm, dest, n(), n(), draw(NAMES))
    if kind == "snapshot":
        meta = SnapshotMeta(n(), n(), ConfState(voters=("n1", "n2", "n3")))
        return Snapshot(frm, dest, n(), meta, n(), draw(st.binary(max_size=8)), n(),
                        draw(st.booleans()))
    if kind == "snapshot_ack":
        return SnapshotAck(frm, dest, n(), n(), n(), draw(st.booleans()), n())
    return TimeoutNow(frm, dest, n(), n())


def _harmless(m: Any, core: Any) -> bool:
    """Whether a correct cluster could be fooled by ``m`` only by believing a member that lies
    (members are trusted, as in Raft): such messages are not forged here."""
    requests = (Prepare, Accept, Heartbeat, Snapshot, TimeoutNow)
    if isinstance(m, requests) and isinstance(m.round, int) and 0 <= m.round <= BIG:
        # a request above our promise from anybody is believed: keep only stale ones
        return m.round < core.term
    if isinstance(m, Promise) and not m.reject and m.frm in ("n1", "n2", "n3"):
        return m.round != core.term  # a member's promise for our ballot is believed
    if isinstance(m, Reject):
        return False  # a member saying "I promised higher" is believed (it steps us down)
    return True


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 500), data=st.data())
def test_forged_messages_are_dropped_never_raise_and_the_cluster_recovers(
    seed: int, data: st.DataObject
) -> None:
    c = paxos_cluster(seed=seed)
    leader = c.wait_leader()
    c.put("k", "v")
    roles = {Role.LEADER: leader, Role.FOLLOWER: next(n for n in c.ids if n != leader)}
    target = roles[data.draw(st.sampled_from(sorted(roles)))]
    for _ in range(data.draw(st.integers(1, 25), label="steps")):
        action = data.draw(st.sampled_from(("forge",) * 5 + ("tick", "deliver")))
        if action == "tick":
            c.tick()
        elif action == "deliver":
            c.deliver(max_messages=data.draw(st.integers(1, 8)))
        else:
            core = c.core(target)
            m = data.draw(forged(target))
            if not _harmless(m, core):
                continue
            before = sum(core.dropped.values())
            core.step(m)
            c.drive_all()
            if m.to != target or m.frm in ("", target):
                assert sum(core.dropped.values()) == before + 1
    c.heal()
    for _ in range(5):
        leader = c.wait_leader(max_ticks=300)
        if c.propose(leader, b"after=1") is not None:
            c.run(10)
            if all(c.hosts[n].kv.data.get("after") == "1" for n in c.ids):
                break
    assert all(c.hosts[n].kv.data.get("after") == "1" for n in c.ids), c.describe()
