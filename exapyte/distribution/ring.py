"""Consistent hashing with virtual nodes and bounded loads: shards onto nodes.

Theory of operation
-------------------
Every node owns ``virtual_nodes`` points on a 64-bit hash ring (``stable_hash64`` of
``"<node>#<i>"``); every shard has one point (the hash of its id). A shard's **preference
list** is the sequence of distinct nodes met walking the ring clockwise from its point. With
nothing else, a shard's replicas would be the first ``rf`` nodes of its list: adding a node only
changes the lists of the shards whose walk now meets the new node first, about ``rf/(N+1)`` of
them, and removing one only those that met it.

Plain consistent hashing is not balanced enough with a fixed number of shards: a node's load is
the number of shard replicas that land on its arcs, which varies by the arcs' lengths *and* by
the sampling of the shard points (with 1,024 shards on 12 nodes, that alone is about 11%
stddev/mean). So the placement **bounds loads** (Mirrokni, Thorup and Zadimoghaddam, "Consistent
Hashing with Bounded Loads", 2018): no node takes more than ``ceil(LOAD_FACTOR * S * rf / N)``
replicas; shards are placed one by one in shard id order, each taking the first nodes of its
preference list that still have room. A full node is skipped, so its excess flows to the next
nodes on the ring, and the loads stay within ``LOAD_FACTOR`` of the mean while the lists (and so
the moves on a change) stay those of consistent hashing, up to the overflow at full nodes.

**Regions.** When the nodes span several regions, a shard's replicas first go to distinct
regions (as many as there are, up to ``rf``), still in preference order, and only then to more
nodes of regions already used. A region with few nodes then carries more replicas than the
bound (every shard wants a replica there): spreading wins over balance, because it is what lets
a shard survive the loss of a region.

Everything depends only on the node ids, their regions, the shard ids and the two parameters:
the ring is sorted by (point, node), the shards are processed in id order, so the result is the
same on every node and in every run.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence

from exapyte import limits
from exapyte.distribution.base import (
    GroupSpec,
    NodeId,
    PlacementError,
    RegionId,
    ShardId,
    stable_hash64,
)

__all__ = ["Ring", "place_on_ring"]

_NODE_SALT = b"exapyte.vnode"
_SHARD_SALT = b"exapyte.shard"


class Ring:
    """The sorted virtual-node points of a set of nodes."""

    def __init__(self, nodes: Sequence[NodeId], virtual_nodes: int) -> None:
        if virtual_nodes < 1:
            raise PlacementError(f"virtual_nodes must be >= 1, got {virtual_nodes}")
        points = sorted(
            (stable_hash64(_NODE_SALT, f"{node}#{i}"), node)
            for node in set(nodes)
            for i in range(virtual_nodes)
        )
        self._points = [p for p, _ in points]
        self._owners = [n for _, n in points]
        self.node_count = len(set(nodes))

    def preference(self, shard: ShardId) -> list[NodeId]:
        """Every node, in the order a clockwise walk from the shard's point first meets it."""
        if not self._points:
            return []
        start = bisect.bisect_right(self._points, stable_hash64(_SHARD_SALT, shard))
        seen: dict[NodeId, None] = {}
        total = len(self._owners)
        for step in range(total):
            node = self._owners[(start + step) % total]
            if node not in seen:
                seen[node] = None
                if len(seen) == self.node_count:
                    break
        return list(seen)


def place_on_ring(
    shards: Sequence[ShardId],
    nodes: Mapping[NodeId, RegionId],
    replication_factor: int,
    virtual_nodes: int,
    *,
    region: RegionId | None = None,
    load_factor: float = limits.PLACEMENT_LOAD_FACTOR,
) -> list[GroupSpec]:
    """Each shard's voters (module docstring); ``region`` is written into every GroupSpec."""
    if not nodes:
        raise PlacementError("no node to place shards on")
    if replication_factor < 1:
        raise PlacementError(f"replication_factor must be >= 1, got {replication_factor}")
    rf = min(replication_factor, len(nodes))
    ring = Ring(list(nodes), virtual_nodes)
    capacity = math.ceil(load_factor * len(shards) * rf / len(nodes))
    region_count = len(set(nodes.values()))
    load = dict.fromkeys(nodes, 0)
    out: list[GroupSpec] = []
    for shard in sorted(shards):
        prefs = ring.preference(shard)
        chosen: list[NodeId] = []
        used: set[RegionId] = set()

        def take(spread: bool, bounded: bool) -> None:
            for node in prefs:
                if len(chosen) == rf:
                    return
                if node in chosen or (bounded and load[node] >= capacity):
                    continue
                if spread and (nodes[node] in used or len(used) >= min(rf, region_count)):
                    continue
                chosen.append(node)
                used.add(nodes[node])

        if region_count > 1:
            take(spread=True, bounded=True)
            take(spread=True, bounded=False)
        take(spread=False, bounded=True)
        take(spread=False, bounded=False)
        for node in chosen:
            load[node] += 1
        # Voters in preference order: the first is the natural leader candidate.
        out.append(GroupSpec(shard, tuple(chosen), (), region))
    return out
