"""The wire format: every message a node sends or receives, and the codec for frames.

A frame is one msgpack-encoded :class:`Envelope`: ``[version, body]`` where ``body`` is one of
the tagged, frozen structs of :data:`Message`. Decoding is defensive:

1. the frame's length is checked against the configured maximum *before* any decoding;
2. the envelope is decoded against the exact union of known messages (msgspec validates every
   field's type while decoding; every string must be valid UTF-8, so no decoded message holds a
   lone surrogate);
3. an envelope from another protocol version is refused.

Each refusal raises :class:`FrameError` carrying a short ``reason`` (``oversized``,
``undecodable``, ``invalid``, ``version``); the node counts it per reason and drops the frame.
Nothing a remote sends can crash the receiver.

Messages fall in four families, told apart by the tag prefix: ``client.*`` (requests and
replies), ``peer``/``peers`` (a consensus message for one replica group, or a batch of them for
any groups), ``node.*`` (between nodes: a liveness beat, shard reports to the control leader, a
resync request) and ``control.*`` (the control plane's feed on the PUB/SUB plane).
"""

from __future__ import annotations

import zlib
from typing import Any, Union

import msgspec

from exapyte import limits
from exapyte.data.router import Descriptor
from exapyte.protocol.registry import PEER_MESSAGE_TYPES

# -- client operations --------------------------------------------------------------------------


class GetOp(msgspec.Struct, frozen=True, tag="get"):
    key: str


class PutOp(msgspec.Struct, frozen=True, tag="put"):
    key: str
    value: bytes


class DeleteOp(msgspec.Struct, frozen=True, tag="delete"):
    key: str


class CasOp(msgspec.Struct, frozen=True, tag="cas"):
    """Compare-and-set: ``expected`` None means "key absent"; ``new`` None means delete."""

    key: str
    expected: bytes | None
    new: bytes | None


class ScanOp(msgspec.Struct, frozen=True, tag="scan"):
    start: str = ""
    end: str | None = None
    limit: int = 1000


class StatusOp(msgspec.Struct, frozen=True, tag="status"):
    pass


class TransferLeaderOp(msgspec.Struct, frozen=True, tag="admin.transfer"):
    """Ask the leader to hand leadership to ``to`` (a voter)."""

    to: str


MEMBERSHIP_CHANGES = ("add-voter", "add-learner", "remove")


class MembershipOp(msgspec.Struct, frozen=True, tag="admin.membership"):
    """One single-server membership change: ``change`` is one of :data:`MEMBERSHIP_CHANGES`."""

    change: str
    node: str


class DropGroupOp(msgspec.Struct, frozen=True, tag="admin.drop_group"):
    """Drop the receiving node's replica of the request's group, which left it: ``version`` and
    ``members`` are the group's configuration after the removal. Refused while the replica's own
    configuration is as new and still lists the node, or when ``members`` does."""

    version: int
    members: tuple[str, ...]


class ClockOp(msgspec.Struct, frozen=True, tag="admin.clock"):
    """Clock-fault injection on the receiving node: move its clock by ``shift_ms`` and set its
    rate. ``reset`` puts the clock back to real time first. Refused unless ``unsafe.enabled``."""

    shift_ms: float = 0.0
    rate: float = 1.0
    reset: bool = False


CONTROL_GROUP = "control"  # the control plane's replica group (docs/control-plane.md)
PLANE_KEY = "plane"  # the one record of the control group: the plane's state image
FEED_TOPIC = b"control"  # the PUB/SUB topic of the control plane's feed


class ControlOp(msgspec.Struct, frozen=True, tag="admin.control"):
    """Control-plane commands (``exapyte.control.plane``, each msgpack-encoded) for the group
    ``control``, applied in order in one log entry. ``key`` is always :data:`PLANE_KEY`: the
    record the plane's state lives in."""

    commands: tuple[bytes, ...]
    key: str = PLANE_KEY


ClientOp = Union[
    GetOp, PutOp, DeleteOp, CasOp, ScanOp, StatusOp, TransferLeaderOp, MembershipOp, ClockOp,
    DropGroupOp, ControlOp,
]
ADMIN_OPS = (TransferLeaderOp, MembershipOp, DropGroupOp, ControlOp)
WriteOp = Union[PutOp, DeleteOp, CasOp]
WRITE_OPS = (PutOp, DeleteOp, CasOp)


