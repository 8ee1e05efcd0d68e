"""Multi-Paxos peer messages: frozen, tagged ``msgspec.Struct`` values.

Theory of operation
-------------------
A ballot is the pair ``(round, node)``. Every message names its sender (``frm``) and receiver
(``to``); a message from a proposer carries the sender's ballot round in ``round`` and its node
is the sender, so the ballot is ``(round, frm)``. Answers echo the round they answer, so a
proposer can tell an answer to its current ballot from a late answer to an older one. Tags start
with ``paxos.`` so the wire module can put these classes into one tagged union with the other
protocols' messages.

=====================  ==================================================================  ==========
message                purpose                                                             paper
=====================  ==================================================================  ==========
Prepare / Promise      phase 1a/1b for every slot from ``start`` on (or, with ``probe``, a  PMS §2.2,
                       question that changes no promise); a promise carries the            §3
                       
                       acceptor's accepted (ballot, value) of every slot at or above         §3
                       ``start`` and its commit point
Accept / Accepted      phase 2a/2b, a contiguous batch of slots; ``commit`` piggybacks the  PMS §2.2,
                       chosen prefix; ``match`` is the acceptor's contiguous prefix chosen   §3
                       or accepted in this ballot
Heartbeat / ...Ack     a stable leader's assertion + commit point; ``ctx`` is the           PMMC §4
                       read-index round (leases are not used)
Reject                 "I promised a higher ballot": a deposed proposer steps down          PMS §2.3
Snapshot / ...Ack      a state-machine image, in chunks, for an acceptor behind the         -
                       leader's compaction point
TimeoutNow             "run phase 1 now": leadership transfer                              -
=====================  ==================================================================  ==========

PMS is Lamport, "Paxos Made Simple" (2001); PMMC is van Renesse and Altinbuken, "Paxos Made
Moderately Complex" (2015).
"""

from __future__ import annotations

import msgspec

from exapyte.protocol.types import Entry, SnapshotMeta


class AcceptedSlot(msgspec.Struct, frozen=True, array_like=True):
    """One slot an acceptor accepted: the ballot ``(round, node)`` and the value (an Entry whose
    ``index`` is the slot and whose ``term`` is the round under which it was first proposed)."""

    round: int
    node: str
    entry: Entry


class Prepare(msgspec.Struct, frozen=True, tag="paxos.prepare"):
    """Phase 1a for ballot ``(round, frm)`` and every slot from ``start`` on. ``commit`` is the
    candidate's chosen prefix (``start - 1``); ``transfer`` marks a TimeoutNow campaign, which
    overrides leader stickiness. With ``probe`` it only asks "would you promise?": nobody's
    promise changes (the pre-vote of Raft's thesis §9.6), so a node that was cut off cannot
    depose a live leader by coming back with a high round."""

    frm: str
    to: str
    round: int
    start: int
    commit: int
    transfer: bool = False
    probe: bool = False


class Promise(msgspec.Struct, frozen=True, tag="paxos.promise"):
    """Phase 1b. Granted: ``accepted`` holds every slot at or above ``start`` the acceptor
    accepted, in slot order. Refused (``reject``): the acceptor knows more of the chosen prefix
    (``commit``) than the candidate, or it holds nothing at all (standby: ``commit`` 0, see
    ``ConsensusCore.standby``), and did not promise."""

    frm: str
    to: str
    round: int
    start: int
    commit: int
    accepted: tuple[AcceptedSlot, ...] = ()
    reject: bool = False
    probe: bool = False


class Accept(msgspec.Struct, frozen=True, tag="paxos.accept"):
    """Phase 2a for ballot ``(round, frm)``: ``entries`` are consecutive slots. ``commit`` is
    the leader's chosen prefix."""

    frm: str
    to: str
    round: int
    entries: tuple[Entry, ...]
    commit: int


class Accepted(msgspec.Struct, frozen=True, tag="paxos.accepted"):
    """Phase 2b: the slots ``lo..hi`` of an Accept were accepted (persisted). ``match`` is the
    acceptor's contiguous prefix that is chosen or accepted in this ballot."""

    frm: str
    to: str
    round: int
    match: int
    lo: int
    hi: int


class Heartbeat(msgspec.Struct, frozen=True, tag="paxos.heartbeat"):
    frm: str
    to: str
    round: int
    commit: int
    ctx: int = 0


class HeartbeatAck(msgspec.Struct, frozen=True, tag="paxos.heartbeat_ack"):
    frm: str
    to: str
    round: int
    match: int
    ctx: int = 0


class Reject(msgspec.Struct, frozen=True, tag="paxos.reject"):
    """The answer to a Prepare, Accept, Heartbeat or Snapshot of ballot ``(round, to)`` that
    the sender will not take: it promised ``(promised_round, promised_node)``."""

    frm: str
    to: str
    round: int
    promised_round: int
    promised_node: str


class Snapshot(msgspec.Struct, frozen=True, tag="paxos.snapshot"):
    """Bytes ``offset..offset+len(data)`` of the image of ``meta``, whose whole size is
    ``size``; ``done`` marks the last chunk."""

    frm: str
    to: str
    round: int
    meta: SnapshotMeta
    offset: int
    data: bytes
    size: int
    done: bool


class SnapshotAck(msgspec.Struct, frozen=True, tag="paxos.snapshot_ack"):
    """``done``: the snapshot at ``index`` was handled and ``match`` is the acceptor's
    contiguous prefix; otherwise the acceptor holds ``received`` bytes and wants the rest."""

    frm: str
    to: str
    round: int
    index: int
    match: int = 0
    done: bool = True
    received: int = 0


class TimeoutNow(msgspec.Struct, frozen=True, tag="paxos.timeout_now"):
    """Sent by a leader to the transfer target once every slot it holds is chosen there."""

    frm: str
    to: str
    round: int
    commit: int


PAXOS_MESSAGE_TYPES: tuple[type[msgspec.Struct], ...] = (
    Prepare,
    Promise,
    Accept,
    Accepted,
    Heartbeat,
    HeartbeatAck,
    Reject,
    Snapshot,
    SnapshotAck,
    TimeoutNow,
)

__all__ = [
    "PAXOS_MESSAGE_TYPES",
    "Accept",
    "AcceptedSlot",
    "Accepted",
    "Heartbeat",
    "HeartbeatAck",
    "Prepare",
    "Promise",
    "Reject",
    "Snapshot",
    "SnapshotAck",
    "TimeoutNow",
]
