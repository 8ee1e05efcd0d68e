"""The tiered backend: a bounded in-memory hot tier over a SQLite cold tier.

Theory of operation
-------------------
The design is **write-through with an exclusive memory budget**:

- The cold tier is a :class:`~exapyte.storage.sqlite.SqliteStorage`. Every batch is written to
  it in one transaction and one fsync, exactly as the sqlite backend does, *before* the hot tier
  changes. So the SQLite file always holds every record, an acknowledged ``sync=True`` write is
  durable, and evicting a record from memory can never lose it: there is no dirty data in memory
  and no write-back to get wrong.
- The hot tier holds at most ``hot_keys`` records in memory, chosen by an ``lru`` (least
  recently used) or ``lfu`` (least frequently used, ties broken by recency) policy. It serves
  ``get`` without touching SQLite, and gives ``apply`` the previous record of a hot key without
  a ``SELECT``.
- **Promotion** moves a record that was resident only on disk into memory: a ``get`` that misses
  and finds the key in SQLite, or a batch that reads or writes such a key. A key a batch creates
  enters the hot tier directly (it was never cold). **Demotion** evicts the policy's victim when
  the hot tier is over ``hot_keys``: the record's only copy is then the one on disk. Memory stays
  bounded; ``hot_count + cold_count == count()`` at all times.
- The hot tier changes only after the SQLite transaction committed, so a failed batch leaves
  both tiers as they were.
- Range scans read the cold tier (it is complete and already sorted) and do not promote: a scan
  over many keys would otherwise flush the hot set.
- ``import_state`` replaces the cold tier and empties the hot tier; the store starts cold after
  a restart. Consensus metadata (hard state, log, snapshot) goes straight to the cold tier.

:meth:`TieredStorage.stats` reports ``hot_count``, ``cold_count``, ``promotions``,
``demotions``, ``hits`` and ``misses`` (lookups of a key served by memory or by SQLite).
Single owner thread, like the sqlite backend.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import msgspec

from exapyte import limits
from exapyte.errors import StorageError
from exapyte.protocol.types import Entry, HardState, PersistedState, Snapshot
from exapyte.storage.base import (
    KVOp,
    OpResult,
    Record,
    Storage,
    check_key,
    check_meta,
    check_ops,
    execute_ops,
)
from exapyte.storage.sqlite import SqliteStorage

POLICIES = ("lru", "lfu")


def check_tier_options(
    hot_keys: int = limits.TIERED_HOT_KEYS_DEFAULT, policy: str = "lru"
) -> None:
    """Raise StorageError unless ``hot_keys`` is an int >= 1 and ``policy`` a known policy."""
    if type(hot_keys) is not int or hot_keys < 1:
        raise StorageError(f"storage option hot_keys must be an int >= 1, got {hot_keys!r}")
    if policy not in POLICIES:
        raise StorageError(
            f"storage option policy must be one of {', '.join(POLICIES)}, got {policy!r}"
        )


class TierStats(msgspec.Struct, frozen=True):
    """Counters of a tiered store since it was opened."""

    hot_count: int  # records in memory
    cold_count: int  # records resident only in SQLite
    promotions: int  # records moved from SQLite into memory
    demotions: int  # records evicted from memory (their copy in SQLite remains)
    hits: int  # key lookups served by the hot tier
    misses: int  # key lookups that had to read SQLite
    hot_keys: int  # the hot tier's capacity
    policy: str


class LruTier:
    """Records in recency order; the victim is the least recently used."""

    def __init__(self) -> None:
        self._records: OrderedDict[str, Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is not None:
            self._records.move_to_end(key)
        return record

    def put(self, key: str, record: Record) -> None:
        self._records[key] = record
        self._records.move_to_end(key)

    def discard(self, key: str) -> None:
        self._records.pop(key, None)

    def evict(self) -> str:
        key, _ = self._records.popitem(last=False)
        return key

    def clear(self) -> None:
        self._records.clear()


class LfuTier:
    """Records with access counts; the victim has the lowest count, the oldest among equals.

    Buckets map a count to its keys in insertion order, so every operation is O(1) except
    finding the next non-empty bucket after one empties during eviction.
    """

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._freq: dict[str, int] = {}
        self._buckets: dict[int, dict[str, None]] = {}
        self._min_freq = 0

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def _unlink(self, key: str) -> int:
        freq = self._freq.pop(key)
        bucket = self._buckets[freq]
        del bucket[key]
        if not bucket:
            del self._buckets[freq]
        return freq

    def _link(self, key: str, freq: int) -> None:
        self._freq[key] = freq
        self._buckets.setdefault(freq, {})[key] = None
        if freq < self._min_freq or self._min_freq not in self._buckets:
            self._min_freq = freq

    def get(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is not None:
            self._link(key, self._unlink(key) + 1)
        return record

    def put(self, key: str, record: Record) -> None:
        freq = self._unlink(key) + 1 if key in self._records else 1
        self._records[key] = record
        self._link(key, freq)

    def discard(self, key: str) -> None:
        if self._records.pop(key, None) is not None:
            self._unlink(key)

    def evict(self) -> str:
        if self._min_freq not in self._buckets:
            self._min_freq = min(self._buckets)
        key = next(iter(self._buckets[self._min_freq]))
        self._unlink(key)
        del self._records[key]
        return key

    def clear(self) -> None:
        self._records.clear()
        self._freq.clear()
        self._buckets.clear()
        self._min_freq = 0


class TieredStorage(Storage):
    """Hot records in memory over a complete, durable SQLite copy; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hot_keys: int = limits.TIERED_HOT_KEYS_DEFAULT,
        policy: str = "lru",
    ) -> None:
        check_tier_options(hot_keys=hot_keys, policy=policy)
        self.hot_keys = hot_keys
        self.policy = policy
        self._hot: LruTier | LfuTier = LruTier() if policy == "lru" else LfuTier()
        self._cold = SqliteStorage(path)
        self.path = self._cold.path
        self._promotions = 0
        self._demotions = 0
        self._hits = 0
        self._misses = 0

    def stats(self) -> TierStats:
        self._check_open()
        hot_count = len(self._hot)
        return TierStats(
            hot_count=hot_count,
            cold_count=self._cold.count() - hot_count,
            promotions=self._promotions,
            demotions=self._demotions,
            hits=self._hits,
            misses=self._misses,
            hot_keys=self.hot_keys,
            policy=self.policy,
        )

    def _demote_overflow(self) -> None:
        hot = self._hot
        while len(hot) > self.hot_keys:
            hot.evict()
            self._demotions += 1

    # --- user key space ------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        self._check_open()
        check_key(key)
        record = self._hot.get(key)
        if record is not None:
            self._hits += 1
            return record
        self._misses += 1
        record = self._cold.get(key)
        if record is not None:
            self._hot.put(key, record)
            self._promotions += 1
            self._demote_overflow()
        return record

    def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        self._check_open()
        found: dict[str, Record] = {}
        missing: list[str] = []
        for key in keys:
            check_key(key)
            record = self._hot.get(key)
            if record is None:
                missing.append(key)
            else:
                found[key] = record
        self._hits += len(found)
        self._misses += len(missing)
        if missing:
            stored = self._cold.get_many(missing)
            for key, record in stored.items():
                found[key] = record
                self._hot.put(key, record)
            self._promotions += len(stored)
            self._demote_overflow()
        return found

    def scan(
        self, start: str = "", end: str | None = None, limit: int = 1000
    ) -> list[tuple[str, Record]]:
        self._check_open()
        return self._cold.scan(start, end, limit)

    def apply(
        self,
        ops: Sequence[KVOp],
        meta: Mapping[str, bytes | None] | None = None,
        *,
        sync: bool = True,
    ) -> list[OpResult]:
        self._check_open()
        check_ops(ops)
        check_meta(meta)
        if not ops and not meta:
            return []
        cold = self._cold
        hot = self._hot
        before: dict[str, Record | None] = {}
        from_cold: set[str] = set()
        hits = 0
        with cold.write_transaction(sync) as conn:
            missing = []
            for op in ops:
                key = op.key
                if key not in before:
                    record = hot.get(key)
                    before[key] = record
                    if record is None:
                        missing.append(key)
                    else:
                        hits += 1
            if missing:
                stored = cold.fetch_records(conn, missing)
                for key in missing:
                    record = before[key] = stored.get(key)
                    if record is not None:
                        from_cold.add(key)
            results, final = execute_ops(ops, before.__getitem__)
            delta = cold.write_records(conn, final, before, meta)
        # Committed (a failed transaction was rolled back and raised StorageError): now the
        # memory tier may follow.
        cold.note_count(delta)
        self._hits += hits
        self._misses += len(missing)
        for key, record in final.items():
            if record is None:
                hot.discard(key)
            else:
                hot.put(key, record)
        for key in from_cold:
            if key not in final:  # only read by the batch (a failed cas): promote as a read
                record = before[key]
                assert record is not None
                hot.put(key, record)
            elif final[key] is None:
                continue  # deleted by the batch: nothing left to promote
            self._promotions += 1
        self._demote_overflow()
        return results

    def count(self) -> int:
        self._check_open()
        return self._cold.count()

    # --- state-machine metadata ----------------------------------------------------------------

    def meta_get(self, name: str) -> bytes | None:
        self._check_open()
        return self._cold.meta_get(name)

    def export_state(self) -> bytes:
        self._check_open()
        return self._cold.export_state()

    def import_state(self, data: bytes) -> None:
        self._check_open()
        self._cold.import_state(data)
        self._hot.clear()

    # --- consensus metadata (straight to the cold tier) ----------------------------------------

    def load_persisted(self) -> PersistedState:
        self._check_open()
        return self._cold.load_persisted()

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        *,
        sync: bool = True,
    ) -> None:
        self._check_open()
        self._cold.persist(hard_state, entries, snapshot, sync=sync)

    def compact(self, snapshot: Snapshot) -> None:
        self._check_open()
        self._cold.compact(snapshot)

    def log_entries(self, lo: int, hi: int) -> list[Entry]:
        self._check_open()
        return self._cold.log_entries(lo, hi)

    def first_index(self) -> int:
        self._check_open()
        return self._cold.first_index()

    def last_index(self) -> int:
        self._check_open()
        return self._cold.last_index()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._hot.clear()
        self._cold.close()
