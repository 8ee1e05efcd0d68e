"""Replication strategies: the per-region quotas each one plans, and what they promise about
losing a region, checked on the placements the distribution strategies fill from them."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from exapyte import config, distribution, replication
from exapyte.control.rebalance import GroupState, plan_node_change
from exapyte.distribution.base import GroupSpec
from exapyte.replication import Latency, ReplicationError, make_policy

REPO = Path(__file__).resolve().parents[2]
THREE_REGION = json.loads((REPO / "topologies" / "three-region.json").read_text())
LAT = Latency([("us-east", "us-west", 35), ("us-west", "ap-northeast", 75), ("us-east", "ap-northeast", 90)])
CAP = {"us-east": 2, "us-west": 2, "ap-northeast": 1}


def cfg_of(distribution_: str, strategy: str | None, shards: int = 8, rf: int = 3) -> config.Config:
    raw = json.loads(json.dumps(THREE_REGION))
    raw["distribution"] = {"strategy": distribution_, "shards": 1 if distribution_ == "centralized" else shards,
                           "replication_factor": rf}
    if strategy is not None:
        raw["replication"] = {"strategy": strategy}
    return config.loads(json.dumps(raw))


def regions_of(cfg: config.Config) -> dict[str, str]:
    return {n.id: n.region for n in cfg.cluster.nodes}


def a_region_holds_a_quorum(group: GroupSpec, region: dict[str, str]) -> set[str]:
    """The regions whose loss can take an acknowledged write with them: those holding a
    majority of the group's voters (a write acknowledged by that majority alone)."""
    quorum = len(group.voters) // 2 + 1
    count = Counter(region[v] for v in group.voters)
    return {r for r, n in count.items() if n >= quorum}


def test_the_default_is_async_for_hierarchical_and_sync_otherwise() -> None:
    assert cfg_of("hierarchical", None).replication_strategy == "async"
    assert cfg_of("sharded", None).replication_strategy == "sync"
    assert cfg_of("centralized", None).replication_strategy == "sync"
    assert cfg_of("hierarchical", "sync").replication_strategy == "sync"


def test_an_unknown_strategy_is_refused_with_the_choices() -> None:
    with pytest.raises(ReplicationError, match="sync, async, optimized"):
        make_policy("semi-sync")


@pytest.mark.parametrize("rf, expected", [(3, {"us-east": 1, "us-west": 1, "ap-northeast": 1}),
                                          (5, {"us-east": 2, "us-west": 2, "ap-northeast": 1})])
def test_optimized_home_below_a_quorum_home_and_nearest_a_quorum(rf: int, expected: dict[str, int]) -> None:
    plan = make_policy("optimized", LAT).plan("us-east", CAP, rf)
    assert plan is not None
    voters = {q.region: q.voters for q in plan.quotas if q.voters}
    assert voters == expected
    quorum = rf // 2 + 1
    assert voters["us-east"] < quorum <= voters["us-east"] + voters["us-west"]  # nearest: us-west
    assert max(voters.values()) < quorum
    assert plan.leader_region == "us-east" and plan.quotas[0].region == "us-east"


def test_optimized_follows_the_latencies_not_the_names() -> None:
    # from Tokyo, us-west (75 ms) is nearer than us-east (90 ms): it is filled first
    plan = make_policy("optimized", LAT).plan("ap-northeast", {"us-east": 3, "us-west": 3, "ap-northeast": 3}, 5)
    assert plan is not None
    assert [(q.region, q.voters) for q in plan.quotas] == [("ap-northeast", 2), ("us-west", 2), ("us-east", 1)]


def test_async_votes_at_home_and_learns_everywhere_else() -> None:
    plan = make_policy("async", LAT).plan("us-west", CAP, 3)
    assert plan is not None
    assert [(q.region, q.voters, q.learners) for q in plan.quotas] == [
        ("us-west", 2, 0), ("us-east", 0, 1), ("ap-northeast", 0, 1)]
    everywhere = make_policy("async", LAT).plan("us-east", CAP, 5, everywhere=True)
    assert everywhere is not None
    assert [(q.region, q.voters, q.learners) for q in everywhere.quotas] == [
        ("us-east", 2, 0), ("us-west", 0, 2), ("ap-northeast", 0, 1)]


