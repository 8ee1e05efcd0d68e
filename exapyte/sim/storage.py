"""Simulated durable storage: the Storage contract over the memory backend, with fsync modelled.

Theory of operation
-------------------
:class:`SimStorage` keeps two :class:`~exapyte.storage.memory.MemoryStorage` images:

- **live**: what the running replica reads and writes (every call is validated and executed
  here first, so errors and results are exactly the memory backend's);
- **durable**: what would survive a power cut, i.e. the state as of the last fsync.

A write with ``sync=True`` (and ``compact``/``import_state``, which the real backends commit
synchronously) brings *durable* up to *live*: the queued unsynced writes are replayed on it in
order, then this one, exactly as a write-ahead log makes everything before an fsync durable. A
write with ``sync=False`` is only queued. :meth:`writeback` models the operating system flushing
dirty pages on its own (the simulator calls it periodically).

:meth:`crash` ends the process: with ``lose_unsynced`` the live image is thrown away and the
replica restarts from *durable* (unsynced writes lost); without it the queued writes are kept
(a process crash whose page cache survived). Counters say how many writes were synced, left
unsynced and lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from exapyte.protocol.types import Entry, HardState, PersistedState, Snapshot
from exapyte.storage.base import KVOp, OpResult, Record, Storage
from exapyte.storage.memory import MemoryStorage

Write = Callable[[MemoryStorage], object]


def clone_memory(src: MemoryStorage) -> MemoryStorage:
    """A deep, independent copy of a memory store (records, meta, hard state, snapshot, log)."""
    dst = MemoryStorage()
    dst.import_state(src.export_state())
    persisted = src.load_persisted()
    dst.persist(persisted.hard_state, persisted.entries, persisted.snapshot, sync=True)
    return dst


class SimStorage(Storage):
    """One simulated node's store; see the module docstring."""

    def __init__(self, *, lose_unsynced: bool = True) -> None:
        self.lose_unsynced = lose_unsynced
        self._live = MemoryStorage()
        self._durable = MemoryStorage()
        self._unsynced: list[Write] = []
        self.counters: dict[str, int] = {
            "writes_synced": 0,
            "writes_unsynced": 0,
            "writebacks": 0,
            "crashes": 0,
            "writes_lost": 0,
        }

    # --- the fsync model ----------------------------------------------------------------------

    def _write(self, write: Write, sync: bool) -> object:
        self._check_open()
        result = write(self._live)  # validates; raises before anything is queued
        self._unsynced.append(write)
        if sync:
            self.counters["writes_synced"] += 1
            self._sync()
        else:
            self.counters["writes_unsynced"] += 1
        return result

    def _sync(self) -> None:
        for write in self._unsynced:
            write(self._durable)
        self._unsynced.clear()

    @property
    def unsynced_count(self) -> int:
        return len(self._unsynced)

    def writeback(self) -> None:
        """The OS flushed dirty pages: every queued write becomes durable."""
        if self._unsynced:
            self.counters["writebacks"] += 1
            self._sync()

    def crash(self) -> int:
        """The process died; returns how many unsynced writes were lost."""
        self.counters["crashes"] += 1
        lost = len(self._unsynced)
        if self.lose_unsynced and lost:
            self._unsynced.clear()
            self._live = clone_memory(self._durable)
            self.counters["writes_lost"] += lost
            return lost
        self._sync()
        return 0

    # --- user key space -----------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        self._check_open()
        return self._live.get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        self._check_open()
        return self._live.get_many(keys)

    def scan(
        self, start: str = "", end: str | None = None, limit: int = 1000
    ) -> list[tuple[str, Record]]:
        self._check_open()
        return self._live.scan(start, end, limit)

    def apply(
        self,
        ops: Sequence[KVOp],
        meta: Mapping[str, bytes | None] | None = None,
        *,
        sync: bool = True,
    ) -> list[OpResult]:
        frozen_ops = tuple(ops)
        frozen_meta = dict(meta) if meta is not None else None
        result = self._write(lambda s: s.apply(frozen_ops, frozen_meta), sync)
        return result  # type: ignore[return-value]

    def count(self) -> int:
        self._check_open()
        return self._live.count()

    def meta_get(self, name: str) -> bytes | None:
        self._check_open()
        return self._live.meta_get(name)

    def export_state(self) -> bytes:
        self._check_open()
        return self._live.export_state()

    def import_state(self, data: bytes) -> None:
        self._write(lambda s: s.import_state(data), True)

    # --- consensus metadata -------------------------------------------------------------------

    def load_persisted(self) -> PersistedState:
        self._check_open()
        return self._live.load_persisted()

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        *,
        sync: bool = True,
    ) -> None:
        frozen = tuple(entries)
        self._write(lambda s: s.persist(hard_state, frozen, snapshot), sync)

    def compact(self, snapshot: Snapshot) -> None:
        self._write(lambda s: s.compact(snapshot), True)

    def log_entries(self, lo: int, hi: int) -> list[Entry]:
        self._check_open()
        return self._live.log_entries(lo, hi)

    def first_index(self) -> int:
        self._check_open()
        return self._live.first_index()

    def last_index(self) -> int:
        self._check_open()
        return self._live.last_index()

    def close(self) -> None:
        if self._closed:
            return
        self._sync()
        self._closed = True


__all__ = ["SimStorage", "clone_memory"]
