"""Real processes: a follower that applies each batch of committed entries in reverse order is
caught by the per-level checker, on its weak reads (a state no prefix of the commit order holds)
or at the final reads (the replicas disagree)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.levels_runs import caught_at_level

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def test_a_follower_applying_out_of_order_is_caught(tmp_path: Path) -> None:
    outcome = caught_at_level(tmp_path, "apply-out-of-order", {"consistent-prefix", "convergence"})
    evidence = outcome.results["checkers"]["levels"]["evidence"]
    counts = evidence["violation_counts"]
    assert counts.get("consistent-prefix", 0) + counts.get("convergence", 0) > 0
    cx = evidence["counterexample"][0]
    # the counterexample names the read and the updates that show the wrong order
    assert cx["check"] in {"consistent-prefix", "convergence"} and len(cx["ops"]) >= 2
