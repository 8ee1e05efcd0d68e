"""Real processes: bounded staleness without its check, and with the old check (the follower's
own commit index, no time bound), is caught by the per-level checker beyond T."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.levels_runs import STALENESS_MS, caught_at_level

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def _beyond_bound(outcome: object) -> None:
    evidence = outcome.results["checkers"]["levels"]["evidence"]  # type: ignore[attr-defined]
    assert evidence["staleness"]["bounds"]["ms"] == STALENESS_MS
    assert evidence["violation_counts"]["bounded-staleness"] > 0
    assert evidence["table"]["bounded_staleness"]["below_requested"] > 0


def test_bounded_staleness_without_its_check_is_caught(tmp_path: Path) -> None:
    _beyond_bound(caught_at_level(tmp_path, "bounded-unchecked", {"bounded-staleness"}))


def test_bounded_staleness_against_the_followers_own_view_is_caught(tmp_path: Path) -> None:
    _beyond_bound(caught_at_level(tmp_path, "bounded-follower-view", {"bounded-staleness"}))
