"""The per-level checkers' view of a history: reads and writes, and which write each read saw.

Theory of operation
-------------------
The level checkers (:mod:`~harness.checker.session`, :mod:`~harness.checker.prefix`,
:mod:`~harness.checker.staleness`, :mod:`~harness.checker.convergence`, tied together by
:mod:`~harness.checker.levels`) judge register/kv histories written by the harness
(:mod:`harness.history`). This module turns the paired events into :class:`LevelOp` values and
answers the one question all of them ask: *which write did this read observe?*

**Operations.** ``read``/``get`` observe one key; ``scan`` observes several keys from one state
(its ``value`` is a mapping or a list of ``[key, value]`` pairs; an invocation value
``[start, end]`` or ``{"start", "end"}`` names the range it covered). ``write``/``put`` and
``delete`` update one key; an ``ok`` ``cas`` is an update to its new value. A ``fail`` did not
happen (a ``cas-mismatch`` fail changed nothing either) and is never rated. An ``info`` update
may have happened. Other functions (``add``, ``read-counter``...) are left out.

**The commit order of a group.** Each ``ok`` update whose completion carries an ``index`` (an
int, or ``[term, index]``) sits at that position of its ``group``'s log. :class:`CommitOrder`
keeps, per group, those positions in order and, per key, the sorted positions of its updates, so
"the last update of key k at or before index i" is one binary search. Two different updates
claiming one position of one group is itself a violation (recorded in
:attr:`LevelHistory.conflicts`).

**Which write a read saw** (:class:`Seen`, one per key a read observed):

*index mode* (the read carries an ``index`` and its group has a commit order): the state at
index ``i`` holds, for key ``k``, the last update of ``k`` at or before ``i`` (or the initial
value). A read showing exactly that fits. A read showing another value is explained only if an
update of unknown position (``info``, or ``ok`` without an index) wrote it and a free position
is left between that last update and ``i``; otherwise the read shows a state that is not a
prefix of the commit order, and :attr:`Seen.problem` says how (a gap: an update at or before
``i`` is missing; reordered: it shows an update committed after ``i``; no room for it).

*value mode* (no index): when each (key, value) was written at most once, a read's value names
the update it saw; a value equal to the initial one and never written names the initial state.
A value written twice cannot be attributed (:attr:`Seen.resolved` is False: the read
constrains nothing). A value never written, in either mode, is a *phantom*.

In both modes a read cannot have seen an update that was invoked only after the read returned.

**Sessions** are the ``session`` field; an op without one is its own process's session.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exapyte.history import Event, to_event
from harness.history import NEMESIS, Op, pair_ops, read_events

__all__ = [
    "LEVELS",
    "LEVEL_RANK",
    "CommitOrder",
    "LevelHistory",
    "LevelOp",
    "Seen",
    "Violation",
    "level_history",
    "read_level_history",
]

#: The five levels, weakest first (``LEVEL_RANK[level]`` orders them).
LEVELS: tuple[str, ...] = ("eventual", "consistent_prefix", "session", "bounded_staleness", "strong")
LEVEL_RANK: dict[str, int] = {level: rank for rank, level in enumerate(LEVELS)}

_READS = frozenset({"read", "get"})
_SCANS = frozenset({"scan"})
_WRITES = frozenset({"write", "put"})
_MISMATCH = "cas-mismatch"


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _show(value: Any) -> str:
    return "nil" if value is None else json.dumps(value, default=str) if not isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class LevelOp:
    """One client operation, as the level checkers see it."""

    id: int  # position among the history's client operations
    process: int
    session: str
    f: str
    status: str  # ok | fail | info
    level: str  # the level it asked for
    call: int
    ret: int | None  # None: outcome unknown
    group: Hashable
    term: int | None
    index: int | None
    replica: str | None
    #: (key, value) it wrote if it happened (a delete writes None).
    writes: tuple[tuple[Hashable, Any], ...] = ()
    #: (key, value) a completed read observed; None for an op that is not a completed read.
    reads: tuple[tuple[Hashable, Any], ...] | None = None
    scan: bool = False
    #: A scan's range [start, end), when its invocation named one.
    scan_range: tuple[Any, Any] | None = None

    @property
    def is_read(self) -> bool:
        return self.reads is not None and self.status == "ok"

    @property
    def is_write(self) -> bool:
        """An update that happened (ok) or may have (info)."""
        return bool(self.writes) and self.status in ("ok", "info")

    @property
    def rated(self) -> bool:
        """Only completed reads and updates are given a delivered level."""
        return self.status == "ok" and (self.is_read or bool(self.writes))

    def describe(self) -> str:
        """``op #7 (process 2, session s1, read x -> 3 at index g1/[2, 14], n2)``."""
        if self.is_read and self.scan:
            what = f"scan -> {{{', '.join(f'{k}: {_show(v)}' for k, v in (self.reads or ()))}}}"
        elif self.is_read:
            ((key, value),) = self.reads or ((None, None),)
            what = f"{self.f} {key} -> {_show(value)}"
        elif self.writes:
            key, value = self.writes[0]
            what = f"{self.f} {key} = {_show(value)}" + ("" if self.status == "ok" else f" :{self.status}")
        else:
            what = f"{self.f} :{self.status}"
        where = []
        if self.index is not None:
            at = self.index if self.term is None else [self.term, self.index]
            where.append(f"at index {at}" if self.group is None else f"at index {self.group}/{at}")
        if self.replica:
            where.append(f"on {self.replica}")
        tail = (", " + " ".join(where)) if where else ""
        return f"op #{self.id} (process {self.process}, session {self.session}, {what}{tail})"


