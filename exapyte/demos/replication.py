"""``python main.py --demo replication``: sync vs async vs optimized replication, measured.

Theory of operation
-------------------
Each strategy runs in its own simulated cluster (:class:`~exapyte.demos.simworld.TopologyWorld`:
the product replicas and group tables on the simulated network and clock, the topology's WAN
latencies, the invariant judges after every step), on ``topologies/three-region.json`` with the
sharded distribution (``shards`` shards, ``replication_factor`` replicas each) and
``replication.strategy`` set to the strategy. The ring fills each strategy's per-region quotas
(exapyte/replication), so the placements differ: the run prints them. Every strategy gets the
**same** world seed, the same workload (arrival times, regions, keys and values are drawn from
the run's seed alone) and the same fault schedule (the phases start at the same simulated
times), so the three runs differ only by the strategy. Each strategy is one job, run in a worker
process.

The workload is **open loop**: writes arrive at ``write_rate`` per second (exponential gaps), each
from a region drawn by ``write_mix`` (by default 60% us-east, 25% us-west, 15% ap-northeast), and
is handed to an idle client of that region (a new one joins the region's pool when all are busy),
so the mix and the offered load do not depend on how fast a strategy answers. Every write has a
key of its own (``<region>:w<n>``), written once, so "an acknowledged write survived" is a plain
lookup of its key on a replica. Clients set ``origin`` to their region, which is how
``optimized`` finds the region that writes most (exapyte/replication/leadership.py). Phases, on
the simulated clock:

``boot``
    Every group elects a leader; the run then waits to :data:`LOAD_AT_S`, the same instant for
    every strategy. No leadership is pinned: where leaders are is the strategy's doing.
``load``
    The writes run ``warmup_s`` (leaders move where the strategy keeps them), then ``steady_s``
    measured: write p50/p99 per client region (acknowledged writes, from invocation to answer),
    and **replica lag** every ``lag_sample_ms``: for each group, its leader's commit index minus
    each other member's applied index, in entries, grouped by the member's region and role
    (voter, learner). Each shard's leader (and its region) is reported at the start and at the
    end of the measured window.
``reads``
    With the writes still arriving, for ``reads_s``, one client per region and level writes a
    key of its own and then reads it at that level, ``reads_per_level`` times: ``strong``, ``session``,
    ``bounded_staleness``, ``consistent_prefix``, ``eventual``. Strong reads go to the client's
    cached leader, the weaker levels to the nearest member of the key's group first (as
    :class:`exapyte.client.Client` does, by :class:`~exapyte.data.router.Proximity`). Counted:
    which region served each read, whether a follower or the leader served it, whether the reader
    saw its own write, and the redirects. Every node reads the simulated clock (the simulator's
    boot gives it to every replica, :mod:`exapyte.demos.simworld`), so leaders stamp what they
    send and a follower serves a ``bounded_staleness`` read when its applied state is within
    K = ``staleness_versions_max`` entries and T = ``staleness_ms_max`` of its leader's stamps
    (exapyte/data/staleness.py); otherwise it redirects the read to the leader. For each read a
    follower served, the age of its state by those stamps (the age the check compares with T)
    is recorded.

    The bounds are the demo's, sized for the topology's WAN latencies, not the simulator's LAN
    ones. A follower's stamp is the send time of its leader's newest heartbeat round that a
    quorum acknowledged; it reaches the follower one heartbeat (50 ms) and one one-way delay
    after that quorum's round trip, and it ages for up to one more heartbeat until the next. On
    ``three-region.json`` the worst case in steady state is a Tokyo leader (a quorum round trip
    to us-west, 150 ms) stamping a us-east follower (90 ms away): about 150 + 50 + 90 + 50 =
    340 ms, 5% more with the links' jitter. :data:`STALENESS_MS_MAX` = 500 ms serves every
    region's followers while heartbeats flow and refuses a follower that missed about three
    rounds; :data:`STALENESS_VERSIONS_MAX` = 20 entries is about 0.8 s of one shard's writes at
    the default rate (150/s over 6 shards). One simulated clock: the skew bound is 0.
``loss``
    The region that writes most (``loss_region``, default: the top of ``write_mix``) is cut off
    from the other regions' nodes, and ``crash_after_s`` later every node in it crashes. The
    simulator's partitions cut links between nodes only, so clients of other regions can still
    reach the cut region's nodes in that window: what its nodes acknowledge then is lost with them
    as well, and is counted apart. After ``recover_s``, every surviving replica's applied state is
    read and every write the history acknowledged (an ``ok`` completion) is looked up on the
    survivors of its group: a write no survivor holds is **lost**. Then each shard is probed with
    one write from a client of a surviving region: it is **available** if that write is
    acknowledged within :data:`PROBE_TIMEOUT_S`.

Nothing is asserted: every number is measured. Simulated time is what every duration counts.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exapyte import limits
from exapyte.config import load as load_config
from exapyte.control import topology as topo
from exapyte.data.router import Proximity
from exapyte.demos.consensus import percentile
from exapyte.demos.jobs import (
    num,
    replace_from_pairs,
    report,
    run_jobs,
    topology_summary,
)
from exapyte.demos.simworld import TopologyWorld
from exapyte.sim.scheduler import NS_PER_MS, NS_PER_S, derive_seed
from exapyte.sim.workload import Op, SimClient
from exapyte.sim.world import SimSpec

STRATEGIES = ("sync", "async", "optimized")
LEVELS = ("strong", "session", "bounded_staleness", "consistent_prefix", "eventual")
PHASES = ("boot", "load", "reads", "loss")
LOAD_AT_S = 4.0  # the writes start at this simulated time in every strategy's run
BOOT_TIMEOUT_S = 30.0  # every group has a serving leader within this much simulated time
PROBE_TIMEOUT_S = 12.0  # a probe write after the region loss is acknowledged within this
DRAIN_S = 12.0  # after the loss phase's writes stop, the clients still waiting give up within this
# bounded_staleness bounds of every node (data_plane), sized for three-region.json (module docstring)
STALENESS_VERSIONS_MAX = 20  # K, entries
STALENESS_MS_MAX = 500  # T, ms: above the ~340 ms worst steady-state stamp age on that topology


@dataclass(frozen=True)
class ReplParams:
    """Everything a run depends on; the defaults keep it under two minutes on two cores."""

    seed: int = 1
    topology: str = "topologies/three-region.json"
    strategies: tuple[str, ...] = STRATEGIES
    shards: int = 6
    replication_factor: int = 3
    virtual_nodes: int = limits.VIRTUAL_NODES_DEFAULT
    write_rate: float = 150.0  # writes per second, over all regions
    write_mix: str = "us-east:0.6,us-west:0.25,ap-northeast:0.15"  # region:share, ...
    warmup_s: float = 15.0  # before the measured window: optimized moves its leaders meanwhile
    steady_s: float = 10.0
    lag_sample_ms: float = 50.0
    reads_per_level: int = 12  # per region and level
    reads_s: float = 10.0  # the reads phase's length: the cut comes at the same time in every run
    loss_region: str = ""  # "": the region that writes most
    crash_after_s: float = 0.25  # from the cut to the crash of the region's nodes
    recover_s: float = 5.0  # from the crash to the survivors' state being read
    staleness_versions_max: int = STALENESS_VERSIONS_MAX  # K of bounded_staleness
    staleness_ms_max: int = STALENESS_MS_MAX  # T of bounded_staleness
    workers: int = 2

    def mix(self) -> dict[str, float]:
        """``write_mix`` as region -> share (shares summing to 1)."""
        out: dict[str, float] = {}
        for part in self.write_mix.split(","):
            region, sep, share = part.strip().partition(":")
            if not sep or not region:
                raise ValueError(f"write_mix: {part!r} is not REGION:SHARE")
            try:
                out[region.strip()] = float(share)
            except ValueError:
                raise ValueError(f"write_mix: {share!r} is not a number") from None
        total = sum(out.values())
        if total <= 0 or any(v < 0 for v in out.values()):
            raise ValueError("write_mix: shares must be >= 0 with a positive sum")
        return {r: v / total for r, v in out.items()}

    def region_lost(self) -> str:
        if self.loss_region:
            return self.loss_region
        mix = self.mix()
        return max(mix, key=lambda r: (mix[r], r))


@dataclass(frozen=True)
class Job:
    strategy: str
    params: ReplParams


def distribution_section(params: ReplParams) -> dict[str, Any]:
    return {"strategy": "sharded", "shards": params.shards,
            "replication_factor": params.replication_factor,
            "virtual_nodes": params.virtual_nodes}


def data_plane_section(params: ReplParams) -> dict[str, Any]:
    """The nodes' bounded_staleness bounds: K, T, and no clock skew (one simulated clock)."""
    return {"staleness_versions_max": params.staleness_versions_max,
            "staleness_ms_max": params.staleness_ms_max, "clock_skew_ms_max": 0}


