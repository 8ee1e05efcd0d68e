"""The storage contract every backend implements.

Theory of operation
-------------------
A replica keeps three kinds of state, and the storage layer keeps them apart so that no user key
can ever reach the other two:

- the **user key space**: ``key -> Record(value, version)``, changed only by atomic batches of
  :data:`KVOp` (``Put``, ``Delete``, ``Cas``) through :meth:`Storage.apply`;
- **state-machine metadata** (``meta``): named byte strings the state machine updates in the
  same transaction as the user records it applies (the applied index, the client-session table);
- **consensus metadata**: the hard state (term, vote, commit), the log and the latest snapshot,
  written through :meth:`Storage.persist` and :meth:`Storage.compact`.

Versions count writes of one key: a ``Put`` (or matching ``Cas``) creates a key at version 1
and each later overwrite adds 1. A delete removes the record, so re-creating the key starts at
version 1 again. :attr:`OpResult.version` is the key's version *after* the op, 0 when the key is
absent afterwards.

A batch is validated completely before anything is touched: a bad key, value, op or meta name
raises :class:`~exapyte.errors.StorageError` and nothing of the batch is applied. Inside a batch
later ops see the effects of earlier ones. Each backend computes the batch with
:func:`execute_ops` over its own lookup function and then writes the final state of every
touched key at once, so the semantics are the same everywhere and only the writing differs.

Key order is Unicode code point order, which is also the byte order of the keys' UTF-8 encoding
(SQLite's BINARY collation): every backend returns scans in that one order.

The log is contiguous: it holds entries ``first_index() .. last_index()`` with no gap, and the
snapshot (if any) stands for every entry up to ``first_index() - 1``. The storage checks this
and refuses writes that would break it.

A store has a single owner thread; see the backends for what that means.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Self

import msgspec

from exapyte import limits
from exapyte.errors import StorageError
from exapyte.protocol.types import Entry, HardState, PersistedState, Snapshot


class Record(msgspec.Struct, frozen=True):
    """A stored value and its per-key version (1 on create, +1 per overwrite)."""

    value: bytes
    version: int


class Put(msgspec.Struct, frozen=True, tag="put"):
    """Set ``key`` to ``value`` (creating it at version 1 or bumping its version)."""

    key: str
    value: bytes


class Delete(msgspec.Struct, frozen=True, tag="delete"):
    """Remove ``key``. Deleting an absent key succeeds and changes nothing."""

    key: str


class Cas(msgspec.Struct, frozen=True, tag="cas"):
    """Compare-and-set: if the key's value equals ``expected``, set it to ``new``.

    ``expected=None`` means the key must be absent; ``new=None`` deletes the key on a match.
    """

    key: str
    expected: bytes | None
    new: bytes | None


KVOp = Put | Delete | Cas


class OpResult(msgspec.Struct, frozen=True):
    """The outcome of one op of a batch.

    ``ok`` is False only for a ``Cas`` whose comparison failed; then nothing was written,
    ``version`` is the key's current version (0 when absent) and ``previous`` the current record.
    Otherwise ``version`` is the key's version after the op (0 when the op left it absent) and
    ``previous`` the record the op replaced or removed (None when the key was absent).
    """

    ok: bool
    version: int
    previous: Record | None


class LogCompacted(StorageError):
    """The requested log entries were discarded by a snapshot: send or use the snapshot."""


class LogUnavailable(StorageError):
    """The requested log entries are past the end of the log."""


class StateImage(msgspec.Struct, frozen=True, array_like=True):
    """The encoded form of :meth:`Storage.export_state`: sorted records and sorted meta."""

    format: int
    records: list[tuple[str, bytes, int]]
    meta: list[tuple[str, bytes]]


STATE_IMAGE_FORMAT = 1
_STATE_ENCODER = msgspec.msgpack.Encoder()
_STATE_DECODER = msgspec.msgpack.Decoder(StateImage)


# --- validation ------------------------------------------------------------------------------


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid user key, else raise StorageError saying why."""
    if type(key) is not str:
        raise StorageError(f"key must be a str, got {type(key).__name__}")
    if not key:
        raise StorageError("key must not be empty")
    # Fast path: a short ASCII-or-not str cannot exceed the limit (a code point is <= 4 bytes).
    if len(key) * 4 > limits.KEY_BYTES_MAX or not key.isascii():
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise StorageError(f"key {key!r} is not valid Unicode (lone surrogate)") from exc
        if size > limits.KEY_BYTES_MAX:
            raise StorageError(
                f"key is {size} bytes in UTF-8, more than KEY_BYTES_MAX={limits.KEY_BYTES_MAX}"
            )
    return key


