"""Multi-Paxos phase 2 in a deterministic in-memory cluster: choosing, learning, holes,
catch-up and snapshots.

Lamport, "Paxos Made Simple" (PMS) §2.2 (a value is chosen by a quorum of acceptors), §2.3
(learning a chosen value), §3 (a sequence of instances; gaps filled with no-ops).
"""

from __future__ import annotations

from typing import Any

from exapyte.protocol.multipaxos.messages import Accept, Accepted, Snapshot
from exapyte.protocol.types import EntryKind, Role
from tests.protocol.paxos_helpers import paxos_cluster


def _kv(c: Any, node: str) -> dict[str, str]:
    return dict(c.hosts[node].kv.data)


def test_pms_2_2_a_value_is_chosen_only_by_a_quorum_of_acceptors() -> None:
    c = paxos_cluster(seed=1)
    leader = c.wait_leader()
    others = [n for n in c.ids if n != leader]
    before = c.core(leader).log.committed
    for n in others:
        c.cut(leader, n)
    c.propose(leader, b"k=v")
    c.stabilize()
    assert c.core(leader).log.committed == before  # only the leader accepted it
    c.heal()
    c.stabilize()
    c.run(3)
    assert c.core(leader).log.committed > before
    c.run(1)  # the chosen prefix reaches the acceptors with the next heartbeat
    assert all(_kv(c, n) == {"k": "v"} for n in c.ids)


def test_pms_2_3_every_replica_learns_the_chosen_prefix() -> None:
    c = paxos_cluster(seed=2)
    for i in range(10):
        c.put(f"k{i}", str(i))
    c.run(2)
    leader = c.wait_leader()
    commit = c.core(leader).log.committed
    for n in c.ids:
        assert c.core(n).log.committed == commit
        assert _kv(c, n) == {f"k{i}": str(i) for i in range(10)}


def test_pms_2_2_proposals_are_batched_and_pipelined() -> None:
    c = paxos_cluster(seed=3, max_entries_per_msg=4, max_inflight_msgs=2)
    leader = c.wait_leader()
    for i in range(20):
        c.cores[leader].propose(f"k{i}=v".encode())
    c.drive_all()
    accepts = [m for m in c.queue if isinstance(m, Accept)]
    per_peer: dict[str, int] = {}
    for m in accepts:
        assert 1 <= len(m.entries) <= 4
        per_peer[m.to] = per_peer.get(m.to, 0) + 1
    assert per_peer and all(n == 2 for n in per_peer.values())  # the in-flight window
    c.stabilize()
    c.run(3)
    assert all(len(_kv(c, n)) == 20 for n in c.ids)


def test_pms_3_an_acceptor_takes_slots_above_a_hole_and_the_leader_fills_it() -> None:
    c = paxos_cluster(seed=4)
    leader = c.wait_leader()
    follower = sorted(n for n in c.ids if n != leader)[0]
    c.propose(leader, b"a=1")
    first = c.drop(lambda m: isinstance(m, Accept) and m.to == follower)
    assert first == 1
    c.propose(leader, b"b=2")
    c.deliver(where=lambda m: isinstance(m, Accept) and m.to == follower)
    core = c.core(follower)
    slots = sorted(core.accepted)
    assert slots and core.log.last_index + 1 not in core.accepted  # a hole below
    assert core.log.committed < max(slots)
    c.stabilize()
    c.run(5)  # the gap shows in the acceptor's match: the leader re-sends
    assert _kv(c, follower) == {"a": "1", "b": "2"}


def test_pms_3_a_new_leader_fills_holes_with_noops_and_keeps_the_values_it_finds() -> None:
    c = paxos_cluster(seed=5)
    leader = c.wait_leader()
    a, b = sorted(n for n in c.ids if n != leader)
    ia = c.propose(leader, b"x=1")
    c.drop(lambda m: isinstance(m, Accept))  # slot of x=1 reaches nobody
    ib = c.propose(leader, b"y=2")
    assert ia is not None and ib is not None and ib[0] == ia[0] + 1
    c.drop(lambda m: isinstance(m, Accept) and m.to == b)
    c.deliver(where=lambda m: isinstance(m, Accept))  # only a accepts y=2, above a hole
    c.drop(lambda m: isinstance(m, Accepted))
    c.crash(leader)
    new = c.wait_leader()  # either survivor: its phase 1 quorum is both of them
    c.run(3)
    assert c.core(new).role is Role.LEADER
    applied = {e.index: e for e in c.hosts[a].applied_log}
    hole = applied[ia[0]]
    assert hole.kind == EntryKind.NOOP and hole.term == c.core(new).term
    kept = applied[ib[0]]
    # the value found is re-proposed with its identity: (index, term) as propose() returned
    assert (kept.index, kept.term, kept.data) == (ib[0], ib[1], b"y=2")
    # a host holding the client's (index, term) answers it: that pair names this value
    assert c.proposed[(kept.index, kept.term)] == (leader, b"y=2")
    assert _kv(c, b) == {"y": "2"}


def test_pms_2_3_a_lagging_acceptor_catches_up() -> None:
    c = paxos_cluster(seed=6)
    leader = c.wait_leader()
    lagger = sorted(n for n in c.ids if n != leader)[0]
    c.crash(lagger)
    for i in range(30):
        c.put(f"k{i}", str(i))
    c.restart(lagger)
    c.run(10)
    assert c.core(lagger).log.committed == c.core(leader).log.committed
    assert _kv(c, lagger) == _kv(c, leader)


def test_an_acceptor_behind_the_compaction_point_gets_the_snapshot_in_chunks() -> None:
    c = paxos_cluster(seed=7, snapshot_chunk_bytes=16)
    leader = c.wait_leader()
    lagger = sorted(n for n in c.ids if n != leader)[0]
    c.crash(lagger)
    for i in range(20):
        c.put(f"key{i}", "value" * 3)
    c.snapshot(leader)
    assert c.core(leader).log.offset > 0
    chunks: list[Snapshot] = []
    enqueue = c.enqueue

    def spy(m: Any) -> None:
        if isinstance(m, Snapshot) and m.to == lagger:
            chunks.append(m)
        enqueue(m)

    c.enqueue = spy  # type: ignore[method-assign]
    c.restart(lagger)
    c.run(60)
    assert len({m.offset for m in chunks}) > 2
    assert all(len(m.data) <= 16 for m in chunks)
    assert _kv(c, lagger) == _kv(c, leader)
    assert c.core(lagger).log.offset == c.core(leader).log.offset
    c.put("after", "snapshot")
    c.run(1)  # the chosen prefix reaches the acceptor with the next heartbeat
    assert _kv(c, lagger)["after"] == "snapshot"


def test_a_restarted_replica_keeps_its_chosen_log_and_accepted_slots() -> None:
    c = paxos_cluster(seed=8)
    leader = c.wait_leader()
    c.put("a", "1")
    follower = sorted(n for n in c.ids if n != leader)[0]
    c.cut(follower, leader, both=False)  # it accepts but its answers are lost
    c.propose(leader, b"b=2")
    c.deliver()
    accepted = c.core(follower).accepted
    assert accepted
    committed = c.core(follower).log.committed
    c.crash(follower)
    c.restart(follower)
    assert c.core(follower).accepted == accepted
    assert c.core(follower).log.committed == committed
    c.heal()
    c.run(5)
    assert _kv(c, follower) == {"a": "1", "b": "2"}
