"""Without processes: the level workloads' mix, sessions kept across reconnects, the levels
checker of a run and its section of the report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from harness import generator as gen
from harness import report
from harness.client import HarnessClient
from harness.history import HistoryRecorder
from harness.runner import check_run
from harness.workloads import LEVELS, PRIMARY_SHARE, WorkloadOptions, get_workload

MS = 1_000_000


def test_a_level_workload_mixes_levels_around_its_own() -> None:
    ops = [op for _, op in gen.drain(get_workload("session").build(WorkloadOptions(seed=4)), concurrency=1,
                                     ops_max=2000)]
    levels = Counter(op.consistency for op in ops)
    assert set(levels) == set(LEVELS)
    share = levels["session"] / len(ops)
    assert PRIMARY_SHARE - 0.05 < share < PRIMARY_SHARE + 0.15  # 60%, plus its part of the rest
    assert {op.f for op in ops} == {"read", "write"}
    writes = [op.value for op in ops if op.f == "write"]
    assert len(writes) == len(set(writes))  # unique values
    mixed = Counter(op.consistency for _, op in gen.drain(get_workload("levels").build(WorkloadOptions(seed=4)),
                                                           concurrency=1, ops_max=2000))
    assert set(mixed) == set(LEVELS) and max(mixed.values()) < 2 * min(mixed.values())


class _FakeClient:
    made: list[_FakeClient] = []

    def __init__(self, endpoints: Any, *, client_id: str | None = None, session_tokens: dict[str, int] | None = None,
                 **kwargs: Any) -> None:
        self.client_id = client_id or f"c{len(self.made)}"
        self.session_tokens = dict(session_tokens or {})
        self.last_node = None
        self.made.append(self)

    def close(self) -> None:
        pass


def test_a_worker_keeps_its_session_across_reconnects() -> None:
    client = HarnessClient({"n1": "tcp://127.0.0.1:1"}, client_factory=_FakeClient)
    first = client.session
    client.client.session_tokens["default"] = 42
    client.reconnect()
    assert len(_FakeClient.made) >= 2 and client.client is _FakeClient.made[-1]
    assert client.session == first and client.session_tokens == {"default": 42}


def _level_run(run_dir: Path, stale_session_read: bool) -> dict[str, Any]:
    """A session writes x=a at index 5 and reads it back (at index 4 on n2 when stale); the final
    reads on every replica agree."""
    run_dir.mkdir(parents=True)
    clock = iter(t * MS for t in range(0, 10**6, 7))
    with HistoryRecorder(run_dir / "history.jsonl", clock=lambda: next(clock)) as rec:
        common = {"session": "s0", "group": "default"}
        rec.record("invoke", 0, "write", "k0", "a", consistency="session", **common)
        rec.record("ok", 0, "write", "k0", "a", node="n1", consistency="session", index=(1, 5), replica="n1", **common)
        rec.record("invoke", 0, "read", "k0", None, consistency="session", **common)
        if stale_session_read:
            rec.record("ok", 0, "read", "k0", None, node="n2", consistency="session", index=(1, 4), replica="n2",
                       **common)
        else:
            rec.record("ok", 0, "read", "k0", "a", node="n2", consistency="session", index=(1, 5), replica="n2",
                       **common)
        final = rec.now_ns() + 1
        for node in ("n1", "n2", "n3"):
            rec.record("invoke", 0, "read", "k0", None, consistency="eventual", **common)
            rec.record("ok", 0, "read", "k0", "a", node=node, consistency="eventual", index=(1, 5), replica=node,
                       **common)
    results: dict[str, Any] = {"test": "session-synthetic", "seed": 1, "options": {}, "notes": []}
    results |= check_run(run_dir, "session", final, staleness={"versions": 100, "ms": 5000})
    report.write_report(run_dir, results)
    return results


def test_the_levels_checker_judges_a_run_and_the_report_shows_it(tmp_path: Path) -> None:
    good = _level_run(tmp_path / "good", stale_session_read=False)
    levels = good["checkers"]["levels"]
    assert good["valid"] is True and levels["valid"] is True
    assert levels["evidence"]["table"]["session"] == {
        "ops": 2, "strong": 2, "bounded_staleness": 0, "session": 0, "consistent_prefix": 0, "eventual": 0,
        "none": 0, "below_requested": 0}
    assert levels["evidence"]["convergence"]["replicas"] == ["n1", "n2", "n3"]
    bad = _level_run(tmp_path / "bad", stale_session_read=True)
    levels = bad["checkers"]["levels"]
    assert bad["valid"] is False and levels["valid"] is False
    assert levels["evidence"]["table"]["session"]["below_requested"] == 1
    (cx,) = [c for c in levels["evidence"]["counterexample"] if c["check"] == "read-your-writes"]
    assert len(cx["ops"]) == 2 and "asked session" in cx["ops"][0]
    page = (tmp_path / "bad" / "report.html").read_text()
    assert "Consistency levels" in page and "Counterexample: read-your-writes" in page
    json.dumps(bad, default=str)
