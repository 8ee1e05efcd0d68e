"""Centralized distribution: one shard, ``default``, holds every key (exapyte's default).

The shard keeps the group id every exapyte release has used for its single group (the wire's
default ``ClientRequest.group``, and the storage file of the node), so a centralized cluster's
data directory and clients are unchanged by the other strategies.

The group's voters are the configured initial voters, or every node (what a cluster of one Raft
group has always done); the replication factor is not used: every member holds every key. The
replication strategy says which members vote (``sync``: all of them; ``async``: those of the home
region, the region of the first founding node, the others learn; ``optimized``: by link latency).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from exapyte.distribution.base import (
    GroupSpec,
    NodeId,
    Placement,
    PlacementError,
    RegionId,
    ShardId,
)
from exapyte.replication.base import ReplicationPolicy

__all__ = ["CentralizedStrategy", "THE_SHARD"]

THE_SHARD: ShardId = "default"


class CentralizedStrategy:
    name = "centralized"

    def __init__(
        self, voters: Sequence[NodeId] = (), replication: ReplicationPolicy | None = None,
        home: RegionId | None = None,
    ) -> None:
        self.voters = tuple(voters)
        self.replication = replication
        self.home = home  # default: the region of the first member

    def shard_of(self, key: str) -> ShardId:
        return THE_SHARD

    def shards(self) -> tuple[ShardId, ...]:
        return (THE_SHARD,)

    def scan_shards(self, start: str, end: str | None) -> tuple[ShardId, ...]:
        return (THE_SHARD,)

    def place(self, nodes: Mapping[NodeId, RegionId], replication_factor: int) -> Placement:
        if not nodes:
            raise PlacementError("no node to place the shard on")
        if self.voters:
            missing = [v for v in self.voters if v not in nodes]
            if missing:
                raise PlacementError(f"initial voters {missing} are not among the nodes")
            members = self.voters
        else:
            members = tuple(sorted(nodes))
        if self.replication is None:
            return Placement((GroupSpec(THE_SHARD, members),))
        # Every member holds every key; the replication strategy says which of them vote.
        per_region = Counter(nodes[n] for n in members)
        home = self.home if self.home is not None else nodes[members[0]]
        plan = self.replication.plan(home, per_region, len(members), everywhere=True, homed=False)
        if plan is None:
            return Placement((GroupSpec(THE_SHARD, members),))
        voters: list[NodeId] = []
        for q in plan.quotas:
            voters += [n for n in members if nodes[n] == q.region][: q.voters]
        learners = tuple(n for n in members if n not in voters)
        return Placement((GroupSpec(THE_SHARD, tuple(voters), learners, plan.leader_region),))
