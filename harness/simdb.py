"""``--db sim``: a harness test spec run in the deterministic simulator.

Theory of operation
-------------------
A :class:`~harness.runner.TestSpec` names a topology, a protocol, a distribution, a workload,
fault kinds, bugs, a length and a seed. With ``db="sim"`` the same spec runs in
:mod:`exapyte.sim` instead of on node processes: the nodes are the product's ``GroupTable`` and
``Replica`` (the consensus cores, sessions, ReadIndex, snapshots), only the network, the disks,
the clock and the clients are simulated, and the whole run is a pure function of one
:class:`~exapyte.sim.world.SimSpec`. :func:`plan` maps the spec onto that ``SimSpec``; what it
cannot map honestly it refuses (:class:`SimUnsupported`, naming the option or fault), and what
the simulator does its own way is said in the run's notes:

==================  ==========================================================================
spec                simulator
==================  ==========================================================================
seed                ``seed``
topology            ``placement``: the topology's node ids, each in its region (config only:
                    the replication strategies place by it; the simulated links keep their LAN
                    delays, not the topology's WAN latency, and the nodes the simulator's
                    timers, 10 ms ticks, election timeout 10 ticks)
protocol            ``protocol``
distribution        centralized: one group; sharded: ``shards`` (3 replicas per shard, so the
                    replication factor must be 3); hierarchical: refused
replication         ``--replication``, else the topology's ``replication.strategy``, if it names one
bugs                ``bugs`` (``unsafe.bugs`` of every simulated node)
time, quiet         ``fault_s`` (the faults and the clients' ops), then ``quiet_s``
rate, concurrency   an operation budget of ``rate x time`` ops, ``concurrency`` clients
workload            register: every op strong; session, bounded, prefix, eventual: reads at
                    mixed levels, :data:`PRIMARY_SHARE` at the workload's level and the rest
                    equally at the other four; levels: the five equally (the simulator's
                    writes and cas are strong); kv, set, counter, bank: refused
nemesis             partition -> partition, the harness's shapes (those this topology can
                    take); kill -> crash (one node, its unsynced writes lost); pause -> pause;
                    clock -> drift (a node's clock runs 0.4-0.8x or 1.25-2.5x); rebalance ->
                    rebalance (sharded only); latency, bandwidth, reset, transfer: refused
==================  ==========================================================================

:func:`run_sim_test` runs the planned spec (:func:`exapyte.sim.runner.run_seed`), writes its
history, the same :class:`~exapyte.history.Event` lines a real run writes, to
``history.jsonl``, and hands the run folder to :func:`harness.runner.finish_run`: the same
checkers, ``results.json`` and ``report.html`` as a real run. The simulator's own judges (the
invariants after every step, lost writes, held reads, convergence) count as one more checker,
``simulator``; the linearizability and level checks are left to the shared checkers (the
simulator's copies of them are not run twice). ``results.json`` gets ``db: "sim"`` and
``simulator``: the ``python -m exapyte.sim`` command that replays the run exactly, its trace
hash, and the simulator's verdict and counters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from exapyte import config as config_mod
from exapyte.control import topology as topo
from exapyte.sim.faults import REBALANCE
from exapyte.sim.runner import SimResult, run_seed
from exapyte.sim.workload import LEVELS
from exapyte.sim.world import STALENESS_MS_MAX, STALENESS_VERSIONS_MAX, SimSpec
from harness.checker.invariants import Verdict
from harness.nemesis import DEFAULT_PARTITION_KINDS, parse_faults
from harness.runner import (
    RunOutcome,
    TestSpec,
    check_cluster_options,
    finish_run,
    make_run_dir,
    resolve_topology,
)
from harness.workloads import PRIMARY_SHARE

__all__ = ["FAULT_MAP", "SIM_REPLICATION_FACTOR", "SimPlan", "SimUnsupported", "plan", "run_sim_test"]

#: Harness fault kinds and the simulator's kind for each.
FAULT_MAP: dict[str, str] = {
    "partition": "partition", "kill": "crash", "pause": "pause", "clock": "drift", "rebalance": REBALANCE,
}
#: Harness fault kinds the simulator has no honest equivalent for, and why.
UNSUPPORTED_FAULTS: dict[str, str] = {
    "latency": "its links have fixed delay distributions, no latency spikes",
    "bandwidth": "its links have no rate limit",
    "reset": "its links have no connections to reset",
    "transfer": "its nemesis forces no leader change",
}
#: Workloads whose ops the simulator's clients (read, write, cas on keys) can run: the read
#: levels' weights in the order of :data:`exapyte.sim.workload.LEVELS` (None: every op strong).
LEVEL_WORKLOAD_PRIMARY: dict[str, str | None] = {
    "session": "session", "bounded": "bounded_staleness", "prefix": "consistent_prefix",
    "eventual": "eventual", "levels": None,
}
SIM_WORKLOADS: tuple[str, ...] = ("register", *LEVEL_WORKLOAD_PRIMARY)
SIM_REPLICATION_FACTOR = 3  # the simulator's sharded distribution: three replicas per shard
LEVEL_KEYS = 8  # keys of a level workload (the harness's kv keys)
SIM_KEYS_MIN = 4  # the simulator's default key count


class SimUnsupported(ValueError):
    """The spec asks for something the simulator cannot run (the message names it)."""


@dataclass(frozen=True)
class SimPlan:
    """A spec mapped onto the simulator: the ``SimSpec`` and what the mapping says of itself."""

    sim: SimSpec
    notes: tuple[str, ...]


def read_weights(workload: str) -> tuple[float, ...] | None:
    """The read levels' weights of a level workload (its level at :data:`PRIMARY_SHARE`, the
    others equally; ``levels``: all equally); None for ``register`` (strong only)."""
    if workload == "register":
        return None
    primary = LEVEL_WORKLOAD_PRIMARY[workload]
    if primary is None:
        return tuple(1.0 / len(LEVELS) for _ in LEVELS)
    rest = (1.0 - PRIMARY_SHARE) / (len(LEVELS) - 1)
    return tuple(round(PRIMARY_SHARE if level == primary else rest, 6) for level in LEVELS)


def partition_shapes(graph: Any) -> tuple[str, ...]:
    """The harness's partition mix for this topology (``choose_partition``'s usable shapes)."""
    nodes = len(graph.nodes)
    shapes = [k for k in DEFAULT_PARTITION_KINDS if not (k == "isolate-region" and len(topo.regions(graph)) < 2)]
    if nodes < 3:
        shapes = [k for k in shapes if k != "bridge"]
    if nodes < 4:
        shapes = [k for k in shapes if k != "ring"]
    return tuple(shapes)


def plan(spec: TestSpec, topology_cfg: config_mod.Config, graph: Any) -> SimPlan:
    """Map ``spec`` onto a :class:`SimSpec` (module docstring); :class:`SimUnsupported` names
    whatever the simulator cannot run."""
    check_cluster_options(spec)
    notes: list[str] = []
    if spec.hosts != "local":
        raise SimUnsupported(f"--hosts {spec.hosts} runs real nodes; the simulator has no hosts (use --db real)")
    if spec.cut_mode is not None:
        raise SimUnsupported(f"--cut {spec.cut_mode}: the simulator drops what a cut link carries; it has no cut modes")
    if spec.workload not in SIM_WORKLOADS:
        raise SimUnsupported(
            f"workload {spec.workload!r} cannot run in the simulator: its clients read, write and cas "
            f"keys; workloads it runs: {', '.join(SIM_WORKLOADS)}")
    faults = parse_faults(list(spec.nemesis))
    unsupported = [f for f in faults if f in UNSUPPORTED_FAULTS]
    if unsupported:
        raise SimUnsupported("the simulator cannot run fault(s) " + ", ".join(unsupported) + ": "
                             + "; ".join(f"{f}: {UNSUPPORTED_FAULTS[f]}" for f in unsupported)
                             + f". Faults it runs: {', '.join(FAULT_MAP)}")
    if spec.distribution == "hierarchical":
        raise SimUnsupported("distribution hierarchical cannot run in the simulator: it places sharded "
                             "groups only (use --distribution centralized or sharded)")
    shards = spec.resolved_shards()
    if spec.distribution == "sharded" and spec.replication_factor != SIM_REPLICATION_FACTOR:
        raise SimUnsupported(f"replication factor {spec.replication_factor}: the simulator's shards have "
                             f"{SIM_REPLICATION_FACTOR} replicas each")
    if REBALANCE in faults and shards <= 1:
        raise SimUnsupported("fault rebalance needs --distribution sharded in the simulator (it moves "
                             "shard replicas onto a spare node)")
    for name, given, sim_value in (("--staleness-versions", spec.staleness_versions_max, STALENESS_VERSIONS_MAX),
                                   ("--staleness-ms", spec.staleness_ms_max, STALENESS_MS_MAX)):
        if given is not None and given != sim_value:
            raise SimUnsupported(f"{name} {given}: the simulated nodes' bounded_staleness bound is {sim_value}")
    placement = tuple((n.id, n.region) for n in topology_cfg.cluster.nodes)
    if len(placement) < 3:
        raise SimUnsupported(f"the topology has {len(placement)} nodes; the simulator needs at least 3")
    sim_faults = tuple(FAULT_MAP[f] for f in faults)
    ops = max(1, round(spec.rate * spec.time_s))
    if spec.workload == "register":
        per_key = spec.resolved_ops_per_key(shards)
        keys = max(SIM_KEYS_MIN, math.ceil(ops / per_key))
    else:
        keys = LEVEL_KEYS
    if shards > 1:
        keys = max(keys, 2 * shards)  # two keys per shard at least, as python -m exapyte.sim does
    replication = spec.replication or topology_cfg.replication.strategy
    sim = SimSpec(
        seed=spec.seed,
        nodes=len(placement),
        protocol=spec.protocol,
        shards=shards,
        replication=replication,
        faults=sim_faults,
        ops=ops,
        clients=spec.concurrency,
        keys=keys,
        fault_s=spec.time_s,
        quiet_s=spec.quiet_s,
        check_linearizability=False,  # the shared checkers judge the history (not twice)
        mixed_levels=spec.workload != "register",
        bugs=spec.bugs,
        placement=placement,
        read_weights=read_weights(spec.workload),
        shapes=partition_shapes(graph) if "partition" in faults else (),
    )
    if faults:
        notes.append("faults mapped to the simulator's: " + ", ".join(f"{f} -> {FAULT_MAP[f]}" for f in faults)
                     + "; they come at the simulator's own rates and durations, overlapping freely, not every "
                     f"--nemesis-interval ({spec.nemesis_interval_s:g} s)")
    notes.append(f"ops: a budget of {ops} (rate x time) over {keys} keys, {spec.concurrency} clients with one op "
                 "outstanding each; a client gives an op up after 1.2 s (not --op-timeout)")
    notes.append("network: the simulator's LAN links (no WAN latency, no proxies) and its own timers; the topology "
                 "gives the node ids and regions")
    return SimPlan(sim, tuple(notes))


def _cluster(spec: TestSpec, result: SimResult) -> dict[str, Any]:
    """The report's cluster section from the simulated run (the shape :func:`harness.runner._cluster_info` gives)."""
    sizes = sorted({len(v) for v in result.groups.values()}) or [0]
    return {
        "protocol": spec.protocol, "distribution": spec.distribution, "shards": result.spec.shards,
        "replication_factor": SIM_REPLICATION_FACTOR if result.spec.shards > 1 else len(result.spec.placement),
        "staleness": {"versions": STALENESS_VERSIONS_MAX, "ms": STALENESS_MS_MAX, "clock_skew_ms": 0},
        "groups": len(result.groups), "placement": result.groups,
        "voters_per_group": sizes[0] if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}",
        "final_status": result.final_status,
    }


