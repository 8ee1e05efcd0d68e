"""Elections: Raft §5.2, §5.4.1, thesis §9.6 (pre-vote), §6.2 (check-quorum)."""

from __future__ import annotations

import random

from exapyte.protocol.raft import Raft, RaftConfig
from exapyte.protocol.raft.messages import Append, PreVote, Vote, VoteResp
from exapyte.protocol.types import ConfState, PersistedState, Role

from .cluster import Cluster
from .helpers import make_core, pump, sent_of


# Raft §5.2
def test_follower_starts_election_after_election_timeout() -> None:
    core, host = make_core(pre_vote=False)
    term = core.term
    for _ in range(2 * core.cfg.election_timeout_ticks):
        core.tick()
        pump(core, host)
        if core.role is Role.CANDIDATE:
            break
    assert core.role is Role.CANDIDATE
    assert core.term == term + 1 and core.vote == "n1"
    votes = sent_of(host, Vote)
    assert {v.to for v in votes} == {"n2", "n3"}
    assert all(v.term == core.term for v in votes)


# Raft §5.2: randomized election timeouts in [T, 2T)
def test_election_timeout_is_randomized_within_t_to_2t() -> None:
    seen = set()
    for seed in range(60):
        core = Raft(
            RaftConfig("n1"), PersistedState(conf=ConfState(voters=("n1", "n2", "n3"))),
            random.Random(seed),
        )
        seen.add(core._randomized_timeout)
    assert min(seen) >= 10 and max(seen) < 20 and len(seen) > 5


# Raft §5.2
def test_candidate_with_majority_becomes_leader_and_appends_noop() -> None:
    c = Cluster(seed=3)
    c.elect("n2")
    leader = c.core("n2")
    assert leader.role is Role.LEADER
    last = leader.log.entry(leader.log.last_index)
    assert last.kind == 2 and last.term == leader.term  # NOOP of the new term
    assert all(c.core(n).leader == "n2" for n in ("n1", "n3"))


# Raft §5.2: each server votes for at most one candidate per term
def test_vote_granted_at_most_once_per_term() -> None:
    core, host = make_core(pre_vote=False, check_quorum=False)
    core.step(Vote("n2", "n1", 5, 3, 1))
    pump(core, host)
    core.step(Vote("n3", "n1", 5, 3, 1))
    pump(core, host)
    answers = sent_of(host, VoteResp)
    assert [(a.to, a.reject) for a in answers] == [("n2", False), ("n3", True)]
    # a repeated request from the same candidate is granted again (idempotent)
    core.step(Vote("n2", "n1", 5, 3, 1))
    pump(core, host)
    assert sent_of(host, VoteResp)[-1].reject is False


# Raft §5.4.1: election restriction
def test_vote_rejected_when_candidate_log_is_behind() -> None:
    c = Cluster(seed=4, pre_vote=False, check_quorum=False)
    c.elect("n1")
    c.cut("n1", "n3")
    c.put("a", "1")  # n3 misses this entry
    c.heal()
    c.crash("n1")
    c.core("n3").campaign()
    c.drive_all()
    c.stabilize()
    assert c.core("n3").role is not Role.LEADER
    assert c.core("n2").vote != "n3"


# Raft §5.1/§5.2: a higher term turns a leader into a follower
def test_leader_steps_down_on_higher_term() -> None:
    c = Cluster(seed=5, pre_vote=False, check_quorum=False)
    c.elect("n1")
    c.isolate("n1")
    c.elect("n2")
    c.heal()
    c.tick(1, nodes=["n2"])
    c.stabilize()
    assert c.core("n1").role is Role.FOLLOWER and c.core("n1").leader == "n2"


# Raft §5.2: a split vote ends in a later election
def test_split_vote_resolves() -> None:
    c = Cluster(("n1", "n2", "n3", "n4"), seed=6, pre_vote=False)
    c.partition(["n1", "n2"], ["n3", "n4"])
    c.core("n1").campaign()
    c.core("n3").campaign()
    c.drive_all()
    c.stabilize()
    assert c.leader() is None
    c.heal()
    leader = c.wait_leader()
    assert c.core(leader).term >= 3


# thesis §9.6: pre-vote keeps a partitioned node from inflating its term
def test_pre_vote_partitioned_node_does_not_raise_term() -> None:
    c = Cluster(seed=7)
    c.elect("n1")
    term = c.core("n1").term
    c.isolate("n3")
    for _ in range(100):
        c.tick()
        c.stabilize()
    assert c.core("n3").term == term
    assert c.core("n3").role is Role.PRE_CANDIDATE
    c.heal()
    c.run(5)
    assert c.leader() == "n1" and c.core("n1").term == term


# thesis §9.6: without pre-vote the rejoining node disrupts the leader (contrast)
def test_without_pre_vote_rejoining_node_bumps_term() -> None:
    c = Cluster(seed=7, pre_vote=False, check_quorum=False)
    c.elect("n1")
    term = c.core("n1").term
    c.isolate("n3")
    c.tick(40)
    c.queue.clear()
    assert c.core("n3").term > term
    c.heal()
    c.run(40)
    assert c.core(c.wait_leader()).term > term


# thesis §6.2: check-quorum: a leader cut off from a quorum steps down
def test_check_quorum_isolated_leader_steps_down() -> None:
    c = Cluster(seed=8)
    c.elect("n1")
    c.isolate("n1")
    for _ in range(2 * 10 + 1):
        c.tick(nodes=["n1"])
        c.stabilize()
    assert c.core("n1").role is not Role.LEADER


# thesis §6.2/§4.2.3: leader stickiness: followers that hear from a leader ignore votes
def test_follower_in_lease_ignores_vote_requests() -> None:
    c = Cluster(seed=9, pre_vote=False)
    c.elect("n1")
    term = c.core("n2").term
    c.core("n2").step(Vote("n3", "n2", term + 5, 100, term))
    c.drive_all()
    assert c.core("n2").term == term
    assert c.core("n2").dropped.get("vote_in_lease") == 1


# thesis §9.6: pre-vote messages never change a receiver's term
def test_pre_vote_request_does_not_change_term() -> None:
    core, host = make_core(check_quorum=False)
    core.step(PreVote("n2", "n1", 9, 3, 1))
    pump(core, host)
    assert core.term == 1 and core.vote is None


# Raft §5.2: a candidate that learns of a leader of its term becomes follower
def test_candidate_becomes_follower_on_append_of_same_term() -> None:
    core, host = make_core(pre_vote=False)
    core.campaign()
    pump(core, host)
    assert core.role is Role.CANDIDATE
    core.step(Append("n2", "n1", core.term, 3, 1, (), 3))
    pump(core, host)
    assert core.role is Role.FOLLOWER and core.leader == "n2"


def test_single_voter_elects_itself_and_commits() -> None:
    c = Cluster(("n1",), seed=1)
    c.tick(25)
    assert c.leader() == "n1"
    c.put("k", "v")
    assert c.hosts["n1"].kv.data == {"k": "v"}
