"""The Multi-Paxos consensus core: a sans-IO state machine.

Theory of operation
-------------------
Every replica is an acceptor and a learner; a voter may also be a proposer. One proposer at a
time is the *leader* (Lamport's "distinguished proposer", PMS §3): it runs phase 1 once for every
slot from its first unchosen one, then phase 2 for each new value. Roles and transitions (all in
``_become_*``)::

    FOLLOWER --timeout--> PRE_CANDIDATE --probe quorum--> CANDIDATE --promises from a quorum--> LEADER
       ^   (TimeoutNow: straight to CANDIDATE)    (phase 1 running)                          |
       +------ a higher ballot seen (Reject, Accept, Prepare) / no quorum heard / removed ---+

A LEARNER is a follower that is not a voter: it accepts (so it holds the log) but is never
counted and never campaigns.

Ballots. A ballot is ``(round, node)``. An acceptor's promise is one ballot; it takes a
Prepare/Accept of ballot ``(r, n)`` when ``r`` is above its promised round, or when ``(r, n)``
*is* its promise. A ballot of the promised round from another node is refused, so each acceptor
gives each round to one node only and at most one node ever completes phase 1 in a round: the
round alone names a leadership (``term``/``NodeView.term``). A candidate picks a round above
every round it has promised or seen and promises it to itself before asking (persisted: the
Prepares leave only after the fsync, so a restart never reuses a round).

Entry identity (the rule the host's ``propose() -> (index, term)`` contract relies on): an
entry's ``term`` is the round of the ballot under which its value was *first* proposed, and it
never changes afterwards: when a leader re-proposes a value accepted under an older ballot it
re-sends the very same Entry (same term, kind, data) under its own ballot; only the *accepted
ballot* stored next to it changes. The NOOPs that fill holes and every fresh proposal of the
leader of round ``r`` carry term ``r``. Since only one node ever leads round ``r`` and it fills
each slot once, ``(index, term)`` names one value, on every replica, forever.

Probe (Raft thesis §9.6's pre-vote, applied to phase 1). A node whose election timeout fires
first asks the voters ``Prepare(probe=True)``: "would you promise round ``r``?" An acceptor says
yes when ``r`` is above its promise, it has not heard a leader within an election timeout and
the candidate knows at least its chosen prefix; nobody's promise changes. Only with a quorum of
yeses does the node pick its round and run phase 1. Without the probe, a node cut off from the
others would raise its own promise again and again and, once back, refuse the live leader's
lower ballot (Reject), deposing it.

Phase 1 (PMS §2.2, §3; PMMC's "scout"). ``Prepare(round, start)`` with ``start`` the
candidate's first unchosen slot. An acceptor refuses a candidate that knows less of the chosen
prefix than itself (``commit`` lower than its own: the candidate could not re-propose slots the
acceptor only holds as chosen), else it promises and answers with every slot at or above
``start`` it accepted, with the accepted ballot. The candidate counts only promises echoing its
current round (a late promise for an older round proves nothing about this ballot). With a
quorum it becomes leader: for each slot from ``start`` to the highest one reported it
re-proposes the value of the highest accepted ballot (PMS §2.2, P2c), fills the slots nobody
reported (holes) with NOOPs (PMS §3), and appends one NOOP of its own round, after which it
serves reads and membership changes.

Phase 2 (PMS §2.2). The leader accepts its own proposals (persisted before it counts itself)
and streams ``Accept`` batches of consecutive slots to every member, pipelined, at most
``max_inflight_msgs`` unanswered per peer, batched up to ``max_entries_per_msg`` /
``max_bytes_per_msg``. An acceptor takes each slot independently (holes are possible when a
batch is lost), persists, and answers ``Accepted(match)`` where ``match`` is its contiguous
prefix that is chosen or accepted in this ballot. Slot ``i`` is chosen once a quorum's match
reaches it (the quorum arithmetic of :mod:`exapyte.protocol.quorum`). The leader is the
distinguished learner of PMS §2.3; it tells the others what was chosen in the chosen prefix
that every Accept and Heartbeat carries, never in a message of its own, so an unbatched write
costs an Accept and an Accepted per acceptor, 2(N-1) messages, and an acceptor learns a choice
with the next Accept or Heartbeat. An acceptor learns a slot chosen when the slot is within
that prefix and the acceptor accepted the slot in the sender's ballot (only then is its value
the leader's, hence the chosen one). A lagging acceptor's gap is visible in its ``match``: the leader
rewinds that peer to ``match + 1`` (at once for a gap reported by a batch sent after the last
rewind, or after ``RAFT_REPLICATE_STALL_HEARTBEATS`` heartbeats without progress) and re-sends,
in its ballot, the slots it lacks (chosen ones included); a peer behind the leader's compaction
point gets the snapshot in chunks of ``snapshot_chunk_bytes`` instead.

What is persisted, and when. The chosen prefix is the stored log (``Ready.entries``; an entry
reaches storage only once chosen, so everything stored is committed and ``commit`` is never lost
with it). ``HardState.record`` (a :class:`PaxosRecord`) holds the promised ballot and every slot
accepted above the chosen prefix with its accepted ballot. A Promise, an Accepted, a
HeartbeatAck and a Reject leave in ``Ready.messages``, i.e. after the fsync of the record they
depend on; the leader's Accept/Heartbeat/Snapshot/TimeoutNow may leave early. The accepted
region is bounded (``ACCEPT_WINDOW_SLOTS`` slots, ``ACCEPT_WINDOW_BYTES`` bytes above the chosen
prefix): a leader refuses proposals beyond it, an acceptor ignores slots beyond it.

Stable leader (PMMC §4, like Raft's check-quorum). The leader sends a Heartbeat every
``heartbeat_ticks``; a replica that heard the leader of its promised ballot within an election
timeout ignores a competing Prepare (``prepare_in_lease``) unless it comes from a transfer; a
leader that has not heard from a quorum within an election timeout steps down. Election timeouts
are drawn from ``[T, 2T)`` with the injected rng.

Reads: ReadIndex (:mod:`exapyte.protocol.readindex`): once the leader's own NOOP is chosen a
read gets the commit point as its index and is released when a quorum acknowledged a heartbeat
round sent after it arrived (an acceptor acknowledges only its promised ballot, so no higher
ballot can have chosen anything before the read arrived).

Membership: CONF_CHANGE entries (single-server steps, learners) take effect when applied, in
slot order, one at a time, and not before the leader's own NOOP is applied; a founding member
bootstraps committed CONF_CHANGE entries ``1..n`` of term 1, identical on every founder, as
Raft does. A leader that applies its own removal steps down (TimeoutNow to an up-to-date voter).

Standby: an acceptor with nothing chosen and no snapshot (never a founder) may be a voter that
lost its promises; it promises nothing (a rejecting Promise, ``prepare_standby``) and confirms no
read round until a leader's Accepts or snapshot give it a chosen prefix. The host keeps the
promised ballot of a replica it drops (:meth:`MultiPaxos.tombstone`) for a re-created one.

Leadership transfer: the leader stops taking proposals; once every slot it holds is chosen and
accepted by the target, it sends TimeoutNow (carrying the commit point); the target starts phase
1 at once with ``transfer`` set, which overrides stickiness. Abandoned after an election timeout.

Defensive input handling: bad remote input is dropped, changes nothing, and is counted in
``status().dropped`` by cause: ``unknown_message``, ``misrouted``, ``bad_sender``, ``malformed``
(a number outside ``0..RAFT_TERM_INDEX_MAX``, an impossible field combination),
``malformed_entries`` (slots not consecutive, a term above the ballot, an unknown kind, a
CONF_CHANGE that does not decode), ``malformed_accepted`` (a promise's slots out of order, below
``start`` or of a ballot above the promise's), ``malformed_snapshot``, ``snapshot_image_invalid``;
``stale_ballot`` (a request below our promise: answered with Reject), ``prepare_in_lease``,
``stale_promise`` / ``promise_not_sent`` / ``promise_other_start``, ``stale_round`` (an answer
for another ballot of ours), ``not_asked`` (an answer from a node we send no requests to, or to a
role that sends none), ``unknown_peer``, ``accepted_beyond_log`` (a match or slot this leader
never sent), ``ctx_not_sent``, ``reject_not_higher``, ``accept_conflict`` (a slot re-accepted in
the same ballot with another value), ``accept_beyond_window``, ``timeout_now_not_from_leader``,
``timeout_now_not_voter``, ``snapshot_stale``, ``snapshot_chunk_out_of_order``,
``snapshot_ack_unexpected``. Committed content never raises: a CONF_CHANGE that cannot apply is
applied as no change on every replica alike (``conf_change_ignored``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import msgspec

from exapyte import limits
from exapyte.errors import NotLeader, ProposalDropped, ProtocolMisuse
from exapyte.protocol.core import ConsensusCore, RandomSource, misaddressed
from exapyte.protocol.invariants import NodeView
from exapyte.protocol.log import ENTRY_OVERHEAD_BYTES, ReplicatedLog
from exapyte.protocol.membership import (
    apply_change,
    check_proposal,
    conf_at,
    sane_conf,
    valid_change,
)
from exapyte.protocol.membership import compact as compact_log
from exapyte.protocol.multipaxos.messages import (
    PAXOS_MESSAGE_TYPES,
    Accept,
    Accepted,
    AcceptedSlot,
    Heartbeat,
    HeartbeatAck,
    Prepare,
    Promise,
    Reject,
    SnapshotAck,
    TimeoutNow,
)
from exapyte.protocol.multipaxos.messages import (
    Snapshot as SnapshotMsg,
)
from exapyte.protocol.quorum import JointConfig, VoteResult
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

ACCEPT_WINDOW_SLOTS = 8192  # slots an acceptor holds accepted above its chosen prefix
ACCEPT_WINDOW_BYTES = limits.FRAME_BYTES_MAX // 2  # ... and their bytes: a Promise fits a frame

_NUMBER_MAX = limits.RAFT_TERM_INDEX_MAX
_ENTRY_KINDS = frozenset(int(k) for k in EntryKind)
_HANDLED = frozenset(PAXOS_MESSAGE_TYPES)
_LEADER_MESSAGES = (Accept, Heartbeat, SnapshotMsg)

Ballot = tuple[int, str]


class PaxosRecord(msgspec.Struct, frozen=True, array_like=True):
    """What a Multi-Paxos replica keeps in ``HardState.record``: its promise, and the slots it
    accepted above its chosen prefix (in slot order)."""

    promised_round: int = 0
    promised_node: str = ""
    accepted: tuple[AcceptedSlot, ...] = ()


_RECORD_ENCODER = msgspec.msgpack.Encoder()
_RECORD_DECODER = msgspec.msgpack.Decoder(PaxosRecord)


def encode_record(record: PaxosRecord) -> bytes:
    return _RECORD_ENCODER.encode(record)


def decode_record(data: bytes) -> PaxosRecord:
    """Inverse of :func:`encode_record`; ``b""`` is a node that never stored one. Raises
    ProtocolMisuse for a record that is not Multi-Paxos's (storage of another protocol)."""
    if not data:
        return PaxosRecord()
    try:
        return _RECORD_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolMisuse(f"the stored hard state is not a Multi-Paxos record: {exc}") from exc


