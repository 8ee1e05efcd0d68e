"""Membership changes, the same for every protocol: which single-server changes exist, what a
configuration becomes after one, and what a leader refuses to propose.

A ``CONF_CHANGE`` entry carries one :class:`~exapyte.protocol.types.ConfChange` (Raft thesis
§4.1: one server at a time, so any two consecutive configurations share a majority). Every core
applies it when the entry is applied, with :func:`apply_change`, and so does the replica's state
machine for the group's configuration version (``exapyte/kv.py``): both must read a change the
same way. A leader checks a proposed change with :func:`check_proposal` before appending it.
The rest is what every core does with the configurations its log holds: check a peer's entries
(:func:`entries_follow`) and snapshot configuration (:func:`sane_conf`), look up the
configuration in effect at an index (:func:`conf_at`) and compact the log (:func:`compact`).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from exapyte import limits
from exapyte.errors import ProposalDropped, ProtocolMisuse
from exapyte.protocol.log import ReplicatedLog
from exapyte.protocol.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    Snapshot,
    SnapshotMeta,
    decode_conf_change,
)

_CHANGE_KINDS = frozenset(int(k) for k in ConfChangeKind)
_ENTRY_KINDS = frozenset(int(k) for k in EntryKind)


def valid_change(change: ConfChange) -> bool:
    """Whether ``change`` names a known kind and a node (a change may still be a no-op)."""
    return change.kind in _CHANGE_KINDS and isinstance(change.node_id, str) and bool(change.node_id)


def apply_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after ``change``: ADD_VOTER adds a voter or promotes a learner,
    ADD_LEARNER adds a learner or demotes a voter, REMOVE_NODE removes either (lenient: a change
    that changes nothing is harmless). ``voters_outgoing`` is kept as it is."""
    voters = set(conf.voters)
    learners = set(conf.learners)
    node = change.node_id
    if change.kind == ConfChangeKind.ADD_VOTER:
        learners.discard(node)
        voters.add(node)
    elif change.kind == ConfChangeKind.ADD_LEARNER:
        voters.discard(node)
        learners.add(node)
    elif change.kind == ConfChangeKind.REMOVE_NODE:
        voters.discard(node)
        learners.discard(node)
    return ConfState(
        voters=tuple(sorted(voters)),
        learners=tuple(sorted(learners)),
        voters_outgoing=conf.voters_outgoing,
    )


def check_proposal(
    conf: ConfState, change: ConfChange, leader: str, pending_index: int, applied: int,
    pending_what: str = "this leader's first entry",
) -> None:
    """Refuse a membership change a leader must not propose now: ProtocolMisuse for one that can
    never be valid (no node, an unknown kind, adding a member again, removing a non-member or the
    last voter, the leader demoting itself), ProposalDropped while the previous change (or the
    leader's first entry, at ``pending_index``) is not applied yet (retry later)."""
    node = change.node_id
    if not isinstance(node, str) or not node:
        raise ProtocolMisuse(f"conf change node_id must be a non-empty string, got {node!r}")
    if change.kind == ConfChangeKind.ADD_VOTER:
        if node in conf.voters:
            raise ProtocolMisuse(f"{node} is already a voter")
    elif change.kind == ConfChangeKind.ADD_LEARNER:
        if node in conf.learners:
            raise ProtocolMisuse(f"{node} is already a learner")
        if node == leader:
            raise ProtocolMisuse("the leader cannot demote itself: transfer leadership first")
    elif change.kind == ConfChangeKind.REMOVE_NODE:
        if node not in conf.voters and node not in conf.learners:
            raise ProtocolMisuse(f"{node} is not a member of {conf}")
        if conf.voters == (node,):
            raise ProtocolMisuse(f"cannot remove {node}, the last voter")
    else:
        raise ProtocolMisuse(
            f"unknown conf change kind {change.kind!r}; allowed: "
            f"{[k.name for k in ConfChangeKind]}"
        )
    if pending_index > applied:
        raise ProposalDropped(
            f"a membership change (or {pending_what}) at index {pending_index} is not applied "
            f"yet (applied={applied})"
        )


def sane_conf(conf: ConfState) -> bool:
    """A configuration a core could have produced (a snapshot from a peer must hold one):
    voters, named, disjoint from learners, no duplicates, single-server changes only (no joint
    configuration)."""
    voters, learners = conf.voters, conf.learners
    return (
        bool(voters)
        and not conf.voters_outgoing
        and all(isinstance(n, str) and n for n in voters + learners)
        and len(set(voters)) == len(voters)
        and len(set(learners)) == len(learners)
        and not set(voters) & set(learners)
    )


def entries_follow(
    prev_index: int, prev_term: int, entries: Sequence[Entry], max_term: int
) -> bool:
    """Whether ``entries`` continue (prev_index, prev_term) one index at a time, with terms
    (epochs) that never decrease nor pass ``max_term``, of known kinds, and whether every conf
    change among them decodes to a valid change (a peer's appends are checked with this)."""
    expected = prev_index + 1
    floor = prev_term
    for entry in entries:
        if entry.index != expected or not floor <= entry.term <= max_term:
            return False
        if entry.kind not in _ENTRY_KINDS:
            return False
        if entry.kind == EntryKind.CONF_CHANGE:
            try:
                change = decode_conf_change(entry.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return False
            if not valid_change(change):
                return False
        expected += 1
        floor = entry.term
    return True


ConfHistory = list[tuple[int, ConfState]]  # (index it took effect at, configuration), ascending


def conf_at(confs: ConfHistory, index: int) -> ConfState:
    """The configuration in effect at ``index`` (``index`` >= the first entry's index)."""
    found = confs[0][1]
    for at, conf in confs:
        if at > index:
            break
        found = conf
    return found


def compact(log: ReplicatedLog, confs: ConfHistory, snapshot: Snapshot) -> tuple[Snapshot, ConfHistory]:
    """:meth:`ConsensusCore.compact` for a core whose log is a :class:`ReplicatedLog` and whose
    applied configurations are ``confs``: the completed snapshot (a zero term and an empty conf
    filled in from the log) and the configuration history rebased on it. Raises ProtocolMisuse
    for an index the log does not hold above its compaction point, or an image of a size peers
    would refuse."""
    meta = snapshot.meta
    index = meta.index
    held = log.term(index)
    if held is None or index <= log.offset:
        raise ProtocolMisuse(
            f"cannot compact to {index}: the log holds {log.first_index}..{log.last_index}"
        )
    if not 1 <= len(snapshot.data) <= limits.RAFT_SNAPSHOT_BYTES_MAX:
        # Followers refuse any other size, so it could never be sent.
        raise ProtocolMisuse(
            f"a snapshot's data must hold 1..{limits.RAFT_SNAPSHOT_BYTES_MAX} bytes, "
            f"not {len(snapshot.data)}"
        )
    term = meta.term or held
    conf = meta.conf if meta.conf != ConfState() else conf_at(confs, index)
    full = Snapshot(SnapshotMeta(index=index, term=term, conf=conf), snapshot.data)
    log.compact(full)
    rebased = [(index, conf_at(confs, index))] + [(at, c) for at, c in confs if at > index]
    return full, rebased
