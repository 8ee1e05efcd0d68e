"""Nothing a peer sends crashes a Raft core; only messages that prove safety is broken raise.

Raft trusts its members: a well-formed append, vote or acknowledgement at the current or a newer
term is believed, and a member that lies that way can break safety (Raft is not Byzantine fault
tolerant; the node shell admits only authenticated members). Everything else must be dropped,
counted, and change nothing. The hypothesis test forges well-typed messages with arbitrary field
values, from members and from strangers, and feeds them to cores in every role inside the
in-memory cluster:

- each forged message first goes to a copy of the receiving core, which is then driven through
  its Readies: nothing may raise but the three documented fatal cases, a message counted as
  dropped must leave the core's state as it was, and the log must keep its shape;
- the message then goes to the real core unless it is one of the claims Raft must believe (an
  accepted leader message, a vote granted to a candidate in its term, a leader's entries or
  snapshot acknowledged in its term) or inflates the term far beyond the cluster's (believed,
  too: pushed to ``RAFT_TERM_INDEX_MAX`` it would end elections). What the receiver sends in
  answer is lost, as if the forger were not who it claims to be (Raft tolerates message loss).
  A documented fatal case stops the node (it is crashed and restarted later, fail-stop);
- the cluster checks the four invariants after every delivery; at the end it heals, elects a
  leader, commits a proposal and applies it everywhere.
"""

from __future__ import annotations

import copy
import random
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exapyte import limits
from exapyte.errors import InvariantViolation
from exapyte.protocol.raft.core import Raft, RaftConfig, raft_hard_state
from exapyte.protocol.raft.messages import (
    RAFT_MESSAGE_TYPES,
    Append,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    InstallSnapshotResp,
    PreVote,
    PreVoteResp,
    TimeoutNow,
    Vote,
    VoteResp,
)
from exapyte.protocol.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    PersistedState,
    Role,
    SnapshotMeta,
    encode_conf_change,
)
from exapyte.wire import Codec, PeerMessage

from .cluster import Cluster
from .helpers import make_core, pump

MAX = limits.RAFT_TERM_INDEX_MAX
EXTREMES = (-1, -(2**63), MAX, MAX + 1, 2**63 - 1, 2**64 - 1)  # all msgpack can carry
VOTERS = ("n1", "n2", "n3")
LEARNER = "n4"
MEMBERS = VOTERS + (LEARNER,)
STRANGERS = ("x9", "n10", "")
LEADER_MESSAGES = (Append, Heartbeat, InstallSnapshot)
TERM_INFLATION_MAX = 20  # believed terms the live cluster is given, above its own
ADD_VOTER = ConfChangeKind.ADD_VOTER

# Causes counted before the core changes anything, whatever the message's term.
PURE_DROPS = frozenset({
    "unknown_message", "misrouted", "bad_sender", "malformed", "malformed_entries",
    "malformed_snapshot", "malformed_hint", "not_asked", "stale_term",
    "timeout_now_not_from_leader", "vote_in_lease", "prevote_other_round",
})
# Leader messages whose content is stale: the sender is still heard as the leader.
ANSWERED = frozenset({"snapshot_stale", "snapshot_chunk_out_of_order"})

FATAL = (
    re.compile(r"^election safety: \S+ is leader of term \d+ and received "),
    re.compile(r"^election safety: \S+ and \S+ both sent leader messages to "),
    re.compile(r"^leader completeness: \S+ is leader of term \d+ with last index \d+, but "),
)

_codec = Codec()


def wire(message: Any) -> Any:
    """The message as a node decodes it from a frame (so it is well-typed)."""
    body = _codec.decode(_codec.encode(PeerMessage("default", message)))
    assert isinstance(body, PeerMessage)
    return body.msg


# --- observing a core -----------------------------------------------------------------------