def check_value(value: object, what: str = "value") -> bytes:
    """Return ``value`` if it is a valid user value, else raise StorageError saying why."""
    if type(value) is not bytes:
        raise StorageError(f"{what} must be bytes, got {type(value).__name__}")
    if len(value) > limits.VALUE_BYTES_MAX:
        raise StorageError(
            f"{what} is {len(value)} bytes, more than VALUE_BYTES_MAX={limits.VALUE_BYTES_MAX}"
        )
    return value


def check_ops(ops: Sequence[KVOp]) -> None:
    """Validate a whole batch before any of it is applied."""
    if isinstance(ops, (str, bytes)) or not isinstance(ops, Sequence):
        raise StorageError(f"ops must be a sequence of Put/Delete/Cas, got {type(ops).__name__}")
    if len(ops) > limits.STORAGE_BATCH_OPS_MAX:
        raise StorageError(
            f"batch has {len(ops)} ops, more than STORAGE_BATCH_OPS_MAX="
            f"{limits.STORAGE_BATCH_OPS_MAX}"
        )
    for position, op in enumerate(ops):
        kind = type(op)
        try:
            if kind is Put:
                check_key(op.key)
                check_value(op.value)
            elif kind is Delete:
                check_key(op.key)
            elif kind is Cas:
                check_key(op.key)
                if op.expected is not None:
                    check_value(op.expected, "cas expected")
                if op.new is not None:
                    check_value(op.new, "cas new")
            else:
                raise StorageError(f"must be Put, Delete or Cas, got {kind.__name__}")
        except StorageError as exc:
            raise StorageError(f"op {position} of the batch: {exc}") from None


def check_meta(meta: Mapping[str, bytes | None] | None) -> None:
    """Validate meta updates: names are non-empty str, values bytes (or None = delete)."""
    if meta is None:
        return
    if not isinstance(meta, Mapping):
        raise StorageError(f"meta must be a mapping of name -> bytes | None, got {type(meta)}")
    for name, value in meta.items():
        if type(name) is not str or not name:
            raise StorageError(f"meta name must be a non-empty str, got {name!r}")
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise StorageError(f"meta name {name!r} is not valid Unicode") from exc
        if size > limits.META_NAME_BYTES_MAX:
            raise StorageError(
                f"meta name is {size} bytes, more than META_NAME_BYTES_MAX="
                f"{limits.META_NAME_BYTES_MAX}"
            )
        if value is not None:
            if type(value) is not bytes:
                raise StorageError(
                    f"meta {name!r} must be bytes or None, got {type(value).__name__}"
                )
            if len(value) > limits.META_VALUE_BYTES_MAX:
                raise StorageError(
                    f"meta {name!r} is {len(value)} bytes, more than META_VALUE_BYTES_MAX="
                    f"{limits.META_VALUE_BYTES_MAX}"
                )


def check_meta_name(name: object) -> str:
    if type(name) is not str or not name:
        raise StorageError(f"meta name must be a non-empty str, got {name!r}")
    return name


def check_scan(start: object, end: object, limit: object) -> None:
    if type(start) is not str:
        raise StorageError(f"scan start must be a str, got {type(start).__name__}")
    if end is not None and type(end) is not str:
        raise StorageError(f"scan end must be a str or None, got {type(end).__name__}")
    if type(limit) is not int or not 0 <= limit <= limits.SCAN_LIMIT_MAX:
        raise StorageError(
            f"scan limit must be an int in 0..SCAN_LIMIT_MAX={limits.SCAN_LIMIT_MAX}, "
            f"got {limit!r}"
        )
    for bound in (start, end):
        if bound is not None:
            try:
                bound.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise StorageError(f"scan bound {bound!r} is not valid Unicode") from exc


