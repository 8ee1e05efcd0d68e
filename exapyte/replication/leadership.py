"""Where a group's leadership is kept, and when its leader hands it over.

Theory of operation
-------------------
Elections put a leader wherever a candidate wins first; a replication strategy may want it
elsewhere (exapyte/replication/base.py):

- ``sync`` keeps a hierarchical shard's leader in its home region (its requests come from
  there); a group without a home (sharded, centralized) leads wherever it was elected;
- ``async`` has every voter in the home region, so its leader is always there;
- ``optimized`` keeps the leader in the region that **writes most**: the leader counts the
  writes it is asked for by their origin region (``ClientRequest.origin``, the client's region),
  halves the counts at every check (an exponentially decayed window), and the region with at
  least :data:`SHARE` of the counted writes, over at least :data:`MIN_WRITES` of them, is the
  target, if it out-writes the leader's own region by :data:`MARGIN` of them (hysteresis: a
  60/40 mix that wobbles around the threshold does not bounce the leader). Before anything is
  measured, the home region is the target; once a region has been measured writing most, a
  mix without a clear majority, or a quiet spell, leaves the leader where it is.

:class:`LeaderPlacement` is sans-IO and deterministic. The host calls :meth:`on_write` for each
write its leader proposes and :meth:`tick` once per tick; every ``check_ticks`` ticks, a leader
outside its target region gets back a voter of that region to transfer leadership to (the
lowest id among the target region's voters: every check picks the same one, so a transfer that
fails is retried towards the same voter). A transfer just asked for, or a leadership just won,
holds further checks for ``hold_ticks``: a target region that cannot take over (its voters are
down or behind) costs one failed transfer per hold period, never a storm of them. Moving the
leader is only ever an optimisation: every protocol's transfer keeps its safety, and a failed
one leaves the current leader in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["LeaderPlacement", "MARGIN", "MIN_WRITES", "SHARE"]

SHARE = 0.5  # the writes a region must have sent (decayed) for leadership to move there
MIN_WRITES = 8.0  # decayed writes counted before the measured region counts at all
MARGIN = 0.2  # ... and by how much more than the leader's own region (of all counted writes)


class LeaderPlacement:
    def __init__(
        self,
        strategy: str,
        home: str | None,
        region_of: Callable[[str], str | None],
        *,
        check_ticks: int,
        hold_ticks: int | None = None,
    ) -> None:
        if check_ticks < 1:
            raise ValueError(f"check_ticks must be >= 1, got {check_ticks}")
        self.strategy = strategy
        self.home = home
        self.region_of = region_of
        self.check_ticks = check_ticks
        self.hold_ticks = hold_ticks if hold_ticks is not None else 4 * check_ticks
        self.writes: dict[str, float] = {}
        self._ticks = 0
        self._hold_until = 0
        self._was_leader = False
        self._measured = False  # a region has written most since this leadership began
        self.transfers_asked = 0

    def on_write(self, origin: str) -> None:
        """A write this group's leader proposed, sent from ``origin`` (a region id; "": none)."""
        if origin and self.strategy == "optimized":
            self.writes[origin] = self.writes.get(origin, 0.0) + 1.0

    def target(self, here: str | None = None) -> str | None:
        """The region leadership should be in now (None: wherever it is); ``here``: the
        leader's region, which keeps leadership unless another region out-writes it by
        :data:`MARGIN` of the counted writes."""
        if self.strategy == "optimized":
            total = sum(self.writes.values())
            if total < MIN_WRITES:
                # Nothing measured yet: the home region. Measured before and quiet now: stay.
                return None if self._measured else self.home
            region, count = max(self.writes.items(), key=lambda kv: (kv[1], kv[0]))
            if count < SHARE * total:
                return None  # no region writes most by itself: no move is clearly better
            self._measured = True
            if here is not None and region != here and count - self.writes.get(here, 0.0) < MARGIN * total:
                return None
            return region
        if self.strategy in ("sync", "async"):
            return self.home  # None for a group without a home: no preference
        return None

    def tick(self, *, leader: bool, me: str, voters: Callable[[], Sequence[str]]) -> str | None:
        """One tick; returns the voter to hand leadership to now, or None (``voters``: the
        group's voters, asked for only at a check)."""
        self._ticks += 1
        if not leader:
            self._was_leader = False
            self._measured = False
            self.writes.clear()  # a new leader measures from scratch
            return None
        if not self._was_leader:  # just elected: let the group settle first
            self._was_leader = True
            self._hold_until = self._ticks + self.check_ticks
        if self._ticks % self.check_ticks:
            return None
        here = self.region_of(me)
        target = self.target(here)
        for region in self.writes:
            self.writes[region] *= 0.5
        if target is None or self._ticks < self._hold_until or here == target:
            return None
        candidates = sorted(v for v in voters() if v != me and self.region_of(v) == target)
        if not candidates:
            return None
        self._hold_until = self._ticks + self.hold_ticks
        self.transfers_asked += 1
        return candidates[0]
