"""The history: the contract between the harness and its checkers.

Theory of operation
-------------------
A run is recorded as a stream of **events**, one JSON object per line of ``history.jsonl``. The
record type, its fields and its encoding are :mod:`exapyte.history` (:class:`~exapyte.history.Event`,
a frozen msgspec Struct shared with the simulator, which writes the very same records)::

    {"type": "invoke" | "ok" | "fail" | "info",
     "process": 3 | "nemesis",
     "f": "read" | "write" | "cas" | "add" | "transfer" | "start-partition" | ...,
     "key": "r1",
     "value": ...,                      # cas: [expected, new]; a read's invoke: none
     "time": 123456789,                 # monotonic ns since the test started
     "node": "n2",                      # the node that answered (completions), if known
     "consistency": "strong",           # the level asked for
     "session": "3f2a..."}              # the client session (client id) that ran the op

plus these, written only when known (every reader treats a missing field, or a null one, as
unknown; see docs/consistency-checkers.md for what the per-level checkers conclude from them):

``"group"``
    the replication group (shard group) that served the operation: any JSON scalar;
``"index"``
    on completions: the position of the state the reply read (a read: the applied index it was
    served from) or wrote (a write: the log index its entry got), as an integer or as
    ``[term_or_epoch, index]``;
``"replica"``
    the replica whose state the reply came from (defaults to ``"node"``, the node that answered);

and, on completions only, an optional ``"error"`` (why an op failed or is unknown: ``"timeout"``,
``"cas-mismatch"``, ``"not_leader"``...). Each client process has at most one operation open; its
``invoke`` is followed by exactly one completion of the same process:

``ok``
    the operation happened, with the value shown;
``fail``
    it definitely did not happen (a refusal, or a compare-and-set whose compare did not match:
    ``"error": "cas-mismatch"``);
``info``
    the outcome is unknown (a timeout, a lost connection): it may have happened, at any time
    after its invocation, or never. A process whose op ended in ``info`` is retired; its worker
    continues as a new process number, as in Jepsen.

Fault events use ``"process": "nemesis"``: an ``invoke`` and an ``info`` per fault transition
(``start-partition``, ``stop-kill``...), with the fault as data in ``value``.

:class:`HistoryRecorder` writes the harness's history through the one writer
(:class:`exapyte.history.HistoryWriter`): thread-safe, it appends and flushes each event as it
happens, so a crashed run still leaves its history. :func:`read_events` (the one reader,
:func:`exapyte.history.read_jsonl`) and :func:`pair_ops` give checkers the events and the
(invoke, completion) pairs as :class:`~exapyte.history.Event` records; :func:`pair_ops` also
takes events written as dicts (by hand, in tests), converted at that one place
(:func:`exapyte.history.to_event`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from exapyte.history import (
    COMPLETION_TYPES,
    EVENT_TYPES,
    NEMESIS,
    Event,
    HistoryError,
    HistoryWriter,
    plain,
    read_jsonl,
    to_event,
)

__all__ = [
    "COMPLETION_TYPES",
    "EVENT_TYPES",
    "NEMESIS",
    "Event",
    "HistoryRecorder",
    "Op",
    "iter_client_events",
    "nemesis_intervals",
    "pair_ops",
    "read_events",
]


class HistoryRecorder:
    """Appends events to ``path`` (JSONL), one line per event, flushed at once. Thread-safe.

    ``clock`` returns monotonic nanoseconds; times are recorded relative to the recorder's start.
    """

    def __init__(self, path: str | Path, *, clock: Any = time.monotonic_ns) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self.origin_ns: int = clock()
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = self.path.open("wb")
        self._writer = HistoryWriter(self._write_line)

    def _write_line(self, line: bytes) -> None:
        assert self._file is not None
        self._file.write(line)
        self._file.flush()

    @property
    def counts(self) -> dict[str, int]:
        """Client events written, by type."""
        return self._writer.counts

    @property
    def nemesis_events(self) -> int:
        return self._writer.nemesis_events

    def now_ns(self) -> int:
        """Nanoseconds since the recorder started."""
        return int(self._clock() - self.origin_ns)

    def record(
        self,
        type: str,
        process: int | str,
        f: str,
        key: str | None = None,
        value: Any = None,
        *,
        node: str | None = None,
        consistency: str | None = "strong",
        session: str | None = None,
        error: str | None = None,
        group: Any = None,
        index: int | tuple[int, int] | list[int] | None = None,
        replica: str | None = None,
    ) -> Event:
        """Write one event (timestamped now) and return it. Fault events (``process`` is
        ``"nemesis"``) carry no level: their ``consistency`` is dropped."""
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {type!r}")
        if not (isinstance(process, int) and not isinstance(process, bool)) and process != NEMESIS:
            raise ValueError(f"process must be an int or {NEMESIS!r}, got {process!r}")
        with self._lock:
            if self._file is None:
                raise RuntimeError(f"history {self.path} is closed")
            event = Event(
                type,  # type: ignore[arg-type]
                process,
                f,
                key=key,
                value=plain(value),
                time=self.now_ns(),
                node=node,
                consistency=None if process == NEMESIS else (consistency or None),
                session=session,
                error=error,
                group=group,
                index=tuple(index) if isinstance(index, (tuple, list)) else index,  # type: ignore[arg-type]
                replica=replica,
            )
            try:
                self._writer.write(event)
            except HistoryError as exc:
                raise TypeError(str(exc)) from None
            return event

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> HistoryRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path) -> list[Event]:
    """Every event of a ``history.jsonl``, in order. A torn last line (crash) is ignored; any
    other bad line is a ``ValueError`` naming the file and the line."""
    return read_jsonl(path)


@dataclass(frozen=True)
class Op:
    """One client operation: its invocation and completion (``None`` if it never completed)."""

    invoke: Event
    complete: Event | None

    @property
    def process(self) -> int:
        return int(self.invoke.process)

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def key(self) -> Any:
        return self.invoke.key

    @property
    def type(self) -> str:
        """``ok``, ``fail`` or ``info`` (never completed counts as ``info``)."""
        return "info" if self.complete is None else self.complete.type

    @property
    def value(self) -> Any:
        """The completion's value when ``ok``, else the invocation's."""
        if self.complete is not None and self.complete.type == "ok":
            return self.complete.value
        return self.invoke.value

    @property
    def error(self) -> str | None:
        return None if self.complete is None else self.complete.error

    @property
    def call_ns(self) -> int:
        return int(self.invoke.time or 0)

    @property
    def ret_ns(self) -> int | None:
        """Completion time, or None when the outcome is unknown (``info`` or never completed)."""
        if self.complete is None or self.complete.type == "info":
            return None
        return int(self.complete.time or 0)

    @property
    def end_ns(self) -> int | None:
        """When the harness stopped waiting (also for ``info``), or None if it never completed."""
        return None if self.complete is None else int(self.complete.time or 0)

    @property
    def node(self) -> str | None:
        return None if self.complete is None else self.complete.node

    @property
    def consistency(self) -> str:
        """The level the operation asked for (``strong`` when the history does not say)."""
        return self.invoke.level

    @property
    def session(self) -> str | None:
        session = self.invoke.session
        return None if session is None else str(session)

    @property
    def group(self) -> Any:
        """The replication group that served it: the completion's ``group``, else the invocation's."""
        if self.complete is not None and self.complete.group is not None:
            return self.complete.group
        return self.invoke.group

    @property
    def index(self) -> Any:
        """The completion's ``index`` (an int or ``(term, index)``), or None."""
        return None if self.complete is None else self.complete.index

    @property
    def replica(self) -> str | None:
        """The replica whose state the reply came from: ``replica``, else ``node``."""
        if self.complete is None:
            return None
        replica = self.complete.replica
        return self.node if replica is None else str(replica)


