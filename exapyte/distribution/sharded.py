"""Sharded distribution: a fixed number of shards, keys by a stable hash, replicas by a ring.

Theory of operation
-------------------
``shard_of(key)`` is ``blake2b-64(key) mod shards``: the shards never change, so neither does a
key's shard, and the modulo's bias over 2**64 is negligible. The shards' replicas are placed on
the nodes by consistent hashing with virtual nodes and bounded loads
(:mod:`exapyte.distribution.ring`): adding or removing a node changes the replica sets of about
``rf/(N+1)`` of the shards, and each such shard moves one replica, by membership changes in its
own log (``plan_moves``). A scan may touch every shard. The replication strategy
(:mod:`exapyte.replication`) says how many replicas of a shard each region holds and which vote;
the ring fills those quotas (``sync``: distinct regions in preference order).
"""

from __future__ import annotations

from collections.abc import Mapping

from exapyte import limits
from exapyte.distribution.base import (
    NodeId,
    Placement,
    PlacementError,
    RegionId,
    ShardId,
    shard_name,
    stable_hash64,
)
from exapyte.distribution.ring import place_on_ring
from exapyte.replication.base import ReplicationPolicy

__all__ = ["ShardedStrategy", "KEY_SALT"]

KEY_SALT = b"exapyte.key"


class ShardedStrategy:
    name = "sharded"

    def __init__(
        self, shards: int, virtual_nodes: int = limits.VIRTUAL_NODES_DEFAULT,
        replication: ReplicationPolicy | None = None,
    ) -> None:
        if not 1 <= shards <= limits.SHARDS_MAX:
            raise PlacementError(f"shards must be in 1..{limits.SHARDS_MAX}, got {shards}")
        if virtual_nodes < 1:
            raise PlacementError(f"virtual_nodes must be >= 1, got {virtual_nodes}")
        self.shard_count = shards
        self.virtual_nodes = virtual_nodes
        self.replication = replication
        self._shards = tuple(shard_name(i) for i in range(shards))

    def shard_of(self, key: str) -> ShardId:
        return self._shards[stable_hash64(KEY_SALT, key) % self.shard_count]

    def shards(self) -> tuple[ShardId, ...]:
        return self._shards

    def scan_shards(self, start: str, end: str | None) -> tuple[ShardId, ...]:
        return self._shards  # keys are spread by hash: any shard may hold any range

    def place(self, nodes: Mapping[NodeId, RegionId], replication_factor: int) -> Placement:
        groups = place_on_ring(
            self._shards, nodes, replication_factor, self.virtual_nodes, policy=self.replication,
        )
        return Placement(tuple(groups))
