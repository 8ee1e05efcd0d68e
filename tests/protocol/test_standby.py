"""A replica that holds nothing does not vote (amnesia), in all three protocols.

A replica created empty on a node that some member's configuration still lists as a voter (the
node dropped its replica and a stale message made it create the group again, or its storage was
lost) has forgotten its votes, promises and log. ``ConsensusCore.standby`` is true while it holds
no entry and no snapshot (a founder always holds its founding configuration as entries 1..n):
it then grants no vote and no promise, counts in no discovery quorum and confirms no read round,
until a leader's append or snapshot gives it a log. ``ConsensusCore.tombstone`` is what a node
keeps of a replica it drops, so that a replica re-created there starts from the old promises.
"""

from __future__ import annotations

import random

from exapyte.protocol.multipaxos.core import MultiPaxos, decode_record
from exapyte.protocol.multipaxos.messages import (
    Accept,
    HeartbeatAck,
    Prepare,
    Promise,
    Reject,
)
from exapyte.protocol.multipaxos.messages import (
    Heartbeat as PaxosHeartbeat,
)
from exapyte.protocol.raft import Raft
from exapyte.protocol.raft.core import decode_hard_state
from exapyte.protocol.raft.messages import (
    Append,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    PreVote,
    PreVoteResp,
    Vote,
    VoteResp,
)
from exapyte.protocol.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    CoreSpec,
    Entry,
    EntryKind,
    PersistedState,
    encode_conf_change,
)
from exapyte.protocol.zab import Zab, ZabConfig
from exapyte.protocol.zab.core import Phase, ZabState
from exapyte.protocol.zab.core import decode_record as decode_zab_record
from exapyte.protocol.zab.messages import (
    AckEpoch,
    FollowerInfo,
    NewEpoch,
    Notification,
    PeerState,
)
from tests.protocol.helpers import RecordingHost, make_core, pump, sent_of
from tests.protocol.zab_helpers import make_zab

VOTERS = ("n1", "n2", "n3")


def founding_entries(term: int, voters: tuple[str, ...] = VOTERS) -> tuple[Entry, ...]:
    """The committed CONF_CHANGE entries 1..n every founder of ``voters`` starts with."""
    return tuple(
        Entry(term, i, EntryKind.CONF_CHANGE,
              encode_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, v)))
        for i, v in enumerate(sorted(voters), start=1)
    )


# --- Raft --------------------------------------------------------------------------------------


def empty_raft(node: str = "n3", persisted: PersistedState | None = None) -> tuple[Raft, RecordingHost]:
    """A replica created empty (not a founder): what a node builds for a group it joins."""
    return make_core(node, persisted=persisted if persisted is not None else PersistedState())


def test_raft_a_founder_is_not_in_standby_an_empty_replica_is() -> None:
    founder, _ = make_core("n1")
    empty, _ = empty_raft()
    assert not founder.standby
    assert empty.standby


def test_raft_an_empty_replica_refuses_votes_and_pre_votes_of_any_term() -> None:
    core, host = empty_raft()
    core.step(PreVote("n1", "n3", 5, last_index=0, last_term=0))
    core.step(Vote("n1", "n3", 5, last_index=0, last_term=0))
    pump(core, host)
    (pre,) = sent_of(host, PreVoteResp)
    (vote,) = sent_of(host, VoteResp)
    assert pre.reject and vote.reject
    assert core.vote is None and decode_hard_state(host.hard_state.record).vote is None
    assert core.dropped["vote_standby"] == 2


def test_raft_an_empty_replica_answers_heartbeats_but_confirms_no_read_round() -> None:
    core, host = empty_raft()
    core.step(Heartbeat("n1", "n3", 4, commit=0, ctx=7))
    pump(core, host)
    (resp,) = sent_of(host, HeartbeatResp)
    assert resp.ctx == 0
    assert core.leader == "n1" and core.term == 4


