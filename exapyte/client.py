"""The exapyte client: ``get/put/delete/cas/scan`` with a consistency level per call.

Theory of operation
-------------------
A :class:`Client` talks to nodes over ZeroMQ DEALER sockets, one per node it has contacted.
Every call carries ``(client_id, seq)``; ``seq`` grows by one per call. A write that times out is
re-sent with the **same** ``(client_id, seq)``, and the node's session table applies it at most
once and re-sends the original outcome, so retries never double-apply.

A call ends in one of three ways:

- a definite answer (``ok``, ``not_found``, ``cas_failed``) is returned;
- a definite refusal (``bad_request``, or ``forbidden`` when this client's key does not allow
  the request) raises :class:`~exapyte.errors.RequestFailed`: the request did not apply;
- no answer before the deadline raises :class:`~exapyte.errors.RequestTimeout`: the write may or
  may not have applied (a Jepsen-style harness records this as ``info``).

``not_leader`` replies carry the leader's endpoint; the client follows it at once. ``unavailable``
and ``overloaded`` back off briefly and try again, rotating through the known nodes.

The **session token** of a group (``session_tokens``, one :class:`SessionToken` per group) is the
newest ``(term, index)`` seen in any reply of that group: the index of the state read or the entry
written, and the term of the entry at that index. ``session`` reads send it so that a replica
serves them only from a state holding that very entry (read-your-writes, monotonic reads); an
index alone would not do, since a truncated entry's index is reused by another one. A replica
that applied another entry at the token's index answers ``session_lost``, raised as
:class:`~exapyte.errors.SessionLost`: the token's entry was truncated, so writes of the session
may be lost. The token is kept (no later read quietly promises less); :meth:`Client.new_session`
starts over. A token of the older form (an index only, term 0) is still accepted and judged by
its index.

**Shards.** With a :class:`~exapyte.data.router.Router` (``Client.from_config`` builds one for
the sharded and hierarchical strategies) a key's request goes to its shard's group: the request
names the group and is sent to the group's leader hint, else to its voters in turn; a
``not_leader`` reply's hint is kept for that group. A scan asks every shard that may hold keys of
the range and merges their pages in key order.

**Security.** Against nodes with ``security.mode: curve`` a client needs
:class:`~exapyte.security.Credentials`: its own key pair and each node's public key, so every
connection is encrypted and goes only to a node holding that key. :meth:`Client.from_config`
loads them from the config's key directory (``clients/client`` by default, ``admins/admin`` with
``admin=True``).

Arguments are checked before anything is sent: a key or value of the wrong type raises
``TypeError``, one above the limits of :mod:`exapyte.limits` (or an impossible timeout) raises
``ValueError`` naming the limit.

A client is not thread-safe: use one per thread.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
import zmq

from exapyte import distribution, limits
from exapyte.config import CONSISTENCY_LEVELS, Config
from exapyte.control.group import control_spec
from exapyte.data.feed import ClientFeed
from exapyte.data.router import WEAK_LEVELS, Descriptor, Proximity, Router
from exapyte.errors import RequestFailed, RequestTimeout, SessionLost
from exapyte.security import Credentials, load_credentials
from exapyte.wire import (
    MEMBERSHIP_CHANGES,
    CasOp,
    ClientOp,
    ClientReply,
    ClientRequest,
    ClockOp,
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


class SessionToken(NamedTuple):
    """A session token of one group: the term and index of the newest entry the session
    observed there (written, or the last applied one of a state it read). Encodes as
    ``[term, index]`` in JSON; ``term`` 0 is the older, index-only form."""

    term: int
    index: int

    def newer(self, other: SessionToken) -> bool:
        """Whether this token names a later state than ``other``: a higher index, or the same
        index with a higher term (of two entries at one index, the later leader's)."""
        return (self.index, self.term) > (other.index, other.term)


def session_token(value: object, group: str = "default") -> SessionToken:
    """A session token from an int (the older, index-only form) or ``[term, index]``; a clear
    ``ValueError`` otherwise."""
    if type(value) is int and value >= 0:
        return SessionToken(0, value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(type(x) is int and x >= 0 for x in value)
    ):
        return SessionToken(int(value[0]), int(value[1]))
    raise ValueError(
        f"session token of {group!r} must be an int >= 0 or [term, index] of ints >= 0, got "
        f"{value!r}"
    )


class Versioned(msgspec.Struct, frozen=True):
    value: bytes
    version: int


def _b(value: Value | None, what: str = "value", *, optional: bool = False) -> bytes | None:
    """``value`` as bytes (str is UTF-8 encoded), checked against VALUE_BYTES_MAX."""
    if value is None:
        if optional:
            return None
        raise TypeError(f"{what} must be str or bytes, not None")
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise TypeError(
            f"{what} must be str or bytes{' or None' if optional else ''}, "
            f"not {type(value).__name__}"
        )
    if len(data) > limits.VALUE_BYTES_MAX:
        raise ValueError(
            f"{what} is {len(data)} bytes; the limit is {limits.VALUE_BYTES_MAX} bytes "
            "(limits.VALUE_BYTES_MAX)"
        )
    return data


def _key(key: object, what: str = "key", *, empty_ok: bool = False) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{what} must be str, not {type(key).__name__}")
    if not key and not empty_ok:
        raise ValueError(f"{what} must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8 text (it holds a lone surrogate)") from None
    if size > limits.KEY_BYTES_MAX:
        raise ValueError(
            f"{what} is {size} bytes; the limit is {limits.KEY_BYTES_MAX} bytes (limits.KEY_BYTES_MAX)"
        )
    return key


def _timeout(timeout_s: object) -> float | None:
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise TypeError(f"timeout_s must be a number of seconds, not {type(timeout_s).__name__}")
    if not 0 < timeout_s <= limits.CLIENT_TIMEOUT_S_MAX:
        raise ValueError(
            f"timeout_s must be within (0, {limits.CLIENT_TIMEOUT_S_MAX}] seconds, got {timeout_s}"
        )
    return float(timeout_s)


def _consistency(level: object) -> str | None:
    if level is None:
        return None
    if level not in CONSISTENCY_LEVELS:
        raise ValueError(
            f"unknown consistency level {level!r}; allowed: {', '.join(CONSISTENCY_LEVELS)}"
        )
    return level  # type: ignore[return-value]


def make_router(cfg: Config) -> Router | None:
    """The routing cache of a cluster whose keys are spread over shards (None when one group,
    ``default``, holds every key): every shard's group as the config's placement gives it, at
    configuration version 0 (none known yet: the first reply from a member brings the group's
    current descriptor)."""
    if cfg.distribution.strategy == "centralized":
        return None
    strategy, placement = distribution.from_config(cfg)
    ends = tuple(sorted((n.id, n.endpoint) for n in cfg.cluster.nodes))
    return Router(strategy, [Descriptor(g, 0, endpoints=ends) for g in placement.groups])


def proximity_of(cfg: Config) -> Proximity:
    """How far each node of ``cfg`` is from the client's region (the config's ``region_id``:
    the region of the node the config names, when it names one)."""
    return Proximity(
        cfg.region_id, {n.id: n.region for n in cfg.cluster.nodes},
        [(link.a, link.b, link.latency_ms) for link in cfg.cluster.links],
    )


def _weak_read(req: ClientRequest, proximity: Proximity | None) -> bool:
    """Whether ``req`` is a read of a level weaker than strong by a client that knows its
    region: it goes to the nearest replica first."""
    return (
        proximity is not None and proximity.region is not None
        and isinstance(req.op, (GetOp, ScanOp)) and req.consistency in WEAK_LEVELS
    )


def feed_setup(cfg: Config, credentials: Credentials | None) -> tuple[list[str], Credentials | None]:
    """What a client needs to follow the control plane's feed of the cluster in ``cfg``: every
    node's PUB endpoint (none without a control group), and ``credentials`` that also know the
    node's key at its PUB endpoint."""
    if control_spec(cfg) is None:
        return [], credentials
    pubs = {n.pub_endpoint: n.endpoint for n in cfg.cluster.nodes}
    if credentials is not None:
        keys = dict(credentials.server_keys)
        keys.update({pub: credentials.server_key(ep) for pub, ep in pubs.items()})
        credentials = msgspec.structs.replace(credentials, server_keys=keys)
    return list(pubs), credentials


class ScanPage(msgspec.Struct, frozen=True):
    """One scan's records, and whether the scan stopped at its limit (more keys may follow:
    continue from ``records[-1][0] + "\\0"``)."""

    records: list[tuple[str, Versioned]]
    truncated: bool


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
        credentials: Credentials | None = None,
        session_index: int = 0,
        session_tokens: dict[str, SessionToken | Sequence[int] | int] | None = None,
        router: Router | None = None,
        feed_endpoints: Sequence[str] = (),
        proximity: Proximity | None = None,
    ) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("a client needs at least one endpoint")
        self.consistency = _consistency(consistency) or "strong"
        checked = _timeout(timeout_s)
        assert checked is not None
        if client_id is not None:
            if not isinstance(client_id, str):
                raise TypeError(f"client_id must be str, not {type(client_id).__name__}")
        if isinstance(session_index, bool) or not isinstance(session_index, int) or session_index < 0:
            raise ValueError(f"session_index must be an int >= 0, got {session_index!r}")
        self.node_endpoints = dict(node_endpoints or {})
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout_s = checked
        self.attempt_timeout_s = _timeout(attempt_timeout_s) or max(0.05, checked / 3)
        self.credentials = credentials
        # One session token per replica group: the newest (term, index) this session observed
        # there (docs/consistency.md).
        self.session_tokens: dict[str, SessionToken] = (
            {"default": SessionToken(0, session_index)} if session_index else {}
        )
        for group, raw in (session_tokens or {}).items():
            self._note_token(group, session_token(raw, group))
        self.router = router
        self.last_node: str | None = None
        self._seq = itertools.count(int(time.time() * 1000) * 1000)
        self._codec = Codec()
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sockets: dict[str, zmq.Socket[Any]] = {}
        self._current = 0
        self._group_current: dict[str, int] = {}
        self.config_redirects = 0  # requests re-sent by a newer descriptor (stale_config)
        # Where reads of the weaker levels go first: the nearest replica (exapyte/data/router.py).
        self.proximity = proximity
        # The control plane's feed, keeping the router fresh (exapyte/data/feed.py).
        self.feed: ClientFeed | None = None
        if feed_endpoints and router is not None:
            self.feed = ClientFeed(list(feed_endpoints), router, context=self._ctx,
                                   credentials=credentials)

    @property
    def session_index(self) -> int:
        """The index of the ``default`` group's session token (the only group without shards)."""
        token = self.session_tokens.get("default")
        return token.index if token is not None else 0

    @session_index.setter
    def session_index(self, value: int) -> None:
        self.session_tokens["default"] = SessionToken(0, value)

    def new_session(self) -> None:
        """Start a new session: forget every session token (after :class:`SessionLost`, when
        the caller has dealt with the writes the old session may have lost). The client id is
        kept: it names the exactly-once write session, which a lost token does not affect."""
        self.session_tokens = {}

    def group_of(self, key: str) -> str:
        """The replica group that holds ``key``."""
        return self.router.strategy.shard_of(key) if self.router is not None else "default"

    @classmethod
    def from_config(cls, cfg: Config, *, admin: bool = False, key_name: str | None = None,
                    subscribe: bool = True, **kwargs: Any) -> Client:
        """A client of the cluster in ``cfg``: its timeout is ``network.request_timeout_ms``, its
        default level ``data_plane.default_consistency`` (both unless given), and with
        ``security.mode: curve`` its credentials come from ``security.keys_dir`` (``admins/``
        with ``admin``, else ``clients/``; ``key_name`` picks the key, default ``admin`` or
        ``client``). With shards and ``subscribe``, the client follows the control plane's feed
        (:class:`~exapyte.data.feed.ClientFeed`)."""
        nodes = {n.id: n.endpoint for n in cfg.cluster.nodes}
        first = cfg.node.endpoint
        ordered = [first] + [e for e in nodes.values() if e != first]
        kwargs.setdefault("timeout_s", cfg.network.request_timeout_ms / 1000)
        kwargs.setdefault("consistency", cfg.data_plane.default_consistency)
        if "router" not in kwargs:
            kwargs["router"] = make_router(cfg)
        if cfg.security.mode == "curve" and "credentials" not in kwargs:
            kwargs["credentials"] = load_credentials(
                cfg.security.keys_dir, nodes, role="admins" if admin else "clients", name=key_name,
            )
        kwargs.setdefault("proximity", proximity_of(cfg))
        if subscribe and kwargs["router"] is not None:
            kwargs["feed_endpoints"], kwargs["credentials"] = feed_setup(cfg, kwargs.get("credentials"))
        return cls(ordered, node_endpoints=nodes, **kwargs)

    # -- the API ------------------------------------------------------------------------------

    def get(self, key: str, *, consistency: str | None = None, timeout_s: float | None = None) -> Versioned | None:
        key = _key(key)
        reply = self.request(
            GetOp(key), consistency=consistency, timeout_s=timeout_s, group=self.group_of(key)
        )
        if reply.code == ReplyCode.NOT_FOUND:
            return None
        assert reply.value is not None
        return Versioned(reply.value, reply.version)

    def put(self, key: str, value: Value, *, timeout_s: float | None = None) -> int:
        """Write ``value``; returns the key's new version."""
        v = _b(value)
        assert v is not None
        key = _key(key)
        return self.request(PutOp(key, v), timeout_s=timeout_s, group=self.group_of(key)).version

    def delete(self, key: str, *, timeout_s: float | None = None) -> bool:
        """Delete ``key``; returns whether it existed."""
        key = _key(key)
        reply = self.request(DeleteOp(key), timeout_s=timeout_s, group=self.group_of(key))
        return reply.code == ReplyCode.OK

    def cas(
        self, key: str, expected: Value | None, new: Value | None, *, timeout_s: float | None = None
    ) -> bool:
        """Set ``key`` to ``new`` if it currently holds ``expected`` (None: absent / delete)."""
        op = CasOp(
            _key(key), _b(expected, "expected", optional=True), _b(new, "new", optional=True)
        )
        return self.request(op, timeout_s=timeout_s, group=self.group_of(op.key)).code == ReplyCode.OK

    def scan(
        self,
        start: str = "",
        end: str | None = None,
        limit: int = 1000,
        *,
        consistency: str | None = None,
        timeout_s: float | None = None,
    ) -> list[tuple[str, Versioned]]:
        """Records with ``start <= key < end`` in key order, at most ``limit`` of them (see
        :meth:`scan_page` to learn whether the limit cut the scan short)."""
        return self.scan_page(
            start, end, limit, consistency=consistency, timeout_s=timeout_s
        ).records

    def scan_page(
        self,
        start: str = "",
        end: str | None = None,
        limit: int = 1000,
        *,
        consistency: str | None = None,
        timeout_s: float | None = None,
    ) -> ScanPage:
        _key(start, "start", empty_ok=True)
        if end is not None:
            _key(end, "end", empty_ok=True)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be int, not {type(limit).__name__}")
        if not 1 <= limit <= limits.SCAN_LIMIT_MAX:
            raise ValueError(f"limit must be within 1..{limits.SCAN_LIMIT_MAX}, got {limit}")
        if self.router is None:
            reply = self.request(ScanOp(start, end, limit), consistency=consistency, timeout_s=timeout_s)
            records = [(k, Versioned(v, ver)) for k, v, ver in reply.records]
            return ScanPage(records, reply.truncated)
        # Every shard that may hold keys of the range gives its first `limit` keys; the first
        # `limit` of their merge are exactly the range's first `limit` (docs/distribution.md).
        runs: list[list[tuple[str, Versioned]]] = []
        truncated = False
        for shard, _ in self.router.scan_plan(start, end):
            reply = self.request(
                ScanOp(start, end, limit), consistency=consistency, timeout_s=timeout_s,
                group=shard,
            )
            runs.append([(k, Versioned(v, ver)) for k, v, ver in reply.records])
            truncated = truncated or reply.truncated
        merged = distribution.merge_scan(runs, limit)
        return ScanPage(merged, truncated or sum(len(r) for r in runs) > limit)

    def transfer_leader(
        self, to: str, *, timeout_s: float | None = None, group: str = "default"
    ) -> str:
        """Ask ``group``'s leader to hand leadership to ``to``; returns the leader's message."""
        return self.request(
            TransferLeaderOp(_key(to, "to")), timeout_s=timeout_s, group=group
        ).message

    def change_membership(
        self, change: str, node: str, *, timeout_s: float | None = None, group: str = "default"
    ) -> int:
        """``add-voter``, ``add-learner`` or ``remove`` ``node`` in ``group``; returns once
        applied (its index)."""
        if change not in MEMBERSHIP_CHANGES:
            raise ValueError(
                f"unknown membership change {change!r}; allowed: {', '.join(MEMBERSHIP_CHANGES)}"
            )
        op = MembershipOp(change, _key(node, "node"))
        return self.request(op, timeout_s=timeout_s, group=group).index

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
        group: str = "default",
    ) -> ClientReply:
        """Send one request until a definite reply or the deadline. See the module docstring."""
        wait_s = _timeout(timeout_s)
        token = self.session_tokens.get(group, SessionToken(0, 0))
        req = ClientRequest(
            self.client_id,
            next(self._seq),
            op,
            consistency=_consistency(consistency) or self.consistency,
            session_index=token.index,
            group=group,
            session_term=token.term,
            origin=self.proximity.region or "" if self.proximity is not None else "",
        )
        return self._send_request(req, wait_s, endpoint, follow)

    def _send_request(
        self, req: ClientRequest, wait_s: float | None, endpoint: str | None, follow: bool
    ) -> ClientReply:
        op = req.op
        group = req.group
        frame = self._codec.encode(req)
        if len(frame) > limits.FRAME_BYTES_MAX:
            raise ValueError(
                f"the request is {len(frame)} bytes encoded; the frame limit is "
                f"{limits.FRAME_BYTES_MAX} bytes (limits.FRAME_BYTES_MAX)"
            )
        deadline = time.monotonic() + (wait_s if wait_s is not None else self.timeout_s)
        descriptor = self.router.descriptor(group) if self.router is not None else None
        if descriptor is not None:
            return self._request_group(req, deadline, endpoint, follow)
        target = endpoint or self._nearest(req) or self.endpoints[self._current % len(self.endpoints)]
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
            self._note_reply(req.group, reply)
            code = reply.code
            if code in (ReplyCode.OK, ReplyCode.NOT_FOUND, ReplyCode.CAS_FAILED):
                return reply
            if code == ReplyCode.BAD_REQUEST or code == ReplyCode.FORBIDDEN:
                raise RequestFailed(code, reply.message)
            if code == ReplyCode.SESSION_LOST:
                raise SessionLost(req.group, self.session_tokens.get(req.group), reply.message)
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

    def _note_reply(self, group: str, reply: ClientReply) -> None:
        if reply.index > 0:
            self._note_token(group, SessionToken(reply.term, reply.index))

    def _note_token(self, group: str, token: SessionToken) -> None:
        current = self.session_tokens.get(group)
        if current is None or token.newer(current):
            self.session_tokens[group] = token

    def _request_group(
        self, req: ClientRequest, deadline: float, endpoint: str | None, follow: bool
    ) -> ClientReply:
        """:meth:`request` for a group the router knows: each attempt carries the cached
        descriptor's configuration version and goes to its leader hint, else to its voters in
        turn. A reply's descriptor replaces the cached one only when newer (the router's rule);
        ``stale_config`` sends the request again by the newest descriptor known."""
        router = self.router
        assert router is not None
        feed = self.feed
        if feed is not None and feed.drain():
            feed.resync(self)
        group = req.group
        last_problem = "no reply"
        target: str | None = endpoint
        while True:
            descriptor = router.descriptor(group)
            assert descriptor is not None
            # A weaker read asks the members nearest first; everything else the leader (hint),
            # else the voters in turn.
            weak = _weak_read(req, self.proximity)
            voters = (
                self.proximity.order(descriptor.group.members) if weak and self.proximity
                else descriptor.group.voters
            )
            if target is None:
                node = voters[0] if weak else descriptor.target()
                target = descriptor.endpoint(node) or self.node_endpoints.get(node, "")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout(
                    f"{type(req.op).__name__} {getattr(req.op, 'key', '')!r} (group {group}): "
                    f"{last_problem} within the deadline; the request may or may not have taken "
                    "effect"
                )
            attempt = msgspec.structs.replace(req, config_version=descriptor.version)
            frame = self._codec.encode(attempt)
            reply = self._attempt(target, frame, attempt, min(remaining, self.attempt_timeout_s))
            if reply is not None:
                self.last_node = reply.node or None
                self._note_reply(group, reply)
                if reply.descriptor is not None and reply.descriptor.shard == group:
                    router.update(msgspec.structs.replace(
                        reply.descriptor, endpoints=descriptor.endpoints,
                    ))
                code = reply.code
                if code in (ReplyCode.OK, ReplyCode.NOT_FOUND, ReplyCode.CAS_FAILED):
                    current = router.descriptor(group)
                    if current is not None and reply.node in current.group.voters:
                        router.note_leader(group, current.version, reply.node)
                    return reply
                if code == ReplyCode.BAD_REQUEST or code == ReplyCode.FORBIDDEN:
                    raise RequestFailed(code, reply.message)
                if code == ReplyCode.SESSION_LOST:
                    raise SessionLost(group, self.session_tokens.get(group), reply.message)
                last_problem = f"{code} from {reply.node or target}: {reply.message}".rstrip(": ")
                if not follow:
                    raise RequestFailed(code, reply.message or code)
                current = router.descriptor(group)
                assert current is not None
                if code == ReplyCode.STALE_CONFIG and current.version != descriptor.version:
                    self.config_redirects += 1
                    target = None  # route again by the newer descriptor
                    continue
                hint = reply.leader_hint
                if code == ReplyCode.NOT_LEADER and hint in current.group.voters:
                    router.note_leader(group, current.version, hint)
                    target = current.endpoint(hint) or reply.leader_endpoint or None
                    continue
                time.sleep(min(BACKOFF_S, max(0.0, deadline - time.monotonic())))
            else:
                last_problem = f"no reply from {target}"
                if not follow:
                    continue
            turn = self._group_current.get(group, 0) + 1
            self._group_current[group] = turn
            node = voters[turn % len(voters)]
            target = descriptor.endpoint(node) or self.node_endpoints.get(node)

    def _nearest(self, req: ClientRequest) -> str | None:
        """The endpoint of the node nearest to this client, for a weaker read; else None."""
        if self.proximity is None or not _weak_read(req, self.proximity) or not self.node_endpoints:
            return None
        return self.node_endpoints[self.proximity.order(self.node_endpoints)[0]]

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
            if self.credentials is not None:
                try:
                    self.credentials.apply(sock, endpoint)
                except BaseException:
                    sock.close(linger=0)
                    raise
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
        if self.feed is not None:
            self.feed.close()
            self.feed = None
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
