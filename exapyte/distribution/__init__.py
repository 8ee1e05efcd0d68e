"""Distribution strategies: which shard holds a key, which nodes hold a shard.

See :mod:`exapyte.distribution.base` for the interface and ``docs/distribution.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exapyte import limits
from exapyte.distribution.base import (
    GroupSpec,
    Move,
    MoveStep,
    Placement,
    PlacementError,
    ShardId,
    Step,
    Strategy,
    check_plan,
    merge_scan,
    plan_moves,
    region_of_shard,
    shard_name,
    stable_hash64,
)
from exapyte.distribution.centralized import CentralizedStrategy
from exapyte.distribution.hierarchical import HierarchicalStrategy
from exapyte.distribution.sharded import ShardedStrategy

__all__ = [
    "CentralizedStrategy",
    "GroupSpec",
    "HierarchicalStrategy",
    "Move",
    "MoveStep",
    "Placement",
    "PlacementError",
    "ShardId",
    "ShardedStrategy",
    "Step",
    "Strategy",
    "check_plan",
    "make_strategy",
    "merge_scan",
    "plan_moves",
    "region_of_shard",
    "shard_name",
    "stable_hash64",
]


def make_strategy(
    name: str,
    *,
    shards: int = 1,
    virtual_nodes: int = limits.VIRTUAL_NODES_DEFAULT,
    regions: Sequence[str] = (),
    rules: Mapping[str, str] | None = None,
    voters: Sequence[str] = (),
) -> Strategy:
    """The strategy ``name`` (``distribution.strategy``) with its parameters.

    ``shards`` is ``distribution.shards`` (per region for ``hierarchical``); ``regions`` the
    regions that hold nodes; ``rules`` the hierarchical placement rules (key prefix -> region);
    ``voters`` the centralized group's initial voters (empty: every node).
    """
    if name == "centralized":
        return CentralizedStrategy(voters)
    if name == "sharded":
        return ShardedStrategy(shards, virtual_nodes)
    if name == "hierarchical":
        return HierarchicalStrategy(regions, shards, virtual_nodes, rules)
    raise PlacementError(
        f"unknown distribution strategy {name!r}: centralized, sharded or hierarchical"
    )
