"""The replication demo end to end with tiny parameters: results.json holds every measure for
every strategy, the region loss keeps its promises where they are promises (sync loses no
acknowledged write; async's voters are all home, so its us-east shard is left without one),
async's remote learners lag, followers serve bounded_staleness reads within the bound, and the
PNGs are written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from exapyte import cli
from exapyte.demos import replication
from exapyte.demos.replication import LEVELS, ReplParams

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "three-region.json"
TINY = ReplParams(
    topology=str(TOPOLOGY), write_rate=80.0, warmup_s=1.0, steady_s=2.0, reads_per_level=2,
    reads_s=3.0, recover_s=3.0, workers=1,
)
REGIONS = ["us-east", "us-west", "ap-northeast"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("replication")
    assert replication.main(str(out), params=TINY) == 0
    return json.loads((out / "results.json").read_text()), out


def test_results_hold_every_measure_for_every_strategy(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    assert results["topology"]["regions"] == REGIONS
    assert results["loss_region"] == "us-east"  # the region that writes most (60%)
    assert sorted(results["strategies"]) == sorted(replication.STRATEGIES)
    # one workload and one fault schedule: the same writes offered, the cut at the same time
    offered = {s: e["writes"]["by_region"] for s, e in results["strategies"].items()}
    assert offered["sync"] == offered["async"] == offered["optimized"]
    assert len({e["loss"]["cut_at_s"] for e in results["strategies"].values()}) == 1
    assert offered["sync"]["us-east"] > offered["sync"]["us-west"] > offered["sync"]["ap-northeast"]
    for name, entry in results["strategies"].items():
        assert len(entry["placement"]) == 6, name
        for region in REGIONS:
            lat = entry["latency"][region]
            assert lat["acked"] > 0 and 0 < lat["p50_ms"] <= lat["p99_ms"], (name, region)
            assert lat["acked"] == len(lat["latencies_ms"])
            assert set(entry["lag"]["by_region"][region]) == {"voter", "learner"}
            for level in LEVELS:
                reads = entry["reads"][region][level]
                assert reads["reads"] == TINY.reads_per_level
                assert reads["unfinished"] == 0, (name, region, level)
                assert sum(reads["served_by_region"].values()) + reads["failed"] == reads["reads"]
        series = entry["lag"]["series"]
        assert entry["lag"]["samples"] == len(series["t_s"]) > TINY.steady_s * 1000 / TINY.lag_sample_ms - 2
        assert all(len(v) == len(series["t_s"]) for v in series["mean_by_region"].values())
        assert set(entry["leaders"]["end"]) == set(entry["placement"])
        loss = entry["loss"]
        assert loss["nodes"] == ["n1", "n2"] and loss["acked_writes"] > 0
        assert loss["lost"] == loss["lost_before_cut"] + loss["lost_after_cut"]
        assert 0 <= loss["shards_available"] <= len(loss["shards"]) == 6
        assert entry["invariant_checks"] > 0


def test_the_placements_follow_each_strategy(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    for name in ("sync", "optimized"):  # one voter per region: no region holds a quorum
        for spec in results["strategies"][name]["placement"].values():
            assert sorted(spec["voter_regions"]) == sorted(REGIONS) and not spec["learners"], name
    for spec in results["strategies"]["async"]["placement"].values():
        assert set(spec["voter_regions"]) == {spec["home"]}
        assert sorted(spec["learner_regions"]) == sorted(set(REGIONS) - {spec["home"]})


def test_region_loss_sync_loses_nothing_acknowledged_async_loses_its_home_shards(
    run: tuple[dict[str, Any], Path],
) -> None:
    """Sync: every write's majority spans regions, so a lost region takes none of them. Async:
    the shards homed in us-east have both voters there, so nothing is left to lead them, and
    only they can lose writes; how many is measured."""
    results, _ = run
    strategies = results["strategies"]
    assert strategies["sync"]["loss"]["lost"] == 0
    assert strategies["sync"]["loss"]["shards_available"] == 6
    assert strategies["optimized"]["loss"]["lost"] == 0
    async_loss = strategies["async"]["loss"]
    homed_east = [g for g, s in strategies["async"]["placement"].items() if s["home"] == "us-east"]
    assert homed_east  # the sharded ring puts some homes in us-east on this topology
    for group in homed_east:
        shard = async_loss["shards"][group]
        assert shard["voters_left"] == [] and shard["leader_after"] is None
        assert not shard["write_available"]
    assert async_loss["shards_available"] == 6 - len(homed_east)
    # the other shards keep their home quorum: only a learner went, nothing acknowledged is lost
    for group, shard in async_loss["shards"].items():
        if group not in homed_east:
            assert shard["lost"] == {"before_cut": 0, "after_cut": 0}, group
    # how many the us-east shards lose is measured: what their learners had not applied at the
    # cut, and what they acknowledged after it (0 when no write reached them then)
    assert async_loss["lost"] >= strategies["sync"]["loss"]["lost"]


def test_async_remote_learners_lag(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    lag = results["strategies"]["async"]["lag"]["by_region"]
    learners = [lag[r]["learner"] for r in REGIONS if lag[r]["learner"]["replicas"]]
    assert learners and all(v["max_entries"] > 0 for v in learners)
    sync_lag = results["strategies"]["sync"]["lag"]["by_region"]
    assert all(sync_lag[r]["learner"]["replicas"] == 0 for r in REGIONS)  # sync: voters only


def test_followers_serve_bounded_staleness_within_the_bound(run: tuple[dict[str, Any], Path]) -> None:
    """Every node reads the simulated clock: followers near the client serve bounded_staleness
    reads whose state, by their leader's stamps, is at most T old (results.json states K and
    T); eventual reads are served in the client's own region whenever the key's group has a
    member there (every group does under sync and optimized)."""
    results, _ = run
    assert results["staleness"] == {"versions": TINY.staleness_versions_max,
                                     "ms": TINY.staleness_ms_max, "clock_skew_ms": 0}
    assert "simulated clock" in results["notes"]["bounded_staleness"]
    for name, entry in results["strategies"].items():
        bounded = [entry["reads"][r]["bounded_staleness"] for r in REGIONS]
        assert sum(b["served_by_follower"] for b in bounded) > 0, name
        for region, b in zip(REGIONS, bounded, strict=True):
            assert b["served_by_follower"] <= b["served_locally"] <= b["reads"], (name, region)
            if b["served_by_follower"]:
                assert 0 <= b["follower_age_ms_p50"] <= b["follower_age_ms_max"] <= TINY.staleness_ms_max
    for name in ("sync", "optimized"):
        for region in REGIONS:
            reads = results["strategies"][name]["reads"][region]["eventual"]
            assert reads["served_locally"] == reads["reads"] - reads["failed"], (name, region)


def test_a_bound_no_follower_meets_sends_bounded_reads_to_the_leader(tmp_path: Path) -> None:
    """T = 1 ms is below any WAN stamp's age: no follower serves a bounded_staleness read, the
    leaders serve them all, while eventual reads still go to followers."""
    params = replace(TINY, strategies=("sync",), staleness_ms_max=1)
    results = replication.run(params)
    reads = results["strategies"]["sync"]["reads"]
    assert results["staleness"]["ms"] == 1
    assert all(reads[r]["bounded_staleness"]["unfinished"] == 0 for r in REGIONS)
    assert sum(reads[r]["bounded_staleness"]["served_by_follower"] for r in REGIONS) == 0
    assert sum(reads[r]["eventual"]["served_by_follower"] for r in REGIONS) > 0


def test_the_pngs_are_written(run: tuple[dict[str, Any], Path]) -> None:
    _, out = run
    for name in ("write_latency_cdf", "replica_lag", "lost_writes", "reads_by_region"):
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


def test_bad_parameters_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="write_mix"):
        replication.params_from(["write_mix=us-east"])
    with pytest.raises(ValueError, match="region 'mars'"):
        replication.params_from(["write_mix=mars:1"])
    with pytest.raises(ValueError, match="allowed: sync"):
        replication.params_from(["strategies=chain"])
    with pytest.raises(ValueError, match="write_rate"):
        replication.params_from(["write_rate=0"])
    with pytest.raises(ValueError, match="staleness_ms_max"):
        replication.params_from(["staleness_ms_max=0"])
    params = replication.params_from(["seed=3", "strategies=sync,async", "loss_region=us-west"])
    assert (params.seed, params.strategies, params.region_lost()) == (3, ("sync", "async"), "us-west")
    assert cli.main(["--demo", "replication", "--param", "nope=1"]) == 2
    assert cli.main(["--demo", "replication", "--real"]) == 2
