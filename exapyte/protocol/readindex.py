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

Every read ends. The tracker counts ticks and stamps each read with its arrival. A read that has
waited a whole timeout is taken out by :meth:`expire` (the core uses one election timeout: a
round trip to a quorum takes far less, and a follower that has not heard the leader for that long
starts an election, so a read still unconfirmed then waits on a leadership in doubt), and losing
leadership takes out every read (:meth:`reset`). Both return the request ids, which the core
hands its host as failed reads, so the client retries elsewhere instead of waiting for its own
timeout. A request id is pending at most once.
"""

from __future__ import annotations

from collections import deque

from exapyte.protocol.quorum import JointConfig


class ReadIndexTracker:
    __slots__ = ("round", "acked", "pending", "waiting", "need_round", "now", "_ids")

    def __init__(self) -> None:
        self.round = 0  # the last round sent
        self.acked: dict[str, int] = {}
        # (request id, read index, round, arrival tick), in arrival order
        self.pending: deque[tuple[bytes, int, int, int]] = deque()
        # (request id, arrival tick): reads waiting for the leader's first commit
        self.waiting: deque[tuple[bytes, int]] = deque()
        self.need_round = False
        self.now = 0  # ticks counted
        self._ids: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.pending) + len(self.waiting)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids

    def wait_for_commit(self, request_id: bytes) -> None:
        """Hold a read until the leader has committed an entry of its term."""
        self.waiting.append((request_id, self.now))
        self._ids.add(request_id)

    def admit_waiting(self, commit_index: int) -> None:
        """The leader's first commit happened: give held reads ``commit_index`` as read index.

        Reads arrive at a leader in ``waiting`` until then and in ``pending`` afterwards, so
        ``pending`` is empty here and stays in arrival order."""
        if not self.waiting:
            return
        for request_id, arrived in self.waiting:
            self.pending.append((request_id, commit_index, self.round + 1, arrived))
        self.waiting.clear()
        self.need_round = True

    def add(self, request_id: bytes, read_index: int) -> None:
        self.pending.append((request_id, read_index, self.round + 1, self.now))
        self._ids.add(request_id)
        self.need_round = True

    def next_round(self) -> int:
        """Number the heartbeat round about to be sent."""
        self.round += 1
        self.need_round = False
        return self.round

    def ack(self, peer: str, ctx: int) -> None:
        if ctx > self.acked.get(peer, 0):
            self.acked[peer] = ctx

    def confirmed(self, voters: JointConfig, me: str) -> int:
        """The newest round a quorum of ``voters`` has acknowledged (``me`` counts as having
        acknowledged every round it sent)."""
        acked = dict(self.acked)
        acked[me] = self.round
        return voters.committed_index(acked)

    def release(self, voters: JointConfig, me: str) -> list[tuple[bytes, int]]:
        """Reads whose round a quorum has confirmed, in arrival order."""
        if not self.pending:
            return []
        confirmed = self.confirmed(voters, me)
        released: list[tuple[bytes, int]] = []
        pending = self.pending
        while pending and pending[0][2] <= confirmed:
            request_id, index, _, _ = pending.popleft()
            self._ids.discard(request_id)
            released.append((request_id, index))
        return released

    def tick(self) -> None:
        self.now += 1

    def expire(self, timeout_ticks: int) -> list[bytes]:
        """Take out the reads that have waited ``timeout_ticks`` ticks or more; their ids."""
        expired: list[bytes] = []
        oldest = self.now - timeout_ticks
        for queue in (self.waiting, self.pending):
            while queue and queue[0][-1] <= oldest:
                expired.append(queue.popleft()[0])
        for request_id in expired:
            self._ids.discard(request_id)
        return expired

    def reset(self) -> list[bytes]:
        """Forget everything (leadership lost); returns the dropped request ids."""
        dropped = [rid for rid, _ in self.waiting] + [rid for rid, _, _, _ in self.pending]
        self.pending.clear()
        self.waiting.clear()
        self.acked.clear()
        self._ids.clear()
        self.need_round = False
        return dropped
