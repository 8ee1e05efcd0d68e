"""The Cosmos DB anomaly scenarios as regression histories: each passes at its own level and
fails at the next stronger one (tests/checker/histories/levels/EXPECTED.tsv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmos_histories import SCENARIOS
from harness.checker import LEVELS, check_level_file

HERE = Path(__file__).resolve().parent / "histories" / "levels"


def _rows() -> list[tuple[str, str, int | None, float | None]]:
    rows = []
    for line in (HERE / "EXPECTED.tsv").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        name, passes, k, t, _ = line.split("\t")
        rows.append((name, passes, int(k) if k else None, float(t) if t else None))
    return rows


@pytest.mark.parametrize(("name", "passes", "k", "t"), _rows(), ids=[r[0] for r in _rows()])
def test_passes_at_its_level_and_fails_at_the_next(name: str, passes: str, k: int | None, t: float | None) -> None:
    path = HERE / name
    bounds = {"staleness_versions": k, "staleness_ms": t}
    if passes != "-":
        report = check_level_file(path, passes, **bounds)
        assert report.valid is True, report.cause
        for weaker in LEVELS[: LEVELS.index(passes)]:
            assert check_level_file(path, weaker, **bounds).valid is True
    following = LEVELS.index(passes) + 1 if passes != "-" else 0
    if following < len(LEVELS):
        stronger = LEVELS[following]
        report = check_level_file(path, stronger, **bounds)
        assert report.valid is False
        assert report.cause and "op #" in report.cause  # the counterexample names its operations


def test_the_committed_files_are_the_builders(tmp_path: Path) -> None:
    for name, (build, *_rest) in SCENARIOS.items():
        built = build().write_jsonl(tmp_path / name).read_text(encoding="utf-8")
        assert (HERE / name).read_text(encoding="utf-8") == built, f"{name}: regenerate with cosmos_histories.py"


def test_the_strong_failures_are_linearizability_failures() -> None:
    for name in ("cosmos-bounded-dirty-read.jsonl", "cosmos-bounded-writes-in-flight.jsonl"):
        report = check_level_file(HERE / name, "strong", staleness_versions=0, staleness_ms=0.0)
        assert report.linearizability is not None and report.linearizability.valid is False
        # Per op, every read still looks strong: per-op strong is necessary, not sufficient.
        assert all(r.delivered == "strong" for r in report.ratings)
