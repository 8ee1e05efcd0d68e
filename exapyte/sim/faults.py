"""Fault schedules (the simulator's nemesis), as pure data computed from the seed.

Theory of operation
-------------------
A run's faults are a tuple of :class:`Fault` intervals ``[start_ns, end_ns)`` planned up front by
:func:`plan_faults` from the seed, the node ids, the enabled kinds and the fault window. Planning
is pure (it only draws from the ``random.Random`` it is given), so a schedule can be printed,
and a *subset* of it (``keep``) can be re-run with everything else unchanged: that is how a
failing case is shrunk.

Kinds and what the world does at start / end:

=========  ===========================================  ========================================
kind       start                                        end
=========  ===========================================  ========================================
partition  cut the directed links of ``links``          restore them (other partitions stay)
crash      kill ``node`` (unsynced writes may be lost)  restart it from its durable storage
pause      stop ``node``: no ticks, inbox queues/drops  resume; deliver what was queued
loss       drop ``rate`` of node-to-node messages       back to 0 (unless another loss is active)
dup        deliver ``rate`` of messages twice           idem
reorder    ``rate`` of messages take a random detour    idem
drift      ``node`` ticks ``rate`` times as often       back to the node's nominal rate
strand     armed: the next leader to commit is cut off  release the stranded node
rebalance  ``node add/remove node`` (``action``):       no new move starts (the one under way
           replicas move by membership changes in       finishes its steps)
           each shard's log (sharded runs only)
hold       ``links`` hold what crosses them (queued)    deliver the queue (``rate`` shuffled)
=========  ===========================================  ========================================

``strand`` is planned only when a spec names it (it is not in :data:`FAULT_KINDS`, the default
mix, so runs that do not ask for it are unchanged). It is the one fault that looks at the
cluster: while a strand is active, the step in which a leader's commit point advances cuts that
leader off from every node (both ways), so the commit news it just sent dies in flight and its
followers hold accepted slots they do not know are chosen; the node stranded before is released
at that same instant. Stranding one leader after another at their commits makes the phase 1s
that find accepted-but-unchosen values: the node released holds values only it accepted while
it led alone (clients still reach it), and the next leader's quorum reports the newer ones.

Rebalances are planned by :func:`plan_rebalances`, from a random stream of their own, one after
the other: the first adds the spare node (a node of the cluster outside the founding voters),
the next removes a node of the four, the next adds it back, and so on; each fault only states the intent, and the world plans the moves from what the
groups hold when it starts (exapyte/sim/moves.py).

``hold`` (named only, like ``strand``) is a partition of the same shapes whose links keep what
crosses them instead of dropping it, as ZeroMQ does while a TCP connection is down: when the
hold ends the queued messages are delivered, late by as long as the hold lasted (in send order,
or with a share ``rate`` of them shuffled). See :mod:`exapyte.sim.network`.

Overlapping faults compose: the cut links are the union of the active partitions, a rate is
the maximum of the active ones, a node stays down while any crash of it is active. Partition
shapes (:func:`partition_links`) are those of :mod:`exapyte.control.partitions`, by the names
and with the meanings the harness's nemesis uses: ``isolate-node``, ``majority-minority``,
``bridge`` (two sides that both reach one node), ``one-way`` (one node hears nobody, everyone
still hears it), ``random`` link cuts and ``mute`` (the mirror of one-way: nobody hears one
node, it hears everyone) by default; ``ring`` and ``isolate-region`` when a profile names them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exapyte.control import partitions as shapes
from exapyte.sim.scheduler import NS_PER_MS, NS_PER_S

FAULT_KINDS: tuple[str, ...] = ("partition", "crash", "pause", "loss", "dup", "reorder", "drift")
# Kinds planned only when a spec names them (not part of the default mix).
NAMED_FAULT_KINDS: tuple[str, ...] = ("strand", "hold")
ALL_FAULT_KINDS: tuple[str, ...] = FAULT_KINDS + NAMED_FAULT_KINDS
REBALANCE = "rebalance"  # sharded runs only; in the default mix when --shards > 1
ALL_FAULT_KINDS = (*ALL_FAULT_KINDS, REBALANCE)
SHARDED_FAULT_KINDS: tuple[str, ...] = (*FAULT_KINDS, REBALANCE)  # the sharded default mix
# The shapes a run draws from by default (names and meanings: exapyte.control.partitions).
PARTITION_SHAPES: tuple[str, ...] = (
    "isolate-node", "majority-minority", "bridge", "one-way", "random", "mute",
)
RANDOM_CUT_SHARE = 0.4  # the random shape: the chance each pair of nodes is cut

# Mean gap between two starts of one kind, and (min, max) duration, in milliseconds.
FAULT_GAP_MS_DEFAULT: dict[str, float] = {
    "partition": 1_500,
    "crash": 1_500,
    "pause": 2_500,
    "loss": 2_500,
    "dup": 2_500,
    "reorder": 2_500,
    "drift": 2_500,
    "strand": 1_500,
    "rebalance": 2_000,
    "hold": 1_500,
}
FAULT_DURATION_MS: dict[str, tuple[float, float]] = {
    "partition": (200, 2_500),
    "crash": (30, 1_500),
    "pause": (100, 1_500),
    "loss": (300, 2_000),
    "dup": (300, 2_000),
    "reorder": (300, 2_000),
    "drift": (500, 3_000),
    "strand": (600, 3_000),
    "rebalance": (1_500, 3_000),  # the window in which the node change may start moves
    "hold": (200, 2_500),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault interval. ``links`` are directed (frm, to) pairs cut by a partition."""

    start_ns: int
    end_ns: int
    kind: str
    node: str | None = None
    shape: str | None = None
    links: tuple[tuple[str, str], ...] = ()
    rate: float = 0.0
    queue: bool = True  # pause: queue the inbox (True) or drop it (False)
    action: str | None = None  # rebalance: "add" or "remove" (of ``node``)

    def describe(self) -> str:
        start = self.start_ns / NS_PER_S
        end = self.end_ns / NS_PER_S
        what = self.kind
        if self.node is not None:
            what += f" {self.node}"
        if self.action is not None:
            what = f"{self.kind} {self.action} {self.node}"
        if self.shape is not None:
            what += f" {self.shape} ({len(self.links)} links)"
        if self.rate:
            what += f" rate={self.rate:.2f}"
        return f"{start:.3f}s-{end:.3f}s {what}"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "start_ns": self.start_ns, "end_ns": self.end_ns}
        if self.node is not None:
            out["node"] = self.node
        if self.shape is not None:
            out["shape"] = self.shape
            out["links"] = [list(link) for link in self.links]
        if self.rate:
            out["rate"] = round(self.rate, 6)
        if self.kind == "pause":
            out["queue"] = self.queue
        if self.action is not None:
            out["action"] = self.action
        return out


