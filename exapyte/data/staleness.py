"""Bounded staleness, measured against what the group's leader stamped.

Theory of operation
-------------------
A ``bounded_staleness`` read may be served by a follower only if the state it would read is at
most K versions (log entries) and T milliseconds behind the group's commit. The follower's own
view of the commit index is not a measure of that: a follower that was paused, cut off or slow
has an old view and would judge itself fresh. So the measure comes from the leader. Every
message a leader sends carries a **stamp** ``(commit, as_of)``: its commit index and a time of
its clock at which no other leader can have committed anything yet (the node attaches it at the
transport, ``PeerMessage.commit`` and ``sent_ms``, so every protocol gets it the same way).

``as_of`` is not the time the message leaves. A leader cut off from its quorum goes on sending
until its check-quorum steps it down, while a successor elected on the other side commits; a
send-time stamp would make a follower still hearing the old leader judge its old state fresh.
``as_of`` is the time the leader sent its newest heartbeat round that a quorum of voters has
acknowledged (the rounds of read-index confirmation, ``ConsensusCore.leadership_rounds``,
recorded by :class:`LeaderStamps`). Each of those voters was still in the leader's term when
the round reached it, and any successor needs the vote of one of them, given later: so nothing
was committed by another leader before ``as_of``, and everything committed up to then is within
the leader's commit index now. The rounds are the heartbeats a leader sends anyway (every
heartbeat interval, and at once for reads), so stamps cost no message of their own and a
quiesced group stays quiet: its followers' stamps age and their bounded reads go to the leader.

A follower keeps the stamps it received from its leader (:class:`StalenessBound`, newest last)
and, at the moment it would serve a read:

- **K**: ``newest commit stamped - applied index <= K``;
- **T**: the applied state is at least as fresh as the newest stamp whose commit index it has
  applied (at that moment the leader had committed nothing the follower lacks), so its age is
  ``now - that stamp's as_of``, plus the documented clock skew bound between the two nodes'
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

__all__ = ["ROUNDS_KEPT", "STAMPS_KEPT", "LeaderStamps", "StalenessBound"]

STAMPS_KEPT = 256  # a follower's newest leader stamps, enough to span T at the send rate of a busy leader
# A leader's unconfirmed heartbeat rounds whose send times it keeps: more than a leader cut off
# from its quorum sends before its check-quorum steps it down. When they overflow, the oldest
# go: their confirmation then names a round with no time, and the last known as_of is kept.
ROUNDS_KEPT = 1024


class LeaderStamps:
    """A leader's clock times of its heartbeat rounds, and the stamp they give (module
    docstring). Single-threaded; one per replica, reset when its leadership changes."""

    __slots__ = ("_term", "_seen", "_sent", "_as_of")

    def __init__(self) -> None:
        self._term: int | None = None  # the leadership the rounds belong to
        self._seen = 0  # the newest round whose time is known (or skipped)
        self._sent: deque[tuple[int, float]] = deque(maxlen=ROUNDS_KEPT)  # (round, ms), unconfirmed
        self._as_of: float | None = None

    def stamp(self, term: int, commit: int, rounds: tuple[int, int], now_ms: float) -> tuple[int, float] | None:
        """The stamp for what the leader of ``term`` sends now: ``(commit, as_of)``, or None
        while no round of this leadership is confirmed. ``rounds``: the core's
        ``leadership_rounds()``. Called before the messages leave, so a round first seen here
        left at ``now_ms`` or later."""
        sent, confirmed = rounds
        if term != self._term:
            # Rounds sent before this call may have left before the rounds of an earlier term
            # were forgotten: only rounds first seen from now on get a time.
            self._term, self._seen, self._as_of = term, sent, None
            self._sent.clear()
        elif sent > self._seen:
            self._seen = sent
            self._sent.append((sent, now_ms))
        pending = self._sent
        while pending and pending[0][0] <= confirmed:
            self._as_of = pending.popleft()[1]
        return None if self._as_of is None else (commit, self._as_of)


class StalenessBound:
    """A follower's record of its leader's stamps (module docstring). Single-threaded."""

    def __init__(self, kept: int = STAMPS_KEPT) -> None:
        self._stamps: deque[tuple[int, float]] = deque(maxlen=kept)  # (commit, as_of ms), both rising
        self._commit: int | None = None  # the newest commit index stamped (K)

    def clear(self) -> None:
        """Another leader (or none): its predecessor's stamps say nothing about it."""
        self._stamps.clear()
        self._commit = None

    def on_stamp(self, commit: int, as_of_ms: float) -> None:
        if self._commit is None or commit > self._commit:
            self._commit = commit
        stamps = self._stamps
        if stamps:
            last_commit, last_ms = stamps[-1]
            if as_of_ms <= last_ms:
                # No newer as_of: a reordered stamp, or a newer commit under the same confirmed
                # round (its commit counts for K above; "commit <= last_commit as of last_ms"
                # is the stronger claim and stays).
                return
            if commit <= last_commit:
                stamps[-1] = (last_commit, as_of_ms)  # the same commit, confirmed later: fresher
                return
        stamps.append((commit, as_of_ms))

    @property
    def leader_commit(self) -> int | None:
        return self._commit

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
