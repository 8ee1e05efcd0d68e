"""What every distribution strategy provides: keys to shards, shards to replica groups.

Theory of operation
-------------------
A **shard** is a set of keys served by one replica group; its id (:data:`ShardId`) is also the
group's id: ``"s0000"`` for a flat strategy, ``"<region>/s0001"`` for the hierarchical one (a
region id never holds ``/``, so the region is the part before it). A **strategy**
(:class:`Strategy`) answers two questions, both pure functions:

- ``shard_of(key)``: which shard holds a key. It depends only on the key and the strategy's
  parameters, never on the nodes: the shards are fixed, and adding a node moves *replicas* of
  shards, never keys between shards (rebalancing by membership changes in each shard's own log).
- ``place(nodes, replication_factor)``: which nodes hold each shard's replicas, as a
  :class:`Placement` (shard -> :class:`GroupSpec`). It depends only on its arguments and the
  strategy's parameters, never on the iteration order of ``nodes``, the process or the run, so
  every node and the control plane compute the same placement.

**Scans across shards.** Keys are spread over shards by hash, so a range ``[start, end)`` may
hold keys of every shard that ``scan_shards(start, end)`` names. A scan with ``limit`` asks each
of those shards for its first ``limit`` keys in the range (each shard's storage returns them in
key order) and :func:`merge_scan` merges the sorted runs and keeps the first ``limit``: every
key of the true first ``limit`` is among some shard's first ``limit``, so the merge is exact. The
next page starts just after the last key returned. Key order is Unicode code point order (the
storage's order, docs/storage.md), which Python's ``str`` comparison also follows.

**Rebalancing** (:func:`plan_moves`): from an old placement to a new one, each shard that changes
gets a sequence of :class:`Move` values; a move adds a node as a learner, promotes it to voter
once it has caught up, then removes the node it replaces. A shard's moves run one at a time, in
order, so its voter count never falls below ``min(old, new)`` voters.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

import msgspec

from exapyte.errors import ExapyteError

__all__ = [
    "GroupSpec",
    "Move",
    "MoveStep",
    "Placement",
    "PlacementError",
    "ShardId",
    "Step",
    "Strategy",
    "check_plan",
    "merge_scan",
    "plan_moves",
    "region_of_shard",
    "shard_name",
    "stable_hash64",
]

ShardId = str
NodeId = str
RegionId = str

T = TypeVar("T")


class PlacementError(ExapyteError):
    """A placement cannot be computed from what was given (no node, a region without nodes)."""


def stable_hash64(salt: bytes, text: str) -> int:
    """A 64-bit hash of ``text``, the same in every process and run (never Python's ``hash()``).

    ``salt`` (at most 16 bytes) keeps the hashes of different uses independent: a key's shard and
    a shard's ring point never correlate. A key holding a lone surrogate still hashes (the
    service refuses such keys, but routing never raises).
    """
    digest = hashlib.blake2b(
        text.encode("utf-8", "surrogatepass"), digest_size=8, person=salt
    ).digest()
    return int.from_bytes(digest, "big")


def shard_name(index: int, region: RegionId | None = None) -> ShardId:
    """``s0003``, or ``us-east/s0003`` for a shard of a region."""
    base = f"s{index:04d}"
    return base if region is None else f"{region}/{base}"


def region_of_shard(shard: ShardId) -> RegionId | None:
    """The region part of a hierarchical shard id, None for a flat one."""
    region, sep, _ = shard.rpartition("/")
    return region if sep else None


class GroupSpec(msgspec.Struct, frozen=True):
    """One replica group: its id (the shard id), its voters and learners, its home region."""

    id: ShardId
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    region: RegionId | None = None

    @property
    def members(self) -> tuple[NodeId, ...]:
        return self.voters + self.learners


class Placement(msgspec.Struct, frozen=True):
    """Every shard's replica group, sorted by shard id, and the placement's version."""

    groups: tuple[GroupSpec, ...]
    version: int = 0

    def __post_init__(self) -> None:
        ids = [g.id for g in self.groups]
        if ids != sorted(set(ids)):
            raise PlacementError("a placement lists each shard once, sorted by shard id")

    def as_dict(self) -> dict[ShardId, GroupSpec]:
        return {g.id: g for g in self.groups}

    def shards(self) -> tuple[ShardId, ...]:
        return tuple(g.id for g in self.groups)

    def shards_of_node(self, node: NodeId) -> tuple[ShardId, ...]:
        """The shards that have ``node`` among their voters or learners."""
        return tuple(g.id for g in self.groups if node in g.members)


class Strategy(Protocol):
    """Keys to shards, and shards to nodes (see the module docstring)."""

    name: str

    def shard_of(self, key: str) -> ShardId: ...

    def shards(self) -> tuple[ShardId, ...]: ...

    def place(self, nodes: Mapping[NodeId, RegionId], replication_factor: int) -> Placement: ...

    def scan_shards(self, start: str, end: str | None) -> tuple[ShardId, ...]:
        """The shards that may hold a key in ``[start, end)``, in shard id order."""
        ...


def merge_scan(
    runs: Iterable[Sequence[tuple[str, T]]], limit: int
) -> list[tuple[str, T]]:
    """Merge each shard's key-ordered scan result into the first ``limit`` keys overall.

    Exact when each run holds its shard's first ``limit`` keys of the range (module docstring).
    A key is in exactly one shard, so no key appears twice; a run out of order is a caller's bug.
    """
    out: list[tuple[str, T]] = []
    for run in runs:
        for a, b in itertools.pairwise(run):
            if not a[0] < b[0]:
                raise ValueError(f"a shard's scan run is not in key order at {b[0]!r}")
    merged = heapq.merge(*runs, key=lambda item: item[0])
    for item in merged:
        if len(out) >= limit:
            break
        out.append(item)
    return out


# --- rebalancing ------------------------------------------------------------------------------


class Step(enum.Enum):
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"


class MoveStep(msgspec.Struct, frozen=True):
    """One membership change in a shard's own log."""

    shard: ShardId
    step: Step
    node: NodeId