class ClientRequest(msgspec.Struct, frozen=True, tag="client.request", omit_defaults=True):
    """One client call. ``(client_id, seq)`` identifies it across retries (exactly-once).

    ``(session_term, session_index)`` is the session token of ``group``: the newest state this
    client's session has observed there, named by the index *and* the term of its entry (an
    index alone can be reused after a truncation). A ``session`` read is served only by a replica
    whose applied state holds that entry: applied that far, with that term at that index; a
    replica that applied another entry there answers ``session_lost``. ``session_term`` 0 is the
    older token form (an index only), judged by the index alone. Fields at their defaults are
    not encoded, so a request without a token is the same frame as before the term was added,
    and a node of an older release reads a new one (it ignores the unknown field).
    ``config_version`` is the configuration version of ``group`` the client routed by (0: none
    known): a replica serves a request only at its own version, and answers ``stale_config``
    with its descriptor otherwise (docs/control-plane.md). ``origin`` is the client's region.
    """

    client_id: str
    seq: int
    op: ClientOp
    consistency: str = "strong"
    session_index: int = 0
    group: str = "default"
    config_version: int = 0
    session_term: int = 0
    # The client's region ("": unknown): the leader counts writes by it to keep leadership in
    # the region that writes most (replication.strategy "optimized", docs/replication.md).
    origin: str = ""


class ReplyCode:
    """The ``code`` of a :class:`ClientReply`."""

    OK = "ok"
    NOT_FOUND = "not_found"
    CAS_FAILED = "cas_failed"
    NOT_LEADER = "not_leader"  # try ``leader_endpoint``; the request was not applied
    UNAVAILABLE = "unavailable"  # no leader known or no quorum: retry later
    BAD_REQUEST = "bad_request"  # the request can never succeed as sent
    OVERLOADED = "overloaded"  # too many pending requests: retry later
    FORBIDDEN = "forbidden"  # this caller's key does not allow the request (admin ops need admin)
    STALE_CONFIG = "stale_config"  # routed by another configuration version: see ``descriptor``
    # the session token's entry is not in this replica's applied history (another entry holds
    # its index: it was truncated): the session's writes there may be lost; start a new session
    SESSION_LOST = "session_lost"


class ClientReply(msgspec.Struct, frozen=True, tag="client.reply"):
    client_id: str
    seq: int
    code: str
    value: bytes | None = None
    version: int = 0
    records: tuple[tuple[str, bytes, int], ...] = ()
    index: int = 0  # the applied index this reply reflects (feeds the session token)
    node: str = ""
    leader_hint: str | None = None
    leader_endpoint: str | None = None
    message: str = ""
    status: dict[str, Any] | None = None
    truncated: bool = False  # a scan stopped at its limit: more records may follow
    config_version: int = 0  # the answering replica's configuration version of the group
    descriptor: Descriptor | None = None  # the group as the replica sees it (when versions differ)
    # the group that answered, and the term (epoch, round) of the entry at ``index``: with the
    # index, the state read or the entry written (docs/consistency.md)
    group: str = ""
    term: int = 0


# -- peer and control messages ------------------------------------------------------------------

# Every registered protocol's peer messages (exapyte/protocol/registry.py), told apart by tag.
ConsensusMessage = Union[PEER_MESSAGE_TYPES]  # type: ignore[valid-type]


class PeerMessage(msgspec.Struct, frozen=True, tag="peer", omit_defaults=True):
    """A consensus message addressed to the replica group ``group`` on the receiving node.

    From a group's leader it carries the leader's stamp: its commit index and its clock (ms)
    when it sent it, which followers measure bounded staleness against
    (``exapyte/data/staleness.py``); -1 and 0 otherwise (not encoded)."""

    group: str
    msg: ConsensusMessage  # type: ignore[valid-type]
    commit: int = -1
    sent_ms: float = 0.0


class PeerBatch(msgspec.Struct, frozen=True, tag="peers"):
    """Every consensus message one node sends another in one loop iteration, for any group."""

    items: tuple[PeerMessage, ...]


class PeerPacked(msgspec.Struct, frozen=True, tag="peers.z"):
    """A peer frame (a :class:`PeerBatch` or one :class:`PeerMessage`, as encoded) compressed
    with zlib: what a node sends a peer in another region under replication ``optimized``
    when the frame is large enough to gain (docs/replication.md). Decompressed with a bound
    (:meth:`Codec.unpack`): more than ``frame_bytes_max`` bytes is refused as oversized."""

    data: bytes


class NodeBeat(msgspec.Struct, frozen=True, tag="node.beat"):
    """A node's liveness beat to one peer, in place of per-group heartbeats of idle groups.

    ``instance`` changes with every start of the node process, so a peer learns that the node
    restarted (and lost what it held in memory)."""

    frm: str
    to: str
    instance: str


