"""ZAB's peer messages: frozen, tagged ``msgspec.Struct`` values.

Theory of operation
-------------------
Every message names its sender (``frm``) and receiver (``to``); tags start with ``zab.`` so the
wire module can put these classes into one tagged union with the other protocols' messages.
Apart from the election's notifications, every message carries the ``epoch`` of the leadership it
belongs to: a follower takes leader messages only from the leader it follows and only for the
epoch it accepted from it; a leader takes answers only for its own epoch.

Positions are log indexes (``Entry.index``: 1, 2, 3 ...) with the epoch that proposed the entry
(``Entry.term``); ``zxid`` fields carry ZooKeeper's transaction id, ``epoch << 32 | counter``,
where the counter numbers the proposals of one epoch from 1 (see :func:`pack_zxid`).

==================  ========================  ===============================================
message             from -> to                purpose (phase; Zab paper section)
==================  ========================  ===============================================
Notification        anyone -> voters          Fast Leader Election: "my vote is (leader, its
                                              epoch, its last entry) in round r; I am LOOKING
                                              / FOLLOWING / LEADING / OBSERVING; the newest
                                              committed configuration I know is C, version
                                              (conf_index, conf_epoch)" (§V-A; ZooKeeper
                                              3.5+ carries its config and version in FLE)
FollowerInfo        follower -> leader        discovery: my acceptedEpoch (CEPOCH, §IV-A)
NewEpoch            leader -> follower        discovery: the new epoch e' (NEWEPOCH)
AckEpoch            follower -> leader        discovery: I accepted e'; my currentEpoch, my
                                              history's last entry, my commit (ACK-E)
SyncEntries         leader -> follower        synchronization: DIFF / TRUNC entries after
                                              (prev_index, prev_term) (§IV-B; ZooKeeper's
                                              DIFF, TRUNC and the proposals that follow them)
SnapChunk           leader -> follower        synchronization: one chunk of a snapshot (SNAP)
SyncAck             follower -> leader        synchronization: how much of the sync I hold
NewLeader           leader -> follower        synchronization: "your history is now mine up
                                              to last_index; adopt epoch e'" (NEWLEADER)
AckNewLeader        follower -> leader        synchronization: persisted the history, THEN
                                              currentEpoch, then this (ACK-LD)
UpToDate            leader -> follower        the initial history is committed (UPTODATE)
Proposal            leader -> follower        broadcast: batched, pipelined proposals (§IV-C)
Ack                 follower -> leader        broadcast: persisted up to index (ACK)
Commit              leader -> follower        broadcast: committed up to index (COMMIT)
Ping / PingAck      leader <-> follower       liveness, commit, read-confirmation rounds
TransferNow         leader -> follower        leadership transfer: run for leader now
==================  ========================  ===============================================
"""

from __future__ import annotations

import enum
from typing import Union

import msgspec

from exapyte.protocol.types import ConfState, Entry, SnapshotMeta

ZXID_COUNTER_BITS = 32
ZXID_COUNTER_MAX = (1 << ZXID_COUNTER_BITS) - 1  # the last counter an epoch may use


def pack_zxid(epoch: int, counter: int) -> int:
    """ZooKeeper's zxid: the epoch in the high 32 bits, the counter in the low 32."""
    return (epoch << ZXID_COUNTER_BITS) | counter


def unpack_zxid(zxid: int) -> tuple[int, int]:
    return zxid >> ZXID_COUNTER_BITS, zxid & ZXID_COUNTER_MAX


class PeerState(enum.IntEnum):
    """What a notification says its sender is doing (ZooKeeper's ServerState)."""

    LOOKING = 0
    FOLLOWING = 1
    LEADING = 2
    OBSERVING = 3


class SyncMode(enum.IntEnum):
    """How a leader brings a follower's history to its own (ZooKeeper's sync packets)."""

    DIFF = 0  # the follower's log is a prefix of the leader's: send what follows
    TRUNC = 1  # the follower holds a suffix the leader lacks: cut back to prev, then send
    SNAP = 2  # what the follower needs was compacted away: a snapshot, then what follows


class Notification(msgspec.Struct, frozen=True, tag="zab.notification"):
    """A vote in Fast Leader Election. The vote is for ``leader`` whose history is summarised
    by (``epoch`` = its currentEpoch, ``last_term``, ``last_index``); ``round`` is the sender's
    logical election clock. ``transfer`` marks the vote of a leadership-transfer target, which
    wins ties on equal histories. A node that is not LOOKING sends its current leader as vote,
    with that leadership's epoch.

    ``conf`` is the newest *committed* configuration the sender knows (the one its applied log
    gives, or one it adopted from a peer's notification, itself committed), and
    (``conf_index``, ``conf_epoch``) its version: the position and epoch of the CONF_CHANGE
    entry (or of the snapshot) it took effect at. ``conf_index`` 0 carries no configuration.
    A LOOKING member that missed a membership change adopts a strictly newer one for its
    election (ZooKeeper 3.5+ sends its last committed config and version the same way)."""

    frm: str
    to: str
    round: int
    state: int
    leader: str
    epoch: int
    last_term: int
    last_index: int
    transfer: bool = False
    conf: ConfState = ConfState()
    conf_index: int = 0
    conf_epoch: int = 0


class FollowerInfo(msgspec.Struct, frozen=True, tag="zab.followerinfo"):
    """``accepted_by`` is the leader the follower accepted ``accepted_epoch`` from: a leader
    whose epoch is below that promise (or equal to it but promised to another) cannot take
    this follower, and gives its epoch up so that the next one is higher. ``standby``: the
    follower holds no entry and no snapshot (it may be a voter that lost its history): the
    leader synchronizes it but counts neither this FOLLOWERINFO nor its ACKEPOCH towards the
    discovery quorum."""

    frm: str
    to: str
    accepted_epoch: int
    accepted_by: str = ""
    standby: bool = False


