"""Every read ends (Raft §8, thesis §6.4): answered, or failed so that the client retries.

A read given to ``read()`` leaves the core exactly once: as a ReadState once a quorum confirmed a
heartbeat round sent after it arrived, or in ``Ready.failed_reads`` when leadership is lost or it
has waited an election timeout. Each test below is one way a read used to be able to wait for
ever.
"""

from __future__ import annotations

import pytest

from exapyte.errors import NotLeader, ProtocolMisuse
from exapyte.protocol.raft.messages import AppendResp, Vote
from exapyte.protocol.types import Role

from .cluster import Cluster

TIMEOUT = 10  # the cluster's election timeout, in ticks (RaftConfig's default)


def ended(c: Cluster, request_id: bytes) -> list[str]:
    """How ``request_id`` ended, on every node: "answered" and/or "failed" entries."""
    out = []
    for host in c.hosts.values():
        if request_id in host.read_results:
            out.append("answered")
        out += ["failed"] * host.failed_reads.count(request_id)
    return out


def leader_without_its_first_commit(c: Cluster) -> None:
    """n1 wins an election, but its NOOP reaches nobody."""
    c.core("n1").campaign()
    c.drive_all()
    votes = {"PreVote", "PreVoteResp", "Vote", "VoteResp"}
    for _ in range(4):
        c.deliver(where=lambda m: type(m).__name__ in votes)
    c.isolate("n1")
    assert c.core("n1").role is Role.LEADER
    assert c.core("n1").log.term(c.core("n1").log.committed) != c.core("n1").term


# A new leader holds reads until its first entry commits, then answers them.
def test_a_new_leaders_first_reads_are_answered_once_its_noop_commits() -> None:
    c = Cluster(seed=31)
    leader_without_its_first_commit(c)
    leader = c.core("n1")
    leader.read(b"first")
    c.drive_all()
    assert not ended(c, b"first")
    c.heal()
    c.stabilize()
    assert ended(c, b"first") == ["answered"]
    assert c.hosts["n1"].read_results[b"first"][0] == leader.log.committed


# ... and fails them when the first entry does not commit within an election timeout.
def test_a_new_leader_whose_noop_does_not_commit_fails_its_reads() -> None:
    c = Cluster(seed=32, check_quorum=False)  # so that only the read timeout can end them
    leader_without_its_first_commit(c)
    c.core("n1").read(b"early")
    c.drive_all()
    for tick in range(1, TIMEOUT + 1):
        c.tick(nodes=["n1"])
        assert ended(c, b"early") == ([] if tick < TIMEOUT else ["failed"])
    assert c.core("n1").role is Role.LEADER


# A heartbeat round that never reaches a quorum fails the reads waiting on it.
def test_a_round_that_never_reaches_a_quorum_fails_its_reads() -> None:
    c = Cluster(seed=33, check_quorum=False)
    c.elect("n1")
    c.put("a", "1")
    c.isolate("n1")
    c.core("n1").read(b"r")
    for _ in range(TIMEOUT):
        c.tick(nodes=["n1"])
        c.stabilize()
    assert ended(c, b"r") == ["failed"]
    assert c.core("n1").role is Role.LEADER  # still believes it leads: only the timeout helped


# Reads queued in the core end when the leader steps down, whatever makes it step down.
@pytest.mark.parametrize("cause", ["higher_term_answer", "transfer_vote", "check_quorum"])
def test_stepping_down_fails_the_reads_the_core_holds(cause: str) -> None:
    c = Cluster(seed=34)
    c.elect("n1")
    c.put("a", "1")
    leader = c.core("n1")
    c.isolate("n1")
    leader.read(b"r1")
    leader.read(b"r2")
    c.drive_all()
    term = leader.term
    if cause == "higher_term_answer":
        leader.step(AppendResp("n2", "n1", term + 1, index=0, reject=True))
    elif cause == "transfer_vote":
        leader.step(Vote("n3", "n1", term + 1, leader.log.last_index, leader.log.last_term,
                         transfer=True))
    else:
        for _ in range(2 * TIMEOUT):
            if leader.role is not Role.LEADER:
                break
            leader.tick()
    assert leader.role is not Role.LEADER
    c.drive_all()
    assert c.hosts["n1"].failed_reads == [b"r1", b"r2"]
    assert ended(c, b"r1") == ["failed"] and ended(c, b"r2") == ["failed"]


# A leadership transfer ends the old leader's reads one way or the other, never twice.
def test_reads_during_a_leadership_transfer_end_exactly_once() -> None:
    c = Cluster(seed=35)
    c.elect("n1")
    c.put("a", "1")
    c.core("n1").read(b"before")
    c.core("n1").transfer_leadership("n2")
    c.drive_all()
    c.core("n1").read(b"during")
    c.drive_all()
    c.stabilize()
    c.run(3)
    assert c.leader() == "n2"
    for request_id in (b"before", b"during"):
        assert len(ended(c, request_id)) == 1, request_id
    c.core("n2").read(b"after")
    c.drive_all()
    c.stabilize()
    assert ended(c, b"after") == ["answered"]


# A deposed leader that has not heard of the new term yet (it was paused, say) fails reads
# instead of holding them.
@pytest.mark.parametrize("check_quorum", [True, False])
def test_a_deposed_leader_that_does_not_know_it_fails_its_reads(check_quorum: bool) -> None:
    c = Cluster(seed=36, check_quorum=check_quorum, pre_vote=check_quorum)
    c.elect("n1")
    c.put("a", "1")
    c.isolate("n1")
    for _ in range(10 * TIMEOUT):  # n1's clock stands still while the others elect
        c.tick(nodes=["n2", "n3"])
        c.stabilize()
        if c.leader() != "n1":
            break
    new_leader = c.leader()
    assert new_leader in ("n2", "n3") and c.core("n1").role is Role.LEADER
    c.core("n1").read(b"stale")
    c.drive_all()
    for _ in range(TIMEOUT):
        c.tick()
        c.stabilize()
    assert ended(c, b"stale") == ["failed"]
    c.heal()
    c.run(3)
    assert c.core("n1").role is Role.FOLLOWER
    assert ended(c, b"stale") == ["failed"]


# A read id may be pending only once: two reads under one id could not both be answered.
def test_a_request_id_still_pending_is_refused() -> None:
    c = Cluster(seed=37)
    c.elect("n1")
    c.core("n1").read(b"same")
    with pytest.raises(ProtocolMisuse, match="already pending"):
        c.core("n1").read(b"same")
    c.drive_all()
    c.stabilize()
    assert ended(c, b"same") == ["answered"]
    c.core("n1").read(b"same")  # ended, so the id may be used again
    c.drive_all()
    c.stabilize()
    assert c.hosts["n1"].read_results[b"same"] is not None


def test_followers_refuse_reads_at_once() -> None:
    c = Cluster(seed=38)
    c.elect("n1")
    with pytest.raises(NotLeader) as err:
        c.core("n3").read(b"r")
    assert err.value.leader_hint == "n1"
