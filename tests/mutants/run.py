"""Run every mutant through the simulator until a seed catches it; check the unmodified core.

``python -m tests.mutants [--seeds-max N] [--baseline-seeds N] [--workers W] [--mutant NAME]
[--shrink] [--ops N] [--keep-faults I,J,...]``

For each mutant, seeds 0, 1, 2, ... run with the mutant's patches active until one fails (or
``--seeds-max`` is reached, by default 100 or the mutant's own budget: the mutant *survived*). One row per mutant: caught or not, by which
check, after how many seeds and how much simulated time, and the command that replays the
catching seed. Then the unmodified core runs ``--baseline-seeds`` seeds with every fault kind;
any failure there is a bug. The exit status is 1 if a mutant survived or the baseline failed.

While it runs, a terminal shows a live display: the mutant being hunted and its seeds, mutants
done and caught, baseline seeds done of those planned. Anything else (a pipe, a log file, a dumb
terminal) gets plain lines instead: one per finished mutant, and one per tenth of the baseline.
The live display is cleared at the end, leaving the same per-mutant lines, summary table and
baseline line as the plain output.

``--shrink`` shrinks each catching seed (:func:`exapyte.sim.runner.shrink`, with the mutant's
patches active: same seed, same check) and prints the faults left and the command that replays
the shrunk case; ``--ops`` and ``--keep-faults`` are that command's overrides of the mutant's
spec.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from exapyte.sim.cli import _indexes
from exapyte.sim.faults import FAULT_KINDS, SHARDED_FAULT_KINDS
from exapyte.sim.runner import ShrinkResult, SimResult, run_seed, run_seeds, shrink
from exapyte.sim.scheduler import NS_PER_S
from exapyte.sim.world import SimSpec
from tests.mutants.amnesia import AMNESIA_SIM_MUTANTS
from tests.mutants.mutants import MUTANTS, MUTANTS_BY_NAME, RARE_MUTANTS, Mutant
from tests.mutants.routing import ROUTING_SIM_MUTANTS

# what `make mutants` hunts
CATALOGUE: tuple[Mutant, ...] = MUTANTS + RARE_MUTANTS + ROUTING_SIM_MUTANTS + AMNESIA_SIM_MUTANTS
BY_NAME: dict[str, Mutant] = {
    **MUTANTS_BY_NAME, **{m.name: m for m in ROUTING_SIM_MUTANTS + AMNESIA_SIM_MUTANTS}
}
BASELINE_SHARDS = 4  # the sharded part of the baseline (with rebalances)

SEEDS_MAX_DEFAULT = 100
BASELINE_SEEDS_DEFAULT = 1_000
BASELINE_LINES = 10  # plain progress lines over a baseline run (not on a terminal)
PIPE_WIDTH = 110  # columns of the summary table when stdout is not a terminal


@dataclass
class MutantOutcome:
    mutant: Mutant
    caught: bool
    check: str
    seeds: int
    sim_s: float
    wall_s: float
    detail: str
    seed: int | None
    failing: SimResult | None = None  # the catching run
    overrides: dict[str, object] = field(default_factory=dict)  # of the mutant's spec

    def replay(self) -> str:
        if self.seed is None:
            return ""
        return replay_command(self.mutant, self.seed, self.overrides)


def replay_command(mutant: Mutant, seed: int, overrides: dict[str, object]) -> str:
    """The command that re-runs one seed of ``mutant`` (with ``ops`` / ``keep_faults``)."""
    parts = [f"python -m tests.mutants --mutant {mutant.name} --first-seed {seed} "
             "--seeds-max 1 --baseline-seeds 0"]
    if overrides.get("ops") is not None:
        parts.append(f"--ops {overrides['ops']}")
    keep = overrides.get("keep_faults")
    if keep is not None:
        parts.append(f"--keep-faults {','.join(map(str, keep)) or 'none'}")  # type: ignore[call-overload]
    return " ".join(parts)


def shrink_catch(outcome: MutantOutcome, runs_max: int | None = None) -> ShrinkResult:
    """Shrink the run that caught ``outcome.mutant``, with its patches active."""
    assert outcome.failing is not None, "only a caught mutant has a run to shrink"
    kwargs = {} if runs_max is None else {"runs_max": runs_max}
    with outcome.mutant.patches():
        return shrink(outcome.failing, **kwargs)  # type: ignore[arg-type]


def mutant_spec(mutant: Mutant, seed: int, **overrides: object) -> SimSpec:
    spec = SimSpec(seed=seed, nodes=mutant.nodes, faults=mutant.faults, profile=mutant.profile,
                   protocol=mutant.protocol, shards=mutant.shards,
                   keys=2 * mutant.shards if mutant.shards > 1 else SimSpec(seed=0).keys,
                   **mutant.extra)
    if overrides:
        from dataclasses import replace

        spec = replace(spec, **overrides)  # type: ignore[arg-type]
    return spec


def hunt(
    mutant: Mutant,
    seeds_max: int,
    first_seed: int = 0,
    on_seed: Callable[[int], None] | None = None,
    **overrides: object,
) -> MutantOutcome:
    """Run seeds with the mutant active until one fails (and, for a mutant with ``caught_by``,
    shows its finding); ``on_seed(n)`` after the n-th seed."""
    started = time.perf_counter()
    sim_ns = 0
    with mutant.patches():
        for i in range(seeds_max):
            seed = first_seed + i
            result: SimResult = run_seed(mutant_spec(mutant, seed, **overrides))
            sim_ns += result.sim_ns
            if on_seed is not None:
                on_seed(i + 1)
            if not result.ok and (mutant.caught_by is None or mutant.caught_by(result)):
                check = result.check
                if mutant.caught_by is not None and mutant.caught_as:
                    check = f"{mutant.caught_as} (verdict {result.check})"
                return MutantOutcome(mutant, True, check, i + 1, sim_ns / NS_PER_S,
                                     time.perf_counter() - started, result.detail, seed,
                                     result, dict(overrides))
    return MutantOutcome(mutant, False, "", seeds_max, sim_ns / NS_PER_S,
                         time.perf_counter() - started, "", None, None, dict(overrides))


def baseline_specs(seeds: int) -> list[SimSpec]:
    """The unmodified core's run: ``seeds`` seeds on 3 nodes, a fifth as many on 5, and a
    twentieth as many sharded (``BASELINE_SHARDS`` shards, every fault kind and rebalances)."""
    specs = [SimSpec(seed=s, faults=FAULT_KINDS) for s in range(seeds)]
    specs += [SimSpec(seed=s, nodes=5, faults=FAULT_KINDS) for s in range(seeds // 5)]
    specs += [
        SimSpec(seed=s, faults=SHARDED_FAULT_KINDS, shards=BASELINE_SHARDS, keys=2 * BASELINE_SHARDS)
        for s in range(seeds // 20)
    ]
    return specs


def baseline(
    seeds: int, workers: int, on_result: Callable[[SimResult], None] | None = None
) -> list[SimResult]:
    """The failed runs of :func:`baseline_specs`; ``on_result`` sees every run as it ends."""
    failed = []
    for result in run_seeds(baseline_specs(seeds), workers=workers):
        if on_result is not None:
            on_result(result)
        if not result.ok:
            failed.append(result)
    return failed


class RunDisplay:
    """What the run shows while it goes: a live display on an interactive console, else lines.

    The live display has a row for the mutants (done of chosen, caught so far), one for the mutant
    being hunted (seeds run of ``--seeds-max``) and one for the unmodified core (seeds done of
    planned, failed so far). It is refreshed on each update, never by a thread of its own (the
    baseline forks worker processes), and cleared when the run ends. Text goes through
    :meth:`line` and :meth:`show`, above the live display while there is one.
    """

    def __init__(
        self, console: Console, mutants: int, seeds_max: int, baseline_seeds: int
    ) -> None:
        self.console = console
        self.seeds_max = seeds_max
        self.mutants_done = 0
        self.caught = 0
        self.baseline_total = baseline_seeds
        self.baseline_done = 0
        self.baseline_failed = 0
        self._baseline_started = 0.0
        self._progress: Progress | None = None
        self._mutants_task = self._hunt_task = self._baseline_task = TaskID(0)
        if not console.is_interactive:
            return
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            transient=True,
        )
        self._mutants_task = self._progress.add_task(
            "mutants", total=mutants, status=self._caught_status()
        )
        self._hunt_task = self._progress.add_task(
            "", total=seeds_max, visible=False, status="seeds"
        )
        if baseline_seeds > 0:
            self._baseline_task = self._progress.add_task(
                "unmodified core", total=baseline_seeds, start=False,
                status=self._baseline_status(),
            )

    def __enter__(self) -> RunDisplay:
        if self._progress is not None:
            self._progress.start()
            self._progress.refresh()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def line(self, text: str) -> None:
        """Print text as it is (details quote entries and keys: no markup, no highlighting)."""
        self.console.print(text, markup=False, highlight=False)

    def show(self, renderable: Table) -> None:
        self.console.print(renderable)

    # --- mutants ---

    def _caught_status(self) -> str:
        return f"caught {self.caught}"

    def mutant_started(self, mutant: Mutant) -> None:
        if self._progress is not None:
            self._progress.reset(self._hunt_task, total=self.seeds_max,
                                 description=f"  {mutant.name}", visible=True)
            self._progress.refresh()

    def mutant_seed_done(self, seeds: int) -> None:
        if self._progress is not None:
            self._progress.update(self._hunt_task, completed=seeds)
            self._progress.refresh()

    def mutant_done(self, outcome: MutantOutcome) -> None:
        self.mutants_done += 1
        self.caught += outcome.caught
        self.line(f"mutant={outcome.mutant.name} caught={outcome.caught} "
                  f"by={outcome.check or '-'} seeds={outcome.seeds} sim_s={outcome.sim_s:.1f} "
                  f"wall_s={outcome.wall_s:.1f}")
        if outcome.detail:
            self.line(f"  {outcome.detail[:300]}")
            self.line(f"  replay: {outcome.replay()}")
        if self._progress is not None:
            self._progress.update(self._hunt_task, visible=False)
            self._progress.update(self._mutants_task, completed=self.mutants_done,
                                  status=self._caught_status())
            self._progress.refresh()

    def shrunk(self, outcome: MutantOutcome, result: ShrinkResult) -> None:
        spec = result.shrunk.spec
        self.line(f"  {result.describe()}")
        for fault in result.shrunk_faults():
            links = " ".join(f"{a}->{b}" for a, b in fault.links)
            self.line(f"    {fault.describe()}{': ' + links if links else ''}")
        self.line(f"  {result.shrunk.check}: {result.shrunk.detail[:300]}")
        self.line("  replay shrunk: " + replay_command(
            outcome.mutant, spec.seed, {"ops": spec.ops, "keep_faults": spec.keep_faults}))

    # --- the unmodified core ---

    def _baseline_status(self) -> str:
        return f"seeds, {self.baseline_failed} failed"

    def baseline_started(self) -> None:
        self._baseline_started = time.perf_counter()
        if self._progress is not None:
            self._progress.start_task(self._baseline_task)
            self._progress.refresh()

    def baseline_seed_done(self, result: SimResult) -> None:
        self.baseline_done += 1
        self.baseline_failed += not result.ok
        if self._progress is not None:
            self._progress.update(self._baseline_task, completed=self.baseline_done,
                                  status=self._baseline_status())
            self._progress.refresh()
            return
        every = max(1, self.baseline_total // BASELINE_LINES)
        if self.baseline_done % every == 0 and self.baseline_done < self.baseline_total:
            self.line(f"unmodified core: {self.baseline_done}/{self.baseline_total} seeds, "
                      f"{self.baseline_failed} failed, "
                      f"{time.perf_counter() - self._baseline_started:.1f} s")


def main(argv: list[str] | None = None, console: Console | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds-max", type=int, default=None,
                   help=f"seeds per mutant (default {SEEDS_MAX_DEFAULT}, or a mutant's own larger "
                        "budget: Mutant.seeds_max)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--baseline-seeds", type=int, default=BASELINE_SEEDS_DEFAULT,
                   help="seeds of the unmodified core (plus a fifth as many with 5 nodes); 0 skips")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mutant", action="append", choices=sorted(BY_NAME))
    p.add_argument("--shrink", action="store_true", help="shrink each catching seed")
    p.add_argument("--ops", type=int, default=None, help="operation budget (a shrunk case's)")
    p.add_argument("--keep-faults", type=_indexes, default=None,
                   help="run only these planned faults (indexes, as printed by --shrink)")
    args = p.parse_args(argv)
    overrides = {name: value for name, value in
                 (("ops", args.ops), ("keep_faults", args.keep_faults)) if value is not None}
    if console is None:
        console = Console(highlight=False, soft_wrap=True)
        if not console.is_interactive:
            console.width = PIPE_WIDTH  # rich would assume 80 columns and squeeze the table
    chosen = [BY_NAME[n] for n in args.mutant] if args.mutant else list(CATALOGUE)
    baseline_total = len(baseline_specs(args.baseline_seeds)) if args.baseline_seeds > 0 else 0
    table = Table(title="exapyte mutants (deterministic simulator)")
    for column in ("mutant", "caught", "by", "seeds", "sim time", "wall"):
        table.add_column(column)
    survived = []
    failed_baseline: list[SimResult] = []
    with RunDisplay(console, len(chosen), SEEDS_MAX_DEFAULT if args.seeds_max is None else args.seeds_max, baseline_total) as display:
        for mutant in chosen:
            budget = max(SEEDS_MAX_DEFAULT, mutant.seeds_max) if args.seeds_max is None else args.seeds_max
            display.seeds_max = budget
            display.mutant_started(mutant)
            outcome = hunt(mutant, budget, args.first_seed,
                           on_seed=display.mutant_seed_done, **overrides)
            if not outcome.caught:
                survived.append(mutant.name)
            display.mutant_done(outcome)
            if args.shrink and outcome.caught:
                display.shrunk(outcome, shrink_catch(outcome))
            table.add_row(mutant.name, "yes" if outcome.caught else "[red]NO[/red]",
                          outcome.check or "-", str(outcome.seeds), f"{outcome.sim_s:.1f} s",
                          f"{outcome.wall_s:.1f} s")
        display.show(table)
        if args.baseline_seeds > 0:
            started = time.perf_counter()
            display.baseline_started()
            failed_baseline = baseline(args.baseline_seeds, args.workers,
                                       on_result=display.baseline_seed_done)
            sharded = args.baseline_seeds // 20
            extra = f", {sharded} x {BASELINE_SHARDS} shards with rebalances" if sharded else ""
            display.line(f"unmodified core: {baseline_total} seeds ({args.baseline_seeds} x 3 "
                         f"nodes, {args.baseline_seeds // 5} x 5 nodes{extra}), "
                         f"{len(failed_baseline)} failed, {time.perf_counter() - started:.1f} s")
            for r in failed_baseline:
                display.line(f"  {r.summary_line()} {r.check}: {r.detail[:200]}")
                display.line(f"  replay: {r.spec.replay_command()}")
    if survived:
        display.line(f"mutants that survived: {', '.join(survived)}")
    return 1 if survived or failed_baseline else 0


if __name__ == "__main__":
    sys.exit(main())