def validate_spec(spec: CoreSpec) -> None:
    def need(ok: bool, field: str, rule: str) -> None:
        if not ok:
            raise ProtocolMisuse(f"CoreSpec.{field}={getattr(spec, field)!r} is invalid: {rule}")

    need(isinstance(spec.node_id, str) and bool(spec.node_id), "node_id", "non-empty string")
    need(spec.heartbeat_ticks >= 1, "heartbeat_ticks", "must be >= 1")
    need(
        spec.election_timeout_ticks > spec.heartbeat_ticks,
        "election_timeout_ticks",
        f"must be > heartbeat_ticks ({spec.heartbeat_ticks})",
    )
    need(spec.max_inflight_msgs >= 1, "max_inflight_msgs", "must be >= 1")
    need(spec.max_entries_per_msg >= 1, "max_entries_per_msg", "must be >= 1")
    need(spec.max_bytes_per_msg >= 1, "max_bytes_per_msg", "must be >= 1")
    need(spec.snapshot_chunk_bytes >= 1, "snapshot_chunk_bytes", "must be >= 1")


# --- validation of remote input ------------------------------------------------------------------


def _in_range(*values: int) -> bool:
    for value in values:
        if not 0 <= value <= _NUMBER_MAX:
            return False
    return True


def _valid_entry(entry: Entry, max_term: int) -> bool:
    if not _in_range(entry.index, entry.term) or entry.index == 0 or entry.term > max_term:
        return False
    if entry.kind not in _ENTRY_KINDS:
        return False
    if entry.kind == EntryKind.CONF_CHANGE:
        try:
            change = decode_conf_change(entry.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return valid_change(change)
    return True


def malformed(m: Any) -> str | None:
    """Why a Multi-Paxos message cannot have been sent by a correct peer, or None."""
    kind = type(m)
    if not _in_range(m.round):
        return "malformed"
    if kind is Prepare:
        if m.round == 0 or not _in_range(m.start, m.commit) or m.start != m.commit + 1:
            return "malformed"
        return None
    if kind is Promise:
        if not _in_range(m.start, m.commit) or m.start == 0 or (m.probe and m.accepted):
            return "malformed"
        previous = m.start - 1
        for slot in m.accepted:
            if not isinstance(slot.node, str) or not slot.node or not _in_range(slot.round):
                return "malformed_accepted"
            if slot.round == 0 or slot.round > m.round or slot.entry.index <= previous:
                return "malformed_accepted"
            if not _valid_entry(slot.entry, slot.round):
                return "malformed_accepted"
            previous = slot.entry.index
        return None
    if kind is Accept:
        if m.round == 0 or not _in_range(m.commit):
            return "malformed"
        expected = m.entries[0].index if m.entries else 0
        for entry in m.entries:
            if entry.index != expected or not _valid_entry(entry, m.round):
                return "malformed_entries"
            expected += 1
        return None
    if kind is Accepted:
        if not _in_range(m.match, m.lo, m.hi) or m.lo > m.hi or (m.lo == 0) != (m.hi == 0):
            return "malformed"
        return None
    if kind is Heartbeat:
        return None if m.round > 0 and _in_range(m.commit, m.ctx) else "malformed"
    if kind is HeartbeatAck:
        return None if _in_range(m.match, m.ctx) else "malformed"
    if kind is Reject:
        if not _in_range(m.promised_round) or m.promised_round < m.round:
            return "malformed"
        if not isinstance(m.promised_node, str) or not m.promised_node:
            return "malformed"
        return None
    if kind is SnapshotMsg:
        meta = m.meta
        if m.round == 0 or not _in_range(meta.index, meta.term, m.offset):
            return "malformed"
        if meta.index == 0 or meta.term == 0 or meta.term > m.round or not sane_conf(meta.conf):
            return "malformed_snapshot"
        end = m.offset + len(m.data)
        if not 1 <= m.size <= limits.RAFT_SNAPSHOT_BYTES_MAX or end > m.size:
            return "malformed_snapshot"
        if m.done != (end == m.size):
            return "malformed_snapshot"
        return None
    if kind is SnapshotAck:
        return None if _in_range(m.index, m.match, m.received) else "malformed"
    if kind is TimeoutNow:
        return None if m.round > 0 and _in_range(m.commit) else "malformed"
    return None


def _size(entry: Entry) -> int:
    return len(entry.data) + ENTRY_OVERHEAD_BYTES


class _LeaderLog(Sequence[Entry]):
    """The chosen log followed by the leader's own ballot stream, without copying either."""

    __slots__ = ("_head", "_tail")

    def __init__(self, head: Sequence[Entry], tail: list[Entry]) -> None:
        self._head = head
        self._tail = tail

    def __len__(self) -> int:
        return len(self._head) + len(self._tail)

    @overload
    def __getitem__(self, i: int) -> Entry: ...

    @overload
    def __getitem__(self, i: slice) -> list[Entry]: ...

    def __getitem__(self, i: int | slice) -> Entry | list[Entry]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self._head)
        if i < 0:
            i += len(self)
        if i < n:
            return self._head[i]
        return self._tail[i - n]

    def __iter__(self) -> Iterator[Entry]:
        yield from self._head
        yield from self._tail


