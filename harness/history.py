"""The history: the contract between the harness and its checkers.

Theory of operation
-------------------
A run is recorded as a stream of **events**, one JSON object per line of ``history.jsonl``::

    {"type": "invoke" | "ok" | "fail" | "info",
     "process": 3 | "nemesis",
     "f": "read" | "write" | "cas" | "add" | "transfer" | "start-partition" | ...,
     "key": "r1" | null,
     "value": ...,                      # cas: [expected, new]; a read's invoke: null
     "time": 123456789,                 # monotonic ns since the test started
     "node": "n2" | null,               # the node that answered (completions), if known
     "consistency": "strong",
     "session": "3f2a..." | null}       # the client session (client id) that ran the op

plus these optional fields, written only when known (every reader treats a missing one as
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

:class:`HistoryRecorder` is the only writer: thread-safe, it appends and flushes each event as it
happens, so a crashed run still leaves its history. :func:`read_events` and :func:`pair_ops` give
checkers the events and the (invoke, completion) pairs, keeping every field.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "COMPLETION_TYPES",
    "EVENT_TYPES",
    "HistoryRecorder",
    "Op",
    "iter_client_events",
    "nemesis_intervals",
    "pair_ops",
    "read_events",
]

EVENT_TYPES = ("invoke", "ok", "fail", "info")
COMPLETION_TYPES = ("ok", "fail", "info")
NEMESIS = "nemesis"


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
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")
        self.counts: dict[str, int] = {t: 0 for t in EVENT_TYPES}
        self.nemesis_events = 0

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
        consistency: str = "strong",
        session: str | None = None,
        error: str | None = None,
        group: Any = None,
        index: int | tuple[int, int] | list[int] | None = None,
        replica: str | None = None,
    ) -> dict[str, Any]:
        """Write one event (timestamped now) and return it. ``group``, ``index`` and ``replica``
        are written only when given."""
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {type!r}")
        if not (isinstance(process, int) and not isinstance(process, bool)) and process != NEMESIS:
            raise ValueError(f"process must be an int or {NEMESIS!r}, got {process!r}")
        with self._lock:
            if self._file is None:
                raise RuntimeError(f"history {self.path} is closed")
            event: dict[str, Any] = {
                "type": type,
                "process": process,
                "f": f,
                "key": key,
                "value": value,
                "time": self.now_ns(),
                "node": node,
                "consistency": consistency,
                "session": session,
            }
            if error is not None:
                event["error"] = error
            if group is not None:
                event["group"] = group
            if index is not None:
                event["index"] = list(index) if isinstance(index, (tuple, list)) else index
            if replica is not None:
                event["replica"] = replica
            self._file.write(json.dumps(event, separators=(",", ":"), default=_jsonable) + "\n")
            self._file.flush()
            if process == NEMESIS:
                self.nemesis_events += 1
            else:
                self.counts[type] += 1
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON-serializable in a history: {value!r}")


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every event of a ``history.jsonl``, in order. A torn last line (crash) is ignored."""
    events = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines):
                break
            raise ValueError(f"{path}:{lineno}: not a JSON history record") from None
        if event.get("type") not in EVENT_TYPES:
            raise ValueError(f"{path}:{lineno}: type must be one of {EVENT_TYPES}")
        events.append(event)
    return events


@dataclass(frozen=True)
class Op:
    """One client operation: its invocation and completion (``None`` if it never completed)."""

    invoke: dict[str, Any]
    complete: dict[str, Any] | None

    @property
    def process(self) -> int:
        return int(self.invoke["process"])

    @property
    def f(self) -> str:
        return str(self.invoke["f"])

    @property
    def key(self) -> Any:
        return self.invoke.get("key")

    @property
    def type(self) -> str:
        """``ok``, ``fail`` or ``info`` (never completed counts as ``info``)."""
        return "info" if self.complete is None else str(self.complete["type"])

    @property
    def value(self) -> Any:
        """The completion's value when ``ok``, else the invocation's."""
        if self.complete is not None and self.complete["type"] == "ok":
            return self.complete.get("value")
        return self.invoke.get("value")

    @property
    def error(self) -> str | None:
        return None if self.complete is None else self.complete.get("error")

    @property
    def call_ns(self) -> int:
        return int(self.invoke["time"])

    @property
    def ret_ns(self) -> int | None:
        """Completion time, or None when the outcome is unknown (``info`` or never completed)."""
        if self.complete is None or self.complete["type"] == "info":
            return None
        return int(self.complete["time"])

    @property
    def end_ns(self) -> int | None:
        """When the harness stopped waiting (also for ``info``), or None if it never completed."""
        return None if self.complete is None else int(self.complete["time"])

    @property
    def node(self) -> str | None:
        return None if self.complete is None else self.complete.get("node")

    @property
    def consistency(self) -> str:
        """The level the operation asked for (``strong`` when the history does not say)."""
        return str(self.invoke.get("consistency") or "strong")

    @property
    def session(self) -> str | None:
        session = self.invoke.get("session")
        return None if session is None else str(session)

    @property
    def group(self) -> Any:
        """The replication group that served it: the completion's ``group``, else the invocation's."""
        if self.complete is not None and self.complete.get("group") is not None:
            return self.complete["group"]
        return self.invoke.get("group")

    @property
    def index(self) -> Any:
        """The completion's ``index`` (an int or ``[term, index]``), or None."""
        return None if self.complete is None else self.complete.get("index")

    @property
    def replica(self) -> str | None:
        """The replica whose state the reply came from: ``replica``, else ``node``."""
        if self.complete is None:
            return None
        replica = self.complete.get("replica")
        return self.node if replica is None else str(replica)


def pair_ops(events: Iterable[dict[str, Any]]) -> list[Op]:
    """Client operations (nemesis events left out), in invocation order."""
    open_ops: dict[int, int] = {}
    slots: list[list[Any]] = []
    for event in events:
        process = event.get("process")
        if not isinstance(process, int) or isinstance(process, bool):
            continue
        if event["type"] == "invoke":
            if process in open_ops:
                raise ValueError(f"process {process} invoked {event['f']} while an op was still open")
            open_ops[process] = len(slots)
            slots.append([event, None])
        else:
            slot = open_ops.pop(process, None)
            if slot is None:
                raise ValueError(f"a {event['type']} of process {process} has no invocation")
            slots[slot][1] = event
    return [Op(invoke, complete) for invoke, complete in slots]


def nemesis_intervals(events: Iterable[dict[str, Any]], end_ns: int | None = None) -> list[dict[str, Any]]:
    """Fault intervals from nemesis events: ``{"fault", "start_ns", "end_ns", "value"}``.

    A ``start-X`` completion opens interval X; the next ``stop-X`` completion closes it. An
    interval still open at the end runs to ``end_ns`` (default: the last event's time).
    """
    opened: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    last = 0
    for event in events:
        last = max(last, int(event.get("time", 0)))
        if event.get("process") != NEMESIS or event["type"] == "invoke":
            continue
        f = str(event["f"])
        if f.startswith("start-"):
            fault = f[len("start-"):]
            opened[fault] = {"fault": fault, "start_ns": int(event["time"]), "end_ns": None, "value": event.get("value")}
        elif f.startswith("stop-"):
            fault = f[len("stop-"):]
            interval = opened.pop(fault, None)
            if interval is not None:
                interval["end_ns"] = int(event["time"])
                out.append(interval)
    for interval in opened.values():
        interval["end_ns"] = end_ns if end_ns is not None else last
        out.append(interval)
    return sorted(out, key=lambda i: i["start_ns"])


def iter_client_events(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for event in events:
        if event.get("process") != NEMESIS:
            yield event
