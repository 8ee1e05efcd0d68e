"""What a node does with a client request, independent of sockets.

A *service* owns one replica group's state (storage, state machine, consensus core if any) and
turns requests into replies. The node shell (:mod:`exapyte.runtime.node`) feeds it decoded
requests and peer messages, ticks it, and sends whatever replies and peer messages it hands back.

- :class:`DirectService` serves a single node's durable KV without consensus: the writes that
  arrive in one loop iteration are applied as one storage batch (one fsync, group commit) and
  acknowledged only after that batch returned.
- :class:`exapyte.runtime.replica.RaftService` replicates writes through a consensus core.

Both share request validation and the read path in :class:`ServiceBase`. Every field of a
request is bounded by a named limit (:mod:`exapyte.limits`) and checked by
:func:`validate_request` before anything is proposed: a refused request is answered
``bad_request`` with a message naming the field and the limit, counted (``requests_invalid``),
and never reaches the log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import msgspec

from exapyte import limits
from exapyte.config import CONSISTENCY_LEVELS, Config
from exapyte.kv import Command, KVStateMachine, Outcome, encode_command
from exapyte.protocol.types import Entry, EntryKind
from exapyte.storage import Storage
from exapyte.wire import (
    ADMIN_OPS,
    MEMBERSHIP_CHANGES,
    PLANE_KEY,
    WRITE_OPS,
    CasOp,
    ClientReply,
    ClientRequest,
    ClockOp,
    ControlOp,
    DeleteOp,
    DropGroupOp,
    GetOp,
    MembershipOp,
    PutOp,
    ReplyCode,
    ScanOp,
    StatusOp,
    TransferLeaderOp,
)

log = logging.getLogger(__name__)

# (ROUTER identity of the requester, the reply)
ReplySink = Callable[[Any, ClientReply], None]


# -- request validation -------------------------------------------------------------------------
#
# Every field of a request is checked here, at the edge, before anything is proposed or applied:
# a request that passes can be applied by the state machine on every replica (its key and values
# fit the storage limits, its session record's name fits META_NAME_BYTES_MAX). The checks never
# raise, whatever a field holds (even a value of the wrong type, which msgspec never decodes but
# an in-process caller can build): each one returns why the field is refused, naming the field
# and the limit, or None.


def _show(value: object) -> str:
    """``value``'s repr, cut to ECHO_CHARS_MAX characters: refused values can be huge."""
    try:
        text = repr(value)
    except ValueError:  # an int past the interpreter's digit limit for str()
        return f"<an int of {value.bit_length()} bits>" if isinstance(value, int) else "<?>"
    if len(text) <= limits.ECHO_CHARS_MAX:
        return text
    return text[: limits.ECHO_CHARS_MAX] + "..."


def _text_problem(
    field: str, value: object, limit_name: str, *, empty_ok: bool = False
) -> str | None:
    """A str of at most ``limits.<limit_name>`` UTF-8 bytes (non-empty unless ``empty_ok``)."""
    if type(value) is not str:
        return f"{field} must be a str, got {type(value).__name__}"
    if not value:
        return None if empty_ok else f"{field} must not be empty"
    limit: int = getattr(limits, limit_name)
    if value.isascii() and len(value) <= limit:  # one byte per character, no surrogate
        return None
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return f"{field} is not valid UTF-8 (a lone surrogate at character {exc.start})"
    if size > limit:
        return f"{field} is longer than {limit_name}={limit} bytes ({size} bytes in UTF-8)"
    return None


def _bytes_problem(field: str, value: object, *, none_ok: bool = False) -> str | None:
    """bytes of at most VALUE_BYTES_MAX (or None when ``none_ok``)."""
    if value is None and none_ok:
        return None
    if type(value) is not bytes:
        return f"{field} must be bytes, got {type(value).__name__}"
    if len(value) > limits.VALUE_BYTES_MAX:
        return (
            f"{field} is longer than VALUE_BYTES_MAX={limits.VALUE_BYTES_MAX} bytes "
            f"({len(value)} bytes)"
        )
    return None


def _int_problem(field: str, value: object, low: int, limit_name: str) -> str | None:
    """An int in ``low..limits.<limit_name>``."""
    limit: int = getattr(limits, limit_name)
    if type(value) is not int or not low <= value <= limit:
        return f"{field} must be an int within {low}..{limit_name}={limit}, got {_show(value)}"
    return None


