"""A SQLite store written by schema version 1 (Raft's term and vote in columns) opens under
version 2, where the hard state is the core's opaque record, and loses nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exapyte.errors import StorageError
from exapyte.protocol.raft.core import decode_hard_state
from exapyte.protocol.types import Entry
from exapyte.storage.sqlite import SCHEMA_VERSION, SqliteStorage

_V1_SCHEMA = """
CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL);
CREATE TABLE sm_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE raft_hard_state (id INTEGER PRIMARY KEY, term INTEGER NOT NULL, vote TEXT,
                              commit_index INTEGER NOT NULL);
CREATE TABLE raft_log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL,
                       data BLOB NOT NULL);
CREATE TABLE raft_snapshot (id INTEGER PRIMARY KEY, idx INTEGER NOT NULL, term INTEGER NOT NULL,
                            conf BLOB NOT NULL, data BLOB NOT NULL);
"""


def _write_v1(path: Path, *, with_hard_state: bool = True) -> None:
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)
    if with_hard_state:
        db.execute("INSERT INTO raft_hard_state VALUES (1, 7, 'n2', 3)")
    db.executemany(
        "INSERT INTO raft_log VALUES (?, ?, ?, ?)", [(i, 7, 0, b"c%d" % i) for i in (1, 2, 3, 4)]
    )
    db.execute("INSERT INTO kv VALUES ('k', X'76', 3)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def test_a_version_1_store_keeps_term_vote_commit_log_and_records(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _write_v1(path)
    store = SqliteStorage(str(path))
    try:
        state = store.load_persisted()
        assert state.hard_state.commit == 3
        raft = decode_hard_state(state.hard_state.record)
        assert (raft.term, raft.vote) == (7, "n2")
        assert [e.index for e in state.entries] == [1, 2, 3, 4]
        assert state.entries[0] == Entry(7, 1, 0, b"c1")
        assert store.get("k") is not None
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "raft_hard_state" not in tables and "hard_state" in tables
    finally:
        db.close()
    reopened = SqliteStorage(str(path))  # a second open finds version 2: nothing to upgrade
    try:
        assert decode_hard_state(reopened.load_persisted().hard_state.record).term == 7
    finally:
        reopened.close()


def test_a_version_1_store_without_a_hard_state_opens_empty(tmp_path: Path) -> None:
    path = tmp_path / "v1-empty.db"
    _write_v1(path, with_hard_state=False)
    store = SqliteStorage(str(path))
    try:
        assert store.load_persisted().hard_state.record == b""
    finally:
        store.close()


def test_a_newer_schema_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "v9.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=9")
    db.commit()
    db.close()
    with pytest.raises(StorageError, match="schema version 9"):
        SqliteStorage(str(path))
