"""Invariant checkers over an exapyte history: lost writes, set, counter, bank, linearizability.

Theory of operation
-------------------
Each checker reads the paired operations of a run (:func:`harness.history.pair_ops`) and returns
a :class:`Verdict`: ``valid`` is True, False or ``"unknown"``, ``cause`` says why in one line and
``evidence`` holds the operations that prove it (JSON-ready, bounded). A checker never raises on
a strange history: :func:`run_checker` turns an exception into ``unknown`` with the error, as
Jepsen does.

Times: an op ``o`` was invoked at ``o.call_ns`` and completed at ``o.ret_ns``; an ``info`` (or
never-completed) op has no completion: it may take effect at any time after its invocation.

``lost-writes`` (no acknowledged write lost)
    For each key's final read (value ``v``): every acknowledged write that was *invoked after
    every write of v had completed*, and completed before the final read began, must have been
    overwritten by a write of ``v`` — impossible, since none came later. Such a write was lost.
    Also: a final value nobody wrote, or a key that reads absent although an acknowledged write
    and no delete touched it. Sound for any values; exact when written values are unique.
``set``
    The last successful final read must contain every acknowledged ``add``, and nothing that was
    never attempted; ``info`` adds may be present or not (reported as recovered / not).
``counter``
    Each successful read lies between the sum of the increments acknowledged before the read was
    invoked and the sum of the increments invoked (not failed) before it completed.
``bank``
    Every successful read of the accounts totals the initial total, with no negative balance;
    after the accounts were created, they never read as absent.
``crashes``
    No node process may die by itself: a node log holding a Python traceback (an uncaught
    exception, e.g. the consensus core's ``InvariantViolation`` when a leader hears another
    leader of its own term) or a failed restart is invalid, with the exception and the log lines
    before it as evidence. Processes the nemesis kills die by SIGKILL and log nothing.
``election-safety``
    From the node statuses sampled through the run (:mod:`harness.monitor`): no two nodes may
    ever be seen leading the same term (Raft's election safety). Evidence: the term, the nodes
    and when each was seen leading it.
``linearizable``
    The linearizability checker (:mod:`harness.checker.linearizability`) per key on the
    client operations, with a model per workload. A ``fail`` cas with ``error: cas-mismatch`` is a
    compare that was linearized and did not match; any other ``fail`` did not happen.
"""

from __future__ import annotations

import math
import re
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.checker.history import RETURN_NEVER, Call, Operation, Output
from harness.checker.linearizability import CheckResult, check_operations
from harness.checker.models import CasRegister, Kv, Model
from harness.checker.visualize import write_html
from harness.history import Op

__all__ = [
    "Verdict",
    "check_bank",
    "check_counter",
    "check_crashes",
    "check_election_safety",
    "check_linearizable",
    "check_lost_writes",
    "check_set",
    "compose",
    "run_checker",
]

EVIDENCE_MAX = 10
WRITE_FS = ("write", "cas", "delete")


@dataclass
class Verdict:
    checker: str
    valid: bool | str  # True | False | "unknown"
    cause: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"checker": self.checker, "valid": self.valid, "cause": self.cause, "evidence": self.evidence}


def compose(verdicts: Sequence[Verdict]) -> bool | str:
    """False if any checker says False; else "unknown" if any is unknown; else True."""
    if any(v.valid is False for v in verdicts):
        return False
    if any(v.valid != True for v in verdicts):  # noqa: E712 - "unknown" is truthy
        return "unknown"
    return True