# --- the open-loop writers --------------------------------------------------------------------


@dataclass
class Done:
    """One completed operation of the demo's clients."""

    region: str
    f: str
    key: str
    value: str | None
    start_ns: int
    end_ns: int
    outcome: str  # ok | fail | info
    node: str | None  # the node that answered (the history's node)
    result: str | None  # a read's value


class Writers:
    """The open-loop write workload: arrivals drawn from the run's seed, each handed to an idle
    client of its region (a new client joins that region's pool when all are busy)."""

    def __init__(self, world: TopologyWorld, params: ReplParams) -> None:
        self.world = world
        self.rate = params.write_rate
        self.mix = params.mix()
        unknown = sorted(set(self.mix) - set(world.regions))
        if unknown:
            raise ValueError(f"write_mix: unknown region(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(world.regions)}")
        self.rng = random.Random(derive_seed(params.seed, "replication-writes"))
        self.pools: dict[str, list[SimClient]] = {r: [] for r in self.mix}
        self.started: dict[int, tuple[str, int]] = {}  # process -> (region, start ns)
        self.done: list[Done] = []
        self.counter: dict[str, int] = dict.fromkeys(self.mix, 0)
        self.running = False
        self._epoch = 0

    def start(self) -> None:
        self.running = True
        self._epoch += 1
        self._schedule(self._epoch)

    def stop(self) -> None:
        self.running = False

    def busy(self) -> bool:
        return any(c.busy for pool in self.pools.values() for c in pool)

    def _schedule(self, epoch: int) -> None:
        gap_ns = int(self.rng.expovariate(self.rate) * NS_PER_S)
        self.world.sched.after(gap_ns, self._arrive, epoch)

    def _arrive(self, epoch: int) -> None:
        if not self.running or epoch != self._epoch:
            return
        roll = self.rng.random()
        region = next(iter(self.mix))
        for region, share in self.mix.items():
            roll -= share
            if roll < 0:
                break
        self.counter[region] += 1
        key = f"{region}:w{self.counter[region]:06d}"
        client = next((c for c in self.pools[region] if not c.busy), None)
        if client is None:
            client = self.world.add_client(region, self._on_done, routed=True)
            self.pools[region].append(client)
        self.started[client.process] = (region, self.world.sched.now_ns)
        client.start(Op("write", key, f"{key}@{client.process}"))
        self._schedule(epoch)

    def _on_done(self, client: SimClient) -> None:
        self.done.append(completion(client, *self.started.pop(client.process)))


