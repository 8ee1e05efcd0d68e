"""The client's routing cache: key -> shard -> group descriptor -> the replica to ask.

Theory of operation
-------------------
A :class:`Descriptor` is what a client knows of one shard's group: its :class:`GroupSpec`
(voters, learners, region), the group's **configuration version** (one more with each
membership change committed in the shard's log, as the control plane records it), a leader
hint and the members' endpoints. The :class:`Router` caches one descriptor per shard and follows
one rule: **a cached descriptor is replaced only by one with a strictly higher version**
(:meth:`Router.update`). Descriptors arrive out of order (the control-plane feed, redirect
replies, a resync), so an older one arriving late must never undo a newer one; a leader hint
that arrives for the cached version refreshes the hint only (:meth:`Router.note_leader`).

Routing never trusts the cache for correctness: every request carries the version of the
descriptor it was routed by, and a node that is not a member of the shard's group, or that
holds a newer version, refuses it and answers with its own descriptor (a :class:`Redirect`);
:meth:`Router.on_redirect` keeps the newer one and names the next replica to ask. A stale
cache therefore costs redirects, never a wrong answer (docs/control-plane.md).

Scans: :meth:`Router.scan_plan` lists, in shard id order, the shards that may hold keys of the
range with each one's descriptor; the client asks each for its first ``limit`` keys and merges
them with :func:`exapyte.distribution.merge_scan`.

The client (:class:`exapyte.client.Client`, built by ``Client.from_config`` for the sharded and
hierarchical strategies) routes through this cache; replicas answer ``stale_config`` with their
descriptor (docs/distribution.md, "Configuration versions").
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from exapyte.distribution.base import GroupSpec, NodeId, ShardId, Strategy

__all__ = ["Descriptor", "Redirect", "Route", "Router"]


class Descriptor(msgspec.Struct, frozen=True):
    """One shard's group as a client sees it (module docstring)."""

    group: GroupSpec
    version: int
    leader: NodeId | None = None
    endpoints: tuple[tuple[NodeId, str], ...] = ()  # (node id, tcp://host:port) of each member

    @property
    def shard(self) -> ShardId:
        return self.group.id

    def endpoint(self, node: NodeId) -> str | None:
        for n, ep in self.endpoints:
            if n == node:
                return ep
        return None

    def target(self) -> NodeId:
        """The replica to ask first: the leader hint when it is a voter, else the first voter."""
        if self.leader is not None and self.leader in self.group.voters:
            return self.leader
        return self.group.voters[0]


class Redirect(msgspec.Struct, frozen=True):
    """A node's answer to a request routed by a stale or wrong descriptor: its own one."""

    descriptor: Descriptor


class Route(msgspec.Struct, frozen=True):
    """Where a key's request goes: its shard, the descriptor it is sent with, the replica."""

    key: str
    shard: ShardId
    descriptor: Descriptor | None  # None: the shard is not known yet (ask the control plane)
    target: NodeId | None

    @property
    def version(self) -> int:
        """The configuration version the request carries (0: none known)."""
        return self.descriptor.version if self.descriptor is not None else 0


class Router:
    """A client's descriptor cache over one distribution strategy. Single-threaded."""

    def __init__(self, strategy: Strategy, descriptors: Iterable[Descriptor] = ()) -> None:
        self.strategy = strategy
        self._cache: dict[ShardId, Descriptor] = {}
        self.stale_ignored = 0  # descriptors refused because the cache held a newer or equal one
        for d in descriptors:
            self.update(d)

    def descriptor(self, shard: ShardId) -> Descriptor | None:
        return self._cache.get(shard)

    def update(self, descriptor: Descriptor) -> bool:
        """Cache ``descriptor`` if its version is strictly higher than the cached one's (or
        none is cached); return whether it replaced anything."""
        current = self._cache.get(descriptor.shard)
        if current is not None and descriptor.version <= current.version:
            self.stale_ignored += 1
            return False
        self._cache[descriptor.shard] = descriptor
        return True

    def note_leader(self, shard: ShardId, version: int, leader: NodeId) -> bool:
        """A leader hint for ``shard`` at configuration ``version``: kept only for the cached
        version and a voter of it (a hint of another version says nothing about this one)."""
        current = self._cache.get(shard)
        if current is None or current.version != version or leader not in current.group.voters:
            return False
        if current.leader == leader:
            return False
        self._cache[shard] = msgspec.structs.replace(current, leader=leader)
        return True

    def route(self, key: str) -> Route:
        shard = self.strategy.shard_of(key)
        d = self._cache.get(shard)
        return Route(key, shard, d, d.target() if d is not None else None)

    def on_redirect(self, key: str, redirect: Redirect) -> Route:
        """Take a redirect's descriptor (if newer) and route ``key`` again.

        A redirect for another shard than the key's is ignored for this key (the descriptor is
        still cached if newer: it is true information about its shard).
        """
        self.update(redirect.descriptor)
        return self.route(key)

    def scan_plan(self, start: str, end: str | None) -> list[tuple[ShardId, Descriptor | None]]:
        """The shards a scan of ``[start, end)`` asks, in shard id order, with descriptors."""
        return [(s, self._cache.get(s)) for s in self.strategy.scan_shards(start, end)]

    def table(self) -> dict[ShardId, Descriptor]:
        """A copy of the cache (for ``status``)."""
        return dict(self._cache)


WEAK_LEVELS = ("session", "bounded_staleness", "consistent_prefix", "eventual")


class Proximity:
    """How far each node is from a client's region, by the topology's one-way link latencies:
    0 within the region, the cheapest path over the links between regions, infinite without
    one. :meth:`order` lists nodes nearest first (ties by node id), which is where a read of a
    weaker level than ``strong`` goes first: any replica can serve it within its level's promise,
    and the nearest one answers soonest (docs/distribution.md, "Serving reads near the client").
    """

    def __init__(
        self,
        region: str | None,
        node_regions: dict[NodeId, str],
        links: Iterable[tuple[str, str, float]] = (),
    ) -> None:
        self.region = region
        self.node_regions = dict(node_regions)
        regions = set(self.node_regions.values()) | ({region} if region else set())
        cost: dict[tuple[str, str], float] = {}
        for a, b, ms in links:
            regions |= {a, b}
            key = (a, b)
            cost[key] = cost[(b, a)] = min(float(ms), cost.get(key, float("inf")))
        for r in regions:
            cost[(r, r)] = 0.0
        ordered = sorted(regions)
        for k in ordered:  # Floyd-Warshall over a handful of regions
            for i in ordered:
                ik = cost.get((i, k))
                if ik is None:
                    continue
                for j in ordered:
                    kj = cost.get((k, j))
                    if kj is not None and ik + kj < cost.get((i, j), float("inf")):
                        cost[(i, j)] = ik + kj
        self._cost = cost

    def latency_ms(self, node: NodeId) -> float:
        """One-way latency from the client's region to ``node``'s (0 when either is unknown)."""
        there = self.node_regions.get(node)
        if self.region is None or there is None:
            return 0.0
        return self._cost.get((self.region, there), float("inf"))

    def order(self, nodes: Iterable[NodeId]) -> list[NodeId]:
        return sorted(nodes, key=lambda n: (self.latency_ms(n), n))
