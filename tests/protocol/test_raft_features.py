"""Snapshots (§7), ReadIndex (§8), membership (§6 / thesis §4), transfer (thesis §3.10), learners."""

from __future__ import annotations

import pytest

from exapyte.errors import NotLeader, ProposalDropped, ProtocolMisuse
from exapyte.protocol.raft.messages import Append, Heartbeat, InstallSnapshot, TimeoutNow
from exapyte.protocol.types import ConfChange, ConfChangeKind, Role

from .cluster import Cluster


# Raft §7: a follower whose next entry was compacted receives InstallSnapshot
def test_lagging_follower_catches_up_through_snapshot() -> None:
    c = Cluster(seed=1)
    c.elect("n1")
    c.isolate("n3")
    for i in range(20):
        c.put(f"k{i}", str(i))
    snap = c.snapshot("n1")
    assert c.core("n1").log.first_index == snap.meta.index + 1
    assert snap.meta.conf.voters == ("n1", "n2", "n3")
    c.heal()
    c.hosts["n3"].events.clear()
    c.run(5)
    assert "install" in c.hosts["n3"].events
    assert c.hosts["n3"].kv.data == {f"k{i}": str(i) for i in range(20)}
    assert c.core("n3").log.offset == snap.meta.index
    c.put("after", "snap")
    c.run(1)
    assert c.hosts["n3"].kv.data["after"] == "snap"


