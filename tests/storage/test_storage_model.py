"""Every backend against a plain-dict model, driven by hypothesis (stateful testing).

The model below restates the contract independently of exapyte.storage.base, so a bug in the
shared batch code cannot hide behind itself.
"""

from __future__ import annotations

import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from exapyte.errors import StorageError
from exapyte.protocol.raft.core import raft_hard_state
from exapyte.protocol.types import Entry, HardState, Snapshot, SnapshotMeta
from exapyte.storage import (
    Cas,
    Delete,
    KVOp,
    OpResult,
    Put,
    Record,
    Storage,
    open_storage,
)

KEYS = st.sampled_from(["a", "b", "ab", "é", "中", "😀", "z", "B", "a\x00b"])
VALUES = st.binary(max_size=8)
OPTIONAL_VALUES = st.none() | VALUES
OPS: st.SearchStrategy[KVOp] = st.one_of(
    st.builds(Put, KEYS, VALUES),
    st.builds(Delete, KEYS),
    st.builds(Cas, KEYS, OPTIONAL_VALUES, OPTIONAL_VALUES),
)
META_NAMES = st.sampled_from(["applied", "a", "sessions"])
BOUNDS = st.none() | KEYS | st.text(max_size=2)


def model_apply(model: dict[str, Record], ops: list[KVOp]) -> list[OpResult]:
    results = []
    for op in ops:
        current = model.get(op.key)
        if isinstance(op, Cas):
            matches = current is None if op.expected is None else (
                current is not None and current.value == op.expected
            )
            if not matches:
                results.append(OpResult(False, current.version if current else 0, current))
                continue
            new = op.new
        elif isinstance(op, Put):
            new = op.value
        else:
            new = None
        if new is None:
            model.pop(op.key, None)
            results.append(OpResult(True, 0, current))
        else:
            record = Record(new, current.version + 1 if current else 1)
            model[op.key] = record
            results.append(OpResult(True, record.version, current))
    return results


class StoreMachine(RuleBasedStateMachine):
    backend = "memory"
    options: dict[str, object] = {}

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="exapyte-storage-model-")
        self.store = self.open()
        self.model: dict[str, Record] = {}
        self.meta: dict[str, bytes] = {}
        # the log model: index -> term, and the snapshot's (index, term)
        self.log: dict[int, int] = {}
        self.snap = (0, 0)
        self.hard = HardState()

    def open(self) -> Storage:
        return open_storage(self.backend, f"{self.directory}/s.db", **self.options)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- user key space ------------------------------------------------------------------------

    @rule(ops=st.lists(OPS, max_size=6), meta=st.dictionaries(META_NAMES, OPTIONAL_VALUES))
    def apply(self, ops: list[KVOp], meta: dict[str, bytes | None]) -> None:
        assert self.store.apply(ops, meta) == model_apply(self.model, ops)
        for name, value in meta.items():
            if value is None:
                self.meta.pop(name, None)
            else:
                self.meta[name] = value

    @rule(
        ops=st.lists(OPS, max_size=4),
        bad=st.sampled_from([Put("", b"x"), Put("k", "str"), Delete("\ud800"), "op"]),
        position=st.integers(0, 4),
    )
    def invalid_batch_changes_nothing(self, ops: list[object], bad: object, position: int) -> None:
        ops.insert(min(position, len(ops)), bad)
        try:
            self.store.apply(ops, {"applied": b"never"})  # type: ignore[arg-type]
        except StorageError:
            pass
        else:
            raise AssertionError("an invalid batch was accepted")

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        assert self.store.get(key) == self.model.get(key)

    @rule(start=BOUNDS, end=BOUNDS, limit=st.integers(0, 12))
    def scan(self, start: str | None, end: str | None, limit: int) -> None:
        start = start or ""
        expected = [
            (key, self.model[key])
            for key in sorted(self.model)
            if key >= start and (end is None or key < end)
        ][:limit]
        assert self.store.scan(start, end, limit) == expected

    @rule(name=META_NAMES)
    def meta_get(self, name: str) -> None:
        assert self.store.meta_get(name) == self.meta.get(name)

    @rule()
    def export_import(self) -> None:
        image = self.store.export_state()
        self.store.import_state(image)
        assert self.store.export_state() == image
        mirror = open_storage("memory", None)
        mirror.import_state(image)
        assert mirror.scan(limit=100) == sorted(self.model.items())
        mirror.close()

    @invariant()
    def count_matches(self) -> None:
        assert self.store.count() == len(self.model)

    # --- log -------------------------------------------------------------------------------------

    def last(self) -> int:
        return max(self.log, default=self.snap[0])

    @rule(data=st.data(), n=st.integers(0, 4), term=st.integers(1, 5))
    def append(self, data: st.DataObject, n: int, term: int) -> None:
        first = data.draw(st.integers(self.snap[0] + 1, self.last() + 1))
        entries = [Entry(term, i, 0, b"%d" % i) for i in range(first, first + n)]
        hard = raft_hard_state(term, "n1", 0)
        self.store.persist(hard, entries)
        self.hard = hard
        if entries:
            self.log = {i: t for i, t in self.log.items() if i < first}
            self.log.update((e.index, e.term) for e in entries)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.snap[0], self.last()))
        term = self.log.get(index, self.snap[1])
        self.store.compact(Snapshot(SnapshotMeta(index, term), b"s"))
        self.log = {i: t for i, t in self.log.items() if i > index}
        self.snap = (index, term)

    @rule(data=st.data(), term=st.integers(1, 5))
    def install_snapshot(self, data: st.DataObject, term: int) -> None:
        index = data.draw(st.integers(self.snap[0], self.last() + 3))
        self.store.persist(None, [], Snapshot(SnapshotMeta(index, term), b"i"))
        if index >= self.last() or self.log.get(index, term) != term:
            self.log = {}
        else:
            self.log = {i: t for i, t in self.log.items() if i > index}
        self.snap = (index, term)

    @invariant()
    def log_matches(self) -> None:
        assert self.store.first_index() == self.snap[0] + 1
        assert self.store.last_index() == self.last()
        entries = self.store.log_entries(self.snap[0] + 1, self.last() + 1)
        assert [(e.index, e.term) for e in entries] == sorted(self.log.items())

    @rule()
    def load_persisted(self) -> None:
        state = self.store.load_persisted()
        assert state.hard_state == self.hard
        assert [(e.index, e.term) for e in state.entries] == sorted(self.log.items())
        if self.snap == (0, 0) and state.snapshot is None:
            return
        assert state.snapshot is not None
        assert (state.snapshot.meta.index, state.snapshot.meta.term) == self.snap

    # --- restarts (durable backends only) --------------------------------------------------------

    @precondition(lambda self: self.backend != "memory")
    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self.open()


def machine(backend: str, **options: object) -> type[StoreMachine]:
    attributes = {"backend": backend, "options": options}
    return type(f"{backend.title()}Machine", (StoreMachine,), attributes)


def fast(count: int) -> settings:
    return settings(
        max_examples=count,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


TestMemoryAgainstModel = machine("memory").TestCase
TestMemoryAgainstModel.settings = fast(60)
TestSqliteAgainstModel = machine("sqlite").TestCase
TestSqliteAgainstModel.settings = fast(25)
TestTieredLruAgainstModel = machine("tiered", hot_keys=2, policy="lru").TestCase
TestTieredLruAgainstModel.settings = fast(25)
TestTieredLfuAgainstModel = machine("tiered", hot_keys=2, policy="lfu").TestCase
TestTieredLfuAgainstModel.settings = fast(25)
