"""Consistent prefix: gaps, reorderings, mixed multi-key reads and reads of the future are
rejected with the operations named; prefixes, however old, are accepted."""

from __future__ import annotations

from level_build import LH
from harness.checker import check_consistent_prefix, phantom_violations


def writes(indexed: bool = True) -> LH:
    def at(i: int) -> int | None:
        return i if indexed else None

    return (LH().op(0, "write", "x", 1, 0, 5, index=at(1))
            .op(0, "write", "y", 1, 6, 10, index=at(2))
            .op(0, "write", "x", 2, 11, 15, index=at(3)))


def test_old_prefixes_are_consistent() -> None:
    h = (writes().op(1, "read", "x", None, 20, 25, index=0, result=None)
         .op(1, "read", "x", None, 26, 30, index=2, result=1)
         .op(1, "scan", None, None, 31, 35, index=2, result={"x": 1, "y": 1})
         .op(1, "scan", None, None, 36, 40, index=3, result=[["x", 2], ["y", 1]]))
    assert check_consistent_prefix(h.history()) == []


def test_a_gap_is_rejected() -> None:
    # At index 3, x is 2; showing 1 skips the update at index 3.
    h = writes().op(1, "read", "x", None, 20, 25, index=3, result=1)
    (v,) = check_consistent_prefix(h.history())
    assert v.level == "consistent_prefix" and v.op == 3 and set(v.ops) == {0, 2, 3}
    assert "gap" in v.cause


def test_the_initial_value_after_an_update_is_a_gap() -> None:
    h = writes().op(1, "read", "y", None, 20, 25, index=2, result=None)
    (v,) = check_consistent_prefix(h.history())
    assert "gap" in v.cause and set(v.ops) == {1, 3}


def test_a_reordering_is_rejected() -> None:
    # The state at index 1 cannot hold the update committed at index 3.
    h = writes().op(1, "read", "x", None, 20, 25, index=1, result=2)
    (v,) = check_consistent_prefix(h.history())
    assert "committed after" in v.cause and set(v.ops) == {0, 2, 3}


def test_a_scan_mixing_two_states_is_rejected() -> None:
    # x=2 comes from index 3, y is absent although y=1 sits at index 2.
    h = writes().op(1, "scan", None, None, 20, 25, index=3, result={"x": 2})
    assert check_consistent_prefix(h.history()) == []  # without its range, absent keys are not judged
    h = writes().op(1, "scan", None, ["a", "z"], 20, 25, index=3, result={"x": 2})
    (v,) = check_consistent_prefix(h.history())
    assert v.op == 3 and "y" in v.cause


def test_a_scan_mixing_states_without_indexes() -> None:
    # y=1 was acknowledged before x=2 was invoked, so a state holding x=2 holds y=1.
    bad = writes(indexed=False).op(1, "scan", None, None, 20, 25, result={"x": 2, "y": None})
    (v,) = check_consistent_prefix(bad.history())
    assert v.op == 3 and set(v.ops) == {3, 2, 1}
    good = writes(indexed=False).op(1, "scan", None, None, 20, 25, result={"x": 1, "y": None})
    assert check_consistent_prefix(good.history()) == []


def test_two_updates_at_one_index() -> None:
    h = LH().op(0, "write", "x", 1, 0, 5, index=1).op(1, "write", "x", 2, 6, 10, index=1)
    (v,) = check_consistent_prefix(h.history())
    assert set(v.ops) == {0, 1} and "one index" in v.cause


def test_an_update_of_unknown_position_needs_room() -> None:
    # x=9 timed out; a read at index 2 may show it (position 2 is free), one at index 1 may not
    # (index 1 holds x=1, the last update of x at or before 1).
    h = (LH().op(0, "write", "x", 1, 0, 5, index=1).op(1, "write", "x", 9, 6, None, type="info")
         .op(2, "read", "x", None, 20, 25, index=2, result=9))
    assert check_consistent_prefix(h.history()) == []
    h = (LH().op(0, "write", "x", 1, 0, 5, index=1).op(1, "write", "x", 9, 6, None, type="info")
         .op(2, "read", "x", None, 20, 25, index=1, result=9))
    (v,) = check_consistent_prefix(h.history())
    assert "no position" in v.cause and set(v.ops) == {0, 1, 2}


def test_a_read_of_an_update_not_yet_invoked() -> None:
    h = LH().op(2, "read", "x", None, 0, 5, result=1).op(0, "write", "x", 1, 10, 15)
    (v,) = check_consistent_prefix(h.history())
    assert "invoked only after" in v.cause and set(v.ops) == {0, 1}


def test_a_phantom_is_below_eventual_not_a_prefix_violation() -> None:
    h = writes().op(1, "read", "x", None, 20, 25, index=3, result=7)
    history = h.history()
    assert check_consistent_prefix(history) == []
    (v,) = phantom_violations(history)
    assert v.level == "eventual" and v.op == 3 and "no update ever wrote" in v.cause


def test_a_refused_write_never_happened() -> None:
    h = LH().op(0, "write", "x", 1, 0, 5, type="fail", error="not_leader").op(1, "read", "x", None, 10, 15, result=1)
    (v,) = phantom_violations(h.history())
    assert v.op == 1
