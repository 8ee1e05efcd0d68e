"""Broadcast (Zab paper §IV-C, Phase 3): PROPOSAL -> ACK (after the fsync) -> COMMIT in zxid
order, pipelined and batched; followers apply only committed entries, in order; the zxid
counter rolling over forces a new epoch."""

from __future__ import annotations

from typing import Any

import pytest

from exapyte.errors import NotLeader, ProposalDropped
from exapyte.protocol import registry
from exapyte.protocol.types import Entry, EntryKind
from exapyte.protocol.zab.core import Phase, Zab, ZabConfig, ZabState
from exapyte.protocol.zab.messages import (
    Ack,
    AckNewLeader,
    Commit,
    NewEpoch,
    NewLeader,
    Notification,
    PeerState,
    Ping,
    PingAck,
    Proposal,
    SyncEntries,
    SyncMode,
    pack_zxid,
    unpack_zxid,
)
from tests.protocol.helpers import RecordingHost, sent_of
from tests.protocol.zab_helpers import make_zab, pump, zab_cluster


def synced_follower() -> tuple[Any, RecordingHost]:
    """n1 following n3 in epoch 1, synced: log = bootstrap 1..3 + NOOP(1, 4), commit 4."""
    core, host = make_zab("n1")
    core.step(Notification("n3", "n1", core.election_round, PeerState.LOOKING, "n3", 0, 0, 3))
    core.step(NewEpoch("n3", "n1", 1))
    noop = (Entry(1, 4, EntryKind.NOOP),)
    core.step(SyncEntries("n3", "n1", 1, SyncMode.DIFF, 3, 0, noop, start=True))
    core.step(NewLeader("n3", "n1", 1, last_index=4, last_term=1, commit=3, epoch_start=4))
    pump(core, host)
    assert core.phase is Phase.BROADCAST and sent_of(host, AckNewLeader)
    host.take()
    host.calls.clear()
    return core, host


def proposal(first: int, count: int, commit: int = 3, prev_term: int = 1) -> Proposal:
    entries = tuple(Entry(1, first + i, EntryKind.NORMAL, f"k{first + i}=v".encode())
                    for i in range(count))
    last = first + count - 1
    return Proposal("n3", "n1", 1, first - 1, prev_term, entries, pack_zxid(1, last - 4 + 1),
                    commit)


def test_a_follower_acks_a_proposal_only_after_persisting_it() -> None:
    core, host = synced_follower()
    core.step(proposal(5, 2))
    pump(core, host)
    persist_at = next(i for i, (what, arg) in enumerate(host.calls)
                      if what == "persist" and [e.index for e in arg[1]] == [5, 6])
    assert host.calls[persist_at][1][3] is True  # fsynced
    send_at = next(i for i, (what, arg) in enumerate(host.calls)
                   if what == "send" and any(isinstance(m, Ack) for m in arg))
    assert persist_at < send_at
    (ack,) = sent_of(host, Ack)
    assert (ack.index, unpack_zxid(ack.zxid)) == (6, (1, 3))


def test_followers_apply_only_committed_entries_in_order() -> None:
    core, host = synced_follower()
    applied_before = len(host.applied)
    core.step(proposal(5, 3))
    pump(core, host)
    assert len(host.applied) == applied_before  # nothing new is committed yet
    core.step(Commit("n3", "n1", 1, 6, pack_zxid(1, 3)))
    pump(core, host)
    assert [e.index for e in host.applied[applied_before:]] == [4, 5, 6]
    core.step(Commit("n3", "n1", 1, 7, pack_zxid(1, 4)))
    pump(core, host)
    assert [e.index for e in host.applied[applied_before:]] == [4, 5, 6, 7]


def test_a_proposal_after_a_gap_is_answered_with_where_the_log_ends() -> None:
    core, host = synced_follower()
    core.step(proposal(7, 1))  # 5 and 6 were lost
    pump(core, host)
    (ack,) = sent_of(host, Ack)
    assert ack.gap and ack.index == 4
    assert core.log.last_index == 4


def test_a_proposal_whose_zxid_does_not_match_its_position_is_dropped() -> None:
    core, host = synced_follower()
    bad = proposal(5, 1)
    core.step(Proposal(bad.frm, bad.to, bad.epoch, bad.prev_index, bad.prev_term, bad.entries,
                       pack_zxid(1, 9), bad.commit))
    pump(core, host)
    assert core.dropped["zxid_mismatch"] == 1 and core.log.last_index == 4


def test_duplicate_and_reordered_proposals_leave_one_copy() -> None:
    core, host = synced_follower()
    core.step(proposal(5, 2))
    core.step(proposal(5, 1))  # a duplicate of the first half, late
    core.step(proposal(7, 1))
    core.step(proposal(7, 1))
    pump(core, host)
    assert [e.index for e in core.log._entries[3:]] == [4, 5, 6, 7]


def test_proposals_are_batched_into_one_message_per_follower() -> None:
    c = zab_cluster(seed=1)
    leader = c.wait_leader()
    seen: list[Any] = []
    original = c.enqueue
    c.enqueue = lambda m: (seen.append(m), original(m))  # type: ignore[method-assign,func-returns-value]
    core = c.core(leader)
    for i in range(10):
        core.propose(f"k{i}=v".encode())
    c.drive_all()
    proposals = [m for m in seen if isinstance(m, Proposal)]
    assert len(proposals) == 2 and all(len(m.entries) == 10 for m in proposals)
    c.stabilize()
    assert all(len(c.hosts[n].kv.data) == 10 for n in c.ids)


