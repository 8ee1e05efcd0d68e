"""The control plane's feed: versioned publications and a subscriber that detects gaps.

Theory of operation
-------------------
Every committed change moves the control plane from version ``v - 1`` to ``v``; its leader
publishes a :class:`Publication` carrying ``v`` and the command that made it (a delta). A
subscriber (every node, every client) keeps a :class:`FeedState` and offers it each publication
it receives, in whatever order and multiplicity the network delivers them:

- ``v == current + 1``: **apply** it (the subscriber's mirror executes the command);
- ``v <= current``: a **duplicate** or an **older** version: ignored;
- ``v > current + 1``: a **gap** (at least one version was missed; ZeroMQ PUB/SUB drops when a
  subscriber is slow or reconnecting): deltas can no longer be applied, the feed is marked
  *resync needed* and every further delta is ignored until :meth:`FeedState.install` takes a
  full snapshot at some version (the answer to a resync request), after which deltas above it
  apply again.

The feed is only a hint for routing: nothing correct depends on receiving it (every request
carries the shard's configuration version, and a node refuses a stale one; docs/control-plane.md).

:class:`Mirror` pairs a FeedState with a local :class:`~exapyte.control.plane.ControlPlane` copy:
it applies deltas, installs resync snapshots, and checks that each applied delta leads to the
version it announced (a mismatch means the mirror diverged: it asks for a resync).

Not wired yet: the node's PUB socket still sends its static topology as version 1.
"""

from __future__ import annotations

import enum

import msgspec

from exapyte.control.plane import Command, ControlPlane, PlaneError

__all__ = ["FeedState", "Mirror", "Publication", "Verdict"]


class Publication(msgspec.Struct, frozen=True):
    """Version ``version`` of the control plane and the command, committed at log ``index``,
    that produced it (the indexes of failed commands in between are never published)."""

    version: int
    epoch: int
    index: int
    command: Command


class Verdict(enum.Enum):
    APPLY = "apply"
    DUPLICATE = "duplicate"
    OLDER = "older"
    GAP = "gap"  # resync needed (set on the FeedState)
    WAITING = "waiting"  # a resync is pending: deltas are ignored until a snapshot arrives


class FeedState:
    """A subscriber's position in the feed (module docstring). Single-threaded."""

    def __init__(self, version: int = 0) -> None:
        self.version = version
        self.resync_needed = False
        self.counts: dict[Verdict, int] = dict.fromkeys(Verdict, 0)

    def offer(self, version: int) -> Verdict:
        """Classify a publication of ``version``; on APPLY the subscriber must apply it (and
        this state already counts it applied)."""
        if self.resync_needed:
            verdict = Verdict.WAITING
            if version <= self.version:
                verdict = Verdict.DUPLICATE if version == self.version else Verdict.OLDER
        elif version == self.version + 1:
            self.version = version
            verdict = Verdict.APPLY
        elif version == self.version:
            verdict = Verdict.DUPLICATE
        elif version < self.version:
            verdict = Verdict.OLDER
        else:
            self.resync_needed = True
            verdict = Verdict.GAP
        self.counts[verdict] += 1
        return verdict

    def install(self, version: int) -> bool:
        """A full snapshot at ``version`` arrived; returns whether it was taken. One older than
        the subscriber's version is always refused; one at the same version only repairs a
        pending resync."""
        if version < self.version or (version == self.version and not self.resync_needed):
            return False
        self.version = version
        self.resync_needed = False
        return True


class Mirror:
    """A subscriber's copy of the control plane, kept by the feed."""

    def __init__(self) -> None:
        self.plane = ControlPlane()
        self.feed = FeedState(self.plane.version)

    def on_publication(self, pub: Publication) -> Verdict:
        verdict = self.feed.offer(pub.version)
        if verdict is Verdict.APPLY:
            outcome = self.plane.execute(pub.command)
            self.plane.applied_index = pub.index
            if not outcome.ok or outcome.version != pub.version or self.plane.epoch != pub.epoch:
                self.feed.resync_needed = True  # diverged: only a snapshot can repair it
                return Verdict.GAP
        return verdict

    def on_snapshot(self, image: bytes) -> bool:
        """The answer to a resync request: the plane's snapshot. Refused if undecodable or
        older than the mirror."""
        if not ControlPlane.snapshot_check(image):
            return False
        candidate = ControlPlane()
        try:
            candidate.restore(image)
        except PlaneError:
            return False
        if not self.feed.install(candidate.version):
            return False
        self.plane = candidate
        return True