def fingerprint(core: Raft) -> tuple[Any, ...]:
    """Everything a message may change, except timers and check-quorum activity flags."""
    log = core.log
    reads = core.reads
    rx = core._snapshot_rx
    return (
        core.term, core.vote, core._role, core._leader, core._lead_transferee,
        core._pending_conf_index, core._need_bcast,
        log.offset, log.offset_term, tuple(log._entries), log.committed, log.applied,
        log.stable, log.snapshot, log.pending_snapshot,
        tuple(sorted(
            (n, pr.match, pr.next, pr.state, pr.probe_sent, pr.pending_snapshot, pr.stall,
             pr.is_learner, tuple(pr.inflights._last_indexes))
            for n, pr in core.trk.progress.items()
        )),
        core.trk.conf_state(), tuple(sorted(core.trk.votes.items())), tuple(core._confs),
        reads.round, tuple(sorted(reads.acked.items())), tuple(reads.pending),
        tuple(reads.waiting), reads.need_round, tuple(core._read_states),
        None if rx is None else (rx[0], rx[1], bytes(rx[2])),
    )


def check_log_shape(core: Raft) -> None:
    """Whatever arrives, the log stays a log this core could have written."""
    log = core.log
    assert log.offset <= log.applied <= log.committed <= log.last_index
    assert log.offset <= log.stable <= log.last_index
    assert 0 <= core.term <= MAX + 1
    previous = log.offset_term
    for position, entry in enumerate(log._entries):
        assert entry.index == log.offset + 1 + position
        assert previous <= entry.term <= core.term
        assert entry.kind in (EntryKind.NORMAL, EntryKind.CONF_CHANGE, EntryKind.NOOP)
        previous = entry.term
    conf = core.conf
    assert conf.voters and not set(conf.voters) & set(conf.learners)


def is_documented_fatal(exc: InvariantViolation, m: Any, role: Role, term: int,
                        leader: str | None, last_index: int) -> bool:
    text = str(exc)
    kind = type(m)
    if FATAL[0].match(text):
        return kind in LEADER_MESSAGES and role is Role.LEADER and m.term == term
    if FATAL[1].match(text):
        return kind in LEADER_MESSAGES and m.term == term and leader not in (None, m.frm)
    if FATAL[2].match(text):
        return (kind is AppendResp and not m.reject and role is Role.LEADER
                and m.term == term and m.index > last_index)
    return False


def believed_claim(m: Any, role: Role, term: int) -> bool:
    """A claim Raft must believe, which a lying member could use to break safety."""
    kind = type(m)
    if kind in LEADER_MESSAGES:
        return m.term >= term
    if kind is VoteResp:
        return not m.reject and m.term == term and role is Role.CANDIDATE
    if kind is AppendResp:
        return not m.reject and m.term == term and role is Role.LEADER
    if kind is InstallSnapshotResp:
        return m.done and not m.reject and m.term == term and role is Role.LEADER
    return False


# --- forging messages -----------------------------------------------------------------------


@st.composite
def weighted(draw: Any, *choices: tuple[int, st.SearchStrategy[Any]]) -> Any:
    """One of ``choices``, each picked in proportion to its weight."""
    pick = draw(st.integers(0, sum(weight for weight, _ in choices) - 1))
    for weight, strategy in choices:
        if pick < weight:
            return draw(strategy)
        pick -= weight
    raise AssertionError("unreachable")


def numbers(near: int) -> st.SearchStrategy[int]:
    """Mostly values around ``near`` (a position of the receiver), sometimes anything."""
    lo = min(max(near - 3, -1), 2**64 - 1)
    return weighted(
        (4, st.integers(lo, max(lo, min(near + 3, 2**64 - 1)))),
        (1, st.integers(0, 12)),
        (1, st.sampled_from(EXTREMES)),
    )


def node_ids() -> st.SearchStrategy[str]:
    return weighted(
        (4, st.sampled_from(MEMBERS)), (1, st.sampled_from(STRANGERS)), (1, st.text(max_size=3))
    )


def conf_states() -> st.SearchStrategy[ConfState]:
    ids = st.lists(node_ids(), max_size=4).map(tuple)
    return st.one_of(
        st.just(ConfState(voters=VOTERS, learners=(LEARNER,))),
        st.builds(ConfState, voters=ids, learners=ids, voters_outgoing=ids),
    )


