"""Fast Leader Election (Zab paper §V-A; ZooKeeper's FastLeaderElection): votes ordered by
(currentEpoch, last zxid, id), rounds, retries timed by the injected rng, rejoining a running
epoch."""

from __future__ import annotations

import random

from exapyte.protocol.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    PersistedState,
    Role,
    encode_conf_change,
)
from exapyte.protocol.zab.core import (
    Vote,
    Zab,
    ZabConfig,
    ZabRecord,
    ZabState,
    encode_record,
)
from exapyte.protocol.zab.messages import FollowerInfo, Notification, PeerState
from tests.protocol.helpers import RecordingHost, sent_of
from tests.protocol.zab_helpers import make_zab, pump, zab_cluster


def note(frm: str, to: str, round_: int, leader: str, epoch: int = 0, last_term: int = 0,
         last_index: int = 3, state: int = PeerState.LOOKING) -> Notification:
    return Notification(frm, to, round_, state, leader, epoch, last_term, last_index)


# §V-A: the vote order


def test_votes_order_by_current_epoch_then_last_zxid_then_id() -> None:
    assert Vote("n1", 2, 1, 5).key() > Vote("n3", 1, 1, 9).key()  # currentEpoch first
    assert Vote("n1", 1, 2, 5).key() > Vote("n3", 1, 1, 9).key()  # then the last entry's epoch
    assert Vote("n1", 1, 1, 9).key() > Vote("n3", 1, 1, 5).key()  # then its index
    assert Vote("n3", 1, 1, 5).key() > Vote("n1", 1, 1, 5).key()  # then the id
    assert Vote("n1", 1, 1, 5, True).key() > Vote("n3", 1, 1, 5).key()  # transfer wins a tie


def test_equal_histories_elect_the_highest_id() -> None:
    c = zab_cluster(seed=3)
    assert c.wait_leader() == "n3"


def test_a_looking_node_adopts_a_better_vote_and_tells_every_voter() -> None:
    core, host = make_zab("n1")
    host.take()
    core.step(note("n2", "n1", core.election_round, "n3"))
    pump(core, host)
    sent = sent_of(host, Notification)
    assert {m.to for m in sent} == {"n2", "n3"}
    assert all(m.leader == "n3" for m in sent)


def test_a_worse_vote_is_not_adopted() -> None:
    core, host = make_zab("n2")
    host.take()
    core.step(note("n1", "n2", core.election_round, "n1"))
    pump(core, host)
    assert sent_of(host, Notification) == []
    assert core.state is ZabState.LOOKING


def test_a_later_round_moves_the_receiver_to_it() -> None:
    core, host = make_zab("n1")
    later = core.election_round + 5
    core.step(note("n2", "n1", later, "n2"))
    pump(core, host)
    assert core.election_round == later
    # n1 and n2 now agree on n2: a quorum of three, so n1 follows n2 and asks for its epoch.
    assert core.state is ZabState.FOLLOWING and core.leader == "n2"
    assert sent_of(host, FollowerInfo)[-1].to == "n2"


def test_an_earlier_round_is_answered_with_our_vote() -> None:
    core, host = make_zab("n1")
    core.step(note("n2", "n1", core.election_round + 3, "n2", last_index=1))  # worse than ours
    pump(core, host)
    host.take()
    core.step(note("n3", "n1", 1, "n3", last_index=1))
    pump(core, host)
    (answer,) = sent_of(host, Notification)
    assert answer.to == "n3" and answer.round == core.election_round


def test_a_node_leads_when_a_quorum_votes_for_it() -> None:
    core, host = make_zab("n3")
    core.step(note("n1", "n3", core.election_round, "n3"))
    pump(core, host)
    assert core.state is ZabState.LEADING and core.role is Role.LEADER


