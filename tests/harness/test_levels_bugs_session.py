"""Real processes: the session and eventual bugs are caught by the per-level checker, each with
the operations that show it in the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.levels_runs import caught_at_level

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def test_session_read_served_ahead_of_its_token_is_caught(tmp_path: Path) -> None:
    # a follower cut off, or just behind across the WAN, answers a session read without the token
    outcome = caught_at_level(tmp_path, "session-ahead", {"read-your-writes", "monotonic-reads"})
    table = outcome.results["checkers"]["levels"]["evidence"]["table"]
    assert table["session"]["below_requested"] > 0
    cx = outcome.results["checkers"]["levels"]["evidence"]["counterexample"][0]
    assert any("asked session" in line for line in cx["ops"])


def test_a_replica_that_stops_applying_is_caught_at_the_final_reads(tmp_path: Path) -> None:
    outcome = caught_at_level(tmp_path, "stop-applying", {"convergence"})
    convergence = outcome.results["checkers"]["levels"]["evidence"]["convergence"]
    assert convergence["valid"] is False
    # the stopped replica (the highest-named member) is among those every final read asked
    assert "n5" in convergence["replicas"]
