"""The stable leader of Multi-Paxos: stickiness, step-down, randomized timeouts, leadership
transfer, reads (ReadIndex) and membership.

Lamport, "Paxos Made Simple" (PMS) §3 (a distinguished proposer; "the leader"); van Renesse and
Altinbuken, "Paxos Made Moderately Complex" (PMMC) §4 (leader stability, "failure detection" by
pings, and reads that must not return stale state).
"""

from __future__ import annotations

import random

import pytest

from exapyte.errors import NotLeader, ProposalDropped
from exapyte.protocol.multipaxos.core import MultiPaxos
from exapyte.protocol.multipaxos.messages import Accept, Heartbeat, Prepare
from exapyte.protocol.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    CoreSpec,
    PersistedState,
    Role,
)
from tests.protocol.paxos_helpers import paxos_cluster


def test_pmmc_4_a_replica_hearing_its_leader_ignores_a_competing_phase_1() -> None:
    c = paxos_cluster(seed=11)
    leader = c.wait_leader()
    rogue = sorted(n for n in c.ids if n != leader)[0]
    c.isolate(rogue)
    before = c.core(rogue).term
    c.run(40)  # the rogue times out again and again, but only probes
    assert c.core(rogue).role is Role.PRE_CANDIDATE
    assert c.core(rogue).term == before
    c.heal()
    c.run(5)
    assert c.leader() == leader and c.core(rogue).term == before
    c.put("k", "v")
    c.run(1)  # the chosen prefix reaches the acceptors with the next heartbeat
    assert c.hosts[rogue].kv.data == {"k": "v"}


def test_pmmc_4_a_competing_phase_1_is_ignored_while_the_leader_is_heard() -> None:
    c = paxos_cluster(seed=11)
    leader = c.wait_leader()
    follower = sorted(n for n in c.ids if n != leader)[0]
    rnd = c.core(follower).term
    c.core(follower).step(Prepare("n9", follower, rnd + 5, 1, 0))
    assert c.core(follower).term == rnd
    assert c.core(follower).dropped["prepare_in_lease"] == 1


def test_pmmc_4_a_leader_without_a_quorum_steps_down() -> None:
    c = paxos_cluster(seed=12, election_timeout_ticks=10)
    leader = c.wait_leader()
    c.isolate(leader)
    for _ in range(21):
        c.tick(nodes=[leader])
    assert c.core(leader).role is not Role.LEADER
    assert c.core(leader).dropped["check_quorum_step_down"] == 1


def test_pms_3_the_majority_side_elects_a_new_leader_after_a_partition() -> None:
    c = paxos_cluster(("n1", "n2", "n3", "n4", "n5"), seed=13)
    old = c.wait_leader()
    rest = [n for n in c.ids if n != old]
    c.partition([old, rest[0]], rest[1:])
    for _ in range(60):
        c.tick()
        c.stabilize()
        if c.leader() in rest[1:]:
            break
    new = c.leader()
    assert new in rest[1:] and c.core(new).term > c.core(old).term
    assert c.propose(new, b"k=new") is not None
    c.heal()
    c.run(10)
    assert all(c.hosts[n].kv.data == {"k": "new"} for n in c.ids)


def test_election_timeouts_are_randomized_from_the_injected_rng() -> None:
    waits = set()
    for seed in range(8):
        core = MultiPaxos(
            CoreSpec("multipaxos", "n1", election_timeout_ticks=10),
            PersistedState(conf=ConfState(voters=("n1", "n2", "n3"))),
            random.Random(seed),
        )
        ticks = 0
        while core.role is Role.FOLLOWER:
            core.tick()
            ticks += 1
            while core.has_ready():
                core.advance(core.ready())
        assert 10 <= ticks < 20
        waits.add(ticks)
    assert len(waits) > 1


def test_leadership_transfer_hands_over_and_refuses_proposals_meanwhile() -> None:
    c = paxos_cluster(seed=14)
    leader = c.wait_leader()
    c.put("a", "1")
    target = sorted(n for n in c.ids if n != leader)[0]
    c.cut(leader, target)
    c.core(leader).transfer_leadership(target)
    with pytest.raises(ProposalDropped):
        c.core(leader).propose(b"b=2")
    c.heal()
    c.run(5)
    assert c.leader() == target
    assert c.core(target).term > c.core(leader).term - 1
    c.put("b", "2")
    c.run(1)  # the chosen prefix reaches the acceptors with the next heartbeat
    assert all(c.hosts[n].kv.data == {"a": "1", "b": "2"} for n in c.ids)


def test_a_follower_redirects_proposals_and_reads() -> None:
    c = paxos_cluster(seed=15)
    leader = c.wait_leader()
    follower = sorted(n for n in c.ids if n != leader)[0]
    with pytest.raises(NotLeader) as raised:
        c.core(follower).propose(b"x=1")
    assert raised.value.leader_hint == leader
    with pytest.raises(NotLeader):
        c.core(follower).read(b"r1")


