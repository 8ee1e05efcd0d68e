"""Read-index bookkeeping: linearizable reads without writing to the log.

Theory of operation
-------------------
A leader answers a linearizable read (Raft §8, thesis §6.4) in four steps:

1. it must have committed an entry of its own term (its NOOP), so that its commit index is at
   least that of every earlier leader; reads arriving before that wait in ``waiting``;
2. it records its commit index as the read's *read index*;
3. it confirms it is still the leader *after* the read arrived: it sends a heartbeat round and
   waits for a quorum of voters to acknowledge it;
4. once the state machine has applied up to the read index, the read may be answered.

Rounds are numbered. A read arriving is attached to the *next* round, the first whose heartbeat
will leave after the read arrived. Every heartbeat the leader sends carries the latest round
number (``ctx``) and followers echo it. A follower that acknowledges round ``r`` has also
confirmed every round before ``r`` (its answer was produced after all of them were sent), so the
tracker keeps only the highest round each peer acknowledged, and the confirmed round is the
quorum's "committed index" over these numbers: the same arithmetic that commits log entries.
Many reads share one round (batching); reads are released strictly in arrival order.

The tracker is protocol-independent: a Multi-Paxos leader or a ZAB leader confirms its
leadership the same way, with its own heartbeat message carrying the round.

When leadership is lost, pending reads are dropped (:meth:`reset`); the host retries them on a
timeout like any other unanswered request.
"""

from __future__ import annotations

from collections import deque

from exapyte.protocol.quorum import JointConfig


class ReadIndexTracker:
    __slots__ = ("round", "acked", "pending", "waiting", "need_round")

    def __init__(self) -> None:
        self.round = 0  # the last round sent
        self.acked: dict[str, int] = {}
        self.pending: deque[tuple[bytes, int, int]] = deque()  # (request id, read index, round)
        self.waiting: list[bytes] = []  # reads waiting for the leader's first commit
        self.need_round = False

    def __len__(self) -> int:
        return len(self.pending) + len(self.waiting)

    def wait_for_commit(self, request_id: bytes) -> None:
        """Hold a read until the leader has committed an entry of its term."""
        self.waiting.append(request_id)

    def admit_waiting(self, commit_index: int) -> None:
        """The leader's first commit happened: give held reads ``commit_index`` as read index."""
        for request_id in self.waiting:
            self.add(request_id, commit_index)
        self.waiting.clear()

    def add(self, request_id: bytes, read_index: int) -> None:
        self.pending.append((request_id, read_index, self.round + 1))
        self.need_round = True

    def next_round(self) -> int:
        """Number the heartbeat round about to be sent."""
        self.round += 1
        self.need_round = False
        return self.round

    def ack(self, peer: str, ctx: int) -> None:
        if ctx > self.acked.get(peer, 0):
            self.acked[peer] = ctx

    def release(self, voters: JointConfig, me: str) -> list[tuple[bytes, int]]:
        """Reads whose round a quorum has confirmed, in arrival order."""
        if not self.pending:
            return []
        acked = dict(self.acked)
        acked[me] = self.round
        confirmed = voters.committed_index(acked)
        released: list[tuple[bytes, int]] = []
        pending = self.pending
        while pending and pending[0][2] <= confirmed:
            request_id, index, _ = pending.popleft()
            released.append((request_id, index))
        return released

    def reset(self) -> list[bytes]:
        """Forget everything (leadership lost); returns the dropped request ids."""
        dropped = [rid for rid, _, _ in self.pending] + list(self.waiting)
        self.pending.clear()
        self.waiting.clear()
        self.acked.clear()
        self.need_round = False
        return dropped
