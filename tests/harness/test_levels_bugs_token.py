"""Real processes: a session token checked by its index alone, with writes acknowledged before
they commit, is caught by the per-level checker: a replica "at" the token's index serves the
session a state without its own write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.runner import RunOutcome
from tests.harness.levels_runs import caught_at_level

SESSION_CHECKS = ("read-your-writes", "monotonic-reads")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _reached_without_the_write(outcome: RunOutcome) -> list[dict[str, Any]]:
    """The session violations of a read whose index reached the session's update (or one it
    saw) while its state lacks it: the token's index named another entry."""
    violations = outcome.results["checkers"]["levels"]["evidence"]["violations"]
    return [v for v in violations if v["check"] in SESSION_CHECKS and "does not hold" in v["cause"]]


def test_a_token_reused_after_a_truncation_is_caught(tmp_path: Path) -> None:
    # Three nodes in one region: a partition or a kill hits the leader one time in three, and
    # the writes it acknowledged before they committed are truncated by the next leader.
    outcome = caught_at_level(tmp_path, "token-after-truncate", set(SESSION_CHECKS),
                              seeds=(3, 8, 11, 4, 5, 6), topology_name="single-region", time_s=10.0,
                              accept=lambda o: bool(_reached_without_the_write(o)))
    violation = _reached_without_the_write(outcome)[0]
    assert "another entry took its index" in violation["cause"] or "at that index" in violation["cause"]
    assert len(violation["ops"]) >= 2  # the read and the session's update (or the read that saw one)
    evidence = outcome.results["checkers"]["levels"]["evidence"]
    assert any(c["check"] in SESSION_CHECKS for c in evidence["counterexample"])
