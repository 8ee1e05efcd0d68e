"""Distribution strategies: which shard holds a key, which nodes hold a shard.

See :mod:`exapyte.distribution.base` for the interface and ``docs/distribution.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

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
from exapyte.replication.base import ReplicationPolicy

if TYPE_CHECKING:
    from exapyte.config import Config

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
    "from_config",
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
    replication: ReplicationPolicy | None = None,
) -> Strategy:
    """The strategy ``name`` (``distribution.strategy``) with its parameters.

    ``shards`` is ``distribution.shards`` (per region for ``hierarchical``); ``regions`` the
    regions that hold nodes; ``rules`` the hierarchical placement rules (key prefix -> region);
    ``voters`` the centralized group's initial voters (empty: every node); ``replication`` the
    replication strategy whose per-region quotas the placement fills (None: every voter of a
    centralized group, distinct regions first for sharded, the home region only for
    hierarchical).
    """
    if name == "centralized":
        return CentralizedStrategy(voters, replication)
    if name == "sharded":
        return ShardedStrategy(shards, virtual_nodes, replication)
    if name == "hierarchical":
        return HierarchicalStrategy(regions, shards, virtual_nodes, rules, replication)
    raise PlacementError(
        f"unknown distribution strategy {name!r}: centralized, sharded or hierarchical"
    )


def from_config(cfg: Config) -> tuple[Strategy, Placement]:
    """The strategy ``cfg.distribution`` names and the initial placement of its shards on the
    cluster's founding nodes: a pure function of the config, so every node, client and tool
    computes the same (rebalancing moves replicas from there; the groups' logs say where they
    are now).

    The replication factor is ``distribution.replication_factor`` capped at the nodes available
    (per region for ``hierarchical``: a region of two nodes gets groups of two voters while one of
    three gets three). Raises PlacementError when the shards cannot be placed.
    """
    from exapyte import replication

    d = cfg.distribution
    founders = set(cfg.initial_voters())
    # The initial placement uses the founding nodes (consensus.initial_voters, default every
    # node); a node listed in the cluster but not among them gets replicas by a rebalance.
    nodes = {n.id: n.region for n in cfg.cluster.nodes if n.id in founders}
    regions = sorted(set(nodes.values()))
    strategy = make_strategy(
        d.strategy,
        shards=d.shards,
        virtual_nodes=d.virtual_nodes,
        regions=regions,
        rules=dict(d.rules),
        voters=cfg.initial_voters(),
        replication=replication.from_config(cfg),
    )
    # Capped at the nodes available: the whole cluster, or each region's own nodes for the
    # hierarchical strategy (its placement caps region by region).
    factor = min(d.replication_factor, len(nodes))
    return strategy, strategy.place(nodes, factor)
