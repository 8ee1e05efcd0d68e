"""The KV state machine: outcomes, versions, exactly-once sessions, atomic batches, snapshots."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exapyte import limits
from exapyte.kv import Command, KVStateMachine, Outcome, encode_command
from exapyte.protocol.types import Entry, EntryKind
from exapyte.storage import Record, open_storage
from exapyte.wire import CasOp, DeleteOp, PutOp


def entry(index: int, cmd: Command | None = None, kind: int = EntryKind.NORMAL) -> Entry:
    return Entry(1, index, kind, encode_command(cmd) if cmd else b"")


@pytest.fixture(
    params=[
        (backend, behind)
        for backend in ("memory", "sqlite", "tiered")
        for behind in (False, True)
    ],
    ids=lambda p: f"{p[0]}-{'write_behind' if p[1] else 'write_through'}",
)
def sm(request: pytest.FixtureRequest, tmp_path: Path) -> KVStateMachine:
    backend, behind = request.param
    opts = {"hot_keys": 2} if backend == "tiered" else {}
    store = open_storage(backend, str(tmp_path / "s.db"), **opts)
    yield KVStateMachine(store, write_behind=behind)
    store.close()


def test_outcomes_and_versions(sm: KVStateMachine) -> None:
    res = sm.apply([
        entry(1, Command("c", 1, PutOp("k", b"a"))),
        entry(2, Command("c", 2, PutOp("k", b"b"))),
        entry(3, Command("c", 3, CasOp("k", b"zz", b"c"))),
        entry(4, Command("c", 4, CasOp("k", b"b", b"c"))),
        entry(5, None, EntryKind.NOOP),
        entry(6, Command("c", 5, DeleteOp("k"))),
        entry(7, Command("c", 6, DeleteOp("k"))),
        entry(8, Command("c", 7, CasOp("n", None, b"new"))),
    ])
    codes = [(o.code, o.version) if o else None for _, o in res]
    assert codes == [("ok", 1), ("ok", 2), ("cas_failed", 2), ("ok", 3), None, ("ok", 0), ("not_found", 0), ("ok", 1)]
    assert res[2][1].value == b"b"  # a failed cas reports the current value
    assert sm.applied_index == 8
    assert sm.get("k") is None
    assert sm.get("n").value == b"new"


def test_retry_with_same_sequence_is_applied_once(sm: KVStateMachine) -> None:
    first = sm.apply([entry(1, Command("c", 10, PutOp("k", b"a")))])[0][1]
    again = sm.apply([entry(2, Command("c", 10, PutOp("k", b"a")))])[0][1]
    assert first == again
    assert sm.get("k").version == 1
    stale = sm.apply([entry(3, Command("c", 9, PutOp("k", b"old")))])[0][1]
    assert stale.code == "bad_request"
    assert sm.get("k").value == b"a"


def test_sessions_survive_a_restart(tmp_path: Path) -> None:
    store = open_storage("sqlite", str(tmp_path / "s.db"))
    KVStateMachine(store).apply([entry(1, Command("c", 1, CasOp("k", None, b"x")))])
    store.close()
    store = open_storage("sqlite", str(tmp_path / "s.db"))
    sm = KVStateMachine(store)
    assert sm.applied_index == 1
    # The retry of the cas must report success again, not a failed compare.
    out = sm.apply([entry(2, Command("c", 1, CasOp("k", None, b"x")))])[0][1]
    assert out.code == "ok"
    store.close()


def test_replayed_entries_are_skipped_and_gaps_refused(sm: KVStateMachine) -> None:
    sm.apply([entry(1, Command("c", 1, PutOp("k", b"a")))])
    assert sm.apply([entry(1, Command("c", 1, PutOp("k", b"a")))]) == []
    assert sm.get("k").version == 1
    with pytest.raises(AssertionError, match="gap"):
        sm.apply([entry(5, Command("c", 2, PutOp("k", b"b")))])


def test_snapshot_restores_data_sessions_and_applied_index(sm: KVStateMachine, tmp_path: Path) -> None:
    sm.apply([entry(i, Command("c", i, PutOp(f"k{i}", b"v"))) for i in range(1, 6)])
    image = sm.snapshot()
    other = KVStateMachine(open_storage("memory", None))
    other.restore(image)
    assert other.applied_index == 5
    assert other.scan("", None, 100) == sm.scan("", None, 100)
    assert other.cached_outcome("c", 5) is not None


# --- write-behind -------------------------------------------------------------------------------


class CountingStore:
    """A storage proxy that counts the calls the state machine makes."""

    def __init__(self, store: object) -> None:
        self.store = store
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.store, name)
        if callable(attr):
            def counted(*args: object, **kwargs: object) -> object:
                self.calls[name] = self.calls.get(name, 0) + 1
                return attr(*args, **kwargs)
            return counted
        return attr


def puts(first_index: int, count: int, client: str = "c", keys: int = 7) -> list[Entry]:
    return [
        entry(first_index + i, Command(client, first_index + i, PutOp(f"k{i % keys}", b"v%d" % i)))
        for i in range(count)
    ]


def test_a_batch_reads_all_its_keys_with_one_get_many() -> None:
    store = CountingStore(open_storage("memory", None))
    sm = KVStateMachine(store)  # type: ignore[arg-type]
    sm.apply(puts(1, 20))
    assert store.calls.get("get_many") == 1
    assert "get" not in store.calls


def test_write_behind_stores_nothing_until_flushed_but_reads_see_everything(tmp_path: Path) -> None:
    store = open_storage("sqlite", str(tmp_path / "s.db"))
    sm = KVStateMachine(store, write_behind=True)
    outcomes = [o for _, o in sm.apply(puts(1, 10))]
    assert sm.applied_index == 10 and sm.pending_ops == 10 and sm.has_pending
    assert store.get("k0") is None  # nothing stored yet
    assert sm.get("k0") == Record(b"v7", 2)  # k0 was written by entries 1 and 8
    assert sm.cached_outcome("c", 10) == outcomes[-1]
    sm.flush()
    assert not sm.has_pending and sm.pending_ops == 0
    assert store.get("k0") == Record(b"v7", 2)
    assert KVStateMachine(store).applied_index == 10
    store.close()


def test_a_crash_before_the_flush_replays_to_the_same_outcomes_and_state(tmp_path: Path) -> None:
    log = puts(1, 30) + [entry(31, Command("c", 30, PutOp("k1", b"retry")))]  # a retry of seq 30
    reference = KVStateMachine(open_storage("memory", None))
    expected = reference.apply(log)

    store = open_storage("sqlite", str(tmp_path / "s.db"))
    sm = KVStateMachine(store, write_behind=True)
    sm.apply(log[:12])
    sm.flush()
    sm.apply(log[12:25])  # applied, answered, then lost: never flushed
    store.close()  # the process dies with the overlay

    store = open_storage("sqlite", str(tmp_path / "s.db"))
    sm = KVStateMachine(store, write_behind=True)
    assert sm.applied_index == 12  # the stored applied index is the flushed one
    replayed = sm.apply(log)  # the host replays its log from there
    assert replayed == expected[12:]
    assert sm.snapshot() == reference.snapshot()
    store.close()


def test_write_behind_flushes_by_itself_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "WRITE_BEHIND_OPS_MAX", 8)
    store = open_storage("memory", None)
    sm = KVStateMachine(store, write_behind=True)
    sm.apply(puts(1, 5))
    assert sm.pending_ops == 5
    sm.apply(puts(6, 5))  # 10 pending >= 8: stored
    assert sm.pending_ops == 0 and KVStateMachine(store).applied_index == 10


@pytest.mark.parametrize("behind", [False, True])
def test_a_run_longer_than_one_storage_batch_is_applied_in_chunks(behind: bool) -> None:
    count = limits.STORAGE_BATCH_OPS_MAX + 500
    store = open_storage("memory", None)
    sm = KVStateMachine(store, write_behind=behind)
    results = sm.apply(puts(1, count, keys=count))
    assert len(results) == count and all(o.code == "ok" for _, o in results)
    sm.flush()
    assert store.count() == count and sm.applied_index == count


def test_scan_and_snapshot_flush_first(tmp_path: Path) -> None:
    store = open_storage("sqlite", str(tmp_path / "s.db"))
    sm = KVStateMachine(store, write_behind=True)
    sm.apply(puts(1, 3))
    assert [k for k, _ in sm.scan("", None, 10)] == ["k0", "k1", "k2"]
    assert not sm.has_pending
    sm.apply(puts(4, 1))
    image = sm.snapshot()
    assert not sm.has_pending
    other = KVStateMachine(open_storage("memory", None), write_behind=True)
    other.restore(image)
    assert other.applied_index == 4 and other.get("k0") == Record(b"v0", 2)
    store.close()


# --- committed entries that cannot be applied -----------------------------------------------------

LONG_KEY = "k" * (limits.KEY_BYTES_MAX + 1)
LONG_VALUE = b"v" * (limits.VALUE_BYTES_MAX + 1)


# A command whose client id is not UTF-8 (a lone surrogate's bytes)
NOT_UTF8 = encode_command(Command("cc", 1, PutOp("k", b""))).replace(b"\xa2cc", b"\xa2c\xed")
assert NOT_UTF8 != encode_command(Command("cc", 1, PutOp("k", b"")))


def poison_log() -> list[Entry]:
    """A log as an older node could have written it: bad entries between good ones."""
    return [
        entry(1, Command("good", 1, PutOp("a", b"1"))),
        entry(2, Command("x" * 249, 1, PutOp("b", b"2"))),  # session name of 257 bytes
        entry(3, Command("x" * 10_000, 1, CasOp("b", None, b"2"))),
        Entry(1, 4, EntryKind.NORMAL, b"\xc1 not msgpack"),
        Entry(1, 5, EntryKind.NORMAL, msgspec.msgpack.encode(["c", 1, {"type": "scan"}])),
        Entry(1, 6, EntryKind.NORMAL, msgspec.msgpack.encode(["c", "one", {"type": "put"}])),
        Entry(1, 7, EntryKind.NORMAL, NOT_UTF8),
        entry(8, Command("c2", 1, PutOp(LONG_KEY, b"v"))),
        entry(9, Command("c3", 1, PutOp("k", LONG_VALUE))),
        entry(10, Command("c4", 1, DeleteOp(""))),
        entry(11, Command("c5", 1, CasOp("k", None, LONG_VALUE))),
        entry(12, Command("good", 2, PutOp("a", b"2"))),
    ]


REFUSED_REASONS = {
    2: "META_NAME_BYTES_MAX",
    3: "META_NAME_BYTES_MAX",
    4: "does not hold a valid command",
    5: "does not hold a valid command",
    6: "does not hold a valid command",
    7: "does not hold a valid command",
    8: "KEY_BYTES_MAX",
    9: "VALUE_BYTES_MAX",
    10: "empty",
    11: "VALUE_BYTES_MAX",
}


def check_poison_outcomes(results: list[tuple[Entry, Outcome | None]]) -> None:
    assert [e.index for e, _ in results] == list(range(1, 13))
    outcomes = {e.index: o for e, o in results}
    assert outcomes[1].code == "ok" and outcomes[12] == Outcome("ok", None, 2, 12)
    for index, reason in REFUSED_REASONS.items():
        outcome = outcomes[index]
        assert outcome.code == "bad_request" and outcome.index == index
        assert reason in outcome.value.decode() and "nothing was applied" in outcome.value.decode()


def test_an_entry_that_cannot_be_applied_is_a_failed_operation(sm: KVStateMachine) -> None:
    results = sm.apply(poison_log())
    check_poison_outcomes(results)
    assert sm.applied_index == 12 and sm.entries_refused == len(REFUSED_REASONS)
    assert sm.get("a") == Record(b"2", 2) and sm.get("b") is None and sm.get("k") is None
    sm.flush()
    store = sm.storage
    assert store.count() == 1
    for client in ("c2", "c3", "c4", "c5"):  # nothing at all was written for a refused entry
        assert store.meta_get("session:" + client) is None
    assert KVStateMachine(store).applied_index == 12


def test_refused_entries_are_refused_one_by_one_too(sm: KVStateMachine) -> None:
    results = []
    for e in poison_log():
        results += sm.apply([e])
    check_poison_outcomes(results)


@pytest.mark.parametrize("backend", ["sqlite", "tiered"])
@pytest.mark.parametrize("behind", [False, True], ids=["write_through", "write_behind"])
def test_a_restart_over_a_log_with_bad_entries_replays_to_the_same_outcomes(
    tmp_path: Path, backend: str, behind: bool
) -> None:
    log = poison_log()
    reference = KVStateMachine(open_storage("memory", None))
    expected = reference.apply(log)

    opts = {"hot_keys": 2} if backend == "tiered" else {}
    store = open_storage(backend, str(tmp_path / "s.db"), **opts)
    sm = KVStateMachine(store, write_behind=behind)
    assert sm.apply(log[:3]) == expected[:3]
    sm.flush()
    assert sm.apply(log[3:9]) == expected[3:9]  # lost with write-behind: never flushed
    store.close()

    # Restart twice: the replay reaches the same outcomes and never raises, and once stored the
    # bad entries are behind the applied index like any other.
    for stored in (3 if behind else 9, 12):
        store = open_storage(backend, str(tmp_path / "s.db"), **opts)
        sm = KVStateMachine(store, write_behind=behind)
        assert sm.applied_index == stored
        assert sm.apply(log) == expected[stored:]  # the host replays its whole log
        assert sm.applied_index == 12
        assert sm.snapshot() == reference.snapshot()  # stores the overlay too
        store.close()


@given(st.binary(max_size=200))
def test_any_bytes_in_a_normal_entry_apply_without_raising(data: bytes) -> None:
    sm = KVStateMachine(open_storage("memory", None))
    results = sm.apply([Entry(1, 1, EntryKind.NORMAL, data)])
    assert sm.applied_index == 1
    outcome = results[0][1]
    assert data == b"" or (outcome is not None and outcome.index == 1)