def test_raft_the_leaders_first_append_ends_standby_then_it_votes_as_usual() -> None:
    core, host = empty_raft()
    entries = founding_entries(1)
    core.step(Append("n1", "n3", 2, prev_index=0, prev_term=0, entries=entries, commit=3))
    pump(core, host)
    (ack,) = sent_of(host, AppendResp)
    assert not ack.reject and ack.index == 3
    assert not core.standby
    host.take()
    # A transfer's candidate (it overrides the leader's lease) with as good a log gets the vote.
    core.step(Vote("n2", "n3", 3, last_index=3, last_term=1, transfer=True))
    pump(core, host)
    (vote,) = sent_of(host, VoteResp)
    assert not vote.reject and core.vote == "n2"


def test_raft_a_restarted_replica_that_holds_a_log_is_not_in_standby() -> None:
    persisted = PersistedState(entries=founding_entries(1))
    core, _ = empty_raft(persisted=persisted)
    assert not core.standby


def test_raft_a_tombstone_keeps_term_and_vote_and_drops_the_commit() -> None:
    core, host = make_core("n3")
    core.step(Vote("n2", "n3", 6, last_index=3, last_term=1))
    pump(core, host)
    assert core.vote == "n2" and core.term == 6
    tomb = core.tombstone()
    assert tomb.commit == 0
    stored = decode_hard_state(tomb.record)
    assert (stored.term, stored.vote) == (6, "n2")
    # The replica re-created from it never votes twice in term 6, nor takes a leader of term 5.
    again, host2 = empty_raft(persisted=PersistedState(hard_state=tomb))
    assert again.standby and again.term == 6 and again.vote == "n2"
    again.step(Append("n1", "n3", 5, prev_index=0, prev_term=0,
                      entries=founding_entries(1), commit=3))
    pump(again, host2)
    assert again.standby  # the stale leader's entries were not taken
    assert all(r.reject for r in sent_of(host2, AppendResp))


def test_raft_amnesia_without_standby_gives_a_second_leader_of_one_term() -> None:
    """Why the rule exists (Raft §5.2): n3 voted for n1 in term 4, then lost its state. Without
    standby an empty n3 grants n2's vote in term 4 as well, and n2 would lead term 4 too."""
    n3, host = empty_raft()
    n3.step(Vote("n2", "n3", 4, last_index=3, last_term=1))
    pump(n3, host)
    (vote,) = sent_of(host, VoteResp)
    assert vote.reject  # with the rule: no second vote of term 4


# --- Multi-Paxos -------------------------------------------------------------------------------


def paxos(node: str = "n3", persisted: PersistedState | None = None) -> tuple[MultiPaxos, RecordingHost]:
    core = MultiPaxos(CoreSpec("multipaxos", node), persisted, random.Random(0))
    host = RecordingHost()
    pump(core, host)  # type: ignore[arg-type]
    host.take()
    return core, host


def test_paxos_an_empty_acceptor_promises_nothing() -> None:
    core, host = paxos()
    assert core.standby
    core.step(Prepare("n1", "n3", 5, start=1, commit=0, probe=True))
    core.step(Prepare("n1", "n3", 5, start=1, commit=0))
    pump(core, host)  # type: ignore[arg-type]
    promises = sent_of(host, Promise)
    assert len(promises) == 2 and all(p.reject for p in promises)
    assert core.promised == (0, "")
    assert core.dropped["prepare_standby"] == 2


def test_paxos_an_empty_acceptor_confirms_no_read_round() -> None:
    core, host = paxos()
    core.step(PaxosHeartbeat("n1", "n3", 2, commit=0, ctx=9))
    pump(core, host)  # type: ignore[arg-type]
    (ack,) = sent_of(host, HeartbeatAck)
    assert ack.ctx == 0


def test_paxos_the_leaders_chosen_slots_end_standby() -> None:
    core, host = paxos()
    core.step(Accept("n1", "n3", 2, entries=founding_entries(1), commit=3))
    pump(core, host)  # type: ignore[arg-type]
    assert not core.standby and core.log.last_index == 3
    host.take()
    core.step(Prepare("n2", "n3", 7, start=4, commit=3, transfer=True))  # overrides the lease
    pump(core, host)  # type: ignore[arg-type]
    (promise,) = sent_of(host, Promise)
    assert not promise.reject and core.promised == (7, "n2")


