"""The deterministic simulator: a whole exapyte cluster in one thread, driven by one seed.

Theory of operation
-------------------
A run (:class:`~exapyte.sim.world.World`) puts N nodes, each the product
:class:`~exapyte.runtime.replica.Replica` over a :class:`~exapyte.sim.storage.SimStorage`, on a
simulated network (:mod:`exapyte.sim.network`) and a simulated clock
(:mod:`exapyte.sim.scheduler`). Clients (:mod:`exapyte.sim.workload`) send the real
``ClientRequest`` messages with timeouts and retries and record a history in the harness's JSONL
format; a nemesis plays a fault schedule planned from the seed (:mod:`exapyte.sim.faults`):
partitions of any shape, crashes with loss of unsynced writes, pauses, loss, duplication,
reordering and clock drift. Then everything heals, a quiet period passes and every key is read.

Judges (:mod:`exapyte.sim.judge`): election safety, log matching, leader completeness and
state-machine safety after every step; at the end, no acknowledged write lost, liveness (final
reads succeed, replicas converge) and linearizability of the history. The linearizability checker
belongs to the harness and is imported lazily inside :func:`exapyte.sim.judge.check_linearizable`
only: nothing in ``exapyte`` imports ``harness`` at module level.

Determinism: one ``random.Random`` per consumer, seeded from the run's seed through blake2b;
no wall clock, threads, sockets or ``hash()``-ordered iteration. The same
:class:`~exapyte.sim.world.SimSpec` gives the same trace hash. Failing seeds print a replay
command and are shrunk (:func:`~exapyte.sim.runner.shrink`). See docs/simulator.md.
"""

from __future__ import annotations

from exapyte.sim.faults import (
    FAULT_KINDS,
    Fault,
    FaultProfile,
    partition_links,
    plan_faults,
)
from exapyte.sim.runner import ShrinkResult, SimResult, run_seed, run_seeds, shrink
from exapyte.sim.storage import SimStorage
from exapyte.sim.world import SimSpec, World

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultProfile",
    "ShrinkResult",
    "SimResult",
    "SimSpec",
    "SimStorage",
    "World",
    "partition_links",
    "plan_faults",
    "run_seed",
    "run_seeds",
    "shrink",
]
