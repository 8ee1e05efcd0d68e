"""Eventual convergence: after the heal, the replicas' last reads agree, within a reported time."""

from __future__ import annotations

import pytest

from level_build import LH
from harness.checker import check_convergence


def base() -> LH:
    return LH().op(0, "write", "x", 1, 0, 5).op(0, "write", "x", 2, 10, 15).heal(100)


def test_replicas_that_agree_converge_and_the_time_is_reported() -> None:
    h = (base().op(1, "read", "x", None, 110, 112, result=1, replica="n1")   # still behind
         .op(2, "read", "x", None, 110, 112, result=2, replica="n2")
         .op(1, "read", "x", None, 150, 152, result=2, replica="n1")
         .op(2, "read", "x", None, 160, 162, result=2, replica="n2"))
    report = check_convergence(h.history())
    assert report.valid is True
    assert report.replicas == ["n1", "n2"] and report.keys == 1
    assert report.converged_within_ms == pytest.approx(50.0)  # n1 showed 2 from its read at 150
    final = report.final_writes[(None, "x")]
    assert final.id == 1


def test_replicas_that_disagree_do_not_converge() -> None:
    h = (base().op(1, "read", "x", None, 150, 152, result=1, replica="n1")
         .op(2, "read", "x", None, 160, 162, result=2, replica="n2"))
    report = check_convergence(h.history())
    assert report.valid is False
    (v,) = report.violations
    assert v.level == "eventual" and set(v.ops) == {2, 3}
    assert "n1: 1" in v.cause and "n2: 2" in v.cause


def test_reads_before_the_heal_do_not_count() -> None:
    h = (base().op(1, "read", "x", None, 50, 52, result=1, replica="n1")
         .op(1, "read", "x", None, 150, 152, result=2, replica="n1")
         .op(2, "read", "x", None, 160, 162, result=2, replica="n2"))
    assert check_convergence(h.history()).valid is True
    assert check_convergence(h.history(), final_start_ns=0).valid is True  # n1's last read agrees


def test_no_final_phase_is_unknown() -> None:
    h = LH().op(0, "write", "x", 1, 0, 5).op(1, "read", "x", None, 10, 12, result=1)
    assert check_convergence(h.history()).valid == "unknown"
    h = LH().op(0, "write", "x", 1, 0, 5).heal(100)
    assert check_convergence(h.history()).valid == "unknown"