class Move(msgspec.Struct, frozen=True):
    """One replica of ``shard`` changes: ``add`` joins as a learner and catches up (a snapshot);
    ``promote`` (``add`` itself, or a node that already was a learner) becomes a voter; then
    ``remove`` leaves. ``seq`` orders a shard's moves: move ``seq`` starts only after move
    ``seq - 1`` of the same shard has finished, so a shard has at most one move in flight."""

    shard: ShardId
    seq: int
    add: NodeId | None = None
    promote: NodeId | None = None
    remove: NodeId | None = None

    def steps(self) -> tuple[MoveStep, ...]:
        out: list[MoveStep] = []
        if self.add is not None:
            out.append(MoveStep(self.shard, Step.ADD_LEARNER, self.add))
        if self.promote is not None:
            out.append(MoveStep(self.shard, Step.PROMOTE, self.promote))
        if self.remove is not None:
            out.append(MoveStep(self.shard, Step.REMOVE, self.remove))
        return tuple(out)


def _shard_moves(old: GroupSpec, new: GroupSpec) -> list[Move]:
    old_voters, new_voters = set(old.voters), set(new.voters)
    old_learners, new_learners = set(old.learners), set(new.learners)
    demoted = sorted(old_voters & new_learners)  # voter -> learner: leave, rejoin as a learner
    promoted = sorted(old_learners & new_voters)  # learner -> voter: it already holds the data
    joining = sorted(new_voters - old_voters - old_learners)
    leaving = sorted(old_voters - new_voters - new_learners)
    moves: list[Move] = []

    def move(add: NodeId | None = None, promote: NodeId | None = None,
             remove: NodeId | None = None) -> None:
        moves.append(Move(new.id, len(moves), add, promote, remove))

    # Each leaving voter is paired with an arriving one, which is a voter before it goes.
    arrivals = [(n, False) for n in promoted] + [(n, True) for n in joining]
    for arrival, gone in itertools.zip_longest(arrivals, leaving):
        if arrival is None:
            move(remove=gone)  # the group shrinks: the new placement has fewer voters
        else:
            node, fresh = arrival
            move(add=node if fresh else None, promote=node, remove=gone)
    for node in demoted:
        move(remove=node)
        move(add=node)
    for node in sorted(new_learners - old_learners - old_voters):
        move(add=node)
    for node in sorted(old_learners - new_learners - new_voters):
        move(remove=node)
    return moves


def plan_moves(old: Placement, new: Placement) -> list[Move]:
    """The moves that turn ``old`` into ``new``, shard by shard (module docstring).

    Both placements must name the same shards (a strategy's shards are fixed). The list
    interleaves shards round-robin: the moves of one ``seq`` across shards can run in parallel,
    a shard's next move waits for its previous one. A learner that becomes a voter gets only
    its own ``promote`` (no ``add``).
    """
    old_groups, new_groups = old.as_dict(), new.as_dict()
    if set(old_groups) != set(new_groups):
        raise PlacementError("old and new placements must name the same shards")
    per_shard = [_shard_moves(old_groups[s], new_groups[s]) for s in sorted(new_groups)]
    out: list[Move] = []
    for wave in itertools.zip_longest(*per_shard):
        out.extend(m for m in wave if m is not None)
    return out


def check_plan(old: Placement, new: Placement, moves: Sequence[Move]) -> None:
    """Replay ``moves`` step by step from ``old`` and check the plan's promises; raise
    :class:`PlacementError` on the first one broken: each shard's moves in ``seq`` order, no
    shard below ``min(len(old voters), len(new voters))`` voters after any step, every step
    valid (add a non-member, promote a learner, remove a member), ``new`` reached exactly."""
    state = {g.id: (set(g.voters), set(g.learners)) for g in old.groups}
    target = new.as_dict()
    floor = {
        g.id: min(len(g.voters), len(target[g.id].voters)) for g in old.groups if g.id in target
    }
    next_seq: dict[ShardId, int] = {s: 0 for s in state}
    for move in moves:
        if move.seq != next_seq.get(move.shard):
            raise PlacementError(f"{move.shard}: move {move.seq} out of order")
        next_seq[move.shard] += 1
        voters, learners = state[move.shard]
        for step in move.steps():
            if step.step is Step.ADD_LEARNER:
                if step.node in voters or step.node in learners:
                    raise PlacementError(f"{move.shard}: {step.node} added but already a member")
                learners.add(step.node)
            elif step.step is Step.PROMOTE:
                if step.node not in learners:
                    raise PlacementError(f"{move.shard}: {step.node} promoted but not a learner")
                learners.discard(step.node)
                voters.add(step.node)
            else:
                if step.node not in voters and step.node not in learners:
                    raise PlacementError(f"{move.shard}: {step.node} removed but not a member")
                voters.discard(step.node)
                learners.discard(step.node)
            if len(voters) < floor[move.shard]:
                raise PlacementError(
                    f"{move.shard}: {len(voters)} voters after {step.step.value} {step.node}, "
                    f"below {floor[move.shard]}"
                )
    for shard, (voters, learners) in state.items():
        goal = target[shard]
        if voters != set(goal.voters) or learners != set(goal.learners):
            raise PlacementError(
                f"{shard}: plan ends at voters {sorted(voters)} learners {sorted(learners)}, "
                f"not {sorted(goal.voters)} {sorted(goal.learners)}"
            )
