"""Membership (single-server CONF_CHANGE steps, observers as learners), bootstrap, snapshots,
leadership transfer, and a leader that loses its quorum returning to LOOKING."""

from __future__ import annotations

import pytest

from exapyte.errors import ProposalDropped, ProtocolMisuse
from exapyte.protocol.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    EntryKind,
    Role,
    decode_conf_change,
)
from exapyte.protocol.zab.core import ZabState
from exapyte.protocol.zab.messages import NewEpoch, Notification, PeerState
from tests.protocol.cluster import MemoryStore
from tests.protocol.zab_helpers import check_zab_properties, make_zab, pump, zab_cluster


def change(c: object, leader: str, kind: int, node: str) -> None:
    core = c.core(leader)  # type: ignore[attr-defined]
    core.propose_conf_change(ConfChange(kind, node))
    c.drive_all()  # type: ignore[attr-defined]
    c.run(10)  # type: ignore[attr-defined]


def test_founders_boot_from_identical_committed_conf_entries_of_epoch_zero() -> None:
    c = zab_cluster(seed=1)
    logs = []
    for n in c.ids:
        log = c.core(n).log
        boot = [log.entry(i) for i in (1, 2, 3)]
        assert all(e.kind == EntryKind.CONF_CHANGE and e.term == 0 for e in boot)
        assert log.committed >= 3
        logs.append(boot)
    assert logs[0] == logs[1] == logs[2]
    assert [decode_conf_change(e.data).node_id for e in logs[0]] == ["n1", "n2", "n3"]


def test_a_new_voter_is_invited_synced_and_then_counts() -> None:
    c = zab_cluster(seed=2, joiners=("n4",))
    leader = c.wait_leader()
    c.put("a", "1")
    assert c.core("n4").role is Role.FOLLOWER and c.core("n4").leader is None
    change(c, leader, ConfChangeKind.ADD_VOTER, "n4")
    c.run(20)
    n4 = c.core("n4")
    assert n4.state is ZabState.FOLLOWING and n4.leader == leader
    assert c.hosts["n4"].kv.data == {"a": "1"}
    assert "n4" in c.core(leader).conf.voters
    # With four voters, the leader and one follower are not a quorum any more.
    a, b = (n for n in ("n1", "n2", "n3") if n != leader)
    c.isolate(a)
    c.isolate("n4")
    proposed = c.propose(leader, b"b=2")
    assert proposed is not None
    index = proposed[0]
    c.stabilize()
    assert c.core(leader).log.committed < index
    c.heal()
    c.run(20)
    check_zab_properties(c)


def test_an_observer_gets_the_log_but_is_never_counted() -> None:
    c = zab_cluster(seed=3, learners=("n4",))
    leader = c.wait_leader()
    c.run(10)
    n4 = c.core("n4")
    assert n4.state is ZabState.OBSERVING and n4.role is Role.LEARNER
    c.put("a", "1")
    c.run(3)
    assert c.hosts["n4"].kv.data == {"a": "1"}
    a, b = (n for n in c.ids if n not in (leader, "n4"))
    c.isolate(a)
    c.isolate(b)
    index, _ = c.core(leader).propose(b"b=2")
    c.drive_all()
    c.stabilize()
    assert c.core(leader).log.committed < index  # the observer's ACK does not count
    n4.tick()
    assert n4.state is not ZabState.LEADING


def test_removing_the_leader_hands_over_and_it_stops_leading() -> None:
    c = zab_cluster(seed=4)
    leader = c.wait_leader()
    c.put("a", "1")
    change(c, leader, ConfChangeKind.REMOVE_NODE, leader)
    c.run(40)
    new = c.wait_leader()
    assert new != leader and leader not in c.core(new).conf.voters
    assert c.core(leader).role is not Role.LEADER
    c.put("b", "2")
    c.run(5)
    rest = [n for n in c.ids if n != leader]
    assert all(c.hosts[n].kv.data == {"a": "1", "b": "2"} for n in rest)


def test_one_membership_change_at_a_time() -> None:
    c = zab_cluster(seed=5, joiners=("n4", "n5"))
    leader = c.wait_leader()
    core = c.core(leader)
    core.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n4"))
    with pytest.raises(ProposalDropped):
        core.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n5"))
    with pytest.raises(ProtocolMisuse):
        core.propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, leader))


def test_leadership_transfer_makes_the_target_leader() -> None:
    c = zab_cluster(seed=6)
    leader = c.wait_leader()
    c.put("a", "1")
    target = min(n for n in c.ids if n != leader)  # not the one FLE prefers on a tie
    c.core(leader).transfer_leadership(target)
    c.drive_all()
    c.run(30)
    assert c.wait_leader() == target
    c.put("b", "2")
    c.run(3)
    assert all(c.hosts[n].kv.data == {"a": "1", "b": "2"} for n in c.ids)


