"""Clocks the node runtime reads time from.

The runtime never calls ``time`` directly: it asks a :class:`Clock`. The real one reads the
monotonic clock plus an *offset* the harness can move to inject clock faults; tests and the
simulator use :class:`ManualClock`, which only moves when told to, so nothing ever sleeps.
"""

from __future__ import annotations

import time


class Clock:
    """Monotonic seconds, shifted by ``offset_s`` (clock-fault injection) and scaled by ``rate``."""

    def __init__(self, offset_s: float = 0.0, rate: float = 1.0) -> None:
        self.offset_s = offset_s
        self.rate = rate
        self._origin = time.monotonic()

    def now(self) -> float:
        return self._origin + (time.monotonic() - self._origin) * self.rate + self.offset_s

    def wall(self) -> float:
        """Wall-clock seconds since the epoch, shifted like :meth:`now` (for logs and reports)."""
        return time.time() + self.offset_s


class ManualClock(Clock):
    """A clock that stands still until :meth:`advance` is called."""

    def __init__(self, start_s: float = 0.0) -> None:
        super().__init__()
        self._now = start_s

    def now(self) -> float:
        return self._now + self.offset_s

    def wall(self) -> float:
        return self.now()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back (advance by {seconds} s)")
        self._now += seconds
