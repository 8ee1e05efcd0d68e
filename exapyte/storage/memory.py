"""The in-memory backend: dicts and lists, nothing on disk.

It is **not durable**: everything is lost when the process exits, and ``sync`` is ignored. It
exists for unit tests, the simulator and as the speed-of-light line in the storage benchmark.
Its semantics are exactly the contract's (the contract suite runs against it), including
validation, atomicity (a batch is validated and computed before the first write) and log rules.

Range scans use :class:`SortedKeys`, a sorted list of keys maintained lazily so that a write
costs O(1) and the sorting work is paid by the next scan.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence

from exapyte.protocol.types import Entry, HardState, PersistedState, Snapshot
from exapyte.storage.base import (
    KVOp,
    OpResult,
    Record,
    Storage,
    check_compact,
    check_hard_state,
    check_key,
    check_log_range,
    check_meta,
    check_meta_name,
    check_ops,
    check_scan,
    decode_state,
    encode_state,
    execute_ops,
    plan_persist,
)


class SortedKeys:
    """The keys of a dict in code point order, kept up to date lazily.

    ``added`` collects new keys; removed keys stay in the sorted list as stale entries and are
    skipped by readers (they check the owning dict). :meth:`ordered` folds the pending changes
    in: a few new keys are inserted with bisect, many (or many stale ones) trigger one sort.
    """

    def __init__(self, live: Mapping[str, object]) -> None:
        self._live = live
        self._sorted: list[str] = sorted(live)
        self._added: set[str] = set()
        self._stale = 0

    def on_add(self, key: str) -> None:
        self._added.add(key)

    def on_remove(self, key: str) -> None:
        if key in self._added:
            self._added.discard(key)
        else:
            self._stale += 1

    def reset(self) -> None:
        self._sorted = sorted(self._live)
        self._added.clear()
        self._stale = 0

    def ordered(self) -> list[str]:
        """The sorted list; it may hold keys no longer in the dict (callers skip them)."""
        if self._added or self._stale:
            size = len(self._sorted)
            if self._stale * 4 > size or len(self._added) * 16 > size:
                self.reset()
            else:
                keys = self._sorted
                for key in self._added:
                    position = bisect.bisect_left(keys, key)
                    if position < len(keys) and keys[position] == key:
                        self._stale -= 1  # a stale key came back to life
                    else:
                        keys.insert(position, key)
                self._added.clear()
        return self._sorted

    def range(self, start: str, end: str | None) -> Iterator[str]:
        keys = self.ordered()
        live = self._live
        for position in range(bisect.bisect_left(keys, start), len(keys)):
            key = keys[position]
            if end is not None and key >= end:
                return
            if key in live:
                yield key


class MemoryStorage(Storage):
    """Everything in Python dicts and lists; see the module docstring."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._index = SortedKeys(self._records)
        self._meta: dict[str, bytes] = {}
        self._hard_state = HardState()
        self._snapshot: Snapshot | None = None
        self._log: list[Entry] = []  # entry i is at position i - snapshot_index - 1

    # --- user key space ------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        self._check_open()
        return self._records.get(check_key(key))

    def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        self._check_open()
        records = self._records
        return {key: records[key] for key in keys if check_key(key) in records}

    def scan(
        self, start: str = "", end: str | None = None, limit: int = 1000
    ) -> list[tuple[str, Record]]:
        self._check_open()
        check_scan(start, end, limit)
        out: list[tuple[str, Record]] = []
        if limit == 0:
            return out
        records = self._records
        for key in self._index.range(start, end):
            out.append((key, records[key]))
            if len(out) >= limit:
                break
        return out

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
        results, final = execute_ops(ops, self._records.get)
        records = self._records
        for key, record in final.items():
            if record is None:
                if records.pop(key, None) is not None:
                    self._index.on_remove(key)
            else:
                if key not in records:
                    self._index.on_add(key)
                records[key] = record
        if meta:
            for name, value in meta.items():
                if value is None:
                    self._meta.pop(name, None)
                else:
                    self._meta[name] = value
        return results

    def count(self) -> int:
        self._check_open()
        return len(self._records)

    # --- state-machine metadata ----------------------------------------------------------------

    def meta_get(self, name: str) -> bytes | None:
        self._check_open()
        return self._meta.get(check_meta_name(name))

    def export_state(self) -> bytes:
        self._check_open()
        records = self._records
        rows = [
            (key, records[key].value, records[key].version)
            for key in self._index.ordered()
            if key in records
        ]
        return encode_state(rows, sorted(self._meta.items()))

    def import_state(self, data: bytes) -> None:
        self._check_open()
        image = decode_state(data)
        self._records.clear()
        self._records.update((key, Record(value, version)) for key, value, version in image.records)
        self._index.reset()
        self._meta = dict(image.meta)

    # --- consensus metadata --------------------------------------------------------------------

    def _snapshot_index(self) -> int:
        return self._snapshot.meta.index if self._snapshot is not None else 0

    def _term_at(self, index: int) -> int | None:
        position = index - self._snapshot_index() - 1
        if 0 <= position < len(self._log):
            return self._log[position].term
        return None

    def load_persisted(self) -> PersistedState:
        self._check_open()
        return PersistedState(
            hard_state=self._hard_state, snapshot=self._snapshot, entries=tuple(self._log)
        )

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        *,
        sync: bool = True,
    ) -> None:
        self._check_open()
        check_hard_state(hard_state)
        plan = plan_persist(
            self._snapshot_index(), self.last_index(), self._term_at, entries, snapshot
        )
        log = self._log
        if snapshot is not None:
            if plan.drop_all:
                log = []
            else:
                log = log[plan.drop_through - self._snapshot_index() :]
            self._snapshot = snapshot
        if plan.truncate_from:
            del log[plan.truncate_from - plan.snapshot_index - 1 :]
        log.extend(plan.append)
        self._log = log
        if hard_state is not None:
            self._hard_state = hard_state

    def compact(self, snapshot: Snapshot) -> None:
        self._check_open()
        check_compact(snapshot, self._snapshot_index(), self.last_index(), self._term_at)
        del self._log[: snapshot.meta.index - self._snapshot_index()]
        self._snapshot = snapshot

    def log_entries(self, lo: int, hi: int) -> list[Entry]:
        self._check_open()
        check_log_range(lo, hi, self.first_index(), self.last_index())
        offset = self._snapshot_index() + 1
        return self._log[lo - offset : hi - offset]

    def first_index(self) -> int:
        self._check_open()
        return self._snapshot_index() + 1

    def last_index(self) -> int:
        self._check_open()
        return self._snapshot_index() + len(self._log)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._records = {}
        self._index = SortedKeys(self._records)
        self._meta = {}
        self._log = []


__all__ = ["MemoryStorage", "SortedKeys"]
