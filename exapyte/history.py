"""The history record: the one event type the harness, the simulator and the checkers share.

Theory of operation
-------------------
A run (real processes under the harness, or the deterministic simulator) is recorded as a
stream of :class:`Event` values, one JSON object per line of ``history.jsonl``. The record is a
frozen :class:`msgspec.Struct`; its fields keep the names the JSONL format always had::

    {"type": "invoke" | "ok" | "fail" | "info",
     "process": 3 | "nemesis",
     "f": "read" | "write" | "cas" | "add" | "transfer" | "start-partition" | ...,
     "key": "r1",
     "value": ...,                  # cas: [expected, new]; a read's invoke: absent (null)
     "time": 123456789,             # ns since the run started (monotonic, or simulated)
     "node": "n2",                  # the node that answered (completions), if known
     "consistency": "strong",       # the level the op asked for (client ops)
     "session": "3f2a...",          # the client session that ran the op
     "error": "timeout",            # completions: why an op failed or is unknown
     "group": "s3",                 # the replication group that served it
     "index": [2, 14],              # completions: [term_or_epoch, index] (or an int) of the
                                    #   state read or the entry written
     "replica": "n3"}               # the replica whose state the reply came from

Only ``type``, ``process``, ``f`` and ``time`` are always written: a field that is unknown
(``None``) is left out of the line, and every reader takes a missing field as unknown (``null``
reads the same). Lines written before this module existed carried ``key``, ``value``, ``node``,
``consistency`` and ``session`` even when null; they decode to the same records. Fields a reader
does not know are ignored, so an older reader keeps working on a newer line and the other way
around.

There is **one writer**, :class:`HistoryWriter`: it checks each event (its type, its process:
an ``int`` client process or ``"nemesis"``), encodes it as one line with msgspec, and hands the
line to a sink (the harness: a file flushed at once, so a crashed run still leaves its history;
the simulator: memory, and its trace hash). There is **one reader**, :func:`iter_jsonl` (and
:func:`read_jsonl` of a file): a torn last line, the mark of a crash mid-write, is ignored; any
other bad line is an error naming the source and the line. :func:`to_event` turns a mapping
(events built by hand, in tests or tools) into the same record, at that one place.

Values are written as JSON: tuples, sets and frozensets become arrays, bytes are decoded as
UTF-8 (:func:`plain`), so a value reads back as the lists and strings a checker compares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

__all__ = [
    "COMPLETION_TYPES",
    "EVENT_TYPES",
    "NEMESIS",
    "Event",
    "HistoryError",
    "HistoryWriter",
    "decode_event",
    "check_event",
    "encode_event",
    "events_of",
    "iter_jsonl",
    "plain",
    "read_jsonl",
    "to_event",
]

EVENT_TYPES: tuple[str, ...] = ("invoke", "ok", "fail", "info")
COMPLETION_TYPES: tuple[str, ...] = ("ok", "fail", "info")
NEMESIS = "nemesis"  # the process of fault events

EventType = Literal["invoke", "ok", "fail", "info"]


class HistoryError(ValueError):
    """A history line (or event) that is not a valid record; the message says where."""


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """One event of a history (module docstring). ``consistency`` is the requested level."""

    type: EventType
    process: int | str
    f: str
    key: Any = None
    value: Any = None
    time: int | float | None = None
    node: str | None = None
    consistency: str | None = None
    session: str | None = None
    error: str | None = None
    group: Any = None
    index: int | tuple[int, int] | None = None
    replica: str | None = None

    @property
    def is_client(self) -> bool:
        """A client operation's event (an int process), not a fault event."""
        process = self.process
        return type(process) is int

    @property
    def level(self) -> str:
        """The consistency level asked for (``strong`` when the record does not say)."""
        return self.consistency or "strong"

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object it is written as (unknown fields left out)."""
        return msgspec.json.decode(encode_event(self))


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Event)


def plain(value: Any) -> Any:
    """``value`` with what JSON cannot hold as such made plain: bytes decoded (UTF-8, replacing
    what does not decode), inside lists, tuples, sets and dicts too. Anything else is kept."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=repr)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def check_event(event: Event) -> Event:
    """``event`` itself, or :class:`HistoryError` when its type or process is not allowed."""
    if event.type not in EVENT_TYPES:
        raise HistoryError(f"event type must be one of {EVENT_TYPES}, got {event.type!r}")
    process = event.process
    if type(process) is not int and process != NEMESIS:
        raise HistoryError(f"process must be an int or {NEMESIS!r}, got {process!r}")
    return event


