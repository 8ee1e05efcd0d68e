"""The ZAB consensus core: ZooKeeper's atomic broadcast as a sans-IO state machine.

Theory of operation
-------------------
States and phases (Junqueira, Reed, Serafini, "Zab: High-performance broadcast for
primary-backup systems", DSN 2011; section numbers below are that paper's)::

    LOOKING --FLE: a quorum votes for me--> LEADING   DISCOVERY -> SYNC -> BROADCAST
       ^    --FLE: a quorum votes for L --> FOLLOWING DISCOVERY -> SYNC -> BROADCAST
       |    --L says it is LEADING -------> FOLLOWING (a node joining a running epoch)
       +--- leader silent / quorum lost / epoch refused / follower ahead / transfer / rollover

A learner (observer) is OBSERVING instead of FOLLOWING and never votes; ``role`` maps the states
onto :class:`~exapyte.protocol.types.Role`: LOOKING -> CANDIDATE (a learner or a node outside
the configuration: LEARNER / FOLLOWER), FOLLOWING -> FOLLOWER, LEADING -> LEADER, OBSERVING ->
LEARNER. ``status().phase`` and :attr:`Zab.phase` give the finer phase.

Identity of entries. ``Entry.index`` is the log position (1, 2, 3 ...), ``Entry.term`` the
epoch whose leader proposed it. The zxid of an entry is ``epoch << 32 | counter`` with the
counter numbering the epoch's proposals from 1; within one epoch zxid order is index order, and
the leader's first entry of an epoch (its NOOP, below) is counter 1. A leader whose next counter
would pass ``counter_max`` (2**32 - 1) stops proposing and returns to LOOKING, so that the next
leader starts a fresh epoch (ZooKeeper's zxid rollover).

Fast Leader Election (§V-A). A LOOKING voter votes for the node with the greatest
(currentEpoch, last entry's epoch, last index, transfer flag, id) it has heard of in its round
and tells every voter; a notification of a later round moves the receiver to that round, one of
an earlier round is answered with our vote so that the sender catches up. When a quorum of the
round's votes equals ours the node leads (if the vote is its own) or follows. Notifications are
retried after a timeout drawn from the injected rng, and a node that stays LOOKING for several
timeouts starts a new round. A LOOKING node that hears a node say it is LEADING at an epoch not
below its own accepted epoch follows it (how a restarted node or a new member rejoins); a leader
invites the members it has not heard from, or that are not synchronized yet, the same way. A
leader outside the node's configuration (made a voter by a change the node missed) is followed
once a voter of the node's configuration says it follows that leader in that epoch
(:meth:`Zab._on_following_notice`). A notification also carries the sender's newest committed
configuration and its version (ZooKeeper 3.5+): a LOOKING member that missed a membership change
(a learner promoted while cut off, a voter restarted with a stale commit hint that still counts a
removed peer) adopts a strictly newer one for its election until its log applies that far
(:meth:`Zab._maybe_adopt_conf`). FLE only proposes a leader: safety comes from discovery and
synchronization.

Discovery (§IV-A, Phase 1). A follower sends FOLLOWERINFO(acceptedEpoch). Once a quorum of
voters (the leader included) has, the prospective leader picks e' = max(acceptedEpoch) + 1,
persists acceptedEpoch = e' and sends NEWEPOCH(e'). A follower accepts e' if it is above its
acceptedEpoch (or equal and from the leader it accepted it from), persists it, and answers
ACKEPOCH(currentEpoch, last entry, commit); otherwise it returns to LOOKING. With a quorum of
ACKEPOCHs the leader checks that its own history is the most up to date of them, ordered by
(currentEpoch, last entry): the paper's rule picks that history, ZooKeeper makes it the
leader's by election; here a leader that finds a follower ahead of it gives the epoch up and
returns to LOOKING, and the next election picks that follower. Because every node persists an
epoch before acknowledging it and accepts each epoch from one leader only, at most one leader
ever establishes an epoch: ``observe().term`` is the epoch, and a leader shows ``is_leader``
only once its epoch is acknowledged by a quorum.

Synchronization (§IV-B, Phase 2). The leader appends a NOOP of e' to its history (counter 1 of
the epoch: every sync then ends with an entry no follower holds, so a truncation is always
written by the entries that replace the cut suffix) and persists currentEpoch = e' with it. For
each follower it chooses, from the ACKEPOCH: DIFF when the follower's last entry is in the
leader's log (send what follows), TRUNC when it is not (cut back to the highest point both logs
are known to share: the follower's commit or the last entry of the follower's last epoch the
leader holds, then send what follows), SNAP when that point was compacted (the snapshot in
chunks of ``snapshot_chunk_bytes``, then what follows). The follower assembles the sync in
memory and, on NEWLEADER, takes three durable steps in this order, each in its own Ready: it
persists the synced history (snapshot and entries), THEN its currentEpoch = e', THEN it sends
ACK(NEWLEADER) (:attr:`Zab.SYNC_STEPS`). It applies only what the leader said was committed.
The leader, once a quorum of voters (itself included, once its NOOP and epoch are durable) has
acknowledged NEWLEADER, commits the initial history and sends UPTODATE. A follower joining a
running epoch is synchronized the same way, its later proposals following NEWLEADER.

Broadcast (§IV-C, Phase 3). A proposal is appended to the leader's log and sent in batched,
pipelined PROPOSAL messages (at most ``max_inflight_msgs`` unacknowledged per follower, each of
at most ``max_entries_per_msg`` entries and about ``max_bytes_per_msg`` bytes); a follower
appends it in zxid order and ACKs it after persisting; the leader commits the largest index a
quorum holds (its own entries count once persisted) and sends COMMIT to every follower it
proposed the entry to, whether it acknowledged yet or not, as the paper does: an unbatched write
costs a PROPOSAL, an ACK and a COMMIT per follower, 3(N-1) messages. Followers apply only
committed entries, in order. A follower that misses a proposal answers with a gap ACK and the
leader resends from there.

Persisted state (``HardState.record``, a :class:`ZabRecord`): ``accepted_epoch`` and the leader
it was accepted from, and ``current_epoch``. acceptedEpoch is persisted before ACKEPOCH (and a
leader's before NEWEPOCH), currentEpoch after the synced history and before ACK(NEWLEADER); a
Ready that changes the record has ``must_sync``. ``HardState.commit`` is only a hint.

Reads. Reads served from a replica's local state (``read_local`` in the host) are ZooKeeper's
plain reads: *sequentially consistent* - each replica applies the same committed prefix in
order, so a client that stays on one replica sees its own writes and never goes back in time,
but a follower may lag the leader. :meth:`Zab.read` is the linearizable read (ZooKeeper's
sync-then-read): the leader, once its epoch's NOOP is committed, takes its commit index as the
read index and confirms it is still the leader with a PING round acknowledged by a quorum after
the read arrived (:mod:`exapyte.protocol.readindex`); every read ends in a ReadState or in
``failed_reads`` (leadership lost, or not confirmed within ``RAFT_READ_TIMEOUT_ELECTIONS``
election timeouts).

Membership: CONF_CHANGE entries with single-server steps, applied in ``advance`` as Raft does
(one pending at a time, none before the epoch's NOOP is applied); learners are observers.
Founding members boot with committed CONF_CHANGE entries 1..n of epoch 0, identical on every
founder. A leader that loses a quorum of followers for an election timeout returns to LOOKING.

Standby: a follower that holds no entry and no snapshot (never a founder) may be a voter that lost
its accepted epoch and history. Its FOLLOWERINFO says ``standby``; the leader syncs it but counts
neither that FOLLOWERINFO nor its ACKEPOCH in discovery (``follower_standby``), so an empty
history never hides a committed one. The host keeps acceptedEpoch and its leader of a replica it
drops (:meth:`Zab.tombstone`, currentEpoch 0) for a re-created one.

Leadership transfer: the leader stops proposing, waits until the target holds its whole log,
sends TRANSFER and returns to LOOKING; the target runs with the transfer flag, which wins the
tie against equally up-to-date nodes.

Bad remote input is dropped and counted in ``status().dropped`` by cause (see docs/zab.md),
never raised.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
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
from exapyte.protocol.progress import Inflights
from exapyte.protocol.quorum import JointConfig
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
from exapyte.protocol.zab.messages import (
    ZAB_MESSAGE_TYPES,
    ZXID_COUNTER_MAX,
    Ack,
    AckEpoch,
    AckNewLeader,
    Commit,
    FollowerInfo,
    NewEpoch,
    NewLeader,
    Notification,
    PeerState,
    Ping,
    PingAck,
    Proposal,
    SnapChunk,
    SyncAck,
    SyncEntries,
    SyncMode,
    TransferNow,
    UpToDate,
    pack_zxid,
)

_NUMBER_MAX = limits.RAFT_TERM_INDEX_MAX
_HANDLED = frozenset(ZAB_MESSAGE_TYPES)
_ENTRY_KINDS = frozenset(int(k) for k in EntryKind)
_SYNC_MODES = frozenset(int(m) for m in SyncMode)
_PEER_STATES = frozenset(int(s) for s in PeerState)
# A leader's messages that promise nothing about its own durable state: they may leave while
# its fsync runs (its own entries count towards a quorum only once persisted).
_EARLY = (Proposal, Commit, Ping)
# Messages only the leader of an epoch sends to its followers.
_FROM_LEADER = (NewEpoch, SyncEntries, SnapChunk, NewLeader, UpToDate, Proposal, Commit, Ping,
                TransferNow)
# Answers a leader takes from its followers.
_TO_LEADER = (FollowerInfo, AckEpoch, SyncAck, AckNewLeader, Ack, PingAck)
ROUNDS_PER_ELECTION_RESTART = 4  # notification timeouts in one round before a new round


class ZabState(enum.Enum):
    LOOKING = "looking"
    FOLLOWING = "following"
    LEADING = "leading"
    OBSERVING = "observing"


class Phase(enum.Enum):
    ELECTION = "election"
    DISCOVERY = "discovery"
    SYNC = "sync"
    BROADCAST = "broadcast"


class ZabRecord(msgspec.Struct, frozen=True, array_like=True):
    """What ZAB persists in ``HardState.record``.

    ``accepted_epoch``: the last epoch this node acknowledged in NEWEPOCH (a leader: the epoch
    it proposed); ``accepted_by``: the leader it accepted it from, so that a re-sent NEWEPOCH
    of that leader is acknowledged again but nobody else's with the same number;
    ``current_epoch``: the epoch whose NEWLEADER this node acknowledged (a leader: its epoch).
    """

    accepted_epoch: int = 0
    accepted_by: str = ""
    current_epoch: int = 0


_RECORD_ENCODER = msgspec.msgpack.Encoder()
_RECORD_DECODER = msgspec.msgpack.Decoder(ZabRecord)


def encode_record(record: ZabRecord) -> bytes:
    return _RECORD_ENCODER.encode(record)


def decode_record(data: bytes) -> ZabRecord:
    """Inverse of :func:`encode_record`; ``b""`` is a node that never stored one. Raises
    ProtocolMisuse for a record that is not ZAB's (storage written by another protocol)."""
    if not data:
        return ZabRecord()
    try:
        return _RECORD_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolMisuse(f"the stored hard state is not a ZAB record: {exc}") from exc


