"""The short mutant run of the default test suite: every mutant is caught within a few seeds,
and the unmodified cores (Raft and ZAB) pass 20 seeds with every fault kind (``make mutants`` does 1000)."""

from __future__ import annotations

import pytest

from exapyte.protocol.progress import ProgressTracker
from exapyte.sim import SimSpec, run_seed
from tests.mutants.mutants import MUTANTS, Mutant
from tests.mutants.run import hunt

SEEDS_MAX = 100  # the rarest catch (zab-apply-uncommitted) needs 45 seeds today


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_caught(mutant: Mutant) -> None:
    outcome = hunt(mutant, SEEDS_MAX)
    assert outcome.caught, f"{mutant.name} survived {SEEDS_MAX} seeds"
    assert outcome.check


def test_patches_are_undone_after_the_run() -> None:
    original = ProgressTracker.__dict__["committed_index"]
    with MUTANTS[0].patches():
        assert ProgressTracker.__dict__["committed_index"] is not original
    assert ProgressTracker.__dict__["committed_index"] is original


@pytest.mark.parametrize("protocol", ["raft", "zab"])
@pytest.mark.parametrize("nodes", [3, 5])
def test_unmodified_core_passes(nodes: int, protocol: str) -> None:
    seeds = range(20) if nodes == 3 else range(100, 105)
    for seed in seeds:
        result = run_seed(SimSpec(seed=seed, nodes=nodes, protocol=protocol))
        assert result.ok, f"{result.summary_line()} {result.check}: {result.detail}\nreplay: {result.spec.replay_command()}"
