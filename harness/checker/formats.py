"""Readers for the history formats the checker accepts, and format detection.

Theory of operation
-------------------
Each reader turns text into a stream of :class:`~harness.checker.history.Event` and hands it to
:func:`~harness.checker.history.pair_events`, so every format ends up as the same list of
:class:`~harness.checker.history.Operation`. The formats:

``jsonl``
    exapyte's own history (:mod:`exapyte.history`: the harness and the simulator write the same
    records): one JSON object per line, ``{"type", "process", "f", "key", "value", "time",
    "node", "consistency", "session"}``, completions with an optional ``error``, unknown fields
    left out, read by the one reader :func:`exapyte.history.iter_jsonl` (a torn last line is
    ignored). ``time`` is monotonic nanoseconds and is used as the call/return time (falling
    back to the line position when absent). Records whose process is not an integer (nemesis
    fault events) are skipped. The ``error`` of a ``fail`` follows the harness's contract
    (:mod:`harness.history`): ``cas-mismatch`` is a compare that was linearized and did not match
    (kept as a ``fail``, which models with ``fail_cas_is_mismatch`` check), while any other error
    is a refusal: the operation did not happen, so it is left out, invocation and all (a model
    that took every failed cas for a mismatch would otherwise judge a refused cas as one).
``etcd``
    Jepsen log lines as shipped with Porcupine's etcd test data:
    ``INFO jepsen.util - <process> :invoke|:ok|:fail|:info :read|:write|:cas <value>``, fields
    separated by tabs or spaces, the value written in EDN (``nil``, ``3``, ``[1 2]``,
    ``:timed-out``). Lines of any other shape are ignored. Times are line positions.
``edn``
    Jepsen/Knossos op maps ``{:process p :type :invoke :f :read :value v}``: either one vector of
    maps, or a sequence of maps. Times are positions in the sequence.
``kv``
    Porcupine's key-value logs: one EDN map per line, with ``:key``. Same reader as ``edn``; the
    name selects the default model.

Values are made hashable on the way in (JSON arrays become tuples), because models keep them in
their states.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from exapyte.history import HistoryError, iter_jsonl
from harness.checker.edn import EdnError, Keyword, iter_forms
from harness.checker.history import Event, History, pair_events

__all__ = [
    "FORMATS",
    "DEFAULT_MODEL_BY_FORMAT",
    "HistoryFormatError",
    "detect_format",
    "parse_history",
    "parse_initial",
    "read_history",
]

#: Every format name :func:`read_history` accepts.
FORMATS: tuple[str, ...] = ("jsonl", "etcd", "edn", "kv")

#: The model a history of each format is checked against when none is named.
DEFAULT_MODEL_BY_FORMAT: dict[str, str] = {
    "jsonl": "kv",
    "etcd": "cas-register-etcd",
    "edn": "cas-register-knossos",
    "kv": "kv",
}

_EVENT_TYPES = frozenset({"invoke", "ok", "fail", "info"})
_ETCD_LINE = re.compile(
    r"^\s*INFO\s+jepsen\.util\s+-\s+(?P<process>\S+)\s+:(?P<type>[\w-]+)\s+:(?P<f>[\w-]+)(?:\s+(?P<value>.*?))?\s*$"
)


class HistoryFormatError(ValueError):
    """The file is not a history of the named (or detected) format. The message says where."""


def _freeze(value: Any) -> Any:
    """Make a decoded JSON value hashable: lists become tuples, objects sorted item tuples."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _name(value: Any) -> str:
    return str(value) if isinstance(value, str) else repr(value)


# --- jsonl ------------------------------------------------------------------------------------


#: The ``error`` of a ``fail`` that means "the compare did not match" (it happened, as a read);
#: a ``fail`` with any other error was refused and did not happen.
JSONL_MISMATCH_ERROR = "cas-mismatch"


def _jsonl_events(text: str, source: str) -> Iterator[Event]:
    """Events of an exapyte history, in file order; a refused operation (``fail`` with an error
    other than ``cas-mismatch``) is left out entirely, its invocation with it."""
    records = list(_jsonl_records(text, source))
    refused: set[int] = set()  # positions of the invocations and completions to leave out
    open_at: dict[Any, int] = {}  # process -> position of its open invocation
    for i, (event, error) in enumerate(records):
        process = event.process
        if type(process) is not int:
            continue
        if event.type == "invoke":
            open_at[process] = i
            continue
        at = open_at.pop(process, None)
        if event.type == "fail" and error is not None and error != JSONL_MISMATCH_ERROR:
            refused.add(i)
            if at is not None:
                refused.add(at)
    for i, (event, _) in enumerate(records):
        if i not in refused:
            yield event


def _jsonl_records(text: str, source: str) -> Iterator[tuple[Event, str | None]]:
    """The records of an exapyte history, read by the one reader (:func:`exapyte.history.iter_jsonl`),
    as the checker's events with each completion's ``error``."""
    try:
        for lineno, record in iter_jsonl(text, source):
            time = record.time
            if time is None:
                time = lineno
            yield Event(
                type=record.type,
                process=record.process,
                f=_name(record.f),
                key=_freeze(record.key),
                value=_freeze(record.value),
                time=time,
            ), (None if record.error is None else str(record.error))
    except HistoryError as exc:
        raise HistoryFormatError(str(exc)) from None