def completion(client: SimClient, region: str, start_ns: int) -> Done:
    """The operation ``client`` just completed (its history record is the last one)."""
    op = client.last_op
    assert op is not None and client.result is not None
    record = client.history.records[-1]
    kind, value = client.result
    return Done(region, op.f, op.key, op.value if op.f == "write" else None, start_ns,
                client.sched.now_ns, kind, record.node, value if op.f == "read" else None)


# --- the measures -----------------------------------------------------------------------------


class LagSampler:
    """Every ``every_ms``: for each group, its serving leader's commit index minus the applied
    index of each other member that is up, by the member's region and role; and each group's
    leader."""

    def __init__(self, world: TopologyWorld, every_ms: float) -> None:
        self.world = world
        self.every_ns = int(every_ms * NS_PER_MS)
        self.running = False
        self.t_s: list[float] = []
        # region -> role -> one list of lags per sample (every member of that region and role)
        self.samples: dict[str, dict[str, list[list[int]]]] = {
            r: {"voter": [], "learner": []} for r in world.regions}
        self.leaders: dict[str, list[str | None]] = {g: [] for g in world.groups()}
        self.t0_s = 0.0
        self._epoch = 0

    def start(self) -> None:
        self.running = True
        self._epoch += 1
        self.t0_s = self.world.now_s
        self._sample(self._epoch)

    def stop(self) -> None:
        self.running = False

    def _sample(self, epoch: int) -> None:
        if not self.running or epoch != self._epoch:
            return
        world = self.world
        self.t_s.append(round(world.now_s - self.t0_s, 4))
        now: dict[str, dict[str, list[int]]] = {r: {"voter": [], "learner": []} for r in world.regions}
        for spec in world.placement:
            lead = world.group_leader(spec.id)
            self.leaders[spec.id].append(lead[0] if lead else None)
            if lead is None:
                continue
            commit = int(world.group_replica(spec.id, lead[0]).core.status().commit)
            for node in spec.members:
                if node == lead[0]:
                    continue
                replica = world.group_replica(spec.id, node)
                if replica is None:
                    continue
                role = "voter" if node in spec.voters else "learner"
                now[world.region[node]][role].append(max(0, commit - int(replica.sm.applied_index)))
        for region, roles in now.items():
            for role, lags in roles.items():
                self.samples[region][role].append(lags)
        world.sched.after(self.every_ns, self._sample, epoch)

    def summary(self) -> dict[str, Any]:
        by_region: dict[str, Any] = {}
        series: dict[str, list[float | None]] = {}
        for region, roles in self.samples.items():
            entry: dict[str, Any] = {}
            every: list[list[int]] = [[] for _ in self.t_s]
            for role, per_sample in roles.items():
                flat = [lag for sample in per_sample for lag in sample]
                for i, sample in enumerate(per_sample):
                    every[i].extend(sample)
                entry[role] = {
                    "replicas": max((len(s) for s in per_sample), default=0),
                    "mean_entries": round(sum(flat) / len(flat), 3) if flat else None,
                    "p99_entries": percentile([float(x) for x in flat], 99) if flat else None,
                    "max_entries": max(flat) if flat else None,
                }
            by_region[region] = entry
            series[region] = [round(sum(s) / len(s), 3) if s else None for s in every]
        learners = {r: [round(sum(s) / len(s), 3) if s else None for s in roles["learner"]]
                    for r, roles in self.samples.items()}
        return {"sample_ms": self.every_ns / NS_PER_MS, "samples": len(self.t_s),
                "by_region": by_region,
                "series": {"t_s": self.t_s, "mean_by_region": series,
                           "learner_mean_by_region": learners}}


