"""The search itself: incomplete operations, time budget, P-compositionality, and agreement with
a brute-force checker on small random histories."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checker_build import ops_from
from harness.checker import Call, Operation, Output, check, get_model

# --- incomplete operations -----------------------------------------------------------------


def test_info_write_may_take_effect_after_it_was_invoked() -> None:
    rows = [
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (1, "invoke", "write", 2), (1, "info", "write", None),
        (2, "invoke", "read", None), (2, "ok", "read", 1),
        (2, "invoke", "read", None), (2, "ok", "read", 2),
    ]
    assert check("cas-register-etcd", ops_from(rows)).valid is True


def test_info_write_may_never_take_effect() -> None:
    rows = [
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (1, "invoke", "write", 2), (1, "info", "write", None),
        (2, "invoke", "read", None), (2, "ok", "read", 1),
    ]
    assert check("cas-register-etcd", ops_from(rows)).valid is True


def test_info_write_cannot_be_seen_before_it_was_invoked() -> None:
    rows = [
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (2, "invoke", "read", None), (2, "ok", "read", 2),
        (1, "invoke", "write", 2), (1, "info", "write", None),
    ]
    assert check("cas-register-etcd", ops_from(rows)).valid is False


def test_info_write_takes_effect_once_not_twice() -> None:
    rows = [
        (1, "invoke", "write", 2), (1, "info", "write", None),
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (2, "invoke", "read", None), (2, "ok", "read", 2),
        (0, "invoke", "write", 3), (0, "ok", "write", 3),
        (2, "invoke", "read", None), (2, "ok", "read", 2),
    ]
    assert check("cas-register-etcd", ops_from(rows)).valid is False


def test_invocation_without_completion_is_pending() -> None:
    rows = [
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (1, "invoke", "cas", (1, 7)),
        (2, "invoke", "read", None), (2, "ok", "read", 7),
    ]
    ops = ops_from(rows)
    assert ops[1].pending and ops[1].ret == math.inf and ops[1].status == "info"
    assert check("cas-register-etcd", ops).valid is True


def test_info_cas_takes_effect_only_if_it_matches() -> None:
    rows = [
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (1, "invoke", "cas", (5, 7)), (1, "info", "cas", None),
        (2, "invoke", "read", None), (2, "ok", "read", 7),
    ]
    assert check("cas-register-etcd", ops_from(rows)).valid is False
    assert check("cas-register-knossos", ops_from(rows)).valid is False


def test_reads_with_unknown_results_constrain_nothing() -> None:
    rows = [
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (1, "invoke", "read", None), (1, "info", "read", None),
        (2, "invoke", "read", None), (2, "fail", "read", None),
    ]
    result = check("cas-register-etcd", ops_from(rows))
    assert result.valid is True
    assert sum(len(p.operations) for p in result.partitions) == 1


def test_non_integer_processes_are_not_operations() -> None:
    rows = [
        ("nemesis", "info", "start", None),
        (0, "invoke", "write", 1),
        ("nemesis", "info", "start", "partitioned"),
        (0, "ok", "write", 1),
    ]
    assert len(ops_from(rows)) == 1


def test_valid_result_carries_a_full_linearization() -> None:
    rows = [
        (0, "invoke", "write", 1), (1, "invoke", "read", None),
        (1, "ok", "read", None), (0, "ok", "write", 1),
        (1, "invoke", "read", None), (1, "ok", "read", 1),
    ]
    (part,) = check("cas-register-etcd", ops_from(rows)).partitions
    assert sorted(part.linearization) == [0, 1, 2]
    assert part.linearization.index(1) < part.linearization.index(0)


# --- time budget ---------------------------------------------------------------------------


def pathological_rows(key: str | None, writers: int = 24) -> list[tuple[object, ...]]:
    """Many concurrent writes of unknown outcome and a read no order explains: the search must try
    every subset of the writes before it can give up, far more than a small budget allows."""
    rows: list[tuple[object, ...]] = []
    for p in range(writers):
        rows.append((p, "invoke", "write", key, p))
    reader = writers
    rows.append((reader, "invoke", "read", key, None))
    rows.append((reader, "ok", "read", key, -1))
    for p in range(writers):
        rows.append((p, "info", "write", key, None))
    return rows


def test_timeout_gives_unknown_with_a_cause() -> None:
    result = check("register", ops_from(pathological_rows(None)), timeout_s=0.2)
    assert result.valid == "unknown"
    assert result.cause is not None and "timed out" in result.cause
    assert result.elapsed_s < 5


def bad_rows(key: str, writes: int) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for v in range(writes):
        rows += [(100, "invoke", "put", key, str(v)), (100, "ok", "put", key, str(v))]
    rows += [(101, "invoke", "get", key, None), (101, "ok", "get", key, "0")]
    return rows


@pytest.mark.parametrize("bad_writes", [2, 60], ids=["bad-partition-first", "bad-partition-last"])
def test_violation_in_one_partition_beats_unknown_in_another(bad_writes: int) -> None:
    rows = [(p, t, "put" if f == "write" else "get", k, v) for p, t, f, k, v in pathological_rows("slow")]
    result = check("kv", ops_from(rows + bad_rows("bad", bad_writes)), timeout_s=0.3)
    verdicts = {p.label: p.valid for p in result.partitions}
    assert verdicts == {"key=slow": "unknown", "key=bad": False}
    assert result.valid is False
    assert "key=bad" in (result.cause or "")


# --- agreement with brute force --------------------------------------------------------------


def brute_force(model_name: str, ops: list[Operation]) -> bool:
    """Try every order of every subset of the unknown-outcome ops: the definition, slowly."""
    model = get_model(model_name)
    prepared = [p for p in (model.prepare(op) for op in ops) if p is not None]
    required = [op for op in prepared if not op.pending]
    optional = [op for op in prepared if op.pending]
    for r in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, r):
            for order in itertools.permutations(required + list(chosen)):
                if any(a.ret < b.call for i, b in enumerate(order) for a in order[i + 1 :]):
                    continue  # a later op returned before an earlier one was called
                state = model.init()
                for op in order:
                    ok, state = model.step(state, op.input, op.output)
                    if not ok:
                        break
                else:
                    return True
    return False


@st.composite
def register_histories(draw: st.DrawFn) -> list[Operation]:
    count = draw(st.integers(min_value=1, max_value=6))
    values = st.integers(min_value=0, max_value=2)
    ops = []
    for i in range(count):
        call = draw(st.integers(min_value=0, max_value=12))
        status = draw(st.sampled_from(["ok", "ok", "ok", "fail", "info"]))
        ret = math.inf if status == "info" else call + draw(st.integers(min_value=0, max_value=6))
        f = draw(st.sampled_from(["read", "write", "cas"]))
        if f == "read":
            arg, result = None, draw(st.one_of(st.none(), values))
        elif f == "write":
            arg = draw(values)
            result = arg
        else:
            arg = (draw(values), draw(values))
            result = arg
        if status != "ok":
            result = None
        ops.append(Operation(i, i, Call(f, None, arg), Output(status, result), call, ret))  # type: ignore[arg-type]
    return ops


@pytest.mark.parametrize("model_name", ["cas-register-etcd", "cas-register-knossos"])
@settings(max_examples=250, deadline=None)
@given(ops=register_histories())
def test_search_agrees_with_brute_force(model_name: str, ops: list[Operation]) -> None:
    result = check(model_name, ops)
    assert result.valid is brute_force(model_name, ops)
    model = get_model(model_name)
    for part in result.partitions:
        # The linearization reported (full or partial) replays on the model, in real-time order.
        order = [part.operations[i] for i in part.linearization]
        state = model.init()
        for op in order:
            ok, state = model.step(state, op.input, op.output)
            assert ok
        assert not any(a.ret < b.call for k, b in enumerate(order) for a in order[k + 1 :])
        if part.valid is True:
            assert {op.id for op in part.operations if not op.pending} <= {op.id for op in order}
        else:
            assert part.failing_op is not None and part.failing_op not in part.linearization


def test_equal_operations_are_still_all_checked() -> None:
    """The symmetry rule for equal operations must not skip one of them."""
    rows = [
        (0, "invoke", "write", 1), (1, "invoke", "write", 1),
        (0, "ok", "write", 1),
        (2, "invoke", "write", 2), (2, "ok", "write", 2),
        (3, "invoke", "read", None), (3, "ok", "read", 1),
        (1, "ok", "write", 1),
        (3, "invoke", "read", None), (3, "ok", "read", 1),
    ]
    assert check("register", ops_from(rows)).valid is True
    rows[-1] = (3, "ok", "read", 2)
    assert check("register", ops_from(rows)).valid is False
