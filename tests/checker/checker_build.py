"""Helpers shared by the checker tests: building small histories by hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


from harness.checker import Event, Operation, pair_events

# One event: (process, type, f, value) or (process, type, f, key, value).
Row = tuple[Any, ...]


def ops_from(rows: Sequence[Row]) -> list[Operation]:
    """Operations from event rows written in history order; times are the row positions."""
    events = []
    for t, row in enumerate(rows):
        if len(row) == 4:
            process, kind, f, value = row
            key = None
        else:
            process, kind, f, key, value = row
        events.append(Event(type=kind, process=process, f=f, key=key, value=value, time=t))
    operations, _, _ = pair_events(events)
    return operations


