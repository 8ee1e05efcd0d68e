"""Shared by the real-process level runs: one short run of a level workload, and a bug caught
by the per-level checker with a counterexample."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.nemesis import default_faults
from harness.runner import RunOutcome
from harness.workloads import default_workload
from tests.harness.test_harness_smoke import run, topology_on_free_ports

#: The bounds the level runs give the nodes: T small, so that a short fault exposes a bug that
#: serves beyond it; K as the default (the nodes measure K against their leader's newest stamp,
#: which lags the commit by a round trip: a small K is exceeded by the writes in flight).
STALENESS_MS = 500


def level_run(tmp_path: Path, workload: str, **options: object) -> RunOutcome:
    options.setdefault("topology", topology_on_free_ports(tmp_path, "three-region"))
    options.setdefault("time_s", 5.0)
    return run(tmp_path, workload=workload, nemesis_interval_s=1.0, quiet_s=1.0,
               staleness_ms_max=STALENESS_MS, **options)  # type: ignore[arg-type]


def caught_at_level(tmp_path: Path, bug: str, checks: set[str], seeds: tuple[int, ...] = (3, 4, 5),
                    topology_name: str | None = None,
                    accept: Callable[[RunOutcome], bool] | None = None, **options: object) -> RunOutcome:
    """Run ``bug`` with its default faults and workload on up to ``len(seeds)`` seeds; the first
    run whose ``levels`` checker is invalid with a counterexample of one of ``checks``. A valid
    run never passes: faults on real processes are not replayed exactly, so a run may miss the
    bug, but then another seed is tried and all missing fails the test. ``topology_name``: one
    of ``topologies/`` instead of three-region; ``accept``: what else such a run must show;
    ``options`` go to :func:`level_run`."""
    tried = []
    for seed in seeds:
        run_options = dict(options)
        if topology_name is not None:
            run_options["topology"] = topology_on_free_ports(tmp_path / f"seed{seed}", topology_name)
        outcome = level_run(tmp_path / f"seed{seed}", default_workload((bug,)), bugs=(bug,),
                            nemesis=default_faults((bug,)), seed=seed, **run_options)
        levels = outcome.results["checkers"]["levels"]
        found = {cx["check"] for cx in levels["evidence"].get("counterexample", [])}
        if outcome.valid is False and levels["valid"] is False and found & checks and (
                accept is None or accept(outcome)):
            assert outcome.exit_code == 1
            report = (outcome.run_dir / "report.html").read_text()
            assert "Consistency levels" in report and "Counterexample: " in report
            return outcome
        tried.append((seed, outcome.valid, levels["valid"], sorted(found)))
    pytest.fail(f"{bug} was not caught by the level checker ({sorted(checks)}) on seeds {seeds}: {tried}")