def encode_event(event: Event) -> bytes:
    """One JSONL line (with its newline)."""
    try:
        return _ENCODER.encode(event) + b"\n"
    except (TypeError, msgspec.EncodeError) as exc:
        raise HistoryError(f"not JSON-serializable in a history: {event!r:.200} ({exc})") from None


def decode_event(line: bytes | str) -> Event:
    """One record from one line; :class:`msgspec.DecodeError` (malformed JSON) or
    :class:`msgspec.ValidationError` (a record of the wrong shape) otherwise."""
    return _DECODER.decode(line)


def to_event(obj: Event | Mapping[str, Any]) -> Event:
    """``obj`` as a record: an :class:`Event` is returned as it is; a mapping (an event written
    as a dict, e.g. by a test) is converted, unknown keys ignored. :class:`HistoryError` when it
    is not a valid record."""
    if isinstance(obj, Event):
        return obj
    try:
        return check_event(msgspec.convert(dict(obj), Event, strict=False))
    except msgspec.ValidationError as exc:
        raise HistoryError(f"not a history record ({exc}): {dict(obj)!r:.200}") from None


class HistoryWriter:
    """The one writer of histories: checks, encodes and hands each event to ``sink``.

    ``sink`` takes one encoded line (bytes, newline included); ``keep`` also keeps the events
    and their lines in memory (:attr:`events`, :meth:`jsonl`), as the simulator does. Not
    thread-safe by itself: a caller with threads holds its own lock around :meth:`write`.
    """

    def __init__(self, sink: Callable[[bytes], None] | None = None, *, keep: bool = False) -> None:
        self.sink = sink
        self.keep = keep
        self.events: list[Event] = []
        self.lines: list[bytes] = []
        self.counts: dict[str, int] = {t: 0 for t in EVENT_TYPES}  # client events by type
        self.nemesis_events = 0

    def write(self, event: Event) -> bytes:
        """Write one event; returns its encoded line."""
        check_event(event)
        line = encode_event(event)
        if self.sink is not None:
            self.sink(line)
        if self.keep:
            self.events.append(event)
            self.lines.append(line)
        if event.process == NEMESIS:
            self.nemesis_events += 1
        else:
            self.counts[event.type] += 1
        return line

    def jsonl(self) -> str:
        """Every kept event as JSONL text."""
        return b"".join(self.lines).decode("utf-8")


_FIELD_RULES: dict[str, str] = {
    "type": f"type must be one of {EVENT_TYPES}",
    "process": f"process must be an int or {NEMESIS!r}",
    "f": "f must be a string",
    "time": "time must be a number",
    "index": "index must be an int or [term, index]",
}


def _shape_error(exc: msgspec.ValidationError) -> str:
    """What a record of the wrong shape got wrong, in the words of the field's rule."""
    text = str(exc)
    field = text.rsplit("`$.", 1)[-1].rstrip("`").split("[")[0].split(".")[0] if "`$." in text else ""
    rule = _FIELD_RULES.get(field)
    return f"{rule} ({text})" if rule else f"not a history record ({text})"


def iter_jsonl(text: str | bytes, source: str = "<history>") -> Iterator[tuple[int, Event]]:
    """``(line number, event)`` for every record of a JSONL history, in order (blank lines
    skipped). A last line that has no newline and is not complete JSON is a torn write (the
    writer ends every line with one) and is ignored; any other bad line raises
    :class:`HistoryError` naming ``source`` and the line."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    lines = raw.splitlines()
    torn_at = len(lines) if raw and not raw.endswith(b"\n") else -1
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = _DECODER.decode(line)
        except msgspec.ValidationError as exc:
            raise HistoryError(f"{source}:{lineno}: {_shape_error(exc)}") from None
        except msgspec.DecodeError as exc:
            if lineno == torn_at:
                break
            raise HistoryError(f"{source}:{lineno}: not JSON ({exc})") from None
        try:
            check_event(event)
        except HistoryError as exc:
            raise HistoryError(f"{source}:{lineno}: {exc}") from None
        yield lineno, event


def read_jsonl(path: str | Path) -> list[Event]:
    """Every event of a ``history.jsonl`` file (see :func:`iter_jsonl`)."""
    path = Path(path)
    return [event for _, event in iter_jsonl(path.read_bytes(), str(path))]


def events_of(items: Iterable[Event | Mapping[str, Any]]) -> list[Event]:
    """:func:`to_event` of each item."""
    return [to_event(item) for item in items]
