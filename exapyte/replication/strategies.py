"""The three replication strategies (see :mod:`exapyte.replication.base` for their promises)."""

from __future__ import annotations

from collections.abc import Mapping

from exapyte.replication.base import Latency, Quota, RegionId, ReplicaPlan, round_robin

__all__ = ["AsyncReplication", "OptimizedReplication", "SyncReplication"]


def _present(capacity: Mapping[RegionId, int]) -> list[RegionId]:
    return [r for r, n in capacity.items() if n > 0]


def _plan(order: list[RegionId], voters: Mapping[RegionId, int], capacity: Mapping[RegionId, int],
          *, everywhere: bool, leader_region: RegionId | None) -> ReplicaPlan:
    """Quotas from the voter counts: the nodes that do not vote learn when ``everywhere``;
    otherwise a region without a voter gets one learner."""
    quotas = []
    for region in order:
        v = voters.get(region, 0)
        if everywhere:
            learners = capacity[region] - v
        else:
            learners = 0 if v else min(1, capacity[region])
        if v or learners:
            quotas.append(Quota(region, v, learners))
    return ReplicaPlan(tuple(quotas), leader_region)


class SyncReplication:
    """Voters span the regions; a majority of all voters persists a write before its ack."""

    name = "sync"

    def __init__(self, latency: Latency) -> None:
        self.latency = latency

    def plan(self, home: RegionId, capacity: Mapping[RegionId, int], replicas: int, *,
             everywhere: bool = False, homed: bool = True) -> ReplicaPlan | None:
        if not homed and not everywhere:
            return None  # distinct regions in ring preference order (exapyte.distribution.ring)
        order = self.latency.nearest_first(home, _present(capacity))
        voters = round_robin(order, capacity, replicas)
        plan = ReplicaPlan(tuple(
            Quota(r, voters[r], capacity[r] - voters[r] if everywhere else 0)
            for r in order if voters[r] or everywhere
        ), home if homed else None)
        return plan


class AsyncReplication:
    """Voters in the home region only; learners elsewhere, fed in log order."""

    name = "async"

    def __init__(self, latency: Latency) -> None:
        self.latency = latency

    def plan(self, home: RegionId, capacity: Mapping[RegionId, int], replicas: int, *,
             everywhere: bool = False, homed: bool = True) -> ReplicaPlan:
        order = self.latency.nearest_first(home, _present(capacity))
        voters = {home: min(replicas, capacity.get(home, 0))}
        return _plan(order, voters, capacity, everywhere=everywhere, leader_region=home)


class OptimizedReplication:
    """Home below a quorum, home plus nearest region a quorum, the rest nearest first."""

    name = "optimized"

    def __init__(self, latency: Latency) -> None:
        self.latency = latency

    def plan(self, home: RegionId, capacity: Mapping[RegionId, int], replicas: int, *,
             everywhere: bool = False, homed: bool = True) -> ReplicaPlan:
        order = self.latency.nearest_first(home, _present(capacity))
        quorum = replicas // 2 + 1
        at_home = max(1, min(quorum - 1, capacity.get(home, 0)))
        others = order[1:]
        # The rest nearest first, no region past quorum - 1 while another has room (so the home
        # region and its nearest neighbour make a quorum, and no one region holds a quorum).
        rest = round_robin(others, capacity, replicas - at_home, cap=quorum - 1)
        voters = {home: at_home, **rest}
        short = replicas - sum(voters.values())
        if short > 0:  # the other regions are full: the home region takes what is left
            voters[home] += min(short, capacity[home] - at_home)
        return _plan(order, voters, capacity, everywhere=everywhere, leader_region=home)
