"""Bounded staleness, measured against what the group's leader stamped.

Theory of operation
-------------------
A ``bounded_staleness`` read may be served by a follower only if the state it would read is at
most K versions (log entries) and T milliseconds behind the group's commit. The follower's own
view of the commit index is not a measure of that: a follower that was paused, cut off or slow
has an old view and would judge itself fresh. So the measure comes from the leader. Every
message a leader sends carries a **stamp**: its commit index and its clock when it sent it
(the node attaches it at the transport, ``PeerMessage.commit`` and ``sent_ms``, so every
protocol gets it the same way). A follower keeps the stamps it received from its leader
(:class:`StalenessBound`, newest last) and, at the moment it would serve a read:

- **K**: ``newest stamp's commit - applied index <= K``;
- **T**: the applied state is at least as fresh as the newest stamp whose commit index it has
  applied (at that moment the leader had committed nothing the follower lacks), so its age is
  ``now - that stamp's time``, plus the documented clock skew bound between the two nodes'
  clocks (``data_plane.clock_skew_ms_max``), and it must be ``<= T``. With no such stamp (no
  leader heard, or nothing applied the leader had stamped) the read is refused.

The check runs when the read is handled, on the clock of that moment, so a follower resumed after
a pause judges its state by the wall time that passed, whatever its tick loop has caught up on,
and the messages that waited in its queue during the pause carry their old stamps. A refused read
is redirected to the leader, which serves it through ReadIndex (a leader never judges its own
state fresh: it may have been deposed while it was paused). A leader stamps only once it has
applied an entry of its own term, so its commit index covers its predecessors'.

Clock skew: if the two clocks differ by more than the bound, the measured age may be short by the
difference. The bound is a promise the operator makes (NTP-synchronized hosts typically stay
within a few milliseconds; the default is 250 ms).
"""

from __future__ import annotations

from collections import deque

__all__ = ["STAMPS_KEPT", "StalenessBound"]

STAMPS_KEPT = 256  # a follower's newest leader stamps, enough to span T at the send rate of a busy leader


class StalenessBound:
    """A follower's record of its leader's stamps (module docstring). Single-threaded."""

    def __init__(self, kept: int = STAMPS_KEPT) -> None:
        self._stamps: deque[tuple[int, float]] = deque(maxlen=kept)  # (commit, leader ms), both rising

    def clear(self) -> None:
        """Another leader (or none): its predecessor's stamps say nothing about it."""
        self._stamps.clear()

    def on_stamp(self, commit: int, sent_ms: float) -> None:
        stamps = self._stamps
        if stamps:
            last_commit, last_ms = stamps[-1]
            if sent_ms <= last_ms:
                return  # a stamp older than one already taken (reordered)
            if commit <= last_commit:
                stamps[-1] = (last_commit, sent_ms)  # the same commit, seen later: fresher
                return
        stamps.append((commit, sent_ms))

    @property
    def leader_commit(self) -> int | None:
        return self._stamps[-1][0] if self._stamps else None

    def fresh_as_of(self, applied: int) -> float | None:
        """The leader's time of the newest stamp whose commit index ``applied`` covers."""
        for commit, ms in reversed(self._stamps):
            if commit <= applied:
                return ms
        return None

    def within(self, applied: int, now_ms: float, versions_max: int, age_ms_max: float,
               skew_ms_max: float) -> bool:
        """Whether state at ``applied`` is within K = ``versions_max`` entries and T =
        ``age_ms_max`` of the leader's commit, now."""
        commit = self.leader_commit
        if commit is None or commit - applied > versions_max:
            return False
        as_of = self.fresh_as_of(applied)
        return as_of is not None and now_ms - as_of + skew_ms_max <= age_ms_max
