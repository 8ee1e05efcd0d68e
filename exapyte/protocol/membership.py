"""Membership changes, the same for every protocol: which single-server changes exist, what a
configuration becomes after one, and what a leader refuses to propose.

A ``CONF_CHANGE`` entry carries one :class:`~exapyte.protocol.types.ConfChange` (Raft thesis
§4.1: one server at a time, so any two consecutive configurations share a majority). Every core
applies it when the entry is applied, with :func:`apply_change`, and so does the replica's state
machine for the group's configuration version (``exapyte/kv.py``): both must read a change the
same way. A leader checks a proposed change with :func:`check_proposal` before appending it.
"""

from __future__ import annotations

from exapyte.errors import ProposalDropped, ProtocolMisuse
from exapyte.protocol.types import ConfChange, ConfChangeKind, ConfState

_CHANGE_KINDS = frozenset(int(k) for k in ConfChangeKind)


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
