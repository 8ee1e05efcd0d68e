"""Bounded staleness: how far behind the commit order each read was, in versions and in time.

Theory of operation
-------------------
A read's state is fixed at some instant between its invocation and its completion; every update
acknowledged *before the read was invoked* was certainly committed by then. The read *missed*
such an update when its state does not hold it. From the set of updates a read missed:

``versions``
    how many there are;
``ms``
    how long the read's state had been out of date when the read began: the read's invocation
    time minus the earliest acknowledgement among them (the update was committed by then, so
    the state was behind at least since).

Both are lower bounds on the true staleness (updates committed but not yet acknowledged are not
counted), so a bound the checker reports as broken was broken. With bounds ``K`` (versions) and
``T`` (ms), a read breaks bounded staleness when ``versions > K`` or ``ms > T`` (Cosmos DB: the
lag reaches at most K versions or T, whichever comes first); a bound not given is not checked.
A read that missed anything is *stale*, which rules out ``strong`` for it.

*With indexes*, the missed updates are the acknowledged updates of the read's group with an
index greater than the read's (group-wide versions: what a replica's "K entries behind the
leader's commit" promise bounds). *Without indexes*, per key read: the acknowledged updates of
that key invoked after the update the read observed had been acknowledged (those follow it in
real-time order), or every acknowledged update of the key when it read the initial value. A
``scan`` counts the most stale of its keys.

The sweep takes reads in invocation order and adds updates in acknowledgement order to a
Fenwick tree over their order positions holding counts and the earliest acknowledgement, so each
read is two O(log n) queries: O(n log n) in all. The served distribution (p50, p99, max) is over
every completed read that could be placed.

``check_write_order`` adds the updates' side of ``strong``: an update invoked after another of
its group was acknowledged must get a greater index (real-time order of the log).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from harness.checker.level_history import LevelHistory, LevelOp, Violation

__all__ = ["Staleness", "StalenessReport", "check_staleness", "check_write_order"]

_NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class Staleness:
    """How stale one read was: missed updates, and for how long (ms), with the earliest one."""

    read: int
    versions: int
    ms: float
    mode: str  # index | value
    first_missed: int | None  # the op id of the earliest-acknowledged update it missed


@dataclass
class StalenessReport:
    reads: list[Staleness]
    violations: list[Violation]  # beyond K or T: bounded_staleness
    stale: list[Violation]  # any missed update: strong
    versions_max: int | None
    ms_max: float | None

    def distribution(self) -> dict[str, float | int | None]:
        versions = sorted(s.versions for s in self.reads)
        ms = sorted(s.ms for s in self.reads)
        return {
            "reads": len(self.reads),
            "stale_reads": sum(1 for s in self.reads if s.versions),
            "versions_p50": _pct(versions, 0.5), "versions_p99": _pct(versions, 0.99),
            "versions_max": versions[-1] if versions else None,
            "ms_p50": _round(_pct(ms, 0.5)), "ms_p99": _round(_pct(ms, 0.99)),
            "ms_max": _round(ms[-1] if ms else None),
        }

    def to_dict(self) -> dict[str, object]:
        return {"bounds": {"versions": self.versions_max, "ms": self.ms_max}, "served": self.distribution(),
                "violations": [v.to_dict() for v in self.violations]}


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return values[max(0, min(len(values) - 1, math.ceil(q * len(values)) - 1))]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class _Suffix:
    """Counts and earliest acknowledgement of the updates added, over positions, queried above one."""

    def __init__(self, positions: Sequence[float]) -> None:
        self.positions = sorted(set(positions))
        n = len(self.positions)
        self.count = [0] * (n + 1)
        self.first: list[tuple[int, int] | None] = [None] * (n + 1)  # (ret, op id)

    def _slot(self, position: float) -> int:
        # Reversed, so that "greater than a position" is a prefix of the tree.
        return len(self.positions) - bisect.bisect_left(self.positions, position)

    def add(self, position: float, ret: int, op_id: int) -> None:
        i = self._slot(position)
        while i < len(self.count):
            self.count[i] += 1
            best = self.first[i]
            if best is None or (ret, op_id) < best:
                self.first[i] = (ret, op_id)
            i += i & -i

    def above(self, threshold: float) -> tuple[int, tuple[int, int] | None]:
        """(count, earliest (ret, op id)) of the updates added at positions > ``threshold``."""
        i = len(self.positions) - bisect.bisect_right(self.positions, threshold)
        count = 0
        best: tuple[int, int] | None = None
        while i > 0:
            count += self.count[i]
            cand = self.first[i]
            if cand is not None and (best is None or cand < best):
                best = cand
            i -= i & -i
        return count, best


def check_staleness(history: LevelHistory, versions_max: int | None = None, ms_max: float | None = None
                    ) -> StalenessReport:
    """The staleness of every completed read, and the reads beyond ``versions_max``/``ms_max``."""
    worst: dict[int, Staleness] = {}

    def note(read: LevelOp, count: int, first: tuple[int, int] | None, mode: str) -> None:
        ms = 0.0 if first is None else max(0.0, (read.call - first[0]) / _NS_PER_MS)
        s = Staleness(read.id, count, ms, mode, None if first is None else first[1])
        prior = worst.get(read.id)
        if prior is None or (s.versions, s.ms) > (prior.versions, prior.ms):
            worst[read.id] = s

    _by_index(history, note)
    _by_value(history, note)
    reads = [worst[k] for k in sorted(worst)]
    violations, stale = [], []
    for s in reads:
        read = history.op(s.read)
        missed = "" if s.first_missed is None else f", e.g. {history.op(s.first_missed).describe()}"
        ops = (s.read,) + (() if s.first_missed is None else (s.first_missed,))
        over = []
        if versions_max is not None and s.versions > versions_max:
            over.append(f"{s.versions} versions > K={versions_max}")
        if ms_max is not None and s.ms > ms_max:
            over.append(f"{s.ms:.1f} ms > T={ms_max:g} ms")
        if over:
            violations.append(Violation("bounded-staleness", "bounded_staleness", s.read, ops,
                                        f"{read.describe()} was {' and '.join(over)} behind the commit order "
                                        f"({s.versions} acknowledged update(s) missed{missed})"))
        if s.versions:
            stale.append(Violation("stale-read", "strong", s.read, ops,
                                   f"{read.describe()} missed {s.versions} update(s) acknowledged before it "
                                   f"began{missed}"))
    return StalenessReport(reads, violations, stale, versions_max, ms_max)


def _by_index(history: LevelHistory, note) -> None:  # type: ignore[no-untyped-def]
    reads_by_group: dict[Hashable, list[LevelOp]] = {}
    for op in history.ops:
        if op.is_read and history.order_of(op) is not None:
            reads_by_group.setdefault(op.group, []).append(op)
    for group, reads in reads_by_group.items():
        order = history.orders[group]
        writes = sorted(order.by_index.values(), key=lambda w: (w.ret or 0, w.id))
        tree = _Suffix([w.index for w in writes if w.index is not None])
        reads.sort(key=lambda r: (r.call, r.id))
        at = 0
        for read in reads:
            while at < len(writes) and (writes[at].ret or 0) < read.call:
                w = writes[at]
                assert w.index is not None and w.ret is not None
                tree.add(w.index, w.ret, w.id)
                at += 1
            assert read.index is not None
            count, first = tree.above(read.index)
            note(read, count, first, "index")


def _by_value(history: LevelHistory, note) -> None:  # type: ignore[no-untyped-def]
    # (group, key) -> the reads' thresholds: (read, call time after which updates follow its observation)
    queries: dict[tuple[Hashable, Hashable], list[tuple[LevelOp, float]]] = {}
    for read_id, seen in history.seen.items():
        read = history.op(read_id)
        if history.order_of(read) is not None:
            continue
        for s in seen:
            if not s.resolved or s.phantom or s.problem is not None:
                continue
            if s.write is None:
                threshold = -math.inf
            elif s.write.ret is None:
                continue  # an update of unknown outcome: nothing is known to follow it
            else:
                threshold = s.write.ret
            queries.setdefault((read.group, s.key), []).append((read, threshold))
    writes_by_key: dict[tuple[Hashable, Hashable], list[LevelOp]] = {}
    for op in history.ops:
        if op.status == "ok" and op.writes:
            for key, _ in op.writes:
                if (op.group, key) in queries:
                    writes_by_key.setdefault((op.group, key), []).append(op)
    for gk, items in queries.items():
        writes = sorted(writes_by_key.get(gk, []), key=lambda w: (w.ret or 0, w.id))
        tree = _Suffix([w.call for w in writes])
        items.sort(key=lambda item: (item[0].call, item[0].id))
        at = 0
        for read, threshold in items:
            while at < len(writes) and (writes[at].ret or 0) < read.call:
                w = writes[at]
                assert w.ret is not None
                tree.add(w.call, w.ret, w.id)
                at += 1
            count, first = tree.above(threshold)
            note(read, count, first, "value")


def check_write_order(history: LevelHistory) -> list[Violation]:
    """Updates whose index does not follow every update of their group acknowledged before they
    were invoked: not ``strong``."""
    out = []
    for group, order in history.orders.items():
        writes = list(order.by_index.values())
        by_ret = sorted(writes, key=lambda w: (w.ret or 0, w.id))
        at = 0
        best: LevelOp | None = None
        for w in sorted(writes, key=lambda w: (w.call, w.id)):
            while at < len(by_ret) and (by_ret[at].ret or 0) < w.call:
                cand = by_ret[at]
                if best is None or (cand.index or 0) > (best.index or 0):
                    best = cand
                at += 1
            if best is not None and w.index is not None and best.index is not None and best.index > w.index:
                out.append(Violation("real-time-order", "strong", w.id, (w.id, best.id),
                                     f"{w.describe()} was invoked after {best.describe()} was acknowledged, yet "
                                     f"is ordered before it"))
    return out