def latency_table(done: list[Done], regions: list[str], since_ns: int, until_ns: int) -> dict[str, Any]:
    """p50/p99 of the writes invoked in [since, until), per client region."""
    out: dict[str, Any] = {}
    for region in regions:
        mine = [d for d in done if d.region == region and since_ns <= d.start_ns < until_ns]
        ms = [(d.end_ns - d.start_ns) / NS_PER_MS for d in mine if d.outcome == "ok"]
        out[region] = {"writes": len(mine), "acked": len(ms),
                       "not_acked": sum(1 for d in mine if d.outcome != "ok"),
                       "p50_ms": _round(percentile(ms, 50)), "p99_ms": _round(percentile(ms, 99)),
                       "mean_ms": _round(_mean(ms)),
                       "latencies_ms": [round(x, 2) for x in sorted(ms)]}
    return out


def leader_changes(sampled: list[str | None]) -> int:
    """How often the sampled leader became another node (a sample without one is skipped: a
    leader that comes back after an election is no change)."""
    seen = [n for n in sampled if n is not None]
    return sum(1 for a, b in zip(seen, seen[1:]) if a != b)


def leaders_now(world: TopologyWorld) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for g in world.groups():
        lead = world.group_leader(g)
        out[g] = {"leader": lead[0] if lead else None,
                  "region": world.region[lead[0]] if lead else None}
    return out


def placement_of(world: TopologyWorld) -> dict[str, Any]:
    return {g.id: {"voters": list(g.voters), "learners": list(g.learners), "home": g.region,
                   "voter_regions": [world.region[n] for n in g.voters],
                   "learner_regions": [world.region[n] for n in g.learners]}
            for g in world.placement}


# --- the reads phase --------------------------------------------------------------------------


