"""Centralized distribution: one shard, ``default``, holds every key (exapyte's default).

The shard keeps the group id every exapyte release has used for its single group (the wire's
default ``ClientRequest.group``, and the storage file of the node), so a centralized cluster's
data directory and clients are unchanged by the other strategies.

The group's voters are the configured initial voters, or every node (what a cluster of one Raft
group has always done); the replication factor is not used: every voter holds every key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exapyte.distribution.base import (
    GroupSpec,
    NodeId,
    Placement,
    PlacementError,
    RegionId,
    ShardId,
)

__all__ = ["CentralizedStrategy", "THE_SHARD"]

THE_SHARD: ShardId = "default"


class CentralizedStrategy:
    name = "centralized"

    def __init__(self, voters: Sequence[NodeId] = ()) -> None:
        self.voters = tuple(voters)

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
            voters = self.voters
        else:
            voters = tuple(sorted(nodes))
        return Placement((GroupSpec(THE_SHARD, voters),))
