"""Hierarchical distribution: a key's home region first, then a shard inside that region.

Theory of operation
-------------------
``route_region(key)``: the longest placement rule whose prefix starts the key names its region
(rules pin key spaces to a region: ``"eu:" -> "eu-west"``); a key no rule matches goes to the
region with the highest rendezvous score ``blake2b-64(region + key)``, so a region added to the
list takes about ``1/(R+1)`` of the unpinned keys and moves no other key between regions.
``shard_of(key)``: ``<region>/s<NNNN>`` with ``blake2b-64(key) mod shards`` (a hash
independent of the region's), so every region has the same number of shards. A shard's voters are
nodes of its region only, placed by the ring of :mod:`exapyte.distribution.ring` over that
region's nodes (replication factor capped by the region's size): a write commits inside its home
region, and a request is routed region first.

Scans: a range inside one rule's prefix lives in that rule's region only; any other range may
hold keys of every region (``scan_shards``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exapyte import limits
from exapyte.distribution.base import (
    GroupSpec,
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

__all__ = ["HierarchicalStrategy"]

_REGION_SALT = b"exapyte.region"
_KEY_SALT = b"exapyte.rkey"


def _prefix_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: none)."""
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            return "".join(chars[:-1]) + chr(last + 1)
        chars.pop()
    return None


class HierarchicalStrategy:
    name = "hierarchical"

    def __init__(
        self,
        regions: Sequence[RegionId],
        shards_per_region: int,
        virtual_nodes: int = limits.VIRTUAL_NODES_DEFAULT,
        rules: Mapping[str, RegionId] | None = None,
        replication: ReplicationPolicy | None = None,
    ) -> None:
        regions_sorted = tuple(sorted(set(regions)))
        if not regions_sorted:
            raise PlacementError("hierarchical distribution needs at least one region")
        if any("/" in r or not r for r in regions_sorted):
            raise PlacementError(f"a region id is non-empty and holds no '/': {regions_sorted}")
        if not 1 <= shards_per_region <= limits.SHARDS_MAX:
            raise PlacementError(
                f"shards must be in 1..{limits.SHARDS_MAX}, got {shards_per_region}"
            )
        self.rules = dict(rules or {})
        for prefix, region in self.rules.items():
            if not prefix:
                raise PlacementError("a placement rule's prefix is non-empty")
            if region not in regions_sorted:
                raise PlacementError(
                    f"placement rule {prefix!r} names region {region!r}, not one of {regions_sorted}"
                )
        self.regions = regions_sorted
        self.shards_per_region = shards_per_region
        self.virtual_nodes = virtual_nodes
        self.replication = replication
        # longest prefix first, then by prefix: the first match is the longest one
        self._rules = sorted(self.rules.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        self._shards = {
            r: tuple(shard_name(i, r) for i in range(shards_per_region)) for r in regions_sorted
        }

    def route_region(self, key: str) -> RegionId:
        for prefix, region in self._rules:
            if key.startswith(prefix):
                return region
        return max(self.regions, key=lambda r: (stable_hash64(_REGION_SALT, f"{r}\x00{key}"), r))

    def shard_of(self, key: str) -> ShardId:
        shards = self._shards[self.route_region(key)]
        return shards[stable_hash64(_KEY_SALT, key) % self.shards_per_region]

    def shards(self) -> tuple[ShardId, ...]:
        return tuple(s for r in self.regions for s in self._shards[r])

    def shards_of_region(self, region: RegionId) -> tuple[ShardId, ...]:
        return self._shards[region]

    def scan_shards(self, start: str, end: str | None) -> tuple[ShardId, ...]:
        # A range within one rule's prefix P holds keys of P's region and of the regions of the
        # longer rules extending P whose key spaces the range overlaps; nothing else.
        if end is not None:
            for prefix, region in self._rules:  # longest first
                bound = _prefix_bound(prefix)
                if start.startswith(prefix) and (bound is None or end <= bound):
                    wanted = {region}
                    for other, other_region in self._rules:
                        if len(other) > len(prefix) and other.startswith(prefix):
                            other_bound = _prefix_bound(other)
                            if other < end and (other_bound is None or start < other_bound):
                                wanted.add(other_region)
                    return tuple(s for r in self.regions if r in wanted for s in self._shards[r])
        return self.shards()

    def place(self, nodes: Mapping[NodeId, RegionId], replication_factor: int) -> Placement:
        groups: list[GroupSpec] = []
        for region in self.regions:
            members = {n: r for n, r in nodes.items() if r == region}
            if not members:
                raise PlacementError(f"region {region!r} has no node to hold its shards")
            if self.replication is None:  # voters of the region only, no replica elsewhere
                groups += place_on_ring(
                    self._shards[region], members, replication_factor, self.virtual_nodes,
                    region=region,
                )
            else:  # the replication strategy's quotas over every region, homed in this one
                groups += place_on_ring(
                    self._shards[region], nodes, replication_factor, self.virtual_nodes,
                    region=region, policy=self.replication,
                )
        groups.sort(key=lambda g: g.id)
        return Placement(tuple(groups))
