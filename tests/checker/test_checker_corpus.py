"""Every history of the shared corpus gets the verdict its VERDICTS.tsv gives it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.checker import check_file

HISTORIES = Path(
    os.environ.get("EXAPYTE_HISTORIES")
    or Path(__file__).resolve().parents[2].parent / "shared" / "data" / "histories"
)
# Generous: the slowest corpus file takes well under a second; a timeout here is a failure.
CORPUS_TIMEOUT_S = 30.0


def _cases() -> list[object]:
    if not HISTORIES.is_dir():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no history corpus at {HISTORIES}"))]
    cases = []
    for verdicts in sorted(HISTORIES.rglob("VERDICTS.tsv")):
        for line in verdicts.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            path = verdicts.parent / fields[0]
            expected = {"true": True, "false": False}[fields[-1].strip()]
            cases.append(pytest.param(path, expected, id=str(path.relative_to(HISTORIES))))
    if not cases:
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no VERDICTS.tsv under {HISTORIES}"))]
    return cases


@pytest.mark.parametrize(("path", "expected"), _cases())
def test_corpus_verdict(path: Path, expected: bool) -> None:
    result = check_file(path, timeout_s=CORPUS_TIMEOUT_S)
    assert result.valid is expected, result.cause
    if expected is False:
        failing = result.failing_partitions
        assert failing, "an invalid history must name its failing partition"
        assert failing[0].failing_op is not None
        assert "cannot be linearized" in (result.cause or "")
