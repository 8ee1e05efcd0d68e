"""Distribution strategies: stable key -> shard, balanced and minimal-move placement, plans."""

from __future__ import annotations

import collections
import statistics
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exapyte import limits
from exapyte.distribution import (
    CentralizedStrategy,
    GroupSpec,
    HierarchicalStrategy,
    Move,
    Placement,
    PlacementError,
    ShardedStrategy,
    check_plan,
    make_strategy,
    merge_scan,
    plan_moves,
    region_of_shard,
)

SHARDS = 1024
KEYS = 100_000


@cache
def _sharded() -> ShardedStrategy:
    return ShardedStrategy(SHARDS)


@cache
def _keys_per_shard() -> dict[str, int]:
    strategy = _sharded()
    return dict(collections.Counter(strategy.shard_of(f"user{i:07d}") for i in range(KEYS)))


def _nodes(names: list[str], region: str = "r") -> dict[str, str]:
    return {n: region for n in names}


def _balance(placement: Placement) -> float:
    """stddev/mean of the keys each node holds (a key counts on each of its replicas)."""
    per_shard = _keys_per_shard()
    load: collections.Counter[str] = collections.Counter()
    nodes: set[str] = set()
    for g in placement.groups:
        for n in g.voters:
            load[n] += per_shard.get(g.id, 0)
            nodes.add(n)
    values = [load[n] for n in nodes]
    return statistics.pstdev(values) / statistics.mean(values)


def _moved(before: Placement, after: Placement) -> tuple[float, float]:
    """(fraction of keys whose replica set changes, fraction of (key, replica) assignments
    that move), both over the same 100k keys."""
    per_shard = _keys_per_shard()
    a, b = before.as_dict(), after.as_dict()
    rf = len(before.groups[0].voters)
    changed = sum(per_shard.get(s, 0) for s in a if set(a[s].voters) != set(b[s].voters))
    moved = sum(per_shard.get(s, 0) * len(set(a[s].voters) - set(b[s].voters)) for s in a)
    return changed / KEYS, moved / (KEYS * rf)


# --- key -> shard -------------------------------------------------------------------------


def test_shard_of_is_pinned_across_processes_and_versions() -> None:
    # blake2b-64, never hash(): these values must never change, or keys would change shards.
    s = ShardedStrategy(16)
    assert [s.shard_of(k) for k in ("a", "user0000001", "\u00e9t\u00e9", "")] == [
        s.shard_of(k) for k in ("a", "user0000001", "\u00e9t\u00e9", "")
    ]
    assert (s.shard_of("a"), s.shard_of("user0000001"), s.shard_of("\u00e9t\u00e9")) == PINNED


PINNED = ("s0012", "s0005", "s0005")


def test_keys_spread_evenly_over_shards() -> None:
    counts = list(_keys_per_shard().values())
    assert len(counts) == SHARDS
    mean = KEYS / SHARDS
    assert statistics.pstdev(counts) / mean < 0.15  # binomial: sqrt(1/97.7) = 10%


def test_a_key_with_a_lone_surrogate_still_routes() -> None:
    assert ShardedStrategy(8).shard_of("\ud800") in ShardedStrategy(8).shards()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(PlacementError):
        ShardedStrategy(0)
    with pytest.raises(PlacementError):
        ShardedStrategy(limits.SHARDS_MAX + 1)
    with pytest.raises(PlacementError):
        ShardedStrategy(4, virtual_nodes=0)
    with pytest.raises(PlacementError):
        make_strategy("round-robin")
    with pytest.raises(PlacementError):
        ShardedStrategy(4).place({}, 3)


