"""``python main.py --demo consensus``: Raft vs Multi-Paxos vs ZAB, measured side by side.

Theory of operation
-------------------
Every protocol runs the same experiments, in the deterministic simulator, on the same topology
(``topologies/three-region.json`` by default: five nodes in three regions, the topology's WAN
latencies, see :mod:`exapyte.demos.simworld`), with the same seed and the same fault schedule.
Each experiment is one independent job (a fresh simulated cluster); jobs run in worker processes
and their results do not depend on how they were spread.

``main``
    The leader is moved to the topology's first node (leadership transfer), one closed-loop
    writer per region writes for ``steady_s``: throughput and p50/p99 write latency per region.
    Then the leader is killed and the writers go on for ``after_kill_s``: throughput over time
    in ``bin_ms`` bins, and the **unavailability gap**: from the kill to the start of the first
    one-second window whose throughput is back to 90% of the steady rate.
``counts``
    One writer next to the leader, one write at a time (so every write travels alone: the
    unbatched steady state), no faults. Every message the transport is handed is counted with
    its framed size (:class:`~exapyte.demos.simworld.Meter`). Per committed write: the
    write-path messages (everything but the timer-driven heartbeats and node beats), their
    bytes, and everything including the background, next to the documented count
    (:data:`DOCUMENTED_COUNTS`) and the relative difference.
``elections``
    ``elections`` leader failures, in chunks of :data:`ELECTIONS_PER_WORLD` per simulated
    cluster: kill the serving leader, time until a leader of a newer term serves (it committed
    an entry of its term), restart the killed node, let it catch up, again. One writer keeps
    the cluster busy, as in production. p50/p90/p99/max.
``scenario``
    The three partial-connectivity scenarios of the Omni-Paxos paper (Ng, Haridi, Carbone,
    EuroSys 2023), on five nodes, with A the leader and C a hub (``scenario_links``):
    *quorum-loss* (A reaches only C, C reaches everyone, the others reach only C),
    *constrained election* (C was cut off for ``lag_s`` while writes committed, then A is cut
    off entirely and C reaches everyone else, who reach only C: the only quorum-connected node
    has an outdated log and nobody can bring it up to date), *chained* (only the
    link A-C is cut). The cut stays; the writers go on for ``scenario_s``. "recovered in X s":
    from the cut to the start of the first one-second window after which every window commits
    at least half the steady rate until the end; else "stuck".

Nothing is asserted: every number is measured, and a protocol that does not recover is
reported so. Simulated time is what every duration here counts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exapyte.config import load as load_config
from exapyte.control import topology as topo
from exapyte.demos.simworld import BACKGROUND_KINDS, TopologyWorld, WriteLoop
from exapyte.protocol import registry
from exapyte.sim.scheduler import NS_PER_MS, NS_PER_S, derive_seed
from exapyte.sim.world import SimSpec

PROTOCOLS = ("raft", "multipaxos", "zab")
ELECTIONS_PER_WORLD = 250  # leader failures one simulated cluster goes through
BOOT_TIMEOUT_S = 30.0  # a first leader serves within this much simulated time, or the job fails
ELECTION_TIMEOUT_S = 30.0  # a failure with no new serving leader after this is "none"
SETTLE_S = 0.3  # after a restart, before the next failure (the restarted node catches up)
WARMUP_S = 1.0  # writers run this long before anything is measured
WINDOW_S = 1.0  # the window throughput is judged over (gap, recovery)
GAP_FRACTION = 0.9  # the unavailability gap ends when throughput is back to this share
RECOVERED_FRACTION = 0.5  # a scenario is recovered when windows commit this share of the steady rate
SCENARIOS = ("quorum-loss", "constrained-election", "chained")

# The cost of one committed write in the unbatched steady state, in messages between nodes:
# (formula with the paper section it follows, count for N nodes). This is the one statement of
# each count: docs/raft.md, docs/multipaxos.md and docs/zab.md quote the formula word for word
# ("Messages per write"), tests/protocol/test_messages_per_write.py checks both the quotes and
# the count of one write on five nodes, and the demo's ``counts`` experiment measures it.
# - Raft §5.3: the commit index rides on the next Append or heartbeat, no round of its own.
# - Multi-Paxos, Paxos Made Simple §3 (phase 2 only, for a stable leader) with the leader as
#   the distinguished learner of §2.3: the chosen prefix rides on the next Accept or heartbeat.
# - ZAB, Junqueira, Reed, Serafini (DSN 2011) §IV-C: on a quorum of ACKs the leader sends
#   COMMIT to all followers.
DOCUMENTED_COUNTS: dict[str, tuple[str, Callable[[int], int]]] = {
    "raft": ("2(N-1): Append + AppendResp per follower (Raft §5.3)", lambda n: 2 * (n - 1)),
    "multipaxos": ("2(N-1): Accept + Accepted per acceptor (Paxos Made Simple §3)",
                   lambda n: 2 * (n - 1)),
    "zab": ("3(N-1): PROPOSAL + ACK + COMMIT per follower (Zab §IV-C)", lambda n: 3 * (n - 1)),
}


@dataclass(frozen=True)
class DemoParams:
    """Everything a demo run depends on; the defaults keep it under three minutes on two cores."""

    seed: int = 1
    topology: str = "topologies/three-region.json"
    protocols: tuple[str, ...] = PROTOCOLS
    steady_s: float = 10.0
    after_kill_s: float = 10.0
    count_writes: int = 200
    elections: int = 1000
    scenario_s: float = 12.0
    lag_s: float = 2.0
    bin_ms: float = 100.0
    workers: int = 2


@dataclass(frozen=True)
class Job:
    kind: str  # main | counts | elections | scenario
    protocol: str
    params: DemoParams
    arg: Any = None  # elections: (chunk, failures); scenario: its name

    def label(self) -> str:
        extra = "" if self.arg is None else f" {self.arg if self.kind == 'scenario' else self.arg[0]}"
        return f"{self.protocol} {self.kind}{extra}"


# --- numbers --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest-rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def bins_of(times_ns: Iterable[int], start_ns: int, end_ns: int, bin_ms: float) -> list[int]:
    """How many of ``times_ns`` fall in each ``bin_ms`` bin of [start_ns, end_ns)."""
    width = int(bin_ms * NS_PER_MS)
    count = max(0, (end_ns - start_ns + width - 1) // width)
    out = [0] * count
    for t in times_ns:
        if start_ns <= t < end_ns:
            out[(t - start_ns) // width] += 1
    return out


def window_rates(bins: list[int], bin_ms: float, window_s: float = WINDOW_S) -> list[float]:
    """Writes per second over the window starting at each bin (only full windows)."""
    per = max(1, round(window_s * 1000 / bin_ms))
    return [sum(bins[i : i + per]) / window_s for i in range(len(bins) - per + 1)]


def gap_after(bins: list[int], bin_ms: float, baseline: float, fraction: float = GAP_FRACTION) -> float | None:
    """Seconds from the first bin to the start of the first window at ``fraction`` of
    ``baseline`` (None if none is)."""
    for i, rate in enumerate(window_rates(bins, bin_ms)):
        if rate >= fraction * baseline:
            return i * bin_ms / 1000
    return None


def recovered_after(bins: list[int], bin_ms: float, baseline: float,
                    fraction: float = RECOVERED_FRACTION) -> float | None:
    """Seconds from the first bin to the start of the first window after which every window
    reaches ``fraction`` of ``baseline`` (None: the last one does not: stuck)."""
    rates = window_rates(bins, bin_ms)
    if not rates or rates[-1] < fraction * baseline:
        return None
    i = len(rates) - 1
    while i > 0 and rates[i - 1] >= fraction * baseline:
        i -= 1
    return i * bin_ms / 1000


def relative_difference(measured: float, documented: float) -> float:
    return (measured - documented) / documented if documented else 0.0


# --- the experiments ------------------------------------------------------------------------


def _world(job: Job, *labels: object) -> TopologyWorld:
    params = job.params
    cfg = load_config(params.topology)
    graph = topo.from_config(cfg)
    seed = params.seed if not labels else derive_seed(params.seed, *labels) % (2**31)
    spec = SimSpec(seed=seed, nodes=len(cfg.cluster.nodes), protocol=job.protocol, faults=())
    world = TopologyWorld(spec, graph, cfg)
    world.start()
    if world.wait_new_leader(0, BOOT_TIMEOUT_S) is None:
        raise RuntimeError(f"{job.protocol}: no leader within {BOOT_TIMEOUT_S:g} s of boot")
    return world


def _pin_leader(world: TopologyWorld) -> str:
    """Move leadership to the topology's first node (every protocol starts from the same one)."""
    target = world.node_ids[0]
    if not world.transfer_to(target):
        lead = world.leader()
        return lead[0] if lead else target
    return target