@dataclass(frozen=True, slots=True)
class Seen:
    """Which update one read observed on one key."""

    read: LevelOp
    key: Hashable
    value: Any
    #: The update it saw; None: the initial state (when resolved).
    write: LevelOp | None
    resolved: bool
    mode: str  # "index" | "value"
    #: Why the observation is not a prefix of the commit order (a consistent-prefix violation).
    problem: str | None = None
    #: The other operations the problem names.
    culprits: tuple[int, ...] = ()
    phantom: bool = False


@dataclass(frozen=True, slots=True)
class Violation:
    """One operation that broke one guarantee, with the operations that show it."""

    check: str  # read-your-writes, monotonic-reads, ..., consistent-prefix, bounded-staleness, ...
    level: str  # the weakest level the violation rules out
    op: int  # the operation rated down by it
    ops: tuple[int, ...]  # every operation of the counterexample, ``op`` included
    cause: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "level": self.level, "op": self.op, "ops": list(self.ops), "cause": self.cause}


class CommitOrder:
    """The ``ok`` updates of one group whose log index is known, in index order."""

    def __init__(self, writes: Iterable[LevelOp]) -> None:
        self.by_index: dict[int, LevelOp] = {}
        self.conflicts: list[tuple[LevelOp, LevelOp]] = []
        per_key: dict[Hashable, list[tuple[int, LevelOp]]] = {}
        for w in writes:
            assert w.index is not None
            prior = self.by_index.get(w.index)
            if prior is not None:
                self.conflicts.append((prior, w))
                continue
            self.by_index[w.index] = w
            for key, _ in w.writes:
                per_key.setdefault(key, []).append((w.index, w))
        self.indexes: list[int] = sorted(self.by_index)
        self._keys: dict[Hashable, tuple[list[int], list[LevelOp]]] = {}
        for key, entries in per_key.items():
            entries.sort(key=lambda e: e[0])
            self._keys[key] = ([i for i, _ in entries], [w for _, w in entries])
        try:
            self.keys_sorted: list[Hashable] | None = sorted(self._keys)  # type: ignore[type-var]
        except TypeError:
            self.keys_sorted = None

    def latest(self, key: Hashable, index: int) -> LevelOp | None:
        """The last update of ``key`` at or before ``index``."""
        entry = self._keys.get(key)
        if entry is None:
            return None
        at = bisect.bisect_right(entry[0], index)
        return entry[1][at - 1] if at else None

    def occupied(self, low: int, high: int) -> int:
        """How many known positions lie in (low, high]."""
        return bisect.bisect_right(self.indexes, high) - bisect.bisect_right(self.indexes, low)

    def keys_in(self, start: Any, end: Any) -> list[Hashable]:
        """Keys with a known update in [start, end) (end None: no upper bound)."""
        if self.keys_sorted is None:
            return []
        lo = bisect.bisect_left(self.keys_sorted, start)  # type: ignore[arg-type]
        hi = len(self.keys_sorted) if end is None else bisect.bisect_left(self.keys_sorted, end)  # type: ignore[arg-type]
        return self.keys_sorted[lo:hi]


@dataclass
class LevelHistory:
    """The operations of one history, their commit orders, and what every read saw."""

    ops: list[LevelOp]
    raw: list[Op] = field(default_factory=list)  # the harness op of each LevelOp, by id
    initial: Any = None  # None, a scalar for every key, or a mapping key -> value
    heal_ns: int | None = None  # completion time of the last nemesis heal
    orders: dict[Hashable, CommitOrder] = field(default_factory=dict)
    seen: dict[int, list[Seen]] = field(default_factory=dict)  # read id -> one per key it observed
    conflicts: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def initial_of(self, key: Hashable) -> Any:
        if isinstance(self.initial, Mapping):
            return _freeze(self.initial.get(key))
        return _freeze(self.initial)

    def op(self, op_id: int) -> LevelOp:
        return self.ops[op_id]

    @property
    def writes(self) -> list[LevelOp]:
        return [op for op in self.ops if op.is_write]

    @property
    def reads(self) -> list[LevelOp]:
        return [op for op in self.ops if op.is_read]

    def order_of(self, op: LevelOp) -> CommitOrder | None:
        """The commit order ``op`` can be placed in: its group's, when ``op`` has an index."""
        if op.index is None:
            return None
        return self.orders.get(op.group)


