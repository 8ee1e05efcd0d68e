"""Per-peer replication progress, as a leader (or a Paxos/ZAB primary) sees its followers.

Theory of operation
-------------------
For each member the leader keeps ``match`` (the highest index known to be replicated there) and
``next`` (the next index to send). A peer is in one of three states:

- PROBE: we do not know where its log matches ours. Send one append at ``next - 1`` and wait
  for the answer (or a heartbeat response) before sending another; a rejection moves ``next``
  back, using the follower's hint to skip a whole term at a time (Raft §5.3).
- REPLICATE: the logs matched at ``match``; stream appends optimistically, advancing ``next``
  as soon as a message is sent. At most ``max_inflight`` append messages may be unacknowledged
  (the :class:`Inflights` window): this is pipelining with flow control.
- SNAPSHOT: the entries the peer needs were compacted away; a snapshot is on its way and nothing
  else is sent until it is acknowledged or the attempt times out.

``recent_active`` records whether the peer answered since the last check-quorum round (thesis
§6.2). Learners have a progress like voters but are never counted by the quorum code.

:class:`ProgressTracker` owns the progress map and the voter/learner sets, and answers the
quorum questions (committed index, election result, "has a quorum been active") by delegating to
:mod:`exapyte.protocol.quorum`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable

from exapyte.protocol.quorum import JointConfig, VoteResult
from exapyte.protocol.types import ConfState


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """A bounded FIFO of the last index carried by each unacknowledged append message."""

    __slots__ = ("capacity", "_last_indexes")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._last_indexes: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._last_indexes)

    def full(self) -> bool:
        return len(self._last_indexes) >= self.capacity

    def add(self, last_index: int) -> None:
        self._last_indexes.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every message whose last index is ``<= index`` (they were acknowledged)."""
        queue = self._last_indexes
        while queue and queue[0] <= index:
            queue.popleft()

    def free_first(self) -> None:
        if self._last_indexes:
            self._last_indexes.popleft()

    def reset(self) -> None:
        self._last_indexes.clear()


class Progress:
    """What the leader knows of one member's log."""

    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "pending_snapshot",
        "snapshot_elapsed",
        "stall",
        "recent_active",
        "is_learner",
        "inflights",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.stall = 0  # heartbeat answers without append progress (REPLICATE only)
        self.recent_active = False
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
            f"inflight={len(self.inflights)}, learner={self.is_learner})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.stall = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        # Leaving SNAPSHOT, resume right after the snapshot if it got there.
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """A success acknowledgement up to ``index``; returns whether ``match`` moved."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
            self.stall = 0
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, next_hint: int) -> bool:
        """A rejection of the append at ``rejected``; returns False when it is stale."""
        if self.state is ProgressState.REPLICATE:
            # Stale when it rejects something already matched.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # an answer to an older probe
        self.next = max(min(rejected, next_hint), self.match + 1, 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int) -> None:
        """Book-keeping after sending an append whose last entry is ``last_index``."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True


class ProgressTracker:
    """Progress of every member plus the configuration deciding quorums."""

    __slots__ = ("progress", "voters", "learners", "max_inflight", "votes")

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.progress: dict[str, Progress] = {}
        self.voters = JointConfig()
        self.learners: frozenset[str] = frozenset()
        self.votes: dict[str, bool] = {}

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=tuple(sorted(self.voters.incoming.voters)),
            learners=tuple(sorted(self.learners)),
            voters_outgoing=tuple(sorted(self.voters.outgoing.voters)),
        )

    def apply_conf(self, conf: ConfState, next_index: int) -> None:
        """Adopt ``conf``: new members start probing at ``next_index``; removed ones vanish."""
        self.voters = JointConfig(conf.voters, conf.voters_outgoing)
        self.learners = frozenset(conf.learners)
        members = set(self.voters.voters) | set(self.learners)
        for node in list(self.progress):
            if node not in members:
                del self.progress[node]
        for node in sorted(members):  # a fixed order: peers are then probed and sent to in it
            pr = self.progress.get(node)
            if pr is None:
                pr = Progress(next_index, self.max_inflight)
                self.progress[node] = pr
            pr.is_learner = node not in self.voters

    def reset(self, next_index: int) -> None:
        """Forget every peer's progress (a new leader starts probing everyone)."""
        for node in self.progress:
            self.progress[node] = Progress(
                next_index, self.max_inflight, is_learner=node not in self.voters
            )

    def is_voter(self, node: str) -> bool:
        return node in self.voters

    def is_member(self, node: str) -> bool:
        return node in self.progress

    def committed_index(self) -> int:
        return self.voters.committed_index(
            {node: pr.match for node, pr in self.progress.items() if not pr.is_learner}
        )

    def record_vote(self, node: str, granted: bool) -> None:
        self.votes.setdefault(node, granted)

    def reset_votes(self) -> None:
        self.votes = {}

    def vote_result(self) -> VoteResult:
        return self.voters.vote_result(self.votes)

    def quorum_active(self, me: str) -> bool:
        """Whether a quorum answered since the last check (thesis §6.2, check-quorum)."""
        active: list[str] = [me]
        active.extend(n for n, pr in self.progress.items() if pr.recent_active and n != me)
        return self.voters.has_quorum(active)

    def voter_ids(self) -> Iterable[str]:
        return self.voters.voters
