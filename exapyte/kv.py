"""The replicated key-value state machine, with client sessions for exactly-once writes.

Theory of operation
-------------------
Every write reaches the state machine as a :class:`Command` inside a log entry: the client's id,
its sequence number and the operation. Entries are applied strictly in index order, and one call
to :meth:`KVStateMachine.apply` turns a run of entries into **one** atomic storage batch that
holds the user-key writes, the new applied index and the updated client sessions. Either all of
it is durable or none of it is, so after a crash the applied index, the data and the session
table always agree.

Exactly-once: the session table remembers, per client, the last sequence number applied and the
outcome it produced. A command whose ``seq`` equals the remembered one is a retry: its outcome is
returned again and nothing is written. A lower ``seq`` is a stale duplicate and is refused. A
client keeps at most one write outstanding at a time, so this is enough (Raft thesis §6.3).

Outcomes are computed here, before the batch is written, over an overlay of the batch's own
earlier writes; the storage then receives only unconditional puts and deletes. That is what lets
the outcomes (inside the session table) be written in the same transaction as the data.

Versions: a key's version is 1 when created and grows by one with each overwrite, matching the
storage contract, so every replica computes the same versions from the same log.

Reads for a batch: the keys of every command in the batch are read with one
:meth:`~exapyte.storage.Storage.get_many` before any command is executed.

**A bad committed entry is a failed operation.** The service refuses bad requests before they
are proposed, but a log can still hold an entry that cannot be applied: one written before a
check existed, or data that is not a command at all. Such an entry never makes ``apply`` raise
(that would stop every replica, and again at each restart, since the entry replays from the log):
its outcome is ``bad_request`` with a message saying why, the applied index moves past it, and
nothing is written for it, not even a session record. :func:`command_problem` is the rule, and it
only depends on the entry's bytes and the storage limits, so every replica reaches the same
outcome.

**Write-behind** (``write_behind=True``, what a consensus replica uses). A replica's applied
entries are already durable in its log, so the state machine's own writes need not be on the
request path: :meth:`KVStateMachine.apply` then computes outcomes over an in-memory overlay of
the writes not yet stored (:attr:`KVStateMachine.pending_ops`), and :meth:`KVStateMachine.flush`
stores them, with the applied index and the sessions, as one storage batch. The host flushes
when it would otherwise wait for input (a replica: once
:data:`~exapyte.limits.WRITE_BEHIND_IDLE_OPS` are pending or a tick has passed since its last
store); ``apply`` flushes by itself once :data:`~exapyte.limits.WRITE_BEHIND_OPS_MAX` ops are
pending. Reads (``get``, sessions) see the
overlay first, so they observe every applied entry; ``scan`` and ``snapshot`` flush first. A
crash loses the overlay and the stored applied index is older: the replica re-applies the
missing entries from its log, to the same outcomes (the log is never compacted past a flushed
snapshot). Without a log to replay (``DirectService``) every ``apply`` writes at once.

**Term runs: which entry a session token names.** An index alone does not name a state: a log
entry that was never committed can be truncated and its index reused by another leader's entry.
A session token is therefore ``(term, index)``, and a replica serving a ``session`` read must
know the term of the entry *it applied* at the token's index, long after the log holding that
entry was compacted. The state machine keeps the applied log's terms run-length encoded
(:attr:`KVStateMachine.term_runs`: ``(first index, term)`` each time the term changes along the
applied entries; one run per leader change, whatever the protocol's term order), stored in the
meta ``term_runs`` in the same batch as the applied index, so it travels in snapshots and
survives restarts. At most :data:`~exapyte.limits.TERM_RUNS_MAX` runs are kept (the oldest are
dropped): :meth:`KVStateMachine.term_at` answers None for an index older than the window, and
for an index applied before the runs were kept (a store of an older release starts its runs at
its applied index).
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Union

import msgspec

from exapyte import limits
from exapyte.errors import StorageError
from exapyte.protocol.membership import apply_change, valid_change
from exapyte.protocol.types import ConfState, Entry, EntryKind, decode_conf_change
from exapyte.storage import Delete, Put, Record, Storage
from exapyte.storage.base import check_key, check_value
from exapyte.wire import CasOp, ControlOp, DeleteOp, PutOp, ReplyCode

log = logging.getLogger(__name__)

# ControlOp is applied only by the control group's state machine (exapyte/control/group.py).
WriteOp = Union[PutOp, DeleteOp, CasOp, ControlOp]

APPLIED_META = "applied_index"
# The term (or epoch, or round) of the entry at the applied index: with the index it names the
# state a read saw (every reply carries both, for the checkers).
APPLIED_TERM_META = "applied_term"
# The group's configuration as the applied log says: the index of the last membership change
# applied (the configuration version: every replica that applied it agrees) and the members it
# left. It travels in snapshots; requests carry the version (docs/control-plane.md).
CONF_META = "conf"
# The applied log's terms, run-length encoded: [[first index, term], ...] (module docstring).
TERM_RUNS_META = "term_runs"
_RUNS_ENCODER = msgspec.msgpack.Encoder()
_RUNS_DECODER = msgspec.msgpack.Decoder(list[tuple[int, int]])


class GroupConf(msgspec.Struct, frozen=True, array_like=True):
    version: int = 0
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()

    def changed(self, index: int, data: bytes) -> GroupConf:
        """The configuration after the membership change ``data`` applied at ``index``, read
        exactly as the consensus cores read it (``exapyte.protocol.membership.apply_change``); an
        entry that does not decode changes only the version (the cores apply it as no change)."""
        try:
            change = decode_conf_change(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return GroupConf(index, self.voters, self.learners)
        if not valid_change(change):
            return GroupConf(index, self.voters, self.learners)
        conf = apply_change(ConfState(voters=self.voters, learners=self.learners), change)
        return GroupConf(index, conf.voters, conf.learners)


_CONF_ENCODER = msgspec.msgpack.Encoder()
_CONF_DECODER = msgspec.msgpack.Decoder(GroupConf)
SESSION_META_PREFIX = "session:"
# Every client id the service accepts names a session record the storage accepts.
assert len(SESSION_META_PREFIX) + limits.CLIENT_ID_BYTES_MAX <= limits.META_NAME_BYTES_MAX


class Command(msgspec.Struct, frozen=True, array_like=True):
    """The payload of a NORMAL log entry."""

    client_id: str
    seq: int
    op: WriteOp


class Outcome(msgspec.Struct, frozen=True, array_like=True):
    """What applying one command produced; sent back to the client that proposed it."""

    code: str
    value: bytes | None = None
    version: int = 0
    index: int = 0


class _Session(msgspec.Struct, array_like=True):
    seq: int
    outcome: Outcome


_command_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(Command)
_session_decoder = msgspec.msgpack.Decoder(_Session)


def encode_command(command: Command) -> bytes:
    return _command_encoder.encode(command)


def decode_command(data: bytes) -> Command:
    return _command_decoder.decode(data)


_SEQ_STORABLE = range(-(2**63), 2**64)  # msgpack's integers: the session record holds seq


def command_problem(cmd: Command) -> str | None:
    """Why the state machine cannot apply ``cmd``, or None when it can.

    The rule is exactly what applying needs to store, no more: a key and values the storage
    accepts, a client id whose session record name fits ``META_NAME_BYTES_MAX``, a seq msgpack
    can encode. The service's checks at the edge are stricter and may change between versions;
    this rule decides what an existing log applies to, on every replica, so changing it
    changes the meaning of logs already written.
    """
    client_id = cmd.client_id
    if type(client_id) is not str:
        return f"client_id must be a str, got {type(client_id).__name__}"
    try:
        name_bytes = len((SESSION_META_PREFIX + client_id).encode("utf-8"))
    except UnicodeEncodeError:
        return "client_id is not valid UTF-8 (a lone surrogate)"
    if name_bytes > limits.META_NAME_BYTES_MAX:
        return (
            f"client_id is {name_bytes - len(SESSION_META_PREFIX)} bytes: its session record's "
            f"name would be longer than META_NAME_BYTES_MAX={limits.META_NAME_BYTES_MAX}"
        )
    if type(cmd.seq) is not int or cmd.seq not in _SEQ_STORABLE:
        return "seq must be an int within -2**63..2**64-1"
    op = cmd.op
    if type(op) not in (PutOp, DeleteOp, CasOp):
        return f"a command holds a put, delete or cas, not {type(op).__name__}"
    try:
        check_key(op.key)
        if isinstance(op, PutOp):
            check_value(op.value)
        elif isinstance(op, CasOp):
            if op.expected is not None and type(op.expected) is not bytes:
                return f"cas expected must be bytes or None, got {type(op.expected).__name__}"
            if op.new is not None:
                check_value(op.new, "cas new")
    except StorageError as exc:
        return str(exc)
    return None


class _Refused(msgspec.Struct, frozen=True):
    """A committed entry the state machine does not apply, and why (see the module docstring)."""

    reason: str


def _admit(entry: Entry, problem_of: Callable[[Command], str | None]) -> Command | _Refused:
    """The command a NORMAL entry holds, or why it is not applied."""
    try:
        cmd = decode_command(entry.data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        log.warning("log entry %d does not decode as a command: %s", entry.index, exc)
        return _Refused(
            f"log entry {entry.index} does not hold a valid command ({len(entry.data)} bytes); "
            f"nothing was applied"
        )
    problem = problem_of(cmd)
    if problem is not None:
        log.warning("log entry %d is not applied: %s", entry.index, problem)
        return _Refused(f"{problem}; nothing was applied")
    return cmd


class KVStateMachine:
    """Applies committed entries to a :class:`~exapyte.storage.Storage`. Single-threaded."""

    def __init__(
        self,
        storage: Storage,
        *,
        sessions_cached_max: int = limits.SESSION_REPLIES_MAX,
        sync: bool = True,
        write_behind: bool = False,
    ) -> None:
        self.storage = storage
        self.sync = sync
        self.write_behind = write_behind
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._sessions_cached_max = sessions_cached_max
        self.applied_index = self._load_applied()
        self.conf = self._stored_conf = self._load_conf()
        self.term_runs = self._load_term_runs()
        # term_runs changed since they were last stored (a store of an older release: seeded)
        self._runs_dirty = bool(self.term_runs) and self.storage.meta_get(TERM_RUNS_META) is None
        # write-behind: applied but not yet stored (see the module docstring)
        self._pending_ops: list[Put | Delete] = []
        self._pending_records: dict[str, Record | None] = {}
        self._pending_sessions: dict[str, _Session] = {}
        self.entries_refused = 0  # committed entries applied as failed operations

    def _load_conf(self) -> GroupConf:
        raw = self.storage.meta_get(CONF_META)
        if not raw:
            return GroupConf()
        try:
            return _CONF_DECODER.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StorageError(f"stored group configuration is unreadable: {exc}") from exc

    def _load_term_runs(self) -> list[tuple[int, int]]:
        raw = self.storage.meta_get(TERM_RUNS_META)
        if raw:
            try:
                return _RUNS_DECODER.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise StorageError(f"stored term runs are unreadable: {exc}") from exc
        if self.applied_index:
            # A store written before the runs were kept: only the applied entry's term is known.
            return [(self.applied_index, self.applied_term)]
        return []

    def term_at(self, index: int) -> int | None:
        """The term of the entry this state machine applied at ``index`` (0 for index 0), or
        None when it cannot tell: not applied yet, or older than the runs kept (module
        docstring)."""
        if index == 0:
            return 0
        if index > self.applied_index:
            return None
        at = bisect.bisect_right(self.term_runs, index, key=lambda run: run[0]) - 1
        return self.term_runs[at][1] if at >= 0 else None

    def _note_terms(self, entries: Sequence[Entry]) -> None:
        runs = self.term_runs
        for entry in entries:
            if not runs or runs[-1][1] != entry.term:
                runs.append((entry.index, entry.term))
                self._runs_dirty = True
        if len(runs) > limits.TERM_RUNS_MAX:
            del runs[: len(runs) - limits.TERM_RUNS_MAX]

    def _runs_meta(self, meta: dict[str, bytes | None]) -> None:
        if self._runs_dirty:
            meta[TERM_RUNS_META] = _RUNS_ENCODER.encode(self.term_runs)

    @property
    def conf_version(self) -> int:
        """The configuration version: the index of the last membership change applied."""
        return self.conf.version

    def _load_applied(self) -> int:
        raw = self.storage.meta_get(APPLIED_META)
        self._stored_applied = int(raw.decode()) if raw else 0
        term = self.storage.meta_get(APPLIED_TERM_META)
        self.applied_term = int(term.decode()) if term else 0
        return self._stored_applied

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        pending = self._pending_records
        if key in pending:
            return pending[key]
        return self.storage.get(key)

    def scan(self, start: str, end: str | None, limit: int) -> list[tuple[str, Record]]:
        self.flush()
        return self.storage.scan(start, end, limit)

    @property
    def pending_ops(self) -> int:
        """Applied writes not stored yet (always 0 without write-behind)."""
        return len(self._pending_ops)

    @property
    def has_pending(self) -> bool:
        """Whether :meth:`flush` has anything to store."""
        return bool(self._pending_sessions) or bool(self._pending_ops) or self._runs_dirty or (
            self._stored_applied != self.applied_index or self._stored_conf is not self.conf
        )

    # -- writes -------------------------------------------------------------------------------

    def apply(
        self,
        entries: Sequence[Entry],
        before_write: Callable[[list[tuple[Entry, Outcome | None]]], None] | None = None,
    ) -> list[tuple[Entry, Outcome | None]]:
        """Apply entries in order; return each NORMAL entry's outcome (None for the others).

        Entries at or below the applied index are skipped (a replay after a restart). An entry
        that cannot be applied gets a ``bad_request`` outcome and raises nothing (see the module
        docstring); a gap in the indexes is a broken invariant and raises ``AssertionError``.
        ``before_write`` receives the outcomes once they are computed and before the batch is
        written: a host whose entries are already committed (durable on a quorum) may answer
        clients then, because a crash before the write replays the same entries to the same
        outcomes. Nothing else runs between the callback and the write, so no read can observe
        the state in between.
        """
        commands: list[tuple[Entry, Command | _Refused | None]] = []
        last = self.applied_index
        for entry in entries:
            if entry.index <= last:
                continue
            if entry.index != last + 1:
                raise AssertionError(
                    f"state machine gap: applied {last}, next entry index {entry.index}"
                )
            last = entry.index
            if entry.kind != EntryKind.NORMAL or not entry.data:
                commands.append((entry, None))
            else:
                commands.append((entry, _admit(entry, self.command_problem)))
        if last == self.applied_index:
            return []
        results: list[tuple[Entry, Outcome | None]] = []
        # Each chunk is at most one storage batch's worth of writes, stored with its own
        # applied index (or added to the write-behind overlay, which stays below the limit).
        step = limits.WRITE_BEHIND_OPS_MAX
        for start in range(0, len(commands), step):
            results += self._apply_chunk(commands[start : start + step], before_write)
        return results

    def _apply_chunk(
        self,
        commands: list[tuple[Entry, Command | _Refused | None]],
        before_write: Callable[[list[tuple[Entry, Outcome | None]]], None] | None,
    ) -> list[tuple[Entry, Outcome | None]]:
        last = commands[-1][0].index
        pending = self._pending_records
        overlay: dict[str, Record | None] = {}  # each key's record as of the command reading it
        wanted: list[str] = []
        for _, cmd in commands:
            if isinstance(cmd, Command) and cmd.op.key not in overlay:
                key = cmd.op.key
                if key in pending:
                    overlay[key] = pending[key]
                else:
                    overlay[key] = None
                    wanted.append(key)
        if wanted:
            stored = self.storage.get_many(wanted)
            for key in wanted:
                overlay[key] = stored.get(key)
        batch: list[Put | Delete] = []
        touched: dict[str, _Session] = {}
        results: list[tuple[Entry, Outcome | None]] = []
        for entry, cmd in commands:
            if cmd is None:
                if entry.kind == EntryKind.CONF_CHANGE:
                    self.conf = self.conf.changed(entry.index, entry.data)
                results.append((entry, None))
            elif isinstance(cmd, _Refused):
                self.entries_refused += 1
                reason = cmd.reason.encode("utf-8", "replace")
                results.append((entry, Outcome(ReplyCode.BAD_REQUEST, reason, 0, entry.index)))
            else:
                outcome = self._apply_command(cmd, entry.index, overlay, batch, touched)
                results.append((entry, outcome))
        if before_write is not None:
            before_write(results)
        self._note_terms([entry for entry, _ in commands])
        if self.write_behind:
            self._pending_ops.extend(batch)
            for op in batch:
                pending[op.key] = overlay[op.key]
            self._pending_sessions.update(touched)
            self.applied_index = last
            self.applied_term = commands[-1][0].term
            for client_id, session in touched.items():
                self._remember(client_id, session)
            if len(self._pending_ops) >= limits.WRITE_BEHIND_OPS_MAX:
                self.flush()
            return results
        self.applied_term = commands[-1][0].term
        meta: dict[str, bytes | None] = {
            APPLIED_META: str(last).encode(), APPLIED_TERM_META: str(self.applied_term).encode(),
        }
        for client_id, session in touched.items():
            meta[SESSION_META_PREFIX + client_id] = _command_encoder.encode(session)
        if self._stored_conf is not self.conf:
            meta[CONF_META] = _CONF_ENCODER.encode(self.conf)
        self._runs_meta(meta)
        self.storage.apply(batch, meta, sync=self.sync)
        self._stored_conf = self.conf
        self._runs_dirty = False
        self.applied_index = self._stored_applied = last
        for client_id, session in touched.items():
            self._remember(client_id, session)
        return results

    def flush(self) -> None:
        """Store the write-behind overlay (applied writes, applied index, sessions) as one
        batch, without an fsync of its own. A no-op when nothing is pending."""
        if not self.has_pending:
            return
        meta: dict[str, bytes | None] = {
            APPLIED_META: str(self.applied_index).encode(),
            APPLIED_TERM_META: str(self.applied_term).encode(),
        }
        for client_id, session in self._pending_sessions.items():
            meta[SESSION_META_PREFIX + client_id] = _command_encoder.encode(session)
        if self._stored_conf is not self.conf:
            meta[CONF_META] = _CONF_ENCODER.encode(self.conf)
        self._runs_meta(meta)
        # At most 2 x WRITE_BEHIND_OPS_MAX ops (apply flushes at the limit, a chunk adds at
        # most that many): one atomic batch, within STORAGE_BATCH_OPS_MAX.
        self.storage.apply(self._pending_ops, meta, sync=self.sync)
        self._runs_dirty = False
        self._stored_applied = self.applied_index
        self._stored_conf = self.conf
        self._pending_ops = []
        self._pending_records = {}
        self._pending_sessions = {}

    def _apply_command(
        self,
        cmd: Command,
        index: int,
        overlay: dict[str, Record | None],
        batch: list[Put | Delete],
        touched: dict[str, _Session],
    ) -> Outcome:
        session = touched.get(cmd.client_id) or self._session(cmd.client_id)
        if session is not None:
            if cmd.seq == session.seq:
                return session.outcome  # a retry: answer again, write nothing
            if cmd.seq < session.seq:
                return Outcome(
                    ReplyCode.BAD_REQUEST,
                    f"stale sequence {cmd.seq} < {session.seq}".encode(),
                    0,
                    index,
                )
        outcome = self._apply_op(cmd.op, index, overlay, batch)
        touched[cmd.client_id] = _Session(cmd.seq, outcome)
        return outcome

    def command_problem(self, cmd: Command) -> str | None:
        """Why this state machine does not apply ``cmd`` (see :func:`command_problem`)."""
        return command_problem(cmd)

    def _apply_op(
        self, op: Any, index: int, overlay: dict[str, Record | None], batch: list[Put | Delete]
    ) -> Outcome:
        key = op.key
        current = overlay[key]
        if isinstance(op, PutOp):
            new = Record(op.value, current.version + 1 if current else 1)
            overlay[key] = new
            batch.append(Put(key, op.value))
            outcome = Outcome(ReplyCode.OK, None, new.version, index)
        elif isinstance(op, DeleteOp):
            overlay[key] = None
            if current is not None:
                batch.append(Delete(key))
            code = ReplyCode.OK if current is not None else ReplyCode.NOT_FOUND
            outcome = Outcome(code, None, 0, index)
        else:
            current_value = current.value if current else None
            if current_value != op.expected:
                outcome = Outcome(
                    ReplyCode.CAS_FAILED, current_value, current.version if current else 0, index
                )
            elif op.new is None:
                overlay[key] = None
                if current is not None:
                    batch.append(Delete(key))
                outcome = Outcome(ReplyCode.OK, None, 0, index)
            else:
                new = Record(op.new, current.version + 1 if current else 1)
                overlay[key] = new
                batch.append(Put(key, op.new))
                outcome = Outcome(ReplyCode.OK, None, new.version, index)
        return outcome

    def _session(self, client_id: str) -> _Session | None:
        session = self._sessions.get(client_id)
        if session is not None:
            self._sessions.move_to_end(client_id)
            return session
        session = self._pending_sessions.get(client_id)  # evicted from the cache, not stored yet
        if session is not None:
            return session
        raw = self.storage.meta_get(SESSION_META_PREFIX + client_id)
        if raw is None:
            return None
        session = _session_decoder.decode(raw)
        self._remember(client_id, session)
        return session

    def _remember(self, client_id: str, session: _Session) -> None:
        self._sessions[client_id] = session
        self._sessions.move_to_end(client_id)
        while len(self._sessions) > self._sessions_cached_max:
            self._sessions.popitem(last=False)

    def cached_outcome(self, client_id: str, seq: int) -> Outcome | None:
        """The outcome of ``(client_id, seq)`` if it is the last one applied for that client."""
        session = self._session(client_id)
        if session is not None and session.seq == seq:
            return session.outcome
        return None

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """An image of the whole state machine at :attr:`applied_index`."""
        self.flush()
        return self.storage.export_state()

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot image."""
        self.storage.import_state(data)
        self._sessions.clear()
        self._pending_ops = []
        self._pending_records = {}
        self._pending_sessions = {}
        self.applied_index = self._load_applied()
        self.conf = self._stored_conf = self._load_conf()
        self.term_runs = self._load_term_runs()
        # term_runs changed since they were last stored (a store of an older release: seeded)
        self._runs_dirty = bool(self.term_runs) and self.storage.meta_get(TERM_RUNS_META) is None

