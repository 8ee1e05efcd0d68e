"""Each checker must reject a known-bad hand-made history, and accept its good twin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.checker.invariants import (
    Verdict,
    check_bank,
    check_counter,
    check_crashes,
    check_election_safety,
    check_linearizable,
    check_lost_writes,
    check_set,
    compose,
    run_checker,
)
from harness.checker.stats import check_stats, percentile
from harness.history import (
    HistoryRecorder,
    Op,
    nemesis_intervals,
    pair_ops,
    read_events,
)

MS = 1_000_000


class H:
    """A hand-made history: ``op(process, f, key, value, start_ms, end_ms, type, result)``."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def op(self, process: int, f: str, key: str | None, value: Any, start: float, end: float | None,
           type: str = "ok", result: Any = None, error: str | None = None) -> H:
        self.events.append({"type": "invoke", "process": process, "f": f, "key": key, "value": value,
                            "time": int(start * MS), "node": None, "consistency": "strong", "session": None})
        if end is not None:
            done: dict[str, Any] = {"type": type, "process": process, "f": f, "key": key,
                                    "value": result if result is not None else value, "time": int(end * MS),
                                    "node": "n1", "consistency": "strong", "session": None}
            if error:
                done["error"] = error
            self.events.append(done)
        return self

    def ops(self) -> list[Op]:
        return pair_ops(sorted(self.events, key=lambda e: e["time"]))


FINAL = 100 * MS


# --- lost writes -------------------------------------------------------------------------------


def test_lost_writes_rejects_an_acknowledged_write_that_vanished() -> None:
    h = (H().op(0, "write", "x", 1, 0, 5).op(1, "write", "x", 2, 10, 15)
         .op(0, "read", "x", None, 100, 101, result=1))
    verdict = check_lost_writes(h.ops(), FINAL)
    assert verdict.valid is False
    assert verdict.evidence["lost"][0]["lost_write"]["value"] == 2
    assert "lost" in (verdict.cause or "")


def test_lost_writes_accepts_concurrent_writes_in_either_order() -> None:
    h = (H().op(0, "write", "x", 1, 0, 20).op(1, "write", "x", 2, 10, 15)
         .op(0, "read", "x", None, 100, 101, result=1))
    assert check_lost_writes(h.ops(), FINAL).valid is True


def test_lost_writes_rejects_a_key_that_reads_absent_or_a_phantom_value() -> None:
    gone = H().op(0, "write", "x", 1, 0, 5).op(0, "read", "x", None, 100, 101, result=None)
    assert check_lost_writes(gone.ops(), FINAL).valid is False
    phantom = H().op(0, "write", "x", 1, 0, 5).op(0, "read", "x", None, 100, 101, result=7)
    assert check_lost_writes(phantom.ops(), FINAL).valid is False
    maybe = H().op(0, "write", "x", 1, 0, None).op(1, "read", "x", None, 100, 101, result=1)
    assert check_lost_writes(maybe.ops(), FINAL).valid is True  # an info write may have happened
    assert check_lost_writes(H().op(0, "write", "x", 1, 0, 5).ops(), FINAL).valid == "unknown"


def test_lost_writes_counts_cas_as_a_write_of_its_new_value() -> None:
    h = (H().op(0, "write", "x", 1, 0, 5).op(1, "cas", "x", [1, 3], 10, 15)
         .op(0, "read", "x", None, 100, 101, result=1))
    assert check_lost_writes(h.ops(), FINAL).valid is False


# --- set ---------------------------------------------------------------------------------------


def test_set_rejects_a_lost_add_and_an_element_never_added() -> None:
    base = H().op(0, "add", None, 1, 0, 1).op(1, "add", None, 2, 0, 1).op(2, "add", None, 3, 0, None)
    lost = H()
    lost.events = list(base.events)
    lost.op(0, "read-set", None, None, 100, 101, result=[1])
    verdict = check_set(lost.ops(), FINAL)
    assert verdict.valid is False and verdict.evidence["lost"] == [2]
    extra = H()
    extra.events = list(base.events)
    extra.op(0, "read-set", None, None, 100, 101, result=[1, 2, 99])
    assert check_set(extra.ops(), FINAL).valid is False
    good = H()
    good.events = list(base.events)
    good.op(0, "read-set", None, None, 100, 101, result=[1, 2, 3])
    verdict = check_set(good.ops(), FINAL)
    assert verdict.valid is True and verdict.evidence["recovered"] == 1


# --- counter -----------------------------------------------------------------------------------


def test_counter_rejects_a_read_below_the_acknowledged_increments() -> None:
    h = (H().op(0, "add", "c", 3, 0, 5).op(1, "add", "c", 2, 6, 8)
         .op(0, "read-counter", "c", None, 10, 11, result=3))
    verdict = check_counter(h.ops())
    assert verdict.valid is False and verdict.evidence["errors"][0]["lower"] == 5


