"""The storage contract, run against every backend (memory, sqlite, tiered)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from exapyte import limits
from exapyte.errors import StorageError
from exapyte.protocol.raft.core import raft_hard_state
from exapyte.protocol.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from exapyte.storage import (
    Cas,
    Delete,
    LogCompacted,
    LogUnavailable,
    OpResult,
    Put,
    Record,
    Storage,
    open_storage,
)

BACKENDS = ("memory", "sqlite", "tiered")
DURABLE_BACKENDS = ("sqlite", "tiered")

# --- get / put / delete / cas ----------------------------------------------------------------


def test_get_of_absent_key_is_none(store: Storage) -> None:
    assert store.get("missing") is None
    assert store.count() == 0


def test_put_creates_at_version_1_and_each_overwrite_adds_1(store: Storage) -> None:
    assert store.put("k", b"a") == OpResult(True, 1, None)
    assert store.put("k", b"b") == OpResult(True, 2, Record(b"a", 1))
    assert store.put("k", b"b") == OpResult(True, 3, Record(b"b", 2))
    assert store.get("k") == Record(b"b", 3)
    assert store.count() == 1


def test_delete_removes_the_record_and_recreate_starts_at_version_1(store: Storage) -> None:
    store.put("k", b"a")
    store.put("k", b"b")
    assert store.delete("k") == OpResult(True, 0, Record(b"b", 2))
    assert store.get("k") is None
    assert store.count() == 0
    assert store.put("k", b"c") == OpResult(True, 1, None)


def test_delete_of_absent_key_succeeds_with_version_0(store: Storage) -> None:
    assert store.delete("nothing") == OpResult(True, 0, None)
    assert store.count() == 0


def test_cas_expected_none_creates_an_absent_key(store: Storage) -> None:
    assert store.cas("k", None, b"v") == OpResult(True, 1, None)
    assert store.get("k") == Record(b"v", 1)


def test_cas_expected_none_fails_on_a_present_key(store: Storage) -> None:
    store.put("k", b"v")
    assert store.cas("k", None, b"w") == OpResult(False, 1, Record(b"v", 1))
    assert store.get("k") == Record(b"v", 1)


def test_cas_with_matching_value_overwrites_and_bumps_version(store: Storage) -> None:
    store.put("k", b"v")
    assert store.cas("k", b"v", b"w") == OpResult(True, 2, Record(b"v", 1))
    assert store.get("k") == Record(b"w", 2)


def test_cas_mismatch_reports_the_current_record_and_writes_nothing(store: Storage) -> None:
    store.put("k", b"v")
    store.put("k", b"w")
    assert store.cas("k", b"v", b"x") == OpResult(False, 2, Record(b"w", 2))
    assert store.get("k") == Record(b"w", 2)


def test_cas_on_absent_key_with_expected_value_fails_with_version_0(store: Storage) -> None:
    assert store.cas("k", b"v", b"w") == OpResult(False, 0, None)
    assert store.get("k") is None
    assert store.count() == 0


def test_cas_with_new_none_deletes_on_match(store: Storage) -> None:
    store.put("k", b"v")
    assert store.cas("k", b"v", None) == OpResult(True, 0, Record(b"v", 1))
    assert store.get("k") is None
    assert store.cas("k", None, None) == OpResult(True, 0, None)


def test_empty_value_is_a_value(store: Storage) -> None:
    store.put("k", b"")
    assert store.get("k") == Record(b"", 1)
    assert store.cas("k", b"", b"x").ok


# --- batches -----------------------------------------------------------------------------------


def test_later_ops_in_a_batch_see_earlier_ones(store: Storage) -> None:
    results = store.apply(
        [
            Put("a", b"1"),
            Cas("a", b"1", b"2"),
            Put("a", b"3"),
            Delete("a"),
            Cas("a", None, b"4"),
            Cas("b", b"x", b"y"),
            Put("b", b"x"),
            Cas("b", b"x", b"y"),
        ]
    )
    assert results == [
        OpResult(True, 1, None),
        OpResult(True, 2, Record(b"1", 1)),
        OpResult(True, 3, Record(b"2", 2)),
        OpResult(True, 0, Record(b"3", 3)),
        OpResult(True, 1, None),
        OpResult(False, 0, None),
        OpResult(True, 1, None),
        OpResult(True, 2, Record(b"x", 1)),
    ]
    assert store.get("a") == Record(b"4", 1)
    assert store.get("b") == Record(b"y", 2)
    assert store.count() == 2


def test_a_batch_deleting_a_key_it_created_leaves_nothing(store: Storage) -> None:
    store.apply([Put("a", b"1"), Delete("a")])
    assert store.get("a") is None
    assert store.count() == 0


def test_empty_batch_returns_no_results(store: Storage) -> None:
    assert store.apply([]) == []
    assert store.apply([], {}) == []


@pytest.mark.parametrize(
    "bad_op",
    [
        Put("", b"v"),
        Put("x" * (limits.KEY_BYTES_MAX + 1), b"v"),
        Put("é" * (limits.KEY_BYTES_MAX // 2 + 1), b"v"),  # short in chars, long in UTF-8
        Put("\ud800", b"v"),  # a lone surrogate has no UTF-8 encoding
        Put("k", "text"),  # type: ignore[arg-type]
        Put("k", b"v" * (limits.VALUE_BYTES_MAX + 1)),
        Put(7, b"v"),  # type: ignore[arg-type]
        Delete(""),
        Cas("k", "x", b"v"),  # type: ignore[arg-type]
        Cas("k", None, bytearray(b"v")),  # type: ignore[arg-type]
        ("put", "k", b"v"),
    ],
    ids=[
        "empty-key",
        "long-key",
        "long-utf8-key",
        "surrogate-key",
        "str-value",
        "long-value",
        "int-key",
        "delete-empty-key",
        "cas-str-expected",
        "cas-bytearray-new",
        "not-an-op",
    ],
)
def test_a_batch_with_an_invalid_op_applies_nothing(store: Storage, bad_op: object) -> None:
    store.put("keep", b"old")
    store.apply([], {"applied": b"1"})
    batch = [Put("new", b"v"), Put("keep", b"changed"), bad_op, Delete("keep")]
    with pytest.raises(StorageError, match="op 2 of the batch"):
        store.apply(batch, {"applied": b"2"})  # type: ignore[arg-type]
    assert store.get("new") is None
    assert store.get("keep") == Record(b"old", 1)
    assert store.meta_get("applied") == b"1"
    assert store.count() == 1


def test_a_batch_with_invalid_meta_applies_nothing(store: Storage) -> None:
    for bad_meta in ({"": b"x"}, {"name": "text"}, {7: b"x"}):
        with pytest.raises(StorageError, match="meta"):
            store.apply([Put("k", b"v")], bad_meta)  # type: ignore[arg-type]
    assert store.get("k") is None


def test_a_batch_over_the_op_limit_is_refused(store: Storage) -> None:
    batch = [Put(f"k{i}", b"v") for i in range(limits.STORAGE_BATCH_OPS_MAX + 1)]
    with pytest.raises(StorageError, match="STORAGE_BATCH_OPS_MAX"):
        store.apply(batch)
    assert store.count() == 0


def test_a_batch_at_the_op_limit_is_applied(store: Storage) -> None:
    batch = [Put(f"k{i:05d}", b"v") for i in range(limits.STORAGE_BATCH_OPS_MAX)]
    assert all(result.ok for result in store.apply(batch))
    assert store.count() == limits.STORAGE_BATCH_OPS_MAX


def test_largest_key_and_value_are_accepted(store: Storage) -> None:
    key = "é" * (limits.KEY_BYTES_MAX // 2)
    value = b"v" * limits.VALUE_BYTES_MAX
    store.put(key, value)
    assert store.get(key) == Record(value, 1)


@pytest.mark.parametrize("bad_key", ["", "x" * (limits.KEY_BYTES_MAX + 1), b"bytes", None])
def test_bad_keys_are_refused_by_every_call(store: Storage, bad_key: object) -> None:
    with pytest.raises(StorageError, match="key"):
        store.get(bad_key)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="key"):
        store.put(bad_key, b"v")  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="key"):
        store.delete(bad_key)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="key"):
        store.cas(bad_key, None, b"v")  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="key"):
        store.get_many(["fine", bad_key])  # type: ignore[list-item]


def test_get_many_returns_the_present_keys_only(store: Storage) -> None:
    store.put("a", b"1")
    store.put("b", b"2")
    store.put("b", b"3")
    store.delete("a")
    store.put("c", b"")
    assert store.get_many([]) == {}
    assert store.get_many(["a", "b", "c", "zz", "b"]) == {"b": Record(b"3", 2), "c": Record(b"", 1)}


def test_get_many_beyond_one_query_chunk(store: Storage) -> None:
    keys = [f"k{i:05d}" for i in range(1_200)]
    store.apply([Put(k, k.encode()) for k in keys[::2]])
    found = store.get_many(keys)
    assert found == {k: Record(k.encode(), 1) for k in keys[::2]}


def test_sync_false_writes_are_applied_and_readable(store: Storage) -> None:
    store.put("a", b"1", sync=False)
    store.apply([Put("b", b"2")], {"m": b"x"}, sync=False)
    store.put("c", b"3")
    assert [key for key, _ in store.scan()] == ["a", "b", "c"]
    assert store.meta_get("m") == b"x"


# --- scans -------------------------------------------------------------------------------------

UNICODE_KEYS = ["a", "B", "b", "ba", "z", "~", "\x7f", "é", "ÿ", "Ā", "中", "\uffff", "😀", "𝄞"]


def test_scan_is_in_code_point_order_which_is_utf8_byte_order(store: Storage) -> None:
    store.apply([Put(key, key.encode()) for key in reversed(UNICODE_KEYS)])
    keys = [key for key, _ in store.scan()]
    assert keys == sorted(UNICODE_KEYS)
    assert keys == sorted(UNICODE_KEYS, key=lambda k: k.encode("utf-8"))
    assert all(record == Record(key.encode(), 1) for key, record in store.scan())


def test_scan_start_is_inclusive_and_end_exclusive(store: Storage) -> None:
    store.apply([Put(key, b"") for key in UNICODE_KEYS])
    ordered = sorted(UNICODE_KEYS)
    assert [k for k, _ in store.scan("b", "z")] == [k for k in ordered if "b" <= k < "z"]
    assert [k for k, _ in store.scan("é")] == [k for k in ordered if k >= "é"]
    assert [k for k, _ in store.scan("é", "中")] == ["é", "ÿ", "Ā"]
    assert [k for k, _ in store.scan("", "a")] == ["B"]
    assert [k for k, _ in store.scan("ba", "ba")] == []
    assert store.scan("z", "a") == []
    assert [k for k, _ in store.scan("bb", "c")] == []


def test_scan_limit(store: Storage) -> None:
    store.apply([Put(f"k{i:03d}", b"") for i in range(50)])
    assert [k for k, _ in store.scan(limit=3)] == ["k000", "k001", "k002"]
    assert [k for k, _ in store.scan("k010", limit=2)] == ["k010", "k011"]
    assert len(store.scan()) == 50
    assert store.scan(limit=0) == []
    with pytest.raises(StorageError, match="SCAN_LIMIT_MAX"):
        store.scan(limit=limits.SCAN_LIMIT_MAX + 1)
    with pytest.raises(StorageError, match="limit"):
        store.scan(limit=-1)


def test_scan_skips_deleted_keys_and_sees_new_ones(store: Storage) -> None:
    store.apply([Put(f"k{i}", b"") for i in range(6)])
    assert len(store.scan()) == 6
    store.apply([Delete("k1"), Delete("k3"), Put("k10", b"")])
    assert [k for k, _ in store.scan()] == ["k0", "k10", "k2", "k4", "k5"]
    store.put("k1", b"again")
    assert [k for k, _ in store.scan("k1", "k2")] == ["k1", "k10"]


# --- meta --------------------------------------------------------------------------------------


def test_meta_is_updated_in_the_batch_and_deleted_with_none(store: Storage) -> None:
    assert store.meta_get("applied") is None
    store.apply([Put("k", b"v")], {"applied": b"1", "sessions": b"s"})
    assert store.meta_get("applied") == b"1"
    store.apply([], {"applied": b"2", "sessions": None})
    assert store.meta_get("applied") == b"2"
    assert store.meta_get("sessions") is None


def test_meta_never_collides_with_user_keys(store: Storage) -> None:
    store.apply([Put("applied", b"user")], {"applied": b"meta"})
    assert store.get("applied") == Record(b"user", 1)
    assert store.meta_get("applied") == b"meta"
    store.delete("applied")
    assert store.meta_get("applied") == b"meta"
    assert store.count() == 0
    assert store.scan() == []


# --- export / import ---------------------------------------------------------------------------


def _fill(store: Storage) -> None:
    store.apply([Put("b", b"2"), Put("a", b"1"), Put("中", b"3")], {"applied": b"7", "s": b""})
    store.put("a", b"1b")
    store.delete("b")


def test_export_import_round_trip(backend: str, make_store: Callable[..., Storage]) -> None:
    source = make_store("memory")
    _fill(source)
    image = source.export_state()
    target = make_store(backend)
    target.apply([Put("stale", b"x")], {"old": b"x"})
    target.import_state(image)
    assert target.scan() == [("a", Record(b"1b", 2)), ("中", Record(b"3", 1))]
    assert target.get("stale") is None
    assert target.meta_get("old") is None
    assert target.meta_get("applied") == b"7"
    assert target.meta_get("s") == b""
    assert target.count() == 2
    assert target.export_state() == image


def test_export_is_the_same_bytes_on_every_backend(make_store: Callable[..., Storage]) -> None:
    images = set()
    for backend in BACKENDS:
        store = make_store(backend)
        _fill(store)
        images.add(store.export_state())
    assert len(images) == 1


def test_export_of_empty_store_imports_as_empty(store: Storage) -> None:
    image = store.export_state()
    _fill(store)
    store.import_state(image)
    assert store.count() == 0
    assert store.scan() == []
    assert store.meta_get("applied") is None


def test_a_bad_image_is_refused_and_changes_nothing(store: Storage) -> None:
    _fill(store)
    before = store.export_state()
    for bad in (b"not msgpack", b"\x93\x02\x90\x90", 42):
        with pytest.raises(StorageError, match="state image"):
            store.import_state(bad)  # type: ignore[arg-type]
    assert store.export_state() == before


# --- log, hard state, snapshots -----------------------------------------------------------------


def entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryKind.NORMAL, f"e{i}".encode()) for i in range(lo, hi)]


def snapshot(index: int, term: int, data: bytes = b"image") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(voters=("n1", "n2", "n3"))), data)


def test_empty_log(store: Storage) -> None:
    assert store.first_index() == 1
    assert store.last_index() == 0
    assert store.log_entries(1, 1) == []
    state = store.load_persisted()
    assert state.hard_state == HardState()
    assert state.snapshot is None
    assert state.entries == ()


def test_hard_state_round_trip_and_none_keeps_it(store: Storage) -> None:
    store.persist(raft_hard_state(3, "n2", 0), [])
    assert store.load_persisted().hard_state == raft_hard_state(3, "n2", 0)
    store.persist(None, entries(1, 3))
    assert store.load_persisted().hard_state == raft_hard_state(3, "n2", 0)
    store.persist(raft_hard_state(4, None, 2), [])
    assert store.load_persisted().hard_state == raft_hard_state(4, None, 2)


def test_append_and_read_entries(store: Storage) -> None:
    store.persist(raft_hard_state(1, "n1", 0), entries(1, 6))
    assert store.first_index() == 1
    assert store.last_index() == 5
    assert store.log_entries(1, 6) == entries(1, 6)
    assert store.log_entries(2, 4) == entries(2, 4)
    assert store.load_persisted().entries == tuple(entries(1, 6))
    store.persist(None, entries(6, 8))
    assert store.last_index() == 7
    assert store.log_entries(5, 8) == entries(5, 8)


def test_entry_kinds_and_data_round_trip(store: Storage) -> None:
    log = [
        Entry(1, 1, EntryKind.NOOP, b""),
        Entry(1, 2, EntryKind.CONF_CHANGE, b"\x00conf"),
        Entry(2, 3, EntryKind.NORMAL, bytes(range(256))),
    ]
    store.persist(None, log)
    assert store.log_entries(1, 4) == log
    assert [e.kind for e in store.load_persisted().entries] == [2, 1, 0]


def test_an_existing_index_replaces_it_and_deletes_every_later_entry(store: Storage) -> None:
    store.persist(None, entries(1, 6, term=1))
    store.persist(None, [Entry(2, 3, 0, b"new")])
    assert store.last_index() == 3
    assert store.log_entries(1, 4) == [*entries(1, 3), Entry(2, 3, 0, b"new")]
    with pytest.raises(LogUnavailable):
        store.log_entries(1, 5)
    store.persist(None, entries(4, 6, term=2))
    assert store.last_index() == 5


def test_a_gap_in_the_log_is_refused_with_nothing_persisted(store: Storage) -> None:
    store.persist(None, entries(1, 3))
    with pytest.raises(StorageError, match="gap"):
        store.persist(raft_hard_state(9, "n9", 0), entries(4, 5))
    with pytest.raises(StorageError, match="consecutive"):
        store.persist(raft_hard_state(9, "n9", 0), [Entry(1, 3), Entry(1, 5)])
    with pytest.raises(StorageError, match="Entry"):
        store.persist(None, [("not", "an", "entry")])  # type: ignore[list-item]
    with pytest.raises(StorageError, match="HardState"):
        store.persist({"term": 1}, [])  # type: ignore[arg-type]
    assert store.last_index() == 2
    assert store.load_persisted().hard_state == HardState()


def test_log_ranges_outside_the_log_raise(store: Storage) -> None:
    store.persist(None, entries(1, 4))
    with pytest.raises(LogUnavailable):
        store.log_entries(1, 5)
    with pytest.raises(StorageError):
        store.log_entries(3, 2)
    store.compact(snapshot(2, 1))
    with pytest.raises(LogCompacted):
        store.log_entries(2, 4)
    assert store.log_entries(3, 4) == entries(3, 4)
    assert store.log_entries(4, 4) == []


def test_compact_drops_entries_up_to_the_snapshot_and_keeps_later(store: Storage) -> None:
    store.persist(raft_hard_state(1, "n1", 5), entries(1, 6))
    store.compact(snapshot(3, 1))
    assert store.first_index() == 4
    assert store.last_index() == 5
    assert store.log_entries(4, 6) == entries(4, 6)
    state = store.load_persisted()
    assert state.snapshot == snapshot(3, 1)
    assert state.entries == tuple(entries(4, 6))
    assert state.hard_state == raft_hard_state(1, "n1", 5)
    store.compact(snapshot(5, 1, b"later"))
    assert store.first_index() == 6
    assert store.last_index() == 5
    assert store.load_persisted().entries == ()
    assert store.load_persisted().snapshot == snapshot(5, 1, b"later")
    store.persist(None, entries(6, 8))
    assert store.log_entries(6, 8) == entries(6, 8)


def test_compact_refuses_bad_snapshots(store: Storage) -> None:
    store.persist(None, entries(1, 6, term=2))
    with pytest.raises(StorageError, match="past the last"):
        store.compact(snapshot(6, 2))
    with pytest.raises(StorageError, match="term"):
        store.compact(snapshot(3, 1))
    store.compact(snapshot(3, 2))
    with pytest.raises(StorageError, match="older"):
        store.compact(snapshot(2, 2))
    with pytest.raises(StorageError, match="Snapshot"):
        store.compact("snapshot")  # type: ignore[arg-type]
    assert store.first_index() == 4


def test_persisted_snapshot_matching_the_log_keeps_later_entries(store: Storage) -> None:
    store.persist(None, entries(1, 6))
    store.persist(raft_hard_state(2, None, 3), [], snapshot(3, 1))
    assert store.first_index() == 4
    assert store.last_index() == 5
    assert store.load_persisted().entries == tuple(entries(4, 6))


def test_persisted_snapshot_conflicting_with_the_log_drops_the_log(store: Storage) -> None:
    # Raft §7: when the log's entry at the snapshot index has another term, discard the log.
    store.persist(None, entries(1, 6, term=1))
    store.persist(None, [], snapshot(3, 2))
    assert store.first_index() == 4
    assert store.last_index() == 3
    assert store.load_persisted().entries == ()


def test_persisted_snapshot_past_the_log_replaces_it(store: Storage) -> None:
    store.persist(None, entries(1, 4))
    store.persist(raft_hard_state(5, "n3", 10), [], snapshot(10, 4))
    assert store.first_index() == 11
    assert store.last_index() == 10
    with pytest.raises(LogCompacted):
        store.log_entries(10, 11)
    state = store.load_persisted()
    assert state.snapshot == snapshot(10, 4)
    assert state.entries == ()


def test_snapshot_and_entries_in_one_persist(store: Storage) -> None:
    store.persist(None, entries(1, 3))
    # Entries covered by the snapshot are skipped; the rest are appended after it.
    store.persist(raft_hard_state(3, "n1", 8), entries(7, 12, term=3), snapshot(8, 3))
    assert store.first_index() == 9
    assert store.last_index() == 11
    assert store.log_entries(9, 12) == entries(9, 12, term=3)
    assert store.load_persisted().snapshot == snapshot(8, 3)


def test_an_older_snapshot_is_refused(store: Storage) -> None:
    store.persist(None, [], snapshot(5, 2))
    with pytest.raises(StorageError, match="older"):
        store.persist(raft_hard_state(9, None, 0), [], snapshot(4, 2))
    assert store.load_persisted().snapshot == snapshot(5, 2)
    assert store.load_persisted().hard_state == HardState()


def test_user_keys_never_reach_consensus_metadata(store: Storage) -> None:
    store.persist(raft_hard_state(1, "n1", 0), entries(1, 3))
    store.apply([Put("raft_log", b"x"), Put("1", b"y"), Put("term", b"z")])
    assert store.log_entries(1, 3) == entries(1, 3)
    store.import_state(store.export_state())
    store.apply([Delete("raft_log")])
    assert store.load_persisted().hard_state == raft_hard_state(1, "n1", 0)
    assert store.last_index() == 2


# --- lifecycle -----------------------------------------------------------------------------------


def test_close_is_idempotent_and_every_later_call_raises(store: Storage) -> None:
    store.put("k", b"v")
    store.close()
    store.close()
    calls: list[Callable[[], object]] = [
        lambda: store.get("k"),
        lambda: store.scan(),
        lambda: store.apply([Put("k", b"v")]),
        lambda: store.put("k", b"v"),
        lambda: store.delete("k"),
        lambda: store.cas("k", None, b"v"),
        lambda: store.count(),
        lambda: store.meta_get("m"),
        lambda: store.export_state(),
        lambda: store.import_state(b""),
        lambda: store.load_persisted(),
        lambda: store.persist(None, []),
        lambda: store.compact(snapshot(0, 0)),
        lambda: store.log_entries(1, 1),
        lambda: store.first_index(),
        lambda: store.last_index(),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="closed"):
            call()
    with pytest.raises(StorageError, match="closed"):
        with store:
            pass


def test_context_manager_closes(backend: str, make_store: Callable[..., Storage]) -> None:
    with make_store(backend) as store:
        store.put("k", b"v")
    with pytest.raises(StorageError, match="closed"):
        store.get("k")


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_reopen_after_close_keeps_everything(
    backend: str, make_store: Callable[..., Storage]
) -> None:
    store = make_store(backend)
    store.apply([Put(f"k{i}", bytes([i])) for i in range(10)], {"applied": b"42"})
    store.put("k1", b"again")
    store.delete("k2")
    store.persist(raft_hard_state(7, "n2", 4), entries(1, 6, term=7))
    store.compact(snapshot(2, 7))
    image = store.export_state()
    store.close()

    again = make_store(backend)
    assert again.export_state() == image
    assert again.count() == 9
    assert again.get("k1") == Record(b"again", 2)
    assert again.get("k2") is None
    assert again.meta_get("applied") == b"42"
    assert again.first_index() == 3
    assert again.last_index() == 5
    state = again.load_persisted()
    assert state.hard_state == raft_hard_state(7, "n2", 4)
    assert state.snapshot == snapshot(2, 7)
    assert state.entries == tuple(entries(3, 6, term=7))


# --- factory -------------------------------------------------------------------------------------


def test_open_storage_refuses_unknown_backends_options_and_missing_paths(tmp_path: object) -> None:
    with pytest.raises(StorageError, match="memory, sqlite, tiered"):
        open_storage("rocksdb", None)
    with pytest.raises(StorageError, match="allowed: hot_keys, policy"):
        open_storage("sqlite", f"{tmp_path}/a.db", hot_key=5)
    with pytest.raises(StorageError, match="hot_keys"):
        open_storage("memory", None, hot_keys=-1)
    # One storage config may name any backend: the tiered options are accepted everywhere.
    open_storage("sqlite", f"{tmp_path}/a.db", hot_keys=5, policy="lfu").close()
    open_storage("memory", "ignored.db", hot_keys=5).close()
    with pytest.raises(StorageError, match="needs a file path"):
        open_storage("sqlite", None)
    with pytest.raises(StorageError, match="policy"):
        open_storage("tiered", f"{tmp_path}/b.db", policy="fifo")
    with pytest.raises(StorageError, match="hot_keys"):
        open_storage("tiered", f"{tmp_path}/c.db", hot_keys=0)


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_opening_a_file_that_is_not_a_database_raises_storage_error(
    backend: str, tmp_path: object
) -> None:
    path = f"{tmp_path}/garbage.db"
    with open(path, "wb") as handle:
        handle.write(b"this is not a sqlite database" * 100)
    with pytest.raises(StorageError, match="garbage.db"):
        open_storage(backend, path)


def test_open_storage_creates_the_directory(tmp_path: object) -> None:
    with open_storage("sqlite", f"{tmp_path}/deep/er/store.db") as store:
        store.put("k", b"v")
    with open_storage("sqlite", f"{tmp_path}/deep/er/store.db") as store:
        assert store.get("k") == Record(b"v", 1)
