"""Session guarantees (Terry et al. 1994): read-your-writes, monotonic reads, monotonic writes,
writes-follow-reads, within each session.

Theory of operation
-------------------
A session is the ``session`` field (an op without one is its own process's session). Within a
session, op ``a`` *precedes* ``b`` when ``a`` completed before ``b`` was invoked; overlapping
ops of one session are not ordered. Only ops that completed ``ok`` count as having happened
(an ``info`` update may never have happened, so no guarantee is owed to it). The session's ops
are swept in invocation order; an op joins the session's state once its completion time is
passed (a heap), so the sweep is O(n log n).

Terry's definitions speak of the writes *relevant* to a read: those of the keys it read (for a
``scan``: every key of its group, because a scan's result cannot say which absent keys it
covered). What each check concludes, from what:

*With indexes* (see :mod:`~harness.checker.level_history`): the state a read was served from is
the prefix of its group's commit order up to the read's index, and an update sits at its own
index. Writes of another group are never relevant (they hold other keys), so every check is per
group; monotonic writes and writes-follow-reads across groups are not checked (indexes of two
groups are not comparable).

``read-your-writes``
    A read's index is at least the index of every earlier update of the session to a key it
    read; and, the index being reached, the read shows that update or a later one of the key.
    An index alone does not name a state: after a truncation another entry holds the index an
    acknowledged update was given, and a replica "at" that index lacks the update. The read
    then shows an older value (or the initial one, or the entry that took the index), which the
    value part catches.
``monotonic-reads``
    A read's index is at least the index of every update a preceding read of the session
    observed (Terry: the relevant writes of the earlier read are in the later read's state);
    and, that index being reached, the read shows that update or a later one of the key.
``monotonic-writes``
    An update gets a greater index than every earlier update of the session in its group.
``writes-follow-reads``
    An update gets a greater index than every update a preceding read of the session observed.

*Without indexes*, per key, assuming updates are ordered consistently with real time (an update
acknowledged before another was invoked precedes it; true when updates go through consensus):
a read observed the update whose (unique) value it shows, or the initial state.

``read-your-writes``
    A read must not observe an update that precedes (by real time) the session's last earlier
    update of that key, nor the initial state after one.
``monotonic-reads``
    A read must not observe an update that precedes (by real time) an update a preceding read of
    the session observed on that key, nor the initial state after one.
``monotonic-writes`` / ``writes-follow-reads``
    Only checkable against the final state: when the converged final reads show update ``F`` of
    a key, ``F`` is last in that key's order, so a session that wrote (monotonic writes) or read
    (writes-follow-reads) ``F`` and then acknowledged another update of the key broke the
    guarantee.

Anything the history cannot decide (an observation that cannot be attributed, an update of
unknown index) is not counted against the session.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from harness.checker.level_history import LevelHistory, LevelOp, Seen, Violation

__all__ = ["SESSION_CHECKS", "check_session"]

SESSION_CHECKS = ("read-your-writes", "monotonic-reads", "monotonic-writes", "writes-follow-reads")
_LEVEL = "session"


@dataclass(frozen=True, slots=True)
class _Floor:
    index: int
    op: LevelOp  # the op that set it (an update, or the read)
    write: LevelOp | None  # the update observed (reads), None for the initial state


def _definitely_before(a: LevelOp | None, b: LevelOp) -> bool:
    return a is None or (a is not b and a.ret is not None and a.ret < b.call)


class _SessionState:
    def __init__(self) -> None:
        self.w_key: dict[tuple[Hashable, Hashable], _Floor] = {}  # (group, key) -> max update index
        self.w_all: dict[Hashable, _Floor] = {}  # group -> max update index
        self.r_floor: dict[Hashable, _Floor] = {}  # group -> max index of an update a read observed
        self.w_last: dict[tuple[Hashable, Hashable], LevelOp] = {}  # (group, key) -> last-invoked update
        self.r_obs: dict[tuple[Hashable, Hashable], LevelOp] = {}  # (group, key) -> last-invoked observed update

    def fold(self, history: LevelHistory, op: LevelOp) -> None:
        g = op.group
        if op.writes:
            for key, _ in op.writes:
                last = self.w_last.get((g, key))
                if last is None or op.call > last.call:
                    self.w_last[(g, key)] = op
                if op.index is not None:
                    _raise(self.w_key, (g, key), _Floor(op.index, op, op))
            if op.index is not None:
                _raise(self.w_all, g, _Floor(op.index, op, op))
        if op.is_read:
            for s in history.seen.get(op.id, ()):
                if not s.resolved or s.phantom:
                    continue
                if s.write is not None:
                    prior = self.r_obs.get((g, s.key))
                    if prior is None or s.write.call > prior.call:
                        self.r_obs[(g, s.key)] = s.write
                if s.mode == "index":
                    if s.write is None:
                        _raise(self.r_floor, g, _Floor(0, op, None))
                    elif s.write.index is not None and s.write.status == "ok":
                        _raise(self.r_floor, g, _Floor(s.write.index, op, s.write))


def _raise(table: dict, key: Hashable, floor: _Floor) -> None:  # type: ignore[type-arg]
    prior = table.get(key)
    if prior is None or floor.index > prior.index:
        table[key] = floor


def check_session(history: LevelHistory, final_writes: Mapping[tuple[Hashable, Hashable], LevelOp] | None = None
                  ) -> list[Violation]:
    """Every session-guarantee violation. ``final_writes``: (group, key) -> the update the
    converged final reads show (enables the value-mode monotonic-writes and writes-follow-reads)."""
    sessions: dict[str, list[LevelOp]] = {}
    for op in history.ops:
        if op.status == "ok":
            sessions.setdefault(op.session, []).append(op)
    out: list[Violation] = []
    for ops in sessions.values():
        ops.sort(key=lambda o: (o.call, o.id))
        out.extend(_sweep(history, ops))
        if final_writes:
            out.extend(_final_state_checks(history, ops, final_writes))
    return out


def _sweep(history: LevelHistory, ops: list[LevelOp]) -> list[Violation]:
    state = _SessionState()
    pending: list[tuple[int, int, LevelOp]] = []
    out: list[Violation] = []
    for op in ops:
        while pending and pending[0][0] < op.call:
            _, _, done = heapq.heappop(pending)
            state.fold(history, done)
        if op.is_read:
            out.extend(_check_read(history, state, op))
        elif op.writes:
            out.extend(_check_write(history, state, op))
        assert op.ret is not None
        heapq.heappush(pending, (op.ret, op.id, op))
    return out


def _check_read(history: LevelHistory, state: _SessionState, read: LevelOp) -> list[Violation]:
    out: list[Violation] = []
    g = read.group
    seen = [s for s in history.seen.get(read.id, ()) if s.resolved and not s.phantom]
    indexed = read.index is not None and history.order_of(read) is not None
    if indexed:
        assert read.index is not None
        ryw: _Floor | None
        if read.scan:
            ryw = state.w_all.get(g)
        else:
            ryw = max((state.w_key[(g, s.key)] for s in seen if (g, s.key) in state.w_key),
                      key=lambda f: f.index, default=None)
        if ryw is not None and ryw.index > read.index:
            out.append(Violation("read-your-writes", _LEVEL, read.id, (read.id, ryw.op.id),
                                 f"{read.describe()} was served from index {read.index}, before the session's "
                                 f"own earlier {ryw.op.describe()} (index {ryw.index})"))
        mr = state.r_floor.get(g)
        if mr is not None and mr.index > read.index:
            what = "the initial state" if mr.write is None else mr.write.describe()
            out.append(Violation("monotonic-reads", _LEVEL, read.id,
                                 (read.id, mr.op.id) + (() if mr.write is None else (mr.write.id,)),
                                 f"{read.describe()} was served from index {read.index}, older than the state "
                                 f"the session's earlier {mr.op.describe()} saw ({what}, index {mr.index})"))
        if not out:
            out.extend(_index_reached_without_update(state, read, seen))
        return out
    for s in seen:
        mine = state.w_last.get((g, s.key))
        if mine is not None and _definitely_before(s.write, mine):
            shown = "the initial value" if s.write is None else f"the value of {s.write.describe()}"
            out.append(Violation("read-your-writes", _LEVEL, read.id,
                                 (read.id, mine.id) + (() if s.write is None else (s.write.id,)),
                                 f"{read.describe()} shows {shown}, older than the session's own earlier "
                                 f"{mine.describe()}"))
            continue
        prior = state.r_obs.get((g, s.key))
        if prior is not None and _definitely_before(s.write, prior):
            shown = "the initial value" if s.write is None else f"the value of {s.write.describe()}"
            out.append(Violation("monotonic-reads", _LEVEL, read.id,
                                 (read.id, prior.id) + (() if s.write is None else (s.write.id,)),
                                 f"{read.describe()} shows {shown}, older than {prior.describe()}, which an "
                                 f"earlier read of the session already saw"))
    return out


def _older_than(seen: Seen, update: LevelOp) -> bool:
    """Whether the read observation ``seen`` shows a state *without* ``update`` (which has an
    index): the initial value, an update placed before it, or another update at its very index.
    An observed update of unknown position decides nothing."""
    shown = seen.write
    if shown is update:
        return False
    if shown is None:
        return True
    if shown.index is None:
        return False
    assert update.index is not None
    return shown.index <= update.index


def _index_reached_without_update(state: _SessionState, read: LevelOp, seen: list[Seen]) -> list[Violation]:
    """Reads whose index reaches the session's update (or the update an earlier read saw) of a
    key, yet show a state without it: the index named another state (module docstring)."""
    assert read.index is not None
    out: list[Violation] = []
    g = read.group
    for s in seen:
        mine = state.w_key.get((g, s.key))
        if mine is not None and mine.index <= read.index and _older_than(s, mine.op):
            shown = "the initial value" if s.write is None else f"the value of {s.write.describe()}"
            out.append(Violation("read-your-writes", _LEVEL, read.id,
                                 (read.id, mine.op.id) + (() if s.write is None else (s.write.id,)),
                                 f"{read.describe()} reached index {mine.index} of the session's own earlier "
                                 f"{mine.op.describe()} but shows {shown}: the state at that index does not "
                                 f"hold the session's update (another entry took its index)"))
            continue
        prior = state.r_obs.get((g, s.key))
        if (prior is not None and prior.index is not None and prior.status == "ok"
                and prior.index <= read.index and _older_than(s, prior)):
            shown = "the initial value" if s.write is None else f"the value of {s.write.describe()}"
            out.append(Violation("monotonic-reads", _LEVEL, read.id,
                                 (read.id, prior.id) + (() if s.write is None else (s.write.id,)),
                                 f"{read.describe()} reached index {prior.index} of {prior.describe()}, which an "
                                 f"earlier read of the session saw, but shows {shown}: the state at that index "
                                 f"does not hold it"))
    return out


def _check_write(history: LevelHistory, state: _SessionState, write: LevelOp) -> list[Violation]:
    out: list[Violation] = []
    if write.index is None:
        return out
    g = write.group
    mw = state.w_all.get(g)
    if mw is not None and mw.index >= write.index:
        out.append(Violation("monotonic-writes", _LEVEL, write.id, (write.id, mw.op.id),
                             f"{write.describe()} is ordered at index {write.index}, not after the session's "
                             f"earlier {mw.op.describe()} (index {mw.index})"))
    wfr = state.r_floor.get(g)
    if wfr is not None and wfr.write is not None and wfr.write is not write and wfr.index >= write.index:
        out.append(Violation("writes-follow-reads", _LEVEL, write.id, (write.id, wfr.op.id, wfr.write.id),
                             f"{write.describe()} is ordered at index {write.index}, not after "
                             f"{wfr.write.describe()} (index {wfr.index}), which the session's earlier "
                             f"{wfr.op.describe()} saw"))
    return out


def _final_state_checks(history: LevelHistory, ops: list[LevelOp],
                        final_writes: Mapping[tuple[Hashable, Hashable], LevelOp]) -> list[Violation]:
    passed: dict[tuple[Hashable, Hashable], tuple[str, LevelOp]] = {}  # (group, key) -> (how, op)
    pending: list[tuple[int, int, LevelOp]] = []
    out: list[Violation] = []
    for op in ops:
        while pending and pending[0][0] < op.call:
            _, _, done = heapq.heappop(pending)
            for key, _ in done.writes:
                if final_writes.get((done.group, key)) is done:
                    passed.setdefault((done.group, key), ("wrote", done))
            if done.is_read:
                for s in history.seen.get(done.id, ()):
                    final = final_writes.get((done.group, s.key))
                    if s.resolved and final is not None and s.write is final:
                        passed.setdefault((done.group, s.key), ("read", done))
        for key, _ in op.writes:
            final = final_writes.get((op.group, key))
            how = passed.get((op.group, key))
            if final is None or how is None or final is op:
                continue
            if op.index is not None and final.index is not None:
                continue  # the index checks decide this pair
            kind, by = how
            if kind == "wrote":
                out.append(Violation("monotonic-writes", _LEVEL, op.id, (op.id, final.id),
                                     f"{op.describe()} came after the session's {final.describe()} but is "
                                     f"ordered before it: the final reads show {key} from {final.describe()}"))
            else:
                out.append(Violation("writes-follow-reads", _LEVEL, op.id, (op.id, by.id, final.id),
                                     f"{op.describe()} came after the session's {by.describe()} saw "
                                     f"{final.describe()}, but is ordered before that update: the final reads "
                                     f"show {key} from it"))
        assert op.ret is not None
        heapq.heappush(pending, (op.ret, op.id, op))
    return out
