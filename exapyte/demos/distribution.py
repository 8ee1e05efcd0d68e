"""``python main.py --demo distribution``: centralized vs sharded vs hierarchical, measured.

Theory of operation
-------------------
Each strategy runs in its own simulated cluster (:class:`~exapyte.demos.simworld.TopologyWorld`:
the product replicas and group tables on the simulated network and clock, the topology's WAN
latencies, the invariant judges after every step), placed on ``topologies/three-region.json``
by the strategy's own ``distribution.from_config`` placement, plus one **spare** node in
``add_region`` that holds nothing until the rebalance adds it. Every job is one strategy, run
in a worker process; its result does not depend on how the jobs were spread.

The key space is the same for every strategy: ``keys_per_region`` keys per region, named
``<region>:k0000``; each region's clients use their own region's keys, and another region's
with probability ``remote_share``. The hierarchical strategy pins ``<region>:`` to its region
(a placement rule), so its local keys live in the clients' region; the other strategies hash
the same names over their shards. Phases, one after the other on the simulated clock:

``boot``
    Every group elects a leader; each group's leadership is then moved to its first voter
    (the ring's natural candidate; ``n1`` for the centralized group), so no run is favoured by
    where its elections happened to land.
``preload``
    Each key is written once, so every replica holds its keys.
``load``
    ``clients_per_region`` closed-loop clients per region, reads (``strong``) with probability
    ``read_share``, writes otherwise, for ``steady_s``: p50/p99 read and write latency per
    region, requests served per node (a result answered: ``ok``, ``not_found``), keys held per
    node (every key in every replica's state machine).
``hops``
    With everything idle, one client per region issues ``hop_requests`` writes and as many
    reads, **one request in the whole cluster at a time**, with a routing cache warmed with the
    current leaders. Every message the transport is handed from the request's start until
    ``HOP_SETTLE_S`` after its answer is counted when its two ends sit in different regions:
    ``client`` (the request and its answer), ``redirect`` (a further attempt and its answer),
    ``replication`` (the consensus messages of the write path) and ``read_round`` (the Raft
    read-index heartbeat round the read started, and its acknowledgements). Timer-driven
    traffic (heartbeats of no read round, node beats) is not a request's.
``move``
    The spare node is added. The plan is the real one: ``rebalance.plan`` on the groups'
    memberships as their leaders report them (for the centralized group, the learner-then-voter
    move ``node add`` makes), and the fraction of keys whose replica set changes is computed on
    it, next to the ideal ``1/(N+1)``, together with the fraction of (key, replica) assignments
    that move. The moves are then carried out in the simulator by
    :func:`exapyte.control.rebalance.execute` through :class:`~exapyte.demos.simworld.SimAdmin`
    (the admin requests of ``node add`` on the simulated network) while the load clients go on;
    the placement after the move is read back from the groups. Should the execution fail, the
    planner's placement is shown instead, and ``after_source`` says which.

Nothing is asserted: every number is measured. Simulated time is what every duration counts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exapyte import limits
from exapyte.config import load as load_config
from exapyte.control import rebalance
from exapyte.control import topology as topo
from exapyte.demos.consensus import percentile
from exapyte.demos.jobs import (
    num,
    replace_from_pairs,
    report,
    run_jobs,
    topology_summary,
)
from exapyte.demos.simworld import (
    BACKGROUND_KINDS,
    SimAdmin,
    TopologyWorld,
    message_kind,
)
from exapyte.distribution import GroupSpec, Move, Placement
from exapyte.errors import ExapyteError
from exapyte.protocol.raft.messages import Heartbeat, HeartbeatResp
from exapyte.sim.scheduler import NS_PER_MS, derive_seed
from exapyte.sim.workload import Op, SimClient
from exapyte.sim.world import SimSpec
from exapyte.wire import ClientReply, PeerMessage, ReplyCode

STRATEGIES = ("centralized", "sharded", "hierarchical")
PHASES = ("boot", "preload", "load", "hops", "move")
BOOT_TIMEOUT_S = 30.0  # every group has a serving leader within this much simulated time
PIN_TIMEOUT_S = 10.0  # per group: its leadership reaches its first voter within this
WARMUP_S = 1.0  # the load clients run this long before anything is measured
IDLE_S = 2.0  # after the load, before the hop count: groups quiesce, messages land
HOP_SETTLE_S = 0.4  # after an answer: the commit round and late acknowledgements land (> 2 x 95 ms)
HOP_TIMEOUT_S = 15.0  # one hop-count request completes within this
MOVE_TIMEOUT_S = 60.0  # a learner catches up within this (simulated)
AFTER_MOVE_S = 1.0  # after the last move, before the placement is read back
RESULT_CODES = frozenset({ReplyCode.OK, ReplyCode.NOT_FOUND, ReplyCode.CAS_FAILED})


@dataclass(frozen=True)
class DistParams:
    """Everything a run depends on; the defaults keep it under three minutes on two cores."""

    seed: int = 1
    topology: str = "topologies/three-region.json"
    strategies: tuple[str, ...] = STRATEGIES
    shards: int = 12  # sharded: shards in all
    shards_per_region: int = 4  # hierarchical: shards in each region
    replication_factor: int = 3
    virtual_nodes: int = limits.VIRTUAL_NODES_DEFAULT
    keys_per_region: int = 100
    clients_per_region: int = 4
    read_share: float = 0.5
    remote_share: float = 0.2
    steady_s: float = 10.0
    hop_requests: int = 20  # per region, of each kind (write, read)
    add_region: str = "ap-northeast"  # where the added node sits
    workers: int = 2


@dataclass(frozen=True)
class Job:
    strategy: str
    params: DistParams


# --- the key space and the strategies' configs ------------------------------------------------


def region_keys(region: str, count: int) -> list[str]:
    return [f"{region}:k{i:04d}" for i in range(count)]


def distribution_section(strategy: str, params: DistParams, regions: list[str]) -> dict[str, Any]:
    """The ``distribution`` config section each strategy runs with."""
    common = {"replication_factor": params.replication_factor,
              "virtual_nodes": params.virtual_nodes}
    if strategy == "centralized":
        return {"strategy": "centralized"}
    if strategy == "sharded":
        return {"strategy": "sharded", "shards": params.shards, **common}
    if strategy == "hierarchical":
        return {"strategy": "hierarchical", "shards": params.shards_per_region,
                "rules": {f"{r}:": r for r in regions}, **common}
    raise ValueError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")


# --- clients ----------------------------------------------------------------------------------


@dataclass
class RequestLoop:
    """One closed-loop client: a new request as soon as the previous one completes. Keys from
    ``own`` (its region's) or, with probability ``remote_share``, from ``others``; a read with
    probability ``read_share``. ``queue``, when set, is written in order instead (the preload)."""

    world: TopologyWorld
    region: str
    own: list[str]
    others: list[str]
    read_share: float
    remote_share: float
    rng: random.Random
    queue: list[str] = field(default_factory=list)
    client: SimClient | None = None
    running: bool = False
    done: list[tuple[str, bool, float, str]] = field(default_factory=list)  # op, local, ms, outcome
    _counter: int = 0
    _started_ns: int = 0
    _local: bool = True

    def __post_init__(self) -> None:
        self.client = self.world.add_client(self.region, self._on_done, routed=True)

    def start(self) -> None:
        self.running = True
        self._next()

    def stop(self) -> None:
        self.running = False

    def _next(self) -> None:
        client = self.client
        assert client is not None
        if not self.running or client.busy:
            return
        self._counter += 1
        value = f"{client.process}-{self._counter}"
        if self.queue:
            key, self._local = self.queue.pop(0), True
            op = Op("write", key, value)
            if not self.queue:
                self.running = False
        else:
            self._local = not self.others or self.rng.random() >= self.remote_share
            pool = self.own if self._local else self.others
            key = pool[self.rng.randrange(len(pool))]
            op = Op("read", key, None) if self.rng.random() < self.read_share else Op("write", key, value)
        self._started_ns = client.sched.now_ns
        client.start(op)

    def _on_done(self, client: SimClient) -> None:
        kind = client.result[0] if client.result is not None else "fail"
        op = client.last_op
        assert op is not None
        ms = (client.sched.now_ns - self._started_ns) / NS_PER_MS
        self.done.append((op.f, self._local, ms, kind))
        self._next()


# --- the meter --------------------------------------------------------------------------------


class TrafficMeter:
    """Sees every message the simulated network is handed (its ``on_sent`` hook). Counts the
    results each node answers (``served``, while ``count_served``) and, while ``hops_on``, the
    messages that cross a region boundary by category (see the module docstring)."""

    def __init__(self, world: TopologyWorld) -> None:
        self.world = world
        self.count_served = False
        self.served: dict[str, int] = dict.fromkeys(world.node_ids, 0)
        self.count_refusals = False
        self.refusals: dict[str, int] = {}  # answers that are no result, by reply code
        self.hops_on = False
        self.hops: dict[str, int] = {}
        self.kinds: dict[str, int] = {}  # the same messages by kind
        self.background = 0  # cross-region timer-driven messages in the window, for reference
        self.read_rounds: set[tuple[str, str, int]] = set()  # (leader, group, ctx)
        self.arrivals: dict[str, int] = {}  # node -> when a client request last reached it
        self.learners: dict[str, frozenset[str]] = {}  # group -> its learners (placement)

    def reset_hops(self) -> None:
        self.hops = {}
        self.kinds = {}
        self.background = 0
        self.read_rounds.clear()

    def __call__(self, frm: str, to: str, msg: Any) -> None:
        world = self.world
        if isinstance(msg, tuple) and len(msg) == 2 and isinstance(msg[1], ClientReply):
            reply = msg[1]
            if reply.code in RESULT_CODES:
                if self.count_served and frm in self.served:
                    self.served[frm] += 1
            elif self.count_refusals:
                self.refusals[reply.code] = self.refusals.get(reply.code, 0) + 1
        if not self.hops_on:
            return
        if world.region_of_endpoint(frm) == world.region_of_endpoint(to):
            if isinstance(msg, PeerMessage) and isinstance(msg.msg, Heartbeat):
                self._note_round(frm, msg)  # a round to a local follower is the same round
            return
        category = self._category(frm, msg)
        if category in ("replication", "read_round") and self._to_learner(frm, to, msg.group):
            category = "learner"  # to or from a non-voting replica: no request waits for it
        if category is None:
            self.background += 1
        else:
            self.hops[category] = self.hops.get(category, 0) + 1
            kind = message_kind(msg)
            self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def _note_round(self, frm: str, msg: PeerMessage) -> bool:
        """Whether this heartbeat is a read-index round a client request started: sent by the
        node in the very event a request reached it (rounds on a tick are timer-driven)."""
        hb = msg.msg
        assert isinstance(hb, Heartbeat)
        if hb.ctx and self.arrivals.get(frm) == self.world.sched.now_ns:
            self.read_rounds.add((frm, msg.group, hb.ctx))
            return True
        return (frm, msg.group, hb.ctx) in self.read_rounds

    def _to_learner(self, frm: str, to: str, group: str) -> bool:
        learners = self.learners.get(group)
        if learners is None:
            spec = next((g for g in self.world.placement if g.id == group), None)
            learners = self.learners[group] = frozenset(spec.learners if spec else ())
        return frm in learners or to in learners

    def _category(self, frm: str, msg: Any) -> str | None:
        if isinstance(msg, tuple):
            attempt = msg[1] if len(msg) == 3 else msg[0]
            return "client" if attempt == 1 else "redirect"
        if isinstance(msg, PeerMessage):
            inner = msg.msg
            if isinstance(inner, Heartbeat):
                return "read_round" if self._note_round(frm, msg) else None
            if isinstance(inner, HeartbeatResp):
                key = (inner.to, msg.group, inner.ctx)
                return "read_round" if inner.ctx and key in self.read_rounds else None
            return None if message_kind(msg) in BACKGROUND_KINDS else "replication"
        return None  # node beats


class DistWorld(TopologyWorld):
    """A :class:`TopologyWorld` that tells the meter when a client request reaches a node."""

    meter_hook: TrafficMeter | None = None

    def _handle(self, node: Any, frm: str, msg: Any) -> None:
        if self.meter_hook is not None and isinstance(msg, tuple):
            self.meter_hook.arrivals[node.id] = self.sched.now_ns
        super()._handle(node, frm, msg)


# --- one strategy -----------------------------------------------------------------------------

def build_world(job: Job) -> DistWorld:
    p = job.params
    cfg = load_config(p.topology)
    graph = topo.from_config(cfg)
    regions = topo.regions(graph)
    if p.add_region not in regions:
        raise ValueError(f"add_region {p.add_region!r}: allowed: {', '.join(regions)}")
    seed = derive_seed(p.seed, "distribution", job.strategy) % (2**31)
    spec = SimSpec(seed=seed, nodes=len(cfg.cluster.nodes) + 1, protocol=cfg.consensus.protocol,
                   faults=())
    return DistWorld(spec, graph, cfg, distribution=distribution_section(job.strategy, p, regions),
                     spares=(p.add_region,))


def placement_view(world: TopologyWorld, admin: SimAdmin) -> dict[str, dict[str, Any]]:
    """Each group as its leader reports it: voters, learners, leader, home region."""
    regions = {g.id: g.region for g in world.placement}
    return {
        group: {"voters": list(s.voters), "learners": list(s.learners), "leader": s.leader,
                "region": regions.get(group)}
        for group, s in sorted(admin.groups().items())
    }


def keys_held(world: TopologyWorld) -> dict[str, int]:
    """Keys in each node's state machines, over every group it hosts."""
    out: dict[str, int] = {}
    for node_id in world.node_ids:
        total = 0
        for _, replica in world.nodes[node_id].replicas():
            total += len(replica.sm.scan("", None, limits.SCAN_LIMIT_MAX))
        out[node_id] = total
    return out


def spread(values: list[float]) -> float | None:
    """stddev / mean (population), None for no load."""
    if not values or statistics.fmean(values) == 0:
        return None
    return round(statistics.pstdev(values) / statistics.fmean(values), 4)


def plan_add(world: TopologyWorld, admin: SimAdmin, node: str,
             replication_factor: int) -> tuple[Placement, list[Move]]:
    """The target placement and the moves of ``node add NODE`` from the groups' memberships
    now: ``rebalance.plan`` for the sharded strategies; for the centralized group the move the
    CLI's ``node add`` makes (learner, catch up, voter)."""
    groups = admin.groups()
    if world.strategy.name == "centralized":
        state = groups["default"]
        target = Placement((GroupSpec("default", (*state.voters, node), ()),))
        return target, [Move("default", 0, add=node, promote=node)]
    members = {m for g in groups.values() for m in (*g.voters, *g.learners)} | {node}
    nodes = {n: world.region[n] for n in sorted(members)}
    return rebalance.plan(world.strategy, groups, nodes, replication_factor)


def moved_fractions(world: TopologyWorld, keys: list[str], before: dict[str, tuple[str, ...]],
                    after: dict[str, tuple[str, ...]]) -> tuple[float, float]:
    """(keys whose replica set changes, (key, replica) assignments that move), as fractions:
    an assignment moves when a node holds a replica of the key after and did not before (a
    replica moved from one node to another, or added to a group that grows), out of the
    assignments before."""
    changed = moved = assigned = 0
    for key in keys:
        shard = world.strategy.shard_of(key)
        old, new = set(before[shard]), set(after[shard])
        changed += old != new
        moved += len(new - old)
        assigned += len(old)
    return changed / len(keys), moved / assigned if assigned else 0.0


def _latency_table(loops: list[tuple[RequestLoop, int]], regions: list[str]) -> dict[str, Any]:
    """p50/p99 per region of what each loop completed after its mark."""
    out: dict[str, Any] = {}
    for region in regions:
        done = [d for loop, mark in loops if loop.region == region for d in loop.done[mark:]]
        entry: dict[str, Any] = {}
        for op in ("write", "read"):
            for scope, pick in (("all", lambda d: True), ("local", lambda d: d[1]),
                                ("remote", lambda d: not d[1])):
                ms = [d[2] for d in done if d[0] == op and d[3] == "ok" and pick(d)]
                name = op if scope == "all" else f"{op}_{scope}"
                entry[name] = {"count": len(ms), "p50_ms": _round(percentile(ms, 50)),
                               "p99_ms": _round(percentile(ms, 99))}
        entry["failed"] = sum(1 for d in done if d[3] != "ok")
        out[region] = entry
    return out


def run_strategy(job: Job) -> dict[str, Any]:
    p = job.params
    world = build_world(job)
    meter = TrafficMeter(world)
    world.meter_hook = meter
    world.network.on_sent = meter
    regions = world.regions
    spare = world.node_ids[-1]
    founders = world.node_ids[:-1]

    # boot: every group led, then by its first voter
    world.start()
    if not world.run_until(world.all_groups_led, BOOT_TIMEOUT_S):
        raise RuntimeError(f"{job.strategy}: not every group had a leader {BOOT_TIMEOUT_S:g} s after boot")
    admin = SimAdmin(world, regions[0])
    pinned = sum(admin.pin(g.id, g.voters[0], PIN_TIMEOUT_S) for g in world.placement)
    report(job.strategy, "boot")

    # preload: every key written once, by its region's clients
    keys = {r: region_keys(r, p.keys_per_region) for r in regions}
    all_keys = [k for r in regions for k in keys[r]]
    loops: list[RequestLoop] = []
    for region in regions:
        others = [k for r in regions if r != region for k in keys[r]]
        for i in range(p.clients_per_region):
            rng = random.Random(derive_seed(p.seed, "demo-keys", region, i))
            loops.append(RequestLoop(world, region, keys[region], others, p.read_share,
                                     p.remote_share, rng, queue=keys[region][i :: p.clients_per_region]))
    for loop in loops:
        loop.start()
    world.run_until(lambda: not any(loop.running or loop.client.busy for loop in loops),  # type: ignore[union-attr]
                    timeout_s=600.0)
    preload_failed = sum(1 for loop in loops for d in loop.done if d[3] != "ok")
    report(job.strategy, "preload")

    # load: closed loops for steady_s
    for loop in loops:
        loop.start()
    world.run_for(WARMUP_S)
    marks = [len(loop.done) for loop in loops]
    meter.count_served = True
    world.run_for(p.steady_s)
    meter.count_served = False
    for loop in loops:
        loop.stop()
    latency = _latency_table(list(zip(loops, marks, strict=True)), regions)
    served = dict(meter.served)
    world.run_until(lambda: not any(loop.client.busy for loop in loops), 30.0)  # type: ignore[union-attr]
    world.run_for(IDLE_S)
    before = placement_view(world, admin)
    held = keys_held(world)
    report(job.strategy, "load")

    # hops: one request at a time, warmed routing cache
    hops = measure_hops(world, meter, keys, p)
    report(job.strategy, "hops")

    # move: add the spare node while the load clients go on
    move = add_node(world, admin, spare, loops, all_keys, before, p)
    report(job.strategy, "move")

    per_node = {}
    for node_id in world.node_ids:
        per_node[node_id] = {
            "region": world.region[node_id],
            "spare": node_id == spare,
            "keys_held": held[node_id],
            "replicas": sum(1 for g in before.values() if node_id in g["voters"] + g["learners"]),
            "leaders": sum(1 for g in before.values() if g["leader"] == node_id),
            "requests_served": served[node_id],
        }
    return {
        "strategy": job.strategy,
        "distribution": distribution_section(job.strategy, p, regions),
        "groups": len(world.placement),
        "leaders_pinned": pinned,
        "preload": {"keys": len(all_keys), "failed": preload_failed},
        "load": {
            "per_node": per_node,
            "keys_held_spread": spread([float(held[n]) for n in founders]),
            "requests_spread": spread([float(served[n]) for n in founders]),
            "requests_served": sum(served.values()),
            "throughput_rps": round(sum(served.values()) / p.steady_s, 2),
        },
        "latency": latency,
        "hops": hops,
        "move": move,
        "placement_before": before,
        "invariant_checks": world.invariant_checks(),
    }


def measure_hops(world: DistWorld, meter: TrafficMeter, keys: dict[str, list[str]],
                 p: DistParams) -> dict[str, Any]:
    regions = world.regions
    samples: list[dict[str, Any]] = []
    done: list[SimClient] = []
    for region in regions:
        client = world.add_client(region, done.append, routed=True)
        rng = random.Random(derive_seed(p.seed, "demo-hops", region))
        others = [k for r in regions if r != region for k in keys[r]]
        for i in range(2 * p.hop_requests):
            local = not others or rng.random() >= p.remote_share
            pool = keys[region] if local else others
            key = pool[rng.randrange(len(pool))]
            op = Op("write", key, f"hop-{region}-{i}") if i % 2 == 0 else Op("read", key, None)
            group = world.strategy.shard_of(key)
            lead = world.group_leader(group)
            client.leader_guesses[group] = lead[0] if lead else None  # a warm routing cache
            meter.reset_hops()
            meter.hops_on = True
            client.start(op)
            world.run_until(lambda c=client: not c.busy, HOP_TIMEOUT_S, poll_ms=1.0)
            world.run_for(HOP_SETTLE_S)
            meter.hops_on = False
            samples.append({
                "region": region, "op": op.f, "key": key, "group": group, "local": local,
                "leader": lead[0] if lead else None,
                "outcome": client.result[0] if client.result else "none",
                # a request's hops: what it waits for; shipping to learners is counted apart
                "hops": sum(v for c, v in meter.hops.items() if c != "learner"),
                "by_category": dict(sorted(meter.hops.items())),
                "by_kind": dict(sorted(meter.kinds.items())),
                "background": meter.background,
            })
    ok = [s for s in samples if s["outcome"] == "ok"]

    def mean(pick: Callable[[dict[str, Any]], bool]) -> float | None:
        values = [s["hops"] for s in ok if pick(s)]
        return round(statistics.fmean(values), 3) if values else None

    categories = sorted({c for s in ok for c in s["by_category"]})
    return {
        "requests": len(samples),
        "completed": len(ok),
        "per_request": mean(lambda s: True),
        "write": mean(lambda s: s["op"] == "write"),
        "read": mean(lambda s: s["op"] == "read"),
        "local": mean(lambda s: s["local"]),
        "remote": mean(lambda s: not s["local"]),
        "by_region": {r: {"write": mean(lambda s, r=r: s["region"] == r and s["op"] == "write"),
                          "read": mean(lambda s, r=r: s["region"] == r and s["op"] == "read")}
                      for r in regions},
        "by_category": {c: round(sum(s["by_category"].get(c, 0) for s in ok) / len(ok), 3)
                        for c in categories} if ok else {},
        "background_per_request": round(statistics.fmean(s["background"] for s in ok), 3) if ok else None,
        "samples": samples,
    }


def add_node(world: TopologyWorld, admin: SimAdmin, node: str, loops: list[RequestLoop],
             all_keys: list[str], before: dict[str, dict[str, Any]], p: DistParams) -> dict[str, Any]:
    founders = len(world.node_ids) - 1
    target, moves = plan_add(world, admin, node, p.replication_factor)
    old = {g: tuple(v["voters"] + v["learners"]) for g, v in before.items()}
    planned = {g.id: g.members for g in target.groups}
    changed, moved = moved_fractions(world, all_keys, old, planned)
    marks = [len(loop.done) for loop in loops]
    meter = getattr(world, "meter_hook", None)
    if meter is not None:
        meter.count_refusals = True
    for loop in loops:
        loop.start()
    started = world.now_s
    error = None
    steps: list[str] = []
    report = None
    try:
        report = rebalance.execute(admin, moves, timeout_s=MOVE_TIMEOUT_S, on_step=steps.append,
                                   sleep=world.run_for, clock=lambda: world.now_s)
    except ExapyteError as exc:
        error = str(exc)
    duration = world.now_s - started
    for loop in loops:
        loop.stop()
    if meter is not None:
        meter.count_refusals = False
    during = [d for loop, m in zip(loops, marks, strict=True) for d in loop.done[m:]]
    world.run_until(lambda: not any(loop.client.busy for loop in loops), 30.0)  # type: ignore[union-attr]
    world.run_for(AFTER_MOVE_S)
    after = placement_view(world, admin)
    ran = {g: tuple(v["voters"] + v["learners"]) for g, v in after.items()}
    matches = error is None and all(set(ran.get(g, ())) == set(m) for g, m in planned.items())
    if error is None:
        after_placement, source = after, "simulator"
    else:
        after_placement = {g.id: {"voters": list(g.voters), "learners": list(g.learners),
                                  "leader": before.get(g.id, {}).get("leader"),
                                  "region": g.region or before.get(g.id, {}).get("region")}
                           for g in target.groups}
        source = "planner"
    held = keys_held(world)
    return {
        "node": node,
        "region": world.region[node],
        "nodes_before": founders,
        "ideal_fraction": round(1 / (founders + 1), 4),
        "keys_changed_fraction": round(changed, 4),
        "assignments_moved_fraction": round(moved, 4),
        "moves": len(moves),
        "shards_moved": len({m.shard for m in moves}),
        "executed": error is None,
        "error": error,
        "steps": steps,
        "catch_up_s": report.catch_up_s if report is not None else {},
        "duration_s": round(duration, 3),
        "ops_during": {"ok": sum(1 for d in during if d[3] == "ok"),
                       "not_ok": sum(1 for d in during if d[3] != "ok"),
                       "refusals": dict(sorted(meter.refusals.items())) if meter is not None else {}},
        "after_source": source,
        "after_matches_plan": matches,
        "planned_after": {g.id: {"voters": list(g.voters), "learners": list(g.learners)}
                          for g in target.groups},
        "placement_after": after_placement,
        "keys_held_after": held,
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- a whole run ------------------------------------------------------------------------------


def run(params: DistParams, on_phase: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Run every strategy and assemble ``results.json``'s content. ``on_phase(strategy,
    phase)`` is called as each phase of each strategy ends."""
    jobs = [Job(s, params) for s in params.strategies]
    results = run_jobs(jobs, run_strategy, params.workers, on_phase)
    return assemble(params, results)


def assemble(params: DistParams, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "params": asdict(params),
        "topology": topology_summary(params.topology),
        "strategies": {s: results[s] for s in params.strategies if s in results},
    }


# --- output -----------------------------------------------------------------------------------


def write_results(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.json and the placement plots; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    from exapyte.demos import placement_plots  # matplotlib is imported only here

    return [path, *placement_plots.write_all(results, out_dir)]


def table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    strategies = list(results["strategies"])
    regions = results["topology"]["regions"]
    p = results["params"]
    t = Table(title=f"distribution demo on {p['topology']} (seed {p['seed']}, simulated)")
    t.add_column("measure")
    for s in strategies:
        t.add_column(s, justify="right")

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for s in strategies:
            try:
                cells.append(fn(results["strategies"][s]))
            except (KeyError, TypeError, ValueError):
                cells.append("-")
        t.add_row(label, *cells)

    def per_node(e: dict[str, Any], what: str) -> str:
        nodes = e["load"]["per_node"]
        return " ".join(str(nodes[n][what]) for n in sorted(nodes) if not nodes[n]["spare"])

    row("groups (leaders pinned)", lambda e: f"{e['groups']} ({e['leaders_pinned']})")
    row("keys held n1..n5", lambda e: per_node(e, "keys_held"))
    row("keys held stddev/mean", lambda e: num(e["load"]["keys_held_spread"], 2))
    row("requests served n1..n5", lambda e: per_node(e, "requests_served"))
    row("requests stddev/mean", lambda e: num(e["load"]["requests_spread"], 2))
    row("throughput, requests/s", lambda e: f"{e['load']['throughput_rps']:.1f}")
    for region in regions:
        for op in ("write", "read"):
            row(f"{op} p50 / p99 ms, {region}", lambda e, r=region, o=op: (
                f"{num(e['latency'][r][o]['p50_ms'], 0)} / {num(e['latency'][r][o]['p99_ms'], 0)}"))
    for region in regions:
        row(f"local write p50 ms, {region}", lambda e, r=region: num(
            e["latency"][r]["write_local"]["p50_ms"], 0))
    row("cross-region msgs / request", lambda e: num(e["hops"]["per_request"], 2))
    row("  write / read", lambda e: f"{num(e['hops']['write'], 2)} / {num(e['hops']['read'], 2)}")
    row("  local keys / remote keys", lambda e: f"{num(e['hops']['local'], 2)} / {num(e['hops']['remote'], 2)}")
    row("  client / replication / read round", lambda e: " / ".join(
        num(e["hops"]["by_category"].get(c, 0.0), 2) for c in ("client", "replication", "read_round")))
    row("  to learners (not waited for)", lambda e: num(e["hops"]["by_category"].get("learner", 0.0), 2))
    row("add node: keys whose replicas change", lambda e: (
        f"{num(e['move']['keys_changed_fraction'], 3)} (ideal {num(e['move']['ideal_fraction'], 3)})"))
    row("add node: (key, replica) moved", lambda e: num(e["move"]["assignments_moved_fraction"], 3))
    row("add node: moves (shards)", lambda e: f"{e['move']['moves']} ({e['move']['shards_moved']})")
    row("add node: executed in", lambda e: (
        f"{e['move']['duration_s']:.1f} s" if e["move"]["executed"] else "not executed"))
    row("add node: ops ok / not ok during", lambda e: (
        f"{e['move']['ops_during']['ok']} / {e['move']['ops_during']['not_ok']}"))
    row("placement after from", lambda e: e["move"]["after_source"])
    return t


def params_from(pairs: list[str]) -> DistParams:
    """DistParams from ``KEY=VALUE`` strings (the CLI's ``--param``); raises ValueError naming
    the key and the allowed ones."""
    defaults = DistParams(workers=min(DistParams().workers, os.cpu_count() or 1))
    params = replace_from_pairs(defaults, pairs)
    positive = ("shards", "shards_per_region", "replication_factor", "virtual_nodes",
                "keys_per_region", "clients_per_region", "steady_s", "hop_requests", "workers")
    for key in positive:
        if getattr(params, key) <= 0:
            raise ValueError(f"{key} must be > 0")
    for key in ("read_share", "remote_share"):
        if not 0.0 <= getattr(params, key) <= 1.0:
            raise ValueError(f"{key} must be within [0, 1]")
    unknown = [s for s in params.strategies if s not in STRATEGIES]
    if unknown or not params.strategies:
        raise ValueError(f"strategies: {unknown or '(none)'}; allowed: {', '.join(STRATEGIES)}")
    return params


def main(out_dir: str | None = None, real: bool = False, params: DistParams | None = None) -> int:
    """The CLI's entry: run, print the table, write the files. Returns the exit status."""
    import sys

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    if real:
        print("error: --real (the distribution demo on real processes) is not available yet; "
              "run it without --real for the simulator", file=sys.stderr)
        return 2
    params = params or params_from([])
    logging.getLogger("exapyte").setLevel(logging.WARNING)  # snapshots and joins log at INFO
    target = Path(out_dir or "demo-out/distribution")
    console = Console(highlight=False, soft_wrap=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        tasks = {s: progress.add_task(f"{s}: simulating", total=len(PHASES))
                 for s in params.strategies}

        def phase(strategy: str, name: str) -> None:
            progress.update(tasks[strategy], advance=1, description=f"{strategy}: {name} done")

        results = run(params, on_phase=phase)
    console.print(table(results))
    for path in write_results(results, target):
        console.print(f"wrote {path}")
    return 0


__all__ = ["DistParams", "STRATEGIES", "main", "params_from", "run", "write_results"]