def _choice_problem(
    field: str, what: str, value: object, allowed: tuple[str, ...]
) -> str | None:
    if type(value) is not str or value not in allowed:
        return f"unknown {what} {_show(value)} ({field}); allowed: {', '.join(allowed)}"
    return None


def _float_problem(field: str, value: object) -> str | None:
    """An int or float that is finite (no NaN, no infinity)."""
    if type(value) is int or (isinstance(value, float) and math.isfinite(value)):
        return None
    return f"{field} must be a finite number, got {_show(value)}"


def _key_op_problem(op: GetOp | DeleteOp) -> str | None:
    return _text_problem("key", op.key, "KEY_BYTES_MAX")


def _put_problem(op: PutOp) -> str | None:
    return _text_problem("key", op.key, "KEY_BYTES_MAX") or _bytes_problem("value", op.value)


def _cas_problem(op: CasOp) -> str | None:
    return (
        _text_problem("key", op.key, "KEY_BYTES_MAX")
        or _bytes_problem("expected", op.expected, none_ok=True)
        or _bytes_problem("new", op.new, none_ok=True)
    )


def _scan_problem(op: ScanOp) -> str | None:
    end = op.end
    return (
        _text_problem("start", op.start, "KEY_BYTES_MAX", empty_ok=True)
        or (None if end is None else _text_problem("end", end, "KEY_BYTES_MAX", empty_ok=True))
        or _int_problem("limit", op.limit, 1, "SCAN_LIMIT_MAX")
    )


def _status_problem(op: StatusOp) -> str | None:
    return None


def _transfer_problem(op: TransferLeaderOp) -> str | None:
    return _text_problem("to", op.to, "NODE_ID_BYTES_MAX")


def _membership_problem(op: MembershipOp) -> str | None:
    return _choice_problem(
        "change", "membership change", op.change, MEMBERSHIP_CHANGES
    ) or _text_problem("node", op.node, "NODE_ID_BYTES_MAX")


def _drop_group_problem(op: DropGroupOp) -> str | None:
    problem = _int_problem("version", op.version, 0, "SESSION_INDEX_MAX")
    if problem is not None:
        return problem
    if type(op.members) is not tuple or len(op.members) > limits.GROUP_MEMBERS_MAX:
        return f"members must be a list of at most GROUP_MEMBERS_MAX={limits.GROUP_MEMBERS_MAX} node ids"
    for member in op.members:
        problem = _text_problem("members[]", member, "NODE_ID_BYTES_MAX")
        if problem is not None:
            return problem
    return None


def _control_problem(op: ControlOp) -> str | None:
    if op.key != PLANE_KEY:
        return f"a control op's key is {PLANE_KEY!r}"
    if type(op.commands) is not tuple or not 0 < len(op.commands) <= limits.CONTROL_COMMANDS_MAX:
        return f"a control op holds 1..CONTROL_COMMANDS_MAX={limits.CONTROL_COMMANDS_MAX} commands"
    return None


def _clock_problem(op: ClockOp) -> str | None:
    problem = _float_problem("shift_ms", op.shift_ms) or _float_problem("rate", op.rate)
    if problem is not None:
        return problem
    if abs(op.shift_ms) > limits.CLOCK_SHIFT_MS_MAX:
        return f"|shift_ms| must be at most CLOCK_SHIFT_MS_MAX={limits.CLOCK_SHIFT_MS_MAX}"
    if not 0 < op.rate <= limits.CLOCK_RATE_MAX:
        return f"rate must lie in (0, CLOCK_RATE_MAX={limits.CLOCK_RATE_MAX}]"
    if type(op.reset) is not bool:
        return f"reset must be a bool, got {type(op.reset).__name__}"
    return None


# One check per operation type (dispatched on the exact type: the wire decodes no subclass).
_OP_PROBLEMS: dict[type, Callable[[Any], str | None]] = {
    GetOp: _key_op_problem,
    DeleteOp: _key_op_problem,
    PutOp: _put_problem,
    CasOp: _cas_problem,
    ScanOp: _scan_problem,
    StatusOp: _status_problem,
    TransferLeaderOp: _transfer_problem,
    MembershipOp: _membership_problem,
    ClockOp: _clock_problem,
    DropGroupOp: _drop_group_problem,
    ControlOp: _control_problem,
}