def test_no_proposals_while_a_transfer_is_pending() -> None:
    c = zab_cluster(seed=6)
    leader = c.wait_leader()
    target = next(n for n in c.ids if n != leader)
    c.cut(leader, target)  # the target cannot catch up, so the transfer stays pending
    c.core(leader).propose(b"x=1")
    c.drive_all()
    c.core(leader).transfer_leadership(target)
    with pytest.raises(ProposalDropped):
        c.core(leader).propose(b"y=2")


def test_a_leader_that_loses_its_quorum_returns_to_looking() -> None:
    c = zab_cluster(seed=7)
    leader = c.wait_leader()
    c.isolate(leader)
    c.run(25)
    core = c.core(leader)
    assert core.state is ZabState.LOOKING and core.dropped["quorum_lost"] >= 1


def test_a_snapshot_keeps_the_configuration_and_serves_a_new_member() -> None:
    c = zab_cluster(seed=8, joiners=("n4",))
    leader = c.wait_leader()
    for i in range(5):
        c.put(f"k{i}", "v")
    snap = c.snapshot(leader)
    assert snap.meta.conf.voters == ("n1", "n2", "n3") and snap.meta.term >= 1
    change(c, leader, ConfChangeKind.ADD_LEARNER, "n4")
    c.run(30)
    assert c.hosts["n4"].kv.data == c.hosts[leader].kv.data
    assert c.stores["n4"].snapshot is not None  # it needed the compacted prefix: SNAP
    assert "n4" in c.core("n4").conf.learners


def test_a_voter_that_missed_a_membership_change_rejoins_a_leader_it_does_not_know() -> None:
    # n4 joins as a voter and takes the lead while a founder is cut off: that founder's
    # configuration still has n1, n2, n3 only, so n4's invitation alone is a stranger's and is
    # refused. Its own voters, following n4, vouch for n4; it then follows, is synchronized and
    # learns the change.
    c = zab_cluster(seed=2, joiners=("n4",))
    leader = c.wait_leader()
    c.put("a", "1")
    lagging = min(n for n in ("n1", "n2", "n3") if n != leader)
    c.isolate(lagging)
    change(c, leader, ConfChangeKind.ADD_VOTER, "n4")
    c.core(leader).transfer_leadership("n4")
    c.drive_all()
    c.run(40)
    assert c.leader() == "n4" and "n4" in c.core("n4").conf.voters
    c.put("b", "2")
    assert c.core(lagging).conf.voters == ("n1", "n2", "n3")  # it missed the change
    c.heal()
    c.run(60)
    core = c.core(lagging)
    assert core.state is ZabState.FOLLOWING and core.leader == "n4"
    assert core.conf.voters == ("n1", "n2", "n3", "n4")
    assert c.hosts[lagging].kv.data == {"a": "1", "b": "2"}
    assert core.dropped.get("leader_not_voter", 0) >= 1  # it refused n4 until vouched for
    check_zab_properties(c)


def test_a_learner_that_gave_up_during_discovery_is_invited_again() -> None:
    # n4 is added as an observer and follows the leader's invitation, but every NEWEPOCH to it
    # is lost: it times out to LOOKING. Knowing no voter yet, it tells nobody; the leader holds
    # a peer for it that never got past discovery and must invite it again, or it waits forever.
    c = zab_cluster(seed=3, joiners=("n4",))
    leader = c.wait_leader()
    c.put("a", "1")

    def lose_new_epochs_to_n4(m: object) -> bool:
        return isinstance(m, NewEpoch) and m.to == "n4"

    c.core(leader).propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n4"))
    c.drive_all()
    n4 = c.core("n4")
    for _ in range(60):
        c.tick()
        while c.queue:
            c.drop(lose_new_epochs_to_n4)
            c.deliver()
    assert n4.dropped.get("leader_silent", 0) >= 1 and c.hosts["n4"].kv.data == {}
    assert c.core(leader)._peers["n4"].phase.value != "broadcast"
    c.run(40)
    assert n4.state is ZabState.OBSERVING and n4.leader == leader
    assert c.hosts["n4"].kv.data == {"a": "1"}


def test_a_learner_promoted_while_cut_off_learns_it_is_a_voter_from_a_notification() -> None:
    # Voters a, b and the observer n3. While n3 is cut off it is promoted to voter and a (not
    # the leader) is removed: the group's voters are now the leader and n3, whose quorum needs
    # both. n3 still thinks it is an observer and would never vote: the leader's LOOKING
    # notification carries the committed configuration, n3 adopts it and the two elect.
    c = zab_cluster(("n1", "n2"), seed=11, learners=("n3",))
    leader = c.wait_leader()
    other = "n1" if leader == "n2" else "n2"
    c.put("a", "1")
    c.run(30)
    assert c.core("n3").state is ZabState.OBSERVING
    c.isolate("n3")
    change(c, leader, ConfChangeKind.ADD_VOTER, "n3")
    change(c, leader, ConfChangeKind.REMOVE_NODE, other)
    assert c.core(leader).conf.voters == tuple(sorted((leader, "n3")))
    c.crash(other)
    c.run(40)  # the leader loses its quorum and looks for one
    n3 = c.core("n3")
    assert n3.conf.voters == ("n1", "n2") and n3.role is Role.LEARNER  # missed both
    c.heal()
    c.run(60)
    assert c.leader() == leader and n3.state is ZabState.FOLLOWING and n3.leader == leader
    assert n3.dropped.get("conf_adopted", 0) >= 1
    assert n3.conf.voters == tuple(sorted((leader, "n3")))
    c.put("b", "2")
    c.run(3)
    assert c.hosts["n3"].kv.data == {"a": "1", "b": "2"}
    check_zab_properties(c)


