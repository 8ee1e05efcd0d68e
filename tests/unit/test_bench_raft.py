"""The raft benchmark's bookkeeping: CPU shares from /proc samples, the order of the points of
systems measured side by side, and CURVE's cost."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

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


def outcome_of(bench: Any, rows: list[tuple[str, str, int, int, float]]) -> Any:
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


def test_systems_side_by_side_alternate_their_points_a_b_then_b_a(tmp_path: Path) -> None:
    bench = load_bench()
    order: list[tuple[str, str, int]] = []

    def start_system(system: str, directory: Path, profile_dir: str | None) -> Any:
        return contextlib.nullcontext({"version": "v", "durability": "d"})

    def run_point(system: str, spec: Any, op: str, clients: int, workers: int,
                  seconds: float) -> Any:
        order.append((system, op, clients))
        point = bench.Point(system, op, clients, workers, ops=10 * len(order), seconds=seconds)
        point.latencies = [0.001 * len(order)] * point.ops
        point.cpu = {"leader": float(len(order))}
        return point

    bench.start_system, bench.run_point = start_system, run_point
    args = argparse.Namespace(systems=["exapyte", "exapyte+curve"], clients=[1, 64],
                              reads=True, rounds=2, workers="auto", seconds=1.0, profile=None)
    outcome = bench.run_all(args, tmp_path, Console(file=io.StringIO()))
    a, b = "exapyte", "exapyte+curve"
    assert order == [
        (a, "put", 1), (b, "put", 1), (b, "put", 64), (a, "put", 64), (a, "get", 64),
        (b, "get", 64),  # round 2: each point in the other order
        (b, "put", 1), (a, "put", 1), (a, "put", 64), (b, "put", 64), (b, "get", 64),
        (a, "get", 64),
    ]
    pooled = {(p.system, p.op, p.clients): p for p in outcome.points}
    first = pooled[(a, "put", 1)]  # measured 1st (10 ops) and 8th (80 ops)
    assert (first.rounds, first.ops, first.seconds) == (2, 90, 2.0)
    assert first.round_ops_per_s == [10.0, 80.0]
    assert first.cpu == {"leader": 4.5}
    assert first.as_json()["ops_per_s_by_round"] == [10.0, 80.0]


def test_cpu_shares_count_the_idle_systems_beside_the_measured_one_apart() -> None:
    bench = load_bench()
    hz = os.sysconf("SC_CLK_TCK")
    before = bench.CpuSample(0.0, {"n1": (0, 0), "n2": (0, 0), "zab/n1": (0, 0)}, (0, 0))
    after = bench.CpuSample(1.0, {"n1": (0, hz), "n2": (0, hz // 2), "zab/n1": (0, hz // 10)},
                            (0, 0))
    shares = bench.cpu_shares(before, after, "n1", {"zab/n1"})
    assert shares["leader"] == 100.0 and shares["followers"] == 50.0
    assert shares["neighbours"] == 10.0 and shares["neighbours_zmq_io"] == 0.0


def test_each_exapyte_system_starts_its_protocol_and_security_mode(tmp_path: Path) -> None:
    bench = load_bench()
    started: dict[str, tuple[bool, str]] = {}

    def exapyte_cluster(scratch: Path, profile_dir: str | None, *, curve: bool,
                        protocol: str = "raft") -> Any:
        started[scratch.name] = (curve, protocol)
        return contextlib.nullcontext({})

    bench.exapyte_cluster = exapyte_cluster
    for system in bench.EXAPYTE_SYSTEMS:
        (tmp_path / system).mkdir()
        bench.start_system(system, tmp_path / system, None)
    assert started == {
        "exapyte": (False, "raft"), "exapyte+curve": (True, "raft"),
        "exapyte-multipaxos": (False, "multipaxos"), "exapyte-zab": (False, "zab"),
    }
    assert {"exapyte-multipaxos", "exapyte-zab", "etcd"} <= set(bench.SYSTEMS)


def test_every_exapyte_system_alternates_and_only_raft_measures_strong_gets(
    tmp_path: Path,
) -> None:
    bench = load_bench()
    order: list[tuple[str, str, int]] = []
    neighbours: dict[str, set[str]] = {}

    def start_system(system: str, directory: Path, profile_dir: str | None) -> Any:
        pids = {f"n{i}": 100 * len(system) + i for i in (1, 2, 3)}
        return contextlib.nullcontext({"version": "v", "durability": "d", "pids": pids})

    def run_point(system: str, spec: Any, op: str, clients: int, workers: int,
                  seconds: float) -> Any:
        order.append((system, op, clients))
        neighbours[system] = set(spec["neighbour_pids"])
        point = bench.Point(system, op, clients, workers, ops=10, seconds=seconds)
        point.latencies = [0.001] * point.ops
        return point

    bench.start_system, bench.run_point = start_system, run_point
    systems = ["exapyte", "exapyte-multipaxos", "exapyte-zab"]
    args = argparse.Namespace(systems=systems, clients=[64], reads=True, rounds=2,
                              workers="auto", seconds=1.0, profile=None)
    bench.run_all(args, tmp_path, Console(file=io.StringIO()))
    a, p, z = systems
    assert order == [
        (a, "put", 64), (p, "put", 64), (z, "put", 64), (a, "get", 64),  # get: Raft only
        (z, "put", 64), (p, "put", 64), (a, "put", 64),  # round 2, the other way round
        (a, "get", 64),
    ]
    assert neighbours[p] == {f"{a}/n{i}" for i in (1, 2, 3)} | {f"{z}/n{i}" for i in (1, 2, 3)}


def test_each_protocol_is_compared_with_etcd_and_with_exapytes_raft() -> None:
    bench = load_bench()
    outcome = bench.Outcome()
    for system, clients, ops, p50, p99 in [
        ("exapyte", 1, 1000, 1.0, 2.0), ("exapyte", 64, 8000, 8.0, 20.0),
        ("exapyte-multipaxos", 1, 800, 1.25, 3.0), ("exapyte-multipaxos", 64, 6000, 10.0, 30.0),
        ("etcd", 1, 1250, 0.8, 1.6), ("etcd", 64, 5000, 12.5, 25.0),
    ]:
        point = bench.Point(system, "put", clients, 1, ops=ops, seconds=1.0)
        point.p50_ms, point.p99_ms = p50, p99
        outcome.points.append(point)
    outcome.missing["exapyte-zab"] = "RuntimeError: exapyte (zab) leader not ready within 60 s"
    out = io.StringIO()
    args = argparse.Namespace(
        systems=["exapyte", "exapyte-multipaxos", "exapyte-zab", "etcd"], clients=[1, 64],
        reads=False,
    )
    summary = bench.report(outcome, args, Console(file=out, width=250))
    paxos = summary["protocols"]["exapyte-multipaxos"]
    assert paxos["64"] == {
        "ops_per_s": 6000.0, "p50_ms": 10.0, "p99_ms": 30.0,
        "throughput_vs_etcd": 1.2, "p50_vs_etcd": 0.8, "p99_vs_etcd": 1.2,
        "throughput_vs_raft": 0.75, "p50_vs_raft": 1.25, "p99_vs_raft": 1.5,
    }
    assert paxos["1"]["throughput_vs_etcd"] == 0.64 and paxos["1"]["p50_vs_raft"] == 1.25
    assert summary["protocols"]["exapyte"]["64"]["throughput_vs_raft"] == 1.0
    zab = summary["protocols"]["exapyte-zab"]["64"]
    assert zab["ops_per_s"] is None and zab["throughput_vs_etcd"] is None
    text = out.getvalue()
    assert "consensus protocols" in text and "0.75x" in text
    zab_rows = [line for line in text.splitlines() if line.startswith("│ zab ")]
    assert len(zab_rows) == 2 and all("missing" in line for line in zab_rows)


def test_side_by_side_all_alternates_etcd_with_the_exapyte_systems(tmp_path: Path) -> None:
    bench = load_bench()
    order: list[str] = []
    neighbours: dict[str, set[str]] = {}

    def start_system(system: str, directory: Path, profile_dir: str | None) -> Any:
        return contextlib.nullcontext({"version": "v", "durability": "d", "pids": {"m1": 1}})

    def run_point(system: str, spec: Any, op: str, clients: int, workers: int,
                  seconds: float) -> Any:
        order.append(system)
        neighbours[system] = set(spec["neighbour_pids"])
        point = bench.Point(system, op, clients, workers, ops=1, seconds=seconds)
        point.latencies = [0.001]
        return point

    bench.start_system, bench.run_point = start_system, run_point
    args = argparse.Namespace(systems=["exapyte", "exapyte-zab", "etcd"], clients=[1, 64],
                              reads=False, rounds=1, workers="auto", seconds=1.0, profile=None,
                              side_by_side="all")
    bench.run_all(args, tmp_path, Console(file=io.StringIO()))
    assert order == ["exapyte", "exapyte-zab", "etcd", "etcd", "exapyte-zab", "exapyte"]
    assert neighbours["etcd"] == {"exapyte/m1", "exapyte-zab/m1"}
