"""Judges, history format, shrinking and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exapyte.errors import InvariantViolation
from exapyte.history import Event, encode_event, iter_jsonl, read_jsonl
from exapyte.protocol.invariants import NodeView
from exapyte.protocol.types import Entry
from exapyte.sim import SimSpec, run_seed, shrink
from exapyte.sim.cli import main
from exapyte.sim.judge import StepJudge, invariant_name
from tests.mutants.mutants import MUTANTS_BY_NAME
from tests.mutants.run import hunt, mutant_spec

ROOT = Path(__file__).resolve().parents[2]
LEVELS = ("strong", "bounded_staleness", "session", "consistent_prefix", "eventual")


def _view(node: str, entries: list[Entry], *, term: int = 1, leader: bool = False,
          commit: int = 0) -> NodeView:
    return NodeView(node, term, leader, commit, 0, 0, entries)


def test_incremental_log_matching_catches_a_divergence() -> None:
    judge = StepJudge()
    log = [Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"b")]
    judge.observe_node(_view("n1", log))
    judge.observe_node(_view("n2", list(log)))
    log.append(Entry(2, 3, 0, b"c"))
    judge.observe_node(_view("n1", log))  # only the new entry is looked at
    with pytest.raises(InvariantViolation, match="log matching"):
        judge.observe_node(_view("n2", [Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"X")]))


def test_step_judge_election_safety_and_names() -> None:
    judge = StepJudge()
    judge.observe_node(_view("n1", [], term=4, leader=True))
    with pytest.raises(InvariantViolation) as info:
        judge.observe_node(_view("n2", [], term=4, leader=True))
    assert invariant_name(str(info.value)) == "election safety"
    assert invariant_name("entry 5 conflicts with a committed entry (committed=7)") == (
        "leader completeness"
    )


def test_history_is_the_harness_jsonl_format_and_linearizable(tmp_path: Path) -> None:
    from harness.checker import check_jsonl
    from harness.history import read_events

    result = run_seed(SimSpec(seed=4, ops=60, fault_s=4.0), keep_history=True)
    assert result.ok and result.linearizable is True
    path = tmp_path / "sim-history.jsonl"
    path.write_text(result.history_jsonl)
    records = read_events(path)  # the harness's reader: the same records, the same type
    assert records and all(isinstance(r, Event) for r in records)
    assert "".join(encode_event(r).decode() for r in records) == result.history_jsonl
    lines = [json.loads(line) for line in result.history_jsonl.splitlines()]
    assert all({"type", "process", "f", "time"} <= set(r) for r in lines)
    ops = [r for r in records if r.is_client]
    assert {r.type for r in ops} >= {"invoke", "ok"}
    assert any(r.process == "nemesis" for r in records)
    assert all(r.consistency in LEVELS for r in ops)
    times = [r.time for r in records]
    assert times == sorted(times)
    assert check_jsonl(path, model="kv").valid is True


def test_final_reads_succeed_after_heal() -> None:
    result = run_seed(SimSpec(seed=8, ops=60, fault_s=4.0), keep_history=True)
    assert result.ok
    last = [e for _, e in iter_jsonl(result.history_jsonl)][-8:]
    finals = [r for r in last if r.type == "ok" and r.f == "read" and r.process >= 5]
    assert len(finals) == 4


def test_library_does_not_import_the_harness() -> None:
    code = (
        "import sys, exapyte.sim, exapyte.sim.cli, exapyte.sim.judge\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'harness'], 'harness imported'"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)


def test_shrinking_reduces_a_failing_case() -> None:
    mutant = MUTANTS_BY_NAME["commit-no-majority"]
    with mutant.patches():
        outcome = hunt(mutant, seeds_max=10)
        assert outcome.caught and outcome.seed is not None
        failing = run_seed(mutant_spec(mutant, outcome.seed))
        assert not failing.ok
        shrunk = shrink(failing, runs_max=25)
        small = shrunk.shrunk
        assert not small.ok and small.check == failing.check
        assert small.spec.seed == failing.spec.seed
        assert small.spec.ops < failing.spec.ops or small.faults < failing.faults
        again = run_seed(small.spec)  # the shrunk case replays to the same failure
        assert not again.ok and again.trace_hash == small.trace_hash
    assert "ops" in shrunk.describe()


def test_cli_prints_trace_hash_summary_and_writes_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = tmp_path / "h.jsonl"
    rc = main(["--protocol", "raft", "--seed", "6", "--ops", "40", "--fault-seconds", "3",
               "--history", str(history)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "seed=6 trace_hash=" in out and "verdict=ok" in out
    assert "speed ratio" in out and "seeds run" in out
    assert sum(1 for e in read_jsonl(history) if e.type == "invoke") > 10


def test_cli_json_mode(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--seed", "1", "--seeds", "2", "--ops", "30", "--fault-seconds", "2", "--json",
               "--faults", "partition,crash"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    assert [r["seed"] for r in lines[:2]] == [1, 2]
    assert lines[-1]["summary"]["seeds"] == 2 and lines[-1]["summary"]["speed_ratio"] > 1


def test_cli_prints_replay_and_shrunk_case_for_a_failing_seed(capsys: pytest.CaptureFixture[str]) -> None:
    mutant = MUTANTS_BY_NAME["no-truncate"]
    with mutant.patches():
        rc = main(["--seed", "0", "--seeds", "2", "--faults", "partition,crash,loss,pause"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "verdict=FAIL(" in out
    assert "replay: python -m exapyte.sim --protocol raft --seed " in out
    assert "shrunk parameters: ops=" in out
    assert "replay shrunk: python -m exapyte.sim" in out


def test_cli_rejects_unknown_fault_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--faults", "partition,meteor"])
    assert "allowed" in capsys.readouterr().err
