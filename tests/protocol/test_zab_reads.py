"""Reads. ZooKeeper's plain reads are served from a replica's applied state and are only
sequentially consistent; ``read(request_id)`` is the linearizable one (sync-then-read): the
leader confirms its leadership with a quorum round after the read arrived, and the read index
is its commit. Every read ends in a ReadState or a failed read."""

from __future__ import annotations

import pytest

from exapyte import limits
from exapyte.errors import NotLeader, ProtocolMisuse
from exapyte.protocol.zab.core import ZabState
from exapyte.protocol.zab.messages import Ping
from tests.protocol.zab_helpers import zab_cluster


def test_a_linearizable_read_is_answered_at_the_leaders_commit_after_a_quorum_round() -> None:
    c = zab_cluster(seed=1)
    leader = c.wait_leader()
    c.put("a", "1")
    core = c.core(leader)
    core.read(b"r1")
    c.drive_all()
    assert c.read_answers == []  # not before the followers answered the round
    pings = [m for m in c.queue if isinstance(m, Ping)]
    assert pings and all(m.ctx == core.reads.round for m in pings)
    c.stabilize()
    ((node, rs, data),) = c.read_answers
    assert node == leader and rs.request_id == b"r1" and rs.index == core.log.committed
    assert data == {"a": "1"}


def test_one_answering_follower_is_enough_in_three() -> None:
    c = zab_cluster(seed=1)
    leader = c.wait_leader()
    a, b = (n for n in c.ids if n != leader)
    c.cut(leader, b)
    c.core(leader).read(b"r1")
    c.drive_all()
    c.stabilize()
    assert [rs.request_id for _, rs, _ in c.read_answers] == [b"r1"]


def test_a_follower_refuses_linearizable_reads_with_a_hint() -> None:
    c = zab_cluster(seed=1)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    with pytest.raises(NotLeader) as info:
        c.core(follower).read(b"r1")
    assert info.value.leader_hint == leader


def test_a_pending_read_id_cannot_be_reused() -> None:
    c = zab_cluster(seed=1)
    core = c.core(c.wait_leader())
    core.read(b"r1")
    with pytest.raises(ProtocolMisuse):
        core.read(b"r1")


def test_a_read_a_cut_off_leader_cannot_confirm_fails_within_its_timeout() -> None:
    c = zab_cluster(seed=1)
    leader = c.wait_leader()
    c.isolate(leader)
    c.core(leader).read(b"r1")
    c.drive_all()
    c.run(10 * limits.RAFT_READ_TIMEOUT_ELECTIONS + 1)
    assert b"r1" in c.failed_reads
    assert c.read_answers == []


def test_a_deposed_leader_never_answers_from_stale_state() -> None:
    c = zab_cluster(seed=2)
    old = c.wait_leader()
    c.put("a", "1")
    c.isolate(old)
    others = [n for n in c.ids if n != old]
    for _ in range(200):
        c.tick(nodes=others)
        c.stabilize()
        if any(c.core(n).state is ZabState.LEADING and c.core(n).established for n in others):
            break
    new = next(n for n in others if c.core(n).established)
    c.propose(new, b"a=2")
    c.stabilize()
    if c.core(old).state is ZabState.LEADING:
        c.core(old).read(b"stale")
        c.drive_all()
        c.stabilize()
    c.run(30)
    assert all(rs.request_id != b"stale" for _, rs, _ in c.read_answers)
    c.heal()
    c.run(30)
    assert c.hosts[old].kv.data == {"a": "2"}


def test_reads_arriving_before_the_epoch_is_established_wait_for_it() -> None:
    c = zab_cluster(seed=3)
    for _ in range(100):
        c.tick()
        c.deliver()
        leading = [n for n in c.ids if c.core(n).state is ZabState.LEADING]
        if leading and not c.core(leading[0]).established:
            c.core(leading[0]).read(b"early")
            break
    else:
        pytest.skip("the election finished within one delivery round")
    c.run(40)
    answered = [rs.request_id for _, rs, _ in c.read_answers]
    assert answered == [b"early"] or b"early" in c.failed_reads


def test_every_read_ends_when_leadership_is_lost() -> None:
    c = zab_cluster(seed=4)
    leader = c.wait_leader()
    c.isolate(leader)
    core = c.core(leader)
    for i in range(5):
        core.read(f"r{i}".encode())
    c.run(40)
    assert core.state is ZabState.LOOKING
    assert sorted(c.failed_reads) == [f"r{i}".encode() for i in range(5)]


def test_plain_local_reads_are_sequentially_consistent() -> None:
    # A follower's applied state is always a prefix of the leader's history: it may lag (a
    # plain read there is not linearizable) but never shows writes out of order.
    c = zab_cluster(seed=5)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    c.cut(leader, follower)
    c.put("a", "1")
    assert c.hosts[follower].kv.data.get("a") is None  # stale, as plain reads may be
    c.heal()
    c.run(5)
    leader_log = [(e.index, e.term) for e in c.hosts[leader].applied_log]
    follower_log = [(e.index, e.term) for e in c.hosts[follower].applied_log]
    assert follower_log == leader_log[: len(follower_log)]
    assert c.hosts[follower].kv.data == {"a": "1"}