def _writers(world: TopologyWorld) -> list[WriteLoop]:
    loops = [world.add_writer(region, f"k-{region}") for region in world.regions]
    for loop in loops:
        loop.start()
    return loops


def _acks(loops: list[WriteLoop]) -> list[int]:
    return sorted(t for loop in loops for t in loop.acked_at_ns)


def run_main(job: Job) -> dict[str, Any]:
    p = job.params
    world = _world(job)
    leader = _pin_leader(world)
    loops = _writers(world)
    world.run_for(WARMUP_S)
    start_ns = world.sched.now_ns
    marks = {id(loop): len(loop.latencies_ms) for loop in loops}
    world.run_for(p.steady_s)
    kill_ns = world.sched.now_ns
    per_region: dict[str, dict[str, Any]] = {}
    for loop in loops:
        lat = loop.latencies_ms[marks[id(loop)] :]
        per_region[loop.region] = {
            "writes": len(lat),
            "p50_ms": _round(percentile(lat, 50)),
            "p99_ms": _round(percentile(lat, 99)),
            "latencies_ms": [round(x, 3) for x in lat],
        }
    acks = _acks(loops)
    steady = sum(1 for t in acks if start_ns <= t < kill_ns)
    throughput = steady / p.steady_s
    serving = world.serving
    assert serving is not None
    killed = serving[0]
    world.crash(killed)
    world.run_for(p.after_kill_s)
    end_ns = world.sched.now_ns
    acks = _acks(loops)
    before_ns = max(start_ns, kill_ns - int(min(3.0, p.steady_s) * NS_PER_S))
    timeline = bins_of(acks, before_ns, end_ns, p.bin_ms)
    after = bins_of(acks, kill_ns, end_ns, p.bin_ms)
    gap = gap_after(after, p.bin_ms, throughput)
    tail_s = min(3.0, p.after_kill_s)
    after_wps = sum(1 for t in acks if t >= end_ns - int(tail_s * NS_PER_S)) / tail_s
    new = world.serving if world.serving and world.serving[0] != killed else None
    return {
        "leader": leader,
        "leader_region": world.region[leader],
        "throughput_wps": round(throughput, 3),
        "per_region": per_region,
        "killed": killed,
        "new_leader": new[0] if new else None,
        "new_leader_region": world.region[new[0]] if new else None,
        "new_leader_after_s": _round(
            next(((t - kill_ns) / NS_PER_S for t, n, _ in world.leader_changes
                  if t >= kill_ns and n != killed), None)
        ),
        "gap_s": _round(gap),
        "after_kill_wps": round(after_wps, 3),  # over the last (up to) 3 s
        "timeline": {
            "bin_ms": p.bin_ms,
            "start_s": round((before_ns - kill_ns) / NS_PER_S, 3),
            "writes_per_bin": timeline,
        },
        "failed_writes": sum(loop.failed for loop in loops),
        "invariant_checks": world.invariant_checks(),
    }


