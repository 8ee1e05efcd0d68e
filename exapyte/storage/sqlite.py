"""The SQLite backend, through SQLAlchemy Core.

Theory of operation
-------------------
One store is one SQLite file, one Engine and **one connection** held for the store's life. Every
connection gets ``PRAGMA journal_mode=WAL`` and ``PRAGMA synchronous=FULL`` from a ``connect``
event listener, so a committed transaction has been fsynced into the write-ahead log.

Tables (the user key space never shares a table with anything else)::

    kv(key TEXT PRIMARY KEY, value BLOB, version INTEGER)      user records
    sm_meta(name TEXT PRIMARY KEY, value BLOB)                 state-machine meta
    hard_state(id=1, commit_index, record)                     consensus hard state
    raft_log(idx INTEGER PRIMARY KEY, term, kind, data)        the stable log
    raft_snapshot(id=1, idx, term, conf, data)                 the latest snapshot

The hard state's ``record`` is the consensus core's own durable state (Raft's term and vote,
Multi-Paxos's promised ballot, ZAB's epochs), opaque here. Schema version 1 kept Raft's term and
vote in columns of ``raft_hard_state``; such a file is upgraded in place when it is opened (the
two values become a Raft record; the old table is dropped in the same transaction).

**Group commit.** :meth:`SqliteStorage.apply` and :meth:`SqliteStorage.persist` run a whole
batch in one transaction: one ``SELECT ... IN`` for the previous records of every key in the
batch, the batch computed in Python (:func:`~exapyte.storage.base.execute_ops`), then one
``executemany`` upsert and one ``executemany`` delete for the final state of the touched keys,
and one ``COMMIT`` = one fsync, however many ops the batch holds.

**Transactions.** The sqlite3 driver's own implicit transactions are switched off
(``isolation_level = None``) and a ``begin`` listener emits ``BEGIN`` itself, the recipe the
SQLAlchemy documentation gives for pysqlite; so a SQLAlchemy transaction is exactly one SQLite
transaction and a failed batch rolls back completely.

**The two hot paths** (:meth:`SqliteStorage.apply` and :meth:`SqliteStorage.persist`, one call
per consensus round on every node) run in :meth:`SqliteStorage.write_transaction`: statements
compiled once from SQLAlchemy Core, executed with positional tuples on the driver connection the
Engine manages, between an explicit ``BEGIN`` and ``COMMIT``. SQLAlchemy still creates the
schema, owns the connection and compiles every statement; what the hot paths skip is its
per-call execution machinery (transaction objects, events, result wrappers), which measured
about 90 us per one-op batch against SQLite's own 20 to 40 us (docs/performance.md). Both kinds
of transaction run on the same connection and never overlap (single owner, see below).

**Locking.** Connections use ``locking_mode=EXCLUSIVE``: a store belongs to one process (one
node), which then keeps the WAL index in its own memory and takes no file locks per transaction
(fewer system calls on every commit). Another process that opens the same file while the owner
runs fails with SQLite's "database is locked" (a StorageError) instead of sharing it.

**File layout.** A new file gets ``page_size`` = :data:`~exapyte.limits.SQLITE_PAGE_BYTES`
(2 KiB): a random-key update rewrites one B-tree page into the WAL, and half-size pages halve
those bytes. ``wal_autocheckpoint`` is :data:`~exapyte.limits.SQLITE_WAL_CHECKPOINT_PAGES`
(8 MiB): a longer WAL lets a checkpoint copy each hot page once for several commits that
rewrote it. (A much longer one costs more than it saves: while the WAL file is still growing,
every fsync must also commit the file's new size to the file-system journal.) Together with the
hot paths above, a 30-op batch of random-key puts over 100,000 keys went from 27 to 19 us per
put, and a one-op batch from 135 to 65 us.

**sync=False.** SQLite cannot skip the fsync of one transaction, but the ``synchronous`` level
may change between transactions. A ``sync=False`` batch runs with ``synchronous=NORMAL``: it is
still committed atomically and survives a crash of the process (kill -9), but it may be lost on
power failure or an OS crash until the next ``sync=True`` commit, whose fsync of the WAL also
covers it. ``sync=True`` (the default) always commits under ``synchronous=FULL``.

**Threads.** A store has a single owner: call it from one thread at a time (the node runtime
does). The connection is opened with ``check_same_thread=False`` only so that the owner may be a
different thread from the one that opened the store.

Database errors (a locked, full or corrupt file) are raised as
:class:`~exapyte.errors.StorageError` with SQLite's message.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from exapyte import limits
from exapyte.errors import StorageError
from exapyte.protocol.types import (
    ConfState,
    Entry,
    HardState,
    PersistedState,
    Snapshot,
    SnapshotMeta,
)
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

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # PRAGMA user_version of a file this module created or upgraded

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Bytes(sa.LargeBinary):
    """A BLOB bound as the ``bytes`` it is (LargeBinary wraps every value in a memoryview)."""

    cache_ok = True

    def bind_processor(self, dialect: sa.Dialect) -> None:
        return None


_metadata = sa.MetaData()
kv_table = sa.Table(
    "kv",
    _metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", _Bytes, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)
meta_table = sa.Table(
    "sm_meta",
    _metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", _Bytes, nullable=False),
)
hard_state_table = sa.Table(
    "hard_state",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("commit_index", sa.Integer, nullable=False),
    sa.Column("record", _Bytes, nullable=False),
)
log_table = sa.Table(
    "raft_log",
    _metadata,
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("term", sa.Integer, nullable=False),
    sa.Column("kind", sa.Integer, nullable=False),
    sa.Column("data", _Bytes, nullable=False),
)
snapshot_table = sa.Table(
    "raft_snapshot",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("term", sa.Integer, nullable=False),
    sa.Column("conf", _Bytes, nullable=False),
    sa.Column("data", _Bytes, nullable=False),
)

_SINGLETON_ID = 1  # the one row of raft_hard_state and raft_snapshot

# Pre-built statements: SQLAlchemy compiles each once and reuses the compiled form.
_kv = kv_table.c
_GET = sa.select(_kv.value, _kv.version).where(_kv.key == sa.bindparam("k"))
_upsert = sqlite_insert(kv_table)
_UPSERT = _upsert.on_conflict_do_update(
    index_elements=[_kv.key],
    set_={"value": _upsert.excluded.value, "version": _upsert.excluded.version},
)
_DELETE = sa.delete(kv_table).where(_kv.key == sa.bindparam("k"))
_SCAN_FROM = (
    sa.select(_kv.key, _kv.value, _kv.version)
    .where(_kv.key >= sa.bindparam("start"))
    .order_by(_kv.key)
    .limit(sa.bindparam("limit"))
)
_SCAN_RANGE = (
    sa.select(_kv.key, _kv.value, _kv.version)
    .where(_kv.key >= sa.bindparam("start"), _kv.key < sa.bindparam("end"))
    .order_by(_kv.key)
    .limit(sa.bindparam("limit"))
)
_SCAN_ALL = sa.select(_kv.key, _kv.value, _kv.version).order_by(_kv.key)
_COUNT = sa.select(sa.func.count()).select_from(kv_table)
_CLEAR_KV = sa.delete(kv_table)
_INSERT_KV = sa.insert(kv_table)

_m = meta_table.c
_META_GET = sa.select(_m.value).where(_m.name == sa.bindparam("n"))
_meta_upsert = sqlite_insert(meta_table)
_META_UPSERT = _meta_upsert.on_conflict_do_update(
    index_elements=[_m.name], set_={"value": _meta_upsert.excluded.value}
)
_META_DELETE = sa.delete(meta_table).where(_m.name == sa.bindparam("n"))
_META_ALL = sa.select(_m.name, _m.value).order_by(_m.name)
_CLEAR_META = sa.delete(meta_table)
_INSERT_META = sa.insert(meta_table)

_h = hard_state_table.c
_HARD_GET = sa.select(_h.commit_index, _h.record).where(_h.id == _SINGLETON_ID)
_hard_upsert = sqlite_insert(hard_state_table)
_HARD_PUT = _hard_upsert.on_conflict_do_update(
    index_elements=[_h.id],
    set_={
        "commit_index": _hard_upsert.excluded.commit_index,
        "record": _hard_upsert.excluded.record,
    },
)

_l = log_table.c
_LOG_TERM = sa.select(_l.term).where(_l.idx == sa.bindparam("i"))
_LOG_RANGE = (
    sa.select(_l.term, _l.idx, _l.kind, _l.data)
    .where(_l.idx >= sa.bindparam("lo"), _l.idx < sa.bindparam("hi"))
    .order_by(_l.idx)
)
_LOG_ALL = sa.select(_l.term, _l.idx, _l.kind, _l.data).order_by(_l.idx)
_LOG_LAST = sa.select(sa.func.max(_l.idx))
_LOG_DROP_THROUGH = sa.delete(log_table).where(_l.idx <= sa.bindparam("i"))
_LOG_TRUNCATE_FROM = sa.delete(log_table).where(_l.idx >= sa.bindparam("i"))
_LOG_CLEAR = sa.delete(log_table)
_LOG_APPEND = sa.insert(log_table)

_s = snapshot_table.c
_SNAP_GET = sa.select(_s.idx, _s.term, _s.conf, _s.data).where(_s.id == _SINGLETON_ID)
_SNAP_INDEX = sa.select(_s.idx).where(_s.id == _SINGLETON_ID)
_snap_upsert = sqlite_insert(snapshot_table)
_SNAP_PUT = _snap_upsert.on_conflict_do_update(
    index_elements=[_s.id],
    set_={
        "idx": _snap_upsert.excluded.idx,
        "term": _snap_upsert.excluded.term,
        "conf": _snap_upsert.excluded.conf,
        "data": _snap_upsert.excluded.data,
    },
)

_DIALECT = sqlite_dialect.dialect()


class _Compiled:
    """A Core statement compiled once to SQL with positional ``?`` parameters.

    The batch path runs these through ``Connection.exec_driver_sql`` with tuples in
    ``params`` order: SQLAlchemy still owns the connection, the transaction and error
    translation, but skips its per-row parameter processing, which for a 100-row
    ``executemany`` costs more than SQLite's own work.
    """

    __slots__ = ("sql", "params")

    def __init__(self, statement: sa.ClauseElement) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        self.sql = str(compiled)
        self.params = tuple(compiled.positiontup or ())


_UPSERT_SQL = _Compiled(_UPSERT)
_GET_SQL = _Compiled(_GET)
_META_GET_SQL = _Compiled(_META_GET)
_LOG_APPEND_SQL = _Compiled(_LOG_APPEND)
_HARD_PUT_SQL = _Compiled(_HARD_PUT)
_DELETE_SQL = _Compiled(_DELETE)
_META_UPSERT_SQL = _Compiled(_META_UPSERT)
_META_DELETE_SQL = _Compiled(_META_DELETE)
_SNAP_PUT_SQL = _Compiled(_SNAP_PUT)
_LOG_CLEAR_SQL = _Compiled(_LOG_CLEAR)
_LOG_DROP_THROUGH_SQL = _Compiled(_LOG_DROP_THROUGH)
_LOG_TRUNCATE_FROM_SQL = _Compiled(_LOG_TRUNCATE_FROM)
assert _UPSERT_SQL.params == ("key", "value", "version"), _UPSERT_SQL.params
assert _META_UPSERT_SQL.params == ("name", "value"), _META_UPSERT_SQL.params
assert _GET_SQL.params == ("k",), _GET_SQL.params
assert _META_GET_SQL.params == ("n",), _META_GET_SQL.params
assert _LOG_APPEND_SQL.params == ("idx", "term", "kind", "data"), _LOG_APPEND_SQL.params
assert _HARD_PUT_SQL.params == ("id", "commit_index", "record"), _HARD_PUT_SQL.params
assert _SNAP_PUT_SQL.params == ("id", "idx", "term", "conf", "data"), _SNAP_PUT_SQL.params
assert _LOG_DROP_THROUGH_SQL.params == ("i",) and _LOG_TRUNCATE_FROM_SQL.params == ("i",)


# Keys per SELECT ... IN: well below SQLite's smallest compiled-in variable limit (999).
_FETCH_CHUNK_KEYS = 500


def _fetch_size(count: int) -> int:
    """The statement size a lookup of ``count`` keys uses: the next power of two, at most
    ``_FETCH_CHUNK_KEYS``."""
    size = 1
    while size < count:
        size *= 2
    return min(size, _FETCH_CHUNK_KEYS)


@functools.lru_cache(maxsize=16)
def _fetch_sql(count: int) -> str:
    """``SELECT key, value, version FROM kv WHERE key IN (?, ...)`` for ``count`` keys."""
    keys = [sa.bindparam(f"k{i}") for i in range(count)]
    return _Compiled(sa.select(_kv.key, _kv.value, _kv.version).where(_kv.key.in_(keys))).sql


_CONF_ENCODER = msgspec.msgpack.Encoder()
_CONF_DECODER = msgspec.msgpack.Decoder(ConfState)


def _db_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Raise SQLAlchemy's database errors as StorageError (locked, full, corrupt file...)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"sqlite storage: {exc}") from exc

    return wrapper


class SqliteStorage(Storage):
    """A durable store in one SQLite file; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create directory {directory}: {exc}") from exc
        self._sync_mode = "FULL"  # the connection's current PRAGMA synchronous
        self._sync_next = "FULL"  # what the next transaction needs
        self._engine = sa.create_engine(
            sa.URL.create("sqlite", database=self.path),
            poolclass=sa.pool.NullPool,
            connect_args={
                "check_same_thread": False,
                "timeout": limits.SQLITE_BUSY_TIMEOUT_MS / 1000,
            },
        )
        sa.event.listen(self._engine, "connect", self._on_connect)
        sa.event.listen(self._engine, "begin", self._on_begin)
        conn: Connection | None = None
        try:
            conn = self._engine.connect()
            self._conn = conn
            # The DBAPI connection behind it, for the hot paths (held for the store's life).
            self._driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
            self._open_schema()
        except (sa.exc.SQLAlchemyError, sqlite3.Error, StorageError) as exc:
            if conn is not None:
                conn.close()
            self._engine.dispose()
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"cannot open sqlite storage {self.path}: {exc}") from exc

    # --- connection setup -------------------------------------------------------------------

    @staticmethod
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            # Takes effect only while the file is new (before WAL mode writes its header).
            cursor.execute(f"PRAGMA page_size={limits.SQLITE_PAGE_BYTES}")
            # One process owns a store: no shared-memory WAL index and no file locking per
            # transaction, and a second process opening the same file gets "database is locked".
            cursor.execute("PRAGMA locking_mode=EXCLUSIVE")
            cursor.execute(f"PRAGMA cache_size=-{limits.SQLITE_CACHE_KIB}")
            mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"sqlite refused WAL journal mode (got {mode!r})")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA wal_autocheckpoint={limits.SQLITE_WAL_CHECKPOINT_PAGES}")
        finally:
            cursor.close()

    def _on_begin(self, conn: Connection) -> None:
        # Transaction control goes straight to the driver connection SQLAlchemy manages: these
        # statements return no rows and need none of the execution machinery, which would
        # otherwise cost as much as the SELECT of a one-op batch.
        self._begin_on(conn.connection.driver_connection)

    def _begin_on(self, driver: sqlite3.Connection) -> None:
        if self._sync_next != self._sync_mode:
            # Allowed between transactions only, which is exactly where we are.
            driver.execute(f"PRAGMA synchronous={self._sync_next}")
            self._sync_mode = self._sync_next
        driver.execute("BEGIN")

    def _open_schema(self) -> None:
        with self._conn.begin():
            version = self._conn.exec_driver_sql("PRAGMA user_version").scalar_one()
            if version not in (0, 1, SCHEMA_VERSION):
                raise StorageError(
                    f"{self.path} has storage schema version {version}; this exapyte reads "
                    f"versions 1 and {SCHEMA_VERSION}"
                )
            _metadata.create_all(self._conn)
            if version == 1:
                self._upgrade_from_1()
            if version != SCHEMA_VERSION:
                self._conn.exec_driver_sql(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._count: int = self._conn.execute(_COUNT).scalar_one()
            snapshot_index = self._conn.execute(_SNAP_INDEX).scalar()
            self._snapshot_index: int = snapshot_index or 0
            log_last = self._conn.execute(_LOG_LAST).scalar()
            self._last_index: int = max(log_last or 0, self._snapshot_index)

    def _upgrade_from_1(self) -> None:
        """Schema 1 -> 2, inside the opening transaction: Raft's (term, vote) columns become
        the opaque record of the hard state."""
        from exapyte.protocol.raft.core import RaftHardState, encode_hard_state

        row = self._conn.exec_driver_sql(
            "SELECT term, vote, commit_index FROM raft_hard_state WHERE id = 1"
        ).first()
        if row is not None:
            self._conn.execute(
                sa.insert(hard_state_table),
                {
                    "id": _SINGLETON_ID,
                    "commit_index": row[2],
                    "record": encode_hard_state(RaftHardState(row[0], row[1])),
                },
            )
        self._conn.exec_driver_sql("DROP TABLE raft_hard_state")
        _log.info("%s: storage schema upgraded from version 1 to %d", self.path, SCHEMA_VERSION)

    @contextlib.contextmanager
    def transaction(self, sync: bool | None) -> Iterator[Connection]:
        """One SQLite transaction; commits (one fsync when ``sync``) or rolls back.

        ``sync=None`` (reads) keeps the connection's current synchronous level. The hot write
        paths use :meth:`write_transaction` instead.
        """
        if sync is not None:
            self._sync_next = "FULL" if sync else "NORMAL"
        with self._conn.begin():
            yield self._conn

    @contextlib.contextmanager
    def write_transaction(self, sync: bool) -> Iterator[sqlite3.Connection]:
        """One write transaction on the driver connection (the hot paths; module docstring).

        Yields the DBAPI connection for compiled statements with positional parameters.
        Commits (one fsync when ``sync``) or rolls back; SQLite errors are raised as
        :class:`~exapyte.errors.StorageError` after the rollback. Used by this class and by the
        tiered backend, which writes through this store.
        """
        self._sync_next = "FULL" if sync else "NORMAL"
        driver = self._driver
        try:
            self._begin_on(driver)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite storage: {exc}") from exc
        try:
            yield driver
            driver.execute("COMMIT")
        except BaseException as exc:
            if driver.in_transaction:
                try:
                    driver.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite already rolled back (for example after SQLITE_FULL)
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"sqlite storage: {exc}") from exc
            raise

    # --- the tier API (also used by exapyte.storage.tiered) -----------------------------------

    def fetch_records(self, db: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Record]:
        """The stored records of ``keys`` (absent keys are left out), in one query per 500."""
        found: dict[str, Record] = {}
        for start in range(0, len(keys), _FETCH_CHUNK_KEYS):
            chunk = tuple(keys[start : start + _FETCH_CHUNK_KEYS])
            # Padded (with its last key) to one of a few sizes, so that a handful of prepared
            # statements serve every batch (and stay in the driver's statement cache).
            size = _fetch_size(len(chunk))
            if size > len(chunk):
                chunk += (chunk[-1],) * (size - len(chunk))
            for key, value, version in db.execute(_fetch_sql(size), chunk):
                found[key] = Record(value, version)
        return found

    def write_records(
        self,
        db: sqlite3.Connection,
        final: Mapping[str, Record | None],
        before: Mapping[str, Record | None],
        meta: Mapping[str, bytes | None] | None,
    ) -> int:
        """Write the final state of each touched key and the meta updates; return the change
        in the number of keys (apply it with :meth:`note_count` after the commit)."""
        upserts: list[tuple[str, bytes, int]] = []
        deletes: list[tuple[str]] = []
        delta = 0
        for key, record in final.items():
            if record is None:
                if before[key] is not None:  # else created and deleted by this very batch
                    deletes.append((key,))
                    delta -= 1
            else:
                upserts.append((key, record.value, record.version))
                if before[key] is None:
                    delta += 1
        if upserts:
            db.executemany(_UPSERT_SQL.sql, upserts)
        if deletes:
            db.executemany(_DELETE_SQL.sql, deletes)
        if meta:
            meta_upserts = [(n, v) for n, v in meta.items() if v is not None]
            meta_deletes = [(n,) for n, v in meta.items() if v is None]
            if meta_upserts:
                db.executemany(_META_UPSERT_SQL.sql, meta_upserts)
            if meta_deletes:
                db.executemany(_META_DELETE_SQL.sql, meta_deletes)
        return delta

    def note_count(self, delta: int) -> None:
        self._count += delta

    # --- user key space ------------------------------------------------------------------------

    def _read_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One single-statement read straight on the driver connection (the hot read path).

        With the driver's implicit transactions off, a lone SELECT is its own read transaction;
        ``fetchall`` runs the statement to completion so that transaction ends at once. Going
        through SQLAlchemy's execution and BEGIN/COMMIT here cost ~10x SQLite's own work for a
        point lookup (see docs/performance.md). Never called inside :meth:`transaction`.
        """
        try:
            rows = self._driver.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite storage: {exc}") from exc
        return rows[0] if rows else None

    def get(self, key: str) -> Record | None:
        self._check_open()
        check_key(key)
        row = self._read_one(_GET_SQL.sql, (key,))
        return None if row is None else Record(row[0], row[1])

    def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        self._check_open()
        for key in keys:
            check_key(key)
        if not keys:
            return {}
        # One lone SELECT per chunk: each is its own read transaction (see _read_one).
        try:
            return self.fetch_records(self._driver, keys)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite storage: {exc}") from exc

    @_db_errors
    def scan(
        self, start: str = "", end: str | None = None, limit: int = 1000
    ) -> list[tuple[str, Record]]:
        self._check_open()
        check_scan(start, end, limit)
        if limit == 0 or (end is not None and end <= start):
            return []
        with self.transaction(None) as conn:
            if end is None:
                rows = conn.execute(_SCAN_FROM, {"start": start, "limit": limit}).all()
            else:
                rows = conn.execute(_SCAN_RANGE, {"start": start, "end": end, "limit": limit}).all()
        return [(key, Record(value, version)) for key, value, version in rows]

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
        with self.write_transaction(sync) as conn:
            stored = self.fetch_records(conn, list({op.key: None for op in ops}))
            before: dict[str, Record | None] = {}

            def lookup(key: str) -> Record | None:
                before[key] = record = stored.get(key)
                return record

            results, final = execute_ops(ops, lookup)
            delta = self.write_records(conn, final, before, meta)
        self._count += delta
        return results

    def count(self) -> int:
        self._check_open()
        return self._count

    # --- state-machine metadata ----------------------------------------------------------------

    def meta_get(self, name: str) -> bytes | None:
        self._check_open()
        check_meta_name(name)
        row = self._read_one(_META_GET_SQL.sql, (name,))
        return None if row is None else row[0]

    @_db_errors
    def export_state(self) -> bytes:
        self._check_open()
        with self.transaction(None) as conn:
            records = [(k, v, ver) for k, v, ver in conn.execute(_SCAN_ALL)]
            meta = [(n, v) for n, v in conn.execute(_META_ALL)]
        return encode_state(records, meta)

    @_db_errors
    def import_state(self, data: bytes) -> None:
        self._check_open()
        image = decode_state(data)
        with self.transaction(True) as conn:
            conn.execute(_CLEAR_KV)
            conn.execute(_CLEAR_META)
            if image.records:
                conn.execute(
                    _INSERT_KV,
                    [{"key": k, "value": v, "version": ver} for k, v, ver in image.records],
                )
            if image.meta:
                conn.execute(_INSERT_META, [{"name": n, "value": v} for n, v in image.meta])
        self._count = len(image.records)

    # --- consensus metadata --------------------------------------------------------------------

    def _term_at(self, index: int) -> int | None:
        with self.transaction(None) as conn:
            return conn.execute(_LOG_TERM, {"i": index}).scalar()

    @_db_errors
    def load_persisted(self) -> PersistedState:
        self._check_open()
        with self.transaction(None) as conn:
            hard = conn.execute(_HARD_GET).first()
            snap = conn.execute(_SNAP_GET).first()
            rows = conn.execute(_LOG_ALL).all()
        hard_state = HardState() if hard is None else HardState(hard[0], hard[1])
        snapshot = None
        if snap is not None:
            conf = _CONF_DECODER.decode(snap[2])
            snapshot = Snapshot(SnapshotMeta(snap[0], snap[1], conf), snap[3])
        entries = tuple(Entry(term, idx, kind, data) for term, idx, kind, data in rows)
        return PersistedState(hard_state=hard_state, snapshot=snapshot, entries=entries)

    @staticmethod
    def _write_snapshot(db: sqlite3.Connection, snapshot: Snapshot) -> None:
        db.execute(
            _SNAP_PUT_SQL.sql,
            (
                _SINGLETON_ID,
                snapshot.meta.index,
                snapshot.meta.term,
                _CONF_ENCODER.encode(snapshot.meta.conf),
                snapshot.data,
            ),
        )

    @_db_errors
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
            self._snapshot_index, self._last_index, self._term_at, entries, snapshot
        )
        if hard_state is None and snapshot is None and not plan.append:
            return
        with self.write_transaction(sync) as db:
            if snapshot is not None:
                self._write_snapshot(db, snapshot)
                if plan.drop_all:
                    db.execute(_LOG_CLEAR_SQL.sql)
                else:
                    db.execute(_LOG_DROP_THROUGH_SQL.sql, (plan.drop_through,))
            if plan.truncate_from:
                db.execute(_LOG_TRUNCATE_FROM_SQL.sql, (plan.truncate_from,))
            if plan.append:
                db.executemany(
                    _LOG_APPEND_SQL.sql,
                    [(e.index, e.term, e.kind, e.data) for e in plan.append],
                )
            if hard_state is not None:
                db.execute(
                    _HARD_PUT_SQL.sql,
                    (_SINGLETON_ID, hard_state.commit, hard_state.record),
                )
        self._snapshot_index = plan.snapshot_index
        self._last_index = plan.last_index

    @_db_errors
    def compact(self, snapshot: Snapshot) -> None:
        self._check_open()
        check_compact(snapshot, self._snapshot_index, self._last_index, self._term_at)
        with self.write_transaction(True) as db:
            self._write_snapshot(db, snapshot)
            db.execute(_LOG_DROP_THROUGH_SQL.sql, (snapshot.meta.index,))
        self._snapshot_index = snapshot.meta.index

    @_db_errors
    def log_entries(self, lo: int, hi: int) -> list[Entry]:
        self._check_open()
        check_log_range(lo, hi, self._snapshot_index + 1, self._last_index)
        if lo == hi:
            return []
        with self.transaction(None) as conn:
            rows = conn.execute(_LOG_RANGE, {"lo": lo, "hi": hi}).all()
        return [Entry(term, idx, kind, data) for term, idx, kind, data in rows]

    def first_index(self) -> int:
        self._check_open()
        return self._snapshot_index + 1

    def last_index(self) -> int:
        self._check_open()
        return self._last_index

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.close()
        finally:
            self._engine.dispose()