@pytest.mark.parametrize("dist", ["centralized", "sharded", "hierarchical"])
@pytest.mark.parametrize("strategy", ["sync", "optimized"])
def test_sync_and_optimized_lose_no_acknowledged_write_with_any_one_region(dist: str, strategy: str) -> None:
    cfg = cfg_of(dist, strategy)
    _, placement = distribution.from_config(cfg)
    region = regions_of(cfg)
    for group in placement.groups:
        assert not a_region_holds_a_quorum(group, region), group
        assert len({region[v] for v in group.voters}) == 3, group


@pytest.mark.parametrize("dist", ["centralized", "sharded", "hierarchical"])
def test_async_voters_share_the_home_region_and_every_other_region_learns(dist: str) -> None:
    cfg = cfg_of(dist, "async")
    _, placement = distribution.from_config(cfg)
    region = regions_of(cfg)
    for group in placement.groups:
        home = {region[v] for v in group.voters}
        assert home == {group.region}, group
        if dist == "hierarchical":
            assert group.region == group.id.split("/")[0]
        learner_regions = {region[n] for n in group.learners}
        assert learner_regions == set(CAP) - home, group
        assert a_region_holds_a_quorum(group, region) == home  # losing it can lose writes


def test_sync_sharded_placement_is_the_ring_spread_of_every_release() -> None:
    """A sharded group has no home: sync takes distinct regions in ring preference order, the
    placement made before replication strategies existed (no data moves on upgrade)."""
    cfg = cfg_of("sharded", "sync")
    _, placement = distribution.from_config(cfg)
    legacy = distribution.ShardedStrategy(8).place(regions_of(cfg), 3)
    assert placement == legacy
    assert all(g.learners == () and g.region is None for g in placement.groups)


def test_every_placement_keeps_each_node_once_per_group() -> None:
    for dist, strategy in itertools.product(["centralized", "sharded", "hierarchical"], ["sync", "async", "optimized"]):
        _, placement = distribution.from_config(cfg_of(dist, strategy, shards=16))
        for g in placement.groups:
            assert len(set(g.members)) == len(g.members), (dist, strategy, g)
            assert g.voters, (dist, strategy, g)


def test_a_centralized_async_node_added_in_another_region_joins_as_a_learner() -> None:
    raw = json.loads(json.dumps(THREE_REGION))
    raw["replication"] = {"strategy": "async"}
    raw["cluster"]["nodes"].append({"id": "n6", "region": "us-west", "host": "127.0.0.1", "port": 7706,
                                    "pub_port": 7756})
    raw["consensus"]["initial_voters"] = ["n1", "n2", "n3", "n4", "n5"]
    cfg = config.loads(json.dumps(raw))
    _, placement = distribution.from_config(cfg)
    group = placement.groups[0]
    assert group.voters == ("n1", "n2") and set(group.learners) == {"n3", "n4", "n5"}
    state = {"default": GroupState("default", group.voters, group.learners, "n1", 10)}
    moves = plan_node_change(cfg, "add", "n6", state)
    assert [(m.add, m.promote, m.remove) for m in moves] == [("n6", None, None)]
    east = plan_node_change(cfg, "remove", "n2", state)
    assert [(m.add, m.promote, m.remove) for m in east] == [(None, None, "n2")]


def test_latency_is_symmetric_and_zero_inside_a_region() -> None:
    assert LAT.between("us-west", "us-east") == LAT.between("us-east", "us-west") == 35
    assert LAT.between("us-east", "us-east") == 0
    assert LAT.between("us-east", "mars") == float("inf")
    assert replication.latency_of(cfg_of("sharded", None)).between("us-east", "ap-northeast") == 90
