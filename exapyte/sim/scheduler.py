"""The simulated clock and event queue: the only notion of time inside the simulator.

Theory of operation
-------------------
Simulated time is an integer count of nanoseconds that starts at 0 and moves only when the
scheduler pops the next event; nothing reads a wall clock. Events are kept in a heap ordered by
``(time_ns, seq)`` where ``seq`` is the order in which they were scheduled, so two events due at
the same instant always run in the same order: the order is a function of the seed alone.

Everything that happens in a simulation is an event: a message arriving, a node's tick, a client's
timer, a fault starting or ending. A handler may schedule more events; none runs in the past.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from typing import Any

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


def derive_seed(seed: int, *labels: object) -> int:
    """A 64-bit seed for one consumer of randomness, derived from the run's seed and labels.

    Uses blake2b over the decimal/str forms (never Python's ``hash()``, which varies per process),
    so each node, client and link draws from its own stream and adding a consumer does not shift
    the others' choices.
    """
    text = "/".join([str(seed), *(str(label) for label in labels)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Scheduler:
    """A heap of timed callbacks and the current simulated time."""

    def __init__(self) -> None:
        self.now_ns = 0
        self._heap: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.events_run = 0

    def at(self, time_ns: int, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at ``time_ns`` (now, if that is in the past)."""
        time_ns = max(time_ns, self.now_ns)
        self._seq += 1
        heapq.heappush(self._heap, (time_ns, self._seq, fn, args))

    def after(self, delay_ns: int, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now_ns + max(0, int(delay_ns)), fn, *args)

    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, time_ns: int, stop: Callable[[], bool] | None = None) -> None:
        """Run every event due at or before ``time_ns``; the clock ends at ``time_ns``.

        ``stop`` is asked after each event; when it returns True the run ends early, with the
        clock at that event's time.
        """
        heap = self._heap
        while heap and heap[0][0] <= time_ns:
            when, _, fn, args = heapq.heappop(heap)
            self.now_ns = when
            fn(*args)
            self.events_run += 1
            if stop is not None and stop():
                return
        self.now_ns = max(self.now_ns, time_ns)
