"""Determinism: a seed is a complete description of a run (DESIGN.md §4, STYLE.md 9)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from exapyte.sim import SimSpec, run_seed

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"ops": 60, "fault_s": 4.0}


def test_same_seed_same_trace_hash_and_history() -> None:
    for seed in (0, 7, 42):
        first = run_seed(SimSpec(seed=seed, **SMALL), keep_history=True)
        second = run_seed(SimSpec(seed=seed, **SMALL), keep_history=True)
        assert first.ok, first.detail
        assert first.trace_hash == second.trace_hash
        assert first.history_jsonl == second.history_jsonl
        assert first.counters == second.counters


def test_different_seeds_give_different_runs() -> None:
    hashes = {run_seed(SimSpec(seed=seed, **SMALL)).trace_hash for seed in range(4)}
    assert len(hashes) == 4


def test_five_nodes_are_deterministic_too() -> None:
    spec = SimSpec(seed=3, nodes=5, **SMALL)
    assert run_seed(spec).trace_hash == run_seed(spec).trace_hash


def test_trace_hash_does_not_depend_on_python_hash_seed() -> None:
    # str hashing is randomized per process: the simulator must never iterate in hash order.
    hashes = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
        out = subprocess.run(
            [sys.executable, "-m", "exapyte.sim", "--seed", "5", "--ops", "50",
             "--fault-seconds", "3"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        found = re.search(r"seed=5 trace_hash=([0-9a-f]+) verdict=ok", out)
        assert found, out
        hashes.append(found.group(1))
    assert hashes[0] == hashes[1]
