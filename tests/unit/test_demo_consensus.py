"""The consensus demo: end to end with tiny parameters, the message meter against a hand count,
the scenario shapes and the numbers the table is made of."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exapyte import cli
from exapyte.config import loads
from exapyte.control import topology as topo
from exapyte.demos import consensus
from exapyte.demos.consensus import DemoParams, Job
from exapyte.demos.simworld import Meter, TopologyWorld
from exapyte.protocol.raft.messages import Append, Heartbeat
from exapyte.protocol.types import Entry
from exapyte.sim.world import SimSpec
from exapyte.wire import ClientReply, ClientRequest, Codec, NodeBeat, PeerMessage, PutOp

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "three-region.json"
TINY = DemoParams(
    topology=str(TOPOLOGY), steady_s=2.0, after_kill_s=3.0, count_writes=10, elections=3,
    scenario_s=3.0, lag_s=0.5, workers=1,
)


def _three_node_topology() -> tuple[object, object]:
    """three-region.json cut to its first three nodes: n1, n2 in us-east, n3 in us-west."""
    raw = json.loads(TOPOLOGY.read_text())
    raw["cluster"]["nodes"] = raw["cluster"]["nodes"][:3]
    raw["cluster"]["regions"] = raw["cluster"]["regions"][:2]
    raw["cluster"]["links"] = [link for link in raw["cluster"]["links"]
                               if {link["a"], link["b"]} == {"us-east", "us-west"}]
    cfg = loads(json.dumps(raw), source="<three-node>")
    return cfg, topo.from_config(cfg)


def test_the_demo_runs_end_to_end_and_writes_results_and_plots(tmp_path: Path) -> None:
    assert consensus.main(str(tmp_path), params=TINY) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["protocols"]) == {"raft", "multipaxos", "zab"}
    regions = results["topology"]["regions"]
    assert sorted(regions) == ["ap-northeast", "us-east", "us-west"]
    for protocol, entry in results["protocols"].items():
        main = entry["main"]
        assert main["throughput_wps"] > 0, protocol
        for region in regions:
            lat = main["per_region"][region]
            assert lat["writes"] > 0 and 0 < lat["p50_ms"] <= lat["p99_ms"], (protocol, region)
        # a client next to the leader waits at least one round trip to a second region
        # (us-east - us-west: 2 x 35 ms); one in Tokyo also crosses the Pacific twice
        leader_region = main["leader_region"]
        assert main["per_region"][leader_region]["p50_ms"] >= 70
        assert main["per_region"]["ap-northeast"]["p50_ms"] > main["per_region"]["us-east"]["p50_ms"]
        assert main["killed"] == main["leader"]
        assert main["gap_s"] is None or 0 <= main["gap_s"] <= TINY.after_kill_s
        assert sum(main["timeline"]["writes_per_bin"]) > 0
        messages = entry["messages"]
        assert messages["writes"] == TINY.count_writes
        assert messages["messages_per_write"] > 0 and messages["bytes_per_write"] > 0
        assert messages["all_messages_per_write"] >= messages["messages_per_write"]
        documented = messages["documented"]["messages_per_write"]
        assert messages["relative_difference"] == pytest.approx(
            (messages["messages_per_write"] - documented) / documented, abs=1e-3)
        elections = entry["elections"]
        assert elections["failures"] == TINY.elections
        assert elections["elected"] + elections["no_leader"] == TINY.elections
        if elections["elected"]:
            assert 0 < elections["p50_s"] <= elections["p90_s"] <= elections["p99_s"] <= elections["max_s"]
        assert set(entry["scenarios"]) == set(consensus.SCENARIOS)
        for name, scenario in entry["scenarios"].items():
            assert re.fullmatch(r"recovered in \d+\.\d s|stuck", scenario["outcome"]), (protocol, name)
        assert entry["scenarios"]["constrained-election"]["hub_commit_lag"] > 0, protocol
    for name in ("latency_cdf.png", "throughput_leader_kill.png", "election_times.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name


def test_raft_messages_per_write_match_the_hand_count() -> None:
    # Three nodes, one client next to the leader, one write at a time. By hand, per write: the
    # leader sends Append(entry) to both followers and each answers (2 + 2): 4 messages between
    # nodes, 2(N-1); the commit index rides on the next Append or heartbeat (Raft §5.3).
    cfg, graph = _three_node_topology()
    job = Job("counts", "raft", DemoParams(count_writes=12))
    world = TopologyWorld(SimSpec(seed=3, nodes=3, protocol="raft", faults=()), graph, cfg)
    world.start()
    assert world.wait_new_leader(0, 30) is not None
    assert world.transfer_to("n1")
    loop = world.add_writer("us-east", "k0", writes_max=job.params.count_writes)
    world.run_for(1.0)
    world.meter.on = True
    loop.start()
    assert world.run_until(lambda: not loop.running and not loop.client.busy, 60)
    world.run_for(1.0)
    writes = job.params.count_writes
    assert len(loop.latencies_ms) == writes
    counted = world.meter.messages
    assert counted["raft.append"] == 2 * writes
    assert counted["raft.append_resp"] == 2 * writes
    # the client's first attempt may go to a follower, which answers not_leader
    assert counted["client.request"] == counted["client.reply"] in (writes, writes + 1)
    assert world.meter.totals(background=False)[0] == 2 * (3 - 1) * writes


def test_the_meter_counts_framed_bytes_and_tells_background_from_write_path() -> None:
    meter = Meter(on=True)
    codec = Codec()
    append = PeerMessage("default", Append(frm="n1", to="n2", term=2, prev_index=4, prev_term=2,
                                           entries=(Entry(2, 5, data=b"x" * 40),), commit=4))
    beat = PeerMessage("default", Heartbeat(frm="n1", to="n2", term=2, commit=4, ctx=0))
    node_beat = NodeBeat("n1", "n2", "1")
    request = ClientRequest("c", 1, PutOp("k", b"v"))
    reply = ClientReply("c", 1, "ok")
    meter("n1", "n2", append)
    meter("n1", "n2", append)
    meter("n1", "n2", beat)
    meter("n1", "n2", node_beat)
    meter("c0", "n1", (0, 1, request))
    meter("n1", "c0", (1, reply))
    meter.on = False
    meter("n1", "n2", append)  # not counted: the meter is off
    assert meter.messages == {"raft.append": 2, "raft.heartbeat": 1, "node.beat": 1,
                              "client.request": 1, "client.reply": 1}
    append_bytes = len(codec.encode(append))
    assert append_bytes > 40
    assert meter.totals(background=False) == (2, 2 * append_bytes)
    background = len(codec.encode(beat)) + len(codec.encode(node_beat))
    assert meter.totals(background=True) == (2, background)
    client = len(codec.encode(request)) + len(codec.encode(reply))
    assert meter.totals(peer_only=False) == (6, 2 * append_bytes + background + client)


def test_the_partial_connectivity_scenarios_cut_the_links_of_the_paper() -> None:
    nodes = ("n1", "n2", "n3", "n4", "n5")
    every = {(x, y) for x in nodes for y in nodes if x < y}

    def reachable(cut: set[tuple[str, str]], node: str) -> set[str]:
        return {y for x, y in every - cut if x == node} | {x for x, y in every - cut if y == node}

    loss = consensus.scenario_links("quorum-loss", "n1", "n3", nodes)
    assert reachable(loss, "n3") == {"n1", "n2", "n4", "n5"}  # the hub reaches everyone
    for node in ("n1", "n2", "n4", "n5"):
        assert reachable(loss, node) == {"n3"}
    constrained = consensus.scenario_links("constrained-election", "n1", "n3", nodes)
    assert reachable(constrained, "n1") == set()  # the old leader is cut off entirely
    assert reachable(constrained, "n3") == {"n2", "n4", "n5"}
    chained = consensus.scenario_links("chained", "n1", "n3", nodes)
    assert chained == {("n1", "n3")}
    with pytest.raises(ValueError, match="allowed"):
        consensus.scenario_links("bridge", "n1", "n3", nodes)


def test_gap_and_recovery_are_read_off_one_second_windows() -> None:
    # 100 ms bins, a steady rate of 20 writes/s: two quiet seconds, then 2 writes per bin. The
    # window from 1.9 s holds one quiet bin and nine full ones: 18 writes/s, 90% of 20; the one
    # from 1.8 s only 16. Half the rate (10/s) is first reached by the window from 1.5 s.
    bins = [0] * 20 + [2] * 20
    assert consensus.gap_after(bins, 100.0, baseline=20.0) == pytest.approx(1.9)
    assert consensus.recovered_after(bins, 100.0, baseline=20.0) == pytest.approx(1.5)
    # a flapping tail is not recovered; a run that never drops recovered at once
    assert consensus.recovered_after([2] * 20 + [0] * 10, 100.0, baseline=20.0) is None
    assert consensus.recovered_after([2] * 30, 100.0, baseline=20.0) == 0.0
    assert consensus.gap_after([0] * 30, 100.0, baseline=20.0) is None
    assert consensus.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert consensus.percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert consensus.percentile([], 50) is None


def test_the_cli_runs_the_consensus_demo_refuses_real_and_bad_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --real runs (tests/integration/test_demo_consensus_real.py); its parameters are its own
    assert cli.main(["--demo", "consensus", "--real", "--out", str(tmp_path), "--param", "elections=1"]) == 2
    assert "--real" in capsys.readouterr().err
    assert cli.main(["--demo", "consensus", "--param", "nope=1"]) == 2
    assert "KEY one of" in capsys.readouterr().err
    assert cli.main(["--demo", "consensus", "--param", "elections=many"]) == 2
    assert cli.main(["--demo", "consensus", "--param", "protocols=raft,pbft"]) == 2
    # the replication demo runs (tests/unit/test_demo_replication.py); bad parameters are refused
    assert cli.main(["--demo", "replication", "--param", "nope=1"]) == 2
    assert "KEY one of" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
    params = consensus.params_from(["seed=7", "protocols=raft,zab", "elections=0", "workers=1"])
    assert (params.seed, params.protocols, params.elections, params.workers) == (7, ("raft", "zab"), 0, 1)