@st.composite
def entry_lists(draw: Any, prev_index: int, prev_term: int, term: int) -> tuple[Entry, ...]:
    count = draw(st.integers(0, 4))
    follow = draw(st.booleans())
    entries = []
    t = prev_term
    for i in range(count):
        if follow:
            t = draw(st.integers(min(t, term), max(t, term))) if t <= term else t
            index = min(prev_index + 1 + i, 2**64 - 1)
        else:
            t = draw(numbers(t))
            index = draw(numbers(min(prev_index + 1 + i, 2**64 - 1)))
        kind = draw(st.sampled_from((0, 0, 1, 1, 2, 3, 255)))
        if kind == EntryKind.CONF_CHANGE and draw(st.booleans()):
            change = ConfChange(draw(st.sampled_from((0, 1, 2, 7))),
                                draw(st.one_of(st.sampled_from(MEMBERS), st.just(""))))
            data = encode_conf_change(change)
        else:
            data = draw(st.binary(max_size=8))
        entries.append(Entry(t, index, kind, data))
    return tuple(entries)


@st.composite
def forged(draw: Any, core: Raft) -> Any:
    """One well-typed Raft message aimed at ``core``, with arbitrary field values."""
    kind = draw(st.sampled_from(RAFT_MESSAGE_TYPES + (Append, Append, InstallSnapshot)))
    # Often the node it follows: what the leader itself could send it is the hardest to refuse.
    frm = draw(weighted((2, st.just(core.leader or "n1")), (3, node_ids())))
    to = draw(weighted((6, st.just(core.node_id)), (1, node_ids())))
    here = core.term
    term = draw(weighted(
        (3, st.just(here)), (3, st.integers(max(here - 2, 0), here + 2)),
        (1, st.sampled_from(EXTREMES)),
    ))
    log = core.log
    last = log.last_index
    if kind is Append:
        prev = draw(weighted((2, st.integers(log.committed, last)), (1, numbers(last))))
        prev_term = draw(weighted((3, st.just(log.term(prev) or 0)), (1, numbers(here))))
        entries = draw(entry_lists(prev, prev_term, term))
        return Append(frm, to, term, prev, prev_term, entries, draw(numbers(last)))
    if kind is AppendResp:
        return AppendResp(frm, to, term, draw(numbers(last)), draw(st.booleans()),
                          draw(numbers(last)), draw(numbers(here)))
    if kind in (Vote, PreVote):
        args = (frm, to, term, draw(numbers(last)), draw(numbers(log.last_term)))
        return Vote(*args, draw(st.booleans())) if kind is Vote else PreVote(*args)
    if kind in (VoteResp, PreVoteResp):
        return kind(frm, to, term, draw(st.booleans()))
    if kind is Heartbeat:
        commit, ctx = draw(numbers(log.committed)), draw(numbers(core.reads.round))
        return Heartbeat(frm, to, term, commit, ctx)
    if kind is HeartbeatResp:
        return HeartbeatResp(frm, to, term, draw(numbers(core.reads.round)))
    if kind is InstallSnapshot:
        meta = SnapshotMeta(
            draw(numbers(log.committed + 1)), draw(numbers(here)), draw(conf_states())
        )
        data = draw(st.binary(max_size=6))
        size = draw(st.one_of(st.just(len(data)), numbers(len(data))))
        offset = draw(st.one_of(st.just(0), numbers(2)))
        return InstallSnapshot(frm, to, term, meta, offset, data, size, draw(st.booleans()))
    if kind is InstallSnapshotResp:
        return InstallSnapshotResp(frm, to, term, draw(numbers(last)), draw(st.booleans()),
                                   draw(st.booleans()), draw(numbers(4)))
    return TimeoutNow(frm, to, term)


# --- feeding a cluster ----------------------------------------------------------------------


def settle(core: Raft) -> None:
    """Drive a core through its Readies without a host (a copy that is thrown away)."""
    for _ in range(50):
        if not core.has_ready():
            return
        core.advance(core.ready())
    raise AssertionError("the copy never settled")