def test_counter_rejects_a_read_above_everything_attempted() -> None:
    h = H().op(0, "add", "c", 3, 0, 5).op(0, "read-counter", "c", None, 10, 11, result=4)
    assert check_counter(h.ops()).valid is False


def test_counter_accepts_a_read_during_an_uncertain_increment() -> None:
    # The bounds checker (as Jepsen's) allows either outcome of the uncertain increment in each read.
    h = (H().op(0, "add", "c", 3, 0, 5).op(1, "add", "c", 2, 6, None)
         .op(0, "read-counter", "c", None, 10, 11, result=5).op(0, "read-counter", "c", None, 12, 13, result=3))
    assert check_counter(h.ops()).valid is True
    ok = H().op(0, "add", "c", 3, 0, 5).op(1, "add", "c", 2, 6, None).op(0, "read-counter", "c", None, 10, 11, result=5)
    assert check_counter(ok.ops()).valid is True


# --- bank --------------------------------------------------------------------------------------


def test_bank_rejects_a_changed_total_and_a_negative_balance() -> None:
    init = {"a0": 10, "a1": 10}
    base = H().op(0, "init", "bank", init, 0, 1).op(1, "transfer", "bank", {"from": "a0", "to": "a1", "amount": 5}, 2, 3)
    bad_total = H()
    bad_total.events = list(base.events)
    bad_total.op(0, "read-bank", "bank", None, 100, 101, result={"a0": 5, "a1": 10})
    verdict = check_bank(bad_total.ops(), FINAL)
    assert verdict.valid is False and "total 15" in (verdict.cause or "")
    negative = H()
    negative.events = list(base.events)
    negative.op(0, "read-bank", "bank", None, 100, 101, result={"a0": -5, "a1": 25})
    assert check_bank(negative.ops(), FINAL).valid is False
    vanished = H()
    vanished.events = list(base.events)
    vanished.op(0, "read-bank", "bank", None, 100, 101, result=None)
    assert check_bank(vanished.ops(), FINAL).valid is False
    good = H()
    good.events = list(base.events)
    good.op(0, "read-bank", "bank", None, 100, 101, result={"a0": 5, "a1": 15})
    assert check_bank(good.ops(), FINAL).valid is True


# --- linearizability on harness histories ------------------------------------------------------


def test_linearizable_rejects_a_stale_read_and_draws_the_counterexample(tmp_path: Path) -> None:
    h = (H().op(0, "write", "r0", 1, 0, 5).op(1, "write", "r0", 2, 10, 15)
         .op(2, "read", "r0", None, 20, 25, result=1))
    verdict, result = check_linearizable(h.ops(), "cas-register", html_path=tmp_path / "lin.html")
    assert verdict.valid is False and "key=r0" in (verdict.cause or "")
    assert (tmp_path / "lin.html").exists() and verdict.evidence["html"] == "lin.html"


def test_cas_mismatch_is_a_compare_that_did_not_match_but_a_refusal_did_not_happen() -> None:
    # cas(1 -> 3) "failed with a mismatch" while the register held 1: impossible.
    mismatch = (H().op(0, "write", "r", 1, 0, 5)
                .op(1, "cas", "r", [1, 3], 10, 15, type="fail", error="cas-mismatch"))
    assert check_linearizable(mismatch.ops(), "cas-register")[0].valid is False
    refused = (H().op(0, "write", "r", 1, 0, 5)
               .op(1, "cas", "r", [1, 3], 10, 15, type="fail", error="not_leader"))
    assert check_linearizable(refused.ops(), "cas-register")[0].valid is True
    kv = (H().op(0, "write", "k", "a", 0, 5).op(1, "delete", "k", None, 6, 7)
          .op(2, "read", "k", None, 8, 9, result="a"))
    assert check_linearizable(kv.ops(), "kv")[0].valid is False


# --- stats, composition, crashes ---------------------------------------------------------------


def test_availability_is_invalid_when_no_final_read_succeeds() -> None:
    h = H().op(0, "write", "x", 1, 0, 5).op(0, "read", "x", None, 100, 2000, type="info")
    verdict = check_stats(h.ops(), FINAL)
    assert verdict.valid is False and "did not recover" in (verdict.cause or "")
    good = H().op(0, "write", "x", 1, 0, 5).op(0, "read", "x", None, 100, 101, result=1)
    verdict = check_stats(good.ops(), FINAL)
    assert verdict.valid is True and verdict.evidence["by_f"]["write"]["p50_ms"] == 5.0
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2.0 and percentile([], 0.5) is None


def test_compose_and_a_crashing_checker_is_unknown() -> None:
    ok, bad, unk = Verdict("a", True), Verdict("b", False), Verdict("c", "unknown")
    assert compose([ok, ok]) is True and compose([ok, unk]) == "unknown" and compose([unk, bad]) is False

    def boom() -> Verdict:
        raise KeyError("value")

    crashed = run_checker("x", boom)
    assert crashed.valid == "unknown" and "crashed" in (crashed.cause or "")


