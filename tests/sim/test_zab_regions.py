"""ZAB in sharded runs with nodes dealt over regions and rebalances: seeds that once left a
replica behind for ever (a member that missed a membership change refusing the new leader, a
new member that gave up during discovery and was never invited again, a member that missed
its promotion to voter, a voter whose stale configuration still counted a removed peer, a
follower whose last entry the leader had compacted away) or a read unanswered (a leader's replica dropped while a read waited in it). Each must pass,
converged."""

from __future__ import annotations

import pytest

from exapyte.sim import SimSpec, run_seed
from exapyte.sim.faults import SHARDED_FAULT_KINDS

REGRESSIONS = [
    ("sync", 19),  # s0003: n5 refused leader n6, added while it was down
    ("sync", 21),  # s0002: n2 timed out to LOOKING after FOLLOWERINFO, knowing no voter
    ("optimized", 3),  # s0001: n2 refused leader n1 after a leadership transfer
    ("optimized", 6),
    ("optimized", 14),
    ("optimized", 151),  # a read waiting in a replica the rebalancer dropped
    ("async", 103),  # s0002: n3, promoted learner -> voter while cut off, never voted
    ("async", 125),  # s0003: n4 restarted with a stale commit hint, its quorum needed n1
    ("async", 141),  # s0002: as 103
    ("optimized", 112),  # s0002: n5's PINGACKs named an entry the leader had compacted
]


@pytest.mark.parametrize(("replication", "seed"), REGRESSIONS)
def test_zab_sharded_regions_seed_converges(replication: str, seed: int) -> None:
    spec = SimSpec(seed=seed, nodes=5, protocol="zab", shards=4, regions=3,
                   replication=replication, faults=SHARDED_FAULT_KINDS, keys=8)
    result = run_seed(spec)
    assert result.ok, f"{spec.replay_command()}: {result.check}: {result.detail}"
    assert result.counters.get("fault_rebalance", 0) >= 1