def run_checker(name: str, fn: Callable[[], Verdict]) -> Verdict:
    """Run one checker; a crash is ``unknown`` with the error, never a lost verdict."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return Verdict(name, "unknown", f"checker crashed: {type(exc).__name__}: {exc}",
                       {"traceback": traceback.format_exc(limit=5)})


def show(op: Op) -> dict[str, Any]:
    """An op as evidence: what, when (ms), who, outcome."""
    out: dict[str, Any] = {
        "process": op.process, "f": op.f, "key": op.key, "type": op.type,
        "value": op.value if op.type == "ok" else op.invoke.value,
        "invoke_ms": round(op.call_ns / 1e6, 3),
        "complete_ms": None if op.end_ns is None else round(op.end_ns / 1e6, 3),
    }
    if op.node:
        out["node"] = op.node
    if op.error:
        out["error"] = op.error
    return out


def _final_reads(ops: Sequence[Op], final_start_ns: int, fs: tuple[str, ...]) -> dict[Any, Op]:
    """The last successful read of each key invoked at or after ``final_start_ns``."""
    out: dict[Any, Op] = {}
    for op in ops:
        if op.f in fs and op.type == "ok" and op.call_ns >= final_start_ns:
            out[op.key] = op
    return out


# --- lost writes -------------------------------------------------------------------------------


def _written(op: Op) -> Any:
    if op.f == "write":
        return op.invoke.value
    if op.f == "cas":
        return op.invoke.value[1]
    return None  # delete


def check_lost_writes(ops: Sequence[Op], final_start_ns: int) -> Verdict:
    name = "lost-writes"
    finals = _final_reads(ops, final_start_ns, ("read",))
    if not finals:
        return Verdict(name, "unknown", "no final read succeeded, so no write can be confirmed")
    writes: dict[Any, list[Op]] = {}
    for op in ops:
        if op.f in WRITE_FS and op.type in ("ok", "info") and op.call_ns < final_start_ns:
            writes.setdefault(op.key, []).append(op)
    lost: list[dict[str, Any]] = []
    phantoms: list[dict[str, Any]] = []
    acked_total = 0
    for key, final in sorted(finals.items(), key=lambda kv: str(kv[0])):
        v = final.value
        key_writes = writes.get(key, [])
        acked = [w for w in key_writes if w.type == "ok"]
        acked_total += len(acked)
        writers = [w for w in key_writes if _written(w) == v]
        if v is not None and not writers:
            phantoms.append({"key": key, "final_read": show(final), "why": "the final value was never written"})
            continue
        if writers:
            latest_end = max(math.inf if w.ret_ns is None else w.ret_ns for w in writers)
        else:
            latest_end = -1  # absent and never deleted: only the initial state, before any op
        for w in acked:
            assert w.ret_ns is not None
            if _written(w) != v and w.call_ns > latest_end and w.ret_ns < final.call_ns:
                lost.append({"key": key, "lost_write": show(w), "final_read": show(final),
                             "writers_of_final_value": [show(x) for x in writers[-3:]]})
    evidence: dict[str, Any] = {"keys": len(finals), "acknowledged_writes": acked_total,
                                "lost": lost[:EVIDENCE_MAX], "lost_count": len(lost),
                                "phantoms": phantoms[:EVIDENCE_MAX]}
    if lost:
        first = lost[0]
        return Verdict(name, False, (
            f"{len(lost)} acknowledged write(s) lost: e.g. key {first['key']}: "
            f"{first['lost_write']['f']} {first['lost_write']['value']!r} was acknowledged at "
            f"{first['lost_write']['complete_ms']} ms, yet the final read saw "
            f"{first['final_read']['value']!r}, written earlier"), evidence)
    if phantoms:
        return Verdict(name, False, f"key {phantoms[0]['key']}: {phantoms[0]['why']}", evidence)
    return Verdict(name, True, None, evidence)


# --- set ---------------------------------------------------------------------------------------


def check_set(ops: Sequence[Op], final_start_ns: int) -> Verdict:
    name = "set"
    reads = [op for op in ops if op.f == "read-set" and op.type == "ok" and op.call_ns >= final_start_ns]
    if not reads:
        return Verdict(name, "unknown", "no final read of the set succeeded")
    final = reads[-1]
    seen = set(final.value or [])
    adds = [op for op in ops if op.f == "add" and op.key is None]
    acked = {op.invoke.value for op in adds if op.type == "ok"}
    attempted = {op.invoke.value for op in adds if op.type != "fail"}
    unsure = {op.invoke.value for op in adds if op.type == "info"}
    lost = sorted(acked - seen)
    unexpected = sorted(seen - attempted)
    evidence = {
        "acknowledged": len(acked), "read": len(seen), "lost": lost[:50], "lost_count": len(lost),
        "unexpected": unexpected[:50], "unexpected_count": len(unexpected),
        "recovered": len(unsure & seen), "unknown_not_present": len(unsure - seen),
        "final_read": show(final) | {"value": f"{len(seen)} elements"},
    }
    if lost:
        return Verdict(name, False, f"{len(lost)} acknowledged add(s) missing from the final read, e.g. {lost[:5]}", evidence)
    if unexpected:
        return Verdict(name, False, f"{len(unexpected)} element(s) read that were never added, e.g. {unexpected[:5]}", evidence)
    return Verdict(name, True, None, evidence)


# --- counter -----------------------------------------------------------------------------------


def check_counter(ops: Sequence[Op], final_start_ns: int = 0) -> Verdict:
    name = "counter"
    adds = [op for op in ops if op.f == "add" and op.key is not None and op.type != "fail"]
    reads = [op for op in ops if op.f == "read-counter" and op.type == "ok"]
    if not reads:
        return Verdict(name, "unknown", "no read of the counter succeeded")
    errors = []
    for read in reads:
        assert read.ret_ns is not None
        lower = sum(int(a.invoke.value) for a in adds if a.type == "ok" and a.ret_ns is not None and a.ret_ns < read.call_ns)
        upper = sum(int(a.invoke.value) for a in adds if a.call_ns < read.ret_ns)
        value = read.value
        if not isinstance(value, int) or not lower <= value <= upper:
            errors.append({"read": show(read), "lower": lower, "upper": upper})
    evidence = {"reads": len(reads), "adds": len(adds), "errors": errors[:EVIDENCE_MAX], "error_count": len(errors),
                "final_value": reads[-1].value}
    if errors:
        e = errors[0]
        return Verdict(name, False, (f"{len(errors)} read(s) out of bounds: e.g. read {e['read']['value']!r} at "
                                     f"{e['read']['invoke_ms']} ms, allowed [{e['lower']}, {e['upper']}]"), evidence)
    return Verdict(name, True, None, evidence)


# --- bank --------------------------------------------------------------------------------------


def check_bank(ops: Sequence[Op], final_start_ns: int = 0) -> Verdict:
    name = "bank"
    inits = [op for op in ops if op.f == "init" and op.type == "ok"]
    if not inits:
        return Verdict(name, "unknown", "the accounts were never created")
    total = sum(int(v) for v in (inits[0].value or {}).values())
    created_ns = min(op.ret_ns for op in inits if op.ret_ns is not None)
    reads = [op for op in ops if op.f == "read-bank" and op.type == "ok"]
    errors = []
    for read in reads:
        accounts = read.value
        if accounts is None:
            if read.call_ns > created_ns:
                errors.append({"read": show(read), "why": "accounts absent after they were created"})
            continue
        got = sum(int(v) for v in accounts.values())
        negative = sorted(a for a, v in accounts.items() if int(v) < 0)
        if got != total:
            errors.append({"read": show(read), "why": f"total {got}, expected {total}"})
        elif negative:
            errors.append({"read": show(read), "why": f"negative balance in {negative}"})
    finals = [r for r in reads if r.call_ns >= final_start_ns]
    evidence = {"total": total, "reads": len(reads), "transfers_ok": sum(1 for o in ops if o.f == "transfer" and o.type == "ok"),
                "errors": errors[:EVIDENCE_MAX], "error_count": len(errors)}
    if errors:
        return Verdict(name, False, f"{len(errors)} bad read(s): e.g. {errors[0]['why']} (read at {errors[0]['read']['invoke_ms']} ms)", evidence)
    if not finals:
        return Verdict(name, "unknown", "no final read of the accounts succeeded", evidence)
    return Verdict(name, True, None, evidence)


# --- crashes -----------------------------------------------------------------------------------

_TRACEBACK = "Traceback (most recent call last):"
_LOG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) ")
_FAILED_START = re.compile(r" ERROR exapyte\.runtime\.node: node \S+ failed to start: ")
CRASH_CONTEXT_LINES = 3


def _log_time(line: str) -> float | None:
    m = _LOG_TIME.match(line)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def check_crashes(logs: dict[str, str], origin_unix: float | None = None) -> Verdict:
    """``logs``: each node's log text. ``origin_unix``: the wall time of the history's time 0,
    to place each crash on the run's time line (``at_ms``)."""
    name = "crashes"
    crashes: list[dict[str, Any]] = []
    for node, text in sorted(logs.items()):
        lines = text.splitlines()
        last_time: float | None = None
        i = 0
        while i < len(lines):
            line = lines[i]
            stamp = _log_time(line)
            if stamp is not None:
                last_time = stamp
            if line.startswith(_TRACEBACK) or _FAILED_START.search(line):
                j = i + 1
                if line.startswith(_TRACEBACK):
                    while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                        j += 1
                    exception = lines[j] if j < len(lines) else "(traceback cut off)"
                    frames = [x.strip() for x in lines[i + 1:j] if x.strip().startswith("File ")]
                else:
                    exception = line.split(": ", 2)[-1] if ": " in line else line
                    frames = []
                crash: dict[str, Any] = {
                    "node": node, "exception": exception[:500], "line": i + 1,
                    "where": frames[-1][:300] if frames else None,
                    "log_before": [x[:300] for x in lines[max(0, i - CRASH_CONTEXT_LINES):i]],
                }
                if last_time is not None and origin_unix is not None:
                    crash["at_ms"] = round((last_time - origin_unix) * 1000, 1)
                crashes.append(crash)
                i = j + 1
                continue
            i += 1
    evidence: dict[str, Any] = {"nodes": sorted(logs), "crashes": crashes[:EVIDENCE_MAX], "crash_count": len(crashes)}
    if not logs:
        return Verdict(name, "unknown", "no node log was found", evidence)
    if crashes:
        first = crashes[0]
        nodes = sorted({c["node"] for c in crashes})
        return Verdict(name, False, (f"{len(crashes)} crash(es) on {', '.join(nodes)}: e.g. {first['node']}: "
                                     f"{first['exception']}"), evidence)
    return Verdict(name, True, None, evidence)


