"""The control group in the simulator: sharded runs host the control replica group on the
control nodes with the product's ControlStateMachine and ControlAgent (founding proposal, shard
reports, the feed), judge it after every step like the shards, and check at the end that the
control plane's record matches every shard's real membership after the rebalances."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from exapyte.control.group import ControlAgent, ControlStateMachine
from exapyte.sim import SimSpec, World, run_seed
from exapyte.sim.faults import REBALANCE
from exapyte.wire import CONTROL_GROUP
from tests.mutants.mutants import patched

ROOT = Path(__file__).resolve().parents[2]
SHARDED = {"shards": 4, "keys": 8, "ops": 80, "fault_s": 5.0}


def moves_run(seed: int = 9) -> SimSpec:
    return SimSpec(seed=seed, faults=("partition", "crash", REBALANCE), **SHARDED)  # type: ignore[arg-type]


def test_the_control_group_runs_is_judged_and_records_the_moves() -> None:
    world = World(moves_run())
    assert world.control is not None and world.control.voters == ("n1", "n2", "n3")
    world.run()
    assert world.converged, world.divergence
    assert world.rebalancer.counters["moves_done"] >= 2  # add n4, then remove n2
    assert world.judges[CONTROL_GROUP].checks > 100  # observed after every step, like a shard
    hosts = sorted(n for n in world.node_ids if CONTROL_GROUP in dict(world.nodes[n].replicas()))
    assert hosts == ["n1", "n2", "n3"]  # the control group stays where the config put it
    leader = next(
        r for n in hosts for g, r in world.nodes[n].replicas()
        if g == CONTROL_GROUP and r.core.role.value == "leader"
    )
    assert isinstance(leader.sm, ControlStateMachine)
    plane = leader.sm.plane
    for spec in world.placement:
        shard_leader = next(
            r for n in world.node_ids for g, r in world.nodes[n].replicas()
            if g == spec.id and r.core.role.value == "leader"
        )
        conf = shard_leader.sm.conf
        entry = plane.shards[spec.id]
        assert (entry.conf_version, entry.group.voters) == (conf.version, conf.voters) or (
            conf.version == 0 and entry.group.voters == spec.voters
        )
    assert any("n4" in e.group.voters for e in plane.shards.values())  # the move is recorded
    assert world.plane_divergence == ""


def test_a_plane_that_misses_the_reports_fails_the_run() -> None:
    def silent(self: ControlAgent) -> None:
        return None  # Broken: shard leaders never report what their groups applied

    with patched(ControlAgent, "_report", silent):
        result = run_seed(moves_run())
    assert not result.ok and result.check == "liveness", result.check
    assert "control plane: shard" in result.detail


def test_a_sharded_run_without_rebalances_keeps_its_plane_at_the_placement() -> None:
    result = run_seed(SimSpec(seed=2, faults=("partition", "crash", "loss"), **SHARDED))  # type: ignore[arg-type]
    assert result.ok, (result.check, result.detail)


def test_the_control_groups_run_does_not_depend_on_python_hash_seed() -> None:
    hashes = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
        out = subprocess.run(
            [sys.executable, "-m", "exapyte.sim", "--seed", "9", "--shards", "4", "--keys", "8",
             "--ops", "60", "--fault-seconds", "4", "--faults", "partition,crash,rebalance"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
        ).stdout
        found = re.search(r"seed=9 trace_hash=([0-9a-f]+) verdict=ok", out)
        assert found, out
        hashes.append(found.group(1))
    assert hashes[0] == hashes[1]