def partition_links(
    shape: str, nodes: Sequence[str], rng: random.Random, regions: Mapping[str, str] | None = None
) -> tuple[tuple[str, str], ...]:
    """The directed links a partition of ``shape`` cuts, chosen with ``rng``; sorted. The cut
    sets come from :mod:`exapyte.control.partitions` (the harness's nemesis uses the same):
    this only draws the order, the node or the pairs. ``regions`` (node -> region) is needed
    by ``isolate-region``."""
    ordered = sorted(nodes)
    shuffled = list(ordered)
    rng.shuffle(shuffled)
    if shape == "isolate-node":
        cut = shapes.isolate_node(ordered, shuffled[0])
    elif shape == "majority-minority":
        cut = shapes.majority_minority(shuffled)[0]
    elif shape == "bridge":
        cut = shapes.bridge(shuffled)[0]
    elif shape == "one-way":
        cut = shapes.one_way(ordered, shuffled[0])  # shuffled[0] hears nobody
    elif shape == "mute":
        cut = shapes.mute(ordered, shuffled[0])  # nobody hears shuffled[0]
    elif shape == "ring":
        cut = shapes.ring(shuffled)
    elif shape == "isolate-region":
        if not regions:
            raise ValueError("an isolate-region partition needs the nodes' regions")
        names = sorted(set(regions[n] for n in ordered))
        region = names[rng.randrange(len(names))]
        cut = shapes.isolate_region(ordered, [n for n in ordered if regions[n] == region])
    elif shape == "random":
        pairs = [(a, b) for a in ordered for b in ordered if a < b]
        chosen = [pair for pair in pairs if rng.random() < RANDOM_CUT_SHARE]
        if not chosen:
            chosen = [pairs[rng.randrange(len(pairs))]]
        cut = shapes.pairs_both_ways(chosen)
    else:
        raise ValueError(f"unknown partition shape {shape!r}; allowed: {', '.join(shapes.PARTITION_SHAPES)}")
    return shapes.sorted_cuts(cut)


@dataclass(frozen=True, slots=True)
class FaultProfile:
    """How often and how long each kind strikes; mutants use sharper profiles."""

    gap_ms: dict[str, float] = field(default_factory=lambda: dict(FAULT_GAP_MS_DEFAULT))
    duration_ms: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(FAULT_DURATION_MS)
    )
    shapes: tuple[str, ...] = PARTITION_SHAPES