def pair_ops(events: Iterable[Event | Mapping[str, Any]]) -> list[Op]:
    """Client operations (nemesis events left out), in invocation order. Events may be records
    or dicts of the same fields (converted here, the one place that does)."""
    open_ops: dict[int, int] = {}
    slots: list[list[Any]] = []
    for item in events:
        event = to_event(item)
        process = event.process
        if type(process) is not int:
            continue
        if event.type == "invoke":
            if process in open_ops:
                raise ValueError(f"process {process} invoked {event.f} while an op was still open")
            open_ops[process] = len(slots)
            slots.append([event, None])
        else:
            slot = open_ops.pop(process, None)
            if slot is None:
                raise ValueError(f"a {event.type} of process {process} has no invocation")
            slots[slot][1] = event
    return [Op(invoke, complete) for invoke, complete in slots]


def nemesis_intervals(events: Iterable[Event | Mapping[str, Any]], end_ns: int | None = None) -> list[dict[str, Any]]:
    """Fault intervals from nemesis events: ``{"fault", "start_ns", "end_ns", "value"}``.

    A ``start-X`` completion opens interval X; the next ``stop-X`` completion closes it. An
    interval still open at the end runs to ``end_ns`` (default: the last event's time).
    """
    opened: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    last = 0
    for item in events:
        event = to_event(item)
        at = int(event.time or 0)
        last = max(last, at)
        if event.process != NEMESIS or event.type == "invoke":
            continue
        f = event.f
        if f.startswith("start-"):
            fault = f[len("start-"):]
            opened[fault] = {"fault": fault, "start_ns": at, "end_ns": None, "value": event.value}
        elif f.startswith("stop-"):
            fault = f[len("stop-"):]
            interval = opened.pop(fault, None)
            if interval is not None:
                interval["end_ns"] = at
                out.append(interval)
    for interval in opened.values():
        interval["end_ns"] = end_ns if end_ns is not None else last
        out.append(interval)
    return sorted(out, key=lambda i: i["start_ns"])


def iter_client_events(events: Iterable[Event | Mapping[str, Any]]) -> Iterator[Event]:
    for item in events:
        event = to_event(item)
        if event.process != NEMESIS:
            yield event