def run_counts(job: Job) -> dict[str, Any]:
    p = job.params
    world = _world(job)
    leader = _pin_leader(world)
    loop = world.add_writer(world.region[leader], "k0", writes_max=p.count_writes)
    world.run_for(WARMUP_S)
    world.meter.reset()
    world.meter.on = True
    loop.start()
    world.run_until(lambda: not loop.running and not loop.client.busy, timeout_s=600.0)
    world.run_for(WARMUP_S)  # the last write's messages to the farthest follower land
    world.meter.on = False
    writes = len(loop.latencies_ms)
    n = world.spec.nodes
    formula, count = DOCUMENTED_COUNTS[job.protocol]
    path_msgs, path_bytes = world.meter.totals(background=False)
    all_msgs, all_bytes = world.meter.totals(background=None)
    per_write = path_msgs / writes if writes else 0.0
    return {
        "leader": leader,
        "nodes": n,
        "writes": writes,
        "documented": {"formula": formula, "messages_per_write": count(n)},
        "messages_per_write": round(per_write, 4),
        "bytes_per_write": round(path_bytes / writes, 1) if writes else 0.0,
        "relative_difference": round(relative_difference(per_write, count(n)), 4),
        "all_messages_per_write": round(all_msgs / writes, 4) if writes else 0.0,
        "all_bytes_per_write": round(all_bytes / writes, 1) if writes else 0.0,
        "by_kind": {
            kind: {"messages": world.meter.messages[kind], "bytes": world.meter.bytes[kind],
                   "background": kind in BACKGROUND_KINDS}
            for kind in sorted(world.meter.messages)
        },
    }


