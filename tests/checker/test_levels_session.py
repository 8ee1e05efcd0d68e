"""Session guarantees (Terry et al. 1994): each is rejected on a known-bad history, with the
operations named, and accepted on its good twin; with indexes and by values."""

from __future__ import annotations

from level_build import LH

from harness.checker import check_session


def checks(h: LH, **kw: object) -> list[str]:
    return [v.check for v in check_session(h.history(), **kw)]  # type: ignore[arg-type]


# --- read-your-writes ---------------------------------------------------------------------------


def test_read_your_writes_by_index() -> None:
    bad = LH().op(0, "write", "x", 1, 0, 10, session="s", index=5).op(
        0, "read", "x", None, 20, 30, session="s", index=4, result=None)
    (v,) = check_session(bad.history())
    assert v.check == "read-your-writes" and v.op == 1 and set(v.ops) == {0, 1}
    assert "op #0" in v.cause and "index 4" in v.cause
    good = LH().op(0, "write", "x", 1, 0, 10, session="s", index=5).op(
        0, "read", "x", None, 20, 30, session="s", index=5, result=1)
    assert checks(good) == []
    # Another session may read the old state: no guarantee is owed across sessions.
    other = LH().op(0, "write", "x", 1, 0, 10, session="s", index=5).op(
        1, "read", "x", None, 20, 30, session="t", index=4, result=None)
    assert checks(other) == []


def test_read_your_writes_is_about_the_keys_read() -> None:
    # The session wrote y at index 9; a read of x from index 5 holds every update of x.
    h = (LH().op(0, "write", "x", 1, 0, 10, session="s", index=5)
         .op(0, "write", "y", 2, 11, 15, session="s", index=9)
         .op(0, "read", "x", None, 20, 30, session="s", index=5, result=1))
    assert checks(h) == []
    # A scan covers the whole group: the session's write of y must be in its state.
    scan = (LH().op(0, "write", "x", 1, 0, 10, session="s", index=5)
            .op(0, "write", "y", 2, 11, 15, session="s", index=9)
            .op(0, "scan", None, None, 20, 30, session="s", index=5, result={"x": 1}))
    assert checks(scan) == ["read-your-writes"]


def test_read_your_writes_by_value() -> None:
    # No indexes: x=1 was acknowledged before the session's x=2 began, so reading 1 after
    # writing 2 shows an older update than the session's own.
    bad = (LH().op(1, "write", "x", 1, 0, 5, session="t")
           .op(0, "write", "x", 2, 10, 20, session="s")
           .op(0, "read", "x", None, 30, 40, session="s", result=1))
    (v,) = check_session(bad.history())
    assert v.check == "read-your-writes" and set(v.ops) == {0, 1, 2}
    good = (LH().op(1, "write", "x", 1, 0, 5, session="t")
            .op(0, "write", "x", 2, 10, 20, session="s")
            .op(0, "read", "x", None, 30, 40, session="s", result=2))
    assert checks(good) == []
    # Concurrent with the session's write: x=1 may follow it, so no violation is claimed.
    racing = (LH().op(1, "write", "x", 1, 8, 25, session="t")
              .op(0, "write", "x", 2, 10, 20, session="s")
              .op(0, "read", "x", None, 30, 40, session="s", result=1))
    assert checks(racing) == []
    initial = LH().op(0, "write", "x", 2, 10, 20, session="s").op(0, "read", "x", None, 30, 40, session="s")
    assert checks(initial) == ["read-your-writes"]


def test_an_unknown_write_owes_nothing() -> None:
    h = LH().op(0, "write", "x", 1, 0, 10, session="s", type="info").op(
        1, "read", "x", None, 20, 30, session="s", index=0, result=None)
    assert checks(h) == []


# --- monotonic reads ----------------------------------------------------------------------------


def test_monotonic_reads_by_index() -> None:
    base = LH().op(9, "write", "x", 1, 0, 5, session="w", index=3)
    bad = (LH().op(9, "write", "x", 1, 0, 5, session="w", index=3)
           .op(0, "read", "x", None, 10, 20, session="s", index=3, result=1, replica="n1")
           .op(0, "read", "x", None, 30, 40, session="s", index=2, result=None, replica="n2"))
    (v,) = check_session(bad.history())
    assert v.check == "monotonic-reads" and v.op == 2 and set(v.ops) == {0, 1, 2}
    good = (base.op(0, "read", "x", None, 10, 20, session="s", index=3, result=1)
            .op(0, "read", "x", None, 30, 40, session="s", index=3, result=1))
    assert checks(good) == []


def test_monotonic_reads_counts_only_the_writes_the_earlier_read_saw() -> None:
    # The first read was served from index 8, but the last update of x there is at index 3;
    # a later read from index 3 still holds it (Terry: the relevant writes).
    h = (LH().op(9, "write", "x", 1, 0, 5, session="w", index=3)
         .op(9, "write", "y", 1, 6, 7, session="w", index=8)
         .op(0, "read", "x", None, 10, 20, session="s", index=8, result=1)
         .op(0, "read", "x", None, 30, 40, session="s", index=3, result=1))
    assert checks(h) == []


def test_monotonic_reads_by_value() -> None:
    bad = (LH().op(9, "write", "x", 1, 0, 5, session="w").op(9, "write", "x", 2, 6, 9, session="w")
           .op(0, "read", "x", None, 10, 20, session="s", result=2)
           .op(0, "read", "x", None, 30, 40, session="s", result=1))
    (v,) = check_session(bad.history())
    assert v.check == "monotonic-reads" and v.op == 3 and set(v.ops) == {0, 1, 3}
    good = (LH().op(9, "write", "x", 1, 0, 5, session="w").op(9, "write", "x", 2, 6, 9, session="w")
            .op(0, "read", "x", None, 10, 20, session="s", result=1)
            .op(0, "read", "x", None, 30, 40, session="s", result=2))
    assert checks(good) == []
    # Two reads that overlap in one session are not ordered.
    overlapping = (LH().op(9, "write", "x", 1, 0, 5, session="w").op(9, "write", "x", 2, 6, 9, session="w")
                   .op(0, "read", "x", None, 10, 35, session="s", result=2)
                   .op(1, "read", "x", None, 30, 40, session="s", result=1))
    assert checks(overlapping) == []