def test_proposals_are_pipelined_up_to_the_inflight_window() -> None:
    c = zab_cluster(seed=1, max_inflight_msgs=3, max_entries_per_msg=1)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    seen: list[Any] = []
    original = c.enqueue
    c.enqueue = lambda m: (seen.append(m), original(m))  # type: ignore[method-assign,func-returns-value]
    core = c.core(leader)
    for i in range(8):
        core.propose(f"k{i}=v".encode())
    c.drive_all()
    to_follower = [m for m in seen if isinstance(m, Proposal) and m.to == follower]
    assert len(to_follower) == 3  # three unacknowledged messages, then wait
    c.stabilize()
    assert len(c.hosts[follower].kv.data) == 8


def test_the_leader_commits_what_a_quorum_acked() -> None:
    c = zab_cluster(seed=1)
    leader = c.wait_leader()
    core = c.core(leader)
    a, b = (n for n in c.ids if n != leader)
    c.cut(leader, a)
    c.cut(leader, b)
    index, _ = core.propose(b"x=1")
    c.stabilize()
    assert core.log.committed < index  # only the leader holds it
    c.heal()
    c.run(3)
    assert core.log.committed >= index
    assert all(c.hosts[n].kv.data.get("x") == "1" for n in c.ids)


def test_a_follower_refuses_proposals_and_reads() -> None:
    c = zab_cluster(seed=1)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    with pytest.raises(NotLeader) as info:
        c.core(follower).propose(b"x=1")
    assert info.value.leader_hint == leader


def _zab_with_counter_max(counter_max: int) -> registry.ProtocolDef:
    def factory(spec: Any, persisted: Any, rng: Any, *, applied: Any = None,
                snapshot_check: Any = None) -> Zab:
        config = ZabConfig(node_id=spec.node_id, counter_max=counter_max)
        return Zab(config, persisted, rng, applied=applied, snapshot_check=snapshot_check)

    return registry.ProtocolDef("zab", factory, registry.PROTOCOLS["zab"].messages, "test")


def test_zxid_counter_rollover_forces_a_new_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.PROTOCOLS, "zab", _zab_with_counter_max(4))
    c = zab_cluster(seed=6)
    leader = c.wait_leader()
    core = c.core(leader)
    epoch = core.accepted_epoch
    for i in range(3):  # counters 2, 3, 4 after the NOOP's 1
        c.put(f"k{i}", "v")
    with pytest.raises(ProposalDropped):
        core.propose(b"k3=v")
    assert core.dropped["zxid_rollover"] == 1 and core.state is ZabState.LOOKING
    new = c.wait_leader()
    new_core = c.core(new)
    assert new_core.accepted_epoch > epoch
    noop = new_core.log.last_index
    assert unpack_zxid(new_core.zxid(noop)) == (new_core.accepted_epoch, 1)
    c.put("k3", "v")
    c.run(40)  # a node that ran for leader in the same round rejoins
    assert all(len(c.hosts[n].kv.data) == 4 for n in c.ids)


def test_an_idle_group_is_quiescent_and_new_work_wakes_it() -> None:
    c = zab_cluster(seed=2)
    leader = c.wait_leader()
    c.put("a", "1")
    c.run(3)
    assert all(c.core(n).quiescent() for n in c.ids)
    c.core(leader).propose(b"b=2")
    assert not c.core(leader).quiescent()  # the proposal is in flight
    c.drive_all()
    follower = next(n for n in c.ids if n != leader)
    c.stabilize()
    c.run(2)
    assert all(c.core(n).quiescent() for n in c.ids)
    c.core(leader).read(b"r")
    assert not c.core(leader).quiescent()  # a read is pending
    c.isolate(follower)
    c.run(30)
    assert not c.core(follower).quiescent()  # it lost its leader


def test_a_follower_behind_a_compacted_log_whose_proposals_were_lost_gets_a_snapshot() -> None:
    # f holds entry k but its ACK was lost (the leader's match for it is k - 1), then the
    # proposals after k were lost too and the leader, whose quorum committed them, compacted
    # its log past k. f's PINGACKs name entry k, which the leader can no longer check: that is
    # no progress, so after a few heartbeats the leader resends, finds the entries compacted
    # and synchronizes f with a snapshot. Before, it waited for ever.
    c = zab_cluster(seed=21)
    leader = c.wait_leader()
    f = min(n for n in c.ids if n != leader)
    c.put("a", "1")
    c.run(5)

    def settle(lose: Any) -> None:
        while c.queue:
            c.drop(lose)
            c.deliver()

    c.propose(leader, b"b=2")
    settle(lambda m: isinstance(m, (Ack, PingAck)) and m.frm == f)
    k = c.core(f).log.last_index
    assert c.core(leader)._peers[f].match == k - 1
    for i in range(3):
        c.propose(leader, f"c{i}=3".encode())
        settle(lambda m: type(m) in (Proposal, Commit, Ping) and m.to == f)
    assert c.core(f).log.last_index == k
    c.snapshot(leader)
    assert c.core(leader).log.offset > k
    c.run(40)
    assert c.core(f).log.last_index == c.core(leader).log.last_index
    assert c.hosts[f].kv.data == c.hosts[leader].kv.data