class ZabConfig(msgspec.Struct, frozen=True):
    """Tuning of one ZAB replica. Call :meth:`validate` once, at load."""

    node_id: str
    election_timeout_ticks: int = limits.RAFT_ELECTION_TIMEOUT_TICKS_DEFAULT
    heartbeat_ticks: int = limits.RAFT_HEARTBEAT_TICKS_DEFAULT
    max_inflight_msgs: int = limits.RAFT_MAX_INFLIGHT_MSGS_DEFAULT
    max_entries_per_msg: int = limits.RAFT_MAX_ENTRIES_PER_MSG_DEFAULT
    max_bytes_per_msg: int = limits.RAFT_MAX_BYTES_PER_MSG_DEFAULT
    snapshot_chunk_bytes: int = limits.RAFT_SNAPSHOT_CHUNK_BYTES_DEFAULT
    counter_max: int = ZXID_COUNTER_MAX  # the last zxid counter an epoch may use

    def validate(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ProtocolMisuse(f"ZabConfig.{name}={getattr(self, name)!r} is invalid: {rule}")

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
        need(2 <= self.counter_max <= ZXID_COUNTER_MAX, "counter_max",
             f"must be in 2..{ZXID_COUNTER_MAX}")


@dataclass(frozen=True, slots=True)
class Vote:
    """An FLE vote: ``leader`` and the summary of its history."""

    leader: str
    epoch: int
    last_term: int
    last_index: int
    transfer: bool = False

    def key(self) -> tuple[int, int, int, bool, str]:
        return (self.epoch, self.last_term, self.last_index, self.transfer, self.leader)


class PeerPhase(enum.Enum):
    INFO = "info"  # sent FOLLOWERINFO; waits for the epoch to be chosen
    EPOCH = "epoch"  # sent NEWEPOCH; waits for ACKEPOCH
    SYNC = "sync"  # being synchronized; waits for ACK(NEWLEADER)
    BROADCAST = "broadcast"  # acknowledged NEWLEADER: takes proposals


@dataclass(slots=True)
class Peer:
    """What a leader knows of one follower or observer in its epoch."""

    phase: PeerPhase
    accepted_epoch: int = 0
    ack: AckEpoch | None = None
    elapsed: int = 0  # ticks since this peer's phase last progressed
    active: bool = True  # heard from since the last quorum check
    standby: bool = False  # its FOLLOWERINFO said it holds nothing: never counted in discovery
    # synchronization
    mode: int = SyncMode.DIFF
    sync_prev: int = 0  # the point the sync starts after
    sync_sent: int = 0  # last index sent in the sync
    sync_acked: int = 0  # last index the follower holds of the sync
    sync_end: int = 0  # the sync ends here; NEWLEADER names it
    snap_index: int = 0  # SNAP: the snapshot being sent
    snap_done: bool = False
    newleader_sent: bool = False
    # broadcast
    match: int = 0
    next: int = 0
    commit_sent: int = 0  # the highest commit this follower was told about
    stall: int = 0
    inflights: Inflights = field(default_factory=lambda: Inflights(1))


def _in_range(*values: int) -> bool:
    for value in values:
        if not 0 <= value <= _NUMBER_MAX:
            return False
    return True


def malformed(m: Any) -> str | None:
    """Why a ZAB message cannot have been sent by a correct peer (the drop counter), or None."""
    kind = type(m)
    if kind is Notification:
        if not _in_range(m.round, m.epoch, m.last_term, m.last_index, m.conf_index, m.conf_epoch):
            return "malformed"
        if m.conf_index and (not isinstance(m.conf, ConfState) or not sane_conf(m.conf)):
            return "malformed"
        if m.state not in _PEER_STATES or not isinstance(m.leader, str) or not m.leader:
            return "malformed"
        if m.last_index == 0 and m.last_term != 0:
            return "malformed"
        return None
    if kind is FollowerInfo:
        ok = _in_range(m.accepted_epoch) and isinstance(m.accepted_by, str)
        return None if ok else "malformed"
    if not _in_range(m.epoch):
        return "malformed"
    if kind is AckEpoch:
        if not _in_range(m.current_epoch, m.last_term, m.last_index, m.commit):
            return "malformed"
        if m.current_epoch > m.epoch or m.commit > m.last_index:
            return "malformed"
        return None
    if kind is SyncEntries:
        if not _in_range(m.prev_index, m.prev_term) or m.mode not in _SYNC_MODES:
            return "malformed"
        if m.prev_term > m.epoch or (m.prev_index == 0 and m.prev_term != 0):
            return "malformed"
        ok = entries_follow(m.prev_index, m.prev_term, m.entries, m.epoch)
        return None if ok else "malformed_entries"
    if kind is Proposal:
        if not _in_range(m.prev_index, m.prev_term, m.zxid, m.commit) or m.prev_term > m.epoch:
            return "malformed"
        if m.prev_index == 0 and m.prev_term != 0:
            return "malformed"
        if not m.entries or any(e.term != m.epoch for e in m.entries):
            return "malformed_entries"
        ok = entries_follow(m.prev_index, m.prev_term, m.entries, m.epoch)
        return None if ok else "malformed_entries"
    if kind is SnapChunk:
        meta = m.meta
        if not _in_range(meta.index, meta.term, m.offset):
            return "malformed"
        if meta.index == 0 or meta.term > m.epoch or not sane_conf(meta.conf):
            return "malformed_snapshot"
        end = m.offset + len(m.data)
        if not 1 <= m.size <= limits.RAFT_SNAPSHOT_BYTES_MAX or end > m.size:
            return "malformed_snapshot"
        if m.done != (end == m.size):
            return "malformed_snapshot"
        return None
    if kind is SyncAck:
        return None if _in_range(m.index, m.snapshot_received) else "malformed"
    if kind is NewLeader:
        if not _in_range(m.last_index, m.last_term, m.commit, m.epoch_start):
            return "malformed"
        if m.last_term > m.epoch or m.commit > m.last_index or m.epoch_start > m.last_index:
            return "malformed"
        if m.epoch_start == 0 or m.last_index == 0:
            return "malformed"
        return None
    if kind is AckNewLeader:
        return None if _in_range(m.last_index) else "malformed"
    if kind is UpToDate:
        return None if _in_range(m.commit) else "malformed"
    if kind is Ack:
        return None if _in_range(m.index, m.zxid) else "malformed"
    if kind is Commit:
        return None if _in_range(m.index, m.zxid) else "malformed"
    if kind is Ping:
        return None if _in_range(m.commit, m.ctx) else "malformed"
    if kind is PingAck:
        if not _in_range(m.ctx, m.last_index, m.last_term) or m.last_term > m.epoch:
            return "malformed"
        return None
    return None  # NewEpoch, TransferNow: only the epoch


class Zab(ConsensusCore):
    """One ZAB replica. See the module docstring for the theory of operation.

    ``persisted`` is what the host's storage holds (``PersistedState()`` for a node that joins
    an existing group; ``PersistedState(conf=ConfState(voters=...))`` for a founding member).
    ``applied`` is the index the host's state machine already reflects after a restart.
    """

    # The follower's three durable steps on NEWLEADER, in this order (ZOOKEEPER-3911,
    # ZOOKEEPER-4643): each step that persists something waits for its Ready to be advanced.
    SYNC_STEPS: tuple[str, ...] = ("persist_txns", "write_epoch", "ack")

    def __init__(
        self,
        config: ZabConfig,
        persisted: PersistedState | None,
        rng: RandomSource,
        *,
        applied: int | None = None,
        snapshot_check: Callable[[bytes], bool] | None = None,
    ) -> None:
        config.validate()
        self.cfg = config
        self._id = config.node_id
        self._rng = rng
        self._snapshot_check = snapshot_check
        p = persisted if persisted is not None else PersistedState()
        bootstrap = (
            p.hard_state == HardState()
            and p.snapshot is None
            and not p.entries
            and bool(p.conf.voters)
        )
        self._rec = decode_record(p.hard_state.record)
        if self._rec.current_epoch > self._rec.accepted_epoch:
            raise ProtocolMisuse(
                f"stored currentEpoch {self._rec.current_epoch} is above acceptedEpoch "
                f"{self._rec.accepted_epoch}: the record is not one ZAB writes"
            )
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
                self.log.append(Entry(0, i, EntryKind.CONF_CHANGE, encode_conf_change(change)))
            self.log.committed = len(changes)
            self._prev_hs = HardState()
        else:
            self.log = ReplicatedLog(p.snapshot, p.entries, p.hard_state.commit, applied)
            self._prev_hs = p.hard_state
        self._persisted_rec = self._rec  # the record the host holds (advance() moves it)

        self._dropped: dict[str, int] = {}
        base_conf = p.snapshot.meta.conf if p.snapshot is not None else ConfState()
        # The configuration in effect (``_conf``/``_voters``) is the one the applied log gives
        # (``_confs``, versioned by ``_log_conf_version``), unless a newer committed one was
        # adopted from a peer's notification: then ``_adopted_index`` is its position, and the
        # log's own takes over again once it is applied that far (see _maybe_adopt_conf).
        self._conf = base_conf
        self._voters = JointConfig(base_conf.voters)
        self._confs: list[tuple[int, ConfState]] = [(self.log.offset, base_conf)]
        self._log_conf_version = (self.log.offset, self.log.offset_term)
        self._conf_version = self._log_conf_version  # (index, epoch) of the conf in effect
        self._adopted_index = 0
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

        self._state = ZabState.LOOKING
        self._phase = Phase.ELECTION
        self._leader: str | None = None
        self._elapsed = 0  # ticks in the current state/phase (meaning depends on the state)
        self._timeout = config.election_timeout_ticks
        self._heartbeat_elapsed = 0
        # election
        self._round = 0
        self._transfer_vote = False
        self._vote = self._self_vote()
        self._votes: dict[str, Vote] = {}
        # leaders outside our configuration that a voter of it follows: leader -> its epoch
        self._vouched: dict[str, int] = {}
        self._notify_elapsed = 0
        self._notify_timeout = config.election_timeout_ticks
        self._notify_rounds = 0
        # leader
        self._peers: dict[str, Peer] = {}
        self._infos: dict[str, int] = {}  # discovery: FOLLOWERINFO acceptedEpoch by voter
        self._epoch_chosen = False
        self._acks: dict[str, AckEpoch] = {}  # discovery: ACKEPOCH by voter
        self._epoch_start = 0  # index of this epoch's first entry (its NOOP)
        self._need_bcast = False
        self._need_commit_bcast = False
        self._pending_conf_index = 0
        self._transferee: str | None = None
        self._transfer_elapsed = 0
        self._invite_elapsed = 0
        # follower: the sync being assembled and the NEWLEADER steps
        self._rx_mode = -1
        self._rx_prev: tuple[int, int] = (0, 0)
        self._rx_entries: list[Entry] = []
        self._rx_snap: tuple[SnapshotMeta, int, bytearray] | None = None
        self._rx_snapshot: Snapshot | None = None
        self._sync_nl: NewLeader | None = None
        self._sync_todo: list[str] = []
        self._sync_waiting = False
        self._info_elapsed = 0
        self._become_looking()

    # === properties ========================================================================

    @property
    def node_id(self) -> str:
        return self._id

    @property
    def leader(self) -> str | None:
        return self._leader

    @property
    def term(self) -> int:
        return self._rec.accepted_epoch

    @property
    def accepted_epoch(self) -> int:
        return self._rec.accepted_epoch

    @property
    def current_epoch(self) -> int:
        return self._rec.current_epoch

    @property
    def state(self) -> ZabState:
        return self._state

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def election_round(self) -> int:
        return self._round

    @property
    def role(self) -> Role:
        if self._state is ZabState.LEADING:
            return Role.LEADER
        if self._state is ZabState.FOLLOWING:
            return Role.FOLLOWER
        if self._state is ZabState.OBSERVING:
            return Role.LEARNER
        if self._is_voter():
            return Role.CANDIDATE
        if self._id in self._conf.learners:
            return Role.LEARNER
        return Role.FOLLOWER

    @property
    def conf(self) -> ConfState:
        return self._conf

    @property
    def dropped(self) -> dict[str, int]:
        return dict(self._dropped)

    @property
    def lead_transferee(self) -> str | None:
        return self._transferee

    @property
    def established(self) -> bool:
        """A leader whose epoch's initial history is committed (a quorum acked NEWLEADER)."""
        return (
            self._state is ZabState.LEADING
            and self._phase is Phase.BROADCAST
        )

    @property
    def standby(self) -> bool:
        # No entry and no snapshot (a founder holds its founding configuration as entries
        # 1..n): a follower that may have forgotten the epochs it acknowledged and its history.
        return self.log.last_index == 0

    def tombstone(self) -> HardState:
        # The epoch promise and who it went to; currentEpoch names a history, which a
        # re-created replica no longer holds.
        rec = self._rec
        record = ZabRecord(rec.accepted_epoch, rec.accepted_by, 0)
        return HardState(record=encode_record(record))

    def zxid(self, index: int) -> int:
        """The zxid of the entry at ``index`` (0 for index 0 or an entry not held)."""
        term = self.log.term(index)
        if term is None or index == 0:
            return 0
        if term == self._rec.current_epoch and self._epoch_start and index >= self._epoch_start:
            start = self._epoch_start
        else:
            start = self.log.first_index_of_term(term, index)
        return pack_zxid(term, index - start + 1)

    def status(self) -> Status:
        return Status(
            node_id=self._id,
            role=self.role.value,
            term=self._rec.accepted_epoch,
            leader=self._leader,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index,
            first_index=self.log.first_index,
            conf=self._conf,
            dropped=dict(self._dropped),
            lead_transferee=self._transferee,
        )

    def leadership_rounds(self) -> tuple[int, int]:
        return self.reads.round, self.reads.confirmed(self._voters, self._id)

    def observe(self) -> NodeView:
        log = self.log
        return NodeView(
            node_id=self._id,
            term=self._rec.accepted_epoch,
            is_leader=self._state is ZabState.LEADING and self._phase in (Phase.SYNC,
                                                                           Phase.BROADCAST),
            commit=log.committed,
            offset=log.offset,
            offset_term=log.offset_term,
            entries=log._entries,
        )

    def quiescent(self) -> bool:
        """Nothing in flight: a leader in BROADCAST whose every member holds and knows its
        whole committed log, with no read or transfer pending; a synchronized follower or
        observer that knows its leader and has committed and applied everything it holds."""
        if self._in_ready is not None or self.has_ready():
            return False
        log = self.log
        if log.committed != log.last_index or log.applied != log.committed or len(self.reads):
            return False
        if self._state is ZabState.LEADING:
            if self._phase is not Phase.BROADCAST or self._transferee is not None:
                return False
            last = log.last_index
            for node in set(self._voters.voters) | set(self._conf.learners):
                if node == self._id:
                    continue
                peer = self._peers.get(node)
                if (
                    peer is None
                    or peer.phase is not PeerPhase.BROADCAST
                    or peer.match != last
                    or peer.commit_sent != last
                ):
                    return False
            return True
        return (
            self._state in (ZabState.FOLLOWING, ZabState.OBSERVING)
            and self._phase is Phase.BROADCAST
            and self._leader is not None
            and not self._sync_todo
        )

    def is_from_leader(self, message: object) -> bool:
        if not isinstance(message, _FROM_LEADER):
            return False
        m: Any = message
        return (
            self._state in (ZabState.FOLLOWING, ZabState.OBSERVING)
            and m.frm == self._leader
            and m.epoch >= self._rec.accepted_epoch
        )

    def conf_at(self, index: int) -> ConfState:
        """The applied configuration as of ``index`` (``index`` >= the snapshot index)."""
        return conf_at(self._confs, index)

    # === helpers ===========================================================================

    def _count(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def _send(self, message: Any) -> None:
        self._msgs.append(message)

    def _is_voter(self, node: str | None = None) -> bool:
        return (node or self._id) in self._voters

    def _is_member(self, node: str) -> bool:
        return node in self._voters or node in self._conf.learners

    def _self_vote(self) -> Vote:
        return Vote(self._id, self._rec.current_epoch, self.log.last_term, self.log.last_index,
                    self._transfer_vote)

    def _history_key(self) -> tuple[int, int, int]:
        return (self._rec.current_epoch, self.log.last_term, self.log.last_index)

    def _set_record(self, **changes: Any) -> None:
        self._rec = msgspec.structs.replace(self._rec, **changes)

    def _random_timeout(self) -> int:
        t = self.cfg.election_timeout_ticks
        return t + self._rng.randrange(t)

    def _peer_state(self) -> int:
        return {
            ZabState.LOOKING: PeerState.LOOKING,
            ZabState.FOLLOWING: PeerState.FOLLOWING,
            ZabState.LEADING: PeerState.LEADING,
            ZabState.OBSERVING: PeerState.OBSERVING,
        }[self._state]

    # === transitions =======================================================================

    def _leave(self) -> None:
        """Forget everything of the state being left."""
        self._failed_reads.extend(self.reads.reset())
        self._peers = {}
        self._infos = {}
        self._acks = {}
        self._epoch_chosen = False
        self._need_bcast = False
        self._need_commit_bcast = False
        self._transferee = None
        self._transfer_elapsed = 0
        self._vouched = {}
        self._reset_rx()
        self._sync_nl = None
        self._sync_todo = []
        self._sync_waiting = False
        self._elapsed = 0
        self._heartbeat_elapsed = 0
        self._invite_elapsed = 0
        self._info_elapsed = 0

    def _reset_rx(self) -> None:
        self._rx_mode = -1
        self._rx_prev = (0, 0)
        self._rx_entries = []
        self._rx_snap = None
        self._rx_snapshot = None

    def _become_looking(self, transfer: bool = False) -> None:
        self._leave()
        self._state = ZabState.LOOKING
        self._phase = Phase.ELECTION
        self._leader = None
        self._epoch_start = 0
        self._transfer_vote = transfer
        self._timeout = self._random_timeout()
        self._new_round(self._round + 1)

    def _new_round(self, round_: int) -> None:
        self._round = round_
        self._vote = self._self_vote()
        self._votes = {self._id: self._vote} if self._is_voter() else {}
        self._notify_rounds = 0
        self._broadcast_notification()
        self._maybe_decide()

    def _become_following(self, leader: str) -> None:
        self._leave()
        self._state = ZabState.OBSERVING if not self._is_voter() else ZabState.FOLLOWING
        self._phase = Phase.DISCOVERY
        self._leader = leader
        self._transfer_vote = False
        self._timeout = self._random_timeout()
        self._send(self._follower_info(leader))

    def _follower_info(self, leader: str) -> FollowerInfo:
        rec = self._rec
        return FollowerInfo(self._id, leader, rec.accepted_epoch, rec.accepted_by,
                            standby=self.standby)

    def _become_leading(self) -> None:
        if not self._is_voter():
            raise ProtocolMisuse("only a voter can lead")
        self._leave()
        self._state = ZabState.LEADING
        self._phase = Phase.DISCOVERY
        self._leader = self._id
        self._transfer_vote = False
        self._infos = {self._id: self._rec.accepted_epoch}
        self._maybe_choose_epoch()

    # === inputs ============================================================================

    def tick(self) -> None:
        self._check_not_in_ready()
        reads = self.reads
        reads.tick()
        if reads:
            self._failed_reads.extend(reads.expire(self._read_timeout_ticks))
        if self._state is ZabState.LOOKING:
            self._tick_looking()
        elif self._state is ZabState.LEADING:
            self._tick_leading()
        else:
            self._tick_following()

    def _tick_looking(self) -> None:
        self._notify_elapsed += 1
        if self._notify_elapsed >= self._notify_timeout:
            self._notify_elapsed = 0
            self._notify_timeout = max(1, self.cfg.election_timeout_ticks // 2) + self._rng.randrange(
                self.cfg.election_timeout_ticks
            )
            self._notify_rounds += 1
            if self._is_voter() and self._notify_rounds >= ROUNDS_PER_ELECTION_RESTART:
                self._new_round(self._round + 1)
            else:
                self._broadcast_notification()

    def _tick_following(self) -> None:
        self._elapsed += 1
        if self._elapsed >= self._timeout:
            self._count("leader_silent")
            self._become_looking()
            return
        if self._phase is Phase.DISCOVERY and self._leader is not None:
            self._info_elapsed += 1
            if self._info_elapsed >= max(1, self.cfg.election_timeout_ticks // 3):
                self._info_elapsed = 0
                self._send(self._follower_info(self._leader))
        elif self._phase is Phase.SYNC and self._leader is not None and not self._sync_todo:
            self._info_elapsed += 1
            if self._info_elapsed >= self.cfg.election_timeout_ticks:
                # No sync came for a whole timeout: ask to be discovered again.
                self._info_elapsed = 0
                self._count("sync_stalled")
                self._phase = Phase.DISCOVERY
                self._send(self._follower_info(self._leader))

    def _tick_leading(self) -> None:
        t = self.cfg.election_timeout_ticks
        self._elapsed += 1
        if self._phase is not Phase.BROADCAST:
            if self._elapsed >= 2 * t:
                self._count("epoch_not_established")
                self._become_looking()
                return
        elif self._elapsed >= t:
            self._elapsed = 0
            active = [self._id] + [n for n, p in self._peers.items() if p.active]
            if not self._voters.has_quorum(active):
                self._count("quorum_lost")
                self._become_looking()
                return
            for peer in self._peers.values():
                peer.active = False
        if self._transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= t:
                self._transferee = None
        for node, peer in list(self._peers.items()):
            if peer.phase is PeerPhase.BROADCAST:
                continue
            peer.elapsed += 1
            if peer.elapsed >= t and self._epoch_chosen:
                # The epoch or the sync was lost on the way: discover this follower again.
                self._rediscover(node, peer)
        self._invite_elapsed += 1
        if self._invite_elapsed >= t:
            self._invite_elapsed = 0
            self._invite()
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_ping()

    def campaign(self) -> None:
        """Start a new election round now (tests, operator tools)."""
        self._check_not_in_ready()
        if self._state is ZabState.LEADING or not self._is_voter():
            return
        self._become_looking()

    def propose(self, data: bytes) -> tuple[int, int]:
        self._check_not_in_ready()
        self._check_can_propose()
        return self._append_local(EntryKind.NORMAL, bytes(data))

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        self._check_not_in_ready()
        self._check_can_propose()
        conf = self._conf
        check_proposal(
            conf, change, self._id, self._pending_conf_index, self.log.applied,
            "this epoch's first entry",
        )
        index, term = self._append_local(EntryKind.CONF_CHANGE, encode_conf_change(change))
        self._pending_conf_index = index
        return index, term

    def read(self, request_id: bytes) -> None:
        self._check_not_in_ready()
        if self._state is not ZabState.LEADING:
            raise NotLeader(self._leader)
        if request_id in self.reads:
            raise ProtocolMisuse(f"read {request_id!r} is already pending: ids must be unique")
        if self._phase is not Phase.BROADCAST or self.log.committed < self._epoch_start:
            self.reads.wait_for_commit(request_id)
        else:
            self.reads.add(request_id, self.log.committed)

    def transfer_leadership(self, to: str) -> None:
        self._check_not_in_ready()
        if self._state is not ZabState.LEADING:
            raise NotLeader(self._leader)
        if to == self._id:
            self._transferee = None
            return
        if to not in self._voters:
            raise ProtocolMisuse(f"cannot transfer leadership to {to!r}: not a voter")
        if self._transferee == to:
            return
        self._transferee = to
        self._transfer_elapsed = 0
        self._maybe_hand_over()

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
        if kind is Notification:
            self._on_notification(m)
        elif kind is TransferNow and self._state is ZabState.LOOKING:
            rec = self._rec
            if m.epoch == rec.accepted_epoch and m.frm == rec.accepted_by and self._is_voter():
                self._become_looking(transfer=True)  # the leader's LOOKING notice came first
            else:
                self._count("not_following")
        elif kind in _TO_LEADER:
            if self._state is not ZabState.LEADING:
                self._count("not_leading")
                return
            self._step_leader(m)
        else:
            self._step_follower(m)

    # --- Fast Leader Election --------------------------------------------------------------

    def _notification(self, to: str) -> Notification:
        conf_index, conf_epoch = self._conf_version if self._conf.voters else (0, 0)
        if self._state is ZabState.LOOKING:
            v = self._vote
            state = PeerState.LOOKING if self._is_voter() else PeerState.OBSERVING
            return Notification(self._id, to, self._round, state, v.leader, v.epoch,
                                v.last_term, v.last_index, v.transfer, self._conf,
                                conf_index, conf_epoch)
        leader = self._leader or self._id
        return Notification(self._id, to, self._round, self._peer_state(), leader,
                            self._rec.accepted_epoch, self.log.last_term, self.log.last_index,
                            False, self._conf, conf_index, conf_epoch)

    def _broadcast_notification(self) -> None:
        for voter in sorted(self._voters.voters):
            if voter != self._id:
                self._send(self._notification(voter))

    def _on_notification(self, m: Notification) -> None:
        if self._state is not ZabState.LOOKING:
            if m.state == PeerState.LOOKING and m.frm == self._leader and self._state in (
                ZabState.FOLLOWING, ZabState.OBSERVING
            ):
                # Our leader gave its epoch up: look for the next one at once.
                self._become_looking()
                return
            if m.state in (PeerState.LOOKING, PeerState.OBSERVING):
                self._send(self._notification(m.frm))
            return
        # LOOKING
        if self._maybe_adopt_conf(m) and self._state is not ZabState.LOOKING:
            return  # the adopted configuration decided the election at once
        if (
            m.state == PeerState.LOOKING
            and 0 < m.conf_index < self._conf_version[0]
            and m.conf != self._conf
            and self._conf.voters
            and self._is_member(m.frm)
        ):
            # The sender missed a change we know committed: our notification carries it (an
            # older version of the same configuration, a snapshot's, needs no answer).
            self._send(self._notification(m.frm))
        if m.state == PeerState.LEADING:
            # Follow it even if its epoch is below what we accepted: our FOLLOWERINFO tells it,
            # and a leader behind a member's promise gives its epoch up (_on_follower_info).
            if m.leader != m.frm:
                self._count("leader_vote_not_own")
            elif (
                self._voters.voters
                and not self._is_voter(m.frm)
                and self._vouched.get(m.frm) != m.epoch
            ):
                # Only a voter of our configuration, or a leader one of them follows in this
                # epoch, can lead us; a node that knows no configuration yet (a new member)
                # follows whoever invites it.
                self._count("leader_not_voter")
            else:
                self._become_following(m.frm)
            return
        if m.state == PeerState.FOLLOWING:
            self._on_following_notice(m)
            return
        if m.state == PeerState.OBSERVING:
            self._send(self._notification(m.frm))
            return
        if not self._is_voter(m.frm):
            self._count("vote_from_non_voter")
            return
        if not self._is_voter():
            return  # a learner or a joiner does not take part in the vote
        if not self._is_voter(m.leader):
            self._count("vote_for_non_voter")
            return
        theirs = Vote(m.leader, m.epoch, m.last_term, m.last_index, m.transfer)
        if m.round > self._round:
            self._round = m.round
            mine = self._self_vote()
            self._vote = theirs if theirs.key() > mine.key() else mine
            self._votes = {self._id: self._vote}
            self._notify_rounds = 0
            self._broadcast_notification()
        elif m.round < self._round:
            self._send(self._notification(m.frm))
            return
        elif theirs.key() > self._vote.key():
            self._vote = theirs
            self._votes[self._id] = theirs
            self._broadcast_notification()
        self._votes[m.frm] = theirs
        self._maybe_decide()

    def _maybe_adopt_conf(self, m: Notification) -> bool:
        """Adopt the committed configuration ``m`` carries if it is strictly newer than ours.

        A member down or cut off while the group changed holds an older configuration than the
        group's, and the election may need it with the new one: one moved learner -> voter
        while away thinks it is an observer and never votes, so a voter whose quorum needs it
        waits for ever; a voter that restarted with a stale commit hint (the commit index is
        persisted lazily) counts a peer the group removed, whose replica may now be a fresh
        joiner that never answers. ZooKeeper 3.5+ solves this in Fast Leader Election: a
        notification carries the sender's last committed configuration and its version, and a
        LOOKING server adopts a newer one. So do we: only applied (hence committed)
        configurations, or ones adopted that way, are ever sent, and a committed configuration
        at a position is the same on every node (state-machine safety), so the version names
        it. We take one only while LOOKING, only from a member of our configuration (a stranger
        cannot rewrite who we listen to), only if we know a configuration at all (a new member
        learns the group from its sync), and only beyond what our own log applied (up to there
        the log is the authority). The log is untouched: discovery and synchronization still
        decide the history, and when the log applies that far its own configuration, the same
        one, takes over (:meth:`_apply_conf_entry`). Quorums stay safe: the adopted
        configuration is a committed one, and consecutive single-server configurations share a
        majority, as with the one the log would give. Returns whether it adopted.
        """
        if not m.conf_index or m.conf_index <= self._conf_version[0]:
            return False
        if m.conf_index <= self.log.applied or not self._conf.voters:
            return False
        if not self._is_member(m.frm) or m.conf == self._conf:
            return False
        self._count("conf_adopted")
        self._conf = m.conf
        self._voters = JointConfig(m.conf.voters)
        self._conf_version = (m.conf_index, m.conf_epoch)
        self._adopted_index = m.conf_index
        # Who votes changed: start a new round under the adopted configuration.
        self._new_round(self._round + 1)
        return True

    def _on_following_notice(self, m: Notification) -> None:
        """A voter of our configuration answered our notification: it follows ``m.leader``.

        A leader of our configuration answers our notifications itself. A leader that is not a
        voter of our configuration was made one by a membership change this node has not
        applied yet (it missed the change while cut off or down); without help it would refuse
        that leader's invitations for ever, and with the group's quorum following that leader
        no election would ever need it. The voter's word is the evidence: remember the leader
        and its epoch, and ask it directly (a leader answers a LOOKING notification with its
        own); its LEADING notification of that epoch is then followed. Safety does not rest on
        this choice: the leader takes this node only if it is a member of the leader's
        configuration, and discovery and synchronization run as for any follower. A stranger
        alone still cannot make a member follow it: the vouching voter must be ours.
        """
        if not self._is_voter(m.frm) or m.leader in (m.frm, self._id):
            return
        if self._is_voter(m.leader):
            return  # that leader answers our notifications itself
        self._vouched[m.leader] = m.epoch
        self._send(self._notification(m.leader))

    def _maybe_decide(self) -> None:
        if self._state is not ZabState.LOOKING or not self._is_voter():
            return
        agreeing = [n for n, v in self._votes.items() if v == self._vote]
        if not self._voters.has_quorum(agreeing):
            return
        if self._vote.leader == self._id:
            self._become_leading()
        else:
            self._become_following(self._vote.leader)

    # --- leader side -----------------------------------------------------------------------

    def _step_leader(self, m: Any) -> None:
        kind = type(m)
        if kind is FollowerInfo:
            self._on_follower_info(m)
            return
        peer = self._peers.get(m.frm)
        if peer is None:
            self._count("not_asked")
            return
        if m.epoch != self._rec.accepted_epoch or not self._epoch_chosen:
            self._count("stale_epoch")
            return
        peer.active = True
        if kind is AckEpoch:
            self._on_ack_epoch(m, peer)
        elif kind is SyncAck:
            self._on_sync_ack(m, peer)
        elif kind is AckNewLeader:
            self._on_ack_newleader(m, peer)
        elif kind is Ack:
            self._on_ack(m, peer)
        else:
            self._on_ping_ack(m, peer)

    def _on_follower_info(self, m: FollowerInfo) -> None:
        if not self._is_member(m.frm):
            self._count("not_member")
            return
        peer = self._peers.get(m.frm)
        if peer is None:
            peer = self._peers[m.frm] = Peer(PeerPhase.INFO)
        peer.active = True
        peer.accepted_epoch = m.accepted_epoch
        peer.standby = m.standby
        if m.standby:
            self._count("follower_standby")
            self._infos.pop(m.frm, None)
            self._acks.pop(m.frm, None)
        if not self._epoch_chosen:
            if self._is_voter(m.frm) and not m.standby:
                self._infos[m.frm] = m.accepted_epoch
            self._maybe_choose_epoch()
            return
        epoch = self._rec.accepted_epoch
        if m.accepted_epoch > epoch or (m.accepted_epoch == epoch and m.accepted_by != self._id):
            if self._is_voter(m.frm):
                # This voter promised a newer epoch than ours: it can never join ours, so start
                # again; the next leader's epoch will be above its promise.
                self._count("follower_promised_newer_epoch")
                self._become_looking()
            else:
                self._count("observer_promised_newer_epoch")
            return
        # A follower sends FOLLOWERINFO only in its discovery phase: (re)discover it.
        self._rediscover(m.frm, peer)

    def _rediscover(self, node: str, peer: Peer) -> None:
        """Send NEWEPOCH again: the follower answers with a fresh ACKEPOCH to sync from."""
        peer.phase = PeerPhase.EPOCH
        peer.elapsed = 0
        peer.ack = None
        self._send(NewEpoch(self._id, node, self._rec.accepted_epoch))

    def _maybe_choose_epoch(self) -> None:
        if self._epoch_chosen or not self._voters.has_quorum(self._infos):
            return
        epoch = max(self._infos.values()) + 1
        if epoch > _NUMBER_MAX:
            self._count("epoch_exhausted")
            return
        self._set_record(accepted_epoch=epoch, accepted_by=self._id)
        self._epoch_chosen = True
        self._elapsed = 0
        for node, peer in self._peers.items():
            peer.phase = PeerPhase.EPOCH
            peer.elapsed = 0
            # After persisting our acceptedEpoch: NEWEPOCH goes in ``messages``.
            self._send(NewEpoch(self._id, node, epoch))
        self._maybe_start_sync()

    def _on_ack_epoch(self, m: AckEpoch, peer: Peer) -> None:
        if peer.phase is PeerPhase.INFO:
            self._count("ack_epoch_unexpected")
            return
        if peer.phase is not PeerPhase.EPOCH:
            # The follower acknowledged our epoch again (a NEWEPOCH of ours arrived late or
            # twice), which reset its sync: what it says now is where to sync it from.
            self._count("ack_epoch_again")
        peer.ack = m
        if self._phase is Phase.DISCOVERY:
            if self._is_voter(m.frm) and not peer.standby:
                self._acks[m.frm] = m
            self._maybe_start_sync()
        else:
            self._start_peer_sync(m.frm, peer)  # (in SYNC it no longer counts for commit)

    def _self_epoch_durable(self) -> bool:
        return self._persisted_rec.accepted_epoch == self._rec.accepted_epoch

    def _maybe_start_sync(self) -> None:
        if self._phase is not Phase.DISCOVERY or not self._epoch_chosen:
            return
        if not self._self_epoch_durable():
            return  # advance() calls again once our acceptedEpoch is durable
        members = list(self._acks) + [self._id]
        if not self._voters.has_quorum(members):
            return
        mine = self._history_key()
        for node, ack in self._acks.items():
            if (ack.current_epoch, ack.last_term, ack.last_index) > mine:
                # Zab picks the most up-to-date history of the quorum; ours is not it.
                self._count("follower_ahead")
                self._become_looking()
                return
        epoch = self._rec.accepted_epoch
        self._phase = Phase.SYNC
        self._elapsed = 0
        self._epoch_start = self.log.last_index + 1
        self.log.append(Entry(epoch, self._epoch_start, EntryKind.NOOP, b""))
        self._set_record(current_epoch=epoch)
        self._pending_conf_index = self._epoch_start
        for node, peer in self._peers.items():
            if peer.phase is PeerPhase.EPOCH and peer.ack is not None:
                self._start_peer_sync(node, peer)

    def _start_peer_sync(self, node: str, peer: Peer) -> None:
        """Choose DIFF, TRUNC or SNAP for ``node`` from its ACKEPOCH and start sending."""
        ack = peer.ack
        assert ack is not None
        log = self.log
        peer.phase = PeerPhase.SYNC
        peer.elapsed = 0
        peer.newleader_sent = False
        peer.snap_done = False
        peer.sync_end = log.last_index
        if ack.last_index <= log.last_index and log.term(ack.last_index) == ack.last_term:
            mode, prev = SyncMode.DIFF, ack.last_index
        else:
            prev = ack.commit if ack.commit <= log.last_index else 0
            common = log.last_index_of_term(ack.last_term)
            if common is not None:
                common = min(common, ack.last_index)
                if common > prev and log.term(common) == ack.last_term:
                    prev = common
            mode = SyncMode.TRUNC
        if prev < log.offset or log.term(prev) is None:
            mode = SyncMode.SNAP
            snap = log.snapshot
            if snap is None:
                raise InvariantViolation(
                    f"entries before {log.first_index} are compacted but no snapshot is held"
                )
            peer.snap_index = snap.meta.index
            peer.sync_prev = snap.meta.index
            peer.sync_sent = peer.sync_acked = snap.meta.index
            peer.mode = mode
            self._send_snap_chunk(node, 0)
            return
        peer.mode = mode
        peer.sync_prev = prev
        peer.sync_sent = peer.sync_acked = prev
        self._send_sync_entries(node, peer, start=True)

    def _send_snap_chunk(self, node: str, offset: int) -> None:
        snap = self.log.snapshot
        assert snap is not None
        data = snap.data
        end = min(offset + self.cfg.snapshot_chunk_bytes, len(data))
        self._send(SnapChunk(self._id, node, self._rec.accepted_epoch, snap.meta, offset,
                             data[offset:end], len(data), end == len(data)))

    def _send_sync_entries(self, node: str, peer: Peer, start: bool = False) -> None:
        """Send the sync from ``sync_sent`` on, a window of batches; NEWLEADER at the end."""
        log = self.log
        if peer.sync_sent < log.offset:
            self._rediscover(node, peer)  # compacted under our feet: start again
            return
        window = self.cfg.max_inflight_msgs * self.cfg.max_entries_per_msg
        while start or peer.sync_sent - peer.sync_acked < window:
            lo = peer.sync_sent + 1
            entries: list[Entry] = []
            if lo <= peer.sync_end:
                entries = log.slice(lo, peer.sync_end + 1, self.cfg.max_entries_per_msg,
                                    self.cfg.max_bytes_per_msg)
            if not entries and not start:
                break
            prev_term = log.term(peer.sync_sent)
            assert prev_term is not None
            self._send(SyncEntries(self._id, node, self._rec.accepted_epoch, peer.mode,
                                   peer.sync_sent, prev_term, tuple(entries), start=start))
            start = False
            if not entries:
                break
            peer.sync_sent = entries[-1].index
        if peer.sync_sent >= peer.sync_end and not peer.newleader_sent:
            peer.newleader_sent = True
            end_term = log.term(peer.sync_end)
            assert end_term is not None
            self._send(NewLeader(self._id, node, self._rec.accepted_epoch, peer.sync_end,
                                 end_term, min(log.committed, peer.sync_end),
                                 self._epoch_start))

    def _on_sync_ack(self, m: SyncAck, peer: Peer) -> None:
        if peer.phase is not PeerPhase.SYNC:
            self._count("sync_ack_unexpected")
            return
        snap = self.log.snapshot
        if peer.mode == SyncMode.SNAP and not peer.snap_done:
            if snap is None or snap.meta.index != peer.snap_index:
                self._rediscover(m.frm, peer)
                return
            peer.elapsed = 0
            if m.snapshot_received < len(snap.data):
                self._send_snap_chunk(m.frm, m.snapshot_received)
                return
            peer.snap_done = True
            self._send_sync_entries(m.frm, peer, start=False)
            return
        if not peer.sync_prev <= m.index <= peer.sync_sent:
            self._count("sync_ack_not_sent")
            return
        peer.elapsed = 0
        if m.index < peer.sync_acked:
            return  # late
        if m.index == peer.sync_acked and m.index < peer.sync_sent:
            # The follower holds less than we sent: resend from where it is.
            peer.sync_sent = m.index
            peer.newleader_sent = False
        peer.sync_acked = m.index
        self._send_sync_entries(m.frm, peer)

    def _on_ack_newleader(self, m: AckNewLeader, peer: Peer) -> None:
        if peer.phase is not PeerPhase.SYNC or not peer.newleader_sent:
            self._count("ack_newleader_unexpected")
            return
        if not m.ok:
            self._rediscover(m.frm, peer)
            return
        if m.last_index != peer.sync_end:
            self._count("ack_newleader_not_sent")
            return
        peer.phase = PeerPhase.BROADCAST
        peer.match = m.last_index
        peer.next = m.last_index + 1
        peer.stall = 0
        peer.inflights = Inflights(self.cfg.max_inflight_msgs)
        if self._phase is Phase.BROADCAST:
            peer.commit_sent = min(self.log.committed, peer.match)
            self._send(UpToDate(self._id, m.frm, self._rec.accepted_epoch, peer.commit_sent))
        self._maybe_commit()
        self._send_proposals(m.frm, peer)

    def _on_ack(self, m: Ack, peer: Peer) -> None:
        if peer.phase is not PeerPhase.BROADCAST:
            self._count("ack_unexpected")
            return
        log = self.log
        if m.index > log.last_index:
            self._count("ack_beyond_log")
            return
        if m.gap:
            if m.index < peer.match:
                self._count("stale_gap")
                return
            peer.next = m.index + 1
            peer.inflights.reset()
            self._send_proposals(m.frm, peer)
            return
        if m.index > peer.match:
            peer.match = m.index
            peer.stall = 0
        if peer.next <= m.index:
            peer.next = m.index + 1
        peer.inflights.free_le(m.index)
        self._maybe_commit()
        self._send_proposals(m.frm, peer)
        self._maybe_send_commit(m.frm, peer)
        self._maybe_hand_over()

    def _on_ping_ack(self, m: PingAck, peer: Peer) -> None:
        if m.ctx > self.reads.round:
            self._count("ctx_not_sent")
            return
        if m.ctx:
            self.reads.ack(m.frm, m.ctx)
            self._release_reads()
        log = self.log
        if (
            peer.phase is PeerPhase.BROADCAST
            and peer.match < m.last_index <= log.last_index
            and log.term(m.last_index) == m.last_term == self._rec.accepted_epoch
        ):
            # Its ACKs were lost: it holds (persisted) our entries up to there.
            peer.match = m.last_index
            peer.stall = 0
            if peer.next <= m.last_index:
                peer.next = m.last_index + 1
            peer.inflights.free_le(m.last_index)
            self._maybe_commit()
            self._send_proposals(m.frm, peer)
            return
        if peer.phase is PeerPhase.BROADCAST and peer.match < log.last_index:
            # No progress: the follower's last entry is not beyond its match, or it cannot be
            # checked (compacted away here since: only a resend, which turns into a SNAP, can
            # bring that follower up).
            if m.last_index <= peer.match or log.term(m.last_index) is None:
                peer.stall += 1
                if peer.stall >= limits.RAFT_REPLICATE_STALL_HEARTBEATS:
                    peer.stall = 0
                    peer.next = peer.match + 1
                    peer.inflights.reset()
                    self._send_proposals(m.frm, peer)

    def _append_local(self, kind: int, data: bytes) -> tuple[int, int]:
        index = self.log.last_index + 1
        entry = Entry(self._rec.accepted_epoch, index, kind, data)
        self.log.append(entry)
        self._need_bcast = True
        return entry.index, entry.term

    def _send_proposals(self, node: str, peer: Peer) -> None:
        log = self.log
        while not peer.inflights.full() and peer.next <= log.last_index:
            if peer.next - 1 < log.offset:
                self._rediscover(node, peer)  # what it needs was compacted: SNAP
                return
            entries = log.slice(peer.next, log.last_index + 1, self.cfg.max_entries_per_msg,
                                self.cfg.max_bytes_per_msg)
            prev_term = log.term(peer.next - 1)
            assert prev_term is not None
            last = entries[-1].index
            self._send(Proposal(self._id, node, self._rec.accepted_epoch, peer.next - 1,
                                prev_term, tuple(entries), self.zxid(last), log.committed))
            peer.inflights.add(last)
            peer.next = last + 1
            peer.commit_sent = max(peer.commit_sent, min(log.committed, last))

    def _maybe_send_commit(self, node: str, peer: Peer) -> None:
        """COMMIT what we proposed to this follower of our commit, unless it was told already.

        §IV-C: on a quorum of ACKs the leader sends COMMIT to *all* followers, not only to those
        that acknowledged. It sends COMMIT(z) only once PROPOSAL(z) went to the follower on the
        same FIFO channel; a follower commits at most what it holds (``_on_commit``), and after
        its sync every entry it holds is this leader's, so it never commits what the leader did
        not."""
        index = min(self.log.committed, peer.next - 1)
        if index > peer.commit_sent:
            peer.commit_sent = index
            self._send(Commit(self._id, node, self._rec.accepted_epoch, index, self.zxid(index)))

    def _bcast_proposals(self) -> None:
        commit_news = self._need_commit_bcast
        self._need_bcast = False
        self._need_commit_bcast = False
        for node, peer in self._peers.items():
            if peer.phase is not PeerPhase.BROADCAST:
                continue
            self._send_proposals(node, peer)
            if commit_news:
                self._maybe_send_commit(node, peer)

    def _bcast_ping(self) -> None:
        ctx = self.reads.next_round()
        committed = self.log.committed
        epoch = self._rec.accepted_epoch
        if not self._epoch_chosen:
            return
        for node, peer in self._peers.items():
            if peer.phase in (PeerPhase.SYNC, PeerPhase.BROADCAST):
                commit = min(committed, peer.match) if peer.phase is PeerPhase.BROADCAST else 0
                self._send(Ping(self._id, node, epoch, commit, ctx))
        self._release_reads()

    def _release_reads(self) -> None:
        if self._phase is not Phase.BROADCAST:
            return
        for request_id, index in self.reads.release(self._voters, self._id):
            self._read_states.append(ReadState(request_id, index))

    def _maybe_commit(self) -> None:
        if self._state is not ZabState.LEADING or self._phase is Phase.DISCOVERY:
            return
        log = self.log
        acked: dict[str, int] = {}
        if self._persisted_rec.current_epoch == self._rec.accepted_epoch:
            acked[self._id] = log.stable  # our NOOP and currentEpoch are durable
        for node, peer in self._peers.items():
            if peer.phase is PeerPhase.BROADCAST:
                acked[node] = peer.match
        index = min(self._voters.committed_index(acked), log.last_index)
        if index <= log.committed or log.term(index) != self._rec.accepted_epoch:
            return
        log.commit_to(index)
        self._need_commit_bcast = True
        if self._phase is Phase.SYNC:
            # A quorum acknowledged NEWLEADER: the initial history is committed (UPTODATE).
            self._phase = Phase.BROADCAST
            self._elapsed = 0
            for node, peer in self._peers.items():
                peer.active = True
                if peer.phase is PeerPhase.BROADCAST:
                    peer.commit_sent = min(log.committed, peer.match)
                    self._send(UpToDate(self._id, node, self._rec.accepted_epoch,
                                        peer.commit_sent))
        if self.reads.waiting and log.committed >= self._epoch_start:
            self.reads.admit_waiting(log.committed)

    def _invite(self) -> None:
        """Tell the members we lead that we have not heard from (restarted or new nodes) or
        that are not synchronized yet.

        A peer that is still in discovery or sync may have given up on us (a lost NEWEPOCH,
        a follower timed out to LOOKING): a LOOKING node drops our NEWEPOCH (``not_following``),
        and one that knows no voter yet (a new member) sends no notification to anyone, so
        only this invitation brings it back. A follower that still follows us ignores it."""
        members = set(self._voters.voters) | set(self._conf.learners)
        for node in sorted(members):
            if node == self._id:
                continue
            peer = self._peers.get(node)
            if peer is None or peer.phase is not PeerPhase.BROADCAST:
                self._send(self._notification(node))

    def _maybe_hand_over(self) -> None:
        to = self._transferee
        if to is None or self._phase is not Phase.BROADCAST:
            return
        peer = self._peers.get(to)
        if peer is None or peer.phase is not PeerPhase.BROADCAST:
            return
        if peer.match == self.log.last_index and self.log.stable == self.log.last_index:
            self._send(TransferNow(self._id, to, self._rec.accepted_epoch))
            self._count("transferred")
            self._become_looking()

    def _check_can_propose(self) -> None:
        if self._state is not ZabState.LEADING:
            raise NotLeader(self._leader)
        if self._phase is not Phase.BROADCAST:
            raise ProposalDropped("this leader's epoch is not established yet; retry")
        if self._transferee is not None:
            raise ProposalDropped(
                f"leadership is being transferred to {self._transferee}; retry there"
            )
        counter = self.log.last_index + 1 - self._epoch_start + 1
        if counter > self.cfg.counter_max:
            # zxid rollover: the epoch has no counter left; a new epoch must start.
            self._count("zxid_rollover")
            self._become_looking()
            raise ProposalDropped("the zxid counter of this epoch is exhausted; re-electing")

    # --- follower side ---------------------------------------------------------------------

    def _step_follower(self, m: Any) -> None:
        kind = type(m)
        if self._state not in (ZabState.FOLLOWING, ZabState.OBSERVING):
            self._count("not_following")
            return
        if m.frm != self._leader:
            self._count("not_leader")
            return
        if kind is NewEpoch:
            self._on_new_epoch(m)
            return
        if m.epoch != self._rec.accepted_epoch or self._phase is Phase.DISCOVERY:
            self._count("stale_epoch")
            return
        self._elapsed = 0
        if self._phase is Phase.BROADCAST and kind in (SyncEntries, SnapChunk, NewLeader):
            # Synchronized already in this epoch (a duplicate or a late message): a new sync
            # always starts with NEWEPOCH.
            self._count("sync_after_sync")
            return
        if kind in (SyncEntries, SnapChunk, NewLeader):
            self._info_elapsed = 0
        if kind is SyncEntries:
            self._on_sync_entries(m)
        elif kind is SnapChunk:
            self._on_snap_chunk(m)
        elif kind is NewLeader:
            self._on_new_leader(m)
        elif kind is UpToDate:
            self._on_up_to_date(m)
        elif kind is Proposal:
            self._on_proposal(m)
        elif kind is Commit:
            self._on_commit(m.index)
        elif kind is Ping:
            if self._phase is Phase.BROADCAST and not self._sync_todo:
                self._on_commit(m.commit)
            self._send(PingAck(self._id, m.frm, m.epoch, m.ctx, self.log.last_index,
                               self.log.last_term))
        else:
            self._on_transfer_now(m)

    def _on_new_epoch(self, m: NewEpoch) -> None:
        rec = self._rec
        if m.epoch > rec.accepted_epoch or (
            m.epoch == rec.accepted_epoch and rec.accepted_by == m.frm
        ):
            self._elapsed = 0
            if m.epoch != rec.accepted_epoch or rec.accepted_by != m.frm:
                self._set_record(accepted_epoch=m.epoch, accepted_by=m.frm)
            self._phase = Phase.SYNC
            self._info_elapsed = 0
            self._reset_rx()
            self._sync_nl = None
            self._sync_todo = []
            self._sync_waiting = False
            log = self.log
            # Sent after the record is persisted (``messages``): ACK-E promises the epoch.
            self._send(AckEpoch(self._id, m.frm, m.epoch, rec.current_epoch, log.last_term,
                                log.last_index, log.committed))
            return
        self._count("newepoch_refused")
        self._become_looking()

    def _rx_end(self) -> tuple[int, int]:
        if self._rx_entries:
            last = self._rx_entries[-1]
            return last.index, last.term
        return self._rx_prev

    def _on_sync_entries(self, m: SyncEntries) -> None:
        if self._sync_todo:
            self._count("sync_busy")
            return
        log = self.log
        if m.start:
            if m.mode == SyncMode.SNAP:
                self._count("sync_snap_without_snapshot")
                return
            held = log.term(m.prev_index)
            if held != m.prev_term or m.prev_index < log.committed:
                # The leader's view of our log is wrong: it must discover us again.
                self._count("sync_prev_mismatch")
                return
            if m.mode == SyncMode.DIFF and m.prev_index != log.last_index:
                self._count("sync_prev_mismatch")
                return
            self._phase = Phase.SYNC
            self._reset_rx()
            self._sync_nl = None
            self._rx_mode = m.mode
            self._rx_prev = (m.prev_index, m.prev_term)
        elif self._rx_mode != m.mode or (
            m.mode == SyncMode.SNAP and self._rx_snapshot is None
        ):
            self._count("sync_out_of_order")
            self._send(SyncAck(self._id, m.frm, m.epoch, 0))
            return
        end = self._rx_end()
        if (m.prev_index, m.prev_term) != end:
            self._count("sync_out_of_order")
            self._send(SyncAck(self._id, m.frm, m.epoch, end[0]))
            return
        self._rx_entries.extend(m.entries)
        self._send(SyncAck(self._id, m.frm, m.epoch, self._rx_end()[0]))

    def _on_snap_chunk(self, m: SnapChunk) -> None:
        if self._sync_todo:
            self._count("sync_busy")
            return
        meta = m.meta
        if meta.index <= self.log.committed:
            self._count("snapshot_stale")
            return
        rx = self._rx_snap
        if m.offset == 0:
            self._phase = Phase.SYNC
            self._reset_rx()
            self._sync_nl = None
            rx = self._rx_snap = (meta, m.size, bytearray())
            self._rx_mode = SyncMode.SNAP
        same = rx is not None and rx[0] == meta and rx[1] == m.size
        if rx is None or not same or m.offset != len(rx[2]):
            held = len(rx[2]) if rx is not None and same else 0
            self._count("snapshot_chunk_out_of_order")
            self._send(SyncAck(self._id, m.frm, m.epoch, 0, held))
            return
        buffer = rx[2]
        buffer += m.data
        if not m.done:
            self._send(SyncAck(self._id, m.frm, m.epoch, 0, len(buffer)))
            return
        image = bytes(buffer)
        self._rx_snap = None
        if self._snapshot_check is not None and not self._snapshot_check(image):
            self._count("snapshot_image_invalid")
            self._send(SyncAck(self._id, m.frm, m.epoch, 0, 0))
            return
        self._rx_snapshot = Snapshot(meta, image)
        self._rx_prev = (meta.index, meta.term)
        self._rx_entries = []
        self._send(SyncAck(self._id, m.frm, m.epoch, meta.index, len(image)))

    def _on_new_leader(self, m: NewLeader) -> None:
        if self._sync_todo or self._sync_nl is not None:
            self._count("newleader_duplicate")
            return
        if self._rx_mode < 0 or self._rx_end() != (m.last_index, m.last_term) or (
            self._rx_mode == SyncMode.SNAP and self._rx_snapshot is None
        ):
            self._count("newleader_out_of_sync")
            self._send(AckNewLeader(self._id, m.frm, m.epoch, self._rx_end()[0], ok=False))
            return
        if (
            self._rx_snapshot is None
            and not self._rx_entries
            and self.log.last_index > max(self._rx_prev[0], self.log.committed)
        ):
            # Nothing to write over our suffix: the cut could not reach the disk.
            self._count("newleader_cannot_truncate")
            self._send(AckNewLeader(self._id, m.frm, m.epoch, self._rx_end()[0], ok=False))
            return
        self._sync_nl = m
        self._sync_todo = list(self.SYNC_STEPS)
        self._sync_waiting = False
        self._run_sync_steps()

    def _run_sync_steps(self) -> None:
        while self._sync_todo and not self._sync_waiting:
            step = self._sync_todo.pop(0)
            getattr(self, "_sync_" + step)()
        self._maybe_finish_sync()

    def _maybe_finish_sync(self) -> None:
        if not self._sync_todo and self._sync_nl is not None and not self._sync_waiting:
            nl = self._sync_nl
            self._sync_nl = None
            self._epoch_start = nl.epoch_start
            self._phase = Phase.BROADCAST
            self._reset_rx()

    def _sync_persist_txns(self) -> None:
        """Step 1: the synced history goes to the log (and to disk in the next Ready)."""
        nl = self._sync_nl
        assert nl is not None
        self._install_sync()
        log = self.log
        commit = min(self._sync_commit_point(nl), log.last_index)
        if commit > log.committed:
            log.commit_to(commit)
        self._sync_waiting = log.has_unstable() or log.pending_snapshot is not None

    def _sync_commit_point(self, nl: NewLeader) -> int:
        """What the follower may apply once the sync is in its log: what the leader says is
        committed, never the uncommitted rest of its history (ZOOKEEPER-4394)."""
        return nl.commit

    def _install_sync(self) -> None:
        log = self.log
        entries = self._rx_entries
        if self._rx_snapshot is not None:
            snap = self._rx_snapshot
            log.restore(snap)
            self._confs = [(snap.meta.index, snap.meta.conf)]
            self._log_conf_version = (snap.meta.index, snap.meta.term)
            if snap.meta.index >= self._adopted_index:
                self._take_log_conf()
            if entries:
                log.truncate_and_append(entries)
            return
        prev_index, _ = self._rx_prev
        # Entries at or below our commit index are committed, hence already ours.
        fresh = [e for e in entries if e.index > log.committed]
        for e in entries:
            if e.index <= log.committed and log.term(e.index) not in (None, e.term):
                raise InvariantViolation(
                    f"the leader's history holds epoch {e.term} at index {e.index} where "
                    f"{self._id} committed epoch {log.term(e.index)}"
                )
        if fresh:
            log.truncate_and_append(fresh)
        del prev_index

    def _sync_write_epoch(self) -> None:
        """Step 2: currentEpoch = e', persisted only after the synced history."""
        nl = self._sync_nl
        assert nl is not None
        if self._rec.current_epoch != nl.epoch:
            self._set_record(current_epoch=nl.epoch)
            self._sync_waiting = True

    def _sync_ack(self) -> None:
        """Step 3: ACK(NEWLEADER), after the history and the epoch are durable."""
        nl = self._sync_nl
        assert nl is not None
        self._send(AckNewLeader(self._id, nl.frm, nl.epoch, nl.last_index))
        self._sync_waiting = True  # the acknowledgement leaves in a Ready of its own

    def _on_up_to_date(self, m: UpToDate) -> None:
        if self._phase is not Phase.BROADCAST or self._sync_todo:
            self._count("uptodate_before_sync")
            return
        self._on_commit(m.commit)

    def _on_commit(self, index: int) -> None:
        if self._phase is not Phase.BROADCAST or self._sync_todo:
            self._count("commit_before_sync")
            return
        log = self.log
        commit = min(index, log.last_index)
        if commit > log.committed:
            log.commit_to(commit)

    def _on_proposal(self, m: Proposal) -> None:
        log = self.log
        if self._phase is not Phase.BROADCAST or self._sync_todo:
            self._count("proposal_before_sync")
            return
        last = m.entries[-1]
        start = self._epoch_start
        if m.zxid != pack_zxid(m.epoch, last.index - start + 1) or m.entries[0].index < start:
            self._count("zxid_mismatch")
            return
        if m.prev_index > log.last_index:
            self._send(Ack(self._id, m.frm, m.epoch, log.last_index,
                           self.zxid(log.last_index), gap=True))
            return
        if m.prev_index >= log.offset and log.term(m.prev_index) != m.prev_term:
            # Not expected after a sync; resend from what is committed, which matches.
            self._count("proposal_prev_mismatch")
            self._send(Ack(self._id, m.frm, m.epoch, log.committed,
                           self.zxid(log.committed), gap=True))
            return
        entries = m.entries
        prev_index, prev_term = m.prev_index, m.prev_term
        if prev_index < log.offset:
            entries = tuple(e for e in entries if e.index > log.offset)
            if not entries:
                self._send(Ack(self._id, m.frm, m.epoch, log.offset, self.zxid(log.offset)))
                return
            prev_index, prev_term = log.offset, log.offset_term
            if entries[0].index != log.offset + 1:
                return
        last_new = log.maybe_append(prev_index, prev_term, entries)
        if last_new is None:
            self._send(Ack(self._id, m.frm, m.epoch, log.committed,
                           self.zxid(log.committed), gap=True))
            return
        self._on_commit(min(m.commit, last_new))
        self._send(Ack(self._id, m.frm, m.epoch, last_new, self.zxid(last_new)))

    def _on_transfer_now(self, m: TransferNow) -> None:
        if not self._is_voter() or self._state is not ZabState.FOLLOWING:
            self._count("transfer_not_voter")
            return
        self._become_looking(transfer=True)

    # === membership ========================================================================

    def _apply_conf_entry(self, entry: Entry) -> bool:
        """Apply a committed CONF_CHANGE to the log's configuration; returns whether the
        configuration in effect changed (not while an adopted, newer one is still ahead)."""
        conf = self._conf_after(self._confs[-1][1], entry)
        if conf is None:
            self._count("conf_change_ignored")
            return False
        self._confs.append((entry.index, conf))
        self._log_conf_version = (entry.index, entry.term)
        if entry.index < self._adopted_index:
            return False  # the adopted configuration is newer still
        self._take_log_conf()
        return True

    def _take_log_conf(self) -> None:
        """The applied log's configuration is in effect again (an adopted one is reached)."""
        self._adopted_index = 0
        self._conf = self._confs[-1][1]
        self._voters = JointConfig(self._conf.voters)
        self._conf_version = self._log_conf_version

    def _conf_after(self, base: ConfState, entry: Entry) -> ConfState | None:
        try:
            change = decode_conf_change(entry.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if not valid_change(change):
            return None
        conf = apply_change(base, change)
        return conf if conf.voters else None

    def _after_conf_applied(self) -> None:
        members = set(self._voters.voters) | set(self._conf.learners)
        if self._state is ZabState.LEADING:
            if not self._is_voter():
                # Removed: hand over to an up-to-date voter and stop leading.
                for node in sorted(self._voters.voters):
                    peer = self._peers.get(node)
                    if peer is not None and peer.match == self.log.last_index:
                        self._send(TransferNow(self._id, node, self._rec.accepted_epoch))
                        break
                self._become_looking()
                return
            for node in list(self._peers):
                if node not in members:
                    del self._peers[node]
            if self._transferee is not None and self._transferee not in self._voters:
                self._transferee = None
            self._maybe_commit()
            self._need_bcast = True
        elif self._state is ZabState.LOOKING:
            self._new_round(self._round + 1)
        elif self._state is ZabState.FOLLOWING and not self._is_voter():
            self._state = ZabState.OBSERVING
        elif self._state is ZabState.OBSERVING and self._is_voter():
            self._state = ZabState.FOLLOWING

    # === Ready =============================================================================

    def _check_not_in_ready(self) -> None:
        if self._in_ready is not None:
            raise ProtocolMisuse("the host must call advance() before using the core again")

    def has_ready(self) -> bool:
        if self._in_ready is not None:
            return False
        if self._state is ZabState.LEADING and (
            self._need_bcast or self._need_commit_bcast or self.reads.need_round
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
            or self._rec != self._persisted_rec
            or self._prev_hs.commit != log.committed
        )

    def ready(self) -> Ready:
        self._check_not_in_ready()
        if self._state is ZabState.LEADING and self._phase is not Phase.DISCOVERY:
            if self._need_bcast or self._need_commit_bcast:
                self._bcast_proposals()
            if self.reads.need_round:
                self._bcast_ping()
        log = self.log
        record_changed = self._rec != self._persisted_rec
        hard_state: HardState | None = None
        if record_changed or self._prev_hs.commit != log.committed:
            record = encode_record(self._rec) if record_changed else self._prev_hs.record
            hard_state = HardState(log.committed, record)
        snapshot = log.pending_snapshot
        entries = log.unstable_entries()
        committed = tuple(log.committed_unapplied())
        read_states: tuple[ReadState, ...] = ()
        if self._read_states:
            limit = log.committed
            ready_reads = [r for r in self._read_states if r.index <= limit]
            self._read_states = [r for r in self._read_states if r.index > limit]
            read_states = tuple(ready_reads)
        failed_reads = tuple(self._failed_reads)
        self._failed_reads.clear()
        must_sync = snapshot is not None or bool(entries) or record_changed
        early: tuple[Any, ...] = ()
        if self._state is ZabState.LEADING:
            early = tuple(m for m in self._msgs if type(m) in _EARLY)
            msgs = tuple(m for m in self._msgs if type(m) not in _EARLY)
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
        self._ready_rec = self._rec
        self._in_ready = rd
        return rd

    def advance(self, ready: Ready) -> None:
        if ready is not self._in_ready:
            raise ProtocolMisuse("advance() must be given the Ready returned by ready()")
        self._in_ready = None
        log = self.log
        if ready.hard_state is not None:
            self._prev_hs = ready.hard_state
            self._persisted_rec = self._ready_rec
        if ready.snapshot is not None:
            log.snapshot_persisted(ready.snapshot)
        if ready.entries:
            last = ready.entries[-1]
            log.stable_to(last.index, last.term)
        if ready.committed_entries:
            conf_changed = False
            for entry in ready.committed_entries:
                if entry.kind == EntryKind.CONF_CHANGE:
                    conf_changed = self._apply_conf_entry(entry) or conf_changed
            log.applied_to(ready.committed_entries[-1].index)
            if self._adopted_index and log.applied >= self._adopted_index:
                self._take_log_conf()  # applied past the adopted version: the log's, the same
                conf_changed = True
            if conf_changed:
                self._after_conf_applied()
        if self._sync_waiting:
            self._sync_waiting = False
            self._run_sync_steps()
        if self._state is ZabState.LEADING:
            if self._phase is Phase.DISCOVERY:
                self._maybe_start_sync()
            else:
                self._maybe_commit()
                self._maybe_hand_over()


def build(
    spec: CoreSpec,
    persisted: PersistedState | None,
    rng: RandomSource,
    *,
    applied: int | None = None,
    snapshot_check: Callable[[bytes], bool] | None = None,
) -> Zab:
    """A ZAB replica from a protocol-neutral :class:`CoreSpec` (the registry's factory).
    ``pre_vote`` and ``check_quorum`` are Raft's and ignored; so are bugs ZAB does not know."""
    config = ZabConfig(
        node_id=spec.node_id,
        election_timeout_ticks=spec.election_timeout_ticks,
        heartbeat_ticks=spec.heartbeat_ticks,
        max_inflight_msgs=spec.max_inflight_msgs,
        max_entries_per_msg=spec.max_entries_per_msg,
        max_bytes_per_msg=spec.max_bytes_per_msg,
        snapshot_chunk_bytes=spec.snapshot_chunk_bytes,
    )
    return Zab(config, persisted, rng, applied=applied, snapshot_check=snapshot_check)