def test_paxos_a_tombstone_keeps_the_promise_without_accepted_slots() -> None:
    founder = PersistedState(conf=ConfState(voters=VOTERS))
    core, host = paxos(persisted=founder)
    core.step(Accept("n1", "n3", 4, entries=(Entry(4, 4, EntryKind.NOOP, b""),), commit=3))
    pump(core, host)  # type: ignore[arg-type]
    assert core.promised == (4, "n1") and core.accepted
    tomb = core.tombstone()
    record = decode_record(tomb.record)
    assert (record.promised_round, record.promised_node, record.accepted) == (4, "n1", ())
    again, host2 = paxos(persisted=PersistedState(hard_state=tomb))
    assert again.standby and again.promised == (4, "n1")
    again.step(Accept("n2", "n3", 3, entries=founding_entries(1), commit=3))  # a lower ballot
    pump(again, host2)  # type: ignore[arg-type]
    assert again.standby and sent_of(host2, Reject)


# --- ZAB ---------------------------------------------------------------------------------------


def zab(node: str = "n3", persisted: PersistedState | None = None) -> tuple[Zab, RecordingHost]:
    core = Zab(ZabConfig(node_id=node), persisted, random.Random(0))
    host = RecordingHost()
    pump(core, host)  # type: ignore[arg-type]
    host.take()
    return core, host


def test_zab_an_empty_follower_says_it_is_in_standby() -> None:
    core, host = zab("n2")
    assert core.standby
    core.step(Notification("n1", "n2", 1, PeerState.LEADING, "n1", 3, 3, 10))
    pump(core, host)  # type: ignore[arg-type]
    (info,) = sent_of(host, FollowerInfo)
    assert info.standby
    founder, fhost = make_zab("n2")
    assert not founder.standby


def leading_zab() -> tuple[Zab, RecordingHost]:
    core, host = make_zab("n1")
    core.step(Notification("n2", "n1", core.election_round, PeerState.LOOKING, "n1", 0, 0,
                           core.log.last_index))
    pump(core, host)  # type: ignore[arg-type]
    assert core.state is ZabState.LEADING and core.phase is Phase.DISCOVERY
    host.take()
    return core, host


def test_zab_a_standby_followerinfo_does_not_make_a_discovery_quorum() -> None:
    core, host = leading_zab()
    core.step(FollowerInfo("n2", "n1", 0, standby=True))
    pump(core, host)  # type: ignore[arg-type]
    assert not sent_of(host, NewEpoch)  # n1 + a standby n2 is no quorum of three
    assert core.dropped["follower_standby"] == 1
    core.step(FollowerInfo("n3", "n1", 0))
    pump(core, host)  # type: ignore[arg-type]
    assert {m.to for m in sent_of(host, NewEpoch)} == {"n2", "n3"}  # the standby is synced too


def test_zab_a_standby_ackepoch_does_not_start_the_sync() -> None:
    core, host = leading_zab()
    core.step(FollowerInfo("n2", "n1", 0, standby=True))
    core.step(FollowerInfo("n3", "n1", 0))
    pump(core, host)  # type: ignore[arg-type]
    epoch = core.accepted_epoch
    core.step(AckEpoch("n2", "n1", epoch, current_epoch=0, last_term=0, last_index=0, commit=0))
    pump(core, host)  # type: ignore[arg-type]
    assert core.phase is Phase.DISCOVERY  # n2's history (empty) proves nothing
    core.step(AckEpoch("n3", "n1", epoch, current_epoch=0, last_term=0, last_index=3, commit=3))
    pump(core, host)  # type: ignore[arg-type]
    assert core.phase is Phase.SYNC


def test_zab_a_tombstone_keeps_the_accepted_epoch_not_the_current_one() -> None:
    core, host = make_zab("n3")
    core.step(Notification("n1", "n3", core.election_round, PeerState.LEADING, "n1", 0, 0, 3))
    pump(core, host)  # type: ignore[arg-type]
    core.step(NewEpoch("n1", "n3", 5))
    pump(core, host)  # type: ignore[arg-type]
    assert core.accepted_epoch == 5
    record = decode_zab_record(core.tombstone().record)
    assert (record.accepted_epoch, record.accepted_by, record.current_epoch) == (5, "n1", 0)
    again, _ = zab(persisted=PersistedState(hard_state=core.tombstone()))
    assert again.standby and again.accepted_epoch == 5 and again.current_epoch == 0