# Raft §7 (Figure 13: offset, data, done): a snapshot larger than one chunk arrives in chunks
@pytest.mark.parametrize("faults", ["none", "drop", "duplicate", "reorder"])
def test_snapshot_is_sent_in_chunks_and_survives_lost_duplicated_reordered_chunks(
    faults: str,
) -> None:
    c = Cluster(seed=11, snapshot_chunk_bytes=16)
    c.elect("n1")
    c.isolate("n3")
    for i in range(20):
        c.put(f"key-{i}", "value-%d" % i)
    snap = c.snapshot("n1")
    chunks = -(-len(snap.data) // 16)
    assert chunks >= 5
    c.heal()
    if faults == "drop":
        c.drop_rate = 0.2
    elif faults == "duplicate":
        c.dup_rate = 0.3
    elif faults == "reorder":
        c.reorder = True
    sent: list[InstallSnapshot] = []
    original = c.cores["n1"]._send_snapshot_chunk

    def record(to: str, offset: int) -> None:
        original(to, offset)
        sent.append(c.cores["n1"]._msgs[-1])

    c.cores["n1"]._send_snapshot_chunk = record  # type: ignore[method-assign]
    c.hosts["n3"].events.clear()
    for _ in range(60):
        c.run(1)
        if c.core("n3").log.offset == snap.meta.index:
            break
    c.drop_rate = c.dup_rate = 0.0
    c.reorder = False
    c.run(3)
    assert "install" in c.hosts["n3"].events
    assert c.hosts["n3"].kv.data == {f"key-{i}": "value-%d" % i for i in range(20)}
    to_n3 = [m for m in sent if m.to == "n3"]
    assert all(len(m.data) <= 16 for m in to_n3) and len(to_n3) >= chunks
    assert {m.offset for m in to_n3} >= set(range(0, len(snap.data), 16))


# Raft §7: a chunk that does not continue the follower's buffer is answered with what it holds
def test_out_of_order_snapshot_chunk_is_answered_with_the_bytes_held() -> None:
    c = Cluster(seed=12)
    c.elect("n1")
    c.isolate("n3")
    for i in range(8):
        c.put(f"k{i}", "v")
    snap = c.snapshot("n1")
    meta, data, term = snap.meta, snap.data, c.core("n1").term
    follower = c.core("n3")
    follower.step(InstallSnapshot("n1", "n3", term, meta, 0, data[:10], len(data), False))
    follower.step(InstallSnapshot("n1", "n3", term, meta, 20, data[20:30], len(data), False))
    rd = follower.ready()
    follower.advance(rd)
    acks = [m for m in rd.messages if type(m).__name__ == "InstallSnapshotResp"]
    assert [(m.done, m.received) for m in acks] == [(False, 10), (False, 10)]
    assert follower.dropped.get("snapshot_chunk_out_of_order") == 1
    follower.step(InstallSnapshot("n1", "n3", term, meta, 10, data[10:], len(data), True))
    rd = follower.ready()
    assert rd.snapshot is not None and rd.snapshot.data == data


# Raft §7: a follower that holds the snapshot's last entry keeps its log
def test_follower_with_matching_entry_keeps_log_on_snapshot() -> None:
    c = Cluster(seed=2)
    c.elect("n1")
    for i in range(5):
        c.put(f"k{i}", "v")
    follower = c.core("n2")
    last = follower.log.last_index
    snap = c.snapshot("n1")
    # the last put's commit has not reached the follower yet (it rides on the next append or
    # heartbeat), so the snapshot is ahead of the follower's commit but not of its log
    assert follower.log.committed < snap.meta.index == last
    message = InstallSnapshot(
        "n1", "n2", c.core("n1").term, snap.meta, 0, snap.data, len(snap.data), True
    )
    follower.step(message)
    c.drive_all()
    assert follower.log.last_index == last and follower.log.offset == 0
    assert follower.log.committed == snap.meta.index
    assert not follower.dropped
    # the same snapshot again is at or below the commit now: stale
    follower.step(message)
    c.drive_all()
    assert follower.log.offset == 0
    assert follower.dropped.get("snapshot_stale") == 1


# Raft §7: restart from a snapshot plus the log after it
def test_restart_from_snapshot() -> None:
    c = Cluster(seed=3)
    c.elect("n1")
    for i in range(10):
        c.put(f"k{i}", "v")
    c.snapshot("n2")
    c.put("tail", "t")
    c.crash("n2")
    c.restart("n2")
    assert c.core("n2").log.offset > 0
    c.run(3)
    assert c.hosts["n2"].kv.data["tail"] == "t" and len(c.hosts["n2"].kv.data) == 11


def test_compact_rejects_unapplied_index() -> None:
    c = Cluster(seed=3)
    c.elect("n1")
    from exapyte.protocol.types import Snapshot, SnapshotMeta

    with pytest.raises(ProtocolMisuse):
        c.core("n1").compact(Snapshot(SnapshotMeta(index=100)))


# Raft §8: ReadIndex on the leader, after a heartbeat round confirmed by a quorum
def test_read_index_answers_after_quorum_round() -> None:
    c = Cluster(seed=4)
    c.elect("n1")
    c.put("a", "1")
    c.core("n1").read(b"r1")
    c.drive_all()
    assert not c.hosts["n1"].read_results  # needs a quorum's heartbeat acknowledgement
    c.stabilize()
    index, data = c.hosts["n1"].read_results[b"r1"]
    assert data == {"a": "1"} and index == c.core("n1").log.committed


# Raft §8: many reads share one heartbeat round (batching)
def test_reads_are_batched_into_one_round() -> None:
    c = Cluster(seed=4)
    c.elect("n1")
    for i in range(50):
        c.core("n1").read(f"r{i}".encode())
    c.drive_all()
    heartbeats = [m for m in c.queue if isinstance(m, Heartbeat)]
    assert len(heartbeats) == 2  # one per follower
    c.stabilize()
    assert len(c.hosts["n1"].read_results) == 50
    order = [rs.request_id for _, rs, _ in c.read_answers]
    assert order == [f"r{i}".encode() for i in range(50)]


# Raft §8: a deposed leader cannot answer a read (no quorum confirms it); it fails it
def test_isolated_leader_never_answers_read() -> None:
    c = Cluster(seed=5)
    c.elect("n1")
    c.isolate("n1")
    c.core("n1").read(b"stale")
    for _ in range(30):
        c.tick(nodes=["n1"])
        c.stabilize()
    assert b"stale" not in c.hosts["n1"].read_results
    assert c.hosts["n1"].failed_reads == [b"stale"]


# Raft §8: a new leader answers reads only after committing an entry of its term
def test_read_waits_for_first_commit_of_term() -> None:
    c = Cluster(seed=6)
    c.core("n1").campaign()
    c.drive_all()
    for _ in range(4):
        c.deliver(where=lambda m: type(m).__name__ in {"PreVote", "PreVoteResp", "Vote", "VoteResp"})
    leader = c.core("n1")
    assert leader.role is Role.LEADER
    assert leader.log.term(leader.log.committed) != leader.term
    leader.read(b"early")
    c.drive_all()
    assert [request_id for request_id, _ in leader.reads.waiting] == [b"early"]
    c.stabilize()
    c.stabilize()
    assert b"early" in c.hosts["n1"].read_results
    assert c.hosts["n1"].read_results[b"early"][0] >= leader.log.last_index - 0


# Raft §8: followers redirect reads
def test_follower_read_raises_not_leader_with_hint() -> None:
    c = Cluster(seed=7)
    c.elect("n2")
    with pytest.raises(NotLeader) as err:
        c.core("n1").read(b"x")
    assert err.value.leader_hint == "n2"
    with pytest.raises(NotLeader):
        c.core("n1").propose(b"x=1")


# Raft §6 / thesis §4.1: add a learner, then promote it to voter
def test_add_learner_then_promote() -> None:
    c = Cluster(seed=8, joiners=("n4",))
    c.elect("n1")
    c.put("a", "1")
    c.core("n1").propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n4"))
    c.drive_all()
    c.run(5)
    assert c.core("n4").role is Role.LEARNER
    assert c.hosts["n4"].kv.data == {"a": "1"}
    assert c.core("n1").conf.learners == ("n4",)
    # a learner does not count for the quorum: with n2, n3 cut, nothing commits
    c.cut("n1", "n2")
    c.cut("n1", "n3")
    idx = c.propose("n1", b"b=2")
    c.stabilize()
    assert idx is not None and c.core("n1").log.committed < idx[0]
    c.heal()
    c.run(5)
    c.core(c.wait_leader()).propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, "n4"))
    c.drive_all()
    c.run(5)
    assert "n4" in c.core("n1").conf.voters and c.core("n4").role is not Role.LEARNER


