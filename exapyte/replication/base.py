"""Replication strategies: which regions hold a group's voters and learners, and where it leads.

Theory of operation
-------------------
A distribution strategy (:mod:`exapyte.distribution`) decides which shard holds a key and walks
a consistent-hashing ring to rank the nodes for each shard. A **replication strategy** decides,
for one group, how many of its replicas each region holds and which of them vote: a
:class:`ReplicaPlan` of per-region :class:`Quota` values plus the region its leadership is kept
in. The ring then fills each region's quota with that region's nodes in preference order, under
its load bound. The plan is a pure function of the group's **home region**, the number of nodes
each region has and the topology's link latencies, so every node, client and tool computes the
same placement.

The home region: a hierarchical shard's own region; for a sharded shard, the region of the first
node of its ring preference list (so homes spread over the regions in proportion to their nodes);
for the centralized group, the region of the first founding node in ``cluster.nodes``.

``sync``
    Voters span the regions, round-robin from the home region over the others nearest first,
    so that no region holds a quorum of voters when there are three regions or more: a write is
    acknowledged once a majority of voters has persisted it, that majority includes a node
    outside any one region, and losing a whole region loses no acknowledged write. A group with
    no home (sharded) takes distinct regions in ring preference order instead, the placement
    exapyte has always made. The leader is wherever elections put it (a hierarchical shard's is
    kept in its home region, where its requests come from).

``async``
    Every voter is in the home region; every other region holds learners (one per region, or
    every node there for the centralized group), fed in log order. A write is acknowledged after
    the home region's quorum; remote replicas lag by the link's latency and whatever is queued;
    losing the home region loses what had not shipped, and leaves the group without voters until
    the region returns. Weak reads in every region are served by the local learner.

``optimized``
    Placement and quorums from the link latencies: the home region holds fewer voters than a
    quorum (so losing it loses nothing acknowledged), the region nearest to it holds enough that
    the two together are a quorum (so a write waits only for the nearest region), and the voters
    left go to the other regions nearest first, none holding a quorum (so losing any one region
    leaves a quorum when the voters span three regions). Leadership is kept in the region that
    writes most (measured by the leader from the requests' origin region, the home region until
    there are writes to measure), and the streams to remote regions are batched and pipelined
    (docs/distribution.md). A region without a voter gets one learner.

Every strategy's promise is measured against the others by ``python main.py --demo
replication``, never asserted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

from exapyte.errors import ExapyteError

__all__ = [
    "Latency",
    "Quota",
    "ReplicaPlan",
    "ReplicationError",
    "ReplicationPolicy",
]

RegionId = str


class ReplicationError(ExapyteError):
    """A replication plan cannot be made from what was given."""


class Latency:
    """One-way latency between regions (ms): 0 within a region, the declared link between two,
    infinite when no link is declared."""

    def __init__(self, links: Iterable[tuple[RegionId, RegionId, float]] = ()) -> None:
        self._ms: dict[frozenset[RegionId], float] = {}
        for a, b, ms in links:
            key = frozenset((a, b))
            self._ms[key] = min(float(ms), self._ms.get(key, math.inf))

    def between(self, a: RegionId, b: RegionId) -> float:
        if a == b:
            return 0.0
        return self._ms.get(frozenset((a, b)), math.inf)

    def nearest_first(self, home: RegionId, regions: Iterable[RegionId]) -> list[RegionId]:
        """``regions`` ordered by latency from ``home`` (home itself first), ties by id."""
        return sorted(set(regions), key=lambda r: (r != home, self.between(home, r), r))


class Quota(msgspec.Struct, frozen=True):
    """How many voters and learners of one group one region holds."""

    region: RegionId
    voters: int = 0
    learners: int = 0


class ReplicaPlan(msgspec.Struct, frozen=True):
    """A group's quotas in fill order (the leader's region first) and the region its leadership
    is kept in (None: wherever elections put it)."""

    quotas: tuple[Quota, ...]
    leader_region: RegionId | None = None

    @property
    def voters(self) -> int:
        return sum(q.voters for q in self.quotas)


class ReplicationPolicy(Protocol):
    """One replication strategy (module docstring)."""

    name: str

    def plan(
        self,
        home: RegionId,
        capacity: Mapping[RegionId, int],
        replicas: int,
        *,
        everywhere: bool = False,
        homed: bool = True,
    ) -> ReplicaPlan | None:
        """The plan of a group homed in ``home`` with ``replicas`` voters wanted (the replication
        factor, already capped at the nodes available), ``capacity`` nodes per region;
        ``everywhere``: every node holds the group (centralized: the nodes that do not vote
        learn); ``homed``: the group's home is its own (hierarchical), not a ring artefact."""
        ...


def round_robin(order: Sequence[RegionId], capacity: Mapping[RegionId, int], count: int,
                cap: int | None = None) -> dict[RegionId, int]:
    """``count`` voters dealt one at a time over ``order``, each region at most its capacity
    (and ``cap``, when given, while another region still has room)."""
    out = dict.fromkeys(order, 0)
    remaining = count
    for limit in ((cap,) if cap is not None else ()) + (None,):
        progress = True
        while remaining and progress:
            progress = False
            for region in order:
                if not remaining:
                    break
                room = capacity.get(region, 0) - out[region]
                if room <= 0 or (limit is not None and out[region] >= limit):
                    continue
                out[region] += 1
                remaining -= 1
                progress = True
    return out