class _Peer:
    """What the leader knows of one member (voter or learner)."""

    __slots__ = (
        "match",
        "next",
        "inflight",
        "rewind_floor",
        "stall",
        "recent_active",
        "snapshot_index",
        "snapshot_elapsed",
        "is_learner",
    )

    def __init__(self, next_slot: int, is_learner: bool) -> None:
        self.match = 0  # contiguous prefix chosen or accepted there in our ballot
        self.next = next_slot
        self.inflight: deque[int] = deque()  # last slot of each unanswered Accept
        self.rewind_floor = 0  # gap reports from batches starting below this are old news
        self.stall = 0
        self.recent_active = False
        self.snapshot_index = 0  # a snapshot transfer in progress (0: none)
        self.snapshot_elapsed = 0
        self.is_learner = is_learner

    def rewind(self) -> None:
        self.rewind_floor = self.next
        self.next = self.match + 1
        self.inflight.clear()
        self.stall = 0


class MultiPaxos(ConsensusCore):
    """One Multi-Paxos replica. See the module docstring for the theory of operation."""

    # Which of a leader's messages may leave before its fsync (they promise nothing about the
    # sender's durable state); everything else waits for the persist step.
    EARLY_MESSAGE_TYPES: tuple[type, ...] = (Accept, Heartbeat, SnapshotMsg, TimeoutNow)

    def __init__(
        self,
        spec: CoreSpec,
        persisted: PersistedState | None,
        rng: RandomSource,
        *,
        applied: int | None = None,
        snapshot_check: Callable[[bytes], bool] | None = None,
    ) -> None:
        validate_spec(spec)
        self.spec = spec
        self._id = spec.node_id
        self._rng = rng
        self._snapshot_check = snapshot_check
        p = persisted if persisted is not None else PersistedState()
        record = decode_record(p.hard_state.record)
        bootstrap = (
            not p.hard_state.record and p.snapshot is None and not p.entries and bool(p.conf.voters)
        )
        if bootstrap:
            if self._id not in p.conf.voters and self._id not in p.conf.learners:
                raise ProtocolMisuse(
                    f"bootstrap configuration {p.conf} does not contain node {self._id!r}"
                )
            self.log = ReplicatedLog()
            changes = [ConfChange(ConfChangeKind.ADD_VOTER, v) for v in sorted(p.conf.voters)]
            changes += [ConfChange(ConfChangeKind.ADD_LEARNER, n) for n in sorted(p.conf.learners)]
            self.log.truncate_and_append(
                [
                    Entry(1, i, EntryKind.CONF_CHANGE, encode_conf_change(c))
                    for i, c in enumerate(changes, start=1)
                ]
            )
            self.log.committed = len(changes)
        else:
            # Everything stored is chosen: the stored log *is* the chosen prefix.
            self.log = ReplicatedLog(p.snapshot, p.entries, _NUMBER_MAX, applied)
        self._promised: Ballot = (record.promised_round, record.promised_node)
        self._acc: dict[int, AcceptedSlot] = {}
        self._acc_bytes = 0
        for slot in record.accepted:
            if slot.entry.index > self.log.last_index:
                self._acc[slot.entry.index] = slot
                self._acc_bytes += _size(slot.entry)
        self._record_bytes = p.hard_state.record
        self._dirty = False
        self._prev_commit = p.hard_state.commit if not bootstrap else 0
        self._max_round_seen = record.promised_round

        self._dropped: dict[str, int] = {}
        self._role = Role.FOLLOWER
        self._last = 0  # last slot of this leader's ballot stream
        base_conf = p.snapshot.meta.conf if p.snapshot is not None else ConfState()
        self._conf = base_conf
        self._voters = JointConfig(base_conf.voters)
        self._confs: list[tuple[int, ConfState]] = [(self.log.offset, base_conf)]
        for index in range(self.log.offset + 1, self.log.applied + 1):
            entry = self.log.entry(index)
            if entry.kind == EntryKind.CONF_CHANGE:
                self._apply_conf_entry(entry)

        self.reads = ReadIndexTracker()
        self._read_timeout_ticks = spec.election_timeout_ticks * limits.RAFT_READ_TIMEOUT_ELECTIONS
        self._msgs: list[Any] = []
        self._read_states: list[ReadState] = []
        self._failed_reads: list[bytes] = []
        self._in_ready: Ready | None = None
        self._ready_own: tuple[Ballot, int] | None = None
        self._role = Role.FOLLOWER
        self._leader: str | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = spec.election_timeout_ticks
        # candidate
        self._votes: dict[str, bool] = {}
        self._merged: dict[int, AcceptedSlot] = {}
        self._prepare_start = 0
        self._probe_round = 0
        # leader
        self._peers: dict[str, _Peer] = {}
        self._last = 0  # last slot of this leader's ballot stream
        self._own_stable = 0  # our own acceptances persisted up to this slot
        self._read_floor = 0  # this leader's NOOP: reads and conf changes wait for it
        self._pending_conf_index = 0
        self._lead_transferee: str | None = None
        self._transfer_elapsed = 0
        self._need_bcast = False
        self._snapshot_rx: tuple[SnapshotMeta, int, bytearray] | None = None
        self._become_follower(None)

    # === properties ========================================================================

    @property
    def node_id(self) -> str:
        return self._id

    @property
    def leader(self) -> str | None:
        return self._leader

    @property
    def term(self) -> int:
        return self._promised[0]

    @property
    def promised(self) -> Ballot:
        return self._promised

    @property
    def role(self) -> Role:
        if self._role is Role.FOLLOWER and self._id in self._conf.learners:
            return Role.LEARNER
        return self._role

    @property
    def conf(self) -> ConfState:
        return self._conf

    @property
    def accepted(self) -> dict[int, AcceptedSlot]:
        """Slots accepted above the chosen prefix (a copy)."""
        return dict(self._acc)

    @property
    def lead_transferee(self) -> str | None:
        return self._lead_transferee

    def status(self) -> Status:
        return Status(
            node_id=self._id,
            role=self.role.value,
            term=self._promised[0],
            leader=self._leader,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=max(self.log.last_index, self._last if self._role is Role.LEADER else 0),
            first_index=self.log.first_index,
            conf=self._conf,
            dropped=dict(self._dropped),
            lead_transferee=self._lead_transferee,
        )

    def leadership_rounds(self) -> tuple[int, int]:
        return self.reads.round, self.reads.confirmed(self._voters, self._id)

    def observe(self) -> NodeView:
        log = self.log
        entries: Sequence[Entry] = log.entries
        if self._role is Role.LEADER and self._last > log.last_index:
            # The leader shows the slots of its ballot too: after phase 1 they hold every value
            # chosen by an earlier ballot (checked by leader completeness).
            tail = [self._acc[s].entry for s in range(log.last_index + 1, self._last + 1)]
            entries = _LeaderLog(log.entries, tail)
        return NodeView(
            node_id=self._id,
            term=self._promised[0],
            is_leader=self._role is Role.LEADER,
            commit=log.committed,
            offset=log.offset,
            offset_term=log.offset_term,
            entries=entries,
            log_matching=False,
        )

    @property
    def standby(self) -> bool:
        # Nothing chosen and no snapshot (a founder holds its founding configuration as slots
        # 1..n): an empty acceptor, which may have promised before it lost its state.
        return self.log.last_index == 0

    def tombstone(self) -> HardState:
        promised = PaxosRecord(self._promised[0], self._promised[1])
        return HardState(record=encode_record(promised))

    def is_from_leader(self, message: object) -> bool:
        if type(message) not in _LEADER_MESSAGES:
            return False
        m: Any = message
        return isinstance(m.round, int) and isinstance(m.frm, str) and self._takes((m.round, m.frm))

    def conf_at(self, index: int) -> ConfState:
        """The applied configuration as of ``index`` (``index`` >= the snapshot index)."""
        return conf_at(self._confs, index)

    # === ballots ===========================================================================

    def _takes(self, ballot: Ballot) -> bool:
        """Whether a request of ``ballot`` may be taken: a higher round, or our promise."""
        return ballot[0] > self._promised[0] or ballot == self._promised

    def _promise(self, ballot: Ballot) -> None:
        if ballot != self._promised:
            self._promised = ballot
            self._dirty = True
        if ballot[0] > self._max_round_seen:
            self._max_round_seen = ballot[0]

    # === transitions =======================================================================

    def _reset_timers(self) -> None:
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        t = self.spec.election_timeout_ticks
        self._randomized_timeout = t + self._rng.randrange(t)

    def _become_follower(self, leader: str | None) -> None:
        was_leading = self._role is Role.LEADER
        self._role = Role.FOLLOWER
        self._leader = leader
        self._reset_timers()
        self._votes = {}
        self._merged = {}
        self._peers = {}
        self._last = 0
        self._lead_transferee = None
        self._need_bcast = False
        if was_leading or self.reads:
            self._failed_reads.extend(self.reads.reset())

    def _become_candidate(self, transfer: bool) -> None:
        if self._role is Role.LEADER:
            raise ProtocolMisuse("a leader cannot become a candidate")
        self._failed_reads.extend(self.reads.reset())
        round_ = max(self._promised[0], self._max_round_seen) + 1
        self._promise((round_, self._id))
        self._role = Role.CANDIDATE
        self._leader = None
        self._reset_timers()
        start = self.log.last_index + 1
        self._prepare_start = start
        self._votes = {self._id: True}
        self._merged = {s: slot for s, slot in self._acc.items() if s >= start}
        if self._voters.vote_result(self._votes) is VoteResult.WON:
            self._become_leader()
            return
        for voter in sorted(self._voters.voters):
            if voter != self._id:
                self._send(
                    Prepare(self._id, voter, round_, start, start - 1, transfer=transfer)
                )

    def _become_leader(self) -> None:
        if self._role is not Role.CANDIDATE:
            raise ProtocolMisuse(f"only a candidate can become leader, not a {self._role}")
        round_ = self._promised[0]
        start = self._prepare_start
        self._role = Role.LEADER
        self._leader = self._id
        self._reset_timers()
        recovered = self._recover(start)
        for slot in [s for s in self._acc if s >= start]:
            self._drop_accepted(slot)
        for entry in recovered:
            self._store_accepted(AcceptedSlot(round_, self._id, entry))
        top = start - 1 + len(recovered)
        noop = Entry(round_, top + 1, EntryKind.NOOP, b"")
        self._store_accepted(AcceptedSlot(round_, self._id, noop))
        self._last = top + 1
        self._own_stable = self.log.last_index
        self._read_floor = self._last
        self._pending_conf_index = self._last
        self._merged = {}
        self._votes = {}
        self._peers = {}
        self._sync_peers(start)
        self._need_bcast = True

    def _recover(self, start: int) -> list[Entry]:
        """The values this new leader proposes for the slots ``start..``: per slot the value of
        the highest accepted ballot any promise reported (PMS §2.2), a NOOP of our round where
        nobody reported one (a hole, PMS §3)."""
        merged = self._merged
        top = max(merged, default=start - 1)
        round_ = self._promised[0]
        values: list[Entry] = []
        for s in range(start, top + 1):
            slot = merged.get(s)
            values.append(
                self._choose_value(s, slot)
                if slot is not None
                else Entry(round_, s, EntryKind.NOOP, b"")
            )
        return values

    def _choose_value(self, slot: int, reported: AcceptedSlot) -> Entry:
        """The value to re-propose at ``slot``: the highest-ballot one reported."""
        return reported.entry

    def _sync_peers(self, next_slot: int) -> None:
        """Give every member (but us) a progress; forget removed ones."""
        members = set(self._conf.voters) | set(self._conf.learners)
        members.discard(self._id)
        for node in list(self._peers):
            if node not in members:
                del self._peers[node]
        for node in members:
            pr = self._peers.get(node)
            if pr is None:
                self._peers[node] = _Peer(next_slot, node not in self._conf.voters)
            else:
                pr.is_learner = node not in self._conf.voters

    def _follow(self, ballot: Ballot) -> None:
        """Take a leader message of ``ballot`` (``_takes`` held): promise it and follow."""
        self._promise(ballot)
        if self._role is not Role.FOLLOWER:
            self._become_follower(ballot[1])
        self._leader = ballot[1]
        self._election_elapsed = 0

    # === inputs ============================================================================

    def tick(self) -> None:
        self._check_not_in_ready()
        reads = self.reads
        reads.tick()
        if reads:
            self._failed_reads.extend(reads.expire(self._read_timeout_ticks))
        if self._role is Role.LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._randomized_timeout and self._promotable():
                self._campaign(transfer=False)

    def _tick_leader(self) -> None:
        spec = self.spec
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._lead_transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= spec.election_timeout_ticks:
                self._lead_transferee = None
        if self._election_elapsed >= spec.election_timeout_ticks:
            self._election_elapsed = 0
            active = [self._id] + [n for n, pr in self._peers.items() if pr.recent_active]
            if not self._voters.has_quorum(active):
                self._count("check_quorum_step_down")
                self._become_follower(None)
                return
            for pr in self._peers.values():
                pr.recent_active = False
        for pr in self._peers.values():
            if pr.snapshot_index:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= spec.election_timeout_ticks:
                    pr.snapshot_index = 0  # probably lost: start again
                    pr.next = pr.match + 1
        if self._heartbeat_elapsed >= spec.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def campaign(self) -> None:
        """Start phase 1 now, as if the election timeout fired (tests, operator tools)."""
        self._check_not_in_ready()
        if self._role is not Role.LEADER:
            self._campaign(transfer=False)

    def _promotable(self) -> bool:
        return self._id in self._voters

    def _campaign(self, transfer: bool) -> None:
        if not self._promotable():
            return
        for entry in self.log.committed_unapplied():
            if entry.kind == EntryKind.CONF_CHANGE:
                self._count("campaign_blocked_pending_conf")
                return
        if transfer:
            self._become_candidate(transfer=True)
        else:
            self._become_pre_candidate()

    def _become_pre_candidate(self) -> None:
        if self._role is Role.LEADER:
            raise ProtocolMisuse("a leader cannot become a pre-candidate")
        self._role = Role.PRE_CANDIDATE
        self._leader = None
        self._reset_timers()
        self._probe_round = max(self._promised[0], self._max_round_seen) + 1
        start = self.log.last_index + 1
        self._prepare_start = start
        self._votes = {self._id: True}
        if self._voters.vote_result(self._votes) is VoteResult.WON:
            self._become_candidate(transfer=False)
            return
        for voter in sorted(self._voters.voters):
            if voter != self._id:
                self._send(
                    Prepare(self._id, voter, self._probe_round, start, start - 1, probe=True)
                )

    def propose(self, data: bytes) -> tuple[int, int]:
        self._check_not_in_ready()
        self._check_can_propose(len(data))
        return self._append_own(EntryKind.NORMAL, bytes(data))

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        self._check_not_in_ready()
        self._check_can_propose(0)
        conf = self._conf
        check_proposal(
            conf, change, self._id, self._pending_conf_index, self.log.applied, "this leader's NOOP"
        )
        index, term = self._append_own(EntryKind.CONF_CHANGE, encode_conf_change(change))
        self._pending_conf_index = index
        return index, term

    def read(self, request_id: bytes) -> None:
        self._check_not_in_ready()
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if request_id in self.reads:
            raise ProtocolMisuse(f"read {request_id!r} is already pending: ids must be unique")
        if self.log.committed < self._read_floor:
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
        if to not in self._voters:
            raise ProtocolMisuse(f"cannot transfer leadership to {to!r}: not a voter")
        if self._lead_transferee == to:
            return
        self._lead_transferee = to
        self._transfer_elapsed = 0
        self._maybe_timeout_now(to)

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
        if kind is Prepare:
            self._on_prepare(m)
        elif kind is Promise:
            self._on_promise(m)
        elif kind is Accept or kind is Heartbeat or kind is SnapshotMsg:
            ballot = (m.round, m.frm)
            if not self._takes(ballot):
                self._count("stale_ballot")
                self._send(Reject(self._id, m.frm, m.round, *self._promised))
                return
            self._follow(ballot)
            if kind is Accept:
                self._on_accept(m)
            elif kind is Heartbeat:
                self._learn_commit(m.commit)
                # Standby: answered (the leader then sends the log), confirming no read round.
                ctx = 0 if self.standby else m.ctx
                self._send(HeartbeatAck(self._id, m.frm, m.round, self._match(), ctx))
            else:
                self._on_snapshot(m)
        elif kind is Reject:
            self._on_reject(m)
        elif kind is TimeoutNow:
            self._on_timeout_now(m)
        else:
            self._on_leader_answer(m)

    # --- acceptor --------------------------------------------------------------------------

    def _on_prepare(self, m: Prepare) -> None:
        if self.standby:
            # Standby: an acceptor that holds nothing may be a voter that forgot its promises
            # and its accepted values; it promises nothing until a leader gives it the log.
            self._count("prepare_standby")
            self._send(Promise(self._id, m.frm, m.round, m.start, 0, reject=True,
                               probe=m.probe))
            return
        if m.probe:
            in_lease = (
                self._leader is not None
                and self._election_elapsed < self.spec.election_timeout_ticks
            )
            if in_lease:
                self._count("prepare_in_lease")
            grant = m.round > self._promised[0] and not in_lease and m.commit >= self.log.committed
            self._send(Promise(self._id, m.frm, m.round, m.start, self.log.committed,
                               reject=not grant, probe=True))
            return
        ballot = (m.round, m.frm)
        if not self._takes(ballot):
            self._count("stale_ballot")
            self._send(Reject(self._id, m.frm, m.round, *self._promised))
            return
        if ballot != self._promised and not m.transfer:
            in_lease = (
                self._leader is not None
                and self._election_elapsed < self.spec.election_timeout_ticks
            )
            if in_lease:
                self._count("prepare_in_lease")
                return
        if m.commit < self.log.committed:
            # The candidate lacks chosen slots we hold: it could not re-propose them.
            self._send(
                Promise(self._id, m.frm, m.round, m.start, self.log.committed, reject=True)
            )
            return
        if self._role is not Role.FOLLOWER and ballot != self._promised:
            self._become_follower(None)
        if ballot != self._promised:
            self._leader = None
        self._promise(ballot)
        self._election_elapsed = 0
        accepted = tuple(self._acc[s] for s in sorted(self._acc) if s >= m.start)
        self._send(Promise(self._id, m.frm, m.round, m.start, self.log.committed, accepted))

    def _on_accept(self, m: Accept) -> None:
        ballot = (m.round, m.frm)
        log = self.log
        ceiling = log.last_index + ACCEPT_WINDOW_SLOTS
        for entry in m.entries:
            s = entry.index
            if s <= log.last_index:
                continue  # chosen already
            if s > ceiling or self._acc_bytes + _size(entry) > ACCEPT_WINDOW_BYTES:
                self._count("accept_beyond_window")
                break
            held = self._acc.get(s)
            if held is not None and (held.round, held.node) == ballot:
                if held.entry != entry:
                    self._count("accept_conflict")  # one ballot proposes one value per slot
                continue
            self._store_accepted(AcceptedSlot(ballot[0], ballot[1], entry))
        self._learn_commit(m.commit)
        lo = m.entries[0].index if m.entries else 0
        hi = m.entries[-1].index if m.entries else 0
        self._send(Accepted(self._id, m.frm, m.round, self._match(), lo, hi))

    def _match(self) -> int:
        """Our contiguous prefix that is chosen or accepted in our promised ballot."""
        s = self.log.last_index
        acc = self._acc
        promised = self._promised
        while True:
            slot = acc.get(s + 1)
            if slot is None or (slot.round, slot.node) != promised:
                return s
            s += 1

    def _learn_commit(self, commit: int) -> None:
        """The leader of our promised ballot says slots up to ``commit`` are chosen: the ones we
        accepted in its ballot are (their value is the leader's)."""
        if commit > self.log.last_index:
            self._choose_up_to(min(commit, self._match()))

    def _choose_up_to(self, index: int) -> None:
        log = self.log
        if index <= log.last_index:
            return
        entries = [self._acc[s].entry for s in range(log.last_index + 1, index + 1)]
        for s in range(log.last_index + 1, index + 1):
            self._drop_accepted(s)
        log.truncate_and_append(entries)
        log.commit_to(index)

    def _store_accepted(self, slot: AcceptedSlot) -> None:
        s = slot.entry.index
        old = self._acc.get(s)
        if old is not None:
            self._acc_bytes -= _size(old.entry)
        self._acc[s] = slot
        self._acc_bytes += _size(slot.entry)
        self._dirty = True

    def _drop_accepted(self, s: int) -> None:
        old = self._acc.pop(s, None)
        if old is not None:
            self._acc_bytes -= _size(old.entry)
            self._dirty = True

    def _on_snapshot(self, m: SnapshotMsg) -> None:
        meta = m.meta
        log = self.log
        if meta.index <= log.committed:
            self._count("snapshot_stale")
            self._snapshot_rx = None
            self._send(SnapshotAck(self._id, m.frm, m.round, meta.index, self._match()))
            return
        rx = self._snapshot_rx
        if m.offset == 0:
            rx = self._snapshot_rx = (meta, m.size, bytearray())
        same = rx is not None and rx[0] == meta and rx[1] == m.size
        if rx is None or not same or m.offset != len(rx[2]):
            held = len(rx[2]) if rx is not None and same else 0
            self._count("snapshot_chunk_out_of_order")
            self._send(
                SnapshotAck(self._id, m.frm, m.round, meta.index, done=False, received=held)
            )
            return
        buffer = rx[2]
        buffer += m.data
        if not m.done:
            self._send(
                SnapshotAck(self._id, m.frm, m.round, meta.index, done=False, received=len(buffer))
            )
            return
        self._snapshot_rx = None
        image = bytes(buffer)
        if self._snapshot_check is not None and not self._snapshot_check(image):
            self._count("snapshot_image_invalid")
            self._send(SnapshotAck(self._id, m.frm, m.round, meta.index, done=False, received=0))
            return
        snap = Snapshot(meta, image)
        log.restore(snap)
        for s in [s for s in self._acc if s <= meta.index]:
            self._drop_accepted(s)
        self._confs = [(meta.index, meta.conf)]
        self._set_conf(meta.conf)
        self._send(SnapshotAck(self._id, m.frm, m.round, meta.index, self._match()))

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if m.frm != self._leader or (m.round, m.frm) != self._promised:
            self._count("timeout_now_not_from_leader")
            return
        if not self._promotable():
            self._count("timeout_now_not_voter")
            return
        self._learn_commit(m.commit)
        self._campaign(transfer=True)

    # --- proposer --------------------------------------------------------------------------

    def _on_promise(self, m: Promise) -> None:
        asking = Role.PRE_CANDIDATE if m.probe else Role.CANDIDATE
        if self._role is not asking:
            self._count("not_asked")
            return
        current = self._probe_round if m.probe else self._promised[0]
        if m.round != current:
            self._count("stale_promise" if m.round < current else "promise_not_sent")
            return
        if m.start != self._prepare_start:
            self._count("promise_other_start")
            return
        if m.frm not in self._voters:
            self._count("not_asked")
            return
        self._count_promise(m)

    def _count_promise(self, m: Promise) -> None:
        if m.frm in self._votes:
            return  # a duplicate
        if m.probe:
            self._votes[m.frm] = not m.reject
            result = self._voters.vote_result(self._votes)
            if result is VoteResult.WON:
                self._become_candidate(transfer=False)
            elif result is VoteResult.LOST:
                self._become_follower(None)
            return
        if m.reject:
            self._votes[m.frm] = False
        else:
            self._votes[m.frm] = True
            merged = self._merged
            for slot in m.accepted:
                s = slot.entry.index
                held = merged.get(s)
                if held is None or (slot.round, slot.node) > (held.round, held.node):
                    merged[s] = slot
        result = self._voters.vote_result(self._votes)
        if result is VoteResult.WON:
            self._become_leader()
        elif result is VoteResult.LOST:
            self._become_follower(None)

    def _on_reject(self, m: Reject) -> None:
        if self._role is Role.FOLLOWER:
            self._count("not_asked")
            return
        if m.round != self._promised[0]:
            self._count("stale_round")
            return
        higher = m.promised_round > m.round or (
            m.promised_round == m.round and m.promised_node != self._id
        )
        if not higher:
            self._count("reject_not_higher")
            return
        if m.promised_round > self._max_round_seen:
            self._max_round_seen = m.promised_round
        self._become_follower(None)

    def _on_leader_answer(self, m: Any) -> None:
        kind = type(m)
        if self._role is not Role.LEADER:
            self._count("not_asked")
            return
        if m.round != self._promised[0]:
            self._count("stale_round")
            return
        pr = self._peers.get(m.frm)
        if pr is None:
            self._count("unknown_peer")
            return
        if kind is SnapshotAck:
            self._on_snapshot_ack(m, pr)
            return
        if m.match > self._last or (kind is Accepted and m.hi > self._last):
            self._count("accepted_beyond_log")
            return
        if kind is HeartbeatAck and m.ctx > self.reads.round:
            self._count("ctx_not_sent")
            return
        pr.recent_active = True
        progressed = m.match > pr.match
        if progressed:
            pr.match = m.match
            pr.stall = 0
            if pr.next <= pr.match:
                pr.next = pr.match + 1
        if kind is Accepted:
            while pr.inflight and pr.inflight[0] <= m.hi:
                pr.inflight.popleft()
            if m.lo and m.match + 1 < m.lo and m.lo >= pr.rewind_floor and pr.match + 1 < m.lo:
                pr.rewind()  # a gap below this batch: something we sent was lost
        else:
            if m.ctx:
                self.reads.ack(m.frm, m.ctx)
                self._release_reads()
            if pr.match < self._last and not progressed and not pr.snapshot_index:
                pr.stall += 1
                # Nothing on the way can fill its gap, or nothing arrived for a while.
                idle = not pr.inflight and pr.match + 1 < pr.next
                if idle or pr.stall >= limits.RAFT_REPLICATE_STALL_HEARTBEATS:
                    pr.rewind()
        if progressed:
            self._maybe_commit()
        while self._send_accept(m.frm, pr):
            pass
        if m.frm == self._lead_transferee:
            self._maybe_timeout_now(m.frm)

    def _on_snapshot_ack(self, m: SnapshotAck, pr: _Peer) -> None:
        pr.recent_active = True
        snap = self.log.snapshot
        if not m.done:
            if (
                pr.snapshot_index
                and snap is not None
                and m.index == snap.meta.index == pr.snapshot_index
                and m.received < len(snap.data)
            ):
                pr.snapshot_elapsed = 0
                self._send_snapshot_chunk(m.frm, m.received)
            else:
                self._count("snapshot_ack_unexpected")
            return
        if m.match > self._last or m.index > self._last:
            self._count("accepted_beyond_log")
            return
        pr.snapshot_index = 0
        reached = max(m.match, m.index if m.index <= self.log.committed else 0)
        if reached > pr.match:
            pr.match = reached
        pr.next = pr.match + 1
        pr.inflight.clear()
        self._maybe_commit()
        while self._send_accept(m.frm, pr):
            pass

    def _maybe_commit(self) -> None:
        acked = {n: pr.match for n, pr in self._peers.items() if not pr.is_learner}
        acked[self._id] = self._own_stable
        index = min(self._voters.committed_index(acked), self._last)
        if index > self.log.committed:
            self._choose_up_to(index)
            if self.reads.waiting and self.log.committed >= self._read_floor:
                self.reads.admit_waiting(self.log.committed)
            if self._lead_transferee is not None:
                self._maybe_timeout_now(self._lead_transferee)

    def _maybe_timeout_now(self, to: str) -> None:
        pr = self._peers.get(to)
        if pr is None:
            return
        if pr.match >= self._last and self.log.committed >= self._last:
            self._send(TimeoutNow(self._id, to, self._promised[0], self.log.committed))
        else:
            while self._send_accept(to, pr):
                pass

    # --- leader output ---------------------------------------------------------------------

    def _append_own(self, kind: int, data: bytes) -> tuple[int, int]:
        round_ = self._promised[0]
        entry = Entry(round_, self._last + 1, kind, data)
        self._store_accepted(AcceptedSlot(round_, self._id, entry))
        self._last += 1
        self._need_bcast = True
        return entry.index, entry.term

    def _slot_entry(self, s: int) -> Entry:
        if s <= self.log.last_index:
            return self.log.entry(s)
        return self._acc[s].entry

    def _send_accept(self, to: str, pr: _Peer) -> bool:
        """Send the next batch to ``to`` if flow control allows; returns whether sent."""
        if pr.snapshot_index or pr.next > self._last:
            return False
        if len(pr.inflight) >= self.spec.max_inflight_msgs:
            return False
        log = self.log
        if pr.next <= log.offset:
            self._send_snapshot(to, pr)
            return False
        spec = self.spec
        hi = min(self._last, pr.next + spec.max_entries_per_msg - 1)
        entries: list[Entry] = []
        total = 0
        for s in range(pr.next, hi + 1):
            entry = self._slot_entry(s)
            total += _size(entry)
            if total > spec.max_bytes_per_msg and entries:
                break
            entries.append(entry)
        self._send(Accept(self._id, to, self._promised[0], tuple(entries), log.committed))
        last = entries[-1].index
        pr.inflight.append(last)
        pr.next = last + 1
        return True

    def _send_snapshot(self, to: str, pr: _Peer) -> None:
        snap = self.log.snapshot
        if snap is None:
            raise ProtocolMisuse(f"slots before {self.log.first_index} are compacted but no snapshot")
        pr.snapshot_index = snap.meta.index
        pr.snapshot_elapsed = 0
        self._send_snapshot_chunk(to, 0)

    def _send_snapshot_chunk(self, to: str, offset: int) -> None:
        snap = self.log.snapshot
        assert snap is not None
        data = snap.data
        end = min(offset + self.spec.snapshot_chunk_bytes, len(data))
        self._send(
            SnapshotMsg(
                self._id, to, self._promised[0], snap.meta, offset, data[offset:end], len(data),
                end == len(data),
            )
        )

    def _bcast_accepts(self) -> None:
        # Only new slots leave here. A choice is not announced by a message of its own: the
        # next Accept or Heartbeat carries the chosen prefix, so a write costs Accept +
        # Accepted per acceptor.
        self._need_bcast = False
        for node in sorted(self._peers):
            pr = self._peers[node]
            while self._send_accept(node, pr):
                pass

    def _bcast_heartbeat(self) -> None:
        ctx = self.reads.next_round()
        for node in sorted(self._peers):
            self._send(Heartbeat(self._id, node, self._promised[0], self.log.committed, ctx))
        self._release_reads()

    def _release_reads(self) -> None:
        for request_id, index in self.reads.release(self._voters, self._id):
            self._read_states.append(ReadState(request_id, index))

    # === membership ========================================================================

    def _set_conf(self, conf: ConfState) -> None:
        self._conf = conf
        self._voters = JointConfig(conf.voters)
        if self._role is Role.LEADER:
            self._sync_peers(self._last + 1)

    def _apply_conf_entry(self, entry: Entry) -> None:
        try:
            change = decode_conf_change(entry.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            change = None
        valid = change is not None and valid_change(change)
        conf = apply_change(self._conf, change) if change is not None and valid else None
        if conf is None or not conf.voters:
            self._count("conf_change_ignored")
            return
        self._set_conf(conf)
        self._confs.append((entry.index, conf))

    def _after_conf_applied(self) -> None:
        if self._role is Role.LEADER:
            if self._id not in self._voters:
                best = None
                for node in sorted(self._conf.voters):
                    pr = self._peers.get(node)
                    if pr is not None and pr.match >= self._last:
                        best = node
                        break
                if best is not None and self.log.committed >= self._last:
                    self._send(TimeoutNow(self._id, best, self._promised[0], self.log.committed))
                self._become_follower(None)
                return
            if self._lead_transferee is not None and self._lead_transferee not in self._voters:
                self._lead_transferee = None
            self._maybe_commit()
            self._need_bcast = True
        elif self._role in (Role.CANDIDATE, Role.PRE_CANDIDATE) and not self._promotable():
            self._become_follower(None)

    # === Ready =============================================================================

    def _send(self, message: Any) -> None:
        self._msgs.append(message)

    def _count(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def _check_not_in_ready(self) -> None:
        if self._in_ready is not None:
            raise ProtocolMisuse("the host must call advance() before using the core again")

    def _check_can_propose(self, size: int) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._lead_transferee is not None:
            raise ProposalDropped(
                f"leadership is being transferred to {self._lead_transferee}; retry there"
            )
        if (
            self._last - self.log.committed >= ACCEPT_WINDOW_SLOTS
            or self._acc_bytes + size + ENTRY_OVERHEAD_BYTES > ACCEPT_WINDOW_BYTES
        ):
            raise ProposalDropped("too many proposals not chosen yet; retry later")

    def _record(self) -> PaxosRecord:
        return PaxosRecord(
            self._promised[0],
            self._promised[1],
            tuple(self._acc[s] for s in sorted(self._acc)),
        )

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
            or self._dirty
            or log.has_unstable()
            or log.pending_snapshot is not None
            or log.committed > log.applied
            or self._prev_commit != log.committed
        )

    def ready(self) -> Ready:
        self._check_not_in_ready()
        leading = self._role is Role.LEADER
        if leading:
            if self._need_bcast:
                self._bcast_accepts()
            if self.reads.need_round:
                self._bcast_heartbeat()
        log = self.log
        record_changed = self._dirty
        if record_changed:
            self._record_bytes = encode_record(self._record())
            self._dirty = False
        hard_state: HardState | None = None
        if record_changed or self._prev_commit != log.committed:
            hard_state = HardState(log.committed, self._record_bytes)
        snapshot = log.pending_snapshot
        entries = log.unstable_entries()
        committed = tuple(log.committed_unapplied())
        read_states: tuple[ReadState, ...] = ()
        if self._read_states:
            limit = log.committed
            read_states = tuple(r for r in self._read_states if r.index <= limit)
            self._read_states = [r for r in self._read_states if r.index > limit]
        failed_reads = tuple(self._failed_reads)
        self._failed_reads.clear()
        early_types = self.EARLY_MESSAGE_TYPES
        early = tuple(m for m in self._msgs if type(m) in early_types)
        msgs = tuple(m for m in self._msgs if type(m) not in early_types)
        self._msgs = []
        self._ready_own = (self._promised, self._last) if leading else None
        rd = Ready(
            hard_state=hard_state,
            snapshot=snapshot,
            entries=entries,
            messages=msgs,
            early_messages=early,
            committed_entries=committed,
            read_states=read_states,
            failed_reads=failed_reads,
            must_sync=record_changed or bool(entries) or snapshot is not None,
        )
        self._in_ready = rd
        return rd

    def advance(self, ready: Ready) -> None:
        if ready is not self._in_ready:
            raise ProtocolMisuse("advance() must be given the Ready returned by ready()")
        self._in_ready = None
        log = self.log
        if ready.hard_state is not None:
            self._prev_commit = ready.hard_state.commit
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
        own = self._ready_own
        self._ready_own = None
        if (
            own is not None
            and self._role is Role.LEADER
            and own[0] == self._promised
            and own[1] > self._own_stable
        ):
            self._own_stable = own[1]
            self._maybe_commit()


def build(
    spec: CoreSpec,
    persisted: PersistedState | None,
    rng: RandomSource,
    *,
    applied: int | None = None,
    snapshot_check: Callable[[bytes], bool] | None = None,
) -> MultiPaxos:
    """A Multi-Paxos replica from a :class:`CoreSpec` (the registry's factory)."""
    return MultiPaxos(spec, persisted, rng, applied=applied, snapshot_check=snapshot_check)