# --- monotonic writes ---------------------------------------------------------------------------


def test_monotonic_writes_by_index() -> None:
    bad = LH().op(0, "write", "x", 1, 0, 10, session="s", index=7).op(0, "write", "y", 2, 20, 30, session="s", index=6)
    (v,) = check_session(bad.history())
    assert v.check == "monotonic-writes" and v.op == 1 and set(v.ops) == {0, 1}
    good = LH().op(0, "write", "x", 1, 0, 10, session="s", index=6).op(0, "write", "y", 2, 20, 30, session="s", index=7)
    assert checks(good) == []
    # Different groups have incomparable indexes.
    groups = (LH().op(0, "write", "x", 1, 0, 10, session="s", group="g1", index=7)
              .op(0, "write", "y", 2, 20, 30, session="s", group="g2", index=6))
    assert checks(groups) == []


def test_monotonic_writes_by_value_against_the_final_state() -> None:
    h = (LH().op(0, "write", "x", 1, 0, 10, session="s").op(0, "write", "x", 2, 20, 30, session="s")
         .heal(50).op(5, "read", "x", None, 60, 70, result=1, replica="n1"))
    history = h.history()
    from harness.checker import check_convergence

    conv = check_convergence(history)
    assert conv.valid is True
    (v,) = check_session(history, conv.final_writes)
    assert v.check == "monotonic-writes" and set(v.ops) == {0, 1}
    good = (LH().op(0, "write", "x", 1, 0, 10, session="s").op(0, "write", "x", 2, 20, 30, session="s")
            .heal(50).op(5, "read", "x", None, 60, 70, result=2, replica="n1"))
    gh = good.history()
    assert check_session(gh, check_convergence(gh).final_writes) == []


# --- writes follow reads ------------------------------------------------------------------------


def test_writes_follow_reads_by_index() -> None:
    bad = (LH().op(9, "write", "x", 1, 0, 5, session="w", index=4)
           .op(0, "read", "x", None, 10, 20, session="s", index=4, result=1)
           .op(0, "write", "y", 2, 30, 40, session="s", index=3))
    vs = check_session(bad.history())
    assert [v.check for v in vs] == ["writes-follow-reads"]
    assert set(vs[0].ops) == {0, 1, 2}
    good = (LH().op(9, "write", "x", 1, 0, 5, session="w", index=4)
            .op(0, "read", "x", None, 10, 20, session="s", index=4, result=1)
            .op(0, "write", "y", 2, 30, 40, session="s", index=5))
    assert checks(good) == []


def test_writes_follow_reads_by_value_against_the_final_state() -> None:
    def history(final: int) -> list[str]:
        h = (LH().op(9, "write", "x", 1, 0, 5, session="w")
             .op(0, "read", "x", None, 10, 20, session="s", result=1)
             .op(0, "write", "x", 2, 30, 40, session="s")
             .heal(50).op(5, "read", "x", None, 60, 70, result=final, replica="n1"))
        from harness.checker import check_convergence

        hist = h.history()
        return [v.check for v in check_session(hist, check_convergence(hist).final_writes)]

    assert history(1) == ["writes-follow-reads"]
    assert history(2) == []


# --- an index reached, the update still missing (a token reused after a truncation) ------------


def test_read_your_writes_when_the_index_was_reused_by_another_entry() -> None:
    # The session's x=1 was acknowledged at [1, 5] before it committed; the next leader put
    # another client's x=2 at [2, 5]. A replica at [2, 7] holds x=2: index 7 >= 5, yet the
    # session's write is not in that state.
    bad = (LH().op(0, "write", "x", 1, 0, 10, session="s", index=[1, 5])
           .op(1, "write", "x", 2, 12, 15, session="t", index=[2, 5])
           .op(0, "read", "x", None, 20, 30, session="s", index=[2, 7], result=2))
    found = [v for v in check_session(bad.history()) if v.check == "read-your-writes"]
    (v,) = found
    assert v.op == 2 and set(v.ops) == {0, 1, 2}
    assert "reached index 5" in v.cause and "does not hold the session's update" in v.cause
    # The old value (the initial one) at an index past the write is as wrong.
    old = (LH().op(0, "write", "x", 1, 0, 10, session="s", index=[1, 5])
           .op(0, "read", "x", None, 20, 30, session="s", index=[2, 7], result=None))
    assert checks(old) == ["read-your-writes"]
    # Its good twin: the session's update, or a later one of the key, at that index.
    good = (LH().op(0, "write", "x", 1, 0, 10, session="s", index=[1, 5])
            .op(1, "write", "x", 2, 12, 15, session="t", index=[2, 6])
            .op(0, "read", "x", None, 20, 30, session="s", index=[2, 7], result=2))
    assert checks(good) == []


def test_monotonic_reads_when_the_index_was_reached_without_the_update_seen() -> None:
    bad = (LH().op(1, "write", "x", 1, 0, 5, session="t", index=[1, 5])
           .op(0, "read", "x", None, 10, 12, session="s", index=[1, 5], result=1)
           .op(0, "read", "x", None, 20, 30, session="s", index=[2, 6], result=None))
    assert checks(bad) == ["monotonic-reads"]
