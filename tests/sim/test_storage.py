"""The fsync model: unsynced writes are lost by a crash only when the storage models it."""

from __future__ import annotations

import pytest

from exapyte.errors import StorageError
from exapyte.protocol.raft.core import raft_hard_state
from exapyte.protocol.types import Entry, Snapshot, SnapshotMeta
from exapyte.sim.storage import SimStorage, clone_memory
from exapyte.storage.base import Put
from exapyte.storage.memory import MemoryStorage


def _entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, 0, f"e{i}".encode()) for i in range(lo, hi + 1)]


def test_unsynced_writes_are_lost_by_a_crash() -> None:
    s = SimStorage(lose_unsynced=True)
    s.persist(raft_hard_state(1, "n1", 0), _entries(1, 3), sync=True)
    s.apply([Put("a", b"1")], {"applied_index": b"3"}, sync=True)
    s.persist(raft_hard_state(2, "n2", 3), _entries(4, 5, term=2), sync=False)
    s.apply([Put("a", b"2")], sync=False)
    assert s.get("a") is not None and s.get("a").value == b"2"  # type: ignore[union-attr]
    assert s.last_index() == 5 and s.unsynced_count == 2
    assert s.crash() == 2
    assert s.get("a").value == b"1"  # type: ignore[union-attr]
    assert s.last_index() == 3
    assert s.load_persisted().hard_state == raft_hard_state(1, "n1", 0)
    assert s.counters["writes_lost"] == 2


def test_a_synced_write_makes_earlier_unsynced_ones_durable() -> None:
    s = SimStorage()
    s.persist(raft_hard_state(1, None, 0), _entries(1, 2), sync=False)
    s.apply([Put("k", b"v")], sync=True)  # one fsync covers the whole write-ahead log
    assert s.crash() == 0
    assert s.last_index() == 2 and s.get("k") is not None


def test_writeback_and_keep_unsynced_mode() -> None:
    s = SimStorage()
    s.persist(None, _entries(1, 2), sync=False)
    s.writeback()
    assert s.crash() == 0 and s.last_index() == 2
    keep = SimStorage(lose_unsynced=False)
    keep.persist(None, _entries(1, 2), sync=False)
    assert keep.crash() == 0 and keep.last_index() == 2


def test_compaction_and_snapshots_survive_crashes() -> None:
    s = SimStorage()
    s.persist(raft_hard_state(1, "n1", 4), _entries(1, 6), sync=True)
    s.import_state(MemoryStorage().export_state())
    s.compact(Snapshot(SnapshotMeta(4, 1), b""))
    s.persist(None, _entries(7, 8), sync=False)
    s.crash()
    assert (s.first_index(), s.last_index()) == (5, 6)
    assert s.log_entries(5, 7) == _entries(5, 6)


def test_invalid_writes_raise_and_queue_nothing() -> None:
    s = SimStorage()
    with pytest.raises(StorageError):
        s.persist(None, _entries(5, 6), sync=False)  # a gap
    assert s.unsynced_count == 0


def test_clone_is_independent() -> None:
    m = MemoryStorage()
    m.persist(raft_hard_state(3, "n2", 1), _entries(1, 2))
    m.apply([Put("x", b"1")], {"applied_index": b"2"})
    c = clone_memory(m)
    assert c.export_state() == m.export_state() and c.load_persisted() == m.load_persisted()
    m.apply([Put("x", b"2")])
    assert c.get("x").value == b"1"  # type: ignore[union-attr]