def plan_faults(
    rng: random.Random,
    nodes: Sequence[str],
    kinds: Sequence[str],
    window_ns: tuple[int, int],
    profile: FaultProfile | None = None,
    *,
    regions: Mapping[str, str] | None = None,
) -> tuple[Fault, ...]:
    """Plan every fault of a run inside ``window_ns``; sorted by start time then kind.
    ``regions`` (node -> region) is what an ``isolate-region`` shape cuts by."""
    prof = profile or FaultProfile()
    start, stop = window_ns
    ordered = sorted(nodes)
    faults: list[Fault] = []
    # A fixed order, so the draws do not depend on the caller's order; the named-only kinds come
    # last, so asking for one leaves every other kind's draws as they were.
    for kind in ALL_FAULT_KINDS:
        if kind not in kinds or kind == REBALANCE:  # rebalances: plan_rebalances
            continue
        gap_ns = prof.gap_ms[kind] * NS_PER_MS
        lo_ms, hi_ms = prof.duration_ms[kind]
        t = start + int(rng.expovariate(1.0 / gap_ns))
        while t < stop:
            duration = int(rng.uniform(lo_ms, hi_ms) * NS_PER_MS)
            end = min(t + duration, stop)
            node = ordered[rng.randrange(len(ordered))]
            if kind == "partition":
                shape = prof.shapes[rng.randrange(len(prof.shapes))]
                links = partition_links(shape, ordered, rng, regions)
                faults.append(Fault(t, end, kind, shape=shape, links=links))
            elif kind in ("crash",):
                faults.append(Fault(t, end, kind, node=node))
            elif kind == "pause":
                faults.append(Fault(t, end, kind, node=node, queue=rng.random() < 0.5))
            elif kind == "loss" or kind == "dup":
                faults.append(Fault(t, end, kind, rate=rng.uniform(0.05, 0.4)))
            elif kind == "reorder":
                faults.append(Fault(t, end, kind, rate=rng.uniform(0.1, 0.6)))
            elif kind == "drift":
                rate = rng.uniform(0.4, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 2.5)
                faults.append(Fault(t, end, kind, node=node, rate=rate))
            elif kind == "strand":
                faults.append(Fault(t, end, kind))
            elif kind == "hold":
                shape = prof.shapes[rng.randrange(len(prof.shapes))]
                links = partition_links(shape, ordered, rng, regions)
                shuffle = 0.0 if rng.random() < 0.5 else rng.uniform(0.2, 1.0)
                faults.append(Fault(t, end, kind, shape=shape, links=links, rate=shuffle))
            t += int(rng.expovariate(1.0 / gap_ns)) + 1
    faults.sort(key=lambda f: (f.start_ns, ALL_FAULT_KINDS.index(f.kind), f.node or ""))
    return tuple(faults)


def plan_rebalances(
    rng: random.Random,
    founders: Sequence[str],
    spares: Sequence[str],
    window_ns: tuple[int, int],
    profile: FaultProfile | None = None,
) -> tuple[Fault, ...]:
    """Node changes inside ``window_ns``, one after the other (module docstring): the spares
    are added first, then a node of the whole cluster is removed and added back, in turn, so
    the cluster never has fewer than ``len(founders)`` nodes."""
    prof = profile or FaultProfile()
    start, stop = window_ns
    gap_ns = prof.gap_ms[REBALANCE] * NS_PER_MS
    lo_ms, hi_ms = prof.duration_ms[REBALANCE]
    absent = sorted(spares)
    present = sorted(founders)
    faults: list[Fault] = []
    t = start + int(rng.expovariate(1.0 / gap_ns))
    while t < stop and (absent or len(present) > 1):
        end = min(t + int(rng.uniform(lo_ms, hi_ms) * NS_PER_MS), stop)
        if absent:
            node = absent.pop(0)
            present = sorted((*present, node))
            faults.append(Fault(t, end, REBALANCE, node=node, action="add"))
        else:
            node = present.pop(rng.randrange(len(present)))
            absent.append(node)
            faults.append(Fault(t, end, REBALANCE, node=node, action="remove"))
        t = end + int(rng.expovariate(1.0 / gap_ns)) + 1
    return tuple(faults)


def merge_faults(*plans: Sequence[Fault]) -> tuple[Fault, ...]:
    """Several plans as one, sorted by start time then kind (a shrink's indexes refer to it)."""
    faults = [f for plan in plans for f in plan]
    faults.sort(key=lambda f: (f.start_ns, ALL_FAULT_KINDS.index(f.kind), f.node or ""))
    return tuple(faults)


__all__ = [
    "ALL_FAULT_KINDS",
    "FAULT_KINDS",
    "NAMED_FAULT_KINDS",
    "REBALANCE",
    "SHARDED_FAULT_KINDS",
    "PARTITION_SHAPES",
    "Fault",
    "FaultProfile",
    "merge_faults",
    "partition_links",
    "plan_faults",
    "plan_rebalances",
]