def feed(c: Cluster, node: str, m: Any) -> None:
    core = c.cores[node]
    role, term, leader, last = core.role, core.term, core._leader, core.log.last_index
    before = fingerprint(core)
    dropped_before = sum(core.dropped.values())
    elapsed_before = core._election_elapsed
    shadow = copy.deepcopy(core)
    try:
        shadow.step(m)
        after = fingerprint(shadow)
        new_causes = {k for k, v in shadow.dropped.items() if v > core.dropped.get(k, 0)}
        dropped = sum(shadow.dropped.values()) > dropped_before
        settle(shadow)
    except InvariantViolation as exc:
        assert is_documented_fatal(exc, m, role, term, leader, last), f"{exc} from {m!r}"
        with pytest.raises(InvariantViolation):
            core.step(m)
        c.crash(node)  # fail-stop: the node restarts from what it persisted
        return
    check_log_shape(shadow)
    if dropped and (new_causes <= PURE_DROPS or (m.term <= term and not new_causes & ANSWERED)):
        assert after == before, f"{m!r} was dropped ({new_causes}) but changed the core"
        if new_causes <= PURE_DROPS:
            assert shadow._election_elapsed == elapsed_before
    unchanged = after == before
    if not unchanged and (believed_claim(m, role, term) or shadow.term > term + TERM_INFLATION_MAX):
        return
    queued = len(c.queue)
    core.step(m)
    c.drive_all()
    c.queue = c.queue[:queued] + [x for x in c.queue[queued:] if x.frm != node]
    check_log_shape(core)


ROLES = ("leader", "follower", "learner", "pre_candidate", "candidate")


def cluster_in_role(role: str, seed: int) -> tuple[Cluster, str]:
    c = Cluster(VOTERS, learners=(LEARNER,), seed=seed, pre_vote=role != "candidate")
    c.elect("n1")
    c.put("k", "v")
    if role == "leader":
        return c, "n1"
    if role == "follower":
        return c, "n2"
    if role == "learner":
        return c, LEARNER
    c.isolate("n3")
    c.core("n3").campaign()
    c.drive_all()
    c.drop(lambda m: m.frm == "n3")
    expected = Role.PRE_CANDIDATE if role == "pre_candidate" else Role.CANDIDATE
    assert c.core("n3").role is expected
    return c, "n3"


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(role=st.sampled_from(ROLES), seed=st.integers(0, 1000), data=st.data())
def test_forged_messages_never_crash_and_the_cluster_recovers(
    role: str, seed: int, data: st.DataObject
) -> None:
    c, target = cluster_in_role(role, seed)
    for _ in range(data.draw(st.integers(1, 30), label="steps")):
        action = data.draw(st.sampled_from(("forge",) * 6 + ("tick", "deliver")))
        if action == "tick":
            c.tick()
        elif action == "deliver":
            c.deliver(max_messages=data.draw(st.integers(1, 8)))
        else:
            alive = sorted(c.alive)
            if not alive:
                break
            node = target if target in c.alive and data.draw(st.booleans()) else \
                data.draw(st.sampled_from(alive))
            feed(c, node, wire(data.draw(forged(c.cores[node]))))
    c.heal()
    for node in c.ids:
        if node not in c.alive:
            c.restart(node)
    # Like a client: propose until a proposal is applied everywhere (one may be lost to a
    # leader change, forced by terms the garbage raised).
    for attempt in range(5):
        leader = c.wait_leader(max_ticks=300)
        if c.propose(leader, f"after={attempt}".encode()) is None:
            continue
        for _ in range(30):
            c.run(1)
            if all(c.hosts[n].kv.data.get("after") == str(attempt) for n in c.ids):
                return
    raise AssertionError("no proposal after the garbage was applied everywhere: " + c.describe())


# --- specific forged messages ---------------------------------------------------------------


def _cluster() -> Cluster:
    c = Cluster(seed=21)
    c.elect("n1")
    c.put("a", "1")
    return c


def test_install_snapshot_of_a_stale_term_is_dropped_and_changes_nothing() -> None:
    c = _cluster()
    follower = c.core("n2")
    before = fingerprint(follower)
    meta = SnapshotMeta(50, 1, ConfState(voters=VOTERS))
    follower.step(InstallSnapshot("n3", "n2", follower.term - 1, meta, 0, b"x", 1, True))
    assert follower.dropped.get("stale_term") == 1
    assert fingerprint(follower) == before and not follower.has_ready()