def run_elections(job: Job) -> dict[str, Any]:
    chunk, failures = job.arg
    world = _world(job, "elections", chunk)
    loop = world.add_writer(world.regions[0], "k0")
    loop.start()
    times: list[float] = []
    none = 0
    for _ in range(failures):
        serving = world.serving
        if serving is None or not world.nodes[serving[0]].up:
            serving = world.wait_new_leader(serving[1] if serving else 0, ELECTION_TIMEOUT_S)
            if serving is None:
                break
        node, term = serving
        crash = world.crash(node)
        t0 = world.sched.now_ns
        if world.wait_new_leader(term, ELECTION_TIMEOUT_S) is None:
            none += 1
        else:
            times.append((world.sched.now_ns - t0) / NS_PER_S)
        world.restart(crash)
        world.run_for(SETTLE_S)
    return {"times_s": [round(t, 6) for t in times], "no_leader": none,
            "invariant_checks": world.invariant_checks()}


def scenario_links(name: str, a: str, c: str, nodes: tuple[str, ...]) -> set[tuple[str, str]]:
    """The undirected links a scenario cuts, A the leader and C the hub (see the module doc)."""
    pairs = {(x, y) for x in nodes for y in nodes if x < y}
    if name == "chained":
        return {tuple(sorted((a, c)))}  # type: ignore[misc]
    if name in ("quorum-loss", "constrained-election"):
        keep = {tuple(sorted((c, x))) for x in nodes if x != c}
        if name == "constrained-election":
            keep.discard(tuple(sorted((a, c))))  # A is cut off entirely: C cannot catch up
        return {pair for pair in pairs if pair not in keep}
    raise ValueError(f"unknown scenario {name!r}; allowed: {', '.join(SCENARIOS)}")


def run_scenario(job: Job) -> dict[str, Any]:
    p = job.params
    name = job.arg
    world = _world(job)
    a = _pin_leader(world)
    others = [n for n in world.node_ids if n != a]
    c = others[1] if len(others) > 1 else others[0]
    loops = _writers(world)
    world.run_for(WARMUP_S)
    base_start = world.sched.now_ns
    world.run_for(2 * WINDOW_S)
    baseline = sum(1 for t in _acks(loops) if t >= base_start) / (2 * WINDOW_S)
    lag = None
    if name == "constrained-election":
        isolate = world.cut({(c, x) for x in world.node_ids if x != c})
        world.run_for(p.lag_s)
        lag = _commit_lag(world, c)
        cut = scenario_links(name, a, c, world.node_ids)
        world.cut(cut)  # before C's isolation ends, so that C never hears A again
        world.heal_links(isolate)
    else:
        cut = scenario_links(name, a, c, world.node_ids)
        world.cut(cut)
    fault_ns = world.sched.now_ns
    changes_before = len(world.leader_changes)
    world.run_for(p.scenario_s)
    bins = bins_of(_acks(loops), fault_ns, world.sched.now_ns, p.bin_ms)
    recovered = recovered_after(bins, p.bin_ms, baseline)
    changes = world.leader_changes[changes_before:]
    final = world.leader()
    return {
        "leader": a,
        "hub": c,
        "cut": sorted(list(pair) for pair in cut),
        "hub_commit_lag": lag,
        "baseline_wps": round(baseline, 3),
        "recovered_s": _round(recovered),
        "outcome": f"recovered in {recovered:.1f} s" if recovered is not None else "stuck",
        "leader_changes": len(changes),
        "final_leader": final[0] if final else None,
        "writes_after_cut": sum(bins),
    }


