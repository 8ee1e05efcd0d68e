"""The simulator catches a read that a node accepts and never answers."""

from __future__ import annotations

from typing import Any

import pytest

from exapyte.runtime.replica import Replica
from exapyte.sim import SimSpec, run_seed
from exapyte.sim.world import READ_HELD_TICKS_MAX
from tests.mutants.mutants import MUTANTS_BY_NAME
from tests.mutants.run import hunt


def test_every_read_a_node_accepts_is_answered_in_a_healthy_run() -> None:
    result = run_seed(SimSpec(seed=3, ops=80, fault_s=4.0))
    assert result.ok, result.detail
    assert result.counters["reads_expired"] == 0


def test_a_read_held_for_ever_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def swallow(self: Replica, identity: Any, req: Any) -> None:
        return  # accepted, never answered, never registered anywhere

    monkeypatch.setattr(Replica, "on_read", swallow)
    result = run_seed(SimSpec(seed=3, ops=40, fault_s=2.0, faults=()))
    assert result.check == "liveness"
    assert "held without an answer" in result.detail
    assert f"for {READ_HELD_TICKS_MAX + 1} ticks" in result.detail


def test_reads_the_core_failed_but_the_host_ignored_fail_the_run() -> None:
    outcome = hunt(MUTANTS_BY_NAME["reads-never-fail"], 30)
    assert outcome.caught and outcome.check == "liveness"
    assert "refused only by the replica's own deadline" in outcome.detail