# --- etcd log ---------------------------------------------------------------------------------


def _etcd_value(text: str | None, source: str, lineno: int) -> Any:
    if text is None or text == "":
        return None
    try:
        forms = list(iter_forms(text))
    except EdnError as exc:
        raise HistoryFormatError(f"{source}:{lineno}: bad value {text!r} ({exc})") from None
    if len(forms) != 1:
        raise HistoryFormatError(f"{source}:{lineno}: expected one value, got {text!r}")
    return forms[0]


def _etcd_events(text: str, source: str) -> Iterator[Event]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _ETCD_LINE.match(line)
        if m is None:
            continue
        kind = m.group("type")
        if kind not in _EVENT_TYPES:
            continue
        raw_process = m.group("process")
        process: Any = int(raw_process) if re.fullmatch(r"-?\d+", raw_process) else raw_process
        yield Event(
            type=kind,
            process=process,
            f=m.group("f"),
            key=None,
            value=_etcd_value(m.group("value"), source, lineno),
            time=lineno,
        )


# --- edn op maps ------------------------------------------------------------------------------


def _edn_op_maps(text: str, source: str) -> list[Mapping[Any, Any]]:
    try:
        forms = list(iter_forms(text))
    except EdnError as exc:
        raise HistoryFormatError(f"{source}: {exc}") from None
    if len(forms) == 1 and isinstance(forms[0], tuple):
        forms = list(forms[0])
    for i, form in enumerate(forms):
        if not isinstance(form, dict):
            raise HistoryFormatError(f"{source}: form {i} is not an op map: {form!r:.80}")
    return forms


def _edn_events(text: str, source: str) -> Iterator[Event]:
    for i, op in enumerate(_edn_op_maps(text, source)):
        kind = op.get("type")
        if kind not in _EVENT_TYPES:
            raise HistoryFormatError(f"{source}: op {i} has :type {kind!r}")
        process = op.get("process")
        if isinstance(process, Keyword):
            process = str(process)
        yield Event(
            type=str(kind),
            process=process,
            f=_name(op.get("f")),
            key=op.get("key"),
            value=op.get("value"),
            time=i,
        )


# --- detection and entry points ---------------------------------------------------------------


def detect_format(text: str, path: str | Path | None = None) -> str:
    """Guess the format of ``text`` from its content, using the file name only to break ties."""
    head = text.lstrip()[:4096]
    if not head:
        suffix = Path(path).suffix.lower() if path is not None else ""
        return {".jsonl": "jsonl", ".log": "etcd", ".edn": "edn"}.get(suffix, "jsonl")
    if "jepsen.util" in head and ":invoke" in text:
        return "etcd"
    if head.startswith('{"') or head.startswith("{ \""):
        return "jsonl"
    if head[0] in "[{(":
        first_line = head.splitlines()[0]
        if ":key" in first_line and head[0] == "{":
            return "kv"
        return "edn"
    if path is not None:
        suffix = Path(path).suffix.lower()
        if suffix == ".jsonl":
            return "jsonl"
        if suffix == ".log":
            return "etcd"
        if suffix == ".edn":
            return "edn"
    raise HistoryFormatError(f"{path or 'input'}: cannot tell the history format; name it with --format")


def parse_history(text: str, fmt: str | None = None, source: str = "<text>") -> History:
    """Read a history held in a string. ``fmt`` is one of :data:`FORMATS`, or None to detect it."""
    if fmt is None:
        fmt = detect_format(text, source if source != "<text>" else None)
    if fmt == "jsonl":
        events = list(_jsonl_events(text, source))
    elif fmt == "etcd":
        events = list(_etcd_events(text, source))
    elif fmt in ("edn", "kv"):
        events = list(_edn_events(text, source))
    else:
        raise HistoryFormatError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    operations, skipped, notes = pair_events(events)
    return History(
        operations=operations,
        format=fmt,
        source=source,
        events_count=len(events),
        skipped_events_count=skipped,
        notes=notes,
    )


def read_history(path: str | Path, fmt: str | None = None) -> History:
    """Read the history in file ``path``; ``fmt`` is one of :data:`FORMATS` or None to detect it."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if fmt is None:
        fmt = detect_format(text, path)
    return parse_history(text, fmt, source=str(path))


def parse_initial(text: str) -> Any:
    """A model's initial state written as JSON or EDN (``{"x": 0, "y": 0}``, ``{x 0, y 0}``,
    ``{:x 0 :y 0}``, ``0``), or the name of a file holding one. Raises HistoryFormatError."""
    candidate = Path(text)
    try:
        if len(text) < 4096 and candidate.is_file():
            text = candidate.read_text(encoding="utf-8")
    except OSError:
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        forms = list(iter_forms(text))
    except EdnError as exc:
        raise HistoryFormatError(f"initial state {text!r:.80} is neither JSON nor EDN ({exc})") from None
    if len(forms) != 1:
        raise HistoryFormatError(f"initial state must be one value, got {len(forms)}: {text!r:.80}")
    return forms[0]