def _commit_lag(world: TopologyWorld, node_id: str) -> int:
    """How many committed entries ``node_id`` lacks against the serving leader."""
    lead = world.leader()
    if lead is None:
        return 0
    commits = {}
    for n in (lead[0], node_id):
        for _, replica in world.nodes[n].replicas():
            commits[n] = replica.core.observe().commit
    return max(0, commits[lead[0]] - commits.get(node_id, 0))


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


RUNNERS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "main": run_main,
    "counts": run_counts,
    "elections": run_elections,
    "scenario": run_scenario,
}


def run_job(job: Job) -> tuple[Job, dict[str, Any]]:
    return job, RUNNERS[job.kind](job)


def plan_jobs(params: DemoParams) -> list[Job]:
    """Every job of a run; the longest (elections) first so two workers finish together."""
    jobs: list[Job] = []
    for protocol in params.protocols:
        left, chunk = params.elections, 0
        while left > 0:
            take = min(ELECTIONS_PER_WORLD, left)
            jobs.append(Job("elections", protocol, params, (chunk, take)))
            left -= take
            chunk += 1
    for protocol in params.protocols:
        jobs.append(Job("main", protocol, params))
        jobs.append(Job("counts", protocol, params))
        for name in SCENARIOS:
            jobs.append(Job("scenario", protocol, params, name))
    return jobs


# --- a whole run ----------------------------------------------------------------------------


def run(params: DemoParams, on_done: Callable[[Job], None] | None = None) -> dict[str, Any]:
    """Run every job and assemble ``results.json``'s content."""
    unknown = [p for p in params.protocols if p not in registry.names()]
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; allowed: {', '.join(registry.names())}")
    jobs = plan_jobs(params)
    results: list[tuple[Job, dict[str, Any]]] = []
    if params.workers <= 1:
        for job in jobs:
            results.append(run_job(job))
            if on_done is not None:
                on_done(job)
    else:
        with ProcessPoolExecutor(max_workers=params.workers) as pool:
            futures = [pool.submit(run_job, job) for job in jobs]
            for future in as_completed(futures):
                job, result = future.result()
                results.append((job, result))
                if on_done is not None:
                    on_done(job)
    return assemble(params, results)


def topology_summary(path: str) -> dict[str, Any]:
    """``results.json``'s ``topology``: nodes and regions, link latencies, timers."""
    cfg = load_config(path)
    graph = topo.from_config(cfg)
    return {
        "nodes": {n.id: n.region for n in cfg.cluster.nodes},
        "links_ms": {f"{l.a}-{l.b}": l.latency_ms for l in cfg.cluster.links},
        "election_timeout_ticks": cfg.consensus.election_timeout_ticks,
        "heartbeat_ticks": cfg.consensus.heartbeat_ticks,
        "tick_ms": cfg.network.tick_ms,
        "regions": topo.regions(graph),
    }