# --- placement ------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    names=st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=1, max_size=9, unique=True),
    rf=st.integers(1, 5),
    data=st.data(),
)
def test_placement_is_a_pure_function_of_nodes_and_config(names: list[str], rf: int, data: st.DataObject) -> None:
    regions = {n: f"r{i % 3}" for i, n in enumerate(names)}
    shuffled = data.draw(st.permutations(names))
    one = ShardedStrategy(32, 64).place(regions, rf)
    two = ShardedStrategy(32, 64).place({n: regions[n] for n in shuffled}, rf)
    assert one == two
    for g in one.groups:
        assert len(g.voters) == len(set(g.voters)) == min(rf, len(names))
        # replicas spread over distinct regions first
        assert len({regions[n] for n in g.voters}) == min(len(g.voters), len(set(regions.values())))


def test_placement_is_pinned() -> None:
    nodes = {"n1": "us-east", "n2": "us-east", "n3": "us-west", "n4": "us-west", "n5": "ap"}
    groups = ShardedStrategy(4).place(nodes, 3).groups
    assert [g.voters for g in groups] == PINNED_GROUPS


PINNED_GROUPS = [("n1", "n3", "n5"), ("n4", "n1", "n5"), ("n5", "n3", "n1"), ("n4", "n2", "n5")]


@pytest.mark.parametrize("rf", [1, 3])
def test_keys_per_node_within_ten_percent(rf: int) -> None:
    """3..12 nodes, 100k keys, 1,024 shards, default virtual nodes: stddev/mean <= 10%."""
    figures = {}
    for n in range(3, 13):
        placement = _sharded().place(_nodes([f"n{i}" for i in range(1, n + 1)]), rf)
        figures[n] = round(_balance(placement), 3)
    assert max(figures.values()) <= 0.10, figures


def test_node_added_moves_about_one_share_of_keys_rf1() -> None:
    """rf=1: the fraction of keys whose replica set changes on N -> N+1 is within
    [0.8, 1.2] x 1/(N+1), for N = 3..12."""
    ratios = {}
    for n in range(3, 13):
        names = [f"n{i}" for i in range(1, n + 1)]
        before = _sharded().place(_nodes(names), 1)
        after = _sharded().place(_nodes(names + [f"n{n + 1}"]), 1)
        changed, moved = _moved(before, after)
        assert changed == moved  # one replica: a changed set is a moved replica
        ratios[n] = round(changed * (n + 1), 3)
    assert all(0.8 <= r <= 1.2 for r in ratios.values()), ratios


def test_node_added_moves_about_one_share_of_assignments_rf3() -> None:
    """rf=3: a new node joins about 3/(N+1) of the replica sets, so "keys whose replica set
    changes" is about 3x the bound by construction; the fraction of (key, replica) assignments
    that move is within [0.8, 1.2] x 1/(N+1), for N = 3..12."""
    ratios, changed_ratios = {}, {}
    for n in range(3, 13):
        names = [f"n{i}" for i in range(1, n + 1)]
        before = _sharded().place(_nodes(names), 3)
        after = _sharded().place(_nodes(names + [f"n{n + 1}"]), 3)
        changed, moved = _moved(before, after)
        ratios[n] = round(moved * (n + 1), 3)
        changed_ratios[n] = round(changed * (n + 1), 3)
    assert all(0.8 <= r <= 1.2 for r in ratios.values()), ratios
    assert all(2.4 <= r <= 3.6 for r in changed_ratios.values()), changed_ratios


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(st.from_regex(r"[a-z]{1,3}[0-9]{1,3}", fullmatch=True), min_size=4, max_size=13, unique=True),
)
def test_any_node_names_rf3_balance_and_moves(names: list[str]) -> None:
    """Whatever the node ids: balance <= 10% and moved assignments in [0.8, 1.2] x 1/(N+1)."""
    *old, new = names
    before = _sharded().place(_nodes(old), 3)
    after = _sharded().place(_nodes(names), 3)
    assert _balance(before) <= 0.10
    _, moved = _moved(before, after)
    assert 0.8 <= moved * len(names) <= 1.2, moved * len(names)


