"""Consistent prefix: no read observes a state that is not a prefix of its group's commit order.

Theory of operation
-------------------
Consistent prefix (Terry's "consistent prefix", Cosmos DB's level of that name) promises that
every read sees the updates of its group in commit order, with no gaps and no reordering: the
state it read is *some* prefix of the order, however old. What this checker concludes, from what:

*With indexes* (the read's completion carries ``index``, its group's updates carry theirs): the
read claims to have read the prefix ending at its index. Each key it shows must hold exactly the
last update of that key at or before the index (:mod:`~harness.checker.level_history` explains
the matching, including updates of unknown position). A value from an update committed after
the index is a reordering; an older value, or the initial one, while a later update sits at or
before the index is a gap. A ``scan`` is checked key by key against the *same* index, so a
multi-key read that mixes two states is caught; keys of its range it did not return must be
absent at that index. Two updates acknowledged at one index of one group cannot both be in the
order: the second is a violation.

*Without indexes*, assuming updates are ordered consistently with real time (true when every
update goes through one group's consensus, as in exapyte: an update acknowledged before another
was invoked precedes it): a single-key read is always some prefix; a multi-key read that shows
update ``u`` of one key must also show, for every other key it returned, an update no older than
the last update of that key acknowledged before ``u`` was invoked. Found in O(log n) per key
with the updates of each key sorted by completion time and a running maximum of invocation
times.

In both modes, a read that shows an update invoked only after the read returned saw a state no
prefix could hold. A value no update wrote is not a prefix violation but a phantom: it rules
out even ``eventual`` (see :mod:`~harness.checker.convergence`). Cost: O(n log n).
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable

from harness.checker.level_history import LevelHistory, LevelOp, Seen, Violation

__all__ = ["check_consistent_prefix", "phantom_violations"]


def phantom_violations(history: LevelHistory) -> list[Violation]:
    """Reads that show a value no update (ok or info) ever wrote: below ``eventual``."""
    out = []
    for read_id, seen in history.seen.items():
        for s in seen:
            if s.phantom:
                out.append(Violation("never-written", "eventual", read_id, (read_id,), s.problem or ""))
    return out


def check_consistent_prefix(history: LevelHistory) -> list[Violation]:
    """Every consistent-prefix violation of ``history``, one per (read, key) at most."""
    out: list[Violation] = list(history.conflicts)
    for read_id, seen in history.seen.items():
        for s in seen:
            if s.problem is not None and not s.phantom:
                out.append(Violation("consistent-prefix", "consistent_prefix", read_id,
                                     (read_id, *s.culprits), s.problem))
    out.extend(_multi_key_by_value(history))
    return out


class _KeyWrites:
    """The acknowledged updates of one key, by completion time, with a running max of call times."""

    def __init__(self, writes: list[LevelOp]) -> None:
        writes = sorted(writes, key=lambda w: w.ret or 0)
        self.rets = [w.ret or 0 for w in writes]
        self.latest: list[LevelOp] = []
        best: LevelOp | None = None
        for w in writes:
            if best is None or w.call > best.call:
                best = w
            self.latest.append(best)

    def last_called_before(self, t: int) -> LevelOp | None:
        """Of the updates acknowledged strictly before ``t``, the one invoked last."""
        at = bisect.bisect_left(self.rets, t)
        return self.latest[at - 1] if at else None


def _definitely_before(a: LevelOp | None, b: LevelOp) -> bool:
    """Is update ``a`` (None: the initial state) ordered before update ``b`` by real time?"""
    return a is None or (a is not b and a.ret is not None and a.ret < b.call)


def _multi_key_by_value(history: LevelHistory) -> list[Violation]:
    per_key: dict[tuple[Hashable, Hashable], list[LevelOp]] = {}
    for op in history.ops:
        if op.status == "ok" and op.writes:
            for key, _ in op.writes:
                per_key.setdefault((op.group, key), []).append(op)
    index = {k: _KeyWrites(ws) for k, ws in per_key.items()}
    out = []
    for read_id, seen in history.seen.items():
        read = history.op(read_id)
        if not read.scan or history.order_of(read) is not None:
            continue
        usable: list[Seen] = [s for s in seen if s.resolved and not s.phantom and s.problem is None]
        anchors = [s for s in usable if s.write is not None]
        if not anchors:
            continue
        anchor = max(anchors, key=lambda s: s.write.call if s.write is not None else -1)
        assert anchor.write is not None
        for s in usable:
            if s.key == anchor.key:
                continue
            writes = index.get((read.group, s.key))
            if writes is None:
                continue
            must = writes.last_called_before(anchor.write.call)
            if must is not None and _definitely_before(s.write, must):
                shown = "the initial value" if s.write is None else f"the value of {s.write.describe()}"
                out.append(Violation(
                    "consistent-prefix", "consistent_prefix", read_id,
                    (read_id, anchor.write.id, must.id) + (() if s.write is None else (s.write.id,)),
                    f"{read.describe()} shows {anchor.key} from {anchor.write.describe()}, yet {shown} for "
                    f"{s.key}, although {must.describe()} was acknowledged before that update was invoked: "
                    f"no prefix of the commit order holds both",
                ))
                break
    return out