def op_problem(op: object) -> str | None:
    """Why the operation of a request is refused, or None."""
    check = _OP_PROBLEMS.get(type(op))
    if check is None:
        return f"unknown operation {type(op).__name__}"
    return check(op)


def validate_request(req: ClientRequest) -> str | None:
    """Why a request can never succeed as sent, or None when it is well-formed. Never raises."""
    return (
        _text_problem("client_id", req.client_id, "CLIENT_ID_BYTES_MAX")
        or _int_problem("seq", req.seq, 0, "SEQ_MAX")
        or _int_problem("session_index", req.session_index, 0, "SESSION_INDEX_MAX")
        or _int_problem("session_term", req.session_term, 0, "SESSION_INDEX_MAX")
        or _int_problem("config_version", req.config_version, 0, "SESSION_INDEX_MAX")
        or _text_problem("group", req.group, "GROUP_NAME_BYTES_MAX")
        or _choice_problem("consistency", "consistency level", req.consistency, CONSISTENCY_LEVELS)
        or op_problem(req.op)
    )


def outcome_reply(req: ClientRequest, outcome: Outcome, node: str) -> ClientReply:
    message = ""
    value = outcome.value
    if outcome.code == ReplyCode.BAD_REQUEST and value is not None:
        message, value = value.decode("utf-8", "replace"), None
    return ClientReply(
        req.client_id,
        req.seq,
        outcome.code,
        value=value,
        version=outcome.version,
        index=outcome.index,
        node=node,
        message=message,
    )


class ServiceBase:
    """Validation, local reads and status, shared by every service."""

    def __init__(self, cfg: Config, storage: Storage, reply: ReplySink) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id or ""
        self.storage = storage
        self.sm = KVStateMachine(storage, sync="ack-before-fsync" not in cfg.unsafe.bugs)
        self.reply = reply
        self.counters: dict[str, int] = {}
        # Fields the node shell adds to status (frame counters, uptime, topology).
        self.status_extra: Callable[[], dict[str, Any]] | None = None

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def respond(self, identity: Any, req: ClientRequest, reply: ClientReply) -> None:
        """Send ``reply`` to the request ``req`` (a replica adds its configuration version)."""
        self.reply(identity, reply)

    def error(self, identity: bytes, req: ClientRequest, code: str, message: str, **kw: Any) -> None:
        self.count(f"reply_{code}")
        self.respond(
            identity, req,
            ClientReply(req.client_id, req.seq, code, node=self.node_id, message=message, **kw),
        )

    def read_local(self, identity: bytes, req: ClientRequest) -> None:
        """Answer a get or scan from this replica's applied state."""
        op = req.op
        index = self.sm.applied_index
        if isinstance(op, GetOp):
            rec = self.sm.get(op.key)
            if rec is None:
                reply = ClientReply(
                    req.client_id, req.seq, ReplyCode.NOT_FOUND, index=index, node=self.node_id,
                    term=self.sm.applied_term,
                )
            else:
                reply = ClientReply(
                    req.client_id,
                    req.seq,
                    ReplyCode.OK,
                    value=rec.value,
                    version=rec.version,
                    index=index,
                    node=self.node_id,
                    term=self.sm.applied_term,
                )
        elif isinstance(op, ScanOp):
            # One row past the limit tells whether the scan was cut short (at the largest limit
            # a full page is reported as cut short: more records may follow).
            rows = self.sm.scan(op.start, op.end, min(op.limit + 1, limits.SCAN_LIMIT_MAX))
            reply = ClientReply(
                req.client_id,
                req.seq,
                ReplyCode.OK,
                records=tuple((k, r.value, r.version) for k, r in rows[: op.limit]),
                index=index,
                node=self.node_id,
                truncated=len(rows) > op.limit or len(rows) == limits.SCAN_LIMIT_MAX,
                term=self.sm.applied_term,
            )
        else:
            raise AssertionError(f"read_local got {type(op).__name__}")
        self.count("reads")
        self.respond(identity, req, reply)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "node": self.node_id,
            "region": self.cfg.region_id,
            "applied": self.sm.applied_index,
            "keys": self.storage.count(),
            "storage": self.cfg.storage.backend,
            "consensus": self.cfg.consensus.protocol,
            "counters": dict(sorted(self.counters.items())),
            "entries_refused": self.sm.entries_refused,
        }
        if self.status_extra is not None:
            status.update(self.status_extra())
        return status

    # -- the interface the node shell calls -----------------------------------------------------

    def on_request(self, identity: Any, req: ClientRequest) -> None:
        problem = validate_request(req)
        if problem is not None:
            self.count("requests_invalid")
            self.error(identity, req, ReplyCode.BAD_REQUEST, problem)
            return
        if isinstance(req.op, ClockOp):
            # The node shell answers clock faults itself (it owns the clock); a service has none.
            self.error(
                identity, req, ReplyCode.BAD_REQUEST,
                "clock faults are served by the node process, not by a replica group",
            )
            return
        if isinstance(req.op, StatusOp):
            self.respond(
                identity, req,
                ClientReply(
                    req.client_id,
                    req.seq,
                    ReplyCode.OK,
                    index=self.sm.applied_index,
                    node=self.node_id,
                    status=self.status(),
                    term=self.sm.applied_term,
                ),
            )
            return
        if isinstance(req.op, WRITE_OPS):
            self.on_write(identity, req)
        elif isinstance(req.op, ADMIN_OPS):
            self.on_admin(identity, req)
        else:
            self.on_read(identity, req)

    def on_write(self, identity: bytes, req: ClientRequest) -> None:
        raise AssertionError("subclass responsibility")

    def on_read(self, identity: bytes, req: ClientRequest) -> None:
        raise AssertionError("subclass responsibility")

    def on_admin(self, identity: bytes, req: ClientRequest) -> None:
        self.error(
            identity, req, ReplyCode.BAD_REQUEST,
            f"{type(req.op).__name__} needs a replicated group (consensus.protocol raft)",
        )

    def on_peer(self, msg: Any) -> None:
        self.count("peer_unexpected")

    def tick(self) -> None:
        """One protocol tick."""

    def flush(self) -> None:
        """End of a loop iteration: persist, send and reply whatever is due."""

    def has_idle_work(self) -> bool:
        """Whether :meth:`idle` has something to do."""
        return False

    def idle(self) -> None:
        """Deferred work that is off every request's path; the host calls it when no input is
        waiting (the node before blocking in poll)."""

    def maintenance(self) -> None:
        """Periodic work (snapshots, compaction)."""

    def close(self) -> None:
        self.storage.close()


