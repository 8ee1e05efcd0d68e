"""The control-plane group: where the control plane's state machine runs, and what each node does
with it.

Theory of operation
-------------------
The control plane (:mod:`exapyte.control.plane`) is a replicated state machine; this module
hosts it in a replica group of its own, ``control`` (:data:`~exapyte.wire.CONTROL_GROUP`), on
the first ``control_plane.replicas`` nodes of the initial voters, whenever the keys are spread
over shards (the sharded and hierarchical strategies; under the centralized strategy the map is
the one group ``default`` and there is no control group).

- **State machine.** :class:`ControlStateMachine` is the KV state machine of the group with one
  record, :data:`~exapyte.wire.PLANE_KEY`, holding the plane's snapshot image, and one kind of
  write, :class:`~exapyte.wire.ControlOp`: a list of plane commands applied in order in one log
  entry. Everything else a KV replica has (the log, write-behind, snapshots, crash recovery,
  sessions for exactly-once retries, linearizable reads) is the KV machinery's, unchanged; a
  put, delete or cas in this group is a failed outcome that changes nothing. Reading the record
  (a strong ``get`` of ``plane`` in group ``control``) is how a client resyncs.
- **Founding.** The group's leader, finding the plane empty (version 0), proposes the
  topology of the config and the initial placement (:func:`bootstrap_commands`). Two leaders
  doing so in turn are harmless: every command of the second batch is refused (the regions,
  nodes and shards exist), so the state is the same.
- **Reports.** A shard's membership changes only in the shard's own log. Every node, for each
  shard whose replica it hosts as leader, compares the group as it applied it (configuration
  version, members, leader and term) with its copy of the plane, and sends what differs to the
  control leader (``node.reports``), which proposes it as ``ShardReport`` commands; the plane
  takes only newer versions, so late or repeated reports change nothing.
- **Feed.** The control leader publishes each version the plane reaches (``control.delta``),
  a beat with its current version every ``control_plane.publish_interval_s``
  (``control.beat``), and, on a resync request (``node.resync``), the whole plane
  (``control.snapshot``). Every node keeps a :class:`~exapyte.control.pubsub.Mirror` of the
  plane from the feed (a node hosting a control replica also copies its replica's state); a gap,
  or a beat ahead of the mirror, sends a resync request. The mirror is only a hint: it points
  redirects for groups a node does not host and fills the node's ``status``; every request is
  still checked against the serving group's own configuration version.

:class:`ControlAgent` is a node's part in all of this; it touches no socket (the node hands it
what arrived and sends what it returns), so the same code can be driven without ZeroMQ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from exapyte import distribution, limits
from exapyte.config import Config
from exapyte.control.plane import (
    Command,
    ControlPlane,
    LinkSet,
    NodeAdd,
    PlaneError,
    RegionSet,
    ShardCreate,
    ShardReport,
    decode_command,
    encode_command,
)
from exapyte.control.pubsub import Mirror, Publication, Verdict
from exapyte.distribution.base import GroupSpec
from exapyte.kv import Command as KVCommand
from exapyte.kv import KVStateMachine, Outcome
from exapyte.kv import command_problem as kv_command_problem
from exapyte.protocol.types import Role
from exapyte.storage import Delete, Put, Record
from exapyte.wire import (
    CONTROL_GROUP,
    PLANE_KEY,
    ControlOp,
    FeedBeat,
    FeedDelta,
    FeedResync,
    FeedSnapshot,
    PutOp,
    ReplyCode,
    ShardReports,
)

if TYPE_CHECKING:
    from exapyte.runtime.replica import Replica

log = logging.getLogger(__name__)

__all__ = [
    "CONTROL_GROUP",
    "ControlAgent",
    "ControlStateMachine",
    "bootstrap_commands",
    "control_spec",
    "decode_outcomes",
]

REPORTS_PER_FRAME_MAX = 64  # shard reports in one node.reports frame
COMMANDS_PER_OP_MAX = limits.CONTROL_COMMANDS_MAX
RESYNC_EVERY_TICKS = 10  # a node asks for a resync at most this often
REPORT_EVERY_TICKS = 10  # a node compares its shard leaders with the plane this often

_outcomes_encoder = msgspec.msgpack.Encoder()
_outcomes_decoder = msgspec.msgpack.Decoder(list[tuple[bool, int, str]])


def control_spec(cfg: Config) -> GroupSpec | None:
    """The control group of this cluster, or None where there is none (centralized strategy,
    or no consensus)."""
    if not cfg.replicated or cfg.distribution.strategy == "centralized":
        return None
    voters = cfg.initial_voters()[: cfg.control_plane.replicas]
    return GroupSpec(CONTROL_GROUP, tuple(voters))


def bootstrap_commands(cfg: Config, groups: Iterable[GroupSpec]) -> list[Command]:
    """The plane's founding commands: the config's regions and links, every node, every shard of
    the initial placement at configuration version 0."""
    regions = {r.id: r.name for r in cfg.cluster.regions}
    for n in cfg.cluster.nodes:
        regions.setdefault(n.region, "")
    cmds: list[Command] = [RegionSet(r, name) for r, name in sorted(regions.items())]
    cmds += [LinkSet(link.a, link.b, float(link.latency_ms)) for link in cfg.cluster.links]
    cmds += [NodeAdd(n.id, n.region, n.endpoint) for n in cfg.cluster.nodes]
    cmds += [ShardCreate(g) for g in groups if g.id != CONTROL_GROUP]
    return cmds


def decode_outcomes(value: bytes | None) -> list[tuple[bool, int, str]]:
    """Each command's outcome in a ControlOp's reply value: (changed, version, why not)."""
    return _outcomes_decoder.decode(value) if value else []


class ControlStateMachine(KVStateMachine):
    """The control group's state machine (module docstring). ``plane`` is the applied state;
    ``published`` collects what each applied command produced, for the leader's feed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plane = ControlPlane()
        self.published: list[Publication] = []
        self._load_plane()

    def _load_plane(self) -> None:
        rec = self.storage.get(PLANE_KEY)
        plane = ControlPlane()
        if rec is not None:
            try:
                plane.restore(rec.value)
            except PlaneError as exc:
                raise AssertionError(f"the control group's plane record is unreadable: {exc}") from exc
        self.plane = plane

    def restore(self, data: bytes) -> None:
        super().restore(data)
        self._load_plane()
        self.published.clear()

    def command_problem(self, cmd: KVCommand) -> str | None:
        op = cmd.op
        if type(op) is not ControlOp:
            return "the control group holds only control-plane commands"
        problem = kv_command_problem(KVCommand(cmd.client_id, cmd.seq, _PROBE))
        if problem is not None:
            return problem
        if op.key != PLANE_KEY:
            return f"a control-plane command's key is {PLANE_KEY!r}"
        if type(op.commands) is not tuple or not 0 < len(op.commands) <= COMMANDS_PER_OP_MAX:
            return f"a control op holds 1..{COMMANDS_PER_OP_MAX} commands"
        if any(type(c) is not bytes for c in op.commands):
            return "a control op's commands are bytes"
        return None

    def _apply_op(
        self, op: Any, index: int, overlay: dict[str, Record | None], batch: list[Put | Delete]
    ) -> Outcome:
        plane = self.plane
        current = overlay.get(PLANE_KEY)  # the plane as of the previous op: undo restores it
        results: list[tuple[bool, int, str]] = []
        published: list[Publication] = []
        for raw in op.commands:
            try:
                command = decode_command(raw)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                results.append((False, plane.version, f"not a control-plane command: {exc}"))
                continue
            outcome = plane.execute(command)
            results.append((outcome.ok, outcome.version, outcome.error or ""))
            if outcome.ok:
                published.append(Publication(outcome.version, plane.epoch, index, command))
        plane.applied_index = index
        if published:
            image = plane.snapshot()
            if len(image) > limits.VALUE_BYTES_MAX:  # the map outgrew its record: undo
                plane = self.plane = ControlPlane()
                if current is not None:
                    plane.restore(current.value)
                plane.applied_index = index
                n = len(op.commands)
                return Outcome(ReplyCode.BAD_REQUEST, (
                    f"the plane would be {len(image)} bytes, more than VALUE_BYTES_MAX; "
                    f"none of the {n} commands applied"
                ).encode(), plane.version, index)
            overlay[PLANE_KEY] = Record(image, current.version + 1 if current else 1)
            batch.append(Put(PLANE_KEY, image))
            self.published.extend(published)
        return Outcome(ReplyCode.OK, _outcomes_encoder.encode(results), plane.version, index)

    def take_published(self) -> list[Publication]:
        out, self.published = self.published, []
        return out