def test_install_snapshot_in_the_term_from_a_node_that_is_not_the_leader_is_fatal() -> None:
    c = _cluster()
    follower = c.core("n2")
    before = fingerprint(follower)
    meta = SnapshotMeta(50, follower.term, ConfState(voters=VOTERS))
    with pytest.raises(InvariantViolation, match="^election safety: n1 and n3 both sent"):
        follower.step(InstallSnapshot("n3", "n2", follower.term, meta, 0, b"x", 1, True))
    assert fingerprint(follower) == before  # it stops before believing either


def test_append_in_the_term_from_a_node_that_is_not_the_leader_is_fatal() -> None:
    c = _cluster()
    follower = c.core("n3")
    term, last = follower.term, follower.log.last_index
    forged_append = Append("n2", "n3", term, last, follower.log.last_term,
                           (Entry(term, last + 1, EntryKind.NORMAL, b"evil=1"),), last + 1)
    with pytest.raises(InvariantViolation, match="election safety"):
        follower.step(forged_append)
    assert follower.log.last_index == last


def test_a_node_that_knows_no_leader_of_its_term_accepts_the_leaders_messages() -> None:
    # Nobody is known to lead the term yet, so the sender may well be its leader.
    c = _cluster()
    c.crash("n3")
    c.restart("n3")
    n3 = c.core("n3")
    assert n3.leader is None
    c.tick(2)
    c.stabilize()
    assert n3.leader == "n1" and not n3.dropped.get("malformed")


def test_timeout_now_from_a_non_member_or_a_non_leader_starts_no_election() -> None:
    c = _cluster()
    follower = c.core("n2")
    before = fingerprint(follower)
    for forged_msg in (
        TimeoutNow("x9", "n2", follower.term),  # not a member
        TimeoutNow("n3", "n2", follower.term),  # a member, not the leader
        TimeoutNow("n1", "n2", follower.term + 1),  # the leader, from a term it cannot lead
        TimeoutNow("n1", "n2", follower.term - 1),  # stale
    ):
        follower.step(forged_msg)
    assert follower.dropped.get("timeout_now_not_from_leader") == 3
    assert follower.dropped.get("stale_term") == 1
    assert fingerprint(follower) == before and follower.role is Role.FOLLOWER
    follower.step(TimeoutNow("n1", "n2", follower.term))  # the real thing still works
    assert follower.role is not Role.FOLLOWER


def test_responses_from_a_non_member_are_dropped_whatever_their_term() -> None:
    c = _cluster()
    leader = c.core("n1")
    term = leader.term
    before = fingerprint(leader)
    for forged_msg in (
        AppendResp("x9", "n1", term + 5, index=0, reject=True),
        AppendResp("x9", "n1", term, index=leader.log.last_index + 10),
        HeartbeatResp("x9", "n1", term + 1),
        InstallSnapshotResp("x9", "n1", term, index=1),
        VoteResp("x9", "n1", term + 3, reject=True),
        PreVoteResp("n4", "n1", term + 3, reject=True),
    ):
        leader.step(forged_msg)
    assert leader.dropped.get("not_asked") == 6
    assert fingerprint(leader) == before and leader.role is Role.LEADER


def test_responses_to_requests_never_sent_are_dropped() -> None:
    c = _cluster()
    leader = c.core("n1")
    term, last = leader.term, leader.log.last_index
    before = fingerprint(leader)
    leader.step(AppendResp("n2", "n1", term, index=last + 3, reject=True, hint_index=1))
    leader.step(HeartbeatResp("n2", "n1", term, ctx=leader.reads.round + 1))
    leader.step(InstallSnapshotResp("n2", "n1", term, index=last + 1))
    leader.step(AppendResp("n2", "n1", term, index=last, reject=True, hint_index=last + 2))
    leader.step(AppendResp("n2", "n1", term, index=last, reject=True, hint_term=term + 1))
    assert leader.dropped.get("reject_not_sent") == 1
    assert leader.dropped.get("ctx_not_sent") == 1
    assert leader.dropped.get("snapshot_resp_beyond_log") == 1
    assert leader.dropped.get("malformed_hint") == 2
    assert fingerprint(leader) == before