class ShardReports(msgspec.Struct, frozen=True, tag="node.reports"):
    """Shard leaders' reports (``exapyte.control.plane.ShardReport``, each msgpack-encoded) from
    node ``frm`` to the control group's leader ``to``, which proposes them."""

    frm: str
    to: str
    reports: tuple[bytes, ...]


class FeedResync(msgspec.Struct, frozen=True, tag="node.resync"):
    """Node ``frm``'s copy of the plane is at ``version`` and missed a publication: the control
    leader ``to`` answers by publishing a :class:`FeedSnapshot`."""

    frm: str
    to: str
    version: int


class FeedDelta(msgspec.Struct, frozen=True, tag="control.delta"):
    """Version ``version`` of the control plane: the command (msgpack-encoded) committed at log
    ``index`` that made it, published by the control group's leader ``publisher`` of ``term``."""

    publisher: str
    term: int
    version: int
    epoch: int
    index: int
    command: bytes


class FeedBeat(msgspec.Struct, frozen=True, tag="control.beat"):
    """The control leader's current version, published every ``control_plane.publish_interval_s``
    so that a subscriber that missed the last delta learns it is behind."""

    publisher: str
    term: int
    version: int
    epoch: int


class FeedSnapshot(msgspec.Struct, frozen=True, tag="control.snapshot"):
    """The whole plane at ``version`` (its snapshot image): the answer to a resync."""

    publisher: str
    term: int
    version: int
    image: bytes


FEED_MESSAGES = (FeedDelta, FeedBeat, FeedSnapshot)

Message = Union[
    ClientRequest, ClientReply, PeerMessage, PeerBatch, PeerPacked, NodeBeat, ShardReports,
    FeedResync, FeedDelta, FeedBeat, FeedSnapshot,
]


class Envelope(msgspec.Struct, frozen=True, array_like=True):
    version: int
    body: Message


class FrameError(Exception):
    """A frame was refused; ``reason`` is one of the counters a node keeps."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


class Codec:
    """Encodes messages into frames and decodes frames defensively. Not thread-safe."""

    def __init__(self, frame_bytes_max: int = limits.FRAME_BYTES_MAX) -> None:
        self.frame_bytes_max = frame_bytes_max
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Envelope)

    def encode(self, body: Message) -> bytes:  # type: ignore[valid-type]
        return self._encoder.encode(Envelope(limits.PROTOCOL_VERSION, body))

    def pack(self, frame: bytes) -> bytes | None:
        """``frame`` (an encoded peer frame) as a :class:`PeerPacked` frame, or None when
        compressing does not make it smaller."""
        packed = self.encode(PeerPacked(zlib.compress(frame, 1)))
        return packed if len(packed) < len(frame) else None

    def unpack(self, packed: PeerPacked) -> PeerMessage | PeerBatch:
        """The peer frame inside ``packed``; FrameError when it inflates past
        ``frame_bytes_max``, is not a whole zlib stream or holds anything but peer messages."""
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(packed.data, self.frame_bytes_max + 1)
        except zlib.error as exc:
            raise FrameError("undecodable", f"packed peer frame: {exc}") from None
        if len(raw) > self.frame_bytes_max or inflater.unconsumed_tail:
            raise FrameError("oversized", f"a packed peer frame inflates past {self.frame_bytes_max} bytes")
        if not inflater.eof or inflater.unused_data:
            raise FrameError("undecodable", "a packed peer frame is not one whole zlib stream")
        inner = self.decode(raw)
        if not isinstance(inner, (PeerMessage, PeerBatch)):
            raise FrameError("invalid", f"a packed frame holds peer messages, not {type(inner).__name__}")
        return inner

    def decode(self, frame: bytes | memoryview) -> Message:  # type: ignore[valid-type]
        if len(frame) > self.frame_bytes_max:
            raise FrameError("oversized", f"{len(frame)} bytes > {self.frame_bytes_max}")
        try:
            env = self._decoder.decode(frame)
        except msgspec.ValidationError as exc:
            raise FrameError("invalid", str(exc)) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # msgspec reports a string that is not valid UTF-8 (a lone surrogate, a stray
            # continuation byte) with the standard library's UnicodeDecodeError.
            raise FrameError("undecodable", str(exc)) from None
        if env.version != limits.PROTOCOL_VERSION:
            raise FrameError(
                "version", f"protocol version {env.version}, expected {limits.PROTOCOL_VERSION}"
            )
        return env.body
