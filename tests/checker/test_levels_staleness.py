"""Bounded staleness: each read's staleness in versions and in time, the served distribution,
and every read beyond K or T, with indexes and by values."""

from __future__ import annotations

import pytest

from level_build import LH
from harness.checker import check_staleness, check_write_order


def five_writes(indexed: bool = True) -> LH:
    h = LH()
    for i in range(5):  # x = i+1 at index i+1, acknowledged at 10, 20, ... 50 ms
        h.op(0, "write", "x", i + 1, i * 10 + 5, i * 10 + 10, index=(i + 1) if indexed else None)
    return h


def test_staleness_in_versions_and_time_by_index() -> None:
    h = (five_writes()
         .op(1, "read", "x", None, 100, 110, index=2, result=2)   # missed 3, 4, 5: first acked at 30
         .op(1, "read", "x", None, 120, 130, index=5, result=5)
         .op(2, "read", "x", None, 26, 28, index=1, result=1))    # missed 2 (acked at 20)
    history = h.history()
    report = check_staleness(history, versions_max=2, ms_max=None)
    at = {history.op(s.read).call // 1_000_000: s for s in report.reads}
    assert (at[100].versions, at[100].ms) == (3, pytest.approx(70.0))
    assert history.op(at[100].first_missed).writes == (("x", 3),)  # type: ignore[arg-type]
    assert (at[120].versions, at[120].ms) == (0, 0.0)
    assert (at[26].versions, at[26].ms) == (1, pytest.approx(6.0))
    (v,) = report.violations
    assert v.op == at[100].read and v.level == "bounded_staleness" and "3 versions > K=2" in v.cause
    assert set(v.ops) == {at[100].read, at[100].first_missed}
    assert {s.op for s in report.stale} == {at[100].read, at[26].read}
    served = report.distribution()
    assert served["reads"] == 3 and served["stale_reads"] == 2
    assert served["versions_max"] == 3 and served["versions_p50"] == 1
    assert served["ms_max"] == pytest.approx(70.0)


def test_the_time_bound() -> None:
    h = five_writes().op(1, "read", "x", None, 100, 110, index=4, result=4)  # missed x=5 acked at 50
    assert check_staleness(h.history(), ms_max=60.0).violations == []
    (v,) = check_staleness(h.history(), ms_max=40.0).violations
    assert "50.0 ms > T=40 ms" in v.cause


def test_writes_acknowledged_during_the_read_are_not_counted() -> None:
    # x=5 was acknowledged at 50, after the read began at 45: the read owes it nothing.
    h = five_writes().op(1, "read", "x", None, 45, 60, index=4, result=4)
    (s,) = check_staleness(h.history()).reads
    assert s.versions == 0


def test_index_staleness_counts_the_group_not_the_key() -> None:
    h = (LH().op(0, "write", "x", 1, 0, 5, index=1).op(0, "write", "y", 1, 6, 10, index=2)
         .op(0, "write", "y", 2, 11, 15, index=3).op(1, "read", "x", None, 20, 25, index=1, result=1))
    (s,) = check_staleness(h.history()).reads
    assert s.versions == 2
    other_group = (LH().op(0, "write", "x", 1, 0, 5, group="a", index=1)
                   .op(0, "write", "y", 1, 6, 10, group="b", index=1)
                   .op(1, "read", "x", None, 20, 25, group="a", index=1, result=1))
    (s,) = check_staleness(other_group.history()).reads
    assert s.versions == 0


def test_staleness_by_value() -> None:
    h = five_writes(indexed=False).op(1, "read", "x", None, 100, 110, result=2).op(
        2, "read", "x", None, 100, 110, result=None)
    history = h.history()
    report = check_staleness(history, versions_max=3)
    by_value = {history.op(s.read).reads[0][1]: s for s in report.reads}  # type: ignore[index]
    assert by_value[2].versions == 3 and by_value[2].mode == "value"
    assert by_value[None].versions == 5  # the initial value: every acknowledged update missed
    assert [v.op for v in report.violations] == [by_value[None].read]


def test_the_write_order_follows_real_time() -> None:
    bad = LH().op(0, "write", "x", 1, 0, 5, index=4).op(1, "write", "x", 2, 10, 15, index=3)
    (v,) = check_write_order(bad.history())
    assert v.op == 1 and v.level == "strong" and set(v.ops) == {0, 1}
    good = LH().op(0, "write", "x", 1, 0, 12, index=4).op(1, "write", "x", 2, 10, 15, index=3)  # concurrent
    assert check_write_order(good.history()) == []
