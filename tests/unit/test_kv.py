"""The KV state machine: outcomes, versions, exactly-once sessions, atomic batches, snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest

from exapyte.kv import Command, KVStateMachine, encode_command
from exapyte.protocol.types import Entry, EntryKind
from exapyte.storage import open_storage
from exapyte.wire import CasOp, DeleteOp, PutOp


def entry(index: int, cmd: Command | None = None, kind: int = EntryKind.NORMAL) -> Entry:
    return Entry(1, index, kind, encode_command(cmd) if cmd else b"")


@pytest.fixture(params=["memory", "sqlite", "tiered"])
def sm(request: pytest.FixtureRequest, tmp_path: Path) -> KVStateMachine:
    opts = {"hot_keys": 2} if request.param == "tiered" else {}
    store = open_storage(request.param, str(tmp_path / "s.db"), **opts)
    yield KVStateMachine(store)
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