def assemble(params: DemoParams, results: list[tuple[Job, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "params": asdict(params),
        "topology": topology_summary(params.topology),
        "protocols": {},
    }
    order = {job: i for i, job in enumerate(plan_jobs(params))}
    results.sort(key=lambda jr: order.get(jr[0], 0))
    for protocol in params.protocols:
        mine = [(j, r) for j, r in results if j.protocol == protocol]
        entry: dict[str, Any] = {"scenarios": {}}
        times: list[float] = []
        no_leader = 0
        for job, result in mine:
            if job.kind == "main":
                entry["main"] = result
            elif job.kind == "counts":
                entry["messages"] = result
            elif job.kind == "scenario":
                entry["scenarios"][job.arg] = result
            else:
                times.extend(result["times_s"])
                no_leader += result["no_leader"]
        entry["elections"] = {
            "failures": len(times) + no_leader,
            "elected": len(times),
            "no_leader": no_leader,
            "p50_s": _round(percentile(times, 50)),
            "p90_s": _round(percentile(times, 90)),
            "p99_s": _round(percentile(times, 99)),
            "max_s": _round(max(times) if times else None),
            "mean_s": _round(statistics.fmean(times) if times else None),
            "times_s": times,
        }
        out["protocols"][protocol] = entry
    return out


# --- output ---------------------------------------------------------------------------------


def write_results(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.json and the plots; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    from exapyte.demos import plots  # matplotlib is imported only here

    return [path, *plots.write_all(results, out_dir)]


def table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    protocols = list(results["protocols"])
    regions = results["topology"]["regions"]
    real = results.get("mode") == "real"
    how = (f"real processes, Toxiproxy ({results['toxiproxy']['kind']})" if real
           else f"seed {results['params']['seed']}, simulated")
    t = Table(title=f"consensus demo: {', '.join(protocols)} on {results['params']['topology']} "
                    f"({how})")
    t.add_column("measure")
    for protocol in protocols:
        t.add_column(protocol, justify="right")

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for protocol in protocols:
            try:
                cells.append(fn(results["protocols"][protocol]))
            except (KeyError, TypeError):
                cells.append("-")
        t.add_row(label, *cells)

    row("leader (region)", lambda e: f"{e['main']['leader']} ({e['main']['leader_region']})")
    row("throughput, writes/s", lambda e: f"{e['main']['throughput_wps']:.1f}")
    for region in regions:
        row(f"p50 / p99 ms, {region}", lambda e, r=region: (
            f"{_ms(e['main']['per_region'][r]['p50_ms'])} / {_ms(e['main']['per_region'][r]['p99_ms'])}"))
    row("msgs / write (documented)", lambda e: (
        f"{e['messages']['messages_per_write']:.2f} ({e['messages']['documented']['messages_per_write']})"))
    row("difference vs documented", lambda e: f"{100 * e['messages']['relative_difference']:+.1f}%")
    row("bytes / write", lambda e: f"{e['messages']['bytes_per_write']:.0f}")
    row("all msgs / write (+heartbeats)", lambda e: f"{e['messages']['all_messages_per_write']:.2f}")
    row("gap after leader kill", lambda e: _s(e["main"]["gap_s"], "not back"))
    row("throughput at the end, writes/s", lambda e: f"{e['main']['after_kill_wps']:.1f}")
    row("new leader (region)", lambda e: f"{e['main']['new_leader']} ({e['main']['new_leader_region']})")
    row("new leader after the kill", lambda e: _s(e["main"]["new_leader_after_s"]))
    if real:
        row("election times (1,000 failures)", lambda e: "simulator only")
    else:
        row("elections", lambda e: f"{e['elections']['elected']}/{e['elections']['failures']}")
        row("election p50 / p90", lambda e: f"{_s(e['elections']['p50_s'])} / {_s(e['elections']['p90_s'])}")
        row("election p99 / max", lambda e: f"{_s(e['elections']['p99_s'])} / {_s(e['elections']['max_s'])}")
    for name in SCENARIOS:
        row(name, lambda e, n=name: e["scenarios"][n]["outcome"])
    return t


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _s(value: float | None, none: str = "-") -> str:
    return none if value is None else f"{value:.2f} s"


def params_from(pairs: list[str], *, real: bool = False) -> Any:
    """DemoParams (or, with ``real``, :class:`~exapyte.demos.realworld.RealParams`) from
    ``KEY=VALUE`` strings (the CLI's ``--param``); raises ValueError naming the key and the
    allowed ones."""
    if real:
        from exapyte.demos.realworld import TOXIPROXY_CHOICES, RealParams

        defaults: Any = RealParams()
    else:
        defaults = DemoParams(workers=min(DemoParams().workers, os.cpu_count() or 1))
    fields = {f.name: f for f in dataclasses.fields(defaults)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            mode = "--real" if real else "the simulator"
            raise ValueError(f"{pair!r}: want KEY=VALUE with KEY one of {', '.join(fields)} ({mode})")
        current = getattr(defaults, key)
        try:
            if isinstance(current, tuple):
                value: Any = tuple(x.strip() for x in text.split(",") if x.strip())
            elif isinstance(current, bool):
                value = text.lower() in ("1", "true", "yes")
            else:
                value = type(current)(text)
        except ValueError:
            raise ValueError(f"{key}: {text!r} is not a {type(current).__name__}") from None
        changes[key] = value
    params = dataclasses.replace(defaults, **changes)
    numbers = ["steady_s", "after_kill_s", "count_writes", "scenario_s", "bin_ms"]
    if not real:
        numbers.append("workers")
    for key in numbers:
        if getattr(params, key) <= 0:
            raise ValueError(f"{key} must be > 0")
    if params.lag_s < 0 or (not real and params.elections < 0):
        raise ValueError("elections and lag_s must be >= 0")
    if params.after_kill_s < 2 * WINDOW_S or params.scenario_s < 2 * WINDOW_S:
        raise ValueError(f"after_kill_s and scenario_s must be >= {2 * WINDOW_S:g}")
    unknown = [p for p in params.protocols if p not in registry.names()]
    if unknown or not params.protocols:
        raise ValueError(f"protocols: {unknown or '(none)'}; allowed: {', '.join(registry.names())}")
    if real and params.toxiproxy not in TOXIPROXY_CHOICES:
        raise ValueError(f"toxiproxy: {params.toxiproxy!r}; allowed: {', '.join(TOXIPROXY_CHOICES)}")
    if real and (not params.scenarios or set(params.scenarios) - set(SCENARIOS)):
        raise ValueError(f"scenarios: {params.scenarios or '(none)'}; allowed: {', '.join(SCENARIOS)}")
    return params


DEFAULT_OUT = "demo-out/consensus"
DEFAULT_OUT_REAL = "demo-out/consensus-real"


def _progress(console: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def main(out_dir: str | None = None, real: bool = False, params: Any = None) -> int:
    """The CLI's entry: run, print the table, write the files. Returns the exit status."""
    from rich.console import Console

    # the replicas log every snapshot at INFO: thousands of lines over a run
    logging.getLogger("exapyte").setLevel(logging.WARNING)
    console = Console(highlight=False, soft_wrap=True)
    if real:
        return _main_real(Path(out_dir or DEFAULT_OUT_REAL), params or params_from([], real=True),
                          console)
    params = params or params_from([])
    target = Path(out_dir or DEFAULT_OUT)
    jobs = plan_jobs(params)
    with _progress(console) as progress:
        task = progress.add_task("simulating", total=len(jobs))

        def done(job: Job) -> None:
            progress.update(task, advance=1, description=f"done: {job.label()}")

        results = run(params, on_done=done)
    console.print(table(results))
    for path in write_results(results, target):
        console.print(f"wrote {path}")
    return 0


def _main_real(target: Path, params: Any, console: Any) -> int:
    """``--real``: every protocol on real processes (:mod:`exapyte.demos.realworld`)."""
    import sys

    from exapyte.demos import realworld
    from exapyte.errors import ExapyteError
    from harness.db import DbError

    plan = realworld.steps(params)
    with _progress(console) as progress:
        task = progress.add_task("real processes", total=len(plan))
        started: list[tuple[str, str]] = []

        def on_step(protocol: str, step: str) -> None:
            if started:
                progress.update(task, advance=1)
            started.append((protocol, step))
            progress.update(task, description=f"{protocol}: {step}")

        try:
            results = realworld.run(params, target / "run", on_step=on_step,
                                    say=lambda text: progress.console.print(text))
        except realworld.RealUnavailable as exc:
            print(f"error: --real cannot run here: {exc}", file=sys.stderr)
            return 2
        except (ExapyteError, DbError) as exc:  # e.g. a cluster that did not form
            print(f"error: the real run failed: {exc}", file=sys.stderr)
            return 1
        progress.update(task, advance=1, description="done")
    results["topology"] = topology_summary(params.topology)
    console.print(table(results))
    console.print(f"note: {realworld.ELECTIONS_NOTE}")
    for path in write_results(results, target):
        console.print(f"wrote {path}")
    return 0


__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_OUT_REAL",
    "DOCUMENTED_COUNTS",
    "DemoParams",
    "Job",
    "main",
    "plan_jobs",
    "run",
    "scenario_links",
    "table",
    "topology_summary",
    "write_results",
]