# kv's rule judges the client id and seq, then the op: a put of an empty value on the plane key
# passes every op check, so only the id and the seq are judged.
_PROBE = PutOp(PLANE_KEY, b"")


class ControlAgent:
    """One node's part in the control plane (module docstring). Single-threaded; the node calls
    it from its loop. ``send(peer, frame)`` sends a node-level frame to a peer; ``publish(msg)``
    puts a feed message on this node's PUB socket."""

    def __init__(
        self,
        cfg: Config,
        *,
        replicas: Callable[[], dict[str, Replica]],
        send: Callable[[str, Any], None],
        publish: Callable[[Any], None],
        on_map: Callable[[ControlPlane], None] | None = None,
        now_us: Callable[[], int] | None = None,
        wake: Callable[[str], None] | None = None,
        touched: Callable[[], set[str]] | None = None,
    ) -> None:
        self.cfg = cfg
        # The groups that got any input since the last call (GroupTable.take_touched): only
        # they can have changed leader, term or membership, so only they are looked at again
        # while the plane's version stands (without it, every group at every report).
        self._touched = touched
        self._looked_at = -1  # the plane version of the last look at every group
        self._unsettled: set[str] = set()  # led groups the plane does not describe right yet
        # The clock the agent's session sequence numbers follow (they must grow across
        # restarts, for exactly-once proposals); the simulator passes its simulated clock.
        self._now_us = now_us if now_us is not None else lambda: int(time.time() * 1_000_000)
        # Tells the group table that the control replica got a proposal it did not route, so
        # that a quiesced control group ticks and flushes it (else it waits for other input).
        self._wake = wake
        self.node_id = cfg.node_id or ""
        self.spec = control_spec(cfg)
        self._replicas = replicas
        self._send = send
        self._publish = publish
        self._on_map = on_map
        self.mirror = Mirror()
        self.leader: tuple[int, str] | None = None  # (term, node) of the newest publisher heard
        self.counters: dict[str, int] = {}
        self.ticks = 0
        self._resync_at = -RESYNC_EVERY_TICKS
        self._bootstrap_term = -1
        self._reported: dict[str, tuple[int, str, int]] = {}  # shard -> (version, leader, term) sent
        self._seq = self._now_us()
        self._mirror_version = 0

    @property
    def enabled(self) -> bool:
        return self.spec is not None

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- the local control replica -----------------------------------------------------------

    def _local(self) -> Replica | None:
        return self._replicas().get(CONTROL_GROUP)

    def _leading(self, replica: Replica | None) -> bool:
        return replica is not None and replica.core.role is Role.LEADER

    def propose(self, commands: list[Command]) -> bool:
        """Propose ``commands`` on the local control replica (it must lead); False if it could
        not."""
        replica = self._local()
        if not self._leading(replica) or not commands:
            return False
        assert replica is not None
        self._seq = max(self._seq + 1, self._now_us())
        op = ControlOp(tuple(encode_command(c) for c in commands[:COMMANDS_PER_OP_MAX]))
        if not replica.propose_internal(KVCommand(f"node:{self.node_id}", self._seq, op)):
            return False
        if self._wake is not None:
            self._wake(CONTROL_GROUP)
        return True

    def after_flush(self) -> None:
        """After the node's flush: publish what the local control replica applied (when it
        leads) and keep the mirror at least as new as the local replica."""
        replica = self._local()
        if replica is None:
            return
        sm = replica.sm
        assert isinstance(sm, ControlStateMachine)
        published = sm.take_published()
        leading = self._leading(replica)
        if leading:
            term = replica.core.term
            self.leader = (term, self.node_id)
            for pub in published:
                self._publish(FeedDelta(
                    self.node_id, term, pub.version, pub.epoch, pub.index, encode_command(pub.command),
                ))
                self.count("feed_published")
        if sm.plane.version > self.mirror.plane.version:
            if self.mirror.on_snapshot(sm.plane.snapshot()):
                self._map_changed()

    # -- ticks ---------------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks % REPORT_EVERY_TICKS:
            return
        replica = self._local()
        if self._leading(replica):
            assert replica is not None
            sm = replica.sm
            assert isinstance(sm, ControlStateMachine)
            term = replica.core.status().term
            caught_up = sm.applied_index >= replica.core.status().commit
            if sm.plane.version == 0 and caught_up and self._bootstrap_term != term:
                _, placement = distribution.from_config(self.cfg)
                if self.propose(bootstrap_commands(self.cfg, placement.groups)):
                    self._bootstrap_term = term
                    log.info("%s: founding the control plane (term %d)", self.node_id, term)
        self._report()

    def _report(self) -> None:
        """Send the control leader what this node's shard leaders applied and the plane does
        not say yet."""
        if self.mirror.plane.version == 0:
            return  # the plane is not founded (or not heard of) yet
        reports: list[ShardReport] = []
        plane = self.mirror.plane
        replicas = self._replicas()
        touched = self._touched() if self._touched is not None else None
        if touched is None or plane.version != self._looked_at:
            candidates: Iterable[str] = replicas.keys()
            self._looked_at = plane.version
        else:  # a node hosting a thousand quiet shards looks at none of them
            candidates = touched | self._unsettled
        self._unsettled = set()
        for group in sorted(candidates):
            replica = replicas.get(group)
            if group == CONTROL_GROUP or replica is None or not self._leading(replica):
                continue
            entry = plane.shards.get(group)
            if entry is None:
                continue
            conf = replica.sm.conf
            voters, learners = (conf.voters, conf.learners) if conf.version else (
                replica.group.voters, replica.group.learners)
            term = replica.core.status().term
            if (entry.conf_version, entry.group.voters, entry.group.learners, entry.leader) == (
                conf.version, voters, learners, self.node_id
            ):
                continue
            self._unsettled.add(group)
            if self._reported.get(group) == (conf.version, self.node_id, term) and (
                self.ticks % (REPORT_EVERY_TICKS * 5)
            ):
                continue  # sent lately: give the plane time to take it
            self._reported[group] = (conf.version, self.node_id, term)
            reports.append(ShardReport(group, conf.version, voters, learners, self.node_id, term))
        if not reports:
            return
        self.count("reports_sent", len(reports))
        local = self._local()
        if self._leading(local):
            self.propose(list(reports))
            return
        target = self.leader[1] if self.leader is not None else None
        if target is None or target == self.node_id:
            return
        for start in range(0, len(reports), REPORTS_PER_FRAME_MAX):
            chunk = reports[start : start + REPORTS_PER_FRAME_MAX]
            self._send(target, ShardReports(self.node_id, target, tuple(encode_command(r) for r in chunk)))

    # -- what arrives --------------------------------------------------------------------------

    def on_reports(self, msg: ShardReports) -> None:
        """Reports from a peer: proposed when this node leads the control group."""
        if not self._leading(self._local()):
            self.count("reports_not_leader")
            return
        cmds: list[Command] = []
        for raw in msg.reports[:REPORTS_PER_FRAME_MAX]:
            try:
                cmd = decode_command(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                self.count("reports_undecodable")
                continue
            if not isinstance(cmd, ShardReport) or cmd.leader != msg.frm:
                self.count("reports_refused")  # a node reports only the shards it leads
                continue
            cmds.append(cmd)
        if cmds and self.propose(cmds):
            self.count("reports_proposed", len(cmds))

    def on_resync(self, msg: FeedResync) -> None:
        replica = self._local()
        if not self._leading(replica):
            self.count("resync_not_leader")
            return
        assert replica is not None
        sm = replica.sm
        assert isinstance(sm, ControlStateMachine)
        if self.ticks - self._resync_at < 1:
            return  # one snapshot per tick serves every node that asked
        self._resync_at = self.ticks
        self._publish(FeedSnapshot(
            self.node_id, replica.core.status().term, sm.plane.version, sm.plane.snapshot(),
        ))
        self.count("resyncs_served")

    def on_feed(self, msg: FeedDelta | FeedBeat | FeedSnapshot) -> None:
        if self.leader is None or msg.term > self.leader[0]:
            self.leader = (msg.term, msg.publisher)
        elif msg.term == self.leader[0] and msg.publisher != self.leader[1]:
            self.count("feed_two_publishers")  # never expected: one leader per term
        if isinstance(msg, FeedDelta):
            try:
                command = decode_command(msg.command)
            except (msgspec.DecodeError, UnicodeDecodeError):
                self.count("feed_undecodable")
                return
            verdict = self.mirror.on_publication(Publication(msg.version, msg.epoch, msg.index, command))
            self.count(f"feed_{verdict.value}")
            if verdict is Verdict.APPLY:
                self._map_changed()
            elif verdict in (Verdict.GAP, Verdict.WAITING):
                self._ask_resync(msg.publisher)
        elif isinstance(msg, FeedBeat):
            if msg.version > self.mirror.feed.version or self.mirror.feed.resync_needed:
                self.mirror.feed.resync_needed = True
                self._ask_resync(msg.publisher)
        else:
            if self.mirror.on_snapshot(msg.image):
                self.count("feed_resynced")
                self._map_changed()

    def _ask_resync(self, publisher: str) -> None:
        if self.ticks - self._resync_at < RESYNC_EVERY_TICKS or publisher == self.node_id:
            return
        self._resync_at = self.ticks
        self.count("resyncs_asked")
        self._send(publisher, FeedResync(self.node_id, publisher, self.mirror.feed.version))

    def beat(self) -> None:
        """The publish job: the control leader publishes its current version."""
        replica = self._local()
        if not self._leading(replica):
            return
        assert replica is not None
        sm = replica.sm
        assert isinstance(sm, ControlStateMachine)
        self._publish(FeedBeat(self.node_id, replica.core.status().term, sm.plane.version, sm.plane.epoch))

    def _map_changed(self) -> None:
        if self.mirror.plane.version != self._mirror_version:
            self._mirror_version = self.mirror.plane.version
            if self._on_map is not None:
                self._on_map(self.mirror.plane)

    # -- reporting -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        plane = self.mirror.plane
        return {
            "version": plane.version,
            "epoch": plane.epoch,
            "leader": self.leader[1] if self.leader is not None else None,
            "resync_needed": self.mirror.feed.resync_needed,
            "nodes": sorted(plane.nodes),
            "shards": {
                s: {"voters": list(e.group.voters), "learners": list(e.group.learners),
                    "config_version": e.conf_version, "leader": e.leader}
                for s, e in sorted(plane.shards.items())
            },
            "counters": dict(sorted(self.counters.items())),
        }