def test_pmmc_4_a_read_is_answered_once_a_quorum_confirms_the_leader() -> None:
    c = paxos_cluster(seed=16)
    leader = c.wait_leader()
    c.put("k", "v1")
    c.core(leader).read(b"r1")
    c.drive_all()
    assert not c.read_answers  # not before a heartbeat round is acknowledged
    c.stabilize()
    assert [(rs.request_id, data) for _, rs, data in c.read_answers] == [(b"r1", {"k": "v1"})]


def test_pmmc_4_a_deposed_leader_fails_its_reads_instead_of_answering_stale() -> None:
    c = paxos_cluster(seed=17)
    old = c.wait_leader()
    c.put("k", "v1")
    c.isolate(old)
    c.core(old).read(b"stale")
    others = [n for n in c.ids if n != old]
    for _ in range(60):
        c.tick()
        c.stabilize()
    new = c.leader() if c.leader() != old else None
    new = next(n for n in others if c.core(n).role is Role.LEADER)
    c.propose(new, b"k=v2")
    c.stabilize()
    c.run(2)
    assert b"stale" in c.failed_reads
    assert not any(rs.request_id == b"stale" for _, rs, _ in c.read_answers)


def test_a_new_leader_holds_reads_until_its_noop_is_chosen() -> None:
    c = paxos_cluster(seed=18)
    leader = c.wait_leader()
    c.put("k", "v")
    other = sorted(n for n in c.ids if n != leader)[0]
    c.crash(leader)
    for _ in range(100):  # probe and phase 1; the no-op's Accepts stay queued
        if any(c.core(n).role is Role.LEADER for n in c.alive):
            break
        c.tick()
        c.deliver(where=lambda m: not isinstance(m, Accept))
    other = next(n for n in c.alive if c.core(n).role is Role.LEADER)
    c.core(other).read(b"r")
    assert b"r" in c.core(other).reads and not c.core(other).reads.pending
    c.stabilize()
    c.run(2)
    assert any(rs.request_id == b"r" and data == {"k": "v"} for _, rs, data in c.read_answers)


def test_membership_add_learner_promote_and_remove() -> None:
    c = paxos_cluster(seed=19, joiners=("n4",))
    leader = c.wait_leader()
    c.put("a", "1")
    c.core(leader).propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n4"))
    c.run(10)
    assert c.core("n4").role is Role.LEARNER
    assert c.hosts["n4"].kv.data == {"a": "1"}
    c.core(leader).propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, "n4"))
    c.run(10)
    assert c.core(leader).conf.voters == ("n1", "n2", "n3", "n4")
    victim = sorted(n for n in ("n1", "n2", "n3") if n != leader)[0]
    c.core(leader).propose_conf_change(ConfChange(ConfChangeKind.REMOVE_NODE, victim))
    c.run(10)
    assert victim not in c.core(leader).conf.voters
    c.crash(victim)
    c.put("b", "2")
    c.run(1)  # the chosen prefix reaches the learner with the next heartbeat
    assert c.hosts["n4"].kv.data == {"a": "1", "b": "2"}


def test_membership_one_change_at_a_time() -> None:
    c = paxos_cluster(seed=20, joiners=("n4", "n5"))
    leader = c.wait_leader()
    c.core(leader).propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n4"))
    with pytest.raises(ProposalDropped):
        c.core(leader).propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n5"))


def test_a_leader_that_applies_its_own_removal_steps_down() -> None:
    c = paxos_cluster(seed=21)
    leader = c.wait_leader()
    c.put("a", "1")
    c.core(leader).propose_conf_change(ConfChange(ConfChangeKind.REMOVE_NODE, leader))
    c.run(30)
    assert c.core(leader).role is not Role.LEADER
    new = c.wait_leader()
    assert new != leader
    c.put("b", "2")
    assert c.hosts[new].kv.data == {"a": "1", "b": "2"}


def test_is_from_leader_names_the_promised_ballot_and_newer_ones() -> None:
    c = paxos_cluster(seed=22)
    leader = c.wait_leader()
    follower = sorted(n for n in c.ids if n != leader)[0]
    core = c.core(follower)
    rnd = core.term
    assert core.is_from_leader(Heartbeat(leader, follower, rnd, 0))
    assert core.is_from_leader(Heartbeat("n9", follower, rnd + 1, 0))
    assert not core.is_from_leader(Heartbeat("n9", follower, rnd, 0))  # round taken
    assert not core.is_from_leader(Heartbeat(leader, follower, rnd - 1, 0))
    assert not core.is_from_leader(Prepare(leader, follower, rnd + 1, 1, 0))