def test_a_voter_restarted_with_a_stale_commit_hint_drops_a_removed_peer_from_its_quorum() -> None:
    # Voters a, b and the observer n3; the leader removes b. The commit index is persisted
    # lazily, so the leader, crashing at once, restarts with the removal uncommitted in its
    # view: its configuration still counts b, whose replica is now a fresh joiner that knows
    # no configuration and never votes. The observer applied the removal: its notification
    # carries the committed configuration, the voter adopts it and leads alone again.
    c = zab_cluster(("n1", "n2"), seed=12, learners=("n3",))
    leader = c.wait_leader()
    other = "n1" if leader == "n2" else "n2"
    c.put("a", "1")
    c.run(30)
    removal, _ = c.core(leader).propose_conf_change(ConfChange(ConfChangeKind.REMOVE_NODE, other))
    c.drive_all()
    for _ in range(10):
        c.stabilize()
        if c.core("n3").log.applied >= removal:
            break
        c.tick()
    assert c.core("n3").conf.voters == (leader,) and c.core("n3").log.applied >= removal
    c.crash(leader)
    assert c.stores[leader].hard_state.commit < removal  # the hint was not synced
    c.crash(other)
    c.stores[other] = MemoryStore(ConfState())  # a fresh replica, no configuration
    c.restart(other)
    c.restart(leader)
    core = c.core(leader)
    assert core.conf.voters == tuple(sorted((leader, other)))
    c.run(60)
    assert c.leader() == leader and core.conf.voters == (leader,)
    assert core.dropped.get("conf_adopted", 0) >= 1
    assert core.conf_at(core.log.applied) == core.conf  # its log applied it: the log's again
    assert c.core("n3").state is ZabState.OBSERVING and c.core("n3").leader == leader
    c.put("b", "2")
    c.run(3)
    assert c.hosts["n3"].kv.data == {"a": "1", "b": "2"}
    check_zab_properties(c)


def test_a_configuration_is_adopted_only_from_a_member_and_only_when_newer() -> None:
    core, _ = make_zab("n1", voters=("n1", "n2", "n3"))
    assert core.state is ZabState.LOOKING
    newer = ConfState(voters=("n1", "n2"), learners=("n3",))
    far = core.log.applied + 5
    core.step(Notification("x9", "n1", 1, PeerState.OBSERVING, "x9", 0, 0, 0, False, newer,
                           far, 1))  # a stranger
    core.step(Notification("n2", "n1", 1, PeerState.OBSERVING, "n2", 0, 0, 0, False, newer,
                           core.log.applied, 0))  # not beyond what our log applied
    assert core.conf.voters == ("n1", "n2", "n3") and "conf_adopted" not in core.dropped
    core.step(Notification("n2", "n1", 1, PeerState.OBSERVING, "n2", 0, 0, 0, False,
                           ConfState(voters=("n2", "n2")), far, 1))
    assert core.dropped["malformed"] == 1  # not a configuration a core could have made
    round_ = core.election_round
    core.step(Notification("n2", "n1", 1, PeerState.OBSERVING, "n2", 0, 0, 0, False, newer,
                           far, 1))
    assert core.conf == newer and core.dropped["conf_adopted"] == 1
    assert core.election_round == round_ + 1  # a new round under the adopted configuration
    older = ConfState(voters=("n1", "n2", "n3"))
    core.step(Notification("n2", "n1", 2, PeerState.OBSERVING, "n2", 0, 0, 0, False, older,
                           far - 1, 1))
    assert core.conf == newer and core.dropped["conf_adopted"] == 1


def test_a_looking_node_tells_a_member_behind_it_the_newer_configuration() -> None:
    core, host = make_zab("n1", voters=("n1", "n2", "n3"))
    host.take()
    ours = ConfState(voters=("n1", "n2", "n3"))
    # n2's notification carries an older version than our founding configuration (entry 3).
    # Its vote is worse than ours, so only the configuration calls for an answer.
    core.step(Notification("n2", "n1", core.election_round, PeerState.LOOKING, "n2", 0, 0, 0,
                           False, ConfState(voters=("n1", "n2")), 2, 0))
    pump(core, host)
    sent = [m for m in host.take() if isinstance(m, Notification) and m.to == "n2"]
    assert sent and all((m.conf, m.conf_index, m.conf_epoch) == (ours, 3, 0) for m in sent)
    # One that carries our version (or none) gets no such answer.
    core.step(Notification("n2", "n1", core.election_round, PeerState.LOOKING, "n2", 0, 0, 0,
                           False, ours, 3, 0))
    pump(core, host)
    assert not [m for m in host.take() if isinstance(m, Notification)]
