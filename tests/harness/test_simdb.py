"""``--db sim``: a harness spec run in the simulator, through the harness's checkers and report."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from rich.console import Console

from exapyte.config import load
from exapyte.control import topology as topo
from exapyte.sim import cli as sim_cli
from exapyte.sim.runner import run_seed
from harness.__main__ import main as harness_main
from harness.runner import TestSpec, resolve_topology, run_test
from harness.simdb import SimUnsupported, plan


def _spec(tmp_path: Path, **kw: object) -> TestSpec:
    base: dict[str, object] = dict(topology="three-region", workload="session", nemesis=("partition", "kill", "pause"),
                                   time_s=8.0, rate=50.0, seed=3, store=str(tmp_path / "store"), db="sim")
    return TestSpec(**(base | kw))  # type: ignore[arg-type]


def _plan(spec: TestSpec):  # noqa: ANN202 - a SimPlan
    path = resolve_topology(spec.topology)
    return plan(spec, load(path), topo.load(path))


def test_sim_run_writes_a_valid_report_and_a_replay_that_reproduces_it(tmp_path: Path) -> None:
    outcome = run_test(_spec(tmp_path), Console(quiet=True))
    assert outcome.valid is True, {k: v["cause"] for k, v in outcome.results["checkers"].items()}
    run_dir = outcome.run_dir
    for name in ("history.jsonl", "results.json", "report.html", "latency.png", "topology.png"):
        assert (run_dir / name).exists(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert results["db"] == "sim" and results["options"]["db"] == "sim"
    # the harness's own checkers judged the history, and the simulator's judges count too
    assert set(results["checkers"]) == {"levels", "lost-writes", "availability", "simulator"}
    assert results["ops"] > 100 and results["faults"]
    assert {f["fault"] for f in results["faults"]} <= {"partition", "crash", "pause"}
    replay = results["simulator"]["replay"]
    assert replay.startswith("python -m exapyte.sim ")
    assert "--placement n1=us-east,n2=us-east,n3=us-west,n4=us-west,n5=ap-northeast" in replay
    report = (run_dir / "report.html").read_text()
    assert "ran in the simulator" in report and replay in report
    # the printed command is the same run: same trace hash, same history
    args = sim_cli.build_parser().parse_args(shlex.split(replay)[3:])
    again = run_seed(sim_cli.spec_from_args(args), keep_history=True)
    assert again.trace_hash == results["simulator"]["trace_hash"]
    assert again.history_jsonl == (run_dir / "history.jsonl").read_text()


def test_a_bug_is_caught_with_a_counterexample(tmp_path: Path) -> None:
    outcome = run_test(_spec(tmp_path, nemesis=("partition",), bugs=("session-ahead",), seed=1), Console(quiet=True))
    assert outcome.valid is False
    levels = outcome.results["checkers"]["levels"]
    assert levels["valid"] is False
    counterexample = levels["evidence"]["counterexample"]
    assert counterexample and counterexample[0]["ops"]
    assert outcome.results["simulator"]["spec"]["bugs"] == ["session-ahead"]


@pytest.mark.parametrize("fault", ["latency", "bandwidth", "reset", "transfer"])
def test_a_fault_the_simulator_lacks_is_refused_by_name(tmp_path: Path, fault: str) -> None:
    with pytest.raises(SimUnsupported, match=f"cannot run fault\\(s\\) {fault}"):
        run_test(_spec(tmp_path, nemesis=("partition", fault)), Console(quiet=True))
    assert not (tmp_path / "store").exists()  # refused before any run folder


def test_the_command_line_refuses_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = harness_main(["test", "--db", "sim", "--topology", "three-region", "--nemesis", "partition,latency",
                       "--time", "5", "--seed", "1", "--store", str(tmp_path / "store")])
    assert rc == 2
    assert "latency" in capsys.readouterr().out


@pytest.mark.parametrize(("kw", "needle"), [
    ({"workload": "bank"}, "workload 'bank'"),
    ({"distribution": "hierarchical"}, "hierarchical"),
    ({"distribution": "sharded", "replication_factor": 5}, "replication factor 5"),
    ({"nemesis": ("rebalance",)}, "rebalance needs --distribution sharded"),
    ({"hosts": "netns"}, "--hosts netns"),
    ({"staleness_ms_max": 100}, "--staleness-ms 100"),
])
def test_what_cannot_be_mapped_is_refused(tmp_path: Path, kw: dict[str, object], needle: str) -> None:
    with pytest.raises(SimUnsupported, match=needle.replace("(", "\\(")):
        _plan(_spec(tmp_path, **kw))


def test_the_mapping(tmp_path: Path) -> None:
    sim = _plan(_spec(tmp_path, nemesis=("partition", "kill", "pause", "clock"), time_s=30.0, rate=100.0,
                      quiet_s=4.0, protocol="multipaxos", seed=9)).sim
    assert sim.seed == 9 and sim.protocol == "multipaxos" and sim.shards == 1
    assert sim.faults == ("partition", "crash", "pause", "drift")
    assert sim.fault_s == 30.0 and sim.quiet_s == 4.0 and sim.ops == 3000 and sim.clients == 5
    assert [n for n, _ in sim.placement] == ["n1", "n2", "n3", "n4", "n5"]
    assert dict(sim.placement)["n5"] == "ap-northeast"
    # the harness's partition vocabulary, as far as five nodes in three regions take it
    assert sim.shapes == ("isolate-node", "isolate-region", "majority-minority", "bridge", "ring", "one-way")
    assert sim.mixed_levels and sim.read_weights == (0.1, 0.1, 0.6, 0.1, 0.1)  # session-heavy
    register = _plan(_spec(tmp_path, workload="register", topology="single-region")).sim
    assert not register.mixed_levels
    assert "isolate-region" not in register.shapes and "ring" not in register.shapes  # 3 nodes, one region
    sharded = _plan(_spec(tmp_path, distribution="sharded", shards=4, nemesis=("partition", "rebalance"))).sim
    assert sharded.shards == 4 and sharded.faults == ("partition", "rebalance") and sharded.keys >= 8
    assert _plan(_spec(tmp_path, workload="levels")).sim.read_weights == (0.2,) * 5