def test_the_most_up_to_date_history_wins_over_a_higher_id() -> None:
    # n1 holds a longer log of the same epoch than n2 and n3: it must win.
    def persisted(extra: int) -> PersistedState:
        boot = [Entry(0, i + 1, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(0, n)))
                for i, n in enumerate(("n1", "n2", "n3"))]
        more = [Entry(1, 4 + i, EntryKind.NORMAL, b"k=v") for i in range(extra)]
        record = encode_record(ZabRecord(1, "n1", 1))
        return PersistedState(HardState(3, record), None, tuple(boot + more))

    cores = {
        n: Zab(ZabConfig(node_id=n), persisted(extra), random.Random(n))
        for n, extra in (("n1", 3), ("n2", 1), ("n3", 1))
    }
    hosts = {n: RecordingHost() for n in cores}
    for _ in range(50):
        for n, core in cores.items():
            pump(core, hosts[n])
        msgs = [m for h in hosts.values() for m in h.take()]
        if not msgs:
            for core in cores.values():
                core.tick()
            continue
        for m in msgs:
            cores[m.to].step(m)
        if cores["n1"].state is ZabState.LEADING:
            break
    assert cores["n1"].state is ZabState.LEADING
    assert cores["n3"].state is not ZabState.LEADING


def test_notification_retries_are_timed_by_the_injected_rng() -> None:
    def retry_ticks(seed: int) -> list[int]:
        core, host = make_zab("n1", seed=seed)
        host.take()
        ticks = []
        for t in range(200):
            core.tick()
            pump(core, host)
            if sent_of(host, Notification):
                ticks.append(t)
            host.take()
        return ticks

    assert retry_ticks(7) == retry_ticks(7)
    assert len({tuple(retry_ticks(s)) for s in range(6)}) > 1


def test_a_restarted_follower_rejoins_the_running_epoch() -> None:
    c = zab_cluster(seed=5)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    c.put("a", "1")
    c.crash(follower)
    c.put("b", "2")
    c.restart(follower)
    c.run(30)
    core = c.core(follower)
    assert core.state is ZabState.FOLLOWING and core.leader == leader
    assert c.hosts[follower].kv.data == {"a": "1", "b": "2"}


def test_a_node_does_not_follow_a_stranger_that_says_it_leads() -> None:
    core, host = make_zab("n1")
    core.step(note("x9", "n1", 1, "x9", epoch=99, state=PeerState.LEADING))
    pump(core, host)
    assert core.state is ZabState.LOOKING
    assert core.dropped.get("leader_not_voter") == 1


def test_a_leader_outside_our_configuration_is_followed_once_one_of_our_voters_follows_it() -> None:
    # n1 missed the change that made n4 a voter: n4 is a stranger to it until n2, a voter of
    # n1's configuration, answers n1's notification saying it follows n4 in epoch 5.
    core, host = make_zab("n1")
    core.step(note("n4", "n1", 1, "n4", epoch=5, state=PeerState.LEADING))
    pump(core, host)
    assert core.state is ZabState.LOOKING and core.dropped.get("leader_not_voter") == 1
    host.take()
    core.step(note("n2", "n1", 3, "n4", epoch=5, state=PeerState.FOLLOWING))
    pump(core, host)
    assert core.state is ZabState.LOOKING  # a voter's word alone is not an invitation
    asked = sent_of(host, Notification)
    assert [m.to for m in asked] == ["n4"] and asked[0].state == PeerState.LOOKING
    core.step(note("n4", "n1", 1, "n4", epoch=4, state=PeerState.LEADING))  # not that epoch
    pump(core, host)
    assert core.state is ZabState.LOOKING and core.dropped.get("leader_not_voter") == 2
    core.step(note("n4", "n1", 1, "n4", epoch=5, state=PeerState.LEADING))
    pump(core, host)
    assert core.state is ZabState.FOLLOWING and core.leader == "n4"
    assert sent_of(host, FollowerInfo)[-1].to == "n4"


def test_only_a_voter_of_our_configuration_can_vouch_for_a_leader() -> None:
    core, host = make_zab("n1")
    core.step(note("x8", "n1", 3, "x9", epoch=5, state=PeerState.FOLLOWING))
    core.step(note("x9", "n1", 1, "x9", epoch=5, state=PeerState.LEADING))
    pump(core, host)
    assert core.state is ZabState.LOOKING and core.dropped.get("leader_not_voter") == 1


def test_a_joiner_follows_the_leader_that_invites_it() -> None:
    core, host = make_zab("n4", persisted=PersistedState(conf=ConfState()))
    core.step(note("n1", "n4", 1, "n1", epoch=2, state=PeerState.LEADING))
    pump(core, host)
    assert core.leader == "n1" and core.role is Role.LEARNER  # not a voter (yet)
    assert sent_of(host, FollowerInfo)[-1].to == "n1"