class NewEpoch(msgspec.Struct, frozen=True, tag="zab.newepoch"):
    frm: str
    to: str
    epoch: int


class AckEpoch(msgspec.Struct, frozen=True, tag="zab.ackepoch"):
    """``epoch`` is the accepted new epoch; the rest describes the follower's history."""

    frm: str
    to: str
    epoch: int
    current_epoch: int
    last_term: int
    last_index: int
    commit: int


class SyncEntries(msgspec.Struct, frozen=True, tag="zab.sync"):
    """Entries of the leader's history after (``prev_index``, ``prev_term``). ``start`` marks
    the first message of a sync: the follower discards any sync it was assembling (for SNAP,
    the first SyncEntries follows the snapshot and has ``prev`` at the snapshot's position)."""

    frm: str
    to: str
    epoch: int
    mode: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    start: bool = False


class SnapChunk(msgspec.Struct, frozen=True, tag="zab.snap"):
    """Bytes ``offset`` .. ``offset + len(data)`` of the image of ``meta`` (``size`` bytes)."""

    frm: str
    to: str
    epoch: int
    meta: SnapshotMeta
    offset: int
    data: bytes
    size: int
    done: bool


class SyncAck(msgspec.Struct, frozen=True, tag="zab.sync_ack"):
    """What the follower has assembled of the sync: the last index of its sync buffer
    (``index``, 0 when it has none) and, during a SNAP, the snapshot bytes it holds."""

    frm: str
    to: str
    epoch: int
    index: int
    snapshot_received: int = 0


class NewLeader(msgspec.Struct, frozen=True, tag="zab.newleader"):
    """The sync is complete: the follower's history must end at (``last_index``,
    ``last_term``). ``commit`` is what the leader knows committed (the follower may apply up to
    it); ``epoch_start`` the index of the epoch's first entry (counter 1 of its zxids)."""

    frm: str
    to: str
    epoch: int
    last_index: int
    last_term: int
    commit: int
    epoch_start: int


class AckNewLeader(msgspec.Struct, frozen=True, tag="zab.ack_newleader"):
    """``ok`` False: the follower's sync buffer did not end where NEWLEADER says: sync again."""

    frm: str
    to: str
    epoch: int
    last_index: int
    ok: bool = True


class UpToDate(msgspec.Struct, frozen=True, tag="zab.uptodate"):
    frm: str
    to: str
    epoch: int
    commit: int


class Proposal(msgspec.Struct, frozen=True, tag="zab.proposal"):
    """Entries of this epoch after (``prev_index``, ``prev_term``); ``zxid`` is the last one's.
    ``commit`` never exceeds what the follower is known to hold."""

    frm: str
    to: str
    epoch: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    zxid: int
    commit: int


class Ack(msgspec.Struct, frozen=True, tag="zab.ack"):
    """The follower persisted its log up to ``index`` (``zxid`` is that entry's). ``gap`` True:
    a proposal did not follow the follower's log; ``index`` is where its log ends."""

    frm: str
    to: str
    epoch: int
    index: int
    zxid: int
    gap: bool = False


class Commit(msgspec.Struct, frozen=True, tag="zab.commit"):
    frm: str
    to: str
    epoch: int
    index: int
    zxid: int


class Ping(msgspec.Struct, frozen=True, tag="zab.ping"):
    """``ctx`` is the read-confirmation round the leader wants acknowledged (0: none)."""

    frm: str
    to: str
    epoch: int
    commit: int
    ctx: int = 0


class PingAck(msgspec.Struct, frozen=True, tag="zab.ping_ack"):
    """Carries the follower's last entry (persisted before this leaves), so that a leader whose
    ACKs were lost still learns how far the follower is."""

    frm: str
    to: str
    epoch: int
    ctx: int
    last_index: int
    last_term: int = 0


class TransferNow(msgspec.Struct, frozen=True, tag="zab.transfer"):
    frm: str
    to: str
    epoch: int


ZabMessage = Union[
    Notification,
    FollowerInfo,
    NewEpoch,
    AckEpoch,
    SyncEntries,
    SnapChunk,
    SyncAck,
    NewLeader,
    AckNewLeader,
    UpToDate,
    Proposal,
    Ack,
    Commit,
    Ping,
    PingAck,
    TransferNow,
]

ZAB_MESSAGE_TYPES: tuple[type[msgspec.Struct], ...] = (
    Notification,
    FollowerInfo,
    NewEpoch,
    AckEpoch,
    SyncEntries,
    SnapChunk,
    SyncAck,
    NewLeader,
    AckNewLeader,
    UpToDate,
    Proposal,
    Ack,
    Commit,
    Ping,
    PingAck,
    TransferNow,
)

__all__ = [
    "ZAB_MESSAGE_TYPES",
    "ZXID_COUNTER_MAX",
    "Ack",
    "AckEpoch",
    "AckNewLeader",
    "Commit",
    "FollowerInfo",
    "NewEpoch",
    "NewLeader",
    "Notification",
    "PeerState",
    "Ping",
    "PingAck",
    "Proposal",
    "SnapChunk",
    "SyncAck",
    "SyncEntries",
    "SyncMode",
    "TransferNow",
    "UpToDate",
    "ZabMessage",
    "pack_zxid",
    "unpack_zxid",
]
