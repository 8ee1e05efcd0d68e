"""Running seeds, judging them, replaying and shrinking failures.

Theory of operation
-------------------
:func:`run_seed` runs one :class:`~exapyte.sim.world.SimSpec` to the end and judges it. The first
failure decides the verdict, in this order: an invariant broken during the run (the run stops at
that step), an unexpected exception in the code under test, a lost acknowledged write, a move
that promoted a learner before it caught up (``rebalance``), a broken routing promise seen by a
client (``routing``: a request served at another configuration version than it was routed by,
or routed by an older descriptor than the client had been given), a read a
node held without answering, a read only the replica's own deadline refused (no answer or
failure from the core reached its client), a final read that did not succeed or replicas that
did not converge (all liveness; ``divergence`` when they all applied the group's commit and
their states still differ), a history whose strong part is not linearizable, and (with mixed
levels) a broken per-level guarantee (``levels``: the harness's level checkers). Every verdict carries
the trace hash, so "same seed, same run" can be checked.

:func:`shrink` takes a failing spec and looks for a smaller one that fails with the **same
check**, keeping the seed: first a shorter operation budget (halving, then trimming), then fewer
faults (dropping halves, then single faults of the planned schedule, through ``keep_faults``).
Each candidate is a complete re-run, so a shrunk case is a real, replayable failure.

:func:`run_seeds` runs many seeds, optionally in worker processes (each seed is independent and
deterministic, so the results do not depend on how they were spread).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from exapyte.errors import InvariantViolation
from exapyte.sim.faults import ALL_FAULT_KINDS
from exapyte.sim.judge import check_levels, check_linearizable, invariant_name
from exapyte.sim.scheduler import NS_PER_S
from exapyte.sim.world import STALENESS_MS_MAX, STALENESS_VERSIONS_MAX, SimSpec, World

SHRINK_RUNS_MAX = 60  # re-runs one shrink may spend


@dataclass
class SimResult:
    spec: SimSpec
    ok: bool
    check: str  # "" when ok; else e.g. "invariant:election safety", "linearizability", ...
    detail: str
    trace_hash: str
    sim_ns: int
    wall_s: float
    ops: int
    faults: int
    linearizable: Any = True  # True, False, "unknown" or None (not checked)
    levels: Any = None  # the per-level checkers: True, False, "unknown" or None (not checked)
    # The per-level checkers' cause and every violation they found, as (check, cause): judged
    # also when an earlier check decided the verdict (not after an invariant or an exception,
    # which stop the run midway), so a level finding behind a lost write is still seen.
    levels_detail: str = ""
    level_violations: tuple[tuple[str, str], ...] = ()
    counters: dict[str, int] = field(default_factory=dict)
    history_jsonl: str = ""
    final_reads_ns: int | None = None  # when the final reads began (simulated ns)
    groups: dict[str, list[str]] = field(default_factory=dict)  # the placement: group -> voters
    final_status: dict[str, Any] = field(default_factory=dict)  # World.final_status() at the end

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else f"FAIL({self.check})"

    def summary_line(self) -> str:
        return f"seed={self.spec.seed} trace_hash={self.trace_hash} verdict={self.verdict}"

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.spec.seed,
            "ok": self.ok,
            "verdict": self.verdict,
            "check": self.check,
            "detail": self.detail,
            "trace_hash": self.trace_hash,
            "sim_s": self.sim_ns / NS_PER_S,
            "wall_s": round(self.wall_s, 4),
            "ops": self.ops,
            "faults": self.faults,
            "linearizable": self.linearizable,
            "levels": self.levels,
            "level_violations": dict(Counter(name for name, _ in self.level_violations)),
            "counters": self.counters,
            "replay": self.spec.replay_command(),
        }


def run_seed(spec: SimSpec, *, keep_history: bool = False) -> SimResult:
    """Run and judge one spec."""
    started = time.perf_counter()
    world = World(spec)
    check = ""
    detail = ""
    try:
        world.run()
    except InvariantViolation as exc:
        check = f"invariant:{invariant_name(str(exc))}"
        detail = str(exc)
    except Exception as exc:  # noqa: BLE001 - the code under test crashed: a finding, reported
        check = "exception"
        detail = f"{type(exc).__name__}: {exc}"
    linearizable: Any = None
    levels: Any = None
    jsonl = world.history.to_jsonl()
    if not check:
        lost = world.lost_writes()
        if lost:
            check = "lost-write"
            detail = f"{len(lost)} acknowledged write(s) lost: " + "; ".join(lost[:3])
    if not check and world.moves.violations:
        check = "rebalance"
        detail = (f"{len(world.moves.violations)} learner(s) promoted before catching up: "
                  + "; ".join(world.moves.violations[:3]))
    if not check:
        routing = world.routing_violations()
        if routing:
            check = "routing"
            detail = f"{len(routing)} routing promise(s) broken: " + "; ".join(routing[:3])
    if not check and world.held_reads:
        check = "liveness"
        detail = f"{len(world.held_reads)} read(s) held without an answer: " + "; ".join(
            world.held_reads[:3]
        )
    if not check:
        expired = world.replica_totals().get("reads_expired", 0)
        if expired:
            check = "liveness"
            detail = (
                f"{expired} read(s) refused only by the replica's own deadline: neither an answer "
                "nor a failure from the core reached the client"
            )
    if not check:
        failed = [c for c in world.final_clients if c.result is None or c.result[0] != "ok"]
        if failed:
            check = "liveness"
            detail = f"{len(failed)} final read(s) did not succeed after heal"
        elif not world.converged and world.state_diverged:
            # Every replica applied the group's commit, yet their states differ: the same log
            # made different state machines (a replica applied its entries wrongly).
            check = "divergence"
            detail = f"replicas applied the same entries to different states: {world.divergence}"
        elif not world.converged:
            check = "liveness"
            detail = f"replicas did not converge: {world.divergence}"
    if not check and spec.check_linearizability:
        linearizable, cause = check_linearizable(world.history.strong_jsonl())
        if linearizable is False:
            check = "linearizability"
            detail = cause
    level_violations: tuple[tuple[str, str], ...] = ()
    levels_detail = ""
    if (spec.check_linearizability and spec.mixed_levels
            and not check.startswith("invariant:") and check != "exception"):
        # Judged after an earlier failing check too (a lost write, a history that is not
        # linearizable): a bug that loses writes may also break a session's guarantees, and
        # that finding is reported (level_violations) even though the verdict stays the first.
        levels, levels_detail, level_violations = check_levels(
            world.history.records, staleness_versions=STALENESS_VERSIONS_MAX,
            staleness_ms=STALENESS_MS_MAX, final_start_ns=world.final_reads_ns,
        )
        if not check and levels is False:
            check = "levels"
            detail = levels_detail
    counters: dict[str, int] = {}
    for name, value in world.counters.items():
        counters[f"fault_{name}" if name in ALL_FAULT_KINDS else name] = value
    counters.update(world.replica_totals())
    counters.update(sorted(world.read_counters.items()))
    counters.update(world.routing_counters())
    counters.update({f"net_{k}": v for k, v in world.network_counters().items()})
    counters.update({f"storage_{k}": v for k, v in world.storage_counters().items()})
    counters["invariant_checks"] = world.invariant_checks()
    counters["events"] = world.sched.events_run
    ops = sum(1 for r in world.history.records if r.type == "invoke")
    return SimResult(
        spec=spec,
        ok=not check,
        check=check,
        detail=detail,
        trace_hash=world.trace.hexdigest(),
        sim_ns=world.sched.now_ns,
        wall_s=time.perf_counter() - started,
        ops=ops,
        faults=len(world.faults),
        linearizable=linearizable,
        levels=levels,
        levels_detail=levels_detail,
        level_violations=level_violations,
        counters=counters,
        history_jsonl=jsonl if keep_history else "",
        final_reads_ns=world.final_reads_ns,
        groups={g.id: list(g.voters) for g in world.placement},
        final_status=world.final_status(),
    )


def _run_for_pool(spec: SimSpec) -> SimResult:
    return run_seed(spec)


def run_seeds(
    specs: Iterable[SimSpec], workers: int = 1
) -> Iterator[SimResult]:
    """Run specs, in order of the input; ``workers > 1`` uses that many processes."""
    spec_list = list(specs)
    if workers <= 1 or len(spec_list) <= 1:
        for spec in spec_list:
            yield run_seed(spec)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_run_for_pool, spec_list, chunksize=4)


# --- shrinking ---------------------------------------------------------------------------------


@dataclass
class ShrinkResult:
    original: SimResult
    shrunk: SimResult
    runs: int

    def describe(self) -> str:
        spec = self.shrunk.spec
        kept = len(self.shrunk_faults())
        return (
            f"shrunk seed={spec.seed}: ops {self.original.spec.ops} -> {spec.ops}, faults "
            f"{self.original.faults} -> {kept}, still {self.shrunk.verdict} "
            f"({self.runs} re-runs)"
        )

    def shrunk_faults(self) -> tuple[Any, ...]:
        return World(self.shrunk.spec).faults


def shrink(
    failing: SimResult,
    *,
    runs_max: int = SHRINK_RUNS_MAX,
    runner: Callable[[SimSpec], SimResult] = run_seed,
) -> ShrinkResult:
    """A smaller spec that fails the same check as ``failing`` (see the module docstring)."""
    assert not failing.ok, "only a failing run can be shrunk"
    best = failing
    runs = 0

    def attempt(spec: SimSpec) -> bool:
        nonlocal best, runs
        if runs >= runs_max:
            return False
        runs += 1
        result = runner(spec)
        if not result.ok and result.check == failing.check:
            best = result
            return True
        return False

    # 1. fewer operations
    ops = best.spec.ops
    while ops > 1 and runs < runs_max:
        smaller = ops // 2
        if attempt(replace(best.spec, ops=smaller)):
            ops = smaller
            continue
        break
    step = max(1, best.spec.ops // 4)
    while step >= 1 and runs < runs_max:
        if best.spec.ops - step >= 1 and attempt(replace(best.spec, ops=best.spec.ops - step)):
            continue
        step //= 2
    # 2. fewer faults: halves, then one at a time
    planned = len(World(best.spec).planned_faults)
    kept = list(best.spec.keep_faults) if best.spec.keep_faults is not None else list(range(planned))
    chunk = max(1, len(kept) // 2)
    while chunk >= 1 and kept and runs < runs_max:
        removed_any = False
        position = 0
        while position < len(kept) and runs < runs_max:
            candidate = kept[:position] + kept[position + chunk :]
            if attempt(replace(best.spec, keep_faults=tuple(candidate))):
                kept = candidate
                removed_any = True
            else:
                position += chunk
        if not removed_any:
            chunk //= 2
    return ShrinkResult(failing, best, runs)


__all__ = ["ShrinkResult", "SimResult", "run_seed", "run_seeds", "shrink"]