# thesis §4.1: at most one membership change at a time
def test_only_one_pending_conf_change() -> None:
    c = Cluster(seed=9, joiners=("n4", "n5"))
    c.elect("n1")
    c.core("n1").propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n4"))
    with pytest.raises(ProposalDropped):
        c.core("n1").propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n5"))
    with pytest.raises(ProtocolMisuse):
        c.core("n1").propose_conf_change(ConfChange(ConfChangeKind.REMOVE_NODE, "n9"))


# thesis §4.2.2: a removed leader steps down; the rest carry on
def test_removed_leader_steps_down() -> None:
    c = Cluster(seed=10)
    c.elect("n1")
    c.put("a", "1")
    c.core("n1").propose_conf_change(ConfChange(ConfChangeKind.REMOVE_NODE, "n1"))
    c.drive_all()
    c.run(3)
    assert c.core("n1").role is not Role.LEADER
    new = c.wait_leader()
    assert new in ("n2", "n3")
    assert c.core(new).conf.voters == ("n2", "n3")
    c.put("b", "2")
    assert c.hosts["n2"].kv.data == {"a": "1", "b": "2"}


def test_remove_follower_shrinks_quorum() -> None:
    c = Cluster(seed=11)
    c.elect("n1")
    c.core("n1").propose_conf_change(ConfChange(ConfChangeKind.REMOVE_NODE, "n3"))
    c.drive_all()
    c.run(3)
    c.crash("n3")
    c.cut("n1", "n2")
    idx = c.propose("n1", b"x=1")
    c.stabilize()
    assert idx is not None and c.core("n1").log.committed < idx[0]  # n1+n2 is the quorum now
    c.heal()
    c.run(3)
    assert c.core("n1").log.committed >= idx[0]


# thesis §3.10: leadership transfer catches the target up, then sends TimeoutNow
def test_leadership_transfer() -> None:
    c = Cluster(seed=12)
    c.elect("n1")
    c.cut("n1", "n3")
    for i in range(5):
        c.put(f"k{i}", "v")
    c.heal()
    c.core("n1").transfer_leadership("n3")
    with pytest.raises(ProposalDropped):
        c.core("n1").propose(b"refused=1")
    c.drive_all()
    timeouts = []
    for _ in range(10):
        timeouts += [m for m in c.queue if isinstance(m, TimeoutNow)]
        c.deliver()
        if c.core("n3").role is Role.LEADER:
            break
    assert timeouts and c.core("n3").role is Role.LEADER
    assert c.core("n1").role is Role.FOLLOWER
    c.put("after", "transfer")
    c.run(1)  # the commit reaches n1 with the next heartbeat
    assert c.hosts["n1"].kv.data["after"] == "transfer"


def test_leadership_transfer_aborts_after_election_timeout() -> None:
    c = Cluster(seed=13)
    c.elect("n1")
    c.isolate("n3")
    c.core("n1").transfer_leadership("n3")
    c.tick(11, nodes=["n1"])
    assert c.core("n1").lead_transferee is None
    assert c.propose("n1", b"ok=1") is not None


def test_transfer_requires_leader_and_voter() -> None:
    c = Cluster(seed=14)
    c.elect("n1")
    with pytest.raises(NotLeader):
        c.core("n2").transfer_leadership("n3")
    with pytest.raises(ProtocolMisuse):
        c.core("n1").transfer_leadership("n9")


def test_learner_never_campaigns() -> None:
    c = Cluster(("n1", "n2", "n3"), learners=("n4",), seed=15)
    c.elect("n1")
    c.isolate("n4")
    c.tick(60)
    assert c.core("n4").role is Role.LEARNER
    assert not any(isinstance(m, Append) and m.frm == "n4" for m in c.queue)
    c.core("n4").step(TimeoutNow("n1", "n4", c.core("n4").term))
    assert c.core("n4").role is Role.LEARNER
