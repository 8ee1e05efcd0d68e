"""The runner: one frozen :class:`TestSpec` in, one run folder and a verdict out.

Theory of operation
-------------------
A run goes through fixed stages, each printed as it starts:

1. **setup**: the run folder ``STORE/<test-name>/<timestamp>/`` (and ``STORE/latest``), the
   topology plot, the cluster (:class:`~harness.db.ClusterDB`: processes, proxies, WAN latency;
   or with ``hosts="netns"`` a network namespace per node, checked to work here before anything
   else is done);
2. **main phase**: the generator (workload ops rate-limited for the clients, the fault schedule
   for the nemesis, all cut off after ``time_s``) is run by the **interpreter**, the only code
   that does IO: it asks the generator for an op, hands it to that process's worker thread,
   sleeps while the generator is pending, and feeds completions back. Each worker owns one
   :class:`~harness.client.HarnessClient`; every op is recorded as an ``invoke`` and exactly one
   completion; an ``info`` retires the process (the worker continues as ``process +
   concurrency`` on new sockets, in the same session: client id and session tokens), as in
   Jepsen;
3. **heal**: every active fault is stopped (recorded as nemesis events), every link made whole
   (WAN latency stays) and every node running; then a **quiet period** with no faults;
4. **final reads**: each workload reads back what it wrote, retried until one succeeds or the
   final deadline passes, so a cluster that never recovers fails the liveness check;
5. **teardown and check**: nodes stopped, logs kept in ``nodes/``; the checkers read
   ``history.jsonl`` (and ``status.jsonl``, each node's role and term sampled all through the
   run by :class:`~harness.monitor.StatusMonitor`, and the node logs) and write
   ``results.json``, the plots and ``report.html``.

With ``db="sim"`` (``--db sim``) stages 1-4 run in the deterministic simulator instead
(:mod:`harness.simdb`: the spec mapped onto a :class:`~exapyte.sim.world.SimSpec`, the same
product code on a simulated network and clock); stage 5 is :func:`finish_run`, the one "check
and report" half both kinds of run share: the same checkers on the same ``history.jsonl``, the
same ``results.json`` and ``report.html``.

Exit status: 0 valid, 1 invalid, 2 unknown (including a cluster that could not be set up).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from exapyte.control import topology as topo
from exapyte.wire import CONTROL_GROUP
from harness import generator as gen
from harness.client import HarnessClient, Outcome
from harness.db import CUT_MODES, ClusterDB, DbError, check_hosts, group_statuses
from harness.generator import NEMESIS, Completion, Context, Generator, Op, Pending
from harness.history import (
    Event,
    HistoryRecorder,
    nemesis_intervals,
    pair_ops,
    read_events,
)
from harness.monitor import StatusMonitor, read_samples
from harness.nemesis import FaultSchedule, Nemesis, parse_faults
from harness.workloads import WorkloadOptions, get_workload

__all__ = ["DBS", "DEFAULT_SHARDS", "DISTRIBUTIONS", "RunOutcome", "TestSpec", "check_run", "exit_status",
           "final_group_status", "finish_run", "make_run_dir", "resolve_topology", "run_test"]

PROGRESS_REFRESH_S = 0.25
REPLICATIONS = ("sync", "async", "optimized")  # replication.strategy (docs/replication.md)
DEFAULT_SHARDS = 8  # distribution.shards of a sharded or hierarchical run that names none
DISTRIBUTIONS: tuple[str, ...] = ("centralized", "sharded", "hierarchical")
#: Where a spec runs: ``real`` node processes behind proxies, or the deterministic simulator.
DBS: tuple[str, ...] = ("real", "sim")
OPS_PER_KEY_DEFAULT = 200
OPS_PER_KEY_MIN = 10
# With shards, ops per key are chosen for this many keys per shard, assuming this share of
# rate x time completes: each process waits for its op, and with WAN latency a write to a leader
# in another region takes 100-200 ms (0.15-0.2 seen on three-region; 0.6 on one region).
KEYS_PER_SHARD_TARGET = 3
EXPECTED_OPS_SHARE = 0.15
FINAL_READ_DEADLINE_S = 30.0
FINAL_REPLICA_ROUNDS = 5  # rounds of final reads on every node, while some key's replicas disagree
FINAL_REPLICA_PAUSE_S = 1.0
WORKER_JOIN_S = 10.0


@dataclass(frozen=True)
class TestSpec:
    """Everything that defines a run. Stored in ``results.json`` as ``options``."""

    __test__ = False  # not a pytest test class, despite the name

    topology: str
    workload: str = "register"
    nemesis: tuple[str, ...] = ()
    time_s: float = 60.0
    rate: float = 100.0
    concurrency: int = 5
    seed: int = 0
    bugs: tuple[str, ...] = ()
    store: str = "store"
    nemesis_interval_s: float = 5.0
    quiet_s: float = 5.0
    op_timeout_s: float = 2.0
    ops_per_key: int | None = None  # register: None is 200, or fewer with shards (resolved_ops_per_key)
    cut_mode: str | None = None  # None: the host mode's default (harness.db.CUT_MODES)
    checker_timeout_s: float = 60.0
    wan_latency: bool = True
    name: str | None = None
    final_read_s: float = 30.0  # how long the final reads are retried before liveness fails
    hosts: str = "local"  # "local": every node on 127.0.0.1 behind proxies; "netns": a namespace each
    protocol: str = "raft"  # consensus.protocol of every node (any name of exapyte.protocol.registry)
    distribution: str = "centralized"  # distribution.strategy: centralized | sharded | hierarchical
    shards: int | None = None  # distribution.shards (per region for hierarchical); None: 1 or DEFAULT_SHARDS
    replication_factor: int = 3  # distribution.replication_factor (sharded, hierarchical)
    replication: str | None = None  # replication.strategy (None: the topology's, else its default)
    # data_plane bounded_staleness bounds of every node (None: the topology's)
    staleness_versions_max: int | None = None
    staleness_ms_max: int | None = None
    db: str = "real"  # "real": node processes; "sim": the deterministic simulator (harness.simdb)

    def test_name(self) -> str:
        if self.name:
            return self.name
        parts = [self.workload, Path(self.topology).stem]
        if self.protocol != "raft":
            parts.append(self.protocol)
        if self.distribution != "centralized":
            parts.append(f"{self.distribution}{self.resolved_shards()}")
        if self.replication is not None:
            parts.append(self.replication)
        if self.nemesis:
            parts.append("+".join(self.nemesis))
        if self.bugs:
            parts.append("bugs=" + "+".join(self.bugs))
        if self.hosts != "local":
            parts.append(self.hosts)
        if self.db != "real":
            parts.append(self.db)
        return "-".join(parts)

    def resolved_cut_mode(self) -> str:
        return self.cut_mode or CUT_MODES[self.hosts][0]

    def resolved_ops_per_key(self, shard_count: int = 1) -> int:
        """``ops_per_key``, else 200 for one group; with ``shard_count`` shards, few enough that
        the run's expected ops cover :data:`KEYS_PER_SHARD_TARGET` keys of every shard."""
        if self.ops_per_key is not None:
            return self.ops_per_key
        if shard_count <= 1:
            return OPS_PER_KEY_DEFAULT
        expected = self.rate * self.time_s * EXPECTED_OPS_SHARE
        per_key = int(expected / (KEYS_PER_SHARD_TARGET * shard_count))
        return max(OPS_PER_KEY_MIN, min(OPS_PER_KEY_DEFAULT, per_key))

    def resolved_shards(self) -> int:
        """``shards``, else 1 for centralized and :data:`DEFAULT_SHARDS` otherwise."""
        if self.shards is not None:
            return self.shards
        return 1 if self.distribution == "centralized" else DEFAULT_SHARDS

    def config_overrides(self) -> dict[str, Any]:
        """The consensus and distribution sections every node's config gets."""
        distribution: dict[str, Any] = {"strategy": self.distribution, "shards": self.resolved_shards()}
        if self.distribution != "centralized":
            distribution["replication_factor"] = self.replication_factor
        out: dict[str, Any] = {"consensus": {"protocol": self.protocol}, "distribution": distribution}
        if self.replication is not None:
            out["replication"] = {"strategy": self.replication}
        data_plane = {k: v for k, v in (("staleness_versions_max", self.staleness_versions_max),
                                        ("staleness_ms_max", self.staleness_ms_max)) if v is not None}
        if data_plane:
            out["data_plane"] = data_plane
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"nemesis": list(self.nemesis), "bugs": list(self.bugs),
                                           "cut_mode": self.resolved_cut_mode(), "shards": self.resolved_shards()}