@dataclass
class Reader:
    """One client of the reads phase: ``count`` times, a write of a key of its own, then a read
    of that key at ``level`` (the weaker levels sent to the nearest member of the key's group)."""

    world: TopologyWorld
    region: str
    level: str
    count: int
    proximity: Proximity
    client: SimClient | None = None
    done: list[Done] | None = None
    # per read answered: (served by a follower, age ms of its state by its leader's stamps);
    # None for a strong read (the world records weak reads only)
    served: list[tuple[bool, float | None] | None] = field(default_factory=list)
    _i: int = 0
    _start_ns: int = 0
    _value: str = ""

    def __post_init__(self) -> None:
        self.done = []
        self.client = self.world.add_client(self.region, self._on_done, routed=True)
        self.client.prefer = lambda members: self.proximity.order(members)[0]

    @property
    def finished(self) -> bool:
        assert self.client is not None
        return self._i >= 2 * self.count and not self.client.busy

    def start(self) -> None:
        self._next()

    def _next(self) -> None:
        client = self.client
        assert client is not None
        if self._i >= 2 * self.count:
            return
        key = f"{self.region}:r-{self.level}-{self._i // 2:03d}"
        if self._i % 2 == 0:
            self._value = f"{key}@{client.process}"
            op = Op("write", key, self._value)
        else:
            op = Op("read", key, None, self.level)
        self._i += 1
        self._start_ns = client.sched.now_ns
        client.start(op)

    def _on_done(self, client: SimClient) -> None:
        assert self.done is not None
        done = completion(client, self.region, self._start_ns)
        self.done.append(done)
        if done.f == "read" and done.outcome == "ok" and done.node is not None:
            self.served.append(self.world.take_weak_read(client.process, client.seq, done.node))
        self._next()

    def summary(self) -> dict[str, Any]:
        assert self.done is not None
        served: dict[str, int] = {}
        own = missed = failed = 0
        ms: list[float] = []
        pairs = list(zip(self.done[0::2], self.done[1::2], strict=False))
        for write, read in pairs:
            if read.outcome != "ok" or read.node is None:
                failed += 1
                continue
            where = self.world.region[read.node]
            served[where] = served.get(where, 0) + 1
            ms.append((read.end_ns - read.start_ns) / NS_PER_MS)
            if write.outcome == "ok" and read.result == write.value:
                own += 1
            else:
                missed += 1
        by_follower = [rec for rec in self.served if rec is not None and rec[0]]
        ages = [age for _, age in by_follower if age is not None]
        return {"reads": self.count, "served_by_region": dict(sorted(served.items())),
                "served_locally": served.get(self.region, 0),
                "served_by_follower": len(by_follower),
                "follower_age_ms_p50": _round(percentile(ages, 50)) if ages else None,
                "follower_age_ms_max": _round(max(ages)) if ages else None,
                "saw_own_write": own,
                "missed_own_write": missed, "failed": failed, "unfinished": self.count - len(pairs),
                "p50_ms": _round(percentile(ms, 50)), "mean_ms": _round(_mean(ms))}


def measure_reads(world: TopologyWorld, params: ReplParams) -> dict[str, Any]:
    """Every region's readers at once, one per level (:class:`Reader`), for ``reads_s``: a
    pair still unfinished then is counted ``unfinished``, and the phase lasts ``reads_s``
    whatever the strategy, so the faults that follow come at the same simulated time."""
    end_s = world.now_s + params.reads_s
    links = [(link.a, link.b, link.latency_ms) for link in world.cfg.cluster.links]
    readers = [Reader(world, region, level, params.reads_per_level,
                      Proximity(region, world.region, links))
               for region in world.regions for level in LEVELS]
    for reader in readers:
        reader.start()
    world.run_until(lambda: all(r.finished for r in readers), params.reads_s)
    world.run_until(lambda: False, max(0.0, end_s - world.now_s))
    out: dict[str, Any] = {}
    for reader in readers:
        out.setdefault(reader.region, {})[reader.level] = reader.summary()
    return out


# --- the loss phase ---------------------------------------------------------------------------


def probe_key(world: TopologyWorld, group: str) -> str:
    """A key of ``group``'s shard (the first ``probe:<group>:<i>`` that hashes there)."""
    for i in range(100_000):
        key = f"probe:{group}:{i}"
        if world.strategy.shard_of(key) == group:
            return key
    raise RuntimeError(f"no probe key hashes to {group}")


