"""Safety invariants of replicated-log consensus, checked over observed node state.

Theory of operation
-------------------
The four properties of Raft's Figure 3, which Multi-Paxos and ZAB must satisfy too (read
"term" as ballot or epoch):

- **Election safety**: at most one leader per term, across the whole observation history.
- **Log matching**: if two logs hold an entry with the same index and term, the logs are
  identical up to that index. Checked by induction: every (index, term) pair seen anywhere must
  carry the same payload *and* be preceded by the same term everywhere.
- **Leader completeness**: an entry committed in some term is in the log of every leader of every
  later term. An entry observed committed on a node whose term was ``t`` was committed in a term
  ``<= t``, so every leader observed later at a term ``> t`` must hold it (a sound, slightly
  weaker check: it cannot raise a false alarm).
- **State-machine safety**: no two nodes apply different entries at the same index.

The functions here are pure (they only read what they are given, except the history objects
they are explicitly handed). :class:`InvariantChecker` keeps the history between observations so
that the test fixtures and the simulator can check after every single step at a cost
proportional to what changed, not to the whole history. Every violation raises
:class:`~exapyte.errors.InvariantViolation` naming the nodes, index and terms involved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from exapyte.errors import InvariantViolation
from exapyte.protocol.types import Entry


@dataclass(frozen=True, slots=True)
class NodeView:
    """What an observer sees of one node at one instant.

    ``entries`` holds the log after the compaction point (``offset``/``offset_term``); it may be
    the node's own list (it is only read).
    """

    node_id: str
    term: int
    is_leader: bool
    commit: int
    offset: int
    offset_term: int
    entries: Sequence[Entry]
    # Whether the protocol promises Raft's Log Matching property for every entry it holds
    # (Raft and ZAB do; a Multi-Paxos acceptor may hold accepted values above a hole that no
    # quorum chose, so only its chosen prefix is compared).
    log_matching: bool = True

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def term_at(self, index: int) -> int | None:
        if index == self.offset:
            return self.offset_term
        position = index - self.offset - 1
        if 0 <= position < len(self.entries):
            return self.entries[position].term
        return None

    def entry_at(self, index: int) -> Entry | None:
        position = index - self.offset - 1
        if 0 <= position < len(self.entries):
            return self.entries[position]
        return None


def check_election_safety(leaders: dict[int, str], views: Iterable[NodeView]) -> None:
    """Record every observed leader in ``leaders`` (term -> node) and fail on a second one."""
    for view in views:
        if not view.is_leader:
            continue
        known = leaders.get(view.term)
        if known is None:
            leaders[view.term] = view.node_id
        elif known != view.node_id:
            raise InvariantViolation(
                f"election safety: {known} and {view.node_id} were both leader in term {view.term}"
            )


def check_log_matching(views: Sequence[NodeView]) -> None:
    """Fail if two logs agree on (index, term) but differ in payload or in what precedes it."""
    seen: dict[tuple[int, int], tuple[str, Entry, int | None]] = {}
    for view in views:
        prev_term: int | None = view.offset_term
        entries = view.entries
        if not view.log_matching:  # only the chosen prefix is promised to match
            entries = entries[: max(0, view.commit - view.offset)]
        for entry in entries:
            key = (entry.index, entry.term)
            other = seen.get(key)
            if other is None:
                seen[key] = (view.node_id, entry, prev_term)
            else:
                node, other_entry, other_prev = other
                if other_entry.kind != entry.kind or other_entry.data != entry.data:
                    raise InvariantViolation(
                        f"log matching: {node} and {view.node_id} hold different entries at "
                        f"index {entry.index} term {entry.term}: {other_entry!r} vs {entry!r}"
                    )
                if other_prev is not None and prev_term is not None and other_prev != prev_term:
                    raise InvariantViolation(
                        f"log matching: {node} and {view.node_id} agree on index {entry.index} "
                        f"term {entry.term} but differ before it (terms {other_prev} vs "
                        f"{prev_term} at index {entry.index - 1})"
                    )
            prev_term = entry.term


def check_leader_completeness(
    committed: Mapping[int, tuple[int, bytes, int]],
    leader: NodeView,
    start: int = 1,
    stop: int | None = None,
) -> int:
    """Check ``leader`` holds every committed entry with ``start <= index <= stop``.

    ``committed`` maps index -> (entry term, payload, term of the observer that saw it
    committed); only entries seen committed at a term lower than the leader's are required.
    Returns the highest index checked, so callers can resume from there next time.
    """
    if stop is None:
        stop = max(committed, default=0)
    checked = start - 1
    for index in range(start, stop + 1):
        known = committed.get(index)
        checked = index
        if known is None:
            continue  # compacted on every observed node before anybody saw it
        entry_term, data, seen_at = known
        if seen_at < leader.term:
            held = leader.term_at(index)
            if index > leader.offset and held != entry_term:
                raise InvariantViolation(
                    f"leader completeness: entry {index} (term {entry_term}) was committed by "
                    f"term {seen_at} but leader {leader.node_id} of term {leader.term} holds "
                    f"term {held} there"
                )
            entry = leader.entry_at(index)
            if entry is not None and entry.data != data:
                raise InvariantViolation(
                    f"leader completeness: leader {leader.node_id} holds another payload at "
                    f"committed index {index}"
                )
    return checked


def check_state_machine_safety(
    applied: dict[int, tuple[str, Entry]], node_id: str, entries: Iterable[Entry]
) -> None:
    """Record ``entries`` applied by ``node_id`` in ``applied`` and fail on a disagreement."""
    for entry in entries:
        known = applied.get(entry.index)
        if known is None:
            applied[entry.index] = (node_id, entry)
            continue
        other_node, other = known
        if other.term != entry.term or other.kind != entry.kind or other.data != entry.data:
            raise InvariantViolation(
                f"state-machine safety: {other_node} applied {other!r} at index {entry.index} "
                f"but {node_id} applied {entry!r}"
            )


class InvariantChecker:
    """Accumulates history and checks all four properties after each observation."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, tuple[int, bytes, int]] = {}
        self.applied: dict[int, tuple[str, Entry]] = {}
        self._commit_seen: dict[str, int] = {}
        self._completeness_checked: dict[tuple[str, int], int] = {}
        self.max_committed = 0

    def on_apply(self, node_id: str, entries: Iterable[Entry]) -> None:
        check_state_machine_safety(self.applied, node_id, entries)

    def observe(self, views: Sequence[NodeView]) -> None:
        check_election_safety(self.leaders, views)
        check_log_matching(views)
        for view in views:
            self._record_commits(view)
        for view in views:
            if view.is_leader:
                key = (view.node_id, view.term)
                start = self._completeness_checked.get(key, 0) + 1
                # Re-check from the start of entries seen committed at lower terms only once;
                # the leader's log below that point cannot change while it leads this term.
                self._completeness_checked[key] = check_leader_completeness(
                    self.committed, view, start, self.max_committed
                )

    def _record_commits(self, view: NodeView) -> None:
        seen = self._commit_seen.get(view.node_id, 0)
        if view.commit <= seen:
            self._commit_seen[view.node_id] = view.commit
            return
        for index in range(max(seen + 1, view.offset + 1), view.commit + 1):
            entry = view.entry_at(index)
            if entry is None:
                continue
            known = self.committed.get(index)
            if known is None:
                self.committed[index] = (entry.term, entry.data, view.term)
                if index > self.max_committed:
                    self.max_committed = index
            elif known[0] != entry.term or known[1] != entry.data:
                raise InvariantViolation(
                    f"committed entry {index} differs: term {known[0]} elsewhere, term "
                    f"{entry.term} on {view.node_id} (commit {view.commit})"
                )
        self._commit_seen[view.node_id] = view.commit
