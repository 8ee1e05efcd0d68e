"""The client's side of the control plane: its feed, its resync, and reading or changing the plane.

Theory of operation
-------------------
A client of a sharded cluster caches one descriptor per shard (:class:`~exapyte.data.router.
Router`). :class:`ClientFeed` keeps that cache fresh from the control plane's feed: a SUB socket
dialling every node's PUB endpoint (the control group's leader is the one that publishes), a
:class:`~exapyte.control.pubsub.Mirror` of the plane, and after every change of the mirror each
shard's entry offered to the router as a descriptor (the router keeps only newer ones). The
client drains the feed, without blocking, before each request it routes.

A gap in the feed (ZeroMQ PUB/SUB drops on a slow or reconnecting subscriber), or a beat whose
version is ahead of the mirror, marks the mirror *resync needed*; the client then reads the whole
plane (:func:`read_plane`: a strong read of the control group's one record), at most once per
:data:`RESYNC_INTERVAL_S`. None of this is needed for a right answer: a request routed by an old
descriptor is answered ``stale_config`` with the current one, and the client retries there
(docs/control-plane.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from exapyte import limits
from exapyte.control.group import decode_outcomes
from exapyte.control.plane import (
    Command,
    ControlPlane,
    PlaneError,
    decode_command,
    encode_command,
)
from exapyte.control.pubsub import Mirror, Publication, Verdict
from exapyte.data.router import Descriptor, Router
from exapyte.errors import ExapyteError
from exapyte.wire import (
    CONTROL_GROUP,
    FEED_TOPIC,
    PLANE_KEY,
    Codec,
    ControlOp,
    FeedBeat,
    FeedDelta,
    FeedSnapshot,
    FrameError,
    GetOp,
    ReplyCode,
)

if TYPE_CHECKING:
    from exapyte.client import Client
    from exapyte.security import Credentials

__all__ = ["ClientFeed", "read_plane", "submit"]

RESYNC_INTERVAL_S = 1.0
DRAIN_MAX = 1024  # feed messages taken per drain

def read_plane(client: Client, *, timeout_s: float | None = None) -> ControlPlane:
    """The control plane as its group committed it (a linearizable read of its record)."""
    reply = client.request(
        GetOp(PLANE_KEY), consistency="strong", group=CONTROL_GROUP, timeout_s=timeout_s,
    )
    plane = ControlPlane()
    if reply.code == ReplyCode.NOT_FOUND or reply.value is None:
        return plane  # not founded yet
    try:
        plane.restore(reply.value)
    except PlaneError as exc:
        raise ExapyteError(f"the control group's record is not a plane: {exc}") from None
    return plane


def submit(
    client: Client, commands: list[Command], *, timeout_s: float | None = None
) -> list[tuple[bool, int, str]]:
    """Commit ``commands`` in the control group (an admin request); each one's outcome:
    (changed, the plane's version after it, why not)."""
    op = ControlOp(tuple(encode_command(c) for c in commands))
    reply = client.request(op, group=CONTROL_GROUP, timeout_s=timeout_s)
    return decode_outcomes(reply.value)


class ClientFeed:
    """A client's subscription to the control plane's feed (module docstring)."""

    def __init__(
        self,
        pub_endpoints: list[str],
        router: Router,
        *,
        context: zmq.Context[Any],
        credentials: Credentials | None = None,
    ) -> None:
        self.router = router
        self.mirror = Mirror()
        self.counters: dict[str, int] = {}
        self._codec = Codec()
        self._resync_after = 0.0
        self._sock = context.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, limits.ZMQ_RCVHWM_MESSAGES)
        self._sock.setsockopt(zmq.RECONNECT_IVL, limits.ZMQ_RECONNECT_IVL_MS)
        self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, limits.ZMQ_RECONNECT_IVL_MAX_MS)
        self._sock.setsockopt(zmq.SUBSCRIBE, FEED_TOPIC)
        try:
            for endpoint in pub_endpoints:
                if credentials is not None:
                    credentials.apply(self._sock, endpoint)
                self._sock.connect(endpoint)
        except BaseException:
            self._sock.close(linger=0)
            raise

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    @property
    def version(self) -> int:
        return self.mirror.plane.version

    def drain(self) -> bool:
        """Take what the feed delivered; True when the mirror needs a resync (and one is due)."""
        changed = False
        for _ in range(DRAIN_MAX):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 2:
                self.count("dropped")
                continue
            try:
                msg = self._codec.decode(frames[1])
            except FrameError:
                self.count("dropped")
                continue
            changed |= self._offer(msg)
        if changed:
            self._to_router()
        due = time.monotonic() >= self._resync_after
        return self.mirror.feed.resync_needed and due

    def _offer(self, msg: Any) -> bool:
        if isinstance(msg, FeedDelta):
            try:
                command = decode_command(msg.command)
            except (msgspec.DecodeError, UnicodeDecodeError):
                self.count("dropped")
                return False
            verdict = self.mirror.on_publication(Publication(msg.version, msg.epoch, msg.index, command))
            self.count(verdict.value)
            return verdict is Verdict.APPLY
        if isinstance(msg, FeedBeat):
            if msg.version > self.mirror.feed.version:
                self.mirror.feed.resync_needed = True
            return False
        if isinstance(msg, FeedSnapshot):
            if self.mirror.on_snapshot(msg.image):
                self.count("resynced")
                return True
            return False
        self.count("dropped")
        return False

    def resync(self, client: Client) -> bool:
        """Read the whole plane through ``client``; True if the mirror took it."""
        self._resync_after = time.monotonic() + RESYNC_INTERVAL_S
        try:
            plane = read_plane(client, timeout_s=min(client.timeout_s, 2.0))
        except ExapyteError:
            self.count("resync_failed")
            return False
        if plane.version == 0 or not self.mirror.on_snapshot(plane.snapshot()):
            return False
        self.count("resynced")
        self._to_router()
        return True

    def _to_router(self) -> None:
        router = self.router
        for shard, entry in self.mirror.plane.shards.items():
            current = router.descriptor(shard)
            if current is None or entry.conf_version <= current.version:
                continue
            if router.update(Descriptor(
                entry.group, entry.conf_version, entry.leader, endpoints=current.endpoints,
            )):
                self.count("descriptors_updated")

    def close(self) -> None:
        self._sock.close(linger=0)
