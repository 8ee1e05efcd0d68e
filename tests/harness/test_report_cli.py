"""The report from a synthetic run (no cluster), its rendering in Chromium, serve, and the CLI."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import pytest

from harness import plots, report
from harness.cli import build_parser, main
from harness.history import HistoryRecorder
from harness.runner import check_run
from harness.screenshot import find_chromium, screenshot
from harness.serve import list_runs, make_server
from harness.workloads import default_workload

MS = 1_000_000


def synthetic_run(run_dir: Path) -> dict:
    """A register history with a stale read during a partition, as a run folder."""
    run_dir.mkdir(parents=True)
    clock = iter(t * MS for t in range(0, 10**6, 7))
    with HistoryRecorder(run_dir / "history.jsonl", clock=lambda: next(clock)) as rec:
        rec.record("invoke", 0, "write", "r0", 1)
        rec.record("ok", 0, "write", "r0", 1, node="n1")
        rec.record("invoke", "nemesis", "start-partition", None, {"kind": "isolate-node", "description": "n3 isolated", "cuts": [["n1", "n3"]]}, consistency="")
        rec.record("info", "nemesis", "start-partition", None, {"kind": "isolate-node", "description": "n3 isolated", "cuts": [["n1", "n3"]]}, consistency="")
        rec.record("invoke", 1, "write", "r0", 2)
        rec.record("ok", 1, "write", "r0", 2, node="n1")
        rec.record("invoke", 2, "read", "r0", None)
        rec.record("ok", 2, "read", "r0", 1, node="n3")
        rec.record("invoke", 3, "cas", "r0", [2, 3])
        rec.record("info", 3, "cas", "r0", [2, 3], error="timeout")
        rec.record("invoke", "nemesis", "stop-partition", None, None, consistency="")
        rec.record("info", "nemesis", "stop-partition", None, None, consistency="")
        final = rec.now_ns() + 1
        rec.record("invoke", 2, "read", "r0", None)
        rec.record("ok", 2, "read", "r0", 3, node="n1")
    results = {"test": "register-synthetic", "seed": 7, "started": "2026-01-01T00:00:00+00:00",
               "options": {"topology": "three-region", "time_s": 1, "nemesis": ["partition"], "bugs": ["stale-reads"]},
               "notes": []}
    results |= check_run(run_dir, "register", final)
    (run_dir / "results.json").write_text(json.dumps(results, default=str))
    plots.write_plots(run_dir, results)
    report.write_report(run_dir, results)
    return results


def test_report_of_an_invalid_run_shows_verdicts_counterexample_and_plots(tmp_path: Path) -> None:
    run_dir = tmp_path / "store" / "register-synthetic" / "20260101T000000Z"
    results = synthetic_run(run_dir)
    assert results["valid"] is False
    assert results["checkers"]["linearizable"]["valid"] is False
    assert results["faults"][0]["fault"] == "partition"
    page = (run_dir / "report.html").read_text()
    for needle in ("INVALID", "Counterexample", "linearizability.html", "Operations over time",
                   "data:image/png;base64", "n3 isolated", "stale-reads"):
        assert needle in page, needle
    assert 'src="http' not in page and 'href="http' not in page  # self-contained: nothing to fetch
    assert (run_dir / "latency.png").stat().st_size > 5000 and (run_dir / "rate.png").exists()


@pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    synthetic_run(run_dir)
    png = screenshot(run_dir / "report.html", tmp_path / "shot.png", width=1200, height=1600)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a page with content, not a blank


def test_serve_lists_runs_and_serves_their_files(tmp_path: Path) -> None:
    store = tmp_path / "store"
    synthetic_run(store / "register-synthetic" / "20260101T000000Z")
    assert [r["test"] for r in list_runs(store)] == ["register-synthetic"]
    server = make_server(store, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        index = urllib.request.urlopen(base + "/", timeout=5).read().decode()
        assert "register-synthetic" in index and "INVALID" in index
        page = urllib.request.urlopen(base + "/register-synthetic/20260101T000000Z/report.html", timeout=5).read()
        assert b"Counterexample" in page
    finally:
        server.shutdown()
        server.server_close()


def test_cli_has_test_and_serve_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["test", "--topology", "three-region", "--nemesis", "partition,kill", "--bugs", "stale-reads"])
    assert args.nemesis == ("partition", "kill") and args.bugs == ("stale-reads",) and args.workload is None
    # no --workload: register, or with a bug of a weaker level, the workload asking for that level
    assert default_workload(args.bugs) == "register" and default_workload(()) == "register"
    assert default_workload(("session-ahead",)) == "session" and default_workload(("stop-applying",)) == "eventual"
    with pytest.raises(SystemExit) as exc:
        main(["test", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--nemesis" in out and "--bugs" in out and "--seed" in out
    assert parser.parse_args(["test", "--topology", "x", "--nemesis", "clock"]).nemesis == ("clock",)
    assert parser.parse_args(["test", "--topology", "x", "--nemesis", "none"]).nemesis == ()
    assert parser.parse_args(["test", "--topology", "x"]).nemesis is None  # with --bugs: the bug's faults
    with pytest.raises(SystemExit):
        parser.parse_args(["test", "--topology", "x", "--nemesis", "meteor"])
    assert "clock" in capsys.readouterr().err  # the allowed kinds are listed
    with pytest.raises(SystemExit):
        parser.parse_args(["test", "--topology", "x", "--bugs", "typo"])
    assert main(["test", "--topology", "no-such-topology", "--time", "1", "--store", "/tmp/exapyte-unused"]) == 2


def _cas_run(run_dir: Path, cas_error: str) -> dict:
    """write 1; cas(1 -> 2) fails with ``cas_error``; a concurrent cas(3 -> 4) mismatches; read 1."""
    run_dir.mkdir(parents=True)
    clock = iter(t * MS for t in range(0, 10**6, 5))
    with HistoryRecorder(run_dir / "history.jsonl", clock=lambda: next(clock)) as rec:
        rec.record("invoke", 0, "write", "r0", 1)
        rec.record("ok", 0, "write", "r0", 1, node="n1")
        rec.record("invoke", 1, "cas", "r0", [1, 2])
        rec.record("invoke", 2, "cas", "r0", [3, 4])
        rec.record("fail", 2, "cas", "r0", [3, 4], node="n1", error="cas-mismatch")
        rec.record("fail", 1, "cas", "r0", [1, 2], node="n2", error=cas_error)
        final = rec.now_ns() + 1
        rec.record("invoke", 0, "read", "r0", None)
        rec.record("ok", 0, "read", "r0", 1, node="n1")
    results = {"test": "register-cas", "seed": 1, "options": {"workload": "register"}, "notes": []}
    results |= check_run(run_dir, "register", final)
    (run_dir / "results.json").write_text(json.dumps(results, default=str))
    return results


@pytest.mark.parametrize("cas_error, valid", [("not_leader", True), ("cas-mismatch", False)])
def test_check_command_agrees_with_the_run_on_refused_and_mismatched_cas(
    tmp_path: Path, cas_error: str, valid: bool, capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused cas did not happen; a mismatched one saw another value. The JSONL reader keeps
    that distinction, so ``python -m harness check`` gives the run's own verdict."""
    from harness.checker.formats import read_history

    run_dir = tmp_path / "run"
    results = _cas_run(run_dir, cas_error)
    assert results["checkers"]["linearizable"]["valid"] is valid
    history = read_history(run_dir / "history.jsonl")
    assert [(op.input.f, op.output.status) for op in history.operations] == (
        [("write", "ok"), ("cas", "fail"), ("read", "ok")] if valid else
        [("write", "ok"), ("cas", "fail"), ("cas", "fail"), ("read", "ok")])
    expected_exit = 0 if valid else 1
    path = str(run_dir / "history.jsonl")
    assert main(["check", path, "--json"]) == expected_exit  # the run's model, from results.json
    assert json.loads(capsys.readouterr().out)["model"] == "cas-register-etcd"
    assert main(["check", path, "--model", "cas-register"]) == expected_exit
    (run_dir / "results.json").unlink()
    assert main(["check", path, "--model", "cas-register"]) == expected_exit
