"""The simulated world: nodes running :class:`~exapyte.runtime.replica.Replica`, the network,
the clients, the nemesis and the judges, all on one simulated clock.

Theory of operation
-------------------
One :class:`World` is one run of one seed. Every random choice comes from a ``random.Random``
seeded with :func:`~exapyte.sim.scheduler.derive_seed` of the run's seed and a label (the network,
each client, each node incarnation, the workload, the fault plan), so the run is a pure function
of its :class:`SimSpec`. There are no threads, sockets or wall clocks; collections are iterated in
sorted or insertion order, never in ``hash()`` order.

A node is the very :class:`~exapyte.runtime.groups.GroupTable` the ZeroMQ node runs, hosting a
``Replica`` per replica group the placement gives it (one group, ``default``, unless
``--shards`` asks for the sharded distribution), each with its own :class:`SimStorage` and seeded
rng, and callbacks that put replies, peer messages (``PeerMessage(group, message)``) and node
beats on the simulated network. Groups quiesce and wake exactly as on real nodes. Each event for
a node (a message, a tick) is followed by ``flush()`` and an invariant check of each of its
groups, by that group's :class:`~exapyte.sim.judge.StepJudge`. Ticks fire every ``network.tick_ms`` of simulated
time, scaled by the node's clock rate (drift); maintenance (snapshots) runs every
``MAINTENANCE_TICKS`` ticks; the simulated OS writes dirty pages back every ``WRITEBACK_TICKS``.

A sharded run also hosts the control group (``control``, on the control nodes) and gives each
node incarnation the product's :class:`~exapyte.control.group.ControlAgent`, driven as ``Node``
drives it (ticked, ``after_flush()`` after each flush, ``beat()`` every publish interval): its
node frames (shard reports, resync requests) and its feed (sent to every other node, one copy
per link) cross the simulated network. The control group is judged like a shard, and the run
converges only once its plane records every shard's applied membership.

Phases, like the real harness: boot, faults (the planned :class:`~exapyte.sim.faults.Fault`
intervals, while clients run their operation budget), heal (every fault ends, crashed nodes
restart, paused ones resume), a quiet period, final strong reads of every key, and convergence
of all replicas. The trace hash is a blake2b digest over every delivered message, fault event and
history record, in order: the same spec gives the same hash.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from exapyte import distribution
from exapyte.config import Config, loads
from exapyte.control.group import ControlAgent, ControlStateMachine, control_spec
from exapyte.control.partitions import PARTITION_SHAPES as ALL_SHAPES
from exapyte.control.rebalance import GroupState
from exapyte.data.router import Descriptor, Router
from exapyte.distribution.base import GroupSpec
from exapyte.history import Event
from exapyte.protocol.types import Entry, HardState, Role
from exapyte.runtime.groups import GroupTable
from exapyte.runtime.replica import Replica
from exapyte.sim.faults import (
    FAULT_KINDS,
    REBALANCE,
    Fault,
    FaultProfile,
    merge_faults,
    plan_faults,
    plan_rebalances,
)
from exapyte.sim.judge import StepJudge, lost_writes, view_of
from exapyte.sim.moves import MoveJudge, Rebalancer, groups_of_nodes
from exapyte.sim.network import Network
from exapyte.sim.scheduler import NS_PER_MS, NS_PER_S, Scheduler, derive_seed
from exapyte.sim.storage import SimStorage
from exapyte.sim.workload import (
    LEVELS,
    READ_LEVEL_WEIGHTS,
    History,
    Op,
    SimClient,
    Workload,
)
from exapyte.wire import (
    CONTROL_GROUP,
    FEED_MESSAGES,
    ClientReply,
    ClientRequest,
    FeedResync,
    GetOp,
    NodeBeat,
    PeerMessage,
    ReplyCode,
    ScanOp,
    ShardReports,
)

TICK_MS = 10
ELECTION_TIMEOUT_TICKS = 10
HEARTBEAT_TICKS = 2
SNAPSHOT_ENTRIES = 40
SNAPSHOT_CHUNK_BYTES = 64
MAINTENANCE_TICKS = 10
WRITEBACK_TICKS = 20
CONTROL_PUBLISH_S = 0.5  # sharded runs: the control leader's feed beat
INBOX_MAX = 1_000  # messages a paused node keeps queued (more are dropped)
WARMUP_MS = 300
FINAL_READ_DEADLINE_MS = 8_000
CONVERGE_DEADLINE_MS = 8_000
CONVERGE_POLL_MS = 50
CLOCK_SKEW_MAX = 0.02  # nominal tick rate of each node: 1 +- this
# A read a node accepted is answered or refused within one election timeout by the core and
# within three by the replica's own deadline: one still unanswered after this many of the node's
# own ticks is held for ever (a paused node does not tick, a crashed one forgets its reads).
READ_HELD_TICKS_MAX = 4 * ELECTION_TIMEOUT_TICKS
_RESULT_CODES = frozenset({ReplyCode.OK, ReplyCode.NOT_FOUND, ReplyCode.CAS_FAILED})
# bounded_staleness bounds of every simulated node (data_plane), and what the checkers judge by
STALENESS_VERSIONS_MAX = 20
STALENESS_MS_MAX = 500

# The replicas' own counters a run's result sums over every replica (a crashed incarnation's are
# kept). The session ones tell whether a run exercised the session token's check at all:
# ``reads_session_lost`` (a read refused because the token's entry was truncated),
# ``session_tokens_reused`` (the same read served by the known bug token-after-truncate's
# index-only check) and ``session_terms_unknown`` (a token older than the terms a replica keeps).
REPLICA_COUNTERS = (
    "snapshots_taken", "snapshots_installed", "reply_not_leader", "reads_failed", "reads_expired",
    "reads_session_lost", "session_tokens_reused", "session_terms_unknown",
)


@dataclass(frozen=True)
class SimSpec:
    """Everything a run depends on. ``keep_faults`` (indexes into the planned faults) and a
    smaller ``ops`` describe a shrunk case; the seed stays the same."""

    seed: int
    nodes: int = 3
    protocol: str = "raft"
    shards: int = 1
    regions: int = 1
    replication: str | None = None
    faults: tuple[str, ...] = FAULT_KINDS
    ops: int = 150
    clients: int = 5
    keys: int = 4
    fault_s: float = 8.0
    quiet_s: float = 1.5
    keep_faults: tuple[int, ...] | None = None
    lose_unsynced: bool = True
    profile: FaultProfile | None = field(default=None, compare=False)
    check_linearizability: bool = True
    # reads at mixed consistency levels (workload.LEVELS), judged by the per-level checkers;
    # False: every op strong
    mixed_levels: bool = True
    bugs: tuple[str, ...] = ()  # known product bugs switched on (exapyte.config.KNOWN_BUGS)
    # The founding nodes by name, each with its region (a topology's nodes): ``nodes`` must be
    # their count and ``regions`` 1. Empty: n1..nN dealt over ``regions`` regions r1, r2, ...
    placement: tuple[tuple[str, str], ...] = ()
    # How often a read asks for each level, in the order of workload.LEVELS (mixed levels
    # only); None: workload.READ_LEVEL_WEIGHTS
    read_weights: tuple[float, ...] | None = None
    # The partition shapes drawn (exapyte.control.partitions names); empty: the profile's
    shapes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.placement:
            ids = [node for node, _ in self.placement]
            if len(set(ids)) != len(ids):
                raise ValueError(f"placement names a node twice: {', '.join(ids)}")
            if self.nodes != len(ids):
                raise ValueError(f"placement has {len(ids)} nodes, the spec {self.nodes}")
            if self.regions != 1:
                raise ValueError("a placement gives the nodes' regions; regions must stay 1")
        if self.read_weights is not None:
            if len(self.read_weights) != len(LEVELS):
                raise ValueError(f"read_weights needs {len(LEVELS)} weights ({', '.join(LEVELS)}), "
                                 f"got {len(self.read_weights)}")
            if any(w < 0 for w in self.read_weights) or not sum(self.read_weights) > 0:
                raise ValueError(f"read_weights must be >= 0 with a positive sum, got {self.read_weights}")
        unknown = [s for s in self.shapes if s not in ALL_SHAPES]
        if unknown:
            raise ValueError(f"unknown partition shape(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(ALL_SHAPES)}")
        if "isolate-region" in self.shapes and self.region_count() < 2:
            raise ValueError("the isolate-region partition needs at least 2 regions")

    def region_count(self) -> int:
        """How many regions the founding nodes are in."""
        if self.placement:
            return len({region for _, region in self.placement})
        return self.regions

    def replay_command(self, program: str = "python -m exapyte.sim") -> str:
        parts = [program, f"--protocol {self.protocol}", f"--seed {self.seed}"]
        if self.placement:
            parts.append("--placement " + ",".join(f"{n}={r}" for n, r in self.placement))
        else:
            parts.append(f"--nodes {self.nodes}")
        if self.shards != 1:
            parts.append(f"--shards {self.shards}")
        if self.regions != 1:
            parts.append(f"--regions {self.regions}")
        if self.replication is not None:
            parts.append(f"--replication {self.replication}")
        parts.append(f"--faults {','.join(self.faults) if self.faults else 'none'}")
        parts.append(f"--ops {self.ops}")
        default = SimSpec(seed=0)
        if self.clients != default.clients:
            parts.append(f"--clients {self.clients}")
        if self.keys != default.keys:
            parts.append(f"--keys {self.keys}")
        if self.fault_s != default.fault_s:
            parts.append(f"--fault-seconds {self.fault_s:g}")
        if self.quiet_s != default.quiet_s:
            parts.append(f"--quiet-seconds {self.quiet_s:g}")
        if self.keep_faults is not None:
            parts.append(f"--keep-faults {','.join(map(str, self.keep_faults)) or 'none'}")
        if not self.lose_unsynced:
            parts.append("--keep-unsynced")
        if not self.mixed_levels:
            parts.append("--strong-only")
        if self.bugs:
            parts.append(f"--bugs {','.join(self.bugs)}")
        if self.read_weights is not None and self.mixed_levels:
            parts.append("--read-weights " + ",".join(
                f"{level}={weight:g}" for level, weight in zip(LEVELS, self.read_weights, strict=True)))
        if self.shapes:
            parts.append(f"--shapes {','.join(self.shapes)}")
        return " ".join(parts)


def sim_config(
    nodes: int,
    snapshot_entries: int = SNAPSHOT_ENTRIES,
    protocol: str = "raft",
    shards: int = 1,
    *,
    election_timeout_ticks: int = ELECTION_TIMEOUT_TICKS,
    heartbeat_ticks: int = HEARTBEAT_TICKS,
    spares: int = 0,
    bugs: Sequence[str] = (),
    regions: int = 1,
    replication: str | None = None,
    placement: Sequence[tuple[str, str]] = (),
) -> Config:
    """The cluster config every simulated node shares (memory storage, ``protocol``; with
    ``shards`` > 1 the sharded distribution, three replicas per shard). The timers default to
    the simulator's LAN-sized ones; a run over WAN latencies needs longer ones. ``spares``
    nodes follow the ``nodes`` founding ones in the cluster, outside the initial voters: they
    start empty and get replicas only by a rebalance. ``regions`` > 1 deals the nodes over that
    many regions (the replication strategies place voters and learners by region);
    ``replication`` names the strategy (default: the config's default). ``placement`` names
    the ``nodes`` founding nodes and their regions instead (a topology's; the spares then follow
    as ``n<N+1>``... in the first node's region)."""
    if placement and len(placement) != nodes:
        raise ValueError(f"placement has {len(placement)} nodes, not {nodes}")
    ids = [node for node, _ in placement] or [f"n{i}" for i in range(1, nodes + 1)]
    spare_ids: list[str] = []
    number = nodes
    while len(spare_ids) < spares:
        number += 1
        if f"n{number}" not in ids:
            spare_ids.append(f"n{number}")
    raw: dict[str, Any] = {
        "cluster": {
            "nodes": [
                {"id": node, "port": 7000 + i, "pub_port": 8000 + i}
                for i, node in enumerate(ids + spare_ids, start=1)
            ]
        },
        "storage": {"backend": "memory"},
        "network": {"tick_ms": TICK_MS},
        # bounded_staleness: K and T as the checkers judge them; one simulated clock, no skew
        "data_plane": {
            "staleness_versions_max": STALENESS_VERSIONS_MAX,
            "staleness_ms_max": STALENESS_MS_MAX,
            "clock_skew_ms_max": 0,
        },
        "consensus": {
            "protocol": protocol,
            "election_timeout_ticks": election_timeout_ticks,
            "heartbeat_ticks": heartbeat_ticks,
            "snapshot_entries": snapshot_entries,
            # small, so that snapshots cross the simulated network in several chunks
            "snapshot_chunk_bytes": SNAPSHOT_CHUNK_BYTES,
        },
    }
    if shards > 1:
        raw["distribution"] = {"strategy": "sharded", "shards": shards, "replication_factor": 3}
        # The control leader's beat, by which a node that missed the feed finds out and asks
        # for a resync: a second-sized run needs it more often than the 5 s default.
        raw["control_plane"] = {"publish_interval_s": CONTROL_PUBLISH_S}
    if spares:
        raw["consensus"]["initial_voters"] = ids
    if bugs:  # the product's known bugs (config.KNOWN_BUGS), to show that the judges catch them
        raw["unsafe"] = {"enabled": True, "bugs": list(bugs)}
    names: list[str] = []
    if placement:  # the regions named; a spare sits in the first node's region
        where = dict(placement)
        for node in raw["cluster"]["nodes"]:
            node["region"] = where.get(node["id"], placement[0][1])
        names = list(dict.fromkeys(region for _, region in placement))
    elif regions > 1:  # node i in region r((i - 1) mod R)
        names = [f"r{j}" for j in range(1, regions + 1)]
        for i, node in enumerate(raw["cluster"]["nodes"]):
            node["region"] = names[i % regions]
    if names:
        # Config only (the replication strategies place voters and learners by it): the
        # simulated network's delays do not depend on regions.
        raw["cluster"]["regions"] = [{"id": r} for r in names]
        raw["cluster"]["links"] = [
            {"a": a, "b": b, "latency_ms": 10 * (j - i)}
            for i, a in enumerate(names) for j, b in enumerate(names) if i < j
        ]
    if replication is not None:
        raw["replication"] = {"strategy": replication}
    return loads(json.dumps(raw), source="<simulator>")


class SimReplica(Replica):
    """The product Replica, with applied entries reported to the judge."""

    on_applied: Any = None

    def apply(self, entries: Sequence[Entry]) -> None:
        if self.on_applied is not None:
            self.on_applied(self.node_id, entries)
        super().apply(entries)


@dataclass
class SimNode:
    id: str
    lose_unsynced: bool = True
    storages: dict[str, SimStorage] = field(default_factory=dict)  # group -> its storage
    dropped: set[str] = field(default_factory=set)  # groups it left and dropped (dropped.json)
    tombstones: dict[str, HardState] = field(default_factory=dict)  # their replicas' promises
    table: GroupTable | None = None
    agent: ControlAgent | None = None  # sharded runs: its part in the control plane
    incarnation: int = 0
    down: int = 0  # active crash faults
    paused: int = 0  # active pause faults
    pause_queues: bool = True
    inbox: deque[tuple[str, Any]] = field(default_factory=deque)
    clock_rate: float = 1.0
    drift: list[float] = field(default_factory=list)
    ticks: int = 0
    # reads this incarnation accepted and has not answered: reply token -> its ticks at arrival
    # (a duplicated request arrives twice and is answered twice)
    open_reads: dict[Any, list[int]] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.down == 0 and self.table is not None

    def storage(self, group: str) -> SimStorage:
        store = self.storages.get(group)
        if store is None:
            store = self.storages[group] = SimStorage(lose_unsynced=self.lose_unsynced)
        return store

    def replicas(self) -> list[tuple[str, SimReplica]]:
        if self.table is None:
            return []
        return sorted(self.table.replicas.items())  # type: ignore[arg-type]


class _Trace:
    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self._enc = msgspec.msgpack.Encoder(order="deterministic")
        self.events = 0

    def add(self, *fields: Any) -> None:
        self.events += 1
        self._hash.update(self._enc.encode(fields))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class World:
    """One run; see the module docstring. ``run()`` returns when the run is over."""

    def __init__(self, spec: SimSpec) -> None:
        self.spec = spec
        seed = spec.seed
        # The rebalance fault needs shards to move and a spare node to move them to.
        self.rebalancing = spec.shards > 1 and REBALANCE in spec.faults
        spares = 1 if self.rebalancing else 0
        self.cfg = sim_config(
            spec.nodes, protocol=spec.protocol, shards=spec.shards, spares=spares, bugs=spec.bugs,
            regions=spec.regions, replication=spec.replication, placement=spec.placement,
        )
        self.node_ids = tuple(self.cfg.node_ids())
        self.node_region = {n.id: n.region for n in self.cfg.cluster.nodes}
        self.founders = tuple(self.cfg.initial_voters())
        self.strategy, placement = distribution.from_config(self.cfg)
        self.placement = placement.groups
        # The control group (sharded runs): hosted, judged and converged like the shards, by
        # the product's ControlStateMachine and ControlAgent (docs/simulator.md).
        self.control = control_spec(self.cfg)
        self.publish_ticks = max(1, round(self.cfg.control_plane.publish_interval_s * 1000 / TICK_MS))
        self.plane_divergence = ""
        self.group_members = {g.id: g.members for g in self.placement}
        self.sched = Scheduler()
        self.trace = _Trace()
        self.history = History(on_record=self._trace_record)
        self.judges = {g.id: StepJudge() for g in self.all_groups}
        self.network = Network(
            self.sched,
            random.Random(derive_seed(seed, "network")),
            self.node_ids,
            self._deliver,
            on_delivered=self._trace_delivery,
        )
        skew_rng = random.Random(derive_seed(seed, "clocks"))
        self.nodes = {
            node_id: SimNode(
                node_id,
                lose_unsynced=spec.lose_unsynced,
                clock_rate=1.0 + skew_rng.uniform(-CLOCK_SKEW_MAX, CLOCK_SKEW_MAX),
            )
            for node_id in self.node_ids
        }
        self.workload = Workload(random.Random(derive_seed(seed, "workload")), spec.keys,
                                 mixed_levels=spec.mixed_levels,
                                 weights=spec.read_weights or READ_LEVEL_WEIGHTS)
        self.read_counters: dict[str, int] = {}  # weak reads answered, by level and server
        self.clients: list[SimClient] = []
        self.ops_started = 0
        self.fault_start_ns = WARMUP_MS * NS_PER_MS
        self.heal_ns = self.fault_start_ns + int(spec.fault_s * NS_PER_S)
        self.final_reads_ns = self.heal_ns + int(spec.quiet_s * NS_PER_S)
        profile = spec.profile
        if spec.shapes:
            profile = dataclasses.replace(profile or FaultProfile(), shapes=spec.shapes)
        planned = plan_faults(
            random.Random(derive_seed(seed, "faults")),
            self.node_ids,
            spec.faults,
            (self.fault_start_ns, self.heal_ns),
            profile,
            regions=self.node_region,
        )
        if self.rebalancing:
            planned = merge_faults(planned, plan_rebalances(
                random.Random(derive_seed(seed, "rebalance")),
                self.founders,
                [n for n in self.node_ids if n not in self.founders],
                (self.fault_start_ns, self.heal_ns),
                profile,
            ))
        self.planned_faults = planned
        if spec.keep_faults is None:
            self.faults = planned
        else:
            self.faults = tuple(planned[i] for i in spec.keep_faults if i < len(planned))
        self._active: list[Fault] = []
        self.counters: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}
        for kind in spec.faults:
            self.counters.setdefault(kind, 0)  # a named-only kind (strand)
        self._strands: list[Fault] = []  # active strand faults
        self._stranded: str | None = None  # the node they cut off now
        self._strand_commits: dict[tuple[str, str], int] = {}  # (node, group) -> commit seen
        if self.rebalancing:
            self.counters[REBALANCE] = 0
        self.moves = MoveJudge()
        self.rebalancer = Rebalancer(self)
        self.counters.update(dropped_node_down=0, dropped_paused=0, queued_paused=0,
                             restarts=0, unsynced_writes_lost=0, heals=0)
        self.final_clients: list[SimClient] = []
        self.replica_counters: dict[str, int] = {}
        self.held_reads: list[str] = []  # reads a node held past READ_HELD_TICKS_MAX, described
        # (node, process, attempt) -> (group, version routed by, replica's version on arrival)
        self._routed: dict[tuple[str, Any, int], tuple[str, int, int]] = {}
        self.served_stale: list[str] = []  # requests served at another configuration version
        self.converged = False
        self.divergence = ""
        # the replicas' states differ at one applied index: state-machine safety, not liveness
        self.state_diverged = False
        self.think_ns = int(1.6 * spec.fault_s * NS_PER_S * spec.clients / max(spec.ops, 1))

    @property
    def all_groups(self) -> tuple[GroupSpec, ...]:
        """Every replica group of the run: the placement's, and the control group if any."""
        control = (self.control,) if self.control is not None else ()
        return (*self.placement, *control)

    # --- tracing --------------------------------------------------------------------------------

    def _trace_delivery(self, frm: str, to: str, msg: Any) -> None:
        self.trace.add(self.sched.now_ns, frm, to, msg)

    def _trace_record(self, record: Event, line: bytes) -> None:
        self.trace.add(line)

    # --- nodes ----------------------------------------------------------------------------------

    def _boot(self, node: SimNode) -> None:
        node.incarnation += 1
        incarnation = node.incarnation
        seed = self.spec.seed
        send = self.network.send
        node_id = node.id

        def rng_for(group: str) -> random.Random:
            if group == "default":  # the seeds of single-group runs stay what they were
                return random.Random(derive_seed(seed, "node", node_id, incarnation))
            return random.Random(derive_seed(seed, "node", node_id, incarnation, group))

        table = GroupTable(
            self.cfg.with_node(node_id),
            open_storage=node.storage,
            rng_for=rng_for,
            reply=functools.partial(self._reply, node_id),
            # Leaders stamp what they send with (commit, clock ms), as PeerMessage carries it
            # between real nodes; followers measure bounded staleness against the stamps.
            send=lambda to, group, msg, stamp=None: send(
                node_id, to, PeerMessage(group, msg) if stamp is None else PeerMessage(group, msg, *stamp)
            ),
            beat=lambda to: send(node_id, to, NodeBeat(node_id, to, str(incarnation))),
            make_replica=functools.partial(self._make_replica, node_id),
            remove_storage=functools.partial(self._remove_storage, node),
            clock_ms=self._clock_ms,
            tombstones=node.tombstones,
        )
        table.set_placement(self.all_groups)
        # Like Node._hosted_groups: the initial placement's groups less those it dropped, plus
        # those whose storage it holds (it joined them by a rebalance).
        for spec in self.all_groups:
            if spec.id == "default" or (node_id in spec.members and spec.id not in node.dropped):
                table.create(spec)
            elif spec.id in node.storages:
                table.create(GroupSpec(spec.id, (), (), spec.region))
        node.table = table
        if self.control is not None:
            # The node's control agent, as Node runs it: frames to one peer go over the
            # simulated network, and the feed (PUB/SUB) goes to every other node, each copy
            # on its own link (lost, cut or delayed like any node-to-node message).
            peers = [n for n in self.node_ids if n != node_id]
            node.agent = ControlAgent(
                table.cfg, replicas=lambda: table.replicas,
                send=lambda to, frame: send(node_id, to, frame),
                publish=lambda msg: [send(node_id, peer, msg) for peer in peers],
                now_us=lambda: self.sched.now_ns // 1_000, wake=table.wake,
                touched=table.take_touched,
            )
        self._after(node)
        self.sched.after(self._tick_ns(node), self._tick, node.id, node.incarnation)

    def _make_replica(self, node_id: str, *args: Any, **kwargs: Any) -> SimReplica:
        """The GroupTable's replica factory: a replica it creates (at boot, or when a rebalance
        makes this node a member) reports what it applies to its group's judges."""
        replica = SimReplica(*args, **kwargs)
        group = replica.group.id
        judge = self.judges[group]
        if self.rebalancing:
            moves = self.moves

            def on_applied(node: str, entries: Sequence[Entry]) -> None:
                judge.on_apply(node, entries)
                moves.on_apply(group, entries)

            replica.on_applied = on_applied
        else:
            replica.on_applied = judge.on_apply
        judge.forget_node(node_id)
        return replica

    def _remove_storage(self, node: SimNode, group: str, tombstone: HardState) -> None:
        """The node dropped its replica of ``group`` (it left the group): its files go, the
        tombstone of its promises stays (durable, like the node's dropped.json)."""
        node.storages.pop(group, None)
        node.dropped.add(group)
        node.tombstones[group] = tombstone
        self.judges[group].forget_node(node.id)
        self.moves.forget(group, node.id)
        self.counters["groups_dropped"] = self.counters.get("groups_dropped", 0) + 1

    def _tick_ns(self, node: SimNode) -> int:
        rate = node.clock_rate * (node.drift[-1] if node.drift else 1.0)
        return int(TICK_MS * NS_PER_MS / rate)

    def _tick(self, node_id: str, incarnation: int) -> None:
        node = self.nodes[node_id]
        if node.incarnation != incarnation or not node.up:
            return  # this tick loop belongs to a crashed incarnation
        self.sched.after(self._tick_ns(node), self._tick, node_id, incarnation)
        if node.paused:
            return
        node.ticks += 1
        table = node.table
        assert table is not None
        table.tick()
        agent = node.agent
        if agent is not None:
            agent.tick()
            if node.ticks % self.publish_ticks == 0:
                agent.beat()  # the node's publish job
        self._after(node)
        if node.open_reads:
            self._check_open_reads(node)
        if table.has_idle_work():  # the node's loop is idle between ticks (the state machine stores)
            table.idle()
        if node.ticks % MAINTENANCE_TICKS == 0:
            table.maintenance()
        if node.ticks % WRITEBACK_TICKS == 0:
            for store in node.storages.values():
                store.writeback()

    def _after(self, node: SimNode) -> None:
        table = node.table
        assert table is not None
        table.flush()
        if node.agent is not None:
            node.agent.after_flush()
            table.flush()  # what the agent proposed
        advanced = False
        for group, replica in node.replicas():
            view = view_of(node.id, replica.core)
            self.judges[group].observe_node(view)
            if self.rebalancing:
                self.moves.observe(group, node.id, replica.sm.applied_index)
            if self._strands:
                key = (node.id, group)
                if view.is_leader and view.commit > self._strand_commits.get(key, view.commit):
                    advanced = True
                self._strand_commits[key] = view.commit
        if advanced:
            self._strand(node)

    def _strand(self, node: SimNode) -> None:
        """A strand is active and ``node`` led a commit in this step: cut it off now (the commit
        news it just sent dies in flight); the node stranded before goes free."""
        if node.id != self._stranded:
            self._stranded = node.id
            self.history.nemesis("info", "strand", {"node": node.id}, self.sched.now_ns)
            self._apply_network()

    def _check_open_reads(self, node: SimNode) -> None:
        for token, arrivals in list(node.open_reads.items()):
            if node.ticks - arrivals[0] > READ_HELD_TICKS_MAX:
                del node.open_reads[token]  # reported once
                self.held_reads.append(
                    f"{node.id} held a read of client {token[0]} (attempt {token[1]}) for "
                    f"{node.ticks - arrivals[0]} ticks without answering"
                )

    def _deliver(self, frm: str, to: str, msg: Any) -> None:
        node = self.nodes.get(to)
        if node is None:
            attempt, reply = msg
            self.clients_by_endpoint[to].on_reply(attempt, reply)
            return
        if not node.up:
            self.counters["dropped_node_down"] += 1
            return
        if node.paused:
            if node.pause_queues and len(node.inbox) < INBOX_MAX:
                node.inbox.append((frm, msg))
                self.counters["queued_paused"] += 1
            else:
                self.counters["dropped_paused"] += 1
            return
        self._handle(node, frm, msg)

    def _handle(self, node: SimNode, frm: str, msg: Any) -> None:
        table = node.table
        assert table is not None
        if isinstance(msg, tuple):
            process, attempt, req = msg
            assert isinstance(req, ClientRequest)
            if isinstance(req.op, (GetOp, ScanOp)):
                node.open_reads.setdefault((process, attempt), []).append(node.ticks)
            if req.config_version:
                # The version of the replica the request reaches, judged when it is answered.
                replica = table.replicas.get(req.group)
                if replica is not None:
                    self._routed[(node.id, process, attempt)] = (
                        req.group, req.config_version, replica.sm.conf_version
                    )
            # The reply token is opaque to the replica (ZeroMQ passes a socket identity).
            table.on_request((process, attempt), req)
        elif isinstance(msg, NodeBeat):
            table.heard_from(frm, msg.instance)
        elif isinstance(msg, (ShardReports, FeedResync, *FEED_MESSAGES)):
            agent = node.agent
            assert agent is not None  # only agents send them
            table.heard_from(frm)
            if isinstance(msg, ShardReports):
                agent.on_reports(msg)
            elif isinstance(msg, FeedResync):
                agent.on_resync(msg)
            else:
                agent.on_feed(msg)
        else:
            assert isinstance(msg, PeerMessage)
            table.heard_from(frm)
            table.on_peer(msg.group, msg.msg, (msg.commit, msg.sent_ms) if msg.commit >= 0 else None)
        self._after(node)

    def _reply(self, node_id: str, reply_to: Any, reply: ClientReply) -> None:
        open_reads = self.nodes[node_id].open_reads
        arrivals = open_reads.get(reply_to)
        if arrivals is not None:
            del arrivals[0]
            if not arrivals:
                del open_reads[reply_to]
        process, attempt = reply_to
        if reply.code in _RESULT_CODES:
            self._count_weak_read(node_id, process, reply)
        routed = self._routed.pop((node_id, process, attempt), None) if self._routed else None
        if routed is not None and reply.code in _RESULT_CODES and routed[1] != routed[2]:
            self.served_stale.append(
                f"{node_id} served a request of client {process} for group {routed[0]} routed "
                f"by configuration {routed[1]} while at configuration {routed[2]}"
            )
        self.network.send(node_id, f"c{process}", (attempt, reply))

    def _clock_ms(self) -> float:
        """Every node's clock: the simulated time (one clock, so no skew between nodes)."""
        return self.sched.now_ns / NS_PER_MS

    def _count_weak_read(self, node_id: str, process: int, reply: ClientReply) -> None:
        """Count a weak read answered, by its level and by who served it (leader or follower)."""
        client = self.clients_by_endpoint.get(f"c{process}")
        op = getattr(client, "op", None)
        if op is None or op.f != "read" or not op.weak:
            return
        table = self.nodes[node_id].table
        replica = table.replicas.get(reply.group or "default") if table is not None else None
        role = "leader" if replica is not None and replica.core.role is Role.LEADER else "follower"
        name = f"reads_{op.level}_{role}"
        self.read_counters[name] = self.read_counters.get(name, 0) + 1
        if replica is not None:
            self._weak_read_served(process, reply, node_id, replica)

    def _weak_read_served(self, process: int, reply: ClientReply, node_id: str, replica: Any) -> None:
        """A weak read of ``process`` that ``replica`` on ``node_id`` answered (counted above);
        a world that measures more of them overrides this."""

    # --- nemesis --------------------------------------------------------------------------------

    def _fault_start(self, fault: Fault) -> None:
        self.counters[fault.kind] += 1
        self._active.append(fault)
        self.history.nemesis("info", f"start-{fault.kind}", fault.to_json(), self.sched.now_ns)
        if fault.kind == "crash":
            node = self.nodes[fault.node or ""]
            node.down += 1
            if node.down == 1 and node.table is not None:
                for _, replica in node.replicas():
                    self._collect(replica)
                for store in node.storages.values():
                    self.counters["unsynced_writes_lost"] += store.crash()
                node.table = None
                node.inbox.clear()
                node.open_reads.clear()  # the process is gone; its clients time out
        elif fault.kind == "pause":
            node = self.nodes[fault.node or ""]
            node.paused += 1
            node.pause_queues = fault.queue
        elif fault.kind == "drift":
            self.nodes[fault.node or ""].drift.append(fault.rate)
        elif fault.kind == "strand":
            self._strands.append(fault)
        elif fault.kind == REBALANCE:
            self.rebalancer.start(fault)
        self._apply_network()

    def _fault_end(self, fault: Fault) -> None:
        if fault not in self._active:
            return  # already ended by the heal
        self._active.remove(fault)
        self.history.nemesis("info", f"stop-{fault.kind}", fault.to_json(), self.sched.now_ns)
        if fault.kind == "crash":
            node = self.nodes[fault.node or ""]
            node.down -= 1
            if node.down == 0:
                self.counters["restarts"] += 1
                self._boot(node)
        elif fault.kind == "pause":
            node = self.nodes[fault.node or ""]
            node.paused -= 1
            if node.paused == 0:
                inbox, node.inbox = node.inbox, deque()
                for frm, msg in inbox:
                    if node.up and not node.paused:
                        self._handle(node, frm, msg)
        elif fault.kind == "drift":
            self.nodes[fault.node or ""].drift.remove(fault.rate)
        elif fault.kind == "strand":
            self._strands.remove(fault)
            if not self._strands:
                self._stranded = None
                self._strand_commits.clear()
        elif fault.kind == REBALANCE:
            self.rebalancer.stop(fault)
        self._apply_network()

    def _apply_network(self) -> None:
        net = self.network
        blocked: set[tuple[str, str]] = set()
        held: dict[tuple[str, str], float] = {}  # hold faults: link -> share shuffled
        rates = {"loss": 0.0, "dup": 0.0, "reorder": 0.0}
        for fault in self._active:
            if fault.kind == "partition":
                blocked.update(fault.links)
            elif fault.kind == "hold":
                held.update((link, max(held.get(link, 0.0), fault.rate)) for link in fault.links)
            elif fault.kind in rates:
                rates[fault.kind] = max(rates[fault.kind], fault.rate)
        if self._stranded is not None:
            blocked.update(
                link for other in self.node_ids if other != self._stranded
                for link in ((self._stranded, other), (other, self._stranded))
            )
        net.set_blocked(blocked)
        net.set_held(held)
        net.loss, net.dup, net.reorder = rates["loss"], rates["dup"], rates["reorder"]

    def _heal(self) -> None:
        self.counters["heals"] += 1
        self.history.nemesis("info", "heal", None, self.sched.now_ns)
        for fault in list(self._active):
            self._fault_end(fault)
        self.network.heal()

    # --- what the rebalancer's admin sees (the blocking one asks every node for its status) ----

    def _answering(self) -> list[SimNode]:
        return [self.nodes[n] for n in self.node_ids if self.nodes[n].up and not self.nodes[n].paused]

    def admin_groups(self) -> dict[str, GroupState]:
        """Every group as its leader reports it, from the nodes that would answer a status."""
        summaries = {}
        for node in self._answering():
            assert node.table is not None
            summaries[node.id] = node.table.groups_summary()
        return groups_of_nodes(summaries)

    def admin_applied(self, group: str, node_id: str) -> int | None:
        node = self.nodes[node_id]
        if not node.up or node.paused:
            return None
        assert node.table is not None
        replica = node.table.replicas.get(group)
        return None if replica is None else replica.sm.applied_index

    def admin_config_version(self, group: str, node_id: str) -> int:
        node = self.nodes[node_id]
        replica = node.table.replicas.get(group) if node.table is not None else None
        return 0 if replica is None else replica.sm.conf_version

    # --- clients --------------------------------------------------------------------------------

    def _client_send(self, frm: str, to: str, payload: Any) -> None:
        self.network.send(frm, to, payload)

    def _next_op(self, client: SimClient) -> None:
        if client.busy or self.sched.now_ns >= self.final_reads_ns:
            return
        if self.ops_started >= self.spec.ops:
            return
        self.ops_started += 1
        client.start(self.workload.next_op())

    def _client_done(self, client: SimClient) -> None:
        last = client.last_op
        if client.result is not None and last is not None:
            kind, value = client.result
            if kind == "ok":
                self.workload.observe(last.key, value[1] if last.f == "cas" else value)
        if client in self.final_clients:
            return
        think = int(client.rng.uniform(0, self.think_ns))
        self.sched.after(think, self._next_op, client)

    def _final_reads(self) -> None:
        base = self.spec.clients
        for i, key in enumerate(self.workload.keys):
            client = self._make_client(base + i, FINAL_READ_DEADLINE_MS)
            self.final_clients.append(client)
            client.start(Op("read", key, None))

    def _route(self, key: str) -> tuple[str, tuple[str, ...]]:
        group = self.strategy.shard_of(key)
        members = self.group_members[group]
        return group, (members if group != "default" else self.node_ids)

    def _make_client(self, process: int, deadline_ms: float | None = None) -> SimClient:
        kwargs: dict[str, Any] = {} if deadline_ms is None else {"deadline_ms": deadline_ms}
        if self.spec.shards > 1:
            # Each process caches descriptors of its own, at version 0 (none known yet), as
            # Client.from_config does; replies bring the groups' current ones.
            kwargs["router"] = Router(
                self.strategy, [Descriptor(g, 0) for g in self.placement]
            )
        client = SimClient(
            process,
            self.sched,
            random.Random(derive_seed(self.spec.seed, "client", process)),
            self.node_ids,
            self.history,
            self._client_send,
            self._client_done,
            route=self._route,
            **kwargs,  # type: ignore[arg-type]
        )
        self.clients_by_endpoint[client.endpoint] = client
        return client

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        self.clients_by_endpoint: dict[str, Any] = {self.rebalancer.endpoint: self.rebalancer}
        for node_id in self.node_ids:
            self._boot(self.nodes[node_id])
        for process in range(self.spec.clients):
            client = self._make_client(process)
            self.clients.append(client)
            start = self.fault_start_ns + int(client.rng.uniform(0, self.think_ns))
            self.sched.at(start, self._next_op, client)
        for fault in self.faults:
            self.sched.at(fault.start_ns, self._fault_start, fault)
            self.sched.at(fault.end_ns, self._fault_end, fault)
        self.sched.at(self.heal_ns, self._heal)
        self.sched.at(self.final_reads_ns, self._final_reads)
        final_deadline = self.final_reads_ns + FINAL_READ_DEADLINE_MS * NS_PER_MS + NS_PER_S
        self.sched.run_until(
            final_deadline,
            stop=lambda: self.sched.now_ns > self.final_reads_ns and self._quiescent(),
        )
        self._converge()

    def _quiescent(self) -> bool:
        return not any(c.busy for c in self.clients) and not any(
            c.busy for c in self.final_clients
        ) and not self.rebalancer.busy

    def _converge(self) -> None:
        deadline = self.sched.now_ns + CONVERGE_DEADLINE_MS * NS_PER_MS
        while self.sched.now_ns < deadline:
            if self._converged_now():
                self.converged = True
                return
            self.sched.run_until(self.sched.now_ns + CONVERGE_POLL_MS * NS_PER_MS)
        self.converged = self._converged_now()

    def _converged_now(self) -> bool:
        self.state_diverged = False
        if any(n.table is None for n in self.nodes.values()):
            self.divergence = "a node is down"
            return False
        shard_confs: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {}
        control_leader: Replica | None = None
        for spec in self.all_groups:
            replicas = [
                r for n in self.nodes.values() for g, r in n.replicas() if g == spec.id
            ]
            where = "" if spec.id == "default" else f"group {spec.id}: "
            if self.rebalancing:
                # The members are those of the group's newest configuration; a replica outside
                # it (a drop given up on) is no longer part of the group.
                newest = max(replicas, key=lambda r: (r.sm.conf_version, r.node_id), default=None)
                conf = newest.sm.conf if newest is not None else None
                members = set(conf.voters + conf.learners) if conf is not None else set()
                missing = sorted(members - {r.node_id for r in replicas})
                if missing:
                    self.divergence = f"{where}members {missing} host no replica"
                    return False
                replicas = [r for r in replicas if r.node_id in members]
            leaders = [r for r in replicas if r.core.role is Role.LEADER]
            if len(leaders) != 1:
                self.divergence = f"{where}{len(leaders)} leaders"
                return False
            leader = leaders[0]
            if spec.id == CONTROL_GROUP:
                control_leader = leader
            else:
                conf = leader.sm.conf
                shard_confs[spec.id] = (conf.version, conf.voters, conf.learners) if conf.version \
                    else (0, spec.voters, spec.learners)
            commit = leader.core.observe().commit
            applied = {r.node_id: r.sm.applied_index for r in replicas}
            if any(a != commit for a in applied.values()):
                self.divergence = f"{where}applied indexes {applied} vs leader commit {commit}"
                return False
            images = {r.node_id: r.sm.snapshot() for r in replicas}
            first_node = min(images)
            first = images[first_node]
            differing = [n for n, image in images.items() if image != first]
            if differing:
                self.state_diverged = True
                self.divergence = (
                    f"{where}state of {differing} differs from {first_node}'s at index {commit}"
                )
                return False
        if control_leader is not None:
            problem = self._plane_problem(control_leader, shard_confs)
            if problem:
                self.divergence = self.plane_divergence = problem
                return False
        self.divergence = self.plane_divergence = ""
        self.state_diverged = False
        return True

    def _plane_problem(
        self, leader: Replica,
        shard_confs: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]],
    ) -> str:
        """What the control plane's record says wrong about the shards' real memberships (each
        shard leader's applied configuration), or "" when it matches every shard."""
        sm = leader.sm
        assert isinstance(sm, ControlStateMachine)
        plane = sm.plane
        if plane.version == 0:
            return "control plane: not founded"
        for shard, (version, voters, learners) in sorted(shard_confs.items()):
            entry = plane.shards.get(shard)
            if entry is None:
                return f"control plane: shard {shard} missing"
            held = (entry.conf_version, entry.group.voters, entry.group.learners)
            if held != (version, voters, learners):
                return (
                    f"control plane: shard {shard} recorded at {held}, the group is at "
                    f"{(version, voters, learners)}"
                )
        return ""

    # --- results --------------------------------------------------------------------------------

    def _collect(self, replica: Replica) -> None:
        for name in REPLICA_COUNTERS:
            self.replica_counters[name] = self.replica_counters.get(name, 0) + replica.counters.get(name, 0)

    def replica_totals(self) -> dict[str, int]:
        totals = dict(self.replica_counters)
        for node in self.nodes.values():
            for _, replica in node.replicas():
                for name in REPLICA_COUNTERS:
                    totals[name] = totals.get(name, 0) + replica.counters.get(name, 0)
        totals["leader_terms"] = sum(len(j.leaders) for j in self.judges.values())
        return totals

    def final_applied(self, group: str = "default") -> int:
        return max(
            (r.sm.applied_index for n in self.nodes.values() for g, r in n.replicas() if g == group),
            default=0,
        )

    def lost_writes(self) -> list[str]:
        """Acknowledged writes that their group never applied (per group)."""
        by_group: dict[str, list[tuple[str, int, Op]]] = {}
        for acked in self.acked_writes():
            by_group.setdefault(self.strategy.shard_of(acked[2].key), []).append(acked)
        lost: list[str] = []
        for group, acked in sorted(by_group.items()):
            judge = self.judges[group]
            lost += lost_writes(acked, judge.applied_commands, self.final_applied(group))
        return lost

    def final_status(self) -> dict[str, Any]:
        """Each group's leader and term as the replicas hold them now (the highest term a
        replica leads in), the groups each node leads, the groups without a leader and the
        nodes down: the shape of the harness's ``cluster.final_status``."""
        best: dict[str, tuple[int, str]] = {}
        for node_id in self.node_ids:
            for group, replica in self.nodes[node_id].replicas():
                view = view_of(node_id, replica.core)
                if view.is_leader and (group not in best or view.term > best[group][0]):
                    best[group] = (view.term, node_id)
        leaders_per_node = {n: 0 for n in self.node_ids}
        for _, node_id in best.values():
            leaders_per_node[node_id] += 1
        return {
            "groups": {g.id: {"leader": best[g.id][1] if g.id in best else None,
                              "term": best[g.id][0] if g.id in best else None,
                              "voters": list(g.voters)} for g in self.placement},
            "leaders_per_node": leaders_per_node,
            "without_leader": [g.id for g in self.placement if g.id not in best],
            "unanswered": [n for n in self.node_ids if not self.nodes[n].up],
        }

    def invariant_checks(self) -> int:
        return sum(j.checks for j in self.judges.values())

    def routing_violations(self) -> list[str]:
        """Broken routing promises the clients saw (a request served by another configuration
        version than it was routed by, a request routed by an older descriptor than known)."""
        out: list[str] = list(self.served_stale)
        for client in (*self.clients, *self.final_clients):
            out.extend(client.routing_violations)
        return out

    def routing_counters(self) -> dict[str, int]:
        if self.spec.shards == 1:
            return {}
        clients = (*self.clients, *self.final_clients)
        totals = {
            "config_redirects": sum(c.config_redirects for c in clients),
            "descriptors_ignored": sum(
                c.router.stale_ignored for c in clients if c.router is not None
            ),
        }
        if self.rebalancing:
            totals.update(self.rebalancer.counters)
        return totals

    def acked_writes(self) -> list[tuple[str, int, Op]]:
        out: list[tuple[str, int, Op]] = []
        for client in self.clients:
            out.extend(client.acked)
        return out

    def network_counters(self) -> dict[str, int]:
        return dict(self.network.counters)

    def storage_counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for node in self.nodes.values():
            for store in node.storages.values():
                for name, value in store.counters.items():
                    total[name] = total.get(name, 0) + value
        return total
