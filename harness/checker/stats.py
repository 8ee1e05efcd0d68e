"""Latency and availability statistics of a run, and the liveness check after the heal.

``check_stats`` never judges safety: it reports, per operation type, how many ops ended ``ok``,
``fail`` and ``info`` and the latency percentiles of the ``ok`` ones, and the availability (the
fraction of ops the cluster *answered*) with and without an active fault. A definite compare
mismatch (a ``fail`` with ``error: cas-mismatch``: a ``cas``, or a read-then-cas op whose every
compare missed) is an answer: the cluster
was available and said no, so it counts as available, like an ``ok``; refusals and unknown
outcomes do not. It is **invalid** only when
the cluster did not come back: after the heal and the quiet period, none of the final reads
succeeded (a liveness failure: the run would otherwise look "valid" by doing nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.checker.invariants import Verdict
from harness.history import Op

__all__ = ["answered", "check_stats", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank; None for no values."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[rank]


def _in_fault(t: int, intervals: Sequence[dict[str, Any]]) -> bool:
    return any(i["start_ns"] <= t <= i["end_ns"] for i in intervals)


def answered(op: Op) -> bool:
    """Did the cluster answer this op (``ok``, or a definite compare mismatch: a ``cas``, or a
    read-then-cas op such as a counter increment whose every compare missed)?"""
    return op.type == "ok" or (op.type == "fail" and op.error == "cas-mismatch")


def check_stats(
    ops: Sequence[Op], final_start_ns: int, fault_intervals: Sequence[dict[str, Any]] = (),
) -> Verdict:
    by_f: dict[str, dict[str, Any]] = {}
    healthy = {"ok": 0, "total": 0}
    faulty = {"ok": 0, "total": 0}
    main = [op for op in ops if op.call_ns < final_start_ns]
    for op in main:
        entry = by_f.setdefault(op.f, {"ok": 0, "fail": 0, "info": 0, "latencies_ms": []})
        entry[op.type] += 1
        if op.type == "ok" and op.ret_ns is not None:
            entry["latencies_ms"].append((op.ret_ns - op.call_ns) / 1e6)
        bucket = faulty if _in_fault(op.call_ns, fault_intervals) else healthy
        bucket["total"] += 1
        bucket["ok"] += answered(op)
    table = {}
    for f, entry in sorted(by_f.items()):
        lat = sorted(entry.pop("latencies_ms"))
        table[f] = entry | {
            "p50_ms": _r(percentile(lat, 0.5)), "p95_ms": _r(percentile(lat, 0.95)),
            "p99_ms": _r(percentile(lat, 0.99)), "max_ms": _r(lat[-1] if lat else None),
        }
    span_s = max(1e-9, (max((op.end_ns or op.call_ns) for op in main) - min(op.call_ns for op in main)) / 1e9) if main else 0
    finals = [op for op in ops if op.call_ns >= final_start_ns]
    final_ok = sum(op.type == "ok" for op in finals)
    evidence = {
        "ops": len(main),
        "ok": sum(op.type == "ok" for op in main),
        "fail": sum(op.type == "fail" for op in main),
        "info": sum(op.type == "info" for op in main),
        "throughput_ok_per_s": round(sum(op.type == "ok" for op in main) / span_s, 2) if main else 0,
        "cas_mismatches": sum(op.type == "fail" and answered(op) for op in main),
        "availability": _ratio(sum(answered(op) for op in main), len(main)),
        "availability_healthy": _ratio(healthy["ok"], healthy["total"]),
        "availability_during_faults": _ratio(faulty["ok"], faulty["total"]),
        "by_f": table,
        "final_reads": {"attempted": len(finals), "ok": final_ok},
    }
    if finals and final_ok == 0:
        return Verdict("availability", False,
                       f"the cluster did not recover: none of {len(finals)} final read(s) succeeded after the heal",
                       evidence)
    if not finals:
        return Verdict("availability", "unknown", "no final reads were made", evidence)
    return Verdict("availability", True, None, evidence)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else round(a / b, 4)