# --- election safety ---------------------------------------------------------------------------


def check_election_safety(samples: Sequence[dict[str, Any]]) -> Verdict:
    """``samples``: ``{"time", "node", "role", "term", ..., "groups"}`` from the status monitor.
    At most one leader per term of each replica group (``groups``; a sample without it is the
    group ``default``)."""
    from harness.monitor import sample_groups

    name = "election-safety"
    leaders: dict[tuple[str, int], dict[str, list[int]]] = {}  # (group, term) -> node -> times seen leading
    for s in samples:
        for group, st in sample_groups(s).items():
            if st.get("role") == "leader" and isinstance(st.get("term"), int):
                leaders.setdefault((str(group), st["term"]), {}).setdefault(str(s["node"]), []).append(int(s["time"]))
    bad = []
    for (group, term), nodes in sorted(leaders.items()):
        if len(nodes) > 1:
            bad.append({"group": group, "term": term, "leaders": {
                n: {"first_ms": round(min(t) / 1e6, 1), "last_ms": round(max(t) / 1e6, 1), "samples": len(t)}
                for n, t in sorted(nodes.items())}})
    groups = sorted({g for g, _ in leaders})
    evidence: dict[str, Any] = {"samples": len(samples), "terms_with_a_leader": len(leaders), "groups": len(groups),
                                "violations": bad[:EVIDENCE_MAX], "violation_count": len(bad)}
    if not samples:
        return Verdict(name, "unknown", "no node status was sampled", evidence)
    if bad:
        first = bad[0]
        seen = ", ".join(f"{n} (from {v['first_ms']} ms)" for n, v in first["leaders"].items())
        where = "" if groups == ["default"] else f" of group {first['group']}"
        return Verdict(name, False, (f"{len(bad)} term(s) with two leaders: e.g. term {first['term']}{where} was led by "
                                     f"{seen}"), evidence)
    return Verdict(name, True, None, evidence)