def test_node_removed_moves_only_its_replicas_share() -> None:
    names = [f"n{i}" for i in range(1, 9)]
    before = _sharded().place(_nodes(names), 3)
    after = _sharded().place(_nodes(names[:-1]), 3)
    _, moved = _moved(before, after)
    assert 0.8 <= moved * 8 <= 1.2
    assert all("n8" not in g.voters for g in after.groups)


# --- centralized and hierarchical -----------------------------------------------------------


def test_centralized_is_one_shard_on_every_node() -> None:
    s = CentralizedStrategy()
    assert s.shard_of("anything") == "default" and s.shards() == ("default",)
    p = s.place({"n2": "a", "n1": "b", "n3": "a"}, 1)
    assert p.groups == (GroupSpec("default", ("n1", "n2", "n3")),)
    assert CentralizedStrategy(["n3"]).place({"n1": "a", "n3": "a"}, 3).groups[0].voters == ("n3",)
    with pytest.raises(PlacementError):
        CentralizedStrategy(["n9"]).place({"n1": "a"}, 1)


THREE_REGIONS = {"n1": "us-east", "n2": "us-east", "n3": "us-west", "n4": "us-west", "n5": "ap"}


def test_hierarchical_routes_region_first_and_keeps_voters_home() -> None:
    h = HierarchicalStrategy(["us-east", "us-west", "ap"], 4, rules={"eu:": "us-east", "eu:ap:": "ap"})
    assert h.route_region("eu:x") == "us-east"
    assert h.route_region("eu:ap:x") == "ap"  # the longest rule wins
    assert region_of_shard(h.shard_of("eu:x")) == "us-east"
    p = h.place(THREE_REGIONS, 3)
    assert len(p.groups) == 12
    for g in p.groups:
        assert g.region == region_of_shard(g.id)
        assert all(THREE_REGIONS[n] == g.region for n in g.voters)
        assert len(g.voters) == min(3, sum(1 for r in THREE_REGIONS.values() if r == g.region))
    # unpinned keys spread over every region
    homes = collections.Counter(h.route_region(f"k{i}") for i in range(3000))
    assert set(homes) == {"us-east", "us-west", "ap"} and min(homes.values()) > 800


def test_hierarchical_region_added_moves_about_one_share_of_unpinned_keys() -> None:
    keys = [f"k{i}" for i in range(20_000)]
    three = HierarchicalStrategy(["a", "b", "c"], 2)
    four = HierarchicalStrategy(["a", "b", "c", "d"], 2)
    moved = [k for k in keys if three.route_region(k) != four.route_region(k)]
    assert all(four.route_region(k) == "d" for k in moved)  # only to the new region
    assert 0.8 <= len(moved) / len(keys) * 4 <= 1.2


def test_hierarchical_refuses_a_region_without_nodes_and_bad_rules() -> None:
    with pytest.raises(PlacementError):
        HierarchicalStrategy(["a", "b"], 2).place({"n1": "a"}, 1)
    with pytest.raises(PlacementError):
        HierarchicalStrategy(["a"], 2, rules={"x": "nowhere"})
    with pytest.raises(PlacementError):
        HierarchicalStrategy([], 2)


def test_hierarchical_scan_inside_a_rule_asks_one_region() -> None:
    h = HierarchicalStrategy(["a", "b"], 3, rules={"eu:": "b", "eu:x": "a"})
    assert h.scan_shards("eu:a", "eu:b") == h.shards_of_region("b")
    assert h.scan_shards("eu:", "eu;") == h.shards()  # holds eu:x..., which lives in a
    assert h.scan_shards("a", "z") == h.shards()
    assert h.scan_shards("eu:a", None) == h.shards()


# --- scans across shards ----------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    keys=st.sets(st.text(min_size=1, max_size=4), max_size=60),
    start=st.text(max_size=2),
    limit=st.integers(1, 20),
)
def test_scan_merge_equals_one_sorted_scan(keys: set[str], start: str, limit: int) -> None:
    s = ShardedStrategy(5)
    per_shard: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for k in keys:
        per_shard[s.shard_of(k)].append((k, len(k)))
    runs = [sorted(kv for kv in per_shard[sh] if kv[0] >= start)[:limit] for sh in s.scan_shards(start, None)]
    expected = sorted((k, len(k)) for k in keys if k >= start)[:limit]
    assert merge_scan(runs, limit) == expected


