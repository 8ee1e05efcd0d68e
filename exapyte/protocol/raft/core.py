"""The Raft consensus core: a sans-IO state machine.

Theory of operation
-------------------
Roles and transitions (all in the ``become_*`` methods; each swaps the step and tick handlers)::

    FOLLOWER --election timeout--> PRE_CANDIDATE --pre-vote quorum--> CANDIDATE --votes--> LEADER
        ^            (or CANDIDATE directly when pre_vote is off, or on TimeoutNow)          |
        +----------- higher term seen / lost election / check-quorum failed / removed -------+

A LEARNER is a follower that is not a voter: it never times out into an election. ``role``
reports it as ``Role.LEARNER``.

Every message first passes the term rules (Raft §5.1, thesis §9.6): a higher term makes this
node a follower of that term, except for (pre-)vote requests received while a leader is believed
alive (*leader stickiness*, when check_quorum is on) and for pre-vote traffic, which never
changes anyone's term. A lower-term message is stale: dropped and counted, except that a stale
append/heartbeat is answered with our term so that a deposed leader learns it.

Elections (§5.2, §5.4.1, thesis §9.6). The election timeout is drawn from [T, 2T) with the
injected rng. With pre-vote, a follower first asks whether it *could* win (no term changes);
only with a quorum of yeses does it increment its term and ask for real votes. A vote is
granted only to a candidate whose log is at least as up to date as ours, and the (term, vote)
pair reaches ``Ready.hard_state`` in the same Ready as the VoteResp, so it is persisted first.
A node does not campaign while committed membership changes are waiting to be applied.

Replication (§5.3). The leader appends a NOOP when elected. Proposals are appended to the
leader's log and are *batched*: the append messages are built once per Ready (every proposal
made since the previous Ready goes into as few messages as ``max_entries_per_msg`` and
``max_bytes_per_msg`` allow). Followers in REPLICATE state are streamed to with at most
``max_inflight_msgs`` unacknowledged messages (*pipelining*); followers in PROBE state get one
message per round trip. A follower rejecting an append returns the term of its conflicting entry
and that term's first index (or its last index + 1), so the leader skips a term per round trip
(*fast backtracking*). The leader's own entries count towards the quorum once persisted
(``advance``). Commit: the largest index a quorum of voters holds, provided it belongs to the
current term (§5.4.2, the Figure 8 rule). The leader sends no round of its own to announce a
commit: followers learn the commit index from the next Append or heartbeat, which carry it
(§5.3), so a follower applies an entry up to one heartbeat interval after the leader does; an
unbatched write costs an Append and an AppendResp per follower, 2(N-1) messages.

Snapshots (§7). The host compacts with :meth:`Raft.compact` after snapshotting its state machine;
a follower whose next entry was compacted gets the snapshot in InstallSnapshot chunks of at most
``snapshot_chunk_bytes`` (Figure 13's offset/done), one chunk in flight: the follower appends a
chunk that starts where its buffer ends and acknowledges how many bytes it holds, and the leader
sends the chunk that starts there (a lost, duplicated or reordered chunk costs a round trip, not
the transfer). A chunk of offset 0 starts a transfer afresh. A follower installs the assembled
snapshot (it appears in ``Ready.snapshot``) unless its log already holds the snapshot's last
entry, in which case it keeps its log and only moves its commit index.

Reads (§8, thesis §6.4): ReadIndex, see :mod:`exapyte.protocol.readindex`. Reads are served by
the leader only; a follower raises NotLeader(leader_hint) and the host forwards the request.
There are no lease reads. A new leader holds reads until the first entry of its term commits
(its NOOP), then gives them that commit index. Every read ends: released in
``Ready.read_states`` once a quorum confirmed a heartbeat round sent after it arrived, or listed
in ``Ready.failed_reads`` when leadership is lost (any step down, a lost election, a transfer
completed) or when it has waited ``RAFT_READ_TIMEOUT_ELECTIONS`` election timeouts (a new leader
whose NOOP does not commit, a round that never reaches a quorum, a deposed leader that has not
learned it yet), so the host can tell the client to retry elsewhere.

Membership (thesis §4.1): single-server changes (add voter, add learner, promote a learner by
adding it as a voter, remove). A change takes effect when its entry is *applied* (in
``advance``), at most one change may be pending, and a new leader may propose one only after its
NOOP was applied (this closes the single-server-change hazard described by Ongaro in 2015). A
leader that applies its own removal steps down, first sending TimeoutNow to an up-to-date voter.
A brand-new group bootstraps from ``PersistedState.conf``: the initial members are written as
committed CONF_CHANGE entries 1..n of term 1, identical on every founding member, so a node that
joins later learns the initial configuration from the log like any other change.

Standby (no vote from a replica that lost its state): a replica whose log is empty (no entry, no
snapshot: never a founder) may be listed as a voter by a configuration some member still holds
while it has forgotten its vote and its log (it was dropped and created again, or its storage was
lost). It refuses every (pre-)vote (``vote_standby``) and answers heartbeats without their read
round, until a leader's append or snapshot gives it a log. :meth:`Raft.tombstone` is the term and
vote the host keeps of a replica it drops, to start a re-created one from.

Leadership transfer (thesis §3.10): the leader stops accepting proposals, brings the target up
to date, then sends TimeoutNow; the target campaigns at once (skipping pre-vote) and its votes
override leader stickiness. The transfer is abandoned after an election timeout.

Check-quorum (thesis §6.2): a leader that has not heard from a quorum of voters within an
election timeout steps down.

Defensive input handling. Raft trusts its members: a well-formed message at the current or a
newer term that claims authority (a leader's append, a vote, an acknowledgement) is believed, as
the paper assumes, and the node shell lets only authenticated members reach the core, each in
its own name (``frm`` must be the member whose key sent it). Anything else a peer can send is
checked before it changes anything, and a message that fails a check is dropped, changes
nothing, and is counted in ``status().dropped`` under its cause:

- ``unknown_message``, ``misrouted`` (``to`` is not us), ``bad_sender`` (``frm`` empty or us);
- ``malformed``: a term or index below 0 or above ``RAFT_TERM_INDEX_MAX`` (stored terms and
  indexes must fit a signed 64-bit integer after growing), a previous, last or snapshot term
  above the message's term, index 0 with a non-zero term; ``malformed_entries``: entries that
  do not continue ``(prev_index, prev_term)`` one index at a time with non-decreasing terms up
  to the message's term, or of an unknown kind, or a CONF_CHANGE that does not decode to a known
  change of a named node; ``malformed_snapshot``: a snapshot whose meta this core could not have
  made (no voter, unnamed or repeated members, a voter that is also a learner, a joint
  configuration) or a chunk outside an image of 1..``RAFT_SNAPSHOT_BYTES_MAX`` bytes, or whose
  ``done`` does not mark the chunk that reaches the end; ``snapshot_image_invalid``: an
  assembled image the host's ``snapshot_check`` refuses (nothing is replaced); ``malformed_hint``: a rejection whose
  hint points more than one past the rejected index or names a term above the follower's;
- ``not_asked``: a response from a node we send no requests to (append, heartbeat and snapshot
  answers only from members, vote answers only from voters), so a removed node cannot move our
  term; ``stale_term``: any other message of an older term (a stale append or heartbeat is
  answered with our term instead, so a deposed leader learns it; a stale pre-vote is refused);
- ``timeout_now_not_from_leader``: a TimeoutNow not from the leader we follow in its term (a
  leader sends it only to a node that acknowledged it in that term), so nobody else can force an
  election; ``timeout_now_not_voter``: we cannot campaign;
- ``vote_in_lease`` (leader stickiness), ``prevote_other_round`` (a pre-vote grant for a term
  we did not ask about), ``unexpected_<Message>`` (a message our role does not take);
- at a leader: ``reject_not_sent`` (a rejection of an index past our log), ``ctx_not_sent`` (a
  read-index round we have not started), ``snapshot_resp_beyond_log``, ``snapshot_ack_unexpected``
  (a chunk acknowledgement for a transfer not in progress), ``stale_reject``, ``unknown_peer``;
- at a follower: ``snapshot_stale`` and ``snapshot_chunk_out_of_order`` are answered with where
  we are, so the leader resends from there.

A message from a node outside our configuration is not refused for that alone: a leader or a
candidate may be a voter whose addition we have not applied yet (or we may be joining and know no
configuration), and refusing it could stall the group. Committed content never makes the core
raise either: a CONF_CHANGE entry that does not decode, names no known change or would leave no
voter is applied as no change (``conf_change_ignored``), the same way on every replica, because
every replica applies the same bytes to the same configuration.

Only a message that proves the cluster's safety is already broken raises
:class:`~exapyte.errors.InvariantViolation`, stopping the node (fail-stop), as etcd does:

1. a leader receives Append, Heartbeat or InstallSnapshot of its own term: only a leader sends
   them, so two nodes lead the same term (*election safety*);
2. a follower or learner that follows leader L in term T receives one of them for T from
   another node: ``_leader`` is only ever the node that sent us a leader message in the current
   term, so again two leaders of T (*election safety*);
3. a leader receives a successful AppendResp of its term acknowledging an index past its last
   one: the follower acknowledges either the end of an append this leader sent or its own
   commit index, and this leader never sent past its log (which only grows within a term), so
   the follower committed an entry the leader lacks (*leader completeness*).

The other raises of InvariantViolation guard the core's own bookkeeping and no message reaches
them: the checks above keep appends after the commit index (so a committed entry is never
truncated or contradicted), commit indexes within the log and restored snapshots beyond it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from exapyte import limits
from exapyte.errors import (
    InvariantViolation,
    NotLeader,
    ProposalDropped,
    ProtocolMisuse,
)
from exapyte.protocol.core import ConsensusCore, RandomSource, misaddressed
from exapyte.protocol.invariants import NodeView
from exapyte.protocol.log import ReplicatedLog
from exapyte.protocol.membership import (
    apply_change,
    check_proposal,
    conf_at,
    entries_follow,
    sane_conf,
    valid_change,
)
from exapyte.protocol.membership import compact as compact_log
from exapyte.protocol.progress import ProgressState, ProgressTracker
from exapyte.protocol.quorum import VoteResult
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
from exapyte.protocol.readindex import ReadIndexTracker
from exapyte.protocol.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    CoreSpec,
    Entry,
    EntryKind,
    HardState,
    PersistedState,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    Status,
    decode_conf_change,
    encode_conf_change,
)


class RaftConfig(msgspec.Struct, frozen=True):
    """Tuning of one Raft replica. Call :meth:`validate` once, at load."""

    node_id: str
    election_timeout_ticks: int = limits.RAFT_ELECTION_TIMEOUT_TICKS_DEFAULT
    heartbeat_ticks: int = limits.RAFT_HEARTBEAT_TICKS_DEFAULT
    max_inflight_msgs: int = limits.RAFT_MAX_INFLIGHT_MSGS_DEFAULT
    max_entries_per_msg: int = limits.RAFT_MAX_ENTRIES_PER_MSG_DEFAULT
    max_bytes_per_msg: int = limits.RAFT_MAX_BYTES_PER_MSG_DEFAULT
    snapshot_chunk_bytes: int = limits.RAFT_SNAPSHOT_CHUNK_BYTES_DEFAULT
    pre_vote: bool = True
    check_quorum: bool = True
    # A known bug, for proving that the harness catches it (config ``unsafe.bugs: no-term-check``):
    # grant every vote request of the current term, ignoring the one-vote-per-term rule and the
    # log up-to-date check (§5.2, §5.4.1). Never set it outside such a test.
    unsafe_grant_any_vote: bool = False

    def validate(self) -> None:
        def need(ok: bool, field: str, rule: str) -> None:
            if not ok:
                raise ProtocolMisuse(
                    f"RaftConfig.{field}={getattr(self, field)!r} is invalid: {rule}"
                )

        need(isinstance(self.node_id, str) and bool(self.node_id), "node_id", "non-empty string")
        need(self.heartbeat_ticks >= 1, "heartbeat_ticks", "must be >= 1")
        need(
            self.election_timeout_ticks > self.heartbeat_ticks,
            "election_timeout_ticks",
            f"must be > heartbeat_ticks ({self.heartbeat_ticks})",
        )
        need(self.max_inflight_msgs >= 1, "max_inflight_msgs", "must be >= 1")
        need(self.max_entries_per_msg >= 1, "max_entries_per_msg", "must be >= 1")
        need(self.max_bytes_per_msg >= 1, "max_bytes_per_msg", "must be >= 1")
        need(self.snapshot_chunk_bytes >= 1, "snapshot_chunk_bytes", "must be >= 1")


class RaftHardState(msgspec.Struct, frozen=True, array_like=True):
    """What Raft persists in ``HardState.record``: the current term and the vote cast in it."""

    term: int = 0
    vote: str | None = None


_HS_ENCODER = msgspec.msgpack.Encoder()
_HS_DECODER = msgspec.msgpack.Decoder(RaftHardState)


def encode_hard_state(state: RaftHardState) -> bytes:
    """The ``HardState.record`` of a Raft replica."""
    return _HS_ENCODER.encode(state)


def decode_hard_state(record: bytes) -> RaftHardState:
    """Inverse of :func:`encode_hard_state`; ``b""`` is a replica that never stored one.

    Raises ProtocolMisuse for a record that is not Raft's (storage written by another protocol).
    """
    if not record:
        return RaftHardState()
    try:
        return _HS_DECODER.decode(record)
    except msgspec.DecodeError as exc:
        raise ProtocolMisuse(f"the stored hard state is not a Raft hard state: {exc}") from exc


_LEADER_MESSAGES = (Append, Heartbeat, InstallSnapshot)
_RESPONSES = frozenset({AppendResp, HeartbeatResp, InstallSnapshotResp, VoteResp, PreVoteResp})

_HANDLED = frozenset(RAFT_MESSAGE_TYPES)
_ENTRY_KINDS = frozenset(int(k) for k in EntryKind)
_NUMBER_MAX = limits.RAFT_TERM_INDEX_MAX


def _in_range(*values: int) -> bool:
    for value in values:
        if not 0 <= value <= _NUMBER_MAX:
            return False
    return True


def malformed(m: Any) -> str | None:
    """Why a Raft message cannot have been sent by a correct peer (the drop counter's name), or
    None. Checks only the message itself; the receiver's state decides the rest."""
    kind = type(m)
    if not _in_range(m.term):
        return "malformed"
    if kind is Append:
        if not _in_range(m.prev_index, m.prev_term, m.commit) or m.prev_term > m.term:
            return "malformed"
        if m.prev_index == 0 and m.prev_term != 0:
            return "malformed"  # index 0 is the empty log, of term 0
        return None if entries_follow(m.prev_index, m.prev_term, m.entries, m.term) else "malformed_entries"
    if kind is AppendResp:
        if not _in_range(m.index, m.hint_index, m.hint_term):
            return "malformed"
        # A rejection's hint is at most one past the rejected index, and names a term the
        # follower can hold, so never one above its own.
        if m.reject and (m.hint_index > m.index + 1 or m.hint_term > m.term):
            return "malformed_hint"
        return None
    if kind is Vote or kind is PreVote:
        if not _in_range(m.last_index, m.last_term) or m.last_term > m.term:
            return "malformed"
        if m.last_index == 0 and m.last_term != 0:
            return "malformed"
        return None
    if kind is Heartbeat:
        return None if _in_range(m.commit, m.ctx) else "malformed"
    if kind is HeartbeatResp:
        return None if _in_range(m.ctx) else "malformed"
    if kind is InstallSnapshot:
        meta = m.meta
        if not _in_range(meta.index, meta.term, m.offset):
            return "malformed"
        if meta.index == 0 or meta.term == 0 or meta.term > m.term or not sane_conf(meta.conf):
            return "malformed_snapshot"
        # A chunk lies inside an image of 1..RAFT_SNAPSHOT_BYTES_MAX bytes (a state machine's
        # image is never empty), and the last chunk is the one that reaches its end.
        end = m.offset + len(m.data)
        if not 1 <= m.size <= limits.RAFT_SNAPSHOT_BYTES_MAX or end > m.size:
            return "malformed_snapshot"
        if m.done != (end == m.size):
            return "malformed_snapshot"
        return None
    if kind is InstallSnapshotResp:
        return None if _in_range(m.index, m.received) else "malformed"
    return None  # VoteResp, PreVoteResp, TimeoutNow: only the term


class Raft(ConsensusCore):
    """One Raft replica. See the module docstring for the theory of operation.

    ``persisted`` is what the host's storage holds (``PersistedState()`` for a node that
    joins an existing group; ``PersistedState(conf=ConfState(voters=...))`` for a founding
    member of a new group). ``applied`` is the index the host's state machine already reflects
    after a restart (default: the snapshot's index, i.e. the host re-applies the committed log).
    """

    def __init__(
        self,
        config: RaftConfig,
        persisted: PersistedState | None,
        rng: RandomSource,
        *,
        applied: int | None = None,
        snapshot_check: Callable[[bytes], bool] | None = None,
    ) -> None:
        config.validate()
        self.cfg = config
        # Whether an assembled snapshot image is one the host's state machine can install
        # (a pure function of the bytes); an image it refuses is dropped before it replaces
        # anything (``snapshot_image_invalid``).
        self._snapshot_check = snapshot_check
        self._id = config.node_id
        self._rng = rng
        p = persisted if persisted is not None else PersistedState()

        bootstrap = (
            p.hard_state == HardState()
            and p.snapshot is None
            and not p.entries
            and bool(p.conf.voters)
        )
        stored = decode_hard_state(p.hard_state.record)
        self._term = stored.term
        self._vote: str | None = stored.vote
        if bootstrap:
            if self._id not in p.conf.voters and self._id not in p.conf.learners:
                raise ProtocolMisuse(
                    f"bootstrap configuration {p.conf} does not contain node {self._id!r}"
                )
            self.log = ReplicatedLog()
            changes = [ConfChange(ConfChangeKind.ADD_VOTER, v) for v in sorted(p.conf.voters)]
            changes += [
                ConfChange(ConfChangeKind.ADD_LEARNER, n) for n in sorted(p.conf.learners)
            ]
            for i, change in enumerate(changes, start=1):
                self.log.append(Entry(1, i, EntryKind.CONF_CHANGE, encode_conf_change(change)))
            self.log.committed = len(changes)
            self._term = 1
            self._prev_hs: tuple[int, str | None, int] = (0, None, 0)
        else:
            self.log = ReplicatedLog(p.snapshot, p.entries, p.hard_state.commit, applied)
            self._prev_hs = (self._term, self._vote, self.log.committed)
        # The encoded (term, vote) last handed out, reused while only the commit index moves.
        self._record = p.hard_state.record

        self._dropped: dict[str, int] = {}
        self.trk = ProgressTracker(config.max_inflight_msgs)
        base_conf = p.snapshot.meta.conf if p.snapshot is not None else ConfState()
        self._confs: list[tuple[int, ConfState]] = [(self.log.offset, base_conf)]
        self.trk.apply_conf(base_conf, self.log.last_index + 1)
        for index in range(self.log.offset + 1, self.log.applied + 1):
            entry = self.log.entry(index)
            if entry.kind == EntryKind.CONF_CHANGE:
                self._apply_conf_entry(entry)

        self.reads = ReadIndexTracker()
        self._read_timeout_ticks = (
            config.election_timeout_ticks * limits.RAFT_READ_TIMEOUT_ELECTIONS
        )
        self._msgs: list[Any] = []
        self._read_states: list[ReadState] = []
        self._failed_reads: list[bytes] = []
        self._in_ready: Ready | None = None
        self._leader: str | None = None
        self._role = Role.FOLLOWER
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_timeout_ticks
        self._pending_conf_index = 0
        self._lead_transferee: str | None = None
        self._transfer_elapsed = 0
        self._need_bcast = False
        # a follower's snapshot being received in chunks: its meta, its size, the bytes so far
        self._snapshot_rx: tuple[SnapshotMeta, int, bytearray] | None = None
        self._step: Callable[[Any], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._become_follower(self._term, None)

    # === properties ========================================================================

    @property
    def node_id(self) -> str:
        return self._id

    @property
    def leader(self) -> str | None:
        return self._leader

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> str | None:
        return self._vote

    @property
    def role(self) -> Role:
        if self._role is Role.FOLLOWER and self._id in self.trk.learners:
            return Role.LEARNER
        return self._role

    @property
    def conf(self) -> ConfState:
        return self.trk.conf_state()

    @property
    def dropped(self) -> dict[str, int]:
        return dict(self._dropped)

    def leadership_rounds(self) -> tuple[int, int]:
        return self.reads.round, self.reads.confirmed(self.trk.voters, self._id)

    def observe(self) -> NodeView:
        log = self.log
        return NodeView(
            node_id=self._id,
            term=self._term,
            is_leader=self._role is Role.LEADER,
            commit=log.committed,
            offset=log.offset,
            offset_term=log.offset_term,
            entries=log.entries,
        )

    def quiescent(self) -> bool:
        if self._in_ready is not None or self.has_ready():
            return False
        log = self.log
        if log.committed != log.last_index or log.applied != log.committed or len(self.reads):
            return False
        if self._role is Role.LEADER:
            if self._lead_transferee is not None:
                return False
            last = log.last_index
            return all(pr.match == last for pr in self.trk.progress.values())
        return self._role in (Role.FOLLOWER, Role.LEARNER) and self._leader is not None

    @property
    def standby(self) -> bool:
        # The empty log's sentinel: no entry was ever appended and no snapshot installed (a
        # founder holds its founding configuration as entries 1..n).
        return self.log.last_index == 0

    def tombstone(self) -> HardState:
        return HardState(record=encode_hard_state(RaftHardState(self._term, self._vote)))

    def is_from_leader(self, message: object) -> bool:
        return type(message) in _LEADER_MESSAGES and message.term >= self._term  # type: ignore[attr-defined]

    @property
    def lead_transferee(self) -> str | None:
        return self._lead_transferee

    def status(self) -> Status:
        return Status(
            node_id=self._id,
            role=self.role.value,
            term=self._term,
            leader=self._leader,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index,
            first_index=self.log.first_index,
            conf=self.trk.conf_state(),
            dropped=dict(self._dropped),
            lead_transferee=self._lead_transferee,
        )

    def conf_at(self, index: int) -> ConfState:
        """The applied configuration as of ``index`` (``index`` >= the snapshot index)."""
        return conf_at(self._confs, index)

    # === transitions =======================================================================

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._leader = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self.cfg.election_timeout_ticks + self._rng.randrange(
            self.cfg.election_timeout_ticks
        )
        self._lead_transferee = None
        self._transfer_elapsed = 0
        self._need_bcast = False
        self.trk.reset_votes()
        self.trk.reset(self.log.last_index + 1)
        # Only a leader holds reads: whatever it held can no longer be confirmed here.
        self._failed_reads.extend(self.reads.reset())

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self._leader = leader
        self._role = Role.FOLLOWER
        self._step = self._step_follower
        self._tick = self._tick_election

    def _become_pre_candidate(self) -> None:
        if self._role is Role.LEADER:
            raise ProtocolMisuse("a leader cannot become a pre-candidate")
        # Pre-vote changes neither term nor vote (thesis §9.6).
        self.trk.reset_votes()
        self._leader = None
        self._role = Role.PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_candidate(self) -> None:
        if self._role is Role.LEADER:
            raise ProtocolMisuse("a leader cannot become a candidate")
        self._reset(self._term + 1)
        self._vote = self._id
        self._role = Role.CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_leader(self) -> None:
        if self._role is not Role.CANDIDATE:
            raise ProtocolMisuse(f"only a candidate can become leader, not a {self._role}")
        self._reset(self._term)
        self._leader = self._id
        self._role = Role.LEADER
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        me = self.trk.progress.get(self._id)
        if me is not None:
            me.maybe_update(self.log.stable)
            me.become_replicate()
            me.recent_active = True
        self._append_local(EntryKind.NOOP, b"")
        # Thesis §4.1 / Ongaro 2015: no membership change before an entry of this term commits.
        self._pending_conf_index = self.log.last_index

    # === inputs ============================================================================

    def tick(self) -> None:
        self._check_not_in_ready()
        reads = self.reads
        reads.tick()
        if reads:
            self._failed_reads.extend(reads.expire(self._read_timeout_ticks))
        self._tick()

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._lead_transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.cfg.election_timeout_ticks:
                self._lead_transferee = None  # abandoned: accept proposals again
        if self._election_elapsed >= self.cfg.election_timeout_ticks:
            self._election_elapsed = 0
            if self.cfg.check_quorum:
                if not self.trk.quorum_active(self._id):
                    self._count("check_quorum_step_down")
                    self._become_follower(self._term, None)
                    return
                for node, pr in self.trk.progress.items():
                    if node != self._id:
                        pr.recent_active = False
        for node, pr in self.trk.progress.items():
            if pr.state is ProgressState.SNAPSHOT and node != self._id:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= self.cfg.election_timeout_ticks:
                    pr.become_probe()  # the snapshot was probably lost: try again
        if self._heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def propose(self, data: bytes) -> tuple[int, int]:
        self._check_not_in_ready()
        self._check_can_propose()
        return self._append_local(EntryKind.NORMAL, bytes(data))

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        self._check_not_in_ready()
        self._check_can_propose()
        conf = self.trk.conf_state()
        check_proposal(
            conf, change, self._id, self._pending_conf_index, self.log.applied,
            "this leader's first entry",
        )
        index, term = self._append_local(EntryKind.CONF_CHANGE, encode_conf_change(change))
        self._pending_conf_index = index
        return index, term

    def read(self, request_id: bytes) -> None:
        self._check_not_in_ready()
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if request_id in self.reads:
            raise ProtocolMisuse(f"read {request_id!r} is already pending: ids must be unique")
        if self.log.term(self.log.committed) != self._term:
            self.reads.wait_for_commit(request_id)
        else:
            self.reads.add(request_id, self.log.committed)

    def transfer_leadership(self, to: str) -> None:
        self._check_not_in_ready()
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if to == self._id:
            self._lead_transferee = None
            return
        if not self.trk.is_voter(to):
            raise ProtocolMisuse(f"cannot transfer leadership to {to!r}: not a voter")
        if self._lead_transferee == to:
            return
        self._lead_transferee = to
        self._transfer_elapsed = 0
        pr = self.trk.progress[to]
        if pr.match == self.log.last_index:
            self._send(TimeoutNow(self._id, to, self._term))
        else:
            self._send_append(to, send_if_empty=True)

    def compact(self, snapshot: Snapshot) -> Snapshot:
        self._check_not_in_ready()
        full, self._confs = compact_log(self.log, self._confs, snapshot)
        return full

    # === step ==============================================================================

    def step(self, message: object) -> None:
        self._check_not_in_ready()
        m: Any = message
        kind = type(m)
        problem = misaddressed(m, _HANDLED, self._id)
        if problem is not None:
            self._count(problem)
            return
        cause = malformed(m)
        if cause is not None:
            self._count(cause)
            return
        if kind in _RESPONSES and not self._asks(m.frm, kind):
            # We send requests only to members (vote requests only to voters): this answers
            # nothing we asked, and a removed node must not move our term.
            self._count("not_asked")
            return

        if m.term < self._term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and (
                kind is Append or kind is Heartbeat
            ):
                # Tell the deposed leader our term (otherwise, with pre-vote, a node whose term
                # was raised while partitioned could be ignored forever).
                self._send(AppendResp(self._id, m.frm, self._term, index=0, reject=True))
            elif kind is PreVote:
                self._send(PreVoteResp(self._id, m.frm, self._term, reject=True))
            else:
                self._count("stale_term")
            return
        if kind is TimeoutNow and (m.term != self._term or m.frm != self._leader):
            # A leader sends TimeoutNow only to a node that acknowledged its appends in its
            # term, so the target already follows it in that term: anything else is not a
            # transfer this node takes part in.
            self._count("timeout_now_not_from_leader")
            return

        if m.term > self._term:
            if kind is Vote or kind is PreVote:
                forced = kind is Vote and m.transfer
                in_lease = (
                    self.cfg.check_quorum
                    and self._leader is not None
                    and self._election_elapsed < self.cfg.election_timeout_ticks
                )
                if in_lease and not forced:
                    self._count("vote_in_lease")
                    return
            if kind is PreVote or (kind is PreVoteResp and not m.reject):
                pass  # pre-vote traffic never moves terms
            elif kind in _LEADER_MESSAGES:
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, None)

        if kind is Vote or kind is PreVote:
            self._on_vote_request(m)
            return
        self._step(m)

    def _asks(self, node: str, response: type) -> bool:
        """Whether this node sends ``node`` the requests that ``response`` answers."""
        if response is VoteResp or response is PreVoteResp:
            return self.trk.is_voter(node)
        return node in self.trk.progress

    def _on_vote_request(self, m: Vote | PreVote) -> None:
        pre = type(m) is PreVote
        if self.standby:
            # Standby: an empty replica may be a voter that forgot its vote and its log in
            # some member's configuration; it votes only once a leader has given it a log.
            self._count("vote_standby")
            if pre:
                self._send(PreVoteResp(self._id, m.frm, self._term, reject=True))
            else:
                self._send(VoteResp(self._id, m.frm, self._term, reject=True))
            return
        can_vote = (
            self._vote == m.frm
            or (self._vote is None and self._leader is None)
            or (pre and m.term > self._term)
        )
        if self.cfg.unsafe_grant_any_vote or (
            can_vote and self.log.is_up_to_date(m.last_index, m.last_term)
        ):
            if pre:
                self._send(PreVoteResp(self._id, m.frm, m.term, reject=False))
            else:
                self._election_elapsed = 0
                self._vote = m.frm  # persisted in the same Ready as the response (§5.2)
                self._send(VoteResp(self._id, m.frm, self._term, reject=False))
        else:
            if pre:
                self._send(PreVoteResp(self._id, m.frm, self._term, reject=True))
            else:
                self._send(VoteResp(self._id, m.frm, self._term, reject=True))

    def _step_follower(self, m: Any) -> None:
        kind = type(m)
        if kind in _LEADER_MESSAGES:
            if self._leader is not None and self._leader != m.frm:
                # Only a leader sends these, and _leader is the node that sent them to us in
                # this term: two nodes lead the same term.
                raise InvariantViolation(
                    f"election safety: {self._leader} and {m.frm} both sent leader messages to "
                    f"{self._id} for the same term {self._term}"
                )
            self._election_elapsed = 0
            self._leader = m.frm
            if kind is Append:
                self._on_append(m)
            elif kind is Heartbeat:
                self._on_heartbeat(m)
            else:
                self._on_snapshot(m)
        elif kind is TimeoutNow:
            if self._promotable():
                self._hup(transfer=True)
            else:
                self._count("timeout_now_not_voter")
        else:
            self._count("unexpected_" + kind.__name__)

    def _step_candidate(self, m: Any) -> None:
        kind = type(m)
        if kind in _LEADER_MESSAGES:
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
            return
        pre = self._role is Role.PRE_CANDIDATE
        if (pre and kind is PreVoteResp) or (not pre and kind is VoteResp):
            if pre and not m.reject and m.term != self._term + 1:
                # A grant echoes the term asked about: this one answers another round.
                self._count("prevote_other_round")
                return
            self.trk.record_vote(m.frm, not m.reject)
            result = self.trk.vote_result()
            if result is VoteResult.WON:
                if pre:
                    self._campaign(transfer=False)
                else:
                    self._become_leader()
            elif result is VoteResult.LOST:
                self._become_follower(self._term, None)
            return
        self._count("unexpected_" + kind.__name__)

    def _step_leader(self, m: Any) -> None:
        kind = type(m)
        if kind in _LEADER_MESSAGES:
            raise InvariantViolation(
                f"election safety: {self._id} is leader of term {self._term} and received "
                f"{kind.__name__} from {m.frm} for the same term"
            )
        if kind is not AppendResp and kind is not HeartbeatResp and kind is not InstallSnapshotResp:
            self._count("unexpected_" + kind.__name__)
            return
        pr = self.trk.progress.get(m.frm)
        if pr is None:
            self._count("unknown_peer")
            return
        log = self.log
        if kind is AppendResp:
            if m.index > log.last_index:
                if m.reject:
                    # We never sent an append after our last index.
                    self._count("reject_not_sent")
                    return
                # A follower of this term holds (or has committed) entries this leader lacks:
                # it acknowledges an index past our last one, which we never sent, either as
                # the end of an append of ours or as its own commit index (§5.4, leader
                # completeness: only a leader elected without a committed entry is told that).
                raise InvariantViolation(
                    f"leader completeness: {self._id} is leader of term {self._term} with last "
                    f"index {log.last_index}, but {m.frm} acknowledges index {m.index}: a "
                    "committed entry is missing from the leader's log"
                )
        elif kind is HeartbeatResp:
            if m.ctx > self.reads.round:
                self._count("ctx_not_sent")
                return
        elif m.done and m.index > log.last_index:
            self._count("snapshot_resp_beyond_log")
            return
        pr.recent_active = True
        if kind is AppendResp:
            self._on_append_resp(m, pr)
        elif kind is HeartbeatResp:
            self._on_heartbeat_resp(m, pr)
        else:
            self._on_snapshot_resp(m, pr)

    # === elections =========================================================================

    def campaign(self) -> None:
        """Start an election now, as if the election timeout fired (tests, operator tools)."""
        self._check_not_in_ready()
        self._hup(transfer=False)

    def _promotable(self) -> bool:
        return self.trk.is_voter(self._id)

    def _hup(self, transfer: bool) -> None:
        if self._role is Role.LEADER:
            return
        if not self._promotable():
            return
        for entry in self.log.committed_unapplied():
            if entry.kind == EntryKind.CONF_CHANGE:
                self._count("campaign_blocked_pending_conf")
                return
        if self.cfg.pre_vote and not transfer:
            self._pre_campaign()
        else:
            self._campaign(transfer)

    def _pre_campaign(self) -> None:
        self._become_pre_candidate()
        self.trk.record_vote(self._id, True)
        if self.trk.vote_result() is VoteResult.WON:
            self._campaign(transfer=False)
            return
        last_index, last_term = self.log.last_index, self.log.last_term
        for voter in sorted(self.trk.voter_ids()):
            if voter != self._id:
                self._send(PreVote(self._id, voter, self._term + 1, last_index, last_term))

    def _campaign(self, transfer: bool) -> None:
        self._become_candidate()
        self.trk.record_vote(self._id, True)
        if self.trk.vote_result() is VoteResult.WON:
            self._become_leader()
            return
        last_index, last_term = self.log.last_index, self.log.last_term
        for voter in sorted(self.trk.voter_ids()):
            if voter != self._id:
                self._send(Vote(self._id, voter, self._term, last_index, last_term, transfer))

    # === follower side of replication ======================================================

    def _on_append(self, m: Append) -> None:
        log = self.log
        if m.prev_index < log.committed:
            # Everything up to our commit index matches; tell the leader where we are.
            self._send(AppendResp(self._id, m.frm, self._term, index=log.committed))
            return
        last_new = log.maybe_append(m.prev_index, m.prev_term, m.entries)
        if last_new is not None:
            commit = m.commit if m.commit < last_new else last_new
            if commit > log.committed:
                log.commit_to(commit)
            self._send(AppendResp(self._id, m.frm, self._term, index=last_new))
            return
        # Reject with the fast-backtracking hint (§5.3, "optimization" paragraph).
        if m.prev_index > log.last_index:
            hint_index, hint_term = log.last_index + 1, 0
        else:
            hint_term = log.term(m.prev_index) or 0
            hint_index = log.first_index_of_term(hint_term, m.prev_index)
        self._send(
            AppendResp(
                self._id,
                m.frm,
                self._term,
                index=m.prev_index,
                reject=True,
                hint_index=hint_index,
                hint_term=hint_term,
            )
        )

    def _on_heartbeat(self, m: Heartbeat) -> None:
        # The leader sends min(its commit, our match), so every index up to it matches its log.
        commit = min(m.commit, self.log.last_index)
        if commit > self.log.committed:
            self.log.commit_to(commit)
        # Standby: answered (the leader then sends the log) but without the read round's
        # context, so an empty replica never confirms a leadership for a read.
        ctx = 0 if self.standby else m.ctx
        self._send(HeartbeatResp(self._id, m.frm, self._term, ctx=ctx))

    def _on_snapshot(self, m: InstallSnapshot) -> None:
        meta = m.meta
        log = self.log
        if meta.index <= log.committed:
            self._count("snapshot_stale")
            self._send(InstallSnapshotResp(self._id, m.frm, self._term, index=log.committed))
            return
        if log.match_term(meta.index, meta.term):
            # We hold the snapshot's last entry: keep the log, only learn the commit (§7).
            self._snapshot_rx = None
            log.commit_to(meta.index)
            self._send(InstallSnapshotResp(self._id, m.frm, self._term, index=log.committed))
            return
        rx = self._snapshot_rx
        if m.offset == 0:
            rx = self._snapshot_rx = (meta, m.size, bytearray())
        same = rx is not None and rx[0] == meta and rx[1] == m.size
        if rx is None or not same or m.offset != len(rx[2]):
            # Not the chunk that continues our buffer (lost, duplicated or reordered, or
            # another snapshot): say what we hold of this one, so the leader resends from there.
            held = len(rx[2]) if rx is not None and same else 0
            self._count("snapshot_chunk_out_of_order")
            self._send(InstallSnapshotResp(
                self._id, m.frm, self._term, index=meta.index, done=False, received=held
            ))
            return
        buffer = rx[2]
        buffer += m.data
        if not m.done:
            self._send(InstallSnapshotResp(
                self._id, m.frm, self._term, index=meta.index, done=False, received=len(buffer)
            ))
            return
        self._snapshot_rx = None
        image = bytes(buffer)
        if self._snapshot_check is not None and not self._snapshot_check(image):
            # A correct leader never sends an image its own state machine could not have made:
            # keep everything as it is and let the leader retry (it starts again at offset 0).
            self._count("snapshot_image_invalid")
            self._send(InstallSnapshotResp(self._id, m.frm, self._term, index=meta.index,
                                           done=False, received=0))
            return
        snap = Snapshot(meta, image)
        log.restore(snap)
        self._confs = [(meta.index, meta.conf)]
        self.trk.apply_conf(meta.conf, log.last_index + 1)
        self._send(InstallSnapshotResp(self._id, m.frm, self._term, index=meta.index))

    # === leader side of replication ========================================================

    def _append_local(self, kind: int, data: bytes) -> tuple[int, int]:
        entry = Entry(self._term, self.log.last_index + 1, kind, data)
        self.log.append(entry)
        self._need_bcast = True
        return entry.index, entry.term

    def _send(self, message: Any) -> None:
        self._msgs.append(message)

    def _send_append(self, to: str, send_if_empty: bool) -> bool:
        """Send the next batch to ``to`` if flow control allows; returns whether sent."""
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        if pr.next > log.last_index + 1:
            pr.next = log.last_index + 1
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            return self._send_snapshot(to)
        if pr.next <= log.last_index:
            entries = log.slice(
                pr.next,
                log.last_index + 1,
                self.cfg.max_entries_per_msg,
                self.cfg.max_bytes_per_msg,
            )
        else:
            entries = []
        if not entries and not send_if_empty:
            return False
        self._send(
            Append(self._id, to, self._term, prev, prev_term, tuple(entries), log.committed)
        )
        if entries:
            pr.sent_entries(entries[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: str) -> bool:
        pr = self.trk.progress[to]
        snap = self.log.snapshot
        if snap is None:
            raise InvariantViolation(
                f"entries before {self.log.first_index} are compacted but no snapshot is held"
            )
        pr.become_snapshot(snap.meta.index)
        self._send_snapshot_chunk(to, 0)
        return True

    def _send_snapshot_chunk(self, to: str, offset: int) -> None:
        snap = self.log.snapshot
        assert snap is not None
        data = snap.data
        end = min(offset + self.cfg.snapshot_chunk_bytes, len(data))
        self._send(InstallSnapshot(
            self._id, to, self._term, snap.meta, offset, data[offset:end], len(data),
            end == len(data),
        ))

    def _bcast_append(self) -> None:
        # Only new entries leave here. A commit is not announced by a round of its own: the
        # next Append or heartbeat carries it (§5.3), so a write costs Append + AppendResp
        # per follower.
        self._need_bcast = False
        for node in self.trk.progress:
            if node == self._id:
                continue
            while self._send_append(node, send_if_empty=False):
                pass

    def _bcast_heartbeat(self) -> None:
        ctx = self.reads.next_round()
        committed = self.log.committed
        for node, pr in self.trk.progress.items():
            if node == self._id:
                continue
            commit = pr.match if pr.match < committed else committed
            self._send(Heartbeat(self._id, node, self._term, commit, ctx))
        self._release_reads()

    def _release_reads(self) -> None:
        for request_id, index in self.reads.release(self.trk.voters, self._id):
            self._read_states.append(ReadState(request_id, index))

    def _maybe_commit(self) -> bool:
        log = self.log
        index = self.trk.committed_index()
        if index > log.last_index:
            index = log.last_index
        # §5.4.2: only an entry of the current term is committed by counting replicas.
        if index > log.committed and log.term(index) == self._term:
            log.commit_to(index)
            if self.reads.waiting:
                self.reads.admit_waiting(log.committed)
            return True
        return False

    def _on_append_resp(self, m: AppendResp, pr: Any) -> None:
        log = self.log
        if m.reject:
            if m.index == 0 and m.hint_index == 0:
                self._count("stale_reject")  # a deposed-leader notice at our own term
                return
            if m.hint_term > 0:
                found = log.last_index_of_term(m.hint_term)
                next_hint = found + 1 if found is not None else m.hint_index
            else:
                next_hint = m.hint_index
            if pr.maybe_decrease_to(m.index, next_hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm, send_if_empty=True)
            else:
                self._count("stale_reject")
            return
        updated = pr.maybe_update(m.index)
        # A probe answered at the known match also proves where the logs agree.
        if updated or (pr.state is ProgressState.PROBE and pr.match == m.index):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                pr.become_probe()
                pr.become_replicate()
            elif pr.state is ProgressState.REPLICATE:
                pr.inflights.free_le(m.index)
            self._maybe_commit()
            while self._send_append(m.frm, send_if_empty=False):
                pass
            if m.frm == self._lead_transferee and pr.match == log.last_index:
                self._send(TimeoutNow(self._id, m.frm, self._term))

    def _on_heartbeat_resp(self, m: HeartbeatResp, pr: Any) -> None:
        if m.ctx:
            self.reads.ack(m.frm, m.ctx)
            self._release_reads()
        log = self.log
        if pr.state is ProgressState.PROBE:
            pr.probe_sent = False
            if pr.match < log.last_index:
                self._send_append(m.frm, send_if_empty=True)
        elif pr.state is ProgressState.REPLICATE and pr.match < log.last_index:
            # Count answers that bring no append progress: appends may have been lost.
            pr.stall += 1
            if pr.stall >= limits.RAFT_REPLICATE_STALL_HEARTBEATS:
                pr.become_probe()
                self._send_append(m.frm, send_if_empty=True)
            elif pr.inflights.full():
                pr.inflights.free_first()
                self._send_append(m.frm, send_if_empty=False)
        if m.frm == self._lead_transferee and pr.match == log.last_index:
            self._send(TimeoutNow(self._id, m.frm, self._term))

    def _on_snapshot_resp(self, m: InstallSnapshotResp, pr: Any) -> None:
        if not m.done:
            # A chunk acknowledgement: send the chunk that starts where the follower's buffer
            # ends, if that follower is still being sent the snapshot it talks about.
            snap = self.log.snapshot
            if (
                pr.state is ProgressState.SNAPSHOT
                and snap is not None
                and m.index == snap.meta.index == pr.pending_snapshot
                and m.received < len(snap.data)
            ):
                pr.snapshot_elapsed = 0  # the transfer is alive
                self._send_snapshot_chunk(m.frm, m.received)
            else:
                self._count("snapshot_ack_unexpected")  # late, or for a transfer we never made
            return
        if m.reject:
            pr.become_probe()
        else:
            pr.maybe_update(m.index)
            if pr.state is ProgressState.SNAPSHOT:
                pr.become_probe()
        self._maybe_commit()
        self._send_append(m.frm, send_if_empty=True)

    # === membership ========================================================================

    def _apply_conf_entry(self, entry: Entry) -> None:
        conf = self._conf_after(entry)
        if conf is None:
            # Every replica applies the same bytes to the same configuration (log matching),
            # so every replica ignores this entry alike: the group stays in agreement.
            self._count("conf_change_ignored")
            return
        self.trk.apply_conf(conf, self.log.last_index + 1)
        self._confs.append((entry.index, conf))

    def _conf_after(self, entry: Entry) -> ConfState | None:
        """The configuration after applying ``entry``, or None when it cannot apply: it does
        not decode, names no known change or no node, or would leave no voter."""
        try:
            change = decode_conf_change(entry.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if not valid_change(change):
            return None
        conf = apply_change(self.trk.conf_state(), change)
        return conf if conf.voters else None

    def _after_conf_applied(self) -> None:
        if self._role is Role.LEADER:
            if not self.trk.is_voter(self._id):
                self._step_down_removed()
                return
            if self._lead_transferee is not None and not self.trk.is_voter(
                self._lead_transferee
            ):
                self._lead_transferee = None
            self._maybe_commit()
            self._need_bcast = True
        elif self._role in (Role.CANDIDATE, Role.PRE_CANDIDATE) and not self._promotable():
            self._become_follower(self._term, None)

    def _step_down_removed(self) -> None:
        # Hand over quickly: the most up-to-date remaining voter campaigns at once.
        best = None
        for node in sorted(self.trk.voter_ids()):
            pr = self.trk.progress.get(node)
            if pr is not None and pr.match == self.log.last_index:
                best = node
                break
        if best is not None:
            self._send(TimeoutNow(self._id, best, self._term))
        self._become_follower(self._term, None)

    # === Ready =============================================================================

    def _check_not_in_ready(self) -> None:
        if self._in_ready is not None:
            raise ProtocolMisuse("the host must call advance() before using the core again")

    def _check_can_propose(self) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._lead_transferee is not None:
            raise ProposalDropped(
                f"leadership is being transferred to {self._lead_transferee}; retry there"
            )

    def _count(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def has_ready(self) -> bool:
        if self._in_ready is not None:
            return False
        if self._role is Role.LEADER and (
            self._need_bcast or self.reads.need_round
        ):
            return True
        log = self.log
        return bool(
            self._msgs
            or self._read_states
            or self._failed_reads
            or log.stable < log.last_index
            or log.pending_snapshot is not None
            or log.committed > log.applied
            or self._prev_hs != (self._term, self._vote, log.committed)
        )

    def ready(self) -> Ready:
        self._check_not_in_ready()
        if self._role is Role.LEADER:
            if self._need_bcast:
                self._bcast_append()
            if self.reads.need_round:
                self._bcast_heartbeat()
        log = self.log
        prev_term, prev_vote, prev_commit = self._prev_hs
        vote_changed = prev_term != self._term or prev_vote != self._vote
        hard_state: HardState | None = None
        if vote_changed or prev_commit != log.committed:
            if vote_changed:
                self._record = encode_hard_state(RaftHardState(self._term, self._vote))
            hard_state = HardState(log.committed, self._record)
        snapshot = log.pending_snapshot
        entries = log.unstable_entries()
        committed = tuple(log.committed_unapplied())
        read_states: tuple[ReadState, ...] = ()
        if self._read_states:
            limit = log.committed
            ready_reads = [r for r in self._read_states if r.index <= limit]
            if len(ready_reads) == len(self._read_states):
                self._read_states = []
            else:
                self._read_states = [r for r in self._read_states if r.index > limit]
            read_states = tuple(ready_reads)
        failed_reads = tuple(self._failed_reads)
        self._failed_reads.clear()
        must_sync = (
            snapshot is not None
            or bool(entries)
            or vote_changed
        )
        early: tuple[Any, ...] = ()
        if self._role is Role.LEADER:
            # A leader's appends, heartbeats and snapshots may leave before its own fsync
            # (thesis §10.2.1): its own match index only moves in advance(), after persisting.
            early = tuple(m for m in self._msgs if type(m) in _LEADER_MESSAGES)
            msgs = tuple(m for m in self._msgs if type(m) not in _LEADER_MESSAGES)
        else:
            msgs = tuple(self._msgs)
        self._msgs = []
        rd = Ready(
            hard_state=hard_state,
            snapshot=snapshot,
            entries=entries,
            messages=msgs,
            early_messages=early,
            committed_entries=committed,
            read_states=read_states,
            failed_reads=failed_reads,
            must_sync=must_sync,
        )
        self._in_ready = rd
        return rd

    def advance(self, ready: Ready) -> None:
        if ready is not self._in_ready:
            raise ProtocolMisuse("advance() must be given the Ready returned by ready()")
        self._in_ready = None
        log = self.log
        if ready.hard_state is not None:
            self._prev_hs = (self._term, self._vote, ready.hard_state.commit)
        if ready.snapshot is not None:
            log.snapshot_persisted(ready.snapshot)
        if ready.entries:
            last = ready.entries[-1]
            log.stable_to(last.index, last.term)
        if ready.committed_entries:
            conf_changed = False
            for entry in ready.committed_entries:
                if entry.kind == EntryKind.CONF_CHANGE:
                    self._apply_conf_entry(entry)
                    conf_changed = True
            log.applied_to(ready.committed_entries[-1].index)
            if conf_changed:
                self._after_conf_applied()
        if self._role is Role.LEADER:
            me = self.trk.progress.get(self._id)
            if me is not None and me.maybe_update(log.stable):
                self._maybe_commit()


def build(
    spec: CoreSpec,
    persisted: PersistedState | None,
    rng: RandomSource,
    *,
    applied: int | None = None,
    snapshot_check: Callable[[bytes], bool] | None = None,
) -> Raft:
    """A Raft replica from a protocol-neutral :class:`CoreSpec` (the registry's factory).

    The known bug ``no-term-check`` grants every vote request of the current term and switches
    off pre-vote and check-quorum stickiness, so a node that was cut off wins on its return.
    """
    no_term_check = "no-term-check" in spec.bugs
    config = RaftConfig(
        node_id=spec.node_id,
        election_timeout_ticks=spec.election_timeout_ticks,
        heartbeat_ticks=spec.heartbeat_ticks,
        max_inflight_msgs=spec.max_inflight_msgs,
        max_entries_per_msg=spec.max_entries_per_msg,
        max_bytes_per_msg=spec.max_bytes_per_msg,
        snapshot_chunk_bytes=spec.snapshot_chunk_bytes,
        pre_vote=spec.pre_vote and not no_term_check,
        check_quorum=spec.check_quorum and not no_term_check,
        unsafe_grant_any_vote=no_term_check,
    )
    return Raft(config, persisted, rng, applied=applied, snapshot_check=snapshot_check)


def raft_hard_state(term: int, vote: str | None, commit: int) -> HardState:
    """The hard state a Raft replica persists for ``(term, vote, commit)``."""
    return HardState(commit, encode_hard_state(RaftHardState(term, vote)))
