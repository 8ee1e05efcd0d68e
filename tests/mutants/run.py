"""Run every mutant through the simulator until a seed catches it; check the unmodified core.

``python -m tests.mutants [--seeds-max N] [--baseline-seeds N] [--workers W] [--mutant NAME]``

For each mutant, seeds 0, 1, 2, ... run with the mutant's patches active until one fails (or
``--seeds-max`` is reached: the mutant *survived*). One row per mutant: caught or not, by which
check, after how many seeds and how much simulated time, and the command that replays the
catching seed. Then the unmodified core runs ``--baseline-seeds`` seeds with every fault kind;
any failure there is a bug. The exit status is 1 if a mutant survived or the baseline failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from exapyte.sim.faults import FAULT_KINDS
from exapyte.sim.runner import SimResult, run_seed, run_seeds
from exapyte.sim.scheduler import NS_PER_S
from exapyte.sim.world import SimSpec
from tests.mutants.mutants import MUTANTS, MUTANTS_BY_NAME, Mutant

SEEDS_MAX_DEFAULT = 40
BASELINE_SEEDS_DEFAULT = 1_000


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

    def replay(self) -> str:
        if self.seed is None:
            return ""
        return (
            f"python -m tests.mutants --mutant {self.mutant.name} --first-seed {self.seed} "
            "--seeds-max 1 --baseline-seeds 0"
        )


def mutant_spec(mutant: Mutant, seed: int, **overrides: object) -> SimSpec:
    spec = SimSpec(seed=seed, nodes=mutant.nodes, faults=mutant.faults, profile=mutant.profile)
    if overrides:
        from dataclasses import replace

        spec = replace(spec, **overrides)  # type: ignore[arg-type]
    return spec


def hunt(mutant: Mutant, seeds_max: int, first_seed: int = 0, **overrides: object) -> MutantOutcome:
    """Run seeds with the mutant active until one fails."""
    started = time.perf_counter()
    sim_ns = 0
    with mutant.patches():
        for i in range(seeds_max):
            seed = first_seed + i
            result: SimResult = run_seed(mutant_spec(mutant, seed, **overrides))
            sim_ns += result.sim_ns
            if not result.ok:
                return MutantOutcome(mutant, True, result.check, i + 1, sim_ns / NS_PER_S,
                                     time.perf_counter() - started, result.detail, seed)
    return MutantOutcome(mutant, False, "", seeds_max, sim_ns / NS_PER_S,
                         time.perf_counter() - started, "", None)


def baseline(seeds: int, workers: int) -> list[SimResult]:
    specs = [SimSpec(seed=s, faults=FAULT_KINDS) for s in range(seeds)]
    specs += [SimSpec(seed=s, nodes=5, faults=FAULT_KINDS) for s in range(seeds // 5)]
    return [r for r in run_seeds(specs, workers=workers) if not r.ok]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds-max", type=int, default=SEEDS_MAX_DEFAULT)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--baseline-seeds", type=int, default=BASELINE_SEEDS_DEFAULT,
                   help="seeds of the unmodified core (plus a fifth as many with 5 nodes); 0 skips")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mutant", action="append", choices=sorted(MUTANTS_BY_NAME))
    args = p.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True, width=110)
    chosen = [MUTANTS_BY_NAME[n] for n in args.mutant] if args.mutant else list(MUTANTS)
    table = Table(title="exapyte mutants (deterministic simulator)")
    for column in ("mutant", "caught", "by", "seeds", "sim time", "wall"):
        table.add_column(column)
    survived = []
    for mutant in chosen:
        outcome = hunt(mutant, args.seeds_max, args.first_seed)
        if not outcome.caught:
            survived.append(mutant.name)
        print(f"mutant={mutant.name} caught={outcome.caught} by={outcome.check or '-'} "
              f"seeds={outcome.seeds} sim_s={outcome.sim_s:.1f} wall_s={outcome.wall_s:.1f}",
              flush=True)
        if outcome.detail:
            print(f"  {outcome.detail[:300]}")
            print(f"  replay: {outcome.replay()}")
        table.add_row(mutant.name, "yes" if outcome.caught else "[red]NO[/red]",
                      outcome.check or "-", str(outcome.seeds), f"{outcome.sim_s:.1f} s",
                      f"{outcome.wall_s:.1f} s")
    console.print(table)
    failed_baseline: list[SimResult] = []
    if args.baseline_seeds > 0:
        started = time.perf_counter()
        failed_baseline = baseline(args.baseline_seeds, args.workers)
        total = args.baseline_seeds + args.baseline_seeds // 5
        print(f"unmodified core: {total} seeds ({args.baseline_seeds} x 3 nodes, "
              f"{args.baseline_seeds // 5} x 5 nodes), {len(failed_baseline)} failed, "
              f"{time.perf_counter() - started:.1f} s")
        for r in failed_baseline:
            print(f"  {r.summary_line()} {r.check}: {r.detail[:200]}")
            print(f"  replay: {r.spec.replay_command()}")
    if survived:
        print(f"mutants that survived: {', '.join(survived)}")
    return 1 if survived or failed_baseline else 0


if __name__ == "__main__":
    sys.exit(main())