def test_votes_from_nodes_that_are_not_voters_do_not_move_a_candidate() -> None:
    core, host = make_core(pre_vote=True)
    core.campaign()
    pump(core, host)
    assert core.role is Role.PRE_CANDIDATE
    before = fingerprint(core)
    core.step(PreVoteResp("x9", "n1", core.term + 1, reject=False))
    core.step(VoteResp("x9", "n1", core.term + 7, reject=True))
    core.step(PreVoteResp("n2", "n1", core.term + 4, reject=False))  # not the round we asked
    assert core.dropped.get("not_asked") == 2 and core.dropped.get("prevote_other_round") == 1
    assert fingerprint(core) == before


def test_numbers_beyond_what_storage_holds_are_malformed() -> None:
    core, _ = make_core()
    for forged_msg in (
        Vote("n2", "n1", MAX + 1, 0, 0),
        Heartbeat("n2", "n1", 2**64 - 1, 0),
        Append("n2", "n1", 2, MAX + 1, 1, (), 0),
        Append("n2", "n1", 2, 0, 1, (), 0),  # index 0 has term 0
        Vote("n2", "n1", 5, 0, 3),
        AppendResp("n2", "n1", -1, 0),
    ):
        core.step(forged_msg)
    assert core.dropped.get("malformed") == 6
    assert core.term == 1


def test_entries_of_unknown_kind_or_undecodable_conf_changes_are_dropped() -> None:
    c = _cluster()
    follower = c.core("n2")
    term, last, last_term = follower.term, follower.log.last_index, follower.log.last_term
    before = fingerprint(follower)
    for entry in (
        Entry(term, last + 1, 9, b""),
        Entry(term, last + 1, EntryKind.CONF_CHANGE, b"\xc1not msgpack"),
        Entry(term, last + 1, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(7, "n2"))),
        Entry(term, last + 1, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(0, ""))),
        Entry(term, last + 2, EntryKind.NORMAL, b"gap=1"),
        Entry(last_term - 1, last + 1, EntryKind.NORMAL, b"older=1") if last_term > 1 else
        Entry(term + 1, last + 1, EntryKind.NORMAL, b"newer=1"),
    ):
        follower.step(Append("n1", "n2", term, last, last_term, (entry,), last))
    assert follower.dropped.get("malformed_entries") == 6
    assert fingerprint(follower) == before


def test_snapshot_chunks_that_do_not_fit_are_refused_or_answered() -> None:
    c = _cluster()
    follower = c.core("n3")
    term = follower.term
    meta = SnapshotMeta(40, term, ConfState(voters=VOTERS))
    bad_metas = (
        SnapshotMeta(40, term, ConfState()),  # no voter
        SnapshotMeta(40, term, ConfState(voters=VOTERS, learners=("n1",))),  # voter and learner
        SnapshotMeta(40, term, ConfState(voters=("n1", "n1"))),
        SnapshotMeta(40, term, ConfState(voters=VOTERS, voters_outgoing=("n1",))),
        SnapshotMeta(40, term, ConfState(voters=("n1", ""))),
        SnapshotMeta(40, term + 1, ConfState(voters=VOTERS)),  # newer than the sender's term
    )
    for bad in bad_metas:
        follower.step(InstallSnapshot("n1", "n3", term, bad, 0, b"abc", 3, True))
    follower.step(InstallSnapshot("n1", "n3", term, meta, 0, b"", 0, True))  # an empty image
    follower.step(InstallSnapshot("n1", "n3", term, meta, 0, b"abc", 3, False))  # done lies
    follower.step(InstallSnapshot("n1", "n3", term, meta, 2, b"abc", 4, True))  # past the end
    assert follower.dropped.get("malformed_snapshot") == len(bad_metas) + 3
    rd = follower.ready() if follower.has_ready() else None
    assert rd is None or rd.snapshot is None
    if rd is not None:
        follower.advance(rd)
    # The first chunk is taken; a chunk beyond what is held, or claiming another size, is not.
    follower.step(InstallSnapshot("n1", "n3", term, meta, 0, b"ab", 6, False))
    follower.step(InstallSnapshot("n1", "n3", term, meta, 4, b"ef", 6, True))
    follower.step(InstallSnapshot("n1", "n3", term, meta, 2, b"cd", 4, True))
    assert follower.dropped.get("snapshot_chunk_out_of_order") == 2
    follower.step(InstallSnapshot("n1", "n3", term, meta, 2, b"cdef", 6, True))
    rd = follower.ready()
    assert rd.snapshot is not None and rd.snapshot.data == b"abcdef"
    follower.advance(rd)


