"""The tiered backend: bounded hot tier, promotion, demotion, policies, nothing lost."""

from __future__ import annotations

import pytest

from exapyte import limits
from exapyte.storage import Cas, Delete, Put, Record, open_storage
from exapyte.storage.tiered import LfuTier, LruTier, TieredStorage


def record(n: int) -> Record:
    return Record(b"%d" % n, 1)


def test_lru_evicts_the_least_recently_used() -> None:
    tier = LruTier()
    for key in "abc":
        tier.put(key, record(0))
    assert tier.get("a") == record(0)  # a is now the most recent
    tier.put("b", record(1))  # so is b
    assert tier.evict() == "c"
    assert tier.evict() == "a"
    assert tier.evict() == "b"
    assert len(tier) == 0


def test_lfu_evicts_the_least_frequently_used_oldest_first() -> None:
    tier = LfuTier()
    for key in "abcd":
        tier.put(key, record(0))
    for _ in range(3):
        tier.get("a")
    tier.get("b")
    tier.get("c")
    tier.discard("d")
    assert "d" not in tier
    assert tier.evict() == "b"  # b and c were used twice; b reached that count first
    tier.put("e", record(0))
    assert tier.evict() == "e"  # a newcomer has the lowest count
    assert tier.evict() == "c"
    assert tier.evict() == "a"
    assert len(tier) == 0


def test_default_hot_tier_size_is_the_named_limit(tmp_path: object) -> None:
    with open_storage("tiered", f"{tmp_path}/t.db") as store:
        assert isinstance(store, TieredStorage)
        assert store.stats().hot_keys == limits.TIERED_HOT_KEYS_DEFAULT
        assert store.stats().policy == "lru"


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_far_more_keys_than_the_hot_tier_are_all_kept(policy: str, tmp_path: object) -> None:
    path = f"{tmp_path}/t.db"
    total, hot_keys = 5_000, 100
    with open_storage("tiered", path, hot_keys=hot_keys, policy=policy) as store:
        assert isinstance(store, TieredStorage)
        for start in range(0, total, 250):
            store.apply([Put(f"key{i:05d}", b"v%d" % i) for i in range(start, start + 250)])
        stats = store.stats()
        assert stats.hot_count == hot_keys
        assert stats.cold_count == total - hot_keys
        assert stats.demotions == total - hot_keys
        assert stats.promotions == 0  # every key was new: none came from the cold tier
        assert store.count() == total
    with open_storage("tiered", path, hot_keys=hot_keys, policy=policy) as store:
        assert isinstance(store, TieredStorage)
        assert store.stats().hot_count == 0  # a restart starts cold
        for i in range(total):
            assert store.get(f"key{i:05d}") == Record(b"v%d" % i, 1)
        stats = store.stats()
        assert stats.misses == total
        assert stats.promotions == total
        assert stats.demotions == total - hot_keys
        assert stats.hot_count == hot_keys
        assert stats.hot_count + stats.cold_count == store.count() == total
        assert len(store.scan(limit=limits.SCAN_LIMIT_MAX)) == total


def test_reads_hit_the_hot_tier_and_misses_promote(tmp_path: object) -> None:
    with open_storage("tiered", f"{tmp_path}/t.db", hot_keys=2) as store:
        assert isinstance(store, TieredStorage)
        store.apply([Put("a", b"1"), Put("b", b"2"), Put("c", b"3")])  # a is demoted
        stats = store.stats()
        # the batch looked up three keys SQLite did not have yet
        assert (stats.hits, stats.misses, stats.demotions) == (0, 3, 1)
        assert store.get("c") == Record(b"3", 1)
        assert (store.stats().hits, store.stats().misses) == (1, 3)
        assert store.get("a") == Record(b"1", 1)  # miss: promoted, b demoted
        stats = store.stats()
        assert (stats.hits, stats.misses, stats.promotions, stats.demotions) == (1, 4, 1, 2)
        assert store.get("missing") is None
        assert store.stats().misses == 5
        assert store.stats().promotions == 1
        store.put("c", b"3b")  # hot: no SELECT needed for the previous record
        assert (store.stats().hits, store.stats().misses) == (2, 5)


def test_writes_to_cold_keys_promote_and_deletes_leave_the_hot_tier(tmp_path: object) -> None:
    with open_storage("tiered", f"{tmp_path}/t.db", hot_keys=1) as store:
        assert isinstance(store, TieredStorage)
        store.put("a", b"1")
        store.put("b", b"2")  # a demoted
        result = store.apply([Cas("a", b"1", b"1b")])[0]  # a read from cold, promoted
        assert result.ok and result.previous == Record(b"1", 1)
        stats = store.stats()
        assert (stats.promotions, stats.demotions, stats.hot_count) == (1, 2, 1)
        store.delete("a")
        stats = store.stats()
        assert (stats.hot_count, stats.cold_count) == (0, 1)
        store.apply([Cas("b", b"wrong", b"x")])  # failed cas: b is read, and promoted
        assert store.stats().promotions == 2
        assert store.stats().hot_count == 1
        store.apply([Delete("b")])
        assert store.count() == 0
        assert store.stats().hot_count == 0


def test_lfu_keeps_the_frequently_read_keys(tmp_path: object) -> None:
    with open_storage("tiered", f"{tmp_path}/t.db", hot_keys=3, policy="lfu") as store:
        assert isinstance(store, TieredStorage)
        store.apply([Put(k, b"v") for k in ("f1", "f2")])
        for _ in range(5):
            store.get("f1")
            store.get("f2")
        for i in range(20):
            store.put(f"once{i}", b"v")
        hits = store.stats().hits
        store.get("f1")
        store.get("f2")
        assert store.stats().hits == hits + 2


def test_import_replaces_both_tiers(tmp_path: object) -> None:
    with open_storage("tiered", f"{tmp_path}/t.db", hot_keys=2) as store:
        assert isinstance(store, TieredStorage)
        source = open_storage("memory", None)
        source.apply([Put("x", b"1")])
        store.apply([Put("a", b"1"), Put("b", b"2")])
        store.import_state(source.export_state())
        source.close()
        assert store.get("a") is None
        assert store.get("x") == Record(b"1", 1)
        stats = store.stats()
        assert stats.hot_count + stats.cold_count == store.count() == 1
