"""Values shared by every consensus core and by the code that drives them.

Theory of operation
-------------------
A consensus core (Raft, Multi-Paxos, ZAB) is a sans-IO state machine. The host feeds it
inputs (``step(message)``, ``tick()``, ``propose(data)``, ``read(request_id)``) and, when
``has_ready()`` says so, takes one :class:`Ready` from it. A ``Ready`` is the complete list of
effects the core wants, and :func:`exapyte.protocol.drive.drive` applies it in one fixed order:

1. **persist** ``hard_state``, ``snapshot`` and ``entries`` to stable storage (fsync);
2. **send** ``messages`` (only now: a vote or an append acknowledgement must never leave
   before the state it promises is durable);
3. **apply** ``committed_entries`` to the state machine, in index order, then answer the
   ``read_states`` whose index has been applied and fail the ``failed_reads``;
4. **advance**: tell the core the ``Ready`` was handled, so it can move its stable marks.

Words keep one meaning everywhere: *commit* means durable on a quorum; *apply* means executed
by the state machine; *persist* means fsynced locally.

Every value here is a frozen ``msgspec.Struct`` so it can cross the wire and the storage layer
unchanged. Node ids are short strings (``"n1"``).
"""

from __future__ import annotations

import enum

import msgspec

from exapyte import limits


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # an opaque state-machine command
    CONF_CHANGE = 1  # a membership change (encoded ConfChange)
    NOOP = 2  # the empty entry a new leader appends to commit its term


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One log entry. ``index`` starts at 1; index 0 with term 0 is the empty log's sentinel."""

    term: int
    index: int
    kind: int = EntryKind.NORMAL
    data: bytes = b""


class HardState(msgspec.Struct, frozen=True):
    """State that must be persisted before any message that depends on it is sent.

    ``commit`` is the highest index known committed (persisting it is an optimisation: it is
    recomputed after a restart if lost). ``record`` is the core's own durable state, encoded by
    the core and opaque to hosts and storage: Raft's term and vote, Multi-Paxos's promised
    ballot, ZAB's accepted and current epochs. ``b""`` is a node that never wrote one.
    """

    commit: int = 0
    record: bytes = b""


class ConfState(msgspec.Struct, frozen=True):
    """Cluster membership. ``voters_outgoing`` is non-empty only inside a joint configuration."""

    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    voters_outgoing: tuple[str, ...] = ()


class SnapshotMeta(msgspec.Struct, frozen=True):
    """Where a snapshot sits in the log: it replaces every entry up to and including ``index``."""

    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()


class Snapshot(msgspec.Struct, frozen=True):
    """A state-machine image (``data``, opaque to the core) and its position in the log."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""


class PersistedState(msgspec.Struct, frozen=True):
    """What a core is rebuilt from after a restart: read from storage by the host."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()  # the stable log after the snapshot, in index order
    conf: ConfState = ConfState()  # the configuration at boot when no snapshot/log says otherwise


class ReadState(msgspec.Struct, frozen=True):
    """A linearizable read may be answered once the state machine has applied ``index``."""

    request_id: bytes
    index: int


class Role(enum.StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    LEARNER = "learner"


class Status(msgspec.Struct, frozen=True):
    """A read-only summary for operators, metrics and redirects."""

    node_id: str
    role: str
    term: int
    leader: str | None
    commit: int
    applied: int
    last_index: int
    first_index: int
    conf: ConfState
    # added for the consensus cores: remote input dropped, by reason (never raised)
    dropped: dict[str, int] = {}
    lead_transferee: str | None = None


class Ready(msgspec.Struct, frozen=True):
    """Everything a core asks its host to do, in the order :func:`drive` does it.

    - ``hard_state``: persist when not None.
    - ``snapshot``: persist, then install into the state machine, when not None. Log entries up to
      ``snapshot.meta.index`` are discarded by the storage.
    - ``entries``: append to the stable log; an entry whose index already exists replaces it and
      every later entry (conflict truncation).
    - ``early_messages``: peer messages that may be sent *before* the persist step: a leader's
      appends, heartbeats and snapshots (Raft thesis §10.2.1). They promise nothing about the
      sender's own durable state, and the leader counts its own entries towards a quorum only
      once they are persisted, so sending them while the local fsync runs is safe and takes the
      leader's fsync off the critical path.
    - ``messages``: peer messages to send after the above is durable.
    - ``committed_entries``: apply to the state machine, in order.
    - ``read_states``: linearizable reads that may be answered once the state machine has applied
      their index.
    - ``failed_reads``: request ids of reads the core will never answer (leadership was lost, or
      the read could not be confirmed within its timeout): the host fails them, so the client
      retries. Every read ends in exactly one ReadState or one failed read.
    - ``must_sync``: whether the persist step needs an fsync (False when only ``commit`` moved).
    """

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    messages: tuple[msgspec.Struct, ...] = ()
    early_messages: tuple[msgspec.Struct, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    failed_reads: tuple[bytes, ...] = ()
    must_sync: bool = False


# --- membership changes (added for the consensus cores) ----------------------------------------


class ConfChangeKind(enum.IntEnum):
    """One single-server membership step (Raft thesis §4.1)."""

    ADD_VOTER = 0  # add a new voter, or promote an existing learner
    ADD_LEARNER = 1  # add a non-voting member that receives the log
    REMOVE_NODE = 2  # remove a voter or a learner


class ConfChange(msgspec.Struct, frozen=True, array_like=True):
    """The payload of a ``CONF_CHANGE`` entry, encoded with msgpack into ``Entry.data``.

    ``context`` is opaque to the core (a host may put the new member's address there).
    """

    kind: int
    node_id: str
    context: bytes = b""


def encode_conf_change(change: ConfChange) -> bytes:
    """The bytes stored in a ``CONF_CHANGE`` entry."""
    return _CONF_CHANGE_ENCODER.encode(change)


def decode_conf_change(data: bytes) -> ConfChange:
    """Inverse of :func:`encode_conf_change`; raises ``msgspec.DecodeError`` on garbage."""
    return _CONF_CHANGE_DECODER.decode(data)


_CONF_CHANGE_ENCODER = msgspec.msgpack.Encoder()
_CONF_CHANGE_DECODER = msgspec.msgpack.Decoder(ConfChange)


# --- building a core --------------------------------------------------------------------------


class CoreSpec(msgspec.Struct, frozen=True):
    """What :func:`exapyte.protocol.registry.make_core` builds a replica's core from.

    The timing and batching fields mean the same for every protocol (ticks are the host's
    clock); ``pre_vote`` and ``check_quorum`` are Raft's own switches, ignored by the others.
    ``bugs`` are known bugs switched on to prove that the checkers catch them (a host passes
    them only from ``unsafe.bugs`` with ``unsafe.enabled``); a core ignores the ones it does
    not know.
    """

    protocol: str
    node_id: str
    election_timeout_ticks: int = limits.RAFT_ELECTION_TIMEOUT_TICKS_DEFAULT
    heartbeat_ticks: int = limits.RAFT_HEARTBEAT_TICKS_DEFAULT
    max_inflight_msgs: int = limits.RAFT_MAX_INFLIGHT_MSGS_DEFAULT
    max_entries_per_msg: int = limits.RAFT_MAX_ENTRIES_PER_MSG_DEFAULT
    max_bytes_per_msg: int = limits.RAFT_MAX_BYTES_PER_MSG_DEFAULT
    snapshot_chunk_bytes: int = limits.RAFT_SNAPSHOT_CHUNK_BYTES_DEFAULT
    pre_vote: bool = True
    check_quorum: bool = True
    bugs: tuple[str, ...] = ()