def lose_region(world: TopologyWorld, writers: Writers, params: ReplParams) -> dict[str, Any]:
    region = params.region_lost()
    if region not in world.regions:
        raise ValueError(f"loss_region {region!r}: allowed: {', '.join(world.regions)}")
    lost_nodes = [n for n in world.node_ids if world.region[n] == region]
    others = [n for n in world.node_ids if world.region[n] != region]
    cut_ns = world.sched.now_ns
    world.cut({(a, b) for a in lost_nodes for b in others})
    world.run_for(params.crash_after_s)
    crash_ns = world.sched.now_ns
    for node in lost_nodes:
        world.crash(node)
    writers.stop()
    world.run_for(params.recover_s)
    # every surviving replica's applied state, read before anything else is written
    acked = [d for d in writers.done if d.f == "write" and d.outcome == "ok"]
    lost_by_group: dict[str, dict[str, int]] = {}
    lost_before = lost_after = 0
    held_nowhere: list[str] = []
    for d in acked:
        group = world.strategy.shard_of(d.key)
        survivors = [world.group_replica(group, n) for n in world.group_members[group]
                     if world.nodes[n].up]
        holders = 0
        for replica in survivors:
            if replica is None:
                continue
            record = replica.sm.get(d.key)
            holders += record is not None and record.value.decode() == d.value
        if holders:
            continue
        entry = lost_by_group.setdefault(group, {"before_cut": 0, "after_cut": 0})
        if d.end_ns < cut_ns:
            lost_before += 1
            entry["before_cut"] += 1
        else:
            lost_after += 1
            entry["after_cut"] += 1
        if len(held_nowhere) < 20:
            held_nowhere.append(d.key)
    acked_before = sum(1 for d in acked if d.end_ns < cut_ns)
    # availability: one probe write per shard from a surviving region's client
    survivor_region = next(r for r in world.regions if r != region)
    probes: dict[str, SimClient] = {}
    results: dict[str, Done] = {}
    probe_started: dict[int, tuple[str, int]] = {}

    def on_probe(client: SimClient) -> None:
        results[client.group] = completion(client, *probe_started.pop(client.process))

    for group in world.groups():
        client = world.add_client(survivor_region, on_probe, routed=True)
        probes[group] = client
        probe_started[client.process] = (survivor_region, world.sched.now_ns)
        client.start(Op("write", probe_key(world, group), f"probe-{group}"))
    probe_ns = world.sched.now_ns
    world.run_until(lambda: not any(c.busy for c in probes.values()), PROBE_TIMEOUT_S)
    shards: dict[str, Any] = {}
    for spec in world.placement:
        res = results.get(spec.id)
        lead = world.group_leader(spec.id)
        shards[spec.id] = {
            "voters_left": [n for n in spec.voters if world.nodes[n].up],
            "learners_left": [n for n in spec.learners if world.nodes[n].up],
            "leader_after": lead[0] if lead else None,
            "write_available": res is not None and res.outcome == "ok",
            "probe_ms": _round((res.end_ns - probe_ns) / NS_PER_MS) if res and res.outcome == "ok" else None,
            "lost": lost_by_group.get(spec.id, {"before_cut": 0, "after_cut": 0}),
        }
    world.run_until(lambda: not writers.busy(), DRAIN_S)
    return {
        "region": region,
        "nodes": lost_nodes,
        "cut_at_s": round(cut_ns / NS_PER_S, 3),
        "crash_at_s": round(crash_ns / NS_PER_S, 3),
        "acked_writes": len(acked),
        "acked_before_cut": acked_before,
        "acked_after_cut": len(acked) - acked_before,
        "lost": lost_before + lost_after,
        "lost_before_cut": lost_before,
        "lost_after_cut": lost_after,
        "lost_keys_sample": held_nowhere,
        "shards": shards,
        "shards_available": sum(1 for s in shards.values() if s["write_available"]),
    }


# --- one strategy -----------------------------------------------------------------------------

def build_world(job: Job) -> TopologyWorld:
    p = job.params
    cfg = load_config(p.topology)
    graph = topo.from_config(cfg)
    spec = SimSpec(seed=p.seed, nodes=len(cfg.cluster.nodes), protocol=cfg.consensus.protocol,
                   faults=())
    return TopologyWorld(spec, graph, cfg, distribution=distribution_section(p),
                         replication=job.strategy, data_plane=data_plane_section(p))