@dataclass
class RunOutcome:
    run_dir: Path
    valid: bool | str
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return exit_status(self.valid)


def exit_status(valid: bool | str) -> int:
    if valid is True:
        return 0
    if valid is False:
        return 1
    return 2


def resolve_topology(name_or_path: str) -> Path:
    """``three-region`` -> ``topologies/three-region.json``; a path is taken as is."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return path
    repo = Path(__file__).resolve().parents[1]
    candidate = repo / "topologies" / f"{name_or_path}.json"
    if not candidate.exists():
        known = sorted(p.stem for p in (repo / "topologies").glob("*.json"))
        raise ValueError(f"unknown topology {name_or_path!r}; known: {', '.join(known)} (or a path to a .json file)")
    return candidate


def make_run_dir(store: Path, test_name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    run_dir = store / test_name / stamp
    run_dir.mkdir(parents=True, exist_ok=False)
    latest = store / "latest"
    tmp = store / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path(test_name) / stamp)
    tmp.replace(latest)
    return run_dir


def build_generator(spec: TestSpec, graph: Any, groups: Mapping[str, Sequence[str]] | None = None,
                    shard_of: Callable[[str], str] | None = None) -> Generator:
    """The main phase: client ops at ``rate`` and the fault schedule, for ``time_s``. ``groups``
    (group -> voters) and ``shard_of`` describe the cluster's shards: the register workload
    spreads its keys over them and leader faults pick a group."""
    workload = get_workload(spec.workload)
    shards = tuple(sorted(groups)) if groups is not None and shard_of is not None else ()
    options = WorkloadOptions(seed=spec.seed, concurrency=spec.concurrency,
                              ops_per_key=spec.resolved_ops_per_key(max(1, len(shards))),
                              shards=shards, shard_of=shard_of)
    client_gen = gen.clients(gen.rate_limit(spec.rate, workload.build(options), seed=spec.seed + 1))
    parts = [client_gen]
    if spec.nemesis:
        parts.append(gen.nemesis(FaultSchedule(
            graph, spec.nemesis, int(spec.nemesis_interval_s * 1e9), gen.Rand.seeded(spec.seed + 2),
            groups=dict(groups) if groups is not None else None,
        )))
    return gen.time_limit(spec.time_s, gen.any_of(*parts))


def check_cluster_options(spec: TestSpec) -> None:
    """Refuse, before anything starts, a protocol or distribution the nodes would refuse."""
    from exapyte.protocol import registry

    if spec.protocol not in registry.names():
        raise ValueError(f"unknown protocol {spec.protocol!r}; allowed: {', '.join(registry.names())}")
    if spec.replication is not None and spec.replication not in REPLICATIONS:
        raise ValueError(f"unknown replication strategy {spec.replication!r}; allowed: {', '.join(REPLICATIONS)}")
    if spec.distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {spec.distribution!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    if spec.shards is not None and spec.shards < 1:
        raise ValueError(f"shards must be at least 1, got {spec.shards}")
    if spec.distribution == "centralized" and spec.resolved_shards() != 1:
        raise ValueError(f"{spec.shards} shards need --distribution sharded or hierarchical; centralized has 1")
    if spec.replication_factor < 1:
        raise ValueError(f"replication factor must be at least 1, got {spec.replication_factor}")


# --- workers and the interpreter ---------------------------------------------------------------


@dataclass
class _Done:
    process: int | str
    next_process: int | str
    op: Op
    outcome: Outcome
    time_ns: int


class _ClientWorker(threading.Thread):
    def __init__(self, index: int, concurrency: int, client: HarnessClient, recorder: HistoryRecorder,
                 done: queue.Queue[_Done], consistency: str) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.process = index
        self.concurrency = concurrency
        self.client = client
        self.recorder = recorder
        self.done = done
        self.consistency = consistency
        self.inbox: queue.Queue[Op | None] = queue.Queue()

    def run(self) -> None:
        while True:
            op = self.inbox.get()
            if op is None:
                self.client.close()
                return
            process = self.process
            group = self.client.group_of(op.key) if op.key is not None else None
            level = op.consistency or self.consistency
            self.recorder.record("invoke", process, op.f, op.key, None if op.f.startswith("read") else op.value,
                                 consistency=level, session=self.client.session, group=group)
            outcome = self.client.invoke(op)
            event = self.recorder.record(
                outcome.type, process, op.f, op.key,
                outcome.value if outcome.type == "ok" else (None if op.f.startswith("read") else op.value),
                node=outcome.node, consistency=level, session=self.client.session, error=outcome.error,
                group=outcome.group or group, index=outcome.index, replica=outcome.replica,
            )
            if outcome.type == "info":
                self.process += self.concurrency
                self.client.reconnect()
            self.done.put(_Done(process, self.process, op, outcome, int(event.time or 0)))


class _NemesisWorker(threading.Thread):
    def __init__(self, nemesis: Nemesis, recorder: HistoryRecorder, done: queue.Queue[_Done]) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.nemesis = nemesis
        self.recorder = recorder
        self.done = done
        self.inbox: queue.Queue[Op | None] = queue.Queue()

    def run(self) -> None:
        while True:
            op = self.inbox.get()
            if op is None:
                return
            self.recorder.record("invoke", NEMESIS, op.f, None, op.value, consistency="")
            try:
                kind, value = self.nemesis.invoke(op)
                outcome = Outcome(kind, value)
            except Exception as exc:  # noqa: BLE001 - a failed fault is recorded, the run goes on
                outcome = Outcome("info", op.value, error=f"{type(exc).__name__}: {exc}")
            event = self.recorder.record(outcome.type, NEMESIS, op.f, None, outcome.value, consistency="",
                                         error=outcome.error)
            self.done.put(_Done(NEMESIS, NEMESIS, op, outcome, int(event.time or 0)))


class Progress:
    """Live terminal status: stage, elapsed, ops/s, ok/fail/info, active faults."""

    def __init__(self, console: Console, spec: TestSpec, recorder: HistoryRecorder, nemesis: Nemesis | None) -> None:
        self.console = console
        self.spec = spec
        self.recorder = recorder
        self.nemesis = nemesis
        self.stage = "main"
        self._recent: deque[tuple[float, int]] = deque(maxlen=64)
        self._live: Live | None = None
        self._last = 0.0

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self._live = Live(self.render(), console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.__exit__(None, None, None)
            self._live = None

    def render(self) -> Table:
        counts = self.recorder.counts
        done = counts["ok"] + counts["fail"] + counts["info"]
        now = time.monotonic()
        self._recent.append((now, done))
        old_t, old_n = self._recent[0]
        rate = (done - old_n) / (now - old_t) if now - old_t > 0.2 else 0.0
        elapsed = self.recorder.now_ns() / 1e9
        table = Table(box=None, show_header=False, pad_edge=False)
        faults = ", ".join(self.nemesis.describe_active()) if self.nemesis is not None else ""
        table.add_row(
            f"[bold]{self.stage}[/]", f"{elapsed:6.1f}s / {self.spec.time_s:g}s",
            f"{rate:7.1f} ops/s", f"[green]ok {counts['ok']}[/]", f"[yellow]fail {counts['fail']}[/]",
            f"[red]info {counts['info']}[/]", f"faults: [magenta]{faults or 'none'}[/]",
        )
        return table

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_REFRESH_S:
            return
        self._last = now
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
        elif force or int(now) % 5 == 0 and now - getattr(self, "_printed", 0) > 4.5:
            self._printed = now
            counts = self.recorder.counts
            self.console.print(
                f"{self.stage}: {self.recorder.now_ns() / 1e9:.1f}s ok={counts['ok']} fail={counts['fail']} "
                f"info={counts['info']} faults={', '.join(self.nemesis.describe_active()) if self.nemesis else 'none'}"
            )


class Interpreter:
    """Runs a generator against worker threads. The only place where generators meet IO."""

    def __init__(self, workers: list[_ClientWorker], nemesis_worker: _NemesisWorker | None,
                 recorder: HistoryRecorder, done: queue.Queue[_Done], progress: Progress,
                 stop: threading.Event) -> None:
        self.workers = workers
        self.nemesis_worker = nemesis_worker
        self.recorder = recorder
        self.done = done
        self.progress = progress
        self.stop = stop
        self.concurrency = len(workers)
        self.processes: set[int | str] = {w.process for w in workers}
        if nemesis_worker is not None:
            self.processes.add(NEMESIS)
        self.free: set[int | str] = set(self.processes)
        self.cursor = 0  # round-robin over the client threads (Context.some_free)

    def _ctx(self) -> Context:
        return Context(self.recorder.now_ns(), frozenset(self.free), frozenset(self.processes), self.concurrency,
                       self.cursor)

    def _complete(self, item: _Done, generator: Generator) -> Generator:
        ctx = self._ctx()
        generator = generator.update(ctx, Completion(item.process, item.outcome.type, item.op, item.time_ns, item.outcome.value))
        if item.next_process != item.process:
            self.processes.discard(item.process)
            self.processes.add(item.next_process)
        self.free.add(item.next_process)
        return generator

    def _wait(self, generator: Generator, timeout_s: float) -> Generator:
        try:
            item = self.done.get(timeout=max(0.0, min(timeout_s, PROGRESS_REFRESH_S)))
        except queue.Empty:
            return generator
        return self._complete(item, generator)

    def run(self, generator: Generator) -> None:
        while True:
            while True:
                try:
                    item = self.done.get_nowait()
                except queue.Empty:
                    break
                generator = self._complete(item, generator)
            self.progress.tick()
            if self.stop.is_set():
                break
            ctx = self._ctx()
            result, generator = generator.op(ctx)
            if result is None:
                if self.free == self.processes:
                    return
                generator = self._wait(generator, PROGRESS_REFRESH_S)
                continue
            if isinstance(result, Pending):
                wait_s = PROGRESS_REFRESH_S if result.until_ns is None else (result.until_ns - ctx.time_ns) / 1e9
                if wait_s > 0:
                    generator = self._wait(generator, wait_s)
                continue
            self.dispatch(result)
        self.drain()

    def dispatch(self, op: Op) -> None:
        assert op.process in self.free, f"generator chose busy process {op.process}"
        self.free.discard(op.process)
        if isinstance(op.process, int):
            self.cursor = (op.process + 1) % self.concurrency
        if op.process == NEMESIS:
            assert self.nemesis_worker is not None
            self.nemesis_worker.inbox.put(op)
        else:
            assert isinstance(op.process, int)
            self.workers[op.process % self.concurrency].inbox.put(op)

    def drain(self, timeout_s: float | None = None) -> None:
        """Wait for every outstanding op to complete."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.free != self.processes:
            if deadline is not None and time.monotonic() > deadline:
                return
            try:
                item = self.done.get(timeout=PROGRESS_REFRESH_S)
            except queue.Empty:
                self.progress.tick()
                continue
            self._complete(item, gen.seq())
            self.progress.tick()


