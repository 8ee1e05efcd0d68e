"""The per-op table (requested vs delivered), the verdict per level, and ``check --level``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from rich.console import Console

from level_build import LH
from harness.checker import DELIVERED, check_level, rate_operations
from harness.cli import main


def mixed() -> LH:
    """A writer session, then reads at four levels, one of them below what it asked for."""
    h = (LH().op(0, "write", "x", 1, 0, 10, session="a", index=1, replica="n1")
         .op(0, "write", "x", 2, 12, 20, session="a", index=2, replica="n1")
         .op(0, "read", "x", None, 30, 32, session="a", level="session", result=1, index=1, replica="n2")  # RYW broken
         .op(1, "read", "x", None, 30, 32, session="b", level="eventual", result=1, index=1, replica="n3")  # stale
         .op(2, "read", "x", None, 30, 32, session="c", level="strong", result=2, index=2, replica="n1")
         .op(3, "read", "x", None, 30, 32, session="d", level="bounded_staleness", result=1, index=1, replica="n2"))
    h.heal(40)
    for n, replica in enumerate(("n1", "n2", "n3")):
        h.op(10 + n, "read", "x", None, 50, 52, session=f"f{n}", level="eventual", result=2, index=2, replica=replica)
    return h


def test_each_op_gets_the_strongest_level_it_delivered() -> None:
    report = check_level(mixed().history(), None, staleness_versions=1)
    delivered = {r.op: r.delivered for r in report.ratings}
    assert delivered[0] == delivered[1] == "strong"  # the writes
    assert delivered[2] == "consistent_prefix"  # it missed its own session's write
    assert delivered[3] == "bounded_staleness"  # one version behind: within K=1, not strong
    assert delivered[4] == "strong"
    assert delivered[5] == "bounded_staleness"
    table = report.table()
    assert table["session"] == {"ops": 1, **{d: 0 for d in DELIVERED}, "consistent_prefix": 1, "below_requested": 1}
    assert table["eventual"]["below_requested"] == 0 and table["eventual"]["ops"] == 4
    assert table["strong"]["strong"] == 3
    assert list(table) == ["strong", "bounded_staleness", "session", "eventual"]
    # Judged each at its own level, only the session read fails.
    assert report.valid is False and "read-your-writes" in (report.cause or "") and "op #2" in (report.cause or "")


def test_without_a_bound_a_stale_read_is_session_at_best() -> None:
    report = check_level(mixed().history(), None)
    assert {r.op: r.delivered for r in report.ratings}[3] == "session"
    assert any("no staleness bound" in n for n in report.notes)
    with pytest.raises(ValueError, match="needs a bound"):
        check_level(mixed().history(), "bounded_staleness")
    with pytest.raises(ValueError, match="level must be one of"):
        check_level(mixed().history(), "linearizable")


def test_the_verdict_at_each_level() -> None:
    history = mixed().history()
    assert check_level(history, "eventual").valid is True
    assert check_level(history, "consistent_prefix").valid is True
    assert check_level(history, "session").valid is False
    report = check_level(history, "strong")
    assert report.valid is False and report.linearizability is not None


def test_renderings() -> None:
    report = check_level(mixed().history(), None, staleness_versions=1)
    text = report.markdown()
    lines = text.strip().splitlines()
    assert lines[0].startswith("| requested | ops | strong | bounded_staleness |")
    assert "| session | 1 | 0 | 0 | 0 | 1 | 0 | 0 | 1 |" in lines
    console = Console(record=True, width=160)
    console.print(report.rich_table())
    assert "below requested" in console.export_text()
    record = report.to_dict()
    json.dumps(record)  # JSON-ready
    assert record["level"] == "requested" and record["violation_counts"]["read-your-writes"] == 1
    assert record["convergence"]["valid"] is True and record["staleness"]["served"]["versions_max"] == 1


def test_rate_operations_skips_what_did_not_complete() -> None:
    h = (LH().op(0, "write", "x", 1, 0, 10, type="info").op(1, "read", "x", None, 0, 10, type="fail", error="x")
         .op(2, "read", "x", None, 20, 30, result=1))
    history = h.history()
    assert [r.op for r in rate_operations(history, [], bounded=False)] == [2]


def test_check_command_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mixed().write_jsonl(tmp_path / "history.jsonl")
    assert main(["check", str(path), "--level", "consistent_prefix"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "level requested vs delivered" in out and "staleness served" in out
    assert main(["check", str(path), "--level", "requested", "--staleness-versions", "1", "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["valid"] is False and record["table"]["session"]["below_requested"] == 1
    assert main(["check", str(path), "--level", "session"]) == 1
    assert "read-your-writes" in capsys.readouterr().out
    assert main(["check", str(path), "--level", "bounded_staleness", "--staleness-ms", "5"]) == 1
    capsys.readouterr()
    assert main(["check", str(path), "--staleness-ms", "5"]) == 2  # a bound needs --level
    edn = tmp_path / "h.edn"
    edn.write_text("{:process 0 :type :invoke :f :read}", encoding="utf-8")
    assert main(["check", str(edn), "--level", "eventual", "--format", "edn"]) == 2


def test_a_long_history_is_checked_in_one_pass() -> None:
    # 20,000 ops over 50 keys, 20 sessions, reads at indexes that lag by up to 3 entries.
    rng = random.Random(7)
    h = LH()
    t = 0.0
    index = 0
    last: dict[str, tuple[int, int]] = {}  # key -> (index, value)
    log: list[tuple[int, str, int]] = []
    for n in range(20_000):
        key = f"k{rng.randrange(50)}"
        session = f"s{n % 20}"
        t += 1.0
        if rng.random() < 0.3:
            index += 1
            h.op(n, "write", key, n, t, t + 0.5, session=session, index=index)
            last[key] = (index, n)
            log.append((index, key, n))
        else:
            at = max(0, index - rng.randrange(4))
            value = None
            for i, k, v in reversed(log[-8:]):
                if k == key and i <= at:
                    value = v
                    break
            else:
                prior = last.get(key)
                if prior is not None and prior[0] <= at:
                    value = prior[1]
                elif prior is not None:
                    continue
            h.op(n, "read", key, None, t, t + 0.5, session=session, level="eventual", result=value, index=at)
    report = check_level(h.history(), "consistent_prefix", staleness_versions=3)
    assert report.valid is True, report.cause
    served = report.staleness.distribution()
    assert served["versions_max"] is not None and served["versions_max"] <= 3