# --- the history recorder ----------------------------------------------------------------------


def test_recorder_streams_jsonl_the_checker_reader_understands(tmp_path: Path) -> None:
    from harness.checker import check_jsonl

    ticks = iter(range(0, 10**9, 1000))
    path = tmp_path / "history.jsonl"
    with HistoryRecorder(path, clock=lambda: next(ticks)) as rec:
        rec.record("invoke", 0, "write", "x", 1, session="s0")
        rec.record("invoke", "nemesis", "start-partition", None, {"kind": "isolate-node", "cuts": []}, consistency="")
        rec.record("ok", 0, "write", "x", 1, node="n1", session="s0")
        rec.record("info", "nemesis", "start-partition", None, {"kind": "isolate-node"}, consistency="")
        rec.record("invoke", 1, "read", "x", None)
        rec.record("ok", 1, "read", "x", 1, node="n2")
        rec.record("invoke", "nemesis", "stop-partition", None, None, consistency="")
        rec.record("info", "nemesis", "stop-partition", None, None, consistency="")
        with pytest.raises(ValueError, match="process"):
            rec.record("ok", True, "read")  # type: ignore[arg-type]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    # an unknown field (here: no node answered yet) is left out of the line; the rest are there
    assert set(lines[0]) == {"type", "process", "f", "key", "value", "time", "consistency", "session"}
    assert "consistency" not in lines[1]  # a fault event asks for no level
    assert [e["time"] for e in lines] == sorted(e["time"] for e in lines)
    assert check_jsonl(path, model="cas-register").valid is True
    events = read_events(path)
    assert [op.f for op in pair_ops(events)] == ["write", "read"]
    intervals = nemesis_intervals(events)
    assert [i["fault"] for i in intervals] == ["partition"] and intervals[0]["end_ns"] > intervals[0]["start_ns"]


# --- crashes and election safety ---------------------------------------------------------------

CRASHED_LOG = """2026-11-23 22:37:35,062 INFO exapyte.runtime.node: node n1 serving on tcp://127.0.0.1:7701
2026-11-23 22:37:36,045 INFO exapyte.runtime.node: node n1 stopped
Traceback (most recent call last):
  File "/work/main/exapyte/runtime/node.py", line 211, in run
    self._drain_router()
  File "/work/main/exapyte/protocol/raft/core.py", line 666, in _step_leader
    raise InvariantViolation(
exapyte.errors.InvariantViolation: n1 is leader of term 2 and received Append from n2 for the same term
2026-11-23 22:37:56,519 INFO exapyte.runtime.node: node n1 serving on tcp://127.0.0.1:7701
"""
CLEAN_LOG = """2026-11-23 22:37:35,062 INFO exapyte.runtime.node: node n2 serving on tcp://127.0.0.1:7702
2026-11-23 22:37:40,100 WARNING apscheduler.executors.default: Run time of job "x" was missed by 0:00:01
2026-11-23 22:37:56,519 INFO exapyte.runtime.node: node n2: signal 15, stopping
"""


def test_crashes_finds_a_node_that_died_by_itself() -> None:
    from datetime import datetime

    origin = datetime(2026, 11, 23, 22, 37, 35).timestamp()
    bad = check_crashes({"n1": CRASHED_LOG, "n2": CLEAN_LOG}, origin)
    assert bad.valid is False and "n1" in (bad.cause or "") and "InvariantViolation" in (bad.cause or "")
    crash = bad.evidence["crashes"][0]
    assert crash["node"] == "n1" and crash["at_ms"] == 1045.0 and "_step_leader" in crash["where"]
    failed = check_crashes({"n3": "2026-11-23 22:37:35,062 ERROR exapyte.runtime.node: node n3 failed to start: "
                                  "storage at x is corrupt\n"})
    assert failed.valid is False and "corrupt" in (failed.cause or "")
    assert check_crashes({"n2": CLEAN_LOG, "n3": ""}).valid is True
    assert check_crashes({}).valid == "unknown"


def test_election_safety_rejects_two_leaders_in_one_term() -> None:
    def s(t_ms: int, node: str, role: str, term: int) -> dict[str, Any]:
        return {"time": t_ms * MS, "node": node, "role": role, "term": term, "leader": None, "commit": 0}

    good = [s(0, "n1", "leader", 2), s(0, "n2", "follower", 2), s(100, "n2", "leader", 3), s(100, "n1", "follower", 3),
            s(200, "n3", "candidate", 4)]
    assert check_election_safety(good).valid is True
    bad = check_election_safety(good + [s(300, "n3", "leader", 3)])
    assert bad.valid is False and "term 3" in (bad.cause or "")
    assert set(bad.evidence["violations"][0]["leaders"]) == {"n2", "n3"}
    assert check_election_safety([]).valid == "unknown"
