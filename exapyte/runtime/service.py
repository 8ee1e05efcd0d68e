"""What a node does with a client request, independent of sockets.

A *service* owns one replica group's state (storage, state machine, consensus core if any) and
turns requests into replies. The node shell (:mod:`exapyte.runtime.node`) feeds it decoded
requests and peer messages, ticks it, and sends whatever replies and peer messages it hands back.

- :class:`DirectService` serves a single node's durable KV without consensus: the writes that
  arrive in one loop iteration are applied as one storage batch (one fsync, group commit) and
  acknowledged only after that batch returned.
- :class:`exapyte.runtime.replica.RaftService` replicates writes through a consensus core.

Both share request validation and the read path in :class:`ServiceBase`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from exapyte import limits
from exapyte.config import CONSISTENCY_LEVELS, Config
from exapyte.kv import Command, KVStateMachine, Outcome, encode_command
from exapyte.protocol.types import Entry, EntryKind
from exapyte.storage import Storage
from exapyte.wire import (
    ADMIN_OPS,
    WRITE_OPS,
    ClientReply,
    ClientRequest,
    GetOp,
    ReplyCode,
    ScanOp,
    StatusOp,
)

log = logging.getLogger(__name__)

# (ROUTER identity of the requester, the reply)
ReplySink = Callable[[Any, ClientReply], None]


def validate_request(req: ClientRequest) -> str | None:
    """Why a request can never succeed as sent, or None when it is well-formed."""
    if req.consistency not in CONSISTENCY_LEVELS:
        return (
            f"unknown consistency level {req.consistency!r}; allowed: "
            f"{', '.join(CONSISTENCY_LEVELS)}"
        )
    if req.seq < 0 or req.session_index < 0:
        return "seq and session_index must be >= 0"
    op = req.op
    key = getattr(op, "key", None)
    if key is not None:
        if not key:
            return "key must not be empty"
        if len(key.encode("utf-8", "surrogatepass")) > limits.KEY_BYTES_MAX:
            return f"key longer than {limits.KEY_BYTES_MAX} bytes"
    for name in ("value", "new", "expected"):
        value = getattr(op, name, None)
        if value is not None and len(value) > limits.VALUE_BYTES_MAX:
            return f"{name} longer than {limits.VALUE_BYTES_MAX} bytes"
    if isinstance(op, ScanOp) and not 1 <= op.limit <= limits.SCAN_LIMIT_MAX:
        return f"scan limit must be within 1..{limits.SCAN_LIMIT_MAX}"
    return None


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

    def error(self, identity: bytes, req: ClientRequest, code: str, message: str, **kw: Any) -> None:
        self.count(f"reply_{code}")
        self.reply(
            identity,
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
                    req.client_id, req.seq, ReplyCode.NOT_FOUND, index=index, node=self.node_id
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
            )
        else:
            raise AssertionError(f"read_local got {type(op).__name__}")
        self.count("reads")
        self.reply(identity, reply)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "node": self.node_id,
            "region": self.cfg.region_id,
            "applied": self.sm.applied_index,
            "keys": self.storage.count(),
            "storage": self.cfg.storage.backend,
            "consensus": self.cfg.consensus.protocol,
            "counters": dict(sorted(self.counters.items())),
        }
        if self.status_extra is not None:
            status.update(self.status_extra())
        return status

    # -- the interface the node shell calls -----------------------------------------------------

    def on_request(self, identity: Any, req: ClientRequest) -> None:
        problem = validate_request(req)
        if problem is not None:
            self.error(identity, req, ReplyCode.BAD_REQUEST, problem)
            return
        if isinstance(req.op, StatusOp):
            self.reply(
                identity,
                ClientReply(
                    req.client_id,
                    req.seq,
                    ReplyCode.OK,
                    index=self.sm.applied_index,
                    node=self.node_id,
                    status=self.status(),
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
        entries = [
            Entry(0, base + i + 1, EntryKind.NORMAL, encode_command(cmd))
            for i, (_, _, cmd) in enumerate(pending)
        ]
        results = self.sm.apply(entries)
        self.count("writes", len(pending))
        self.count("batches")
        for (identity, req, _), (_, outcome) in zip(pending, results, strict=True):
            assert outcome is not None
            self.reply(identity, outcome_reply(req, outcome, self.node_id))