# --- building ----------------------------------------------------------------------------------


def _parse_index(raw: Any) -> tuple[int | None, int | None]:
    if raw is None:
        return None, None
    if isinstance(raw, bool):
        raise ValueError(f"index must be an int or [term, index], got {raw!r}")
    if isinstance(raw, int):
        return None, raw
    if isinstance(raw, (list, tuple)) and len(raw) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        return int(raw[0]), int(raw[1])
    raise ValueError(f"index must be an int or [term, index], got {raw!r}")


def _scan_result(value: Any) -> tuple[tuple[Hashable, Any], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = [tuple(pair) for pair in value]
    out = []
    for pair in items:
        if len(pair) != 2:
            raise ValueError(f"a scan result must be a mapping or [key, value] pairs, got {pair!r}")
        out.append((_freeze(pair[0]), _freeze(pair[1])))
    return tuple(sorted(out, key=lambda kv: repr(kv[0])))


def _scan_range(value: Any) -> tuple[Any, Any] | None:
    if isinstance(value, Mapping) and "start" in value:
        return value.get("start"), value.get("end")
    if isinstance(value, (list, tuple)) and len(value) == 2 and not isinstance(value[0], (list, tuple)):
        return value[0], value[1]
    return None


def _level_op(i: int, op: Op) -> LevelOp | None:
    f = op.f
    status = op.type
    term, index = _parse_index(op.index)
    session = op.session if op.session is not None else f"p{op.process}"
    common: dict[str, Any] = dict(
        id=i, process=op.process, session=session, f=f, status=status, level=op.consistency,
        call=op.call_ns, ret=op.ret_ns, group=_freeze(op.group), term=term, index=index, replica=op.replica,
    )
    key = _freeze(op.key)
    if f in _READS:
        reads = ((key, _freeze(op.value)),) if status == "ok" else None
        return LevelOp(**common, reads=reads)
    if f in _SCANS:
        reads = _scan_result(op.value) if status == "ok" else None
        return LevelOp(**common, reads=reads, scan=True, scan_range=_scan_range(op.invoke.value))
    if f in _WRITES:
        return LevelOp(**common, writes=((key, _freeze(op.invoke.value)),))
    if f == "delete":
        return LevelOp(**common, writes=((key, None),))
    if f == "cas":
        value = op.invoke.value
        if status == "fail" or not isinstance(value, (list, tuple)) or len(value) != 2:
            return LevelOp(**common)  # a mismatch or a refusal: nothing was written
        return LevelOp(**common, writes=((key, _freeze(value[1])),))
    return None


def level_history(events: Sequence[Event | Mapping[str, Any]], *, initial: Any = None) -> LevelHistory:
    """Build the level checkers' view of a harness history (its events, as :func:`read_events`
    returns them, or dicts of the same fields). ``initial``: every key's starting value (None:
    absent), or a mapping per key."""
    records = [to_event(event) for event in events]
    paired = pair_ops(records)
    ops: list[LevelOp] = []
    raw: list[Op] = []
    for op in paired:
        level_op = _level_op(len(ops), op)
        if level_op is not None:
            ops.append(level_op)
            raw.append(op)
    heal_ns = None
    for event in records:
        if event.process == NEMESIS and event.f == "heal" and event.type != "invoke":
            heal_ns = int(event.time or 0)
    history = LevelHistory(ops=ops, raw=raw, initial=initial, heal_ns=heal_ns)
    _build_orders(history)
    _resolve(history)
    return history


def read_level_history(path: str | Path, *, initial: Any = None) -> LevelHistory:
    """:func:`level_history` of a ``history.jsonl``."""
    return level_history(read_events(path), initial=initial)


def _build_orders(history: LevelHistory) -> None:
    by_group: dict[Hashable, list[LevelOp]] = {}
    for op in history.ops:
        if op.status == "ok" and op.writes and op.index is not None:
            by_group.setdefault(op.group, []).append(op)
    for group, writes in by_group.items():
        order = CommitOrder(writes)
        history.orders[group] = order
        for first, second in order.conflicts:
            history.conflicts.append(Violation(
                "consistent-prefix", "consistent_prefix", second.id, (first.id, second.id),
                f"{first.describe()} and {second.describe()} were both acknowledged at one index of "
                f"group {group}: one of them is not in the group's commit order",
            ))


def _resolve(history: LevelHistory) -> None:
    writers: dict[tuple[Hashable, Hashable, Any], list[LevelOp]] = {}
    for op in history.ops:
        if op.is_write:
            for key, value in op.writes:
                try:
                    writers.setdefault((op.group, key, value), []).append(op)
                except TypeError:
                    pass
    ambiguous = 0
    for read in history.ops:
        if not read.is_read:
            continue
        seen: list[Seen] = []
        observed = list(read.reads or ())
        order = history.order_of(read)
        if read.scan and order is not None and read.scan_range is not None and read.index is not None:
            # Keys of the range the scan did not return read as absent.
            present = {k for k, _ in observed}
            start, end = read.scan_range
            for key in order.keys_in(start, end):
                if key not in present:
                    observed.append((key, None))
        for key, value in observed:
            try:
                candidates = writers.get((read.group, key, value), [])
            except TypeError:
                candidates = []
            if order is not None:
                s = _resolve_indexed(history, order, read, key, value, candidates)
            else:
                s = _resolve_by_value(history, read, key, value, candidates)
            if not s.resolved:
                ambiguous += 1
            if s.resolved and s.write is not None and s.problem is None:
                w = s.write
                if read.ret is not None and w.call > read.ret:
                    s = Seen(read, key, value, w, True, s.mode,
                             f"{read.describe()} shows {key} = {_show(value)}, written by {w.describe()}, which "
                             f"was invoked only after the read returned", (w.id,))
            seen.append(s)
        history.seen[read.id] = seen
    if ambiguous:
        history.notes.append(f"{ambiguous} read observation(s) could not be attributed to one write "
                             "(the value was written more than once, and the read carries no index)")


def _resolve_by_value(history: LevelHistory, read: LevelOp, key: Hashable, value: Any,
                      candidates: list[LevelOp]) -> Seen:
    initial = history.initial_of(key)
    if not candidates:
        if value == initial:
            return Seen(read, key, value, None, True, "value")
        return Seen(read, key, value, None, True, "value",
                    f"{read.describe()} shows {key} = {_show(value)}, a value no update ever wrote", (), phantom=True)
    if len(candidates) == 1 and value != initial:
        return Seen(read, key, value, candidates[0], True, "value")
    return Seen(read, key, value, None, False, "value")


def _resolve_indexed(history: LevelHistory, order: CommitOrder, read: LevelOp, key: Hashable, value: Any,
                     candidates: list[LevelOp]) -> Seen:
    assert read.index is not None
    i = read.index
    expected = order.latest(key, i)
    expected_value = history.initial_of(key) if expected is None else dict(expected.writes).get(key)
    if value == expected_value:
        return Seen(read, key, value, expected, True, "index")
    low = 0 if expected is None or expected.index is None else expected.index
    if expected is None:
        missing = "the initial value"
    else:
        missing = f"{expected.describe()}"
    placed = [w for w in candidates if w.index is not None and w.status == "ok" and order.by_index.get(w.index) is w]
    floating = [w for w in candidates if w not in placed]
    if floating:
        room = (i - low) > order.occupied(low, i)
        if room:
            return Seen(read, key, value, floating[0], True, "index")
        w = floating[0]
        return Seen(read, key, value, w, True, "index",
                    f"{read.describe()} shows {key} = {_show(value)} from {w.describe()}, but the state at index "
                    f"{i} holds {missing} and no position after it up to {i} is free for that update",
                    (w.id,) + (() if expected is None else (expected.id,)))
    if placed:
        w = placed[0]
        assert w.index is not None
        culprits = (w.id,) + (() if expected is None else (expected.id,))
        if w.index > i:
            return Seen(read, key, value, w, True, "index",
                        f"{read.describe()} shows {key} = {_show(value)} from {w.describe()}, committed after the "
                        f"state it claims to have read (index {w.index} > {i}; that state holds {missing})",
                        culprits)
        return Seen(read, key, value, w, True, "index",
                    f"{read.describe()} shows {key} = {_show(value)} from {w.describe()}, but {missing} overwrote "
                    f"it before index {i}: a gap in the prefix", culprits)
    if value == history.initial_of(key):
        return Seen(read, key, value, None, True, "index",
                    f"{read.describe()} shows {key} = {_show(value)} (the initial value), but {missing} is at or "
                    f"before index {i}: a gap in the prefix", () if expected is None else (expected.id,))
    return Seen(read, key, value, None, True, "index",
                f"{read.describe()} shows {key} = {_show(value)}, a value no update ever wrote", (), phantom=True)