# --- the run -----------------------------------------------------------------------------------


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("harness.toxiproxy")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return handler


def run_test(spec: TestSpec, console: Console | None = None, stop: threading.Event | None = None) -> RunOutcome:
    """Run the test ``spec`` describes; returns where it went and the verdict."""
    console = console or Console()
    if spec.db not in DBS:
        raise ValueError(f"unknown db {spec.db!r}; allowed: {', '.join(DBS)}")
    if spec.db == "sim":
        from harness.simdb import run_sim_test

        return run_sim_test(spec, console)
    stop = stop or threading.Event()
    faults = parse_faults(list(spec.nemesis))
    workload = get_workload(spec.workload)
    topology_path = resolve_topology(spec.topology)
    graph = topo.load(topology_path)
    check_hosts(spec.hosts, faults, spec.cut_mode)
    check_cluster_options(spec)
    store = Path(spec.store)
    run_dir = make_run_dir(store, spec.test_name())
    console.print(f"[bold]exapyte test[/] {spec.test_name()}  seed={spec.seed}  run: {run_dir}")
    console.print(f"  protocol {spec.protocol}, distribution {spec.distribution}"
                  + (f", {spec.resolved_shards()} shards{' per region' if spec.distribution == 'hierarchical' else ''},"
                     f" replication factor {spec.replication_factor}" if spec.distribution != "centralized" else ""))
    topo.draw(graph, run_dir / "topology.png", title=f"{topology_path.stem}: {graph.number_of_nodes()} nodes")
    handler = _log_to(run_dir / "toxiproxy.log")
    started_wall = datetime.now(timezone.utc).isoformat()
    db = ClusterDB(topology_path, run_dir, bugs=spec.bugs, unsafe=bool(spec.bugs) or "clock" in faults,
                   wan_latency=spec.wan_latency, seed=spec.seed, log=lambda text: console.print(f"  db: {text}"),
                   hosts=spec.hosts, overrides=spec.config_overrides())
    recorder: HistoryRecorder | None = None
    origin_unix: float | None = None
    monitor: StatusMonitor | None = None
    notes: list[str] = []
    final_start_ns = None
    cluster_info: dict[str, Any] = {}
    try:
        console.print("[bold]setup[/]: " + ("starting nodes behind per-link proxies ..." if spec.hosts == "local"
                                            else "starting nodes, each in its own network namespace ..."))
        try:
            db.setup()
        except (DbError, OSError) as exc:
            notes.extend(db.notes)
            notes.append(f"setup failed: {exc}")
            console.print(f"[red]setup failed[/]: {exc}")
            (run_dir / "history.jsonl").touch()
            return finish_run(spec, run_dir, topology_path, graph, None, notes, started_wall, console, setup_failed=True,
                           cluster=_cluster_info(spec, db))
        notes.extend(db.notes)
        groups = db.groups()
        router = db.router()
        shard_of = router.strategy.shard_of if router is not None else None
        cluster_info = _cluster_info(spec, db)
        # Time 0 of the history is when the cluster is up and the first op may go out.
        recorder = HistoryRecorder(run_dir / "history.jsonl")
        origin_unix = time.time() - recorder.now_ns() / 1e9
        nemesis = Nemesis(db, cut_mode=spec.resolved_cut_mode(), log=lambda text: None)
        done: queue.Queue[_Done] = queue.Queue()
        endpoints = db.endpoints()
        credentials = db.credentials()
        workers = [
            _ClientWorker(i, spec.concurrency,
                          HarnessClient(endpoints, timeout_s=spec.op_timeout_s, home=db.node_ids[i % len(db.node_ids)],
                                        credentials=credentials, router_factory=db.router),
                          recorder, done, "strong")
            for i in range(spec.concurrency)
        ]
        nemesis_worker = _NemesisWorker(nemesis, recorder, done) if faults else None
        for w in workers:
            w.start()
        if nemesis_worker is not None:
            nemesis_worker.start()
        monitor = StatusMonitor(endpoints, run_dir / "status.jsonl", recorder.now_ns,
                                credentials=credentials).start()
        progress = Progress(console, spec, recorder, nemesis)
        interpreter = Interpreter(workers, nemesis_worker, recorder, done, progress, stop)
        with progress:
            try:
                interpreter.run(build_generator(spec, graph, groups, shard_of))
            except KeyboardInterrupt:
                stop.set()
                notes.append("interrupted (Ctrl-C) during the main phase")
                interpreter.drain(timeout_s=spec.op_timeout_s * 3)
            progress.stage = "heal"
            progress.tick(force=True)
            _heal(nemesis, db, recorder, notes)
            progress.stage = "quiet"
            quiet_end = time.monotonic() + spec.quiet_s
            while time.monotonic() < quiet_end:
                time.sleep(min(PROGRESS_REFRESH_S, max(0.0, quiet_end - time.monotonic())))
                progress.tick()
            progress.stage = "final reads"
            progress.tick(force=True)
            final_start_ns = recorder.now_ns()
            keys = {e.key for e in read_events(recorder.path) if e.process != NEMESIS}
            _final_reads(workload.final_ops(keys), interpreter, progress, spec.final_read_s)
            if workload.final_replicas:
                _final_replica_reads(workload.final_ops(keys), db.node_ids, interpreter, progress)
            cluster_info["final_status"] = final_group_status(db.statuses(), groups)
            for w in workers:
                w.inbox.put(None)
            if nemesis_worker is not None:
                nemesis_worker.inbox.put(None)
            for w in workers:
                w.join(WORKER_JOIN_S)
            monitor.stop()
    finally:
        if monitor is not None:
            monitor.stop()
        if recorder is not None:
            recorder.close()
        console.print("[bold]teardown[/]: stopping nodes")
        try:
            db.teardown()
        finally:
            logging.getLogger("harness.toxiproxy").removeHandler(handler)
            handler.close()
    return finish_run(spec, run_dir, topology_path, graph, final_start_ns, notes, started_wall, console,
                      origin_unix=origin_unix, cluster=cluster_info)


