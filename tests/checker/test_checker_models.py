"""Small hand-written good and bad histories for every model."""

from __future__ import annotations

import pytest

from checker_build import ops_from
from harness.checker import check, get_model, model_names

# Each case: (model, rows, expected). Rows are (process, type, f, [key,] value), times are positions.
CASES = {
    # --- register
    "register: read sees the completed write": (
        "register",
        [(0, "invoke", "write", 1), (0, "ok", "write", 1), (1, "invoke", "read", None), (1, "ok", "read", 1)],
        True,
    ),
    "register: nil read before any write": (
        "register",
        [(1, "invoke", "read", None), (1, "ok", "read", None)],
        True,
    ),
    "register: stale read after a newer write completed": (
        "register",
        [
            (0, "invoke", "write", 1), (0, "ok", "write", 1),
            (0, "invoke", "write", 2), (0, "ok", "write", 2),
            (1, "invoke", "read", None), (1, "ok", "read", 1),
        ],
        False,
    ),
    "register: concurrent write may be seen before it returns": (
        "register",
        [
            (0, "invoke", "write", 1),
            (1, "invoke", "read", None), (1, "ok", "read", 1),
            (0, "ok", "write", 1),
        ],
        True,
    ),
    # --- cas-register, etcd semantics
    "etcd: absent, write, cas, failed cas on another value": (
        "cas-register-etcd",
        [
            (0, "invoke", "read", None), (0, "ok", "read", None),
            (0, "invoke", "write", 1), (0, "ok", "write", 1),
            (1, "invoke", "cas", (1, 2)), (1, "ok", "cas", (1, 2)),
            (2, "invoke", "cas", (1, 3)), (2, "fail", "cas", (1, 3)),
            (0, "invoke", "read", None), (0, "ok", "read", 2),
        ],
        True,
    ),
    "etcd: a failed cas whose expected value was certainly there": (
        "cas-register-etcd",
        [
            (0, "invoke", "write", 1), (0, "ok", "write", 1),
            (1, "invoke", "cas", (1, 2)), (1, "fail", "cas", (1, 2)),
        ],
        False,
    ),
    "etcd: a failed cas concurrent with a write of another value": (
        "cas-register-etcd",
        [
            (0, "invoke", "write", 1), (0, "ok", "write", 1),
            (2, "invoke", "write", 5),
            (1, "invoke", "cas", (1, 2)), (1, "fail", "cas", (1, 2)),
            (2, "ok", "write", 5),
        ],
        True,
    ),
    "etcd: cas on an absent register cannot succeed": (
        "cas-register-etcd",
        [(1, "invoke", "cas", (None, 2)), (1, "ok", "cas", (None, 2))],
        False,
    ),
    "etcd: nil read after a completed write": (
        "cas-register-etcd",
        [(0, "invoke", "write", 3), (0, "ok", "write", 3), (1, "invoke", "read", None), (1, "ok", "read", None)],
        False,
    ),
    # --- cas-register, Knossos semantics
    "knossos: starts at 0 and cas from 0 succeeds": (
        "cas-register-knossos",
        [
            (0, "invoke", "read", None), (0, "ok", "read", 0),
            (1, "invoke", "cas", (0, 4)), (1, "ok", "cas", (0, 4)),
            (0, "invoke", "read", None), (0, "ok", "read", 4),
        ],
        True,
    ),
    "knossos: a nil read matches any value": (
        "cas-register-knossos",
        [(0, "invoke", "write", 3), (0, "ok", "write", 3), (1, "invoke", "read", None), (1, "ok", "read", None)],
        True,
    ),
    "knossos: failed operations are dropped": (
        "cas-register-knossos",
        [
            (0, "invoke", "write", 3), (0, "ok", "write", 3),
            (1, "invoke", "cas", (3, 4)), (1, "fail", "cas", (3, 4)),
            (2, "invoke", "write", 9), (2, "fail", "write", 9),
            (0, "invoke", "read", None), (0, "ok", "read", 3),
        ],
        True,
    ),
    "knossos: cas from a value that is not there": (
        "cas-register-knossos",
        [(0, "invoke", "write", 1), (0, "ok", "write", 1), (1, "invoke", "cas", (0, 2)), (1, "ok", "cas", (0, 2))],
        False,
    ),
    # --- kv
    "kv: put, append, get, delete, empty keys": (
        "kv",
        [
            (0, "invoke", "put", "a", "x"), (0, "ok", "put", "a", "x"),
            (1, "invoke", "append", "a", "y"), (1, "ok", "append", "a", "y"),
            (0, "invoke", "get", "a", None), (0, "ok", "get", "a", "xy"),
            (0, "invoke", "get", "b", None), (0, "ok", "get", "b", ""),
            (1, "invoke", "delete", "a", None), (1, "ok", "delete", "a", None),
            (0, "invoke", "get", "a", None), (0, "ok", "get", "a", None),
            (0, "invoke", "cas", "b", ("", "z")), (0, "ok", "cas", "b", ("", "z")),
            (1, "invoke", "read", "b", None), (1, "ok", "read", "b", "z"),
        ],
        True,
    ),
    "kv: get misses a completed append": (
        "kv",
        [
            (0, "invoke", "put", "a", "x"), (0, "ok", "put", "a", "x"),
            (1, "invoke", "append", "a", "y"), (1, "ok", "append", "a", "y"),
            (0, "invoke", "get", "a", None), (0, "ok", "get", "a", "x"),
        ],
        False,
    ),
    "kv: a good key does not hide a bad one": (
        "kv",
        [
            (0, "invoke", "put", "a", "1"), (0, "ok", "put", "a", "1"),
            (1, "invoke", "put", "b", "1"), (1, "ok", "put", "b", "1"),
            (0, "invoke", "get", "a", None), (0, "ok", "get", "a", "1"),
            (1, "invoke", "get", "b", None), (1, "ok", "get", "b", "2"),
        ],
        False,
    ),
    # --- multi-register
    "multi-register: a transaction's writes are seen together": (
        "multi-register",
        [
            (0, "invoke", "txn", (("write", "x", 1), ("write", "y", 2))),
            (0, "ok", "txn", (("write", "x", 1), ("write", "y", 2))),
            (1, "invoke", "txn", (("read", "x", None), ("read", "y", None))),
            (1, "ok", "txn", (("read", "x", 1), ("read", "y", 2))),
            (2, "invoke", "read", "z", None), (2, "ok", "read", "z", None),
        ],
        True,
    ),
    "multi-register: half a transaction is seen": (
        "multi-register",
        [
            (0, "invoke", "txn", (("write", "x", 1), ("write", "y", 2))),
            (0, "ok", "txn", (("write", "x", 1), ("write", "y", 2))),
            (1, "invoke", "txn", (("read", "x", None), ("read", "y", None))),
            (1, "ok", "txn", (("read", "x", 1), ("read", "y", None))),
        ],
        False,
    ),
    # --- mutex
    "mutex: acquire, release, acquire": (
        "mutex",
        [
            (0, "invoke", "acquire", None), (0, "ok", "acquire", None),
            (0, "invoke", "release", None), (0, "ok", "release", None),
            (1, "invoke", "acquire", None), (1, "ok", "acquire", None),
        ],
        True,
    ),
    "mutex: two holders at once": (
        "mutex",
        [
            (0, "invoke", "acquire", None), (0, "ok", "acquire", None),
            (1, "invoke", "acquire", None), (1, "ok", "acquire", None),
        ],
        False,
    ),
    "mutex: release of a free lock": (
        "mutex",
        [(0, "invoke", "release", None), (0, "ok", "release", None)],
        False,
    ),
    # --- set
    "set: reads during and after concurrent adds": (
        "set",
        [
            (0, "invoke", "add", 1), (1, "invoke", "add", 2),
            (2, "invoke", "read", None), (2, "ok", "read", (1,)),
            (0, "ok", "add", 1), (1, "ok", "add", 2),
            (2, "invoke", "read", None), (2, "ok", "read", (2, 1)),
        ],
        True,
    ),
    "set: an acknowledged add is lost": (
        "set",
        [
            (0, "invoke", "add", 1), (0, "ok", "add", 1),
            (1, "invoke", "add", 2), (1, "ok", "add", 2),
            (2, "invoke", "read", None), (2, "ok", "read", (1,)),
        ],
        False,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_model_history(name: str) -> None:
    model, rows, expected = CASES[name]
    result = check(model, ops_from(rows))
    assert result.valid is expected, result.cause
    if expected is False:
        assert result.failing_partitions[0].failing_op is not None


def test_every_model_has_a_good_and_a_bad_case() -> None:
    covered = {(get_model(m).name, e) for m, _, e in CASES.values()}
    for name in model_names():
        canonical = get_model(name).name
        assert (canonical, True) in covered and (canonical, False) in covered, name


def test_kv_partitions_by_key_and_names_the_failing_key() -> None:
    result = check("kv", ops_from(CASES["kv: a good key does not hide a bad one"][1]))
    assert len(result.partitions) == 2
    assert [p.label for p in result.failing_partitions] == ["key=b"]
    assert "key=b" in (result.cause or "")


def test_multi_register_partitions_keys_no_transaction_spans() -> None:
    model = get_model("multi-register")
    ops = ops_from(CASES["multi-register: a transaction's writes are seen together"][1])
    groups = model.partition(ops)
    assert sorted(len(g) for g in groups) == [1, 2]


def test_models_describe_ops_and_states() -> None:
    ops = ops_from([(0, "invoke", "cas", (1, 2)), (0, "fail", "cas", (1, 2)), (1, "invoke", "read", None)])
    etcd = get_model("cas-register-etcd")
    assert etcd.describe_op(ops[0].input, ops[0].output) == "cas(1 -> 2) :fail (no match)"
    assert etcd.describe_op(ops[1].input, ops[1].output) == "read() -> ? :info"
    assert etcd.describe_state(None) == "nil"
    assert get_model("set").describe_state(frozenset({2, 1})) == "#{1 2}"
    assert get_model("mutex").describe_state(True) == "held"


def test_unknown_model_name_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="cas-register-knossos"):
        get_model("no-such-model")


@pytest.mark.parametrize("name", model_names())
def test_step_accepts_unknown_outputs_in_any_state(name: str) -> None:
    """An info op must be linearizable anywhere: the search relies on it (see models.py)."""
    model = get_model(name)
    samples = {
        "register": [("write", None, 1)],
        "cas-register": [("write", None, 1), ("cas", None, (1, 2))],
        "cas-register-etcd": [("write", None, 1), ("cas", None, (1, 2))],
        "cas-register-knossos": [("write", None, 1), ("cas", None, (1, 2))],
        "kv": [("put", "k", "v"), ("append", "k", "w"), ("delete", "k", None), ("cas", "k", ("v", "x"))],
        "multi-register": [("txn", None, (("write", "x", 1), ("read", "y", None)))],
        "mutex": [("acquire", None, None), ("release", None, None)],
        "set": [("add", None, 3)],
    }[name]
    for f, key, value in samples:
        rows = [(0, "invoke", f, key, value), (0, "info", f, key, None)]
        (op,) = ops_from(rows)
        state = model.init()
        for other_f, other_key, other_value in samples:
            (other,) = ops_from([(1, "invoke", other_f, other_key, other_value), (1, "ok", other_f, other_key, other_value)])
            ok, next_state = model.step(state, other.input, other.output)
            if ok:
                state = next_state
            assert model.step(state, op.input, op.output)[0], (f, state)
