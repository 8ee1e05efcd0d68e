"""Real processes: level workloads under faults are valid, every op rated at the level it asked
for, with one session per worker for the whole run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from harness.history import pair_ops, read_events
from tests.harness.levels_runs import STALENESS_MS, level_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

LEVELS = {"strong", "bounded_staleness", "session", "consistent_prefix", "eventual"}


def test_a_session_run_under_partitions_and_pauses_is_valid_at_every_requested_level(tmp_path: Path) -> None:
    outcome = level_run(tmp_path, "session", nemesis=("partition", "pause"), seed=7)
    levels = outcome.results["checkers"]["levels"]
    assert outcome.valid is True, outcome.results["checkers"]
    table = levels["evidence"]["table"]
    assert set(table) == LEVELS and all(row["below_requested"] == 0 for row in table.values())
    assert table["session"]["ops"] > max(table[lv]["ops"] for lv in LEVELS - {"session"})
    assert levels["evidence"]["convergence"]["valid"] is True
    ops = pair_ops(read_events(outcome.run_dir / "history.jsonl"))
    # every completed keyed op names its group, replica and [term, index]; a session per worker
    done = [op for op in ops if op.type == "ok"]
    assert done and all(op.group == "default" and op.replica and len(op.index) == 2 for op in done)
    assert len({op.session for op in ops}) == 5
    served = Counter(op.replica for op in done if op.f == "read" and op.consistency != "strong")
    assert len(served) >= 3  # weak reads answered by followers, not all sent to the leader
    report = (outcome.run_dir / "report.html").read_text()
    assert "Consistency levels" in report and "Requested vs delivered" in report


def test_a_bounded_run_under_partitions_and_pauses_stays_within_the_time_bound(tmp_path: Path) -> None:
    outcome = level_run(tmp_path, "bounded", nemesis=("partition", "pause"), seed=5)
    levels = outcome.results["checkers"]["levels"]
    assert levels["valid"] is True, levels["cause"]
    served = levels["evidence"]["staleness_by_level"]["bounded_staleness"]
    # enough bounded reads that the bound is exercised (their number follows the machine's speed:
    # a loaded CI host completes ~50 in 5 s, an idle one ~150)
    assert served["reads"] >= 20 and served["ms_max"] <= STALENESS_MS
