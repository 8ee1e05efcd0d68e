"""The node process: ZeroMQ sockets around its replica groups, a tick clock and maintenance jobs.

Theory of operation
-------------------
A node is one thread running one loop; everything that touches storage or a consensus core
happens on that thread, so none of it needs locks.

Sockets (every one bound to or dialling 127.0.0.1 unless the config says otherwise):

- **ROUTER** on ``cluster.nodes[self].port``: clients and peers both send here. Peers dial it
  with a DEALER whose identity is their node id, so the ROUTER knows who sent a peer message.
  ``ROUTER_HANDOVER`` lets a restarted peer take its identity back at once; ``ROUTER_MANDATORY``
  turns a reply to a vanished client into a counted error instead of a silent drop.
- one **DEALER** per peer, identity = our node id, for outgoing consensus messages. Every
  group's messages to one peer share that connection: what the groups queue in one loop
  iteration leaves as one ``peers`` frame (:class:`~exapyte.wire.PeerBatch`), flushed at the end
  of the iteration and before each fsync (so a leader's appends travel while it syncs). One
  ``node.beat`` per peer every few ticks carries the node's liveness for all its groups, so idle
  groups quiesce (``exapyte/runtime/groups.py``).
- **PUB** on ``pub_port``: the control plane's feed, when this node leads the control group
  (``exapyte/control/group.py``): every new version, a beat with the current one every
  ``control_plane.publish_interval_s``, the whole plane on a resync request.
- **SUB** dialling every node's PUB: the feed, kept as this node's copy of the plane (a gap or
  a beat ahead of it sends a resync request to the publisher).

Every socket has high-water marks, a zero send timeout (a full queue drops the message; the
protocols tolerate loss) and zero linger. ZeroMQ reconnects dropped TCP links by itself.

Each iteration: poll (up to the next tick), drain ready sockets (bounded), fire due ticks, let the
service flush (persist, send, apply, reply), run maintenance requested by the scheduler. Before
blocking in poll, the loop gives the service its idle work when no input is waiting (a replica
stores its state machine's applied writes then; see ``exapyte/kv.py``).

Maintenance jobs run on an APScheduler background thread, which only *requests* work through a
queue; the loop does it. SIGTERM/SIGINT stop the loop; the node then flushes the service, closes
storage (which syncs it) and closes its sockets.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import random
import signal
import threading
import time
import uuid
from typing import Any

import zmq
from apscheduler.schedulers.background import BackgroundScheduler

from exapyte import distribution, limits
from exapyte.config import Config, is_wildcard
from exapyte.control.group import ControlAgent, control_spec
from exapyte.control.plane import ControlPlane
from exapyte.distribution.base import GroupSpec
from exapyte.errors import ConfigError, ExapyteError
from exapyte.protocol.types import HardState
from exapyte.runtime.auth import (
    PUB_DOMAIN,
    ROUTER_DOMAIN,
    Gate,
    HandshakeMonitor,
    ZapHandler,
)
from exapyte.runtime.clock import Clock
from exapyte.runtime.groups import GroupTable
from exapyte.runtime.service import DirectService, ServiceBase, validate_request
from exapyte.security import KeyRing, load_keyring, make_curve_client
from exapyte.storage import Storage, group_path, open_storage
from exapyte.wire import (
    ADMIN_OPS,
    FEED_MESSAGES,
    FEED_TOPIC,
    ClientReply,
    ClientRequest,
    ClockOp,
    Codec,
    FeedResync,
    FrameError,
    NodeBeat,
    PeerBatch,
    PeerMessage,
    PeerPacked,
    ReplyCode,
    ShardReports,
)

log = logging.getLogger(__name__)

DRAIN_FRAMES_MAX = 4096  # frames taken from one socket per loop iteration
# Plain ints: pyzmq's flag enums cost an enum operation per call on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_SNDMORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)
_PRIVILEGED_OPS = (*ADMIN_OPS, ClockOp)


def make_curve_server(sock: zmq.Socket, keyring: KeyRing, domain: bytes) -> None:  # type: ignore[type-arg]
    """``sock`` accepts only CURVE clients, each vetted by the ZAP handler of ``domain``."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keyring.own_public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keyring.own_secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain)


