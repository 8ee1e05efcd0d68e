"""``--demo consensus --real``: a tiny run on real node processes behind Toxiproxy, and the
refusals (no Toxiproxy server, a proxy that does not delay).

Toxiproxy is always at hand: exapyte's Toxiproxy-compatible server (harness/toxiproxy) stands in
for a missing ``toxiproxy-server`` binary, so nothing here skips. A cluster that does not form
makes the run fail (exit status 1), and the test with it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exapyte import cli
from exapyte.demos import consensus, realworld
from exapyte.demos.realworld import RealParams

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "three-region.json"
# One protocol and one scenario, to stay fast: the constrained election goes through every
# step the others take (cuts, partial heals, the heal) and measures the hub's commit lag. A new
# leader takes 1.0-1.3 s after the kill on an idle host (a 600-1200 ms election timeout, then
# pre-vote and vote rounds across a 35 ms link); 5 s leaves room for a loaded one (a CI run saw
# none within 2 s).
TINY = RealParams(topology=str(TOPOLOGY), protocols=("raft",), steady_s=2.0, after_kill_s=5.0,
                  count_writes=10, scenario_s=2.0, lag_s=0.5, scenarios=("constrained-election",))


def test_a_tiny_real_run_writes_sane_results_and_plots(tmp_path: Path) -> None:
    assert consensus.main(str(tmp_path), real=True, params=TINY) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "real"
    assert results["toxiproxy"]["kind"] in ("real", "exapyte")
    # the probe's round trip crossed a 35 ms latency each way: the proxies really delay
    assert results["toxiproxy"]["latency_probe"]["round_trip_ms"] >= 0.9 * 70
    assert sorted(results["topology"]["regions"]) == ["ap-northeast", "us-east", "us-west"]
    entry = results["protocols"]["raft"]
    # every inter-region peer link carries the topology's latency, read back from Toxiproxy
    applied = entry["links_ms_applied"]
    assert applied["n1->n3"] == 35 and applied["n3->n5"] == 75 and applied["n5->n1"] == 90
    assert "n1->n2" not in applied  # same region: no latency toxic
    main = entry["main"]
    assert main["throughput_wps"] > 0
    for region, lat in main["per_region"].items():
        assert lat["writes"] > 0 and 0 < lat["p50_ms"] <= lat["p99_ms"], region
    # a client next to the leader waits at least one round trip to a second region (2 x 35 ms);
    # one in Tokyo also crosses the Pacific (2 x 90 ms) to reach a leader in us-east
    assert main["leader_region"] == "us-east"
    assert main["per_region"]["us-east"]["p50_ms"] >= 70
    assert main["per_region"]["ap-northeast"]["p50_ms"] >= 70 + 180
    assert main["killed"] == main["leader"]
    assert main["new_leader"] not in (None, main["killed"])
    assert main["gap_s"] is None or 0 <= main["gap_s"] <= TINY.after_kill_s
    assert sum(main["timeline"]["writes_per_bin"]) > 0
    messages = entry["messages"]
    assert messages["writes"] == TINY.count_writes
    # Raft: an Append and its answer per follower carry each write (2(N-1) = 8); the counts
    # come from the nodes' transport counters
    assert messages["by_kind"]["raft.append"]["messages"] >= 4 * TINY.count_writes
    assert messages["messages_per_write"] >= 8
    assert messages["bytes_per_write"] > 0
    assert messages["all_messages_per_write"] >= messages["messages_per_write"]
    assert messages["documented"]["messages_per_write"] == 8
    assert entry["elections"]["measured"] is False
    assert set(entry["scenarios"]) == set(TINY.scenarios)
    for name, scenario in entry["scenarios"].items():
        assert re.fullmatch(r"recovered in \d+\.\d s|stuck", scenario["outcome"]), name
        assert scenario["baseline_wps"] > 0, name
    assert entry["scenarios"]["constrained-election"]["hub_commit_lag"] > 0
    for name in ("latency_cdf.png", "throughput_leader_kill.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name
    assert not (tmp_path / "election_times.png").exists()  # a simulator measurement


def test_real_refuses_without_the_toxiproxy_binary_it_was_told_to_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(realworld.shutil, "which", lambda name: None)
    code = cli.main(["--demo", "consensus", "--real", "--out", str(tmp_path),
                     "--param", "toxiproxy=real"])
    assert code == 2
    err = capsys.readouterr().err
    assert "toxiproxy-server is not on PATH" in err
    assert not (tmp_path / "results.json").exists()


def test_real_refuses_a_proxy_that_does_not_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toxiproxy.proxy import Proxy

    monkeypatch.setattr(Proxy, "add_toxic", lambda self, **kwargs: None)  # toxics silently lost
    handle = realworld.start_toxiproxy("exapyte", 1, tmp_path / "toxiproxy.log")
    try:
        with pytest.raises(realworld.RealUnavailable, match="does not delay bytes"):
            realworld.probe_latency(handle, 35)
    finally:
        handle.close()


def test_real_parameters_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--demo", "consensus", "--real", "--param", "toxiproxy=fake"]) == 2
    assert "toxiproxy" in capsys.readouterr().err
    assert cli.main(["--demo", "consensus", "--real", "--param", "elections=10"]) == 2
    assert "KEY one of" in capsys.readouterr().err
    params = consensus.params_from(["steady_s=30", "protocols=zab"], real=True)
    assert isinstance(params, RealParams) and (params.steady_s, params.protocols) == (30.0, ("zab",))


def test_a_cluster_that_does_not_form_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.db import ClusterDB, DbError

    def refuse(self: ClusterDB) -> None:
        raise DbError("the cluster did not start: node n1 exited with exit code 1")

    monkeypatch.setattr(ClusterDB, "setup", refuse)
    code = cli.main(["--demo", "consensus", "--real", "--out", str(tmp_path),
                     "--param", "protocols=raft"])
    assert code == 1
    assert "the real run failed: the cluster did not start" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
