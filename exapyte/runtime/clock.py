"""Clocks the node runtime reads time from.

The runtime never calls ``time`` directly: it asks a :class:`Clock`. The real one reads the
monotonic clock plus an *offset* the harness can move to inject clock faults; tests and the
simulator use :class:`ManualClock`, which only moves when told to, so nothing ever sleeps.
"""

from __future__ import annotations

import time


class Clock:
    """Monotonic seconds, shifted by ``offset_s`` and running at ``rate`` (clock-fault injection).

    A forward jump of the offset makes the node see time pass at once (its timers fire early);
    a rate above 1 makes its timers run fast, below 1 slow. Both model the clock faults a harness
    injects; neither ever makes this clock go backwards unless the offset is moved back.
    """

    def __init__(self, offset_s: float = 0.0, rate: float = 1.0) -> None:
        self.offset_s = offset_s
        self.rate = rate
        self._base_real = time.monotonic()
        self._base_virtual = self._base_real

    def now(self) -> float:
        return self._base_virtual + (time.monotonic() - self._base_real) * self.rate + self.offset_s

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on, without a jump."""
        if not 0 < rate <= 100:
            raise ValueError(f"clock rate must be within (0, 100], got {rate}")
        real = time.monotonic()
        self._base_virtual += (real - self._base_real) * self.rate
        self._base_real = real
        self.rate = rate

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