# --- linearizability ---------------------------------------------------------------------------


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def to_operations(ops: Sequence[Op], fs: tuple[str, ...] = ("read", "write", "cas", "delete")) -> list[Operation]:
    """Checker operations from harness ops: refusals dropped, cas mismatches kept as ``fail``."""
    out: list[Operation] = []
    for op in ops:
        if op.f not in fs:
            continue
        if op.type == "fail" and not (op.f == "cas" and op.error == "cas-mismatch"):
            continue  # a refusal: it did not happen
        value_in = None if op.f == "read" else _freeze(op.invoke.value)
        if op.type == "ok":
            output = Output("ok", _freeze(op.value) if op.f == "read" else None)
            ret: float = float(op.ret_ns or 0)
        elif op.type == "fail":
            output, ret = Output("fail", None), float(op.end_ns or 0)
        else:
            output, ret = Output("info", None), RETURN_NEVER
        out.append(Operation(len(out), op.process, Call(op.f, op.key, value_in), output, float(op.call_ns), ret))
    return out


def model_for(name: str) -> Model:
    if name in ("cas-register", "cas-register-etcd"):
        return CasRegister()
    if name == "kv":
        return Kv(fail_cas_is_mismatch=True)
    raise ValueError(f"no linearizability model {name!r} for harness histories; allowed: cas-register, kv")


def check_linearizable(
    ops: Sequence[Op], model: str, *, timeout_s: float | None = 60.0, html_path: str | Path | None = None,
) -> tuple[Verdict, CheckResult]:
    result = check_operations(model_for(model), to_operations(ops), timeout_s)
    evidence = result.to_dict()
    if result.valid is False and html_path is not None:
        written = write_html(result, html_path, title="exapyte: linearizability counterexample")
        if written is not None:
            evidence["html"] = Path(written).name
    return Verdict("linearizable", result.valid, result.cause, evidence), result