def _cluster_info(spec: TestSpec, db: ClusterDB) -> dict[str, Any]:
    """What the report shows of the cluster's shape: protocol, distribution, shards, placement."""
    info: dict[str, Any] = {"protocol": spec.protocol, "distribution": spec.distribution,
                            "shards": spec.resolved_shards(), "replication_factor": spec.replication_factor}
    try:
        info["replication"] = db.config().replication_strategy
    except DbError:
        pass
    try:
        groups = db.groups()
    except DbError:
        return info  # the configs were refused: nothing placed
    sizes = sorted({len(v) for v in groups.values()})
    dp = db.config().data_plane
    info["staleness"] = {"versions": dp.staleness_versions_max, "ms": dp.staleness_ms_max,
                         "clock_skew_ms": dp.clock_skew_ms_max}
    return info | {"groups": len(groups), "placement": {g: list(v) for g, v in groups.items()},
                   "voters_per_group": sizes[0] if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}",
                   "ops_per_key": spec.resolved_ops_per_key(len(groups) if len(groups) > 1 else 1)}


def final_group_status(statuses: Mapping[str, dict[str, Any] | None],
                       groups: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """From each node's status at the end of a run: every group's leader (a node that says it
    leads it; the highest term wins) and term, how many groups each node leads, the groups
    without a leader, and the nodes that did not answer (the control plane's group apart: its
    leader as ``control_leader``)."""
    best: dict[str, tuple[int, str]] = {}
    for node, status in sorted(statuses.items()):
        for group, st in group_statuses(status).items():
            term = st.get("term")
            if st.get("role") == "leader" and isinstance(term, int) and (group not in best or term > best[group][0]):
                best[group] = (term, node)
    control = best.pop(CONTROL_GROUP, None)  # the control plane's group, placed by the config
    leaders_per_node = {n: 0 for n in sorted(statuses)}
    for _, node in best.values():
        leaders_per_node[node] = leaders_per_node.get(node, 0) + 1
    return {
        "groups": {g: {"leader": best[g][1] if g in best else None, "term": best[g][0] if g in best else None,
                       "voters": list(groups.get(g, ()))} for g in sorted(set(groups) | set(best))},
        "leaders_per_node": leaders_per_node,
        "without_leader": sorted(g for g in groups if g not in best),
        "unanswered": sorted(n for n, st in statuses.items() if st is None),
        **({"control_leader": control[1]} if control is not None else {}),
    }


def _heal(nemesis: Nemesis, db: ClusterDB, recorder: HistoryRecorder, notes: list[str]) -> None:
    for family in list(nemesis.active):
        fault = nemesis.active.get(family)
        recorder.record("invoke", NEMESIS, f"stop-{family}", None, fault, consistency="")
        error = None
        try:
            nemesis.stop(family)
        except Exception as exc:  # noqa: BLE001
            error = f"{type(exc).__name__}: {exc}"
        recorder.record("info", NEMESIS, f"stop-{family}", None, fault, consistency="", error=error)
    recorder.record("invoke", NEMESIS, "heal", None, None, consistency="")
    error = None
    applied = None
    try:
        db.heal_all()
        applied = {"applied": db.applied_cuts()}  # what is left: nothing
    except Exception as exc:  # noqa: BLE001 - recorded; the final reads will show the damage
        error = f"{type(exc).__name__}: {exc}"
        notes.append(f"heal: {error}")
    recorder.record("info", NEMESIS, "heal", None, applied, consistency="", error=error)


def _final_reads(ops: list[Op], interpreter: Interpreter, progress: Progress,
                 deadline_s: float = FINAL_READ_DEADLINE_S) -> None:
    """Each final read, retried on the first worker until it succeeds or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    worker = interpreter.workers[0]
    for template in ops:
        while time.monotonic() < deadline:
            process = worker.process
            interpreter.dispatch(dataclasses.replace(template, process=process))
            item = interpreter.done.get()
            interpreter._complete(item, gen.seq())
            progress.tick()
            if item.outcome.type == "ok":
                break
            time.sleep(0.2)


def _final_replica_reads(ops: list[Op], nodes: Sequence[str], interpreter: Interpreter, progress: Progress) -> None:
    """Each final read again at ``eventual`` on every node (each node answers from its own
    state), so the convergence checker sees every replica. A round in which some key's replicas
    disagree (or a read failed) is repeated, up to :data:`FINAL_REPLICA_ROUNDS` rounds
    :data:`FINAL_REPLICA_PAUSE_S` apart: the checker judges each replica's last read, and
    reports how long convergence took."""
    worker = interpreter.workers[0]
    for round_ in range(FINAL_REPLICA_ROUNDS):
        if round_:
            time.sleep(FINAL_REPLICA_PAUSE_S)
        agreed = True
        for template in ops:
            values = set()
            for node in nodes:
                interpreter.dispatch(dataclasses.replace(template, process=worker.process, consistency="eventual",
                                                         node=node))
                item = interpreter.done.get()
                interpreter._complete(item, gen.seq())
                progress.tick()
                if item.outcome.type != "ok":
                    agreed = False
                values.add(json.dumps(item.outcome.value, sort_keys=True, default=str))
            agreed = agreed and len(values) == 1
        if agreed:
            return


# --- checking and results ----------------------------------------------------------------------


def check_levels(events: Sequence[Event | Mapping[str, Any]], final_start_ns: int | None, *,
                 staleness_versions: int | None, staleness_ms: float | None,
                 linearizability: bool, checker_timeout_s: float = 60.0) -> Any:
    """The per-level checkers (:func:`harness.checker.levels.check_level`) on a run's history,
    each op judged at the level it requested, as a verdict: its evidence is the report
    (``to_dict()``: the requested-vs-delivered table, the violations with the ops that show
    them), plus the staleness served per requested level and the Markdown table."""
    from harness.checker.invariants import Verdict
    from harness.checker.level_history import level_history
    from harness.checker.levels import check_level
    from harness.checker.staleness import StalenessReport

    history = level_history(events)
    report = check_level(history, None, staleness_versions=staleness_versions, staleness_ms=staleness_ms,
                         final_start_ns=final_start_ns, linearizability_timeout_s=checker_timeout_s,
                         linearizability=linearizability)
    evidence = report.to_dict()
    by_level: dict[str, list[Any]] = {}
    for served in report.staleness.reads:
        by_level.setdefault(history.op(served.read).level, []).append(served)
    evidence["staleness_by_level"] = {
        level: StalenessReport(reads, [], [], staleness_versions, staleness_ms).distribution()
        for level, reads in sorted(by_level.items())
    }
    evidence["counterexample"] = [
        {"check": v.check, "level": v.level, "cause": v.cause,
         "ops": [_describe(history.op(i)) for i in v.ops]}
        for v in _one_of_each_check_first(report.violations, COUNTEREXAMPLES_MAX)
    ] if report.valid is False else []
    evidence["markdown"] = report.markdown()
    return Verdict("levels", report.valid, report.cause, evidence)


COUNTEREXAMPLES_MAX = 5  # violations a level verdict shows with their operations


def _one_of_each_check_first(violations: Sequence[Any], limit: int) -> list[Any]:
    """Up to ``limit`` violations in their order, the first of each check before any second
    one: a bug that breaks several guarantees shows each of them, not five of the commonest."""
    firsts: list[Any] = []
    rest: list[Any] = []
    checks: set[str] = set()
    for v in violations:
        (rest if v.check in checks else firsts).append(v)
        checks.add(v.check)
    return (firsts + rest)[:limit]


def _describe(op: Any) -> str:
    """A level op as a counterexample line: what, the level asked for, when (ms)."""
    ret = "?" if op.ret is None else f"{op.ret / 1e6:.1f}"
    return f"{op.describe()} asked {op.level}, {op.call / 1e6:.1f}-{ret} ms"


def check_run(run_dir: Path, workload_name: str, final_start_ns: int | None, checker_timeout_s: float = 60.0,
              origin_unix: float | None = None, staleness: Mapping[str, Any] | None = None,
              extra_verdicts: Sequence[Any] = ()) -> dict[str, Any]:
    """Run every checker of the workload on ``run_dir/history.jsonl``, and the crash checker on
    the node logs in ``run_dir/nodes/``; returns the results part. ``origin_unix`` is the wall
    time of the history's time 0 (places crashes on the time line). ``staleness`` holds the
    cluster's ``bounded_staleness`` bounds (``versions``: K, ``ms``: T) for the level checker.
    ``extra_verdicts`` are verdicts reached elsewhere that count as well (a simulated run's
    invariant judges, which ran after every step)."""
    from harness.checker.invariants import (
        check_bank,
        check_counter,
        check_crashes,
        check_election_safety,
        check_linearizable,
        check_lost_writes,
        check_set,
        compose,
        run_checker,
    )
    from harness.checker.stats import check_stats

    workload = get_workload(workload_name)
    events = read_events(run_dir / "history.jsonl")
    ops = pair_ops(events)
    end_ns = max((int(e.time or 0) for e in events), default=0)
    intervals = nemesis_intervals(events, end_ns)
    final_ns = final_start_ns if final_start_ns is not None else end_ns + 1
    verdicts = []
    for name in workload.checkers:
        if name == "linearizable":
            assert workload.model is not None
            verdicts.append(run_checker(name, lambda: check_linearizable(
                ops, workload.model or "", timeout_s=checker_timeout_s, html_path=run_dir / "linearizability.html")[0]))
        elif name == "lost-writes":
            verdicts.append(run_checker(name, lambda: check_lost_writes(ops, final_ns)))
        elif name == "set":
            verdicts.append(run_checker(name, lambda: check_set(ops, final_ns)))
        elif name == "counter":
            verdicts.append(run_checker(name, lambda: check_counter(ops, final_ns)))
        elif name == "bank":
            verdicts.append(run_checker(name, lambda: check_bank(ops, final_ns)))
        elif name == "levels":
            bounds = dict(staleness or {})
            verdicts.append(run_checker(name, lambda: check_levels(
                events, final_start_ns, staleness_versions=bounds.get("versions"), staleness_ms=bounds.get("ms"),
                linearizability="linearizable" not in workload.checkers, checker_timeout_s=checker_timeout_s)))
        else:
            raise ValueError(f"unknown checker {name!r}")
    verdicts.append(run_checker("availability", lambda: check_stats(ops, final_ns, intervals)))
    if (run_dir / "status.jsonl").exists():
        samples = read_samples(run_dir / "status.jsonl")
        verdicts.append(run_checker("election-safety", lambda: check_election_safety(samples)))
    if (run_dir / "nodes").is_dir():  # a history checked on its own has no node logs
        logs = {p.stem: p.read_text(encoding="utf-8", errors="replace")
                for p in sorted((run_dir / "nodes").glob("*.log"))}
        verdicts.append(run_checker("crashes", lambda: check_crashes(logs, origin_unix)))
    verdicts.extend(extra_verdicts)
    return {
        "valid": compose(verdicts),
        "checkers": {v.checker: v.to_dict() for v in verdicts},
        "faults": [
            {k: v for k, v in i.items() if k != "value"} | {"description": _fault_description(i)}
            | ({"applied": i["value"]["applied"]} if "applied" in (i.get("value") or {}) else {})
            for i in intervals
        ],
        "ops": len(ops),
        "counts": {t: sum(op.type == t for op in ops) for t in ("ok", "fail", "info")},
        "final_start_ns": final_start_ns,
        "end_ns": end_ns,
        "origin_unix": origin_unix,
    }


def _fault_description(interval: Mapping[str, Any]) -> str | None:
    """A fault interval's description: the nemesis's own, else (a simulated fault, whose value
    is the simulator's fault record) its kind, node, shape and links."""
    value = interval.get("value") or {}
    if not isinstance(value, Mapping):
        return None
    if value.get("description"):
        return str(value["description"])
    if "kind" not in value:
        return None
    words = [str(value["kind"])]
    if value.get("action"):
        words.append(str(value["action"]))
    if value.get("node"):
        words.append(str(value["node"]))
    if value.get("shape"):
        words.append(f"{value['shape']} ({len(value.get('links') or ())} links cut)")
    if value.get("rate"):
        words.append(f"rate {value['rate']:g}")
    return " ".join(words)


def finish_run(spec: TestSpec, run_dir: Path, topology_path: Path, graph: Any, final_start_ns: int | None,
               notes: list[str], started_wall: str, console: Console, *, setup_failed: bool = False,
               origin_unix: float | None = None, cluster: dict[str, Any] | None = None,
               extra_verdicts: Sequence[Any] = (), extra_results: Mapping[str, Any] | None = None) -> RunOutcome:
    """The "check and report" half of every run, real or simulated: the checkers on
    ``run_dir/history.jsonl`` (:func:`check_run`, plus ``extra_verdicts``), then
    ``results.json`` (with ``extra_results`` merged in, e.g. the simulator's replay command),
    the plots, ``report.html`` and the console summary."""
    from harness import plots, report

    results: dict[str, Any] = {
        "test": spec.test_name(),
        "db": spec.db,
        "started": started_wall,
        "finished": datetime.now(timezone.utc).isoformat(),
        "seed": spec.seed,
        "options": spec.to_dict() | {"topology_file": str(topology_path)},
        "topology": topo.describe(graph),
        "cluster": cluster or {},
        "notes": notes,
        **dict(extra_results or {}),
    }
    if setup_failed:
        results |= {"valid": "unknown", "checkers": {}, "faults": [], "ops": 0,
                    "counts": {"ok": 0, "fail": 0, "info": 0}, "final_start_ns": None, "end_ns": 0}
        crashes = _setup_crashes(run_dir)
        if crashes is not None and crashes.valid is False:
            # A node that died on a broken invariant while the cluster formed is a finding,
            # not an environment problem.
            results |= {"valid": False, "checkers": {crashes.checker: crashes.to_dict()}}
    else:
        console.print("[bold]check[/]: running the checkers ...")
        results |= check_run(run_dir, spec.workload, final_start_ns, spec.checker_timeout_s, origin_unix,
                             staleness=(cluster or {}).get("staleness"), extra_verdicts=extra_verdicts)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if not setup_failed:
        plots.write_plots(run_dir, results)
    report.write_report(run_dir, results)
    _print_summary(console, results, run_dir)
    return RunOutcome(run_dir, results["valid"], results)


def _setup_crashes(run_dir: Path) -> Any:
    """The crash checker over the node logs of a run whose setup failed (None without logs)."""
    from harness.checker.invariants import check_crashes, run_checker

    if not (run_dir / "nodes").is_dir():
        return None
    logs = {p.stem: p.read_text(encoding="utf-8", errors="replace")
            for p in sorted((run_dir / "nodes").glob("*.log"))}
    return run_checker("crashes", lambda: check_crashes(logs, None))


def _print_summary(console: Console, results: dict[str, Any], run_dir: Path) -> None:
    table = Table(title=f"{results['test']} (seed {results['seed']})")
    table.add_column("checker")
    table.add_column("verdict")
    table.add_column("cause / evidence", overflow="fold")
    for name, verdict in results["checkers"].items():
        valid = verdict["valid"]
        shown = "[green]valid[/]" if valid is True else "[red]INVALID[/]" if valid is False else "[yellow]unknown[/]"
        table.add_row(name, shown, verdict.get("cause") or "")
    console.print(table)
    counts = results["counts"]
    console.print(f"ops: {results['ops']} (ok {counts['ok']}, fail {counts['fail']}, info {counts['info']}); "
                  f"faults: {len(results['faults'])}")
    for line in cluster_lines(results.get("cluster") or {}):
        console.print(line)
    for note in results.get("notes", []):
        console.print(f"[yellow]note[/]: {note}")
    simulator = results.get("simulator")
    if simulator:
        console.print(f"ran in the simulator (trace {simulator['trace_hash']}); replay: {simulator['replay']}")
    valid = results["valid"]
    word = "VALID" if valid is True else "INVALID" if valid is False else "UNKNOWN"
    colour = "green" if valid is True else "red" if valid is False else "yellow"
    console.print(f"[bold {colour}]{word}[/]  report: {run_dir / 'report.html'}")



def cluster_lines(cluster: dict[str, Any]) -> list[str]:
    """The cluster's shape and its final leaders, as the summary prints them."""
    if not cluster:
        return []
    shape = f"cluster: {cluster.get('protocol')}, {cluster.get('distribution')}"
    if cluster.get("distribution") != "centralized":
        shape += (f", {cluster.get('shards')} shards{' per region' if cluster.get('distribution') == 'hierarchical' else ''}"
                  f" ({cluster.get('groups', '?')} groups, replication factor {cluster.get('replication_factor')}:"
                  f" {cluster.get('voters_per_group', '?')} voters per group)")
    lines = [shape]
    final = cluster.get("final_status")
    if final:
        counts = ", ".join(f"{n} {k}" for n, k in final["leaders_per_node"].items())
        lines.append(f"final leaders per node: {counts}"
                     + (f"; without a leader: {', '.join(final['without_leader'])}" if final["without_leader"] else ""))
    return lines
