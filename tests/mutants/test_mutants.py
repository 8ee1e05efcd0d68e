"""The short mutant run of the default test suite: every mutant is caught within a few seeds,
and the unmodified cores (Raft and ZAB) pass 20 seeds with every fault kind (``make mutants`` does 1000);
the unmodified Multi-Paxos core passes the strand runs that catch its mutants, and every unmodified
core passes the held runs that catch ``paxos-stale-promise``."""

from __future__ import annotations

import pytest

from exapyte.protocol.progress import ProgressTracker
from exapyte.sim import SimSpec, run_seed
from tests.mutants.mutants import HELD, MUTANTS, MUTANTS_BY_NAME, UNCAUGHT_MUTANTS, Mutant
from tests.mutants.run import hunt, mutant_spec

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


@pytest.mark.parametrize(("name", "seeds"), [("paxos-own-value", 4), ("paxos-skip-hole", 1)])
def test_unmodified_multipaxos_passes_the_runs_that_catch_its_mutants(name: str, seeds: int) -> None:
    # the very specs (strands, loss, reordering) whose first seeds catch the mutant
    mutant = MUTANTS_BY_NAME[name]
    for seed in range(seeds):
        result = run_seed(mutant_spec(mutant, seed), keep_history=True)
        assert result.ok, f"{result.summary_line()} {result.check}: {result.detail}"
        assert '"f":"strand"' in result.history_jsonl  # a leader was stranded at a commit


def test_a_strand_run_is_deterministic() -> None:
    spec = mutant_spec(MUTANTS_BY_NAME["paxos-own-value"], 3)
    first, second = run_seed(spec), run_seed(spec)
    assert first.trace_hash == second.trace_hash
    assert first.counters == second.counters


def test_every_mutant_is_in_the_caught_suite() -> None:
    assert "paxos-stale-promise" in {m.name for m in MUTANTS}
    assert UNCAUGHT_MUTANTS == ()


@pytest.mark.parametrize("protocol", ["multipaxos", "raft", "zab"])
def test_unmodified_cores_pass_the_held_runs(protocol: str) -> None:
    # the spec whose first seed catches paxos-stale-promise: a node's answers held, then
    # delivered an election or more late, in order or shuffled
    # (docs/simulator.md: a few hundred seeds of it per core)
    result = run_seed(SimSpec(seed=0, protocol=protocol, faults=("hold",), profile=HELD))
    assert result.ok, f"{result.summary_line()} {result.check}: {result.detail}"
    assert result.counters["net_held"] > 0
    assert result.counters["net_released"] == result.counters["net_held"]