def _founding_log(*extra: Entry) -> PersistedState:
    entries = tuple(
        Entry(1, i, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(ADD_VOTER, v)))
        for i, v in enumerate(VOTERS, start=1)
    ) + extra
    return PersistedState(hard_state=raft_hard_state(1, None, len(entries)), entries=entries)


@pytest.mark.parametrize("applied", [None, 5])
def test_committed_conf_changes_that_cannot_apply_are_ignored_alike_everywhere(
    applied: int | None,
) -> None:
    bad = (
        Entry(1, 4, EntryKind.CONF_CHANGE, b"\xc1 not a change"),
        Entry(1, 5, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(9, "n2"))),
    )
    confs = []
    for node in VOTERS:
        if applied is None:  # applied on the way, in advance()
            core, _ = make_core(node, persisted=_founding_log(*bad))
        else:  # already applied by the host before a restart: replayed at boot
            core = Raft(RaftConfig(node), _founding_log(*bad), random.Random(0), applied=applied)
        assert core.dropped.get("conf_change_ignored") == 2
        assert core.log.applied == 5
        confs.append(core.conf)
    assert confs == [ConfState(voters=VOTERS)] * 3


def test_a_committed_change_that_would_leave_no_voter_is_ignored() -> None:
    remove_last = Entry(
        1, 2, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(ConfChangeKind.REMOVE_NODE, "n1"))
    )
    add = Entry(1, 1, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(ADD_VOTER, "n1")))
    persisted = PersistedState(hard_state=raft_hard_state(1, None, 2), entries=(add, remove_last))
    core, host = make_core("n1", persisted=persisted)
    assert core.conf == ConfState(voters=("n1",))
    assert core.dropped.get("conf_change_ignored") == 1
    core.campaign()
    pump(core, host)
    assert core.role is Role.LEADER


def test_a_snapshot_image_the_host_refuses_replaces_nothing() -> None:
    # Raft §7: the follower installs the leader's image only if its state machine can take it;
    # a forged or corrupt image is dropped whole, and the leader is asked to start again.
    import random as _random

    from exapyte.protocol.raft.core import Raft, RaftConfig
    from exapyte.protocol.raft.messages import InstallSnapshot, InstallSnapshotResp
    from exapyte.protocol.types import ConfState, PersistedState, SnapshotMeta

    seen: list[bytes] = []

    def check(image: bytes) -> bool:
        seen.append(image)
        return image.startswith(b"good")

    conf = ConfState(voters=("n1", "n2", "n3"))
    core = Raft(RaftConfig(node_id="n2"), PersistedState(conf=conf), _random.Random(1),
                snapshot_check=check)
    before = core.status()
    bad = InstallSnapshot("n1", "n2", 5, SnapshotMeta(100, 5, conf), 0, b"garbage", 7, True)
    core.step(bad)
    rd = core.ready()
    core.advance(rd)
    assert seen == [b"garbage"]
    assert rd.snapshot is None
    assert core.status().last_index == before.last_index
    assert core.status().dropped.get("snapshot_image_invalid") == 1
    answers = [m for m in [*rd.messages, *rd.early_messages] if isinstance(m, InstallSnapshotResp)]
    assert answers and answers[-1].received == 0 and answers[-1].done is False
    good = InstallSnapshot("n1", "n2", 5, SnapshotMeta(100, 5, conf), 0, b"good image", 10, True)
    core.step(good)
    rd = core.ready()
    assert rd.snapshot is not None and rd.snapshot.data == b"good image"
