"""The raft benchmark's bookkeeping: CPU shares from /proc samples, and CURVE's cost."""

from __future__ import annotations

import argparse
import io
import os
import time

import zmq
from rich.console import Console

from tests.unit.test_bench_zmtp import load_bench


def test_cpu_shares_split_the_leader_and_the_followers_and_libzmq_from_the_rest() -> None:
    bench = load_bench()
    hz = os.sysconf("SC_CLK_TCK")
    before = bench.CpuSample(10.0, {"n1": (0, 0), "n2": (5, 5), "n3": (0, 0)}, (0, 0))
    after = bench.CpuSample(
        12.0,  # two seconds later
        {"n1": (hz // 2, hz), "n2": (5, 5 + hz), "n3": (0, hz // 2)},
        (300, 400),
    )
    shares = bench.cpu_shares(before, after, "n1")
    assert shares == {
        "leader": 75.0, "leader_zmq_io": 25.0, "followers": 75.0, "followers_zmq_io": 0.0,
        "machine": 75.0,
    }


def test_libzmq_io_threads_are_told_apart_from_the_others() -> None:
    bench = load_bench()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    try:
        sock.bind_to_random_port("tcp://127.0.0.1")  # the I/O thread starts with the first bind
        deadline = time.monotonic() + 5.0
        while True:  # a new thread takes its name a moment after it starts
            names = set()
            for tid in os.listdir(f"/proc/{os.getpid()}/task"):
                with open(f"/proc/{os.getpid()}/task/{tid}/comm", encoding="ascii") as f:
                    names.add(f.read().strip())
            if any(n.startswith("ZMQbg/IO") for n in names) or time.monotonic() > deadline:
                break
        assert any(n.startswith("ZMQbg/IO") for n in names), names
        io_ticks, other_ticks = bench.thread_ticks(os.getpid())
        assert io_ticks >= 0 and other_ticks > 0
    finally:
        sock.close(linger=0)
        ctx.term()
    assert bench.thread_ticks(2**22 + 1) == (0, 0)  # no such process: nothing, no error


def outcome_of(bench, rows):  # type: ignore[no-untyped-def]
    outcome = bench.Outcome()
    for system, op, clients, ops, p50 in rows:
        point = bench.Point(system, op, clients, 1, ops=ops, seconds=1.0)
        point.p50_ms = p50
        outcome.points.append(point)
    return outcome


def args_for(systems: list[str]) -> argparse.Namespace:
    return argparse.Namespace(systems=systems, clients=[1, 64], reads=True)


def test_curves_cost_is_reported_against_the_same_runs_exapyte() -> None:
    bench = load_bench()
    outcome = outcome_of(bench, [
        ("exapyte", "put", 1, 1000, 1.0), ("exapyte", "put", 64, 10000, 6.0),
        ("exapyte", "get", 64, 25000, 2.0),
        ("exapyte+curve", "put", 1, 900, 1.1), ("exapyte+curve", "put", 64, 8800, 7.0),
        ("exapyte+curve", "get", 64, 20000, 2.5),
    ])
    out = io.StringIO()
    summary = bench.report(outcome, args_for(["exapyte", "exapyte+curve"]),
                           Console(file=out, width=200))
    assert summary["curve"]["put_throughput_cost"] == {"1": 0.1, "64": 0.12}
    assert summary["curve"]["put_p50_cost"]["1"] == 0.1
    assert summary["curve"]["get_throughput_cost"] == {"64": 0.2}
    target = summary["targets"][-1]
    assert target["value"] == 0.12 and target["met"] is True and target["unit"] == "fraction"
    assert "put throughput at 64 clients 12.0%" in out.getvalue()
    assert "<= 15.0%: 12.0% met" in out.getvalue()


def test_without_the_curve_run_its_target_is_not_measured() -> None:
    bench = load_bench()
    outcome = outcome_of(bench, [("exapyte", "put", 64, 10000, 6.0)])
    outcome.missing["exapyte+curve"] = "pynacl not installed"
    summary = bench.report(outcome, args_for(["exapyte", "exapyte+curve"]),
                           Console(file=io.StringIO(), width=200))
    assert summary["curve"]["put_throughput_cost"]["64"] is None
    assert summary["targets"][-1]["met"] is None