def test_scan_merge_refuses_an_unsorted_run() -> None:
    with pytest.raises(ValueError):
        merge_scan([[("b", 1), ("a", 2)]], 5)


# --- rebalance plans ------------------------------------------------------------------------

_node = st.sampled_from([f"n{i}" for i in range(1, 9)])


@st.composite
def _group(draw: st.DrawFn, shard: str) -> GroupSpec:
    voters = draw(st.lists(_node, min_size=1, max_size=5, unique=True))
    learners = draw(st.lists(_node.filter(lambda n: n not in voters), max_size=2, unique=True))
    return GroupSpec(shard, tuple(voters), tuple(learners))


@st.composite
def _placements(draw: st.DrawFn) -> tuple[Placement, Placement]:
    shards = [f"s{i:04d}" for i in range(draw(st.integers(1, 4)))]
    old = Placement(tuple(draw(_group(s)) for s in shards))
    new = Placement(tuple(draw(_group(s)) for s in shards))
    return old, new


@settings(max_examples=200, deadline=None)
@given(_placements())
def test_plan_keeps_every_shard_at_its_replication_factor(pair: tuple[Placement, Placement]) -> None:
    old, new = pair
    moves = plan_moves(old, new)
    check_plan(old, new, moves)  # raises on a broken promise


def test_plan_of_a_node_addition_is_add_promote_remove() -> None:
    names = [f"n{i}" for i in range(1, 6)]
    before = ShardedStrategy(16).place(_nodes(names), 3)
    after = ShardedStrategy(16).place(_nodes(names + ["n6"]), 3)
    moves = plan_moves(before, after)
    assert moves and all(m.add is not None and m.promote == m.add and m.remove for m in moves)
    assert sum(1 for m in moves if m.add == "n6") >= len(moves) // 2
    check_plan(before, after, moves)
    assert plan_moves(before, before) == []


def test_check_plan_catches_a_source_removed_before_the_learner_is_promoted() -> None:
    old = Placement((GroupSpec("default", ("n1", "n2", "n3")),))
    new = Placement((GroupSpec("default", ("n1", "n2", "n4")),))
    with pytest.raises(PlacementError, match="below 3"):
        check_plan(old, new, [Move("default", 0, remove="n3"), Move("default", 1, add="n4", promote="n4")])
    with pytest.raises(PlacementError, match="out of order"):
        check_plan(old, new, [Move("default", 1, add="n4", promote="n4", remove="n3")])
    check_plan(old, new, [Move("default", 0, add="n4", promote="n4", remove="n3")])


def test_placement_rejects_unsorted_or_duplicate_shards() -> None:
    with pytest.raises(PlacementError):
        Placement((GroupSpec("s0001", ("n1",)), GroupSpec("default", ("n1",))))
    with pytest.raises(PlacementError):
        Placement((GroupSpec("default", ("n1",)), GroupSpec("default", ("n2",))))


@settings(max_examples=150, deadline=None)
@given(
    rules=st.dictionaries(st.text("ab:", min_size=1, max_size=3), st.sampled_from(["a", "b", "c"]), max_size=4),
    start=st.text("ab:", max_size=3),
    end=st.one_of(st.none(), st.text("ab:;", max_size=4)),
    keys=st.lists(st.text("ab:", max_size=5), max_size=30),
)
def test_hierarchical_scan_shards_hold_every_key_of_the_range(
    rules: dict[str, str], start: str, end: str | None, keys: list[str]
) -> None:
    h = HierarchicalStrategy(["a", "b", "c"], 2, rules=rules)
    wanted = set(h.scan_shards(start, end))
    for k in keys:
        if k >= start and (end is None or k < end):
            assert h.shard_of(k) in wanted
