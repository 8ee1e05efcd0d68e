"""The exapyte client: ``get/put/delete/cas/scan`` with a consistency level per call.

Theory of operation
-------------------
A :class:`Client` talks to nodes over ZeroMQ DEALER sockets, one per node it has contacted.
Every call carries ``(client_id, seq)``; ``seq`` grows by one per call. A write that times out is
re-sent with the **same** ``(client_id, seq)``, and the node's session table applies it at most
once and re-sends the original outcome, so retries never double-apply.

A call ends in one of three ways:

- a definite answer (``ok``, ``not_found``, ``cas_failed``) is returned;
- a definite refusal (``bad_request``) raises :class:`~exapyte.errors.RequestFailed`: the
  request did not apply;
- no answer before the deadline raises :class:`~exapyte.errors.RequestTimeout`: the write may or
  may not have applied (a Jepsen-style harness records this as ``info``).

``not_leader`` replies carry the leader's endpoint; the client follows it at once. ``unavailable``
and ``overloaded`` back off briefly and try again, rotating through the known nodes.

The **session token** is the highest applied index seen in any reply; ``session`` reads send it so
that a replica serves them only once it has applied at least that far (read-your-writes,
monotonic reads).

A client is not thread-safe: use one per thread.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import zmq

from exapyte import limits
from exapyte.config import CONSISTENCY_LEVELS, Config
from exapyte.errors import RequestFailed, RequestTimeout
from exapyte.wire import (
    CasOp,
    ClientOp,
    ClockOp,
    ClientReply,
    ClientRequest,
    Codec,
    DeleteOp,
    FrameError,
    GetOp,
    MembershipOp,
    PutOp,
    ReplyCode,
    ScanOp,
    StatusOp,
    TransferLeaderOp,
)

Value = bytes | str

BACKOFF_S = 0.02  # pause after an "unavailable" or "overloaded" reply


class Versioned(msgspec.Struct, frozen=True):
    value: bytes
    version: int


def _b(value: Value | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return value.encode()


class Client:
    """A synchronous client. ``endpoints`` are ``tcp://host:port`` addresses of nodes."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        node_endpoints: dict[str, str] | None = None,
        client_id: str | None = None,
        timeout_s: float = limits.CLIENT_TIMEOUT_MS_DEFAULT / 1000,
        attempt_timeout_s: float | None = None,
        consistency: str = "strong",
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("a client needs at least one endpoint")
        if consistency not in CONSISTENCY_LEVELS:
            raise ValueError(
                f"unknown consistency level {consistency!r}; allowed: {', '.join(CONSISTENCY_LEVELS)}"
            )
        self.node_endpoints = dict(node_endpoints or {})
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s or max(0.05, timeout_s / 3)
        self.consistency = consistency
        self.session_index = 0
        self.last_node: str | None = None
        self._seq = itertools.count(int(time.time() * 1000) * 1000)
        self._codec = Codec()
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sockets: dict[str, zmq.Socket[Any]] = {}
        self._current = 0

    @classmethod
    def from_config(cls, cfg: Config, **kwargs: Any) -> Client:
        nodes = {n.id: n.endpoint for n in cfg.cluster.nodes}
        first = cfg.node.endpoint
        ordered = [first] + [e for e in nodes.values() if e != first]
        return cls(ordered, node_endpoints=nodes, **kwargs)

    # -- the API ------------------------------------------------------------------------------

    def get(self, key: str, *, consistency: str | None = None, timeout_s: float | None = None) -> Versioned | None:
        reply = self.request(GetOp(key), consistency=consistency, timeout_s=timeout_s)
        if reply.code == ReplyCode.NOT_FOUND:
            return None
        assert reply.value is not None
        return Versioned(reply.value, reply.version)

    def put(self, key: str, value: Value, *, timeout_s: float | None = None) -> int:
        """Write ``value``; returns the key's new version."""
        v = _b(value)
        assert v is not None
        return self.request(PutOp(key, v), timeout_s=timeout_s).version

    def delete(self, key: str, *, timeout_s: float | None = None) -> bool:
        """Delete ``key``; returns whether it existed."""
        return self.request(DeleteOp(key), timeout_s=timeout_s).code == ReplyCode.OK

    def cas(
        self, key: str, expected: Value | None, new: Value | None, *, timeout_s: float | None = None
    ) -> bool:
        """Set ``key`` to ``new`` if it currently holds ``expected`` (None: absent / delete)."""
        reply = self.request(CasOp(key, _b(expected), _b(new)), timeout_s=timeout_s)
        return reply.code == ReplyCode.OK

    def scan(
        self,
        start: str = "",
        end: str | None = None,
        limit: int = 1000,
        *,
        consistency: str | None = None,
        timeout_s: float | None = None,
    ) -> list[tuple[str, Versioned]]:
        reply = self.request(ScanOp(start, end, limit), consistency=consistency, timeout_s=timeout_s)
        return [(k, Versioned(v, ver)) for k, v, ver in reply.records]

    def transfer_leader(self, to: str, *, timeout_s: float | None = None) -> str:
        """Ask the leader to hand leadership to ``to``; returns the leader's message."""
        return self.request(TransferLeaderOp(to), timeout_s=timeout_s).message

    def change_membership(self, change: str, node: str, *, timeout_s: float | None = None) -> int:
        """``add-voter``, ``add-learner`` or ``remove`` ``node``; returns once applied (its index)."""
        return self.request(MembershipOp(change, node), timeout_s=timeout_s).index

    def clock_fault(
        self, endpoint: str, *, shift_ms: float = 0.0, rate: float = 1.0, reset: bool = False,
        timeout_s: float | None = None,
    ) -> str:
        """Shift and/or re-rate the clock of the node at ``endpoint`` (needs unsafe.enabled)."""
        op = ClockOp(shift_ms=shift_ms, rate=rate, reset=reset)
        return self.request(op, timeout_s=timeout_s, endpoint=endpoint, follow=False).message

    def status(self, endpoint: str | None = None, *, timeout_s: float | None = None) -> dict[str, Any]:
        """The status of one node (the current one by default); no redirects."""
        reply = self.request(StatusOp(), timeout_s=timeout_s, endpoint=endpoint, follow=False)
        return dict(reply.status or {})

    # -- the machinery ------------------------------------------------------------------------

    def request(
        self,
        op: ClientOp,  # type: ignore[valid-type]
        *,
        consistency: str | None = None,
        timeout_s: float | None = None,
        endpoint: str | None = None,
        follow: bool = True,
    ) -> ClientReply:
        """Send one request until a definite reply or the deadline. See the module docstring."""
        req = ClientRequest(
            self.client_id,
            next(self._seq),
            op,
            consistency=consistency or self.consistency,
            session_index=self.session_index,
        )
        frame = self._codec.encode(req)
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.timeout_s)
        target = endpoint or self.endpoints[self._current % len(self.endpoints)]
        last_problem = "no reply"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout(
                    f"{type(op).__name__} {getattr(op, 'key', '')!r}: {last_problem} within the "
                    f"deadline; the request may or may not have taken effect"
                )
            reply = self._attempt(target, frame, req, min(remaining, self.attempt_timeout_s))
            if reply is None:
                last_problem = f"no reply from {target}"
                if follow:
                    target = self._rotate()
                continue
            self.last_node = reply.node or None
            if reply.index > self.session_index:
                self.session_index = reply.index
            code = reply.code
            if code in (ReplyCode.OK, ReplyCode.NOT_FOUND, ReplyCode.CAS_FAILED):
                return reply
            if code == ReplyCode.BAD_REQUEST:
                raise RequestFailed(code, reply.message)
            last_problem = f"{code} from {reply.node or target}: {reply.message}".rstrip(": ")
            if not follow:
                raise RequestFailed(code, reply.message or code)
            if code == ReplyCode.NOT_LEADER and (reply.leader_endpoint or reply.leader_hint):
                leader = reply.leader_endpoint or self.node_endpoints.get(reply.leader_hint or "")
                if leader:
                    target = leader
                    if leader in self.endpoints:
                        self._current = self.endpoints.index(leader)
                    continue
            time.sleep(min(BACKOFF_S, max(0.0, deadline - time.monotonic())))
            target = self._rotate()

    def _rotate(self) -> str:
        self._current = (self._current + 1) % len(self.endpoints)
        return self.endpoints[self._current]

    def _socket(self, endpoint: str) -> zmq.Socket[Any]:
        sock = self._sockets.get(endpoint)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, limits.ZMQ_SNDHWM_MESSAGES)
            sock.setsockopt(zmq.RCVHWM, limits.ZMQ_RCVHWM_MESSAGES)
            sock.setsockopt(zmq.SNDTIMEO, limits.ZMQ_SNDTIMEO_MS)
            sock.setsockopt(zmq.RECONNECT_IVL, limits.ZMQ_RECONNECT_IVL_MS)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, limits.ZMQ_RECONNECT_IVL_MAX_MS)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on completed connections
            sock.connect(endpoint)
            self._sockets[endpoint] = sock
        return sock

    def _attempt(
        self, endpoint: str, frame: bytes, req: ClientRequest, wait_s: float
    ) -> ClientReply | None:
        sock = self._socket(endpoint)
        end = time.monotonic() + wait_s
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            # Not connected yet (IMMEDIATE) or queue full: wait a little for the link.
            if sock.poll(int(wait_s * 1000), zmq.POLLOUT) == 0:
                return None
            try:
                sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                return None
        while True:
            left_ms = int((end - time.monotonic()) * 1000)
            if left_ms <= 0 or sock.poll(left_ms, zmq.POLLIN) == 0:
                return None
            try:
                msg = self._codec.decode(sock.recv())
            except FrameError:
                continue
            if isinstance(msg, ClientReply) and msg.client_id == req.client_id and msg.seq == req.seq:
                return msg
            # A late reply to an earlier attempt or call: ignore it.

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