def check_entries(entries: Sequence[Entry]) -> None:
    """Entries must be Entry values with consecutive indexes >= 1."""
    previous: Entry | None = None
    for entry in entries:
        if type(entry) is not Entry:
            raise StorageError(f"log entries must be Entry, got {type(entry).__name__}")
        if type(entry.index) is not int or entry.index < 1:
            raise StorageError(f"log entry index must be an int >= 1, got {entry.index!r}")
        if type(entry.term) is not int or entry.term < 0:
            raise StorageError(f"log entry term must be an int >= 0, got {entry.term!r}")
        if type(entry.data) is not bytes:
            raise StorageError(f"log entry {entry.index} data must be bytes")
        if previous is not None and entry.index != previous.index + 1:
            raise StorageError(
                f"log entries must have consecutive indexes, got {previous.index} "
                f"then {entry.index}"
            )
        previous = entry


def check_snapshot(snapshot: object) -> Snapshot:
    if type(snapshot) is not Snapshot:
        raise StorageError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    if snapshot.meta.index < 0 or snapshot.meta.term < 0:
        raise StorageError(f"snapshot index and term must be >= 0, got {snapshot.meta}")
    if type(snapshot.data) is not bytes:
        raise StorageError("snapshot data must be bytes")
    return snapshot


def check_hard_state(hard_state: object) -> None:
    if hard_state is not None and type(hard_state) is not HardState:
        raise StorageError(f"hard_state must be a HardState, got {type(hard_state).__name__}")


# --- shared semantics ------------------------------------------------------------------------


def execute_ops(
    ops: Sequence[KVOp], lookup: Callable[[str], Record | None]
) -> tuple[list[OpResult], dict[str, Record | None]]:
    """Compute a validated batch: one OpResult per op and the final state of each touched key.

    ``lookup`` returns a key's record before the batch. The final state maps every key the
    batch wrote to its new record, or None when the batch left it deleted. Keys a failed Cas or
    a delete of an absent key only looked at are left out, so nothing is rewritten needlessly.
    """
    results: list[OpResult] = []
    final: dict[str, Record | None] = {}
    seen: dict[str, Record | None] = {}
    for op in ops:
        key = op.key
        if key in seen:
            current = seen[key]
        else:
            current = seen[key] = lookup(key)
        kind = type(op)
        if kind is Put:
            new: bytes | None = op.value  # type: ignore[union-attr]
        elif kind is Delete:
            new = None
        else:  # Cas
            expected = op.expected  # type: ignore[union-attr]
            matches = current is None if expected is None else (
                current is not None and current.value == expected
            )
            if not matches:
                results.append(OpResult(False, 0 if current is None else current.version, current))
                continue
            new = op.new  # type: ignore[union-attr]
        if new is None:
            results.append(OpResult(True, 0, current))
            if current is not None:
                seen[key] = final[key] = None
        else:
            record = Record(new, 1 if current is None else current.version + 1)
            seen[key] = final[key] = record
            results.append(OpResult(True, record.version, current))
    return results, final


def encode_state(records: list[tuple[str, bytes, int]], meta: list[tuple[str, bytes]]) -> bytes:
    """Encode a state image; the caller passes records and meta sorted by key and name."""
    return _STATE_ENCODER.encode(StateImage(STATE_IMAGE_FORMAT, records, meta))