def configure_socket(sock: zmq.Socket, cfg: Config) -> None:  # type: ignore[type-arg]
    sock.setsockopt(zmq.SNDHWM, cfg.network.sndhwm)
    sock.setsockopt(zmq.RCVHWM, cfg.network.rcvhwm)
    sock.setsockopt(zmq.SNDTIMEO, limits.ZMQ_SNDTIMEO_MS)
    sock.setsockopt(zmq.LINGER, limits.ZMQ_LINGER_MS)
    sock.setsockopt(zmq.RECONNECT_IVL, limits.ZMQ_RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, limits.ZMQ_RECONNECT_IVL_MAX_MS)
    # ZeroMQ itself refuses frames above the limit (and drops that connection); the codec checks
    # the size again for transports that do not.
    sock.setsockopt(zmq.MAXMSGSIZE, cfg.network.frame_bytes_max)


class Node:
    """One exapyte node. ``run()`` blocks until ``stop()`` (thread-safe) or a signal."""

    def __init__(
        self, cfg: Config, clock: Clock | None = None, *, instance_id: str | None = None
    ) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id or ""
        self.clock = clock or Clock()
        self.codec = Codec(cfg.network.frame_bytes_max)
        self.counters: dict[str, int] = {}
        # What the transport handed to peers' sockets, by message kind (see _count_sent).
        self.sent_messages: dict[str, int] = {}
        self.sent_bytes: dict[str, int] = {}
        self._stop = threading.Event()
        self._jobs: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.control: ControlAgent | None = None
        self._ctx: zmq.Context[Any] | None = None
        self.router: zmq.Socket[Any] | None = None
        self.pub: zmq.Socket[Any] | None = None
        self.sub: zmq.Socket[Any] | None = None
        self.dealers: dict[str, zmq.Socket[Any]] = {}
        self.service: ServiceBase | GroupTable | None = None
        self.groups: GroupTable | None = None
        self._outbox: dict[str, list[PeerMessage]] = {}
        self._scheduler: BackgroundScheduler | None = None
        self.started_at = time.monotonic()
        # Tells this process apart from any other that answers on the same port (the launcher
        # checks it): a fresh id per start.
        self.instance_id = instance_id or uuid.uuid4().hex
        self.secure = cfg.security.mode == "curve"
        self.gate = Gate(self.node_id, set(cfg.node_ids()), secure=self.secure)
        self.keyring: KeyRing | None = None
        self._zap: ZapHandler | None = None
        self._monitors: list[HandshakeMonitor] = []

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        if self.secure:
            # Before storage is opened: a node without its keys must not touch its data.
            self.keyring = load_keyring(
                cfg.security.keys_dir, self.node_id, cfg.node_ids(),
            )
        raise_fd_limit()
        self.service = self._make_service()
        self.service.status_extra = self.status_fields
        self._ctx = zmq.Context()
        me = cfg.node
        bind_host = cfg.bind_host
        keyring = self.keyring
        if keyring is not None:
            # The ZAP handler must exist before any CURVE server socket binds: without one,
            # libzmq would admit every key.
            self._zap = ZapHandler(
                self._ctx, keyring, self.gate, anonymous=cfg.security.anonymous_clients
            )
        if is_wildcard(bind_host):
            log.warning(
                "node %s binds %s: every interface of this host (security.mode %s)",
                self.node_id, bind_host, cfg.security.mode,
            )
        self.router = self._ctx.socket(zmq.ROUTER)
        configure_socket(self.router, cfg)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.pub = self._ctx.socket(zmq.PUB)
        configure_socket(self.pub, cfg)
        if keyring is not None:
            make_curve_server(self.router, keyring, ROUTER_DOMAIN)
            make_curve_server(self.pub, keyring, PUB_DOMAIN)
            self._monitors = [
                HandshakeMonitor(self.router, self.gate, "ROUTER"),
                HandshakeMonitor(self.pub, self.gate, "PUB"),
            ]
        self.router.bind(f"tcp://{bind_host}:{me.port}")
        self.pub.bind(f"tcp://{bind_host}:{me.resolved_pub_port}")
        self.sub = self._ctx.socket(zmq.SUB)
        configure_socket(self.sub, cfg)
        self.sub.setsockopt(zmq.SUBSCRIBE, FEED_TOPIC)
        for spec in cfg.cluster.nodes:
            if keyring is not None:
                make_curve_client(
                    self.sub, keyring.own_public, keyring.own_secret, keyring.members[spec.id]
                )
            self.sub.connect(spec.pub_endpoint)
            if spec.id == self.node_id:
                continue
            dealer = self._ctx.socket(zmq.DEALER)
            configure_socket(dealer, cfg)
            dealer.setsockopt(zmq.IDENTITY, self.node_id.encode())
            if keyring is not None:
                make_curve_client(
                    dealer, keyring.own_public, keyring.own_secret, keyring.members[spec.id]
                )
            dealer.connect(cfg.peer_endpoint(spec.id))
            self.dealers[spec.id] = dealer
        # Replication "optimized": frames to peers in other regions go compressed (PeerPacked).
        here = cfg.node.region
        self._pack_to = frozenset(
            n.id for n in cfg.cluster.nodes if n.region != here
        ) if cfg.replication_strategy == "optimized" else frozenset()
        self._scheduler = BackgroundScheduler(daemon=True)
        self._scheduler.add_job(
            self._request_job, "interval", args=("maintenance",),
            seconds=cfg.maintenance.interval_s, id="maintenance",
        )
        self._scheduler.add_job(
            self._request_job, "interval", args=("publish",),
            seconds=cfg.control_plane.publish_interval_s, id="publish",
        )
        self._scheduler.start()
        log.info(
            "node %s serving on %s (pub %s, bound on %s), storage %s at %s, consensus %s, "
            "security %s, instance %s",
            self.node_id, me.endpoint, me.pub_endpoint, bind_host, cfg.storage.backend,
            cfg.storage_path(), cfg.consensus.protocol, cfg.security.mode, self.instance_id,
        )

    def _open_storage(self, group: str) -> Storage:
        cfg = self.cfg
        options = (
            {"hot_keys": cfg.storage.hot_keys, "policy": cfg.storage.policy}
            if cfg.storage.backend == "tiered"
            else {}
        )
        return open_storage(cfg.storage.backend, group_path(cfg.storage_path(), group), **options)

    def _make_service(self) -> ServiceBase | GroupTable:
        cfg = self.cfg
        if not cfg.replicated:
            storage = self._open_storage("default")
            try:
                return DirectService(cfg, storage, self._send_reply)
            except BaseException:
                storage.close()
                raise
        groups = GroupTable(
            cfg,
            open_storage=self._open_storage,
            rng_for=lambda _group: random.Random(),
            reply=self._send_reply,
            send=self._send_peer,
            beat=self._send_beat,
            before_sync=self._flush_outbox,
            parallel_persist=True,
            remove_storage=self._remove_storage,
            clock_ms=lambda: self.clock.now() * 1000.0,
            tombstones=self._dropped_groups(),
        )
        self.groups = groups
        agent = ControlAgent(
            cfg, replicas=lambda: groups.replicas, send=self._send_node_frame,
            publish=self._publish_feed, on_map=self._on_map, wake=groups.wake,
            touched=groups.take_touched,
        )
        if agent.enabled:
            self.control = agent
        try:
            for spec in self._hosted_groups():
                groups.create(spec)
        except BaseException:
            groups.close()
            raise
        return groups

    def _hosted_groups(self) -> list[GroupSpec]:
        """The groups this node hosts at start: under the centralized strategy ``default`` (a
        node outside its initial voters starts empty and waits to be added); under the others,
        the shards the initial placement gives it, less those it left since (it dropped them),
        plus those whose storage it holds (it joined them by a rebalance)."""
        _, placement = distribution.from_config(self.cfg)
        control = control_spec(self.cfg)
        groups = list(placement.groups) + ([control] if control is not None else [])
        if self.groups is not None:
            self.groups.set_placement(groups)
        if self.cfg.distribution.strategy == "centralized":
            return list(placement.groups)
        dropped = self._dropped_groups()
        hosted = [
            g for g in groups if self.node_id in g.members and g.id not in dropped
        ]
        if self.cfg.storage.backend != "memory":
            ids = {g.id for g in hosted}
            for spec in groups:
                path = group_path(self.cfg.storage_path(), spec.id)
                # A file of a dropped group means the node joined it again since.
                if spec.id not in ids and os.path.exists(path):
                    hosted.append(GroupSpec(spec.id, (), (), spec.region))
        return hosted

    def _dropped_path(self) -> str:
        root, _ = os.path.splitext(self.cfg.storage_path())
        return f"{root}.groups/dropped.json"

    def _dropped_groups(self) -> dict[str, HardState]:
        """The groups this node dropped, each with the tombstone of its replica (the core's
        promises, hex-encoded: ``{"group": {"commit": 0, "record": "<hex>"}}``; a list of
        group names, as older nodes wrote it, is read as tombstones without promises)."""
        path = self._dropped_path()
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is unreadable: {exc}") from exc
        if isinstance(raw, list):
            return {g: HardState() for g in raw if isinstance(g, str)}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a JSON object of group tombstones")
        out: dict[str, HardState] = {}
        for group, tomb in raw.items():
            try:
                out[group] = HardState(int(tomb["commit"]), bytes.fromhex(tomb["record"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{path}: the tombstone of {group!r} is unreadable") from exc
        return out

    def _remove_storage(self, group: str, tombstone: HardState) -> None:
        """The files of a dropped group are deleted and the group remembered as left with its
        replica's tombstone, so that a restart neither hosts it again from the initial
        placement nor re-creates it without the promises the dropped replica made."""
        if self.cfg.storage.backend == "memory":
            return
        path = group_path(self.cfg.storage_path(), group)
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass
        tombstones = self._dropped_groups()
        tombstones[group] = tombstone
        dropped = {
            g: {"commit": t.commit, "record": t.record.hex()}
            for g, t in sorted(tombstones.items())
        }
        target = self._dropped_path()
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dropped, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            log.info("node %s: signal %d, stopping", self.node_id, signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self.service is not None:
            try:
                self.service.flush()
            finally:
                self.service.close()
                self.service = None
        for monitor in self._monitors:
            monitor.close()
        self._monitors = []
        for sock in [self.router, self.pub, self.sub, *self.dealers.values()]:
            if sock is not None:
                sock.close(linger=0)
        self.dealers.clear()
        if self._zap is not None:
            self._zap.close()
            self._zap = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        log.info("node %s stopped", self.node_id)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        assert self.router is not None and self.sub is not None and self.service is not None
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.sub, zmq.POLLIN)
        side: dict[Any, Any] = {}  # security sockets: socket -> its drain
        if self._zap is not None:
            side[self._zap.sock] = self._zap.drain
        for monitor in self._monitors:
            side[monitor.sock] = monitor.drain
        for sock in side:
            poller.register(sock, zmq.POLLIN)
        drain_router = self._drain_router_secure if self.secure else self._drain_router
        tick_s = self.cfg.network.tick_ms / 1000.0
        # After a pause or a forward clock jump, the node catches up on at most this many ticks
        # at once: enough for its election timer to expire, as a real timer's would.
        catch_up_ticks_max = 2 * self.cfg.consensus.election_timeout_ticks + 1
        next_tick = self.clock.now() + tick_s
        service = self.service
        while not self._stop.is_set():
            timeout_ms = max(0, math.ceil((next_tick - self.clock.now()) * 1000.0))
            if service.has_idle_work():
                # Deferred work runs only when no input waits (it is off the request path).
                events = dict(poller.poll(0))
                if not events:
                    service.idle()
                    timeout_ms = max(0, math.ceil((next_tick - self.clock.now()) * 1000.0))
                    events = dict(poller.poll(timeout_ms))
            else:
                events = dict(poller.poll(timeout_ms))
            if side:
                for sock, drain in side.items():
                    if sock in events:
                        drain()
            if self.router in events:
                drain_router()
            if self.sub in events:
                self._drain_sub()
            now = self.clock.now()
            ticks = 0
            ticking_since = time.monotonic()
            control = self.control
            while now >= next_tick and ticks < catch_up_ticks_max:
                service.tick()
                if control is not None:
                    control.tick()
                next_tick += tick_s
                ticks += 1
                if ticks > 1 and time.monotonic() - ticking_since > tick_s:
                    # Ticking itself takes longer than a tick (many active groups on a loaded
                    # node): catching up would starve the sockets, and elections would time
                    # out before their votes are read. The node's time runs slower instead.
                    self.count("ticks_dropped_overload")
                    next_tick = max(next_tick, self.clock.now() + tick_s)
                    break
            if now >= next_tick:  # far behind (a long pause or clock jump): drop the rest
                next_tick = now + tick_s
            elif next_tick - now > tick_s:  # the clock moved back (a clock fault was reset)
                next_tick = now + tick_s
            service.flush()
            if control is not None:
                control.after_flush()
                service.flush()  # what the agent proposed
            if self._outbox:
                self._flush_outbox()
            while not self._jobs.empty():
                self._run_job(self._jobs.get_nowait())

    def _drain_router(self) -> None:
        assert self.router is not None and self.service is not None
        router = self.router
        for _ in range(DRAIN_FRAMES_MAX):
            try:
                frames = router.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.count("frames_dropped_shape")
                continue
            identity, payload = frames
            try:
                msg = self.codec.decode(payload)
            except FrameError as exc:
                self.count(f"frames_dropped_{exc.reason}")
                log.debug("dropped a frame from %r: %s", identity, exc)
                continue
            self._dispatch(identity, msg, None)

    def _drain_router_secure(self) -> None:
        """As :meth:`_drain_router`, reading each frame's ZAP user id (who holds the key)."""
        assert self.router is not None
        router = self.router
        for _ in range(DRAIN_FRAMES_MAX):
            try:
                identity = router.recv(_NOBLOCK)
            except zmq.Again:
                return
            if not router.getsockopt(zmq.RCVMORE):
                self.count("frames_dropped_shape")
                continue
            frame = router.recv(_NOBLOCK, copy=False)
            if frame.more:
                while router.getsockopt(zmq.RCVMORE):
                    router.recv(_NOBLOCK)
                self.count("frames_dropped_shape")
                continue
            user_id = frame.get("User-Id")
            try:
                msg = self.codec.decode(frame.buffer)
            except FrameError as exc:
                self.count(f"frames_dropped_{exc.reason}")
                log.debug("dropped a frame from %s: %s", user_id, exc)
                continue
            self._dispatch(identity, msg, user_id)

    def _dispatch(self, identity: bytes, msg: Any, user_id: str | None) -> None:
        assert self.service is not None
        if isinstance(msg, ClientRequest):
            if isinstance(msg.op, _PRIVILEGED_OPS) and not self.gate.may_admin(user_id):
                self.gate.refuse("request_forbidden", f"{type(msg.op).__name__} from {user_id}")
                self._send_reply(identity, ClientReply(
                    msg.client_id, msg.seq, ReplyCode.FORBIDDEN, node=self.node_id,
                    message=f"{type(msg.op).__name__} needs an admin key; this connection is "
                    f"{user_id}",
                ))
            elif isinstance(msg.op, ClockOp):
                self._on_clock(identity, msg)
            else:
                self.service.on_request(identity, msg)
        elif isinstance(msg, PeerBatch):
            for item in msg.items:
                self._on_peer(item, user_id)
        elif isinstance(msg, PeerMessage):
            self._on_peer(msg, user_id)
        elif isinstance(msg, PeerPacked):
            try:
                inner = self.codec.unpack(msg)
            except FrameError as exc:
                self.count(f"frames_dropped_{exc.reason}")
                log.debug("dropped a packed frame from %s: %s", user_id, exc)
                return
            for item in inner.items if isinstance(inner, PeerBatch) else (inner,):
                self._on_peer(item, user_id)
        elif isinstance(msg, NodeBeat):
            if self.groups is not None and self.gate.admit_peer(user_id, msg.frm, msg.to):
                self.groups.heard_from(msg.frm, msg.instance)
        elif isinstance(msg, (ShardReports, FeedResync)):
            control = self.control
            if control is None:
                self.count("frames_dropped_unexpected")
            elif self.gate.admit_peer(user_id, msg.frm, msg.to):
                if isinstance(msg, ShardReports):
                    control.on_reports(msg)
                else:
                    control.on_resync(msg)
        else:
            self.count("frames_dropped_unexpected")

    def _on_peer(self, msg: PeerMessage, user_id: str | None) -> None:
        inner = msg.msg
        if self.gate.admit_peer(user_id, inner.frm, inner.to):
            groups = self.groups
            if groups is None:
                self.count("peer_unexpected")
                return
            groups.heard_from(inner.frm)
            groups.on_peer(msg.group, inner, (msg.commit, msg.sent_ms) if msg.commit >= 0 else None)

    def _drain_sub(self) -> None:
        assert self.sub is not None
        for _ in range(DRAIN_FRAMES_MAX):
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.count("feed_dropped")
                continue
            try:
                msg = self.codec.decode(frames[1])
            except FrameError:
                self.count("feed_dropped")
                continue
            if not isinstance(msg, FEED_MESSAGES) or self.control is None:
                self.count("feed_dropped")
                continue
            self.control.on_feed(msg)

    def _on_clock(self, identity: bytes, req: ClientRequest) -> None:
        """Clock-fault injection (harness only): shift and/or re-rate this node's clock."""
        op = req.op
        assert isinstance(op, ClockOp)
        if not self.cfg.unsafe.enabled:
            reply = ClientReply(
                req.client_id, req.seq, ReplyCode.BAD_REQUEST, node=self.node_id,
                message="clock faults are refused unless unsafe.enabled is true",
            )
        elif (problem := validate_request(req)) is not None:
            reply = ClientReply(
                req.client_id, req.seq, ReplyCode.BAD_REQUEST, node=self.node_id, message=problem,
            )
        else:
            if op.reset:
                self.clock.offset_s = 0.0
            self.clock.set_rate(op.rate)
            self.clock.offset_s += op.shift_ms / 1000.0
            self.count("clock_faults")
            log.info(
                "node %s: clock offset now %.3f s, rate %.3f",
                self.node_id, self.clock.offset_s, self.clock.rate,
            )
            reply = ClientReply(
                req.client_id, req.seq, ReplyCode.OK, node=self.node_id,
                message=f"offset {self.clock.offset_s:.3f} s, rate {self.clock.rate}",
            )
        self._send_reply(identity, reply)

    # -- outputs ------------------------------------------------------------------------------

    def _send_reply(self, identity: bytes, reply: ClientReply) -> None:
        assert self.router is not None
        try:
            payload = self.codec.encode(reply)
            self.router.send(identity, _NOBLOCK_SNDMORE)
            self.router.send(payload, _NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH (client gone) or EAGAIN (queue full)
            self.count("replies_undeliverable")
            log.debug("reply to %r not delivered: %s", identity, exc)

    def _send_peer(self, to: str, group: str, msg: Any, stamp: tuple[int, float] | None = None) -> None:
        queue = self._outbox.get(to)
        if queue is None:
            if to not in self.dealers:
                self.count("peer_unknown")
                return
            queue = self._outbox[to] = []
        queue.append(PeerMessage(group, msg) if stamp is None else PeerMessage(group, msg, *stamp))

    def _flush_outbox(self) -> None:
        """Send what the groups queued: one frame per peer (split when it would not fit)."""
        outbox, self._outbox = self._outbox, {}
        for to, items in outbox.items():
            if len(items) == 1:
                frame = self._packed(to, self.codec.encode(items[0]))
                if self._send_frame(to, frame):
                    self._count_sent(items, len(frame), batched=False)
            else:
                self._send_batch(to, items)

    def _packed(self, to: str, frame: bytes) -> bytes:
        """``frame`` compressed when ``to`` is in another region and replication is
        ``optimized`` and it gains (wire.PeerPacked); else ``frame`` itself."""
        if to not in self._pack_to or len(frame) < limits.PEER_PACK_BYTES_MIN:
            return frame
        packed = self.codec.pack(frame)
        if packed is None:
            return frame
        self.count("peer_frames_packed")
        self.count("peer_bytes_saved", len(frame) - len(packed))
        return packed

    def _send_batch(self, to: str, items: list[PeerMessage]) -> None:
        frame = self.codec.encode(PeerBatch(tuple(items)))
        if len(frame) <= self.codec.frame_bytes_max or len(items) == 1:
            frame = self._packed(to, frame)
            if self._send_frame(to, frame):
                self._count_sent(items, len(frame), batched=True)
            return
        half = len(items) // 2
        self._send_batch(to, items[:half])
        self._send_batch(to, items[half:])

    def _send_frame(self, to: str, frame: bytes) -> bool:
        try:
            self.dealers[to].send(frame, _NOBLOCK)
        except zmq.Again:
            self.count("peer_send_dropped")
            return False
        self.count("peer_frames_sent")
        return True

    def _count_sent(self, items: list[PeerMessage], frame_bytes: int, *, batched: bool) -> None:
        """The transport's per-kind counters (status ``sent``): every consensus message handed
        to a peer's socket by its tag; the bytes of a frame that carries one message go to that
        message's kind, those of a batch of several to ``peers`` (its messages share them)."""
        messages = self.sent_messages
        for item in items:
            kind = type(item.msg).__struct_config__.tag
            messages[kind] = messages.get(kind, 0) + 1
        kind = "peers" if batched else type(items[0].msg).__struct_config__.tag
        self.sent_bytes[kind] = self.sent_bytes.get(kind, 0) + frame_bytes
        if batched:
            self.count("peer_messages_batched")

    def _send_beat(self, to: str) -> None:
        if to in self.dealers:
            frame = self.codec.encode(NodeBeat(self.node_id, to, self.instance_id))
            if self._send_frame(to, frame):
                self.sent_messages["node.beat"] = self.sent_messages.get("node.beat", 0) + 1
                self.sent_bytes["node.beat"] = self.sent_bytes.get("node.beat", 0) + len(frame)

    # -- maintenance --------------------------------------------------------------------------

    def _request_job(self, name: str) -> None:
        self._jobs.put(name)  # runs on the scheduler thread: only hand the work over

    def _run_job(self, name: str) -> None:
        assert self.service is not None
        if name == "maintenance":
            self.service.maintenance()
            log.debug("node %s metrics %s", self.node_id, json.dumps(self.status()))
        elif name == "publish" and self.control is not None:
            self.control.beat()

    def _publish_feed(self, msg: Any) -> None:
        assert self.pub is not None
        try:
            self.pub.send_multipart([FEED_TOPIC, self.codec.encode(msg)], zmq.NOBLOCK)
        except zmq.Again:
            self.count("feed_publish_dropped")

    def _send_node_frame(self, to: str, msg: Any) -> None:
        if to in self.dealers:
            self._send_frame(to, self.codec.encode(msg))
        else:
            self.count("peer_unknown")

    def _on_map(self, plane: ControlPlane) -> None:
        """The node's copy of the plane moved: redirects for groups it does not host follow the
        plane's shard map from now on."""
        if self.groups is None:
            return
        specs = [e.group for e in plane.shards.values()]
        control = control_spec(self.cfg)
        if control is not None:
            specs.append(control)
        self.groups.set_placement(specs)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def status_fields(self) -> dict[str, Any]:
        return {
            "instance": self.instance_id,
            "pid": os.getpid(),
            "security": self.cfg.security.mode,
            "refused": dict(sorted(self.gate.counters.items())),
            "frames": dict(sorted(self.counters.items())),
            "sent": {"messages": dict(sorted(self.sent_messages.items())),
                     "bytes": dict(sorted(self.sent_bytes.items()))},
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            **({"control": self.control.status()} if self.control is not None else {}),
        }

    def status(self) -> dict[str, Any]:
        return self.service.status() if self.service is not None else self.status_fields()


def raise_fd_limit() -> None:
    """Raise this process's open-file limit to its hard limit: every hosted group holds its own
    storage file (two descriptors with SQLite's write-ahead log)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError) as exc:  # not fatal: few groups need few files
        log.debug("open-file limit unchanged: %s", exc)


def serve(cfg: Config, *, instance_id: str | None = None) -> int:
    """Run a node until SIGTERM/SIGINT. Returns the process exit code.

    With ``EXAPYTE_PROFILE=DIR`` in the environment the node runs under cProfile and writes
    ``DIR/<node id>.pstats`` when it stops (for ``bench/raft.py --profile``; see
    docs/performance.md).
    """
    profile_dir = os.environ.get("EXAPYTE_PROFILE")
    if not profile_dir:
        return _serve(cfg, instance_id)
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(_serve, cfg, instance_id)
    finally:
        os.makedirs(profile_dir, exist_ok=True)
        profiler.dump_stats(os.path.join(profile_dir, f"{cfg.node_id or 'node'}.pstats"))


def _serve(cfg: Config, instance_id: str | None) -> int:
    node = Node(cfg, instance_id=instance_id)
    try:
        node.start()
    except ConfigError as exc:  # missing keys and the like: the operator must fix something
        log.error("node %s cannot start: %s", cfg.node_id, exc)
        node.close()
        return 2
    except (ExapyteError, zmq.ZMQError, OSError) as exc:
        log.error("node %s failed to start: %s", cfg.node_id, exc)
        node.close()
        return 1
    node.install_signal_handlers()
    try:
        node.run()
    finally:
        node.close()
    return 0
