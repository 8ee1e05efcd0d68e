"""The five levels, per operation: what each op asked for and the strongest level it delivered.

Theory of operation
-------------------
The levels form one chain, weakest first: ``eventual < consistent_prefix < session <
bounded_staleness < strong``. Each check of :mod:`~harness.checker.prefix`,
:mod:`~harness.checker.session`, :mod:`~harness.checker.staleness` and
:mod:`~harness.checker.convergence` yields :class:`~harness.checker.level_history.Violation`\\ s,
each tagged with the weakest level it rules out for one operation:

==========================  =====================================================================
rules out                   violations
==========================  =====================================================================
``eventual``                a read shows a value nobody wrote; a key that did not converge
``consistent_prefix``       a read's state is not a prefix of its group's commit order (a gap, a
                            reordering, a mixed multi-key read, a read of an update not yet
                            invoked); two updates acknowledged at one index
``session``                 read-your-writes, monotonic reads, monotonic writes,
                            writes-follow-reads
``bounded_staleness``       a read more than K versions or T ms behind
``strong``                  a read that missed an update acknowledged before it began; an update
                            ordered before one acknowledged before it was invoked
==========================  =====================================================================

A level is delivered to an op when no violation rules out that level or a weaker one, so the
*delivered* level of an op is the level just below its weakest violation (``strong`` when it has
none, ``none`` when even ``eventual`` is ruled out). The rating is evidence-based: an op is
rated below a level only when the history proves it; what the history cannot decide counts for
the op. Without staleness bounds, ``bounded_staleness`` cannot be granted: a stale op is then
rated ``session`` at best. The levels are a chain except in one place: exapyte's
``bounded_staleness`` promises the bound and a consistent prefix, not the session guarantees
(docs/consistency.md; Cosmos DB's spec gives bounded staleness consistent prefix plus the bound,
and session guarantees only within the writer's region). So an op that *asked* for
``bounded_staleness`` is neither broken nor rated down by a session check
(:data:`NOT_PROMISED`); every other op is rated along the chain.

Per-op ``strong`` is a necessary condition of linearizability, not the whole of it. The
history-level verdict at ``strong`` also runs the linearizability checker
(:mod:`~harness.checker.linearizability`, ``kv`` model, a ``cas-mismatch`` fail is a compare
that did not match) on every update and every read judged at ``strong``.

:func:`check_level` judges a history at one level (every completed op must deliver it) or, with
``level=None``, each op at the level it requested. Either way the report holds the table of
requested vs delivered levels (:meth:`LevelReport.table`, :meth:`LevelReport.markdown`,
:meth:`LevelReport.rich_table`), the served staleness distribution and the convergence result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.checker.convergence import ConvergenceReport, check_convergence
from harness.checker.level_history import (
    LEVEL_RANK,
    LEVELS,
    LevelHistory,
    Violation,
    level_history,
)
from harness.checker.linearizability import CheckResult, check_operations
from harness.checker.prefix import check_consistent_prefix, phantom_violations
from harness.checker.session import check_session
from harness.checker.staleness import (
    StalenessReport,
    check_staleness,
    check_write_order,
)
from harness.history import read_events

__all__ = [
    "DELIVERED",
    "LevelReport",
    "OpRating",
    "check_level",
    "check_level_file",
    "rate_operations",
]

#: Every delivered level, strongest first; ``none``: not even eventual.
DELIVERED: tuple[str, ...] = tuple(reversed(LEVELS)) + ("none",)
#: The levels whose violations an op asking for a level does not answer for: exapyte's
#: ``bounded_staleness`` promises the bound and a prefix, not the session guarantees
#: (docs/consistency.md; Cosmos DB gives them only to clients in the writer's region), so a
#: bounded read is neither broken nor rated down by a session check.
NOT_PROMISED: dict[str, frozenset[str]] = {"bounded_staleness": frozenset({"session"})}
VIOLATIONS_SHOWN_MAX = 20


@dataclass(frozen=True)
class OpRating:
    op: int
    requested: str
    delivered: str
    violations: tuple[Violation, ...]

    @property
    def below_requested(self) -> bool:
        return _rank(self.delivered) < LEVEL_RANK.get(self.requested, LEVEL_RANK["strong"])


def _rank(delivered: str) -> int:
    return -1 if delivered == "none" else LEVEL_RANK[delivered]


@dataclass
class LevelReport:
    """The verdict on one history at one level (None: each op at its requested level)."""

    level: str | None
    valid: bool | str
    cause: str | None
    history: LevelHistory
    ratings: list[OpRating]
    violations: list[Violation]
    staleness: StalenessReport
    convergence: ConvergenceReport
    linearizability: CheckResult | None = None
    notes: list[str] = field(default_factory=list)

    def table(self) -> dict[str, dict[str, int]]:
        """Requested level -> {"ops", each delivered level, "below_requested"}: counts."""
        out: dict[str, dict[str, int]] = {}
        for r in self.ratings:
            row = out.setdefault(r.requested, {"ops": 0, **{d: 0 for d in DELIVERED}, "below_requested": 0})
            row["ops"] += 1
            row[r.delivered] += 1
            row["below_requested"] += r.below_requested
        order = {level: i for i, level in enumerate(DELIVERED)}
        return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))

    def markdown(self) -> str:
        """The requested-vs-delivered table as Markdown, one row per requested level."""
        head = ["requested", "ops", *DELIVERED, "below requested"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for requested, row in self.table().items():
            cells = [requested, str(row["ops"]), *(str(row[d]) for d in DELIVERED), str(row["below_requested"])]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def rich_table(self) -> Any:
        from rich.table import Table

        table = Table(title="level requested vs delivered (ops)")
        table.add_column("requested")
        table.add_column("ops", justify="right")
        for d in DELIVERED:
            table.add_column(d, justify="right")
        table.add_column("below requested", justify="right")
        for requested, row in self.table().items():
            below = row["below_requested"]
            table.add_row(requested, str(row["ops"]), *(str(row[d]) for d in DELIVERED),
                          f"[bold red]{below}[/]" if below else "0")
        return table

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(v.check for v in self.violations).items()))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "level": self.level or "requested",
            "valid": self.valid,
            "cause": self.cause,
            "ops": len(self.ratings),
            "table": self.table(),
            "violation_counts": self.counts(),
            "violations": [v.to_dict() for v in self.violations[:VIOLATIONS_SHOWN_MAX]],
            "staleness": self.staleness.to_dict(),
            "convergence": self.convergence.to_dict(),
            "notes": self.notes,
        }
        if self.linearizability is not None:
            out["linearizability"] = self.linearizability.to_dict()
        return out


def rate_operations(history: LevelHistory, violations: Sequence[Violation], *, bounded: bool) -> list[OpRating]:
    """The delivered level of every completed read and update (see the module's theory)."""
    by_op: dict[int, list[Violation]] = {}
    for v in violations:
        by_op.setdefault(v.op, []).append(v)
    ratings = []
    for op in history.ops:
        if not op.rated:
            continue
        vs = by_op.get(op.id, [])
        skipped = NOT_PROMISED.get(op.level, frozenset())
        ranks = []
        for v in vs:
            if v.level in skipped:
                continue
            rank = LEVEL_RANK[v.level]
            if not bounded and v.level == "strong" and v.check == "stale-read":
                rank = LEVEL_RANK["bounded_staleness"]
            ranks.append(rank)
        weakest = min(ranks, default=len(LEVELS))
        delivered = "none" if weakest == 0 else LEVELS[weakest - 1]
        requested = op.level if op.level in LEVEL_RANK else "strong"
        ratings.append(OpRating(op.id, requested, delivered, tuple(vs)))
    return ratings


def check_level(
    history: LevelHistory,
    level: str | None = None,
    *,
    staleness_versions: int | None = None,
    staleness_ms: float | None = None,
    final_start_ns: int | None = None,
    linearizability_timeout_s: float | None = 60.0,
    linearizability: bool = True,
) -> LevelReport:
    """Judge ``history`` at ``level`` (one of :data:`LEVELS`; None: each op at its requested level).
    ``linearizability=False`` leaves the linearizability search of the ops judged at ``strong``
    to the caller (the harness runs its own ``linearizable`` checker on workloads of strong ops
    only), and says so in the notes."""
    if level is not None and level not in LEVEL_RANK:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    bounded = staleness_versions is not None or staleness_ms is not None
    if level == "bounded_staleness" and not bounded:
        raise ValueError("bounded_staleness needs a bound: staleness_versions (K) and/or staleness_ms (T)")
    convergence = check_convergence(history, final_start_ns)
    staleness = check_staleness(history, staleness_versions, staleness_ms)
    violations: list[Violation] = []
    violations += phantom_violations(history)
    violations += convergence.violations
    violations += check_consistent_prefix(history)
    violations += check_session(history, convergence.final_writes)
    violations += staleness.violations
    violations += staleness.stale
    violations += check_write_order(history)
    ratings = rate_operations(history, violations, bounded=bounded)
    notes = list(history.notes)
    if convergence.valid == "unknown":
        notes.append(f"convergence not assessed: {convergence.cause}")

    def judged_at(op_id: int) -> int:
        if level is not None:
            return LEVEL_RANK[level]
        return LEVEL_RANK.get(history.op(op_id).level, LEVEL_RANK["strong"])

    # A violation breaks the op it rates down when it rules out the level the op is judged at
    # (a stale read rules out only strong).
    def judged_level(op_id: int) -> str:
        return level if level is not None else history.op(op_id).level

    broken = [v for v in violations if LEVEL_RANK[v.level] <= judged_at(v.op)
              and v.level not in NOT_PROMISED.get(judged_level(v.op), frozenset())]
    if level is None and not bounded and any(op.rated and op.level == "bounded_staleness" for op in history.ops):
        notes.append("no staleness bound given: bounded_staleness ops were judged on the guarantees below it only")
    linearizability_result = None
    strong_ids = [op.id for op in history.ops if op.rated and judged_at(op.id) == LEVEL_RANK["strong"]]
    if strong_ids and linearizability:
        linearizability_result = _linearizability(history, set(strong_ids), linearizability_timeout_s)
    elif strong_ids:
        notes.append("linearizability of the ops judged at strong is left to the linearizable checker")
    valid: bool | str
    if broken:
        first = broken[0]
        valid = False
        cause = f"{len(broken)} violation(s) at {level or 'the requested levels'}: {first.check}: {first.cause}"
    elif linearizability_result is not None and linearizability_result.valid is not True:
        valid = linearizability_result.valid
        cause = f"linearizability: {linearizability_result.cause}"
    else:
        valid, cause = True, None
    broken_set = {id(v) for v in broken}
    ordered = [v for v in violations if id(v) in broken_set] + [v for v in violations if id(v) not in broken_set]
    return LevelReport(level, valid, cause, history, ratings, ordered, staleness, convergence,
                       linearizability_result, notes)


def _linearizability(history: LevelHistory, judged: set[int], timeout_s: float | None) -> CheckResult:
    from harness.checker.history import RETURN_NEVER, Call, Operation, Output
    from harness.checker.models import Kv, with_initial

    operations: list[Operation] = []
    for op in history.ops:
        if op.scan:
            continue
        if op.writes and op.status in ("ok", "info"):
            key, value = op.writes[0]
            if op.f == "cas":
                expected = history.raw[op.id].invoke.value[0]  # type: ignore[index]
                call = Call("cas", key, (_freeze(expected), value))
            elif op.f == "delete":
                call = Call("delete", key, None)
            else:
                call = Call("write", key, value)
        elif op.f == "cas" and op.status == "fail" and history.raw[op.id].error == "cas-mismatch":
            raw = history.raw[op.id].invoke.value
            call = Call("cas", _freeze(history.raw[op.id].key), (_freeze(raw[0]), _freeze(raw[1])))  # type: ignore[index]
        elif op.is_read and op.id in judged:
            ((key, value),) = op.reads or ()
            call = Call("read", key, None)
        else:
            continue
        if op.status == "ok":
            output = Output("ok", op.reads[0][1] if op.is_read and op.reads else None)
            ret: float = float(op.ret or 0)
        elif op.status == "fail":
            output, ret = Output("fail", None), float(history.raw[op.id].end_ns or 0)
        else:
            output, ret = Output("info", None), RETURN_NEVER
        operations.append(Operation(len(operations), op.process, call, output, float(op.call), ret))
    model = with_initial(Kv(initial=None, fail_cas_is_mismatch=True), history.initial)  # type: ignore[arg-type]
    return check_operations(model, operations, timeout_s)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def check_level_file(path: str | Path, level: str | None = None, *, initial: Any = None, **kwargs: Any) -> LevelReport:
    """:func:`check_level` of a ``history.jsonl``."""
    return check_level(level_history(read_events(path), initial=initial), level, **kwargs)