def decode_state(data: bytes) -> StateImage:
    """Decode and validate a state image made by :func:`encode_state`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StorageError(f"state image must be bytes, got {type(data).__name__}")
    try:
        image = _STATE_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"state image cannot be decoded: {exc}") from exc
    if image.format != STATE_IMAGE_FORMAT:
        raise StorageError(
            f"state image format {image.format} is not supported (expected {STATE_IMAGE_FORMAT})"
        )
    previous: str | None = None
    for key, value, version in image.records:
        check_key(key)
        check_value(value)
        if version < 1:
            raise StorageError(f"state image record {key!r} has version {version} < 1")
        if previous is not None and key <= previous:
            raise StorageError("state image records are not sorted by key without duplicates")
        previous = key
    check_meta(dict(image.meta))
    if len({name for name, _ in image.meta}) != len(image.meta):
        raise StorageError("state image has duplicate meta names")
    return image


# --- the interface ---------------------------------------------------------------------------


class Storage(abc.ABC):
    """One replica's durable state: user records, state-machine meta, consensus metadata.

    Every method raises :class:`~exapyte.errors.StorageError` after :meth:`close` and on misuse
    (bad key, value, batch, log range). Backends are single-owner: call a store from one thread.
    """

    _closed: bool = False

    # --- lifecycle ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{type(self).__name__} is closed")

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the store. Idempotent; any later call raises StorageError."""

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- user key space ------------------------------------------------------------------------

    @abc.abstractmethod
    def get(self, key: str) -> Record | None:
        """The record stored under ``key``, or None."""

    def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        """The stored records of ``keys``; absent keys are left out of the result.

        Backends answer it in one lookup where they can (the state machine reads every key of
        a batch this way); this default asks :meth:`get` once per key.
        """
        found: dict[str, Record] = {}
        for key in keys:
            record = self.get(key)
            if record is not None:
                found[key] = record
        return found

    @abc.abstractmethod
    def scan(
        self, start: str = "", end: str | None = None, limit: int = 1000
    ) -> list[tuple[str, Record]]:
        """Up to ``limit`` records with ``start <= key < end`` (no upper bound when ``end`` is
        None), in ascending code point order. ``limit`` is 0..SCAN_LIMIT_MAX."""

    @abc.abstractmethod
    def apply(
        self,
        ops: Sequence[KVOp],
        meta: Mapping[str, bytes | None] | None = None,
        *,
        sync: bool = True,
    ) -> list[OpResult]:
        """Apply ``ops`` and the ``meta`` updates (None deletes a name) atomically.

        Later ops see earlier ones. Returns one OpResult per op. With ``sync=True`` the batch
        is durable (survives kill -9 and power loss where the backend is durable at all) when
        this returns. A validation error raises StorageError and applies nothing.
        """

    def put(self, key: str, value: bytes, *, sync: bool = True) -> OpResult:
        return self.apply((Put(key, value),), sync=sync)[0]

    def delete(self, key: str, *, sync: bool = True) -> OpResult:
        return self.apply((Delete(key),), sync=sync)[0]

    def cas(
        self, key: str, expected: bytes | None, new: bytes | None, *, sync: bool = True
    ) -> OpResult:
        return self.apply((Cas(key, expected, new),), sync=sync)[0]

    @abc.abstractmethod
    def count(self) -> int:
        """Number of user keys."""

    # --- state-machine metadata ----------------------------------------------------------------

    @abc.abstractmethod
    def meta_get(self, name: str) -> bytes | None:
        """A state-machine meta value, or None. Meta names never collide with user keys."""

    @abc.abstractmethod
    def export_state(self) -> bytes:
        """All user records (with versions) and meta, msgpack-encoded; equal contents give
        equal bytes on every backend."""

    @abc.abstractmethod
    def import_state(self, data: bytes) -> None:
        """Atomically replace all user records and meta with an :meth:`export_state` image."""

    # --- consensus metadata --------------------------------------------------------------------

    @abc.abstractmethod
    def load_persisted(self) -> PersistedState:
        """Hard state, the latest snapshot (or None) and the log entries after it, in order."""

    @abc.abstractmethod
    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        *,
        sync: bool = True,
    ) -> None:
        """Persist a Ready's stable state in one transaction.

        1. ``snapshot``: replaces the stored one; entries ``<= snapshot.meta.index`` are dropped.
           When the log holds an entry at the snapshot's index with another term, the whole log
           is dropped (Raft §7: the snapshot and the log disagree). A snapshot older than the
           stored one raises StorageError.
        2. ``entries`` (consecutive indexes): entries already covered by the snapshot are
           skipped; the first remaining entry must be at most ``last_index() + 1``; every stored
           entry at or after it is deleted (conflict truncation) and the entries are appended.
        3. ``hard_state`` replaces the stored one when not None.
        """

    @abc.abstractmethod
    def compact(self, snapshot: Snapshot) -> None:
        """Store a locally taken snapshot and drop the entries up to its index; later entries
        stay. Its index must lie in ``[snapshot index, last_index()]`` and, when the log holds
        that entry, the terms must agree."""

    @abc.abstractmethod
    def log_entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi``. Raises :class:`LogCompacted` when ``lo <
        first_index()`` and :class:`LogUnavailable` when ``hi > last_index() + 1``."""

    @abc.abstractmethod
    def first_index(self) -> int:
        """Index of the first entry kept: snapshot index + 1 (1 without a snapshot)."""

    @abc.abstractmethod
    def last_index(self) -> int:
        """Index of the last entry; the snapshot index when the log is empty; else 0."""


# --- shared log arithmetic -------------------------------------------------------------------


class LogPlan(msgspec.Struct, frozen=True):
    """What one :meth:`Storage.persist` call does to the log, decided before writing anything.

    ``drop_through``: delete entries with index <= this; ``drop_all``: delete the whole log;
    ``truncate_from``: delete entries with index >= this (0 = none); ``append``: the entries to
    write; ``snapshot_index``/``last_index``: the log bounds afterwards.
    """

    drop_through: int
    drop_all: bool
    truncate_from: int
    append: tuple[Entry, ...]
    snapshot_index: int
    last_index: int


def plan_persist(
    snapshot_index: int,
    last_index: int,
    term_at: Callable[[int], int | None],
    entries: Sequence[Entry],
    snapshot: Snapshot | None,
) -> LogPlan:
    """Validate a persist call against the current log bounds and say what it changes.

    ``term_at(i)`` returns the term of the stored entry ``i`` (None when not stored).
    """
    check_entries(entries)
    drop_through = 0
    drop_all = False
    if snapshot is not None:
        check_snapshot(snapshot)
        index = snapshot.meta.index
        if index < snapshot_index:
            raise StorageError(
                f"snapshot at index {index} is older than the stored one at {snapshot_index}"
            )
        stored_term = term_at(index) if snapshot_index < index <= last_index else None
        if index >= last_index or (stored_term is not None and stored_term != snapshot.meta.term):
            drop_all = True
            last_index = index
        drop_through = index
        snapshot_index = index
    remaining = tuple(entry for entry in entries if entry.index > snapshot_index)
    truncate_from = 0
    if remaining:
        first = remaining[0].index
        if first > last_index + 1:
            raise StorageError(
                f"log entries start at {first} but the log ends at {last_index}: a gap"
            )
        if first <= last_index:
            truncate_from = first
        last_index = remaining[-1].index
    return LogPlan(drop_through, drop_all, truncate_from, remaining, snapshot_index, last_index)


def check_compact(
    snapshot: Snapshot, snapshot_index: int, last_index: int, term_at: Callable[[int], int | None]
) -> None:
    check_snapshot(snapshot)
    index = snapshot.meta.index
    if index < snapshot_index:
        raise StorageError(f"compact to {index} is older than the snapshot at {snapshot_index}")
    if index > last_index:
        raise StorageError(f"compact to {index} is past the last log index {last_index}")
    stored_term = term_at(index) if index > snapshot_index else None
    if stored_term is not None and stored_term != snapshot.meta.term:
        raise StorageError(
            f"compact snapshot term {snapshot.meta.term} differs from the log's term "
            f"{stored_term} at index {index}"
        )


def check_log_range(lo: int, hi: int, first_index: int, last_index: int) -> None:
    if type(lo) is not int or type(hi) is not int or lo > hi:
        raise StorageError(f"log range must be ints with lo <= hi, got [{lo!r}, {hi!r})")
    if lo < first_index:
        raise LogCompacted(f"log entries before {first_index} were compacted (asked from {lo})")
    if hi > last_index + 1:
        raise LogUnavailable(f"log ends at {last_index} (asked up to {hi - 1})")