class DirectService(ServiceBase):
    """A single node's durable KV, no consensus: a batch per loop iteration, acked after fsync."""

    def __init__(self, cfg: Config, storage: Storage, reply: ReplySink) -> None:
        super().__init__(cfg, storage, reply)
        self._pending: list[tuple[bytes, ClientRequest, Command]] = []

    def on_write(self, identity: bytes, req: ClientRequest) -> None:
        if len(self._pending) >= limits.STORAGE_BATCH_OPS_MAX:
            self.flush()
        self._pending.append((identity, req, Command(req.client_id, req.seq, req.op)))  # type: ignore[arg-type]

    def on_read(self, identity: bytes, req: ClientRequest) -> None:
        # One node holds every write it acknowledged, so each level is served locally: a read
        # sees exactly the writes whose batch was durable (and acknowledged) before it.
        if req.session_index > self.sm.applied_index:
            self.error(
                identity,
                req,
                ReplyCode.BAD_REQUEST,
                f"session token {req.session_index} is ahead of this node's history "
                f"({self.sm.applied_index}); it belongs to another cluster",
            )
            return
        self.read_local(identity, req)

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        base = self.sm.applied_index
        batch: list[tuple[bytes, ClientRequest]] = []
        entries: list[Entry] = []
        for identity, req, cmd in pending:
            try:
                data = encode_command(cmd)
            except (msgspec.EncodeError, ValueError, OverflowError, TypeError) as exc:
                # validate_request lets no such write through; refused here all the same, so
                # that nothing a request holds can make a flush raise.
                self.error(identity, req, ReplyCode.BAD_REQUEST, f"write not encodable: {exc}")
                continue
            entries.append(Entry(0, base + len(entries) + 1, EntryKind.NORMAL, data))
            batch.append((identity, req))
        if not entries:
            return
        # The state machine turns a command it cannot apply into a bad_request outcome.
        results = self.sm.apply(entries)
        self.count("writes", len(entries))
        self.count("batches")
        for (identity, req), (_, outcome) in zip(batch, results, strict=True):
            assert outcome is not None
            self.respond(identity, req, outcome_reply(req, outcome, self.node_id))
