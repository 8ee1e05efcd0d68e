"""Who may send what to a node: the ZAP handler and the per-frame admission rules.

Theory of operation
-------------------
With ``security.mode: curve`` a node's ROUTER and PUB sockets are CURVE servers. Before a
connection carries a single frame, libzmq asks the ZAP handler (RFC 27, an in-process socket at
``inproc://zeromq.zap.01``) whether the client's public key may connect. :class:`ZapHandler`
answers from the node's :class:`~exapyte.security.KeyRing`: a known key is admitted with its
principal's user id (``node:n2``, ``admin:ops``, ``client:web``); an unknown key is refused, or
admitted as ``anon`` when ``security.anonymous_clients`` is on. libzmq then stamps every frame of
that connection with the user id, and the node reads it per frame (``User-Id``).

The handler is one more socket in the node's poll loop (no thread): libzmq holds the handshake
until it is answered. Handshakes that fail before ZAP is asked (a client speaking plain NULL to a
CURVE server, a client that does not know the server's key, garbage) are seen on a socket monitor.
Every refusal is counted by cause (:attr:`Gate.counters`) and logged at most once per
:data:`LOG_INTERVAL_S` per cause, with the remote address when ZAP gives it.

:class:`Gate` holds the rules applied to every admitted frame (:meth:`Gate.admit_peer`,
:meth:`Gate.may_admin`):

- a consensus message is handed to the core only from ``node:X`` where X is a member, and only if
  the message says it is from X (``frm``) and to this node;
- an admin request (membership, leadership transfer, clock) needs an ``admin:*`` user id;
  anyone else gets ``forbidden``;
- reads and writes are allowed to every admitted principal.

With ``security.mode: off`` (loopback only) there are no user ids: every frame is admitted, and
admin requests are allowed to anyone who can reach the port.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from exapyte.security import ANONYMOUS, KeyRing, user_id_role

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
ROUTER_DOMAIN = b"exapyte"
PUB_DOMAIN = b"exapyte.pub"
LOG_INTERVAL_S = 5.0  # at most one log line per refusal cause in this interval
ZAP_DRAIN_MAX = 256  # ZAP requests answered per loop iteration

HANDSHAKE_EVENTS = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake_failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake_failed_protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake_failed_auth",
}


class Gate:
    """Counts and rate-limited logs of everything refused; the admission rules."""

    def __init__(self, node_id: str, members: set[str], *, secure: bool) -> None:
        self.node_id = node_id
        self.members = members
        self.secure = secure
        self.counters: dict[str, int] = {}
        self._logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def refuse(self, cause: str, detail: str) -> None:
        """Count a refusal; log it unless this cause was logged less than LOG_INTERVAL_S ago."""
        self.counters[cause] = self.counters.get(cause, 0) + 1
        now = time.monotonic()
        last = self._logged.get(cause)
        if last is not None and now - last < LOG_INTERVAL_S:
            self._suppressed[cause] = self._suppressed.get(cause, 0) + 1
            return
        self._logged[cause] = now
        more = self._suppressed.pop(cause, 0)
        log.warning(
            "node %s refused %s: %s%s", self.node_id, cause, detail,
            f" (and {more} more since the last report)" if more else "",
        )

    def admit_peer(self, user_id: str | None, frm: Any, to: Any) -> bool:
        """Whether a consensus message claiming to be from ``frm`` to ``to`` may reach the core."""
        if not self.secure:
            return True
        role, name = user_id_role(user_id or "")
        if role != "node" or name not in self.members:
            self.refuse("peer_not_member", f"a consensus message from {user_id or 'no key'}")
            return False
        if frm != name:
            self.refuse("peer_sender_mismatch", f"{user_id} sent a message that claims to be from {frm!r}")
            return False
        if to != self.node_id:
            self.refuse("peer_wrong_receiver", f"{user_id} sent a message for {to!r}")
            return False
        return True

    def may_admin(self, user_id: str | None) -> bool:
        if not self.secure:
            return True
        return user_id_role(user_id or "")[0] == "admin"


class ZapHandler:
    """Answers libzmq's ZAP requests from a key ring. Lives on the node's loop thread."""

    def __init__(self, ctx: zmq.Context[Any], keyring: KeyRing, gate: Gate, *, anonymous: bool) -> None:
        self.keyring = keyring
        self.gate = gate
        self.anonymous = anonymous
        self.sock: zmq.Socket[Any] = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)

    def drain(self) -> None:
        for _ in range(ZAP_DRAIN_MAX):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.sock.send_multipart(self._answer(frames))

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < 6:
            # Only libzmq talks on this in-process socket; a short request is its bug, not input.
            self.gate.refuse("zap_malformed", f"{len(frames)} frames")
            request_id = frames[1] if len(frames) > 1 else b""
            return [ZAP_VERSION, request_id, b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        address_text = address.decode("utf-8", "replace")

        def deny(cause: str, text: str) -> list[bytes]:
            self.gate.refuse(cause, f"{address_text}: {text}")
            return [ZAP_VERSION, request_id, b"400", text.encode(), b"", b""]

        if version != ZAP_VERSION:
            return deny("auth_zap_version", f"ZAP version {version!r}")
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            return deny("auth_mechanism", f"mechanism {mechanism!r} is not CURVE")
        public = z85.encode(credentials[0])
        principal = self.keyring.principal(public)
        if principal is None:
            if self.anonymous and domain == ROUTER_DOMAIN:
                return [ZAP_VERSION, request_id, b"200", b"OK", ANONYMOUS.encode(), b""]
            return deny("auth_unknown_key", f"key {public[:8].decode()}... is not in the key ring")
        if domain == ROUTER_DOMAIN or domain == PUB_DOMAIN:
            return [ZAP_VERSION, request_id, b"200", b"OK", principal.user_id.encode(), b""]
        return deny("auth_domain", f"unknown ZAP domain {domain!r}")

    def close(self) -> None:
        self.sock.close(linger=0)


class HandshakeMonitor:
    """Counts failed handshakes on a CURVE server socket (before or after ZAP)."""

    def __init__(self, sock: zmq.Socket[Any], gate: Gate, what: str) -> None:
        events = 0
        for event in HANDSHAKE_EVENTS:
            events |= event
        self.sock = sock.get_monitor_socket(events)
        self.gate = gate
        self.what = what

    def drain(self) -> None:
        for _ in range(ZAP_DRAIN_MAX):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                event = parse_monitor_message(frames)
            except Exception:  # noqa: BLE001 - a monitor frame we cannot parse is only skipped
                continue
            cause = HANDSHAKE_EVENTS.get(event["event"])
            if cause is not None:
                self.gate.refuse(
                    cause, f"{self.what} handshake on {event.get('endpoint', b'')!r} "
                    f"(code {event.get('value')})",
                )

    def close(self) -> None:
        self.sock.close(linger=0)
