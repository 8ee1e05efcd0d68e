"""Raft's peer messages: frozen, tagged ``msgspec.Struct`` values.

Theory of operation
-------------------
Every message names its sender (``frm``), its receiver (``to``) and the sender's ``term``. The
receiver compares ``term`` with its own before anything else (Raft §5.1): a higher term makes it
a follower of that term, a lower one marks the message stale. Tags start with ``raft.`` so the
wire module can put these classes into one tagged union with the other protocols' messages.

=====================  ==================================================================  ======
message                purpose                                                             paper
=====================  ==================================================================  ======
PreVote / PreVoteResp  "would you vote for me at ``term``?" without anybody changing term  §9.6
Vote / VoteResp        RequestVote; ``transfer`` marks an election started by TimeoutNow    §5.2
Append / AppendResp    AppendEntries with batched ``entries``; the response carries the     §5.3
                       fast-backtracking hint (conflict term and its first index)
Heartbeat / ...Resp    leadership assertion + commit; ``ctx`` is the read-index round      §6.4
InstallSnapshot / ...  a snapshot, in chunks, for a follower whose next entry was compacted §7
TimeoutNow             "start an election now" (leadership transfer)                       §3.10
=====================  ==================================================================  ======

Section numbers refer to the Raft paper (§5, §7, §8) and to Ongaro's thesis (§3.10, §6.4, §9.6).
"""

from __future__ import annotations

from typing import Union

import msgspec

from exapyte.protocol.types import Entry, SnapshotMeta


class PreVote(msgspec.Struct, frozen=True, tag="raft.prevote"):
    """Pre-vote request. ``term`` is the term the sender *would* campaign in (its term + 1)."""

    frm: str
    to: str
    term: int
    last_index: int
    last_term: int


class PreVoteResp(msgspec.Struct, frozen=True, tag="raft.prevote_resp"):
    """A granted pre-vote echoes the request's term; a rejection carries the voter's term."""

    frm: str
    to: str
    term: int
    reject: bool


class Vote(msgspec.Struct, frozen=True, tag="raft.vote"):
    """RequestVote. ``transfer`` is set by a TimeoutNow election and overrides leader stickiness."""

    frm: str
    to: str
    term: int
    last_index: int
    last_term: int
    transfer: bool = False


class VoteResp(msgspec.Struct, frozen=True, tag="raft.vote_resp"):
    frm: str
    to: str
    term: int
    reject: bool


class Append(msgspec.Struct, frozen=True, tag="raft.append"):
    """AppendEntries: ``entries`` follow the entry at (``prev_index``, ``prev_term``)."""

    frm: str
    to: str
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


class AppendResp(msgspec.Struct, frozen=True, tag="raft.append_resp"):
    """Answer to :class:`Append`.

    On success ``index`` is the follower's last index known to match the leader. On rejection
    ``index`` is the rejected ``prev_index`` and the hint lets the leader skip a whole term per
    round trip: ``hint_term`` is the follower's term at ``index`` and ``hint_index`` the first
    index the follower holds with that term; when the follower's log is too short,
    ``hint_term`` is 0 and ``hint_index`` is its last index + 1.
    """

    frm: str
    to: str
    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


class Heartbeat(msgspec.Struct, frozen=True, tag="raft.heartbeat"):
    """Leadership assertion. ``commit`` never exceeds what the follower is known to hold;
    ``ctx`` is the read-index round the leader wants acknowledged (0: none)."""

    frm: str
    to: str
    term: int
    commit: int
    ctx: int = 0


class HeartbeatResp(msgspec.Struct, frozen=True, tag="raft.heartbeat_resp"):
    frm: str
    to: str
    term: int
    ctx: int = 0


class InstallSnapshot(msgspec.Struct, frozen=True, tag="raft.snapshot"):
    """One chunk of a snapshot (Raft §7, Figure 13): ``data`` holds bytes ``offset`` to
    ``offset + len(data)`` of the image of ``meta``, whose whole size is ``size``; ``done``
    marks the last chunk. A snapshot of any size crosses the wire in frames of bounded size."""

    frm: str
    to: str
    term: int
    meta: SnapshotMeta
    offset: int
    data: bytes
    size: int
    done: bool


class InstallSnapshotResp(msgspec.Struct, frozen=True, tag="raft.snapshot_resp"):
    """With ``done`` True: the snapshot was handled and ``index`` is the follower's last index.
    With ``done`` False: a chunk acknowledgement; the follower holds the first ``received`` bytes
    of the snapshot at ``index`` and wants the chunk that starts there."""

    frm: str
    to: str
    term: int
    index: int
    reject: bool = False
    done: bool = True
    received: int = 0


class TimeoutNow(msgspec.Struct, frozen=True, tag="raft.timeout_now"):
    """Sent by a leader to the transfer target once its log is up to date."""

    frm: str
    to: str
    term: int


RaftMessage = Union[
    PreVote,
    PreVoteResp,
    Vote,
    VoteResp,
    Append,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    InstallSnapshotResp,
    TimeoutNow,
]

RAFT_MESSAGE_TYPES: tuple[type[msgspec.Struct], ...] = (
    PreVote,
    PreVoteResp,
    Vote,
    VoteResp,
    Append,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    InstallSnapshotResp,
    TimeoutNow,
)

__all__ = [
    "RAFT_MESSAGE_TYPES",
    "Append",
    "AppendResp",
    "Heartbeat",
    "HeartbeatResp",
    "InstallSnapshot",
    "InstallSnapshotResp",
    "PreVote",
    "PreVoteResp",
    "RaftMessage",
    "TimeoutNow",
    "Vote",
    "VoteResp",
]
