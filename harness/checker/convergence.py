"""Eventual convergence: after the heal and the quiet period, every replica agrees, and no read
ever showed a value nobody wrote.

Theory of operation
-------------------
``eventual`` promises little per read: only that what it shows was written by someone (or is
the initial value): a *phantom* rules out even ``eventual`` for that read
(:func:`~harness.checker.prefix.phantom_violations`). Its real promise is about the end of a
run: once faults heal and writes stop, replicas converge.

The *final phase* starts at ``final_start_ns`` when given (the harness knows when it began its
final reads), else at the last nemesis ``heal`` completion; a history with neither has no final
phase, and convergence is not assessed (``unknown``). Its reads are grouped by (group, key) and by the replica that served them (``replica``,
else ``node``; reads that name neither share one anonymous replica). For each key:

- the *last* final read of every replica must show the same value, else the key did not
  converge: a violation naming every replica's last read;
- each replica *converged* at the invocation of the first of its final reads from which every
  later read of that replica shows the agreed value; the key converged when its last replica
  did. The report gives that time after the start of the final phase (max over keys).

A key whose final reads all began after its last acknowledged update completed gives its
*final update*: the one whose value the replicas agree on. It is last in the key's order, which
lets the session checker judge monotonic writes and writes-follow-reads without indexes.
Linear in the number of reads (one pass, then one pass per key's reads in time order).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from harness.checker.level_history import LevelHistory, LevelOp, Violation

__all__ = ["ConvergenceReport", "check_convergence", "final_phase_start"]

_ANONYMOUS = "?"


@dataclass
class ConvergenceReport:
    valid: bool | str  # True | False | "unknown" (no final reads)
    cause: str | None
    violations: list[Violation]
    final_start_ns: int | None
    keys: int = 0
    replicas: list[str] = field(default_factory=list)
    converged_within_ms: float | None = None
    #: (group, key) -> the update the converged replicas show (None: the initial value).
    final_writes: dict[tuple[Hashable, Hashable], LevelOp] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid, "cause": self.cause,
            "final_start_ms": None if self.final_start_ns is None else round(self.final_start_ns / 1e6, 3),
            "keys": self.keys, "replicas": self.replicas, "converged_within_ms": self.converged_within_ms,
            "violations": [v.to_dict() for v in self.violations],
        }


def final_phase_start(history: LevelHistory, final_start_ns: int | None = None) -> int | None:
    """When the final phase began: ``final_start_ns`` when given, else the last heal, else None."""
    if final_start_ns is not None:
        return final_start_ns
    return history.heal_ns


def check_convergence(history: LevelHistory, final_start_ns: int | None = None) -> ConvergenceReport:
    start = final_phase_start(history, final_start_ns)
    if start is None:
        return ConvergenceReport("unknown", "no final phase: the history has no heal and no final-read start was given",
                                 [], None)
    # (group, key) -> replica -> [(read, value, seen write or None, resolved)]
    by_key: dict[tuple[Hashable, Hashable], dict[str, list[tuple[LevelOp, Any, LevelOp | None, bool]]]] = {}
    replicas: set[str] = set()
    for read_id, seen in history.seen.items():
        read = history.op(read_id)
        if read.call < start:
            continue
        replica = read.replica or _ANONYMOUS
        replicas.add(replica)
        for s in seen:
            by_key.setdefault((read.group, s.key), {}).setdefault(replica, []).append(
                (read, s.value, s.write, s.resolved and not s.phantom))
    if not by_key:
        return ConvergenceReport("unknown", f"no read succeeded in the final phase (from {start / 1e6:.1f} ms)",
                                 [], start)
    last_update: dict[tuple[Hashable, Hashable], int] = {}
    for op in history.ops:
        if op.status == "ok" and op.writes and op.ret is not None:
            for key, _ in op.writes:
                gk = (op.group, key)
                last_update[gk] = max(last_update.get(gk, op.ret), op.ret)
    violations: list[Violation] = []
    final_writes: dict[tuple[Hashable, Hashable], LevelOp] = {}
    converged_within = 0.0
    for gk, per_replica in sorted(by_key.items(), key=lambda kv: repr(kv[0])):
        lasts = {}
        for replica, reads in per_replica.items():
            reads.sort(key=lambda r: (r[0].call, r[0].id))
            lasts[replica] = reads[-1]
        values = {repr(last[1]) for last in lasts.values()}
        group, key = gk
        if len(values) > 1:
            last_reads = [lasts[r][0] for r in sorted(lasts)]
            shown = ", ".join(f"{r}: {lasts[r][1]!r}" for r in sorted(lasts))
            violations.append(Violation(
                "convergence", "eventual", last_reads[-1].id, tuple(op.id for op in last_reads),
                f"key {key}{'' if group is None else f' (group {group})'} did not converge after the final phase "
                f"began: the last read of each replica shows {shown} "
                f"({'; '.join(op.describe() for op in last_reads)})",
            ))
            continue
        agreed = next(iter(lasts.values()))[1]
        at = start
        for reads in per_replica.values():
            first_converged = len(reads)
            while first_converged > 0 and reads[first_converged - 1][1] == agreed:
                first_converged -= 1
            at = max(at, reads[first_converged][0].call)
        converged_within = max(converged_within, (at - start) / 1e6)
        finals = [r for reads in per_replica.values() for r in reads]
        if all(r[3] for r in finals) and min(r[0].call for r in finals) > last_update.get(gk, -1):
            write = finals[-1][2]
            if write is not None:
                final_writes[gk] = write
    if violations:
        cause = f"{len(violations)} key(s) did not converge: e.g. {violations[0].cause}"
        valid: bool | str = False
    else:
        cause = None
        valid = True
    return ConvergenceReport(valid, cause, violations, start, keys=len(by_key), replicas=sorted(replicas),
                             converged_within_ms=round(converged_within, 3), final_writes=final_writes)