def run_strategy(job: Job) -> dict[str, Any]:
    p = job.params
    world = build_world(job)
    regions = world.regions

    world.start()
    if not world.run_until(world.all_groups_led, BOOT_TIMEOUT_S):
        raise RuntimeError(f"{job.strategy}: not every group had a leader {BOOT_TIMEOUT_S:g} s after boot")
    booted_s = world.now_s
    world.run_until(lambda: False, max(0.0, LOAD_AT_S - world.now_s))
    leaders_at_boot = leaders_now(world)
    report(job.strategy, "boot")

    writers = Writers(world, p)
    writers.start()
    world.run_for(p.warmup_s)
    sampler = LagSampler(world, p.lag_sample_ms)
    leaders_before = leaders_now(world)
    since = world.sched.now_ns
    sampler.start()
    world.run_for(p.steady_s)
    sampler.stop()
    until = world.sched.now_ns
    leaders_after = leaders_now(world)
    latency = latency_table(writers.done, regions, since, until)
    lag = sampler.summary()
    changes = {g: leader_changes(seq) for g, seq in sampler.leaders.items()}
    report(job.strategy, "load")

    reads = measure_reads(world, p)
    report(job.strategy, "reads")

    loss = lose_region(world, writers, p)
    report(job.strategy, "loss")

    return {
        "strategy": job.strategy,
        "distribution": distribution_section(p),
        "placement": placement_of(world),
        "booted_at_s": round(booted_s, 3),
        "leaders": {"boot": leaders_at_boot, "start": leaders_before, "end": leaders_after,
                    "changes_in_window": changes},
        "writes": {"offered": sum(writers.counter.values()),
                   "by_region": dict(writers.counter),
                   "clients_by_region": {r: len(c) for r, c in writers.pools.items()}},
        "latency": latency,
        "lag": lag,
        "reads": reads,
        "loss": loss,
        "invariant_checks": world.invariant_checks(),
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --- a whole run ------------------------------------------------------------------------------


def run(params: ReplParams, on_phase: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Run every strategy and assemble ``results.json``'s content. ``on_phase(strategy,
    phase)`` is called as each phase of each strategy ends."""
    jobs = [Job(s, params) for s in params.strategies]
    results = run_jobs(jobs, run_strategy, params.workers, on_phase)
    return assemble(params, results)


def assemble(params: ReplParams, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "params": asdict(params),
        "topology": topology_summary(params.topology),
        "write_mix": params.mix(),
        "loss_region": params.region_lost(),
        "staleness": {"versions": params.staleness_versions_max, "ms": params.staleness_ms_max,
                      "clock_skew_ms": 0},
        "notes": {
            "bounded_staleness": (
                f"every node reads the simulated clock (one clock, no skew): a follower serves a "
                f"bounded_staleness read when its state is within {params.staleness_versions_max} "
                f"entries and {params.staleness_ms_max} ms of its leader's stamps, else the "
                f"leader serves it"),
            "loss_window": "partitions cut node-to-node links only: clients of other regions "
                           "reach the cut region's nodes until they crash (lost_after_cut)",
        },
        "strategies": {s: results[s] for s in params.strategies if s in results},
    }


# --- output -----------------------------------------------------------------------------------


def write_results(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.json and the plots; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    from exapyte.demos import replication_plots  # matplotlib is imported only here

    return [path, *replication_plots.write_all(results, out_dir)]


def placement_table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    strategies = list(results["strategies"])
    t = Table(title="placement: voters | learners (home region), leader at the end of the load")
    t.add_column("shard")
    for s in strategies:
        t.add_column(s)
    groups = sorted(next(iter(results["strategies"].values()))["placement"]) if strategies else []
    for g in groups:
        cells = []
        for s in strategies:
            e = results["strategies"][s]
            spec = e["placement"][g]
            lead = e["leaders"]["end"][g]
            learners = f" | {' '.join(spec['learners'])}" if spec["learners"] else ""
            home = f" ({spec['home']})" if spec["home"] else ""
            cells.append(f"{' '.join(spec['voters'])}{learners}{home} -> {lead['leader']} "
                         f"{lead['region'] or ''}")
        t.add_row(g, *cells)
    return t


def table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    strategies = list(results["strategies"])
    regions = results["topology"]["regions"]
    p = results["params"]
    t = Table(title=f"replication demo on {p['topology']} (seed {p['seed']}, simulated; "
                    f"{p['shards']} shards, rf {p['replication_factor']})")
    t.add_column("measure")
    for s in strategies:
        t.add_column(s, justify="right")

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for s in strategies:
            try:
                cells.append(fn(results["strategies"][s]))
            except (KeyError, TypeError, ValueError, IndexError):
                cells.append("-")
        t.add_row(label, *cells)

    mix = results["write_mix"]
    for region in regions:
        row(f"write p50 / p99 ms, {region} ({mix.get(region, 0):.0%})", lambda e, r=region: (
            f"{num(e['latency'][r]['p50_ms'], 0)} / {num(e['latency'][r]['p99_ms'], 0)}"))
    row("leaders by region (end of load)", lambda e: " ".join(
        f"{r}:{sum(1 for v in e['leaders']['end'].values() if v['region'] == r)}" for r in regions))
    for region in regions:
        row(f"lag voters / learners, {region}", lambda e, r=region: (
            f"{num(e['lag']['by_region'][r]['voter']['mean_entries'], 2)} / "
            f"{num(e['lag']['by_region'][r]['learner']['mean_entries'], 2)}"))
    row("  max lag entries, learners", lambda e: num(max(
        (v["learner"]["max_entries"] for v in e["lag"]["by_region"].values()
         if v["learner"]["max_entries"] is not None), default=None), 0))
    loss = results["loss_region"]
    row(f"lose {loss}: acked writes", lambda e: str(e["loss"]["acked_writes"]))
    row("  lost (acked before / after the cut)", lambda e: (
        f"{e['loss']['lost']} ({e['loss']['lost_before_cut']} / {e['loss']['lost_after_cut']})"))
    row("  shards writable after", lambda e: f"{e['loss']['shards_available']} / {len(e['loss']['shards'])}")
    for level in LEVELS:
        row(f"reads {level}: served in own region", lambda e, lv=level: " ".join(
            f"{e['reads'][r][lv]['served_locally']}" for r in regions))
        if level != "strong":
            row("  served by a follower", lambda e, lv=level: " ".join(
                f"{e['reads'][r][lv]['served_by_follower']}" for r in regions))
        row("  saw own write / missed", lambda e, lv=level: (
            f"{sum(e['reads'][r][lv]['saw_own_write'] for r in regions)} / "
            f"{sum(e['reads'][r][lv]['missed_own_write'] for r in regions)}"))
    row("bounded_staleness: follower state age max ms", lambda e: " ".join(
        num(e["reads"][r]["bounded_staleness"]["follower_age_ms_max"], 0) for r in regions))
    row("invariant checks", lambda e: str(e["invariant_checks"]))
    return t


def params_from(pairs: list[str]) -> ReplParams:
    """ReplParams from ``KEY=VALUE`` strings (the CLI's ``--param``); raises ValueError naming
    the key and the allowed ones."""
    defaults = ReplParams(workers=min(ReplParams().workers, os.cpu_count() or 1))
    params = replace_from_pairs(defaults, pairs)
    return validate(params)


def validate(params: ReplParams) -> ReplParams:
    """``params`` if every field is in range; raises ValueError naming the field otherwise."""
    positive = ("shards", "replication_factor", "virtual_nodes", "write_rate", "steady_s",
                "lag_sample_ms", "reads_per_level", "reads_s", "recover_s", "workers",
                "staleness_versions_max", "staleness_ms_max")
    for key in positive:
        if getattr(params, key) <= 0:
            raise ValueError(f"{key} must be > 0")
    for key in ("warmup_s", "crash_after_s"):
        if getattr(params, key) < 0:
            raise ValueError(f"{key} must be >= 0")
    params.mix()  # raises on a malformed mix
    unknown = [s for s in params.strategies if s not in STRATEGIES]
    if unknown or not params.strategies:
        raise ValueError(f"strategies: {unknown or '(none)'}; allowed: {', '.join(STRATEGIES)}")
    cfg = load_config(params.topology)
    regions = [r.id for r in cfg.cluster.regions] or sorted({n.region for n in cfg.cluster.nodes})
    for region in [*params.mix(), params.region_lost()]:
        if region not in regions:
            raise ValueError(f"region {region!r} (write_mix, loss_region): allowed: {', '.join(regions)}")
    return params


def main(out_dir: str | None = None, real: bool = False, params: ReplParams | None = None) -> int:
    """The CLI's entry: run, print the tables, write the files. Returns the exit status."""
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
        print("error: --real (the replication demo on real processes) is not available yet; "
              "run it without --real for the simulator", file=sys.stderr)
        return 2
    params = validate(params) if params is not None else params_from([])
    logging.getLogger("exapyte").setLevel(logging.WARNING)  # leadership moves log at INFO
    target = Path(out_dir or "demo-out/replication")
    console = Console(highlight=False, soft_wrap=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        tasks = {s: progress.add_task(f"{s}: simulating", total=len(PHASES))
                 for s in params.strategies}

        def phase(strategy: str, name: str) -> None:
            progress.update(tasks[strategy], advance=1, description=f"{strategy}: {name} done")

        results = run(params, on_phase=phase)
    console.print(placement_table(results))
    console.print(table(results))
    for note in results["notes"].values():
        console.print(f"note: {note}")
    for path in write_results(results, target):
        console.print(f"wrote {path}")
    return 0


__all__ = ["LEVELS", "ReplParams", "STRATEGIES", "main", "params_from", "run", "write_results"]