def simulator_verdict(result: SimResult) -> Verdict:
    """The simulator's own judges as one verdict: invariants after every step, lost writes,
    moves and routing, held reads, final reads and convergence (the first failing check)."""
    evidence: dict[str, Any] = {"check": result.check, "detail": result.detail, "trace_hash": result.trace_hash,
                                "replay": result.spec.replay_command(), "counters": result.counters}
    if result.ok:
        return Verdict("simulator", True, None, evidence)
    return Verdict("simulator", False, f"{result.check}: {result.detail}", evidence)


def run_sim_test(spec: TestSpec, console: Console | None = None) -> RunOutcome:
    """Run ``spec`` in the simulator; the same run folder, checkers and report as a real run."""
    console = console or Console()
    topology_path = resolve_topology(spec.topology)
    graph = topo.load(topology_path)
    sim_plan = plan(spec, config_mod.load(topology_path), graph)
    sim = sim_plan.sim
    run_dir = make_run_dir(Path(spec.store), spec.test_name())
    replay = sim.replay_command()
    console.print(f"[bold]exapyte test[/] {spec.test_name()}  seed={spec.seed}  run: {run_dir}")
    console.print(f"  in the simulator: {replay}")
    topo.draw(graph, run_dir / "topology.png", title=f"{topology_path.stem}: {graph.number_of_nodes()} nodes (simulated)")
    started_wall = datetime.now(timezone.utc).isoformat()
    console.print(f"[bold]simulate[/]: {sim.fault_s:g} s of faults and {sim.ops} ops, {sim.quiet_s:g} s quiet, final reads ...")
    result = run_seed(sim, keep_history=True)
    (run_dir / "history.jsonl").write_text(result.history_jsonl, encoding="utf-8")
    console.print(f"  {result.summary_line()}: {result.sim_ns / 1e9:.1f} s simulated in {result.wall_s:.1f} s")
    extra: Mapping[str, Any] = {"simulator": {
        "replay": replay, "trace_hash": result.trace_hash, "verdict": result.verdict,
        "check": result.check, "detail": result.detail, "sim_s": result.sim_ns / 1e9,
        "wall_s": round(result.wall_s, 3), "spec": _spec_dict(sim), "counters": result.counters,
    }}
    return finish_run(spec, run_dir, topology_path, graph, result.final_reads_ns, list(sim_plan.notes), started_wall,
                      console, cluster=_cluster(spec, result), extra_verdicts=[simulator_verdict(result)],
                      extra_results=extra)


def _spec_dict(sim: SimSpec) -> dict[str, Any]:
    return {
        "seed": sim.seed, "protocol": sim.protocol, "placement": [list(p) for p in sim.placement],
        "shards": sim.shards, "replication": sim.replication, "faults": list(sim.faults), "shapes": list(sim.shapes),
        "ops": sim.ops, "clients": sim.clients, "keys": sim.keys, "fault_s": sim.fault_s, "quiet_s": sim.quiet_s,
        "mixed_levels": sim.mixed_levels, "read_weights": list(sim.read_weights) if sim.read_weights else None,
        "bugs": list(sim.bugs),
    }
