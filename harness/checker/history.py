"""The checker's view of a history: completed operations with a call and a return time.

Theory of operation
-------------------
Every history format (see :mod:`harness.checker.formats`) is a stream of *events*: a process
invokes an operation, and later the same process sees it complete as ``ok`` (it happened, with
this result), ``fail`` (it definitely did not happen) or ``info`` (the outcome is unknown: a
timeout or a crash). :func:`pair_events` turns the stream into :class:`Operation` values, one per
invocation, each with

- ``call``: the time of the invocation,
- ``ret``: the time of the completion, or :data:`RETURN_NEVER` (+infinity) when the outcome is
  unknown. An operation whose outcome is unknown may have taken effect at any moment after its
  call, or never; an infinite return time lets the search place it anywhere after its call,
  including after every other operation, which is the same as "never" for everyone else.
- ``input``: what was asked (:class:`Call`: function, key, argument),
- ``output``: what was observed (:class:`Output`: status and result value).

An invocation with no completion at the end of the history is treated like ``info``.

Times are only compared, never subtracted by the search: they can be event positions (for
formats without clocks) or monotonic nanoseconds. Two operations are ordered in real time only
when one returns strictly before the other is called; equal times count as concurrent.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

__all__ = [
    "RETURN_NEVER",
    "Call",
    "Event",
    "History",
    "Operation",
    "Output",
    "Status",
    "pair_events",
]

Status = Literal["ok", "fail", "info"]

#: Return time of an operation whose outcome is unknown: it may take effect at any time after its call.
RETURN_NEVER: float = math.inf


class Call(NamedTuple):
    """What a process asked for: the function (``read``, ``cas``, ...), the key, the argument."""

    f: str
    key: Hashable | None
    value: Any


class Output(NamedTuple):
    """What the process observed: ``ok`` with a result, ``fail`` (did not happen) or ``info`` (unknown)."""

    status: Status
    value: Any


@dataclass(frozen=True, slots=True)
class Operation:
    """One invocation and its completion. ``id`` is the position among the history's operations."""

    id: int
    process: int
    input: Call
    output: Output
    call: float
    ret: float

    @property
    def status(self) -> Status:
        return self.output.status

    @property
    def f(self) -> str:
        return self.input.f

    @property
    def key(self) -> Hashable | None:
        return self.input.key

    @property
    def pending(self) -> bool:
        """True when the outcome is unknown (``info`` or never completed)."""
        return self.ret == RETURN_NEVER


@dataclass(frozen=True, slots=True)
class Event:
    """One record of a history stream, already decoded from its format."""

    type: str  # "invoke" | "ok" | "fail" | "info"
    process: Any  # int for clients; anything else (e.g. "nemesis") is not a client operation
    f: str
    key: Hashable | None
    value: Any
    time: float


@dataclass(frozen=True)
class History:
    """Operations read from one file, with what the reader noticed along the way."""

    operations: list[Operation]
    format: str
    source: str = ""
    events_count: int = 0
    skipped_events_count: int = 0  # non-client events (nemesis) and completions without an invoke
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.operations)


def pair_events(events: Iterable[Event]) -> tuple[list[Operation], int, list[str]]:
    """Match each invocation with the next completion of the same process.

    Returns the operations in invocation order, the number of events skipped, and notes about
    anomalies (a completion without an invocation, an invocation while one was still open).
    Events of non-integer processes (nemesis, faults) are skipped: they are not client operations.
    """
    open_ops: dict[int, tuple[int, Event]] = {}
    slots: list[Operation | None] = []
    invokes: list[Event] = []
    skipped = 0
    notes: list[str] = []

    def close(slot: int, invoke: Event, status: Status, value: Any, ret: float) -> None:
        slots[slot] = Operation(
            id=slot,
            process=invoke.process,
            input=Call(invoke.f, invoke.key, invoke.value),
            output=Output(status, value),
            call=invoke.time,
            ret=ret,
        )

    for event in events:
        process = event.process
        if type(process) is not int:
            skipped += 1
            continue
        if event.type == "invoke":
            if process in open_ops:
                slot, prior = open_ops.pop(process)
                notes.append(f"process {process} invoked again before its {prior.f} completed; treated as info")
                close(slot, prior, "info", None, RETURN_NEVER)
            open_ops[process] = (len(slots), event)
            slots.append(None)
            invokes.append(event)
            continue
        entry = open_ops.pop(process, None)
        if entry is None:
            skipped += 1
            if len(notes) < 20:
                notes.append(f"{event.type} of process {process} ({event.f}) has no invocation; skipped")
            continue
        slot, invoke = entry
        if event.type == "ok":
            close(slot, invoke, "ok", event.value, event.time)
        elif event.type == "fail":
            close(slot, invoke, "fail", event.value, event.time)
        elif event.type == "info":
            close(slot, invoke, "info", None, RETURN_NEVER)
        else:
            raise ValueError(f"unknown event type {event.type!r}")
    for slot, invoke in open_ops.values():
        close(slot, invoke, "info", None, RETURN_NEVER)
    operations = [op for op in slots if op is not None]
    assert len(operations) == len(slots)
    return operations, skipped, notes
