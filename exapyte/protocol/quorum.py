"""Quorum arithmetic: majority and joint configurations.

Theory of operation
-------------------
Two questions are asked of a set of voters, by every protocol:

- *Which index is committed?* Given each voter's acknowledged (match) index, the committed index
  of a majority configuration is the largest index that a majority has reached: sort the
  acknowledgements in decreasing order and take the one at position ``n // 2``. Voters that have
  not acknowledged count as 0. (Raft §5.3 and §5.4.2; the same rule commits a Multi-Paxos slot
  or a ZAB proposal.)
- *Who won the election?* Given granted/rejected votes, a majority configuration is WON when a
  majority granted, LOST when a majority can no longer be reached, else PENDING.

A *joint* configuration (Raft §6, used inside membership changes that move several voters at
once) needs both halves: its committed index is the minimum of the two, and its vote is WON only
if both halves won and LOST as soon as either lost. An empty majority configuration is neutral:
it commits everything and wins every vote, so a joint configuration with an empty outgoing half
behaves exactly like its incoming half.

These functions are pure and allocate little; they are called on every acknowledgement.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

INDEX_MAX = 2**63 - 1  # "everything is committed": an empty configuration's answer


class VoteResult(enum.Enum):
    PENDING = "pending"
    LOST = "lost"
    WON = "won"


class MajorityConfig:
    """A set of voters deciding by simple majority."""

    __slots__ = ("voters",)

    def __init__(self, voters: Iterable[str] = ()) -> None:
        self.voters: frozenset[str] = frozenset(voters)

    def __len__(self) -> int:
        return len(self.voters)

    def __contains__(self, node: object) -> bool:
        return node in self.voters

    def __repr__(self) -> str:
        return f"MajorityConfig({sorted(self.voters)})"

    def quorum_size(self) -> int:
        return len(self.voters) // 2 + 1

    def committed_index(self, acked: Mapping[str, int]) -> int:
        """The largest index acknowledged by a majority (0 when nobody acknowledged)."""
        n = len(self.voters)
        if n == 0:
            return INDEX_MAX
        if n == 1:
            (only,) = self.voters
            return acked.get(only, 0)
        values = sorted((acked.get(v, 0) for v in self.voters), reverse=True)
        return values[n // 2]

    def vote_result(self, votes: Mapping[str, bool]) -> VoteResult:
        n = len(self.voters)
        if n == 0:
            return VoteResult.WON
        granted = rejected = 0
        for voter in self.voters:
            answer = votes.get(voter)
            if answer is True:
                granted += 1
            elif answer is False:
                rejected += 1
        quorum = n // 2 + 1
        if granted >= quorum:
            return VoteResult.WON
        if n - rejected < quorum:
            return VoteResult.LOST
        return VoteResult.PENDING

    def has_quorum(self, members: Iterable[str]) -> bool:
        present = sum(1 for m in set(members) if m in self.voters)
        return len(self.voters) == 0 or present >= len(self.voters) // 2 + 1


class JointConfig:
    """Incoming and outgoing majorities; a decision needs both (Raft §6)."""

    __slots__ = ("incoming", "outgoing")

    def __init__(self, incoming: Iterable[str] = (), outgoing: Iterable[str] = ()) -> None:
        self.incoming = MajorityConfig(incoming)
        self.outgoing = MajorityConfig(outgoing)

    @property
    def voters(self) -> frozenset[str]:
        return self.incoming.voters | self.outgoing.voters

    def __contains__(self, node: object) -> bool:
        return node in self.incoming or node in self.outgoing

    def __repr__(self) -> str:
        return f"JointConfig({sorted(self.incoming.voters)}, {sorted(self.outgoing.voters)})"

    def is_joint(self) -> bool:
        return len(self.outgoing) > 0

    def committed_index(self, acked: Mapping[str, int]) -> int:
        a = self.incoming.committed_index(acked)
        if not self.outgoing.voters:
            return a
        b = self.outgoing.committed_index(acked)
        return a if a < b else b

    def vote_result(self, votes: Mapping[str, bool]) -> VoteResult:
        a = self.incoming.vote_result(votes)
        b = self.outgoing.vote_result(votes)
        if a is b:
            return a
        if a is VoteResult.LOST or b is VoteResult.LOST:
            return VoteResult.LOST
        return VoteResult.PENDING

    def has_quorum(self, members: Iterable[str]) -> bool:
        present = set(members)
        return self.incoming.has_quorum(present) and self.outgoing.has_quorum(present)
