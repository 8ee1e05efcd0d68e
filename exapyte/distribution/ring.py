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
from collections import Counter
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
from exapyte.replication.base import ReplicaPlan, ReplicationPolicy

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
    policy: ReplicationPolicy | None = None,
    everywhere: bool = False,
    load_factor: float = limits.PLACEMENT_LOAD_FACTOR,
) -> list[GroupSpec]:
    """Each shard's voters and learners (module docstring). ``region``: the shards' home region
    (hierarchical), written into every GroupSpec; ``policy``: the replication strategy whose
    per-region quotas the preference lists fill (None: distinct regions first, as ``sync`` does
    for a group without a home); ``everywhere``: every node holds every shard."""
    if not nodes:
        raise PlacementError("no node to place shards on")
    if replication_factor < 1:
        raise PlacementError(f"replication_factor must be >= 1, got {replication_factor}")
    rf = min(replication_factor, len(nodes))
    ring = Ring(list(nodes), virtual_nodes)
    prefs = {shard: ring.preference(shard) for shard in shards}
    per_region = Counter(nodes.values())
    plans: dict[ShardId, ReplicaPlan | None] = {}
    for shard in shards:
        home = region if region is not None else nodes[prefs[shard][0]]
        plans[shard] = None if policy is None else policy.plan(
            home, per_region, rf, everywhere=everywhere, homed=region is not None,
        )
    load = dict.fromkeys(nodes, 0)
    if all(p is None for p in plans.values()):
        bound = math.ceil(load_factor * len(shards) * rf / len(nodes))
        capacity = dict.fromkeys(nodes, bound)
    else:  # each region's nodes share that region's quotas
        wanted: Counter[RegionId] = Counter()
        for shard_plan in plans.values():
            for q in shard_plan.quotas if shard_plan is not None else ():
                wanted[q.region] += q.voters + q.learners
        capacity = {
            n: math.ceil(load_factor * wanted[r] / per_region[r]) for n, r in nodes.items()
        }
    region_count = len(per_region)
    out: list[GroupSpec] = []
    for shard in sorted(shards):
        chosen: list[NodeId] = []

        def take(candidates: Sequence[NodeId], count: int, *, spread: bool = False,
                 used: set[RegionId] | None = None) -> list[NodeId]:
            picked: list[NodeId] = []
            for bounded in (True, False):
                for node in candidates:
                    if len(picked) == count:
                        return picked
                    if node in chosen or node in picked or (bounded and load[node] >= capacity[node]):
                        continue
                    if spread and used is not None and (
                        nodes[node] in used or len(used) >= min(rf, region_count)
                    ):
                        continue
                    picked.append(node)
                    if used is not None:
                        used.add(nodes[node])
            return picked

        plan = plans[shard]
        learners: list[NodeId] = []
        if plan is None:
            used: set[RegionId] = set()
            if region_count > 1:
                chosen += take(prefs[shard], rf, spread=True, used=used)
            chosen += take(prefs[shard], rf - len(chosen), used=used)
        else:
            for q in plan.quotas:
                chosen += take([n for n in prefs[shard] if nodes[n] == q.region], q.voters)
            for q in plan.quotas:
                picked = take([n for n in prefs[shard] if nodes[n] == q.region], q.learners)
                learners += picked
                chosen += picked
            chosen = [n for n in chosen if n not in learners]
        for node in chosen + learners:
            load[node] += 1
        home = region if region is not None else (plan.leader_region if plan is not None else None)
        # Voters in fill order: the first is the natural leader candidate (in the leader's region).
        out.append(GroupSpec(shard, tuple(chosen), tuple(learners), home))
    return out
