"""Mixed consistency levels in the simulator: recorded as the harness records them, followers
serving bounded reads by the simulated clock, and the per-level checkers catching known bugs."""

from __future__ import annotations

from collections import Counter

import pytest

from exapyte.history import iter_jsonl
from exapyte.sim import SimSpec, run_seed
from exapyte.sim.workload import LEVELS


def test_a_mixed_run_records_levels_sessions_replicas_and_indexes() -> None:
    result = run_seed(SimSpec(seed=0), keep_history=True)
    assert result.ok and result.levels is True and result.linearizable is True, result.detail
    events = [e for _, e in iter_jsonl(result.history_jsonl) if e.is_client]
    reads = [e for e in events if e.f == "read" and e.type == "invoke"]
    assert set(Counter(e.level for e in reads)) == set(LEVELS)
    assert all(e.level == "strong" for e in events if e.f != "read")  # writes and cas are strong
    done = [e for e in events if e.type == "ok"]
    assert done and all(e.session and e.group == "default" and e.replica for e in done)
    assert all(isinstance(e.index, tuple) and e.index[0] >= 1 and e.index[1] >= 1 for e in done)
    # weak reads reach followers, and followers serve bounded reads within the bound
    c = result.counters
    assert c["reads_bounded_staleness_follower"] > 0
    assert c["reads_session_follower"] > 0 and c["reads_eventual_follower"] > 0


def test_strong_only_runs_every_op_strong() -> None:
    result = run_seed(SimSpec(seed=0, mixed_levels=False), keep_history=True)
    assert result.ok and result.levels is None
    assert all(e.level == "strong" for _, e in iter_jsonl(result.history_jsonl) if e.is_client)
    assert "--strong-only" in result.spec.replay_command()


@pytest.mark.parametrize(("bug", "seed", "verdict", "check"), [
    ("session-ahead", 4, "levels", "monotonic-reads"),  # a session read behind the session's token
    ("bounded-unchecked", 0, "levels", "bounded-staleness"),  # a bounded read from a stale follower
    # the paused-follower staleness: K against the follower's own commit index, no time bound
    ("bounded-follower-view", 2, "levels", "bounded-staleness"),
    ("bounded-send-time", 179, "levels", "bounded-staleness"),  # 5 nodes: tests/sim/test_bounded_stamps.py
    ("apply-out-of-order", 0, "divergence", "differs from"),  # same entries, different states
    ("stop-applying", 0, "liveness", "did not converge"),  # one replica's applied index stays behind
])
def test_the_simulator_catches_known_bugs(bug: str, seed: int, verdict: str, check: str) -> None:
    nodes = 5 if bug == "bounded-send-time" else 3
    clean = run_seed(SimSpec(seed=seed, nodes=nodes))
    assert clean.ok, clean.detail
    caught = run_seed(SimSpec(seed=seed, nodes=nodes, bugs=(bug,)))
    assert not caught.ok and caught.check == verdict and check in caught.detail, caught.detail
    assert f"--bugs {bug}" in caught.spec.replay_command()
