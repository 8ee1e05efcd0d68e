"""The simulator's judges: safety invariants after every step, and verdicts on the history.

Theory of operation
-------------------
:class:`StepJudge` checks the four invariants of :mod:`exapyte.protocol.invariants` (election
safety, log matching, leader completeness, state-machine safety) after **every** step of every
node. A step changes one node, so only that node's view is examined, and log matching is
incremental: a global map remembers, for every ``(index, term)`` ever seen, the entry's payload
and the term before it; a node's log is compared with the copy taken at its previous check and
only the entries after the common prefix are looked up. The cost of a check is proportional to
what changed, so checking after every step stays cheap.

At the end of a run, :func:`judge_history` gives the verdicts that need the whole run:

- **linearizability** of the strong part of the client history (writes, compare-and-sets and
  strong reads) against the ``kv`` model (a failed compare-and-set, ``error: cas-mismatch``, is
  a definite mismatch), by the harness's checker. The library never imports ``harness`` at
  module level: the import happens inside :func:`check_linearizable` and :func:`check_levels`,
  only when a history is judged, so ``exapyte`` installs and runs without the harness;
- **the per-level guarantees** (:func:`check_levels`: the harness's level checkers,
  ``harness.checker.levels``): each op judged at the level it asked for (session guarantees,
  consistent prefix, bounded staleness within the nodes' K and T, convergence after heal), the
  same checkers and the same history fields as a harness run;
- **no acknowledged write lost**: every write or cas a client saw succeed was applied at an index
  the cluster still holds at the end (at or below its final applied index);
- **liveness**: the final reads, issued after heal and a quiet period, all succeeded, and the
  replicas converged to the same applied index and the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from exapyte.errors import InvariantViolation
from exapyte.kv import decode_command
from exapyte.protocol.invariants import (
    InvariantChecker,
    NodeView,
    check_election_safety,
    check_leader_completeness,
    check_state_machine_safety,
)
from exapyte.protocol.types import Entry, EntryKind

INVARIANT_NAMES: tuple[str, ...] = (
    "election safety",
    "log matching",
    "leader completeness",
    "state-machine safety",
    "entry identity",
)
LINEARIZABILITY_TIMEOUT_S = 30.0


# Violations the Raft core detects itself, by the invariant they reveal.
_CORE_VIOLATIONS: tuple[tuple[str, str], ...] = (
    ("committed entry", "leader completeness"),  # the judge: a committed entry changed
    ("conflicts with a committed entry", "leader completeness"),  # a leader lacks it
    ("would drop committed entries", "leader completeness"),
    ("for the same term", "election safety"),  # a leader heard from another leader
)


def invariant_name(message: str) -> str:
    """The invariant a violation message names ("core-assertion" when it names none)."""
    for name in INVARIANT_NAMES:
        if message.startswith(name):
            return name
    for fragment, name in _CORE_VIOLATIONS:
        if fragment in message:
            return name
    return "core-assertion"


def view_of(node_id: str, core: Any) -> NodeView:
    """The observer's view of one consensus core: what its ``observe()`` shows."""
    view: NodeView = core.observe()
    assert view.node_id == node_id, (view.node_id, node_id)
    return view


class StepJudge(InvariantChecker):
    """The four invariants, checked per node step; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._pairs: dict[tuple[int, int], tuple[int, bytes, int, str]] = {}
        self._log_copies: dict[str, tuple[int, int, list[Entry]]] = {}
        # entry identity (views without log matching): (index, term) -> (kind, data, node), and
        # how far each node's chosen prefix / each leader's ballot stream was checked
        self._identities: dict[tuple[int, int], tuple[int, bytes, str]] = {}
        self._identity_commit: dict[str, int] = {}
        self._identity_stream: dict[tuple[str, int], int] = {}
        self.applied_commands: dict[tuple[str, int], list[int]] = {}
        self.checks = 0

    # --- per step ------------------------------------------------------------------------------

    def observe_node(self, view: NodeView) -> None:
        self.checks += 1
        check_election_safety(self.leaders, (view,))
        self._check_log_matching(view)
        if not view.log_matching:
            self._check_entry_identity(view)
        self._record_commits(view)
        if view.is_leader:
            key = (view.node_id, view.term)
            start = self._completeness_checked.get(key, 0) + 1
            self._completeness_checked[key] = check_leader_completeness(
                self.committed, view, start, self.max_committed
            )

    def forget_node(self, node_id: str) -> None:
        """The node restarted: its next log is compared from scratch."""
        self._log_copies.pop(node_id, None)

    def _check_log_matching(self, view: NodeView) -> None:
        entries = view.entries
        if not view.log_matching:  # only the chosen prefix is promised to match
            entries = entries[: max(0, view.commit - view.offset)]
        copy = self._log_copies.get(view.node_id)
        start = 0
        if copy is not None and copy[0] == view.offset and copy[1] == view.offset_term:
            old = copy[2]
            if len(old) == len(entries) and old == entries:
                return
            lo, hi = 0, min(len(old), len(entries))
            while lo < hi:  # the longest common prefix, compared in C
                mid = (lo + hi + 1) // 2
                if entries[:mid] == old[:mid]:
                    lo = mid
                else:
                    hi = mid - 1
            start = lo
        pairs = self._pairs
        for position in range(start, len(entries)):
            entry = entries[position]
            prev_term = entries[position - 1].term if position else view.offset_term
            key = (entry.index, entry.term)
            known = pairs.get(key)
            if known is None:
                pairs[key] = (entry.kind, entry.data, prev_term, view.node_id)
                continue
            kind, data, known_prev, node = known
            if kind != entry.kind or data != entry.data:
                raise InvariantViolation(
                    f"log matching: {node} and {view.node_id} hold different entries at index "
                    f"{entry.index} term {entry.term}"
                )
            if known_prev != prev_term:
                raise InvariantViolation(
                    f"log matching: {node} and {view.node_id} agree on index {entry.index} term "
                    f"{entry.term} but differ before it (terms {known_prev} vs {prev_term})"
                )
        self._log_copies[view.node_id] = (view.offset, view.offset_term, list(entries))

    def _check_entry_identity(self, view: NodeView) -> None:
        """An ``(index, term)`` names one value on every replica for ever, uncommitted slots
        included (Multi-Paxos's identity rule: one node leads a round and fills each slot of it
        once; a re-proposal re-sends the very entry). Log matching compares only the chosen
        prefix of such a view; this also takes in the slots a leader shows of its own ballot, so
        a leader that gives an old ``(index, term)`` another value (a value moved to another
        slot, say) is caught even if no quorum ever accepts it.

        Incremental: a chosen prefix only grows and a leader's stream of one round only grows, so
        each node's entries are looked up once."""
        node = view.node_id
        checked = self._identity_commit.get(node, 0)
        self._identity_commit[node] = view.commit
        self._check_identities(view, max(checked, view.offset) + 1, view.commit)
        if view.is_leader:
            stream = (node, view.term)
            checked = max(self._identity_stream.get(stream, 0), view.commit)
            self._identity_stream[stream] = view.last_index
            self._check_identities(view, checked + 1, view.last_index)

    def _check_identities(self, view: NodeView, first: int, last: int) -> None:
        node = view.node_id
        identities = self._identities
        for index in range(first, last + 1):
            entry = view.entry_at(index)
            if entry is None:
                continue
            key = (index, entry.term)
            known = identities.get(key)
            if known is None:
                identities[key] = (entry.kind, entry.data, node)
            elif known[0] != entry.kind or known[1] != entry.data:
                raise InvariantViolation(
                    f"entry identity: {known[2]} and {node} hold different values at index "
                    f"{index} term {entry.term} ({'chosen' if index <= view.commit else 'accepted'}"
                    f" on {node})"
                )

    def on_apply(self, node_id: str, entries: Iterable[Entry]) -> None:
        entries = tuple(entries)
        check_state_machine_safety(self.applied, node_id, entries)
        for entry in entries:
            if entry.kind == EntryKind.NORMAL and entry.data:
                cmd = decode_command(entry.data)
                at = self.applied_commands.setdefault((cmd.client_id, cmd.seq), [])
                if entry.index not in at:
                    at.append(entry.index)


# --- end-of-run verdicts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """``check`` is the name of the check that failed ("" when the run passed)."""

    ok: bool
    check: str = ""
    detail: str = ""


def check_linearizable(jsonl: str, timeout_s: float = LINEARIZABILITY_TIMEOUT_S) -> tuple[Any, str]:
    """Check a JSONL history with the harness's checker; returns (valid, cause).

    ``valid`` is True, False or "unknown". The harness is imported here, lazily: the library
    does not depend on it anywhere else.
    """
    from harness.checker import check, parse_history
    from harness.checker.models import Kv

    history = parse_history(jsonl, "jsonl")
    result = check(Kv(fail_cas_is_mismatch=True), history, timeout_s)
    return result.valid, result.cause or ""


def check_levels(
    events: Iterable[Any], *, staleness_versions: int, staleness_ms: float,
    final_start_ns: int | None,
) -> tuple[Any, str, tuple[tuple[str, str], ...]]:
    """The per-level checkers on a history's events; returns (valid, cause, violations):
    ``valid`` True, False or "unknown", ``violations`` every violation that breaks the level
    its op asked for (those that make ``valid`` False), as (check, cause), in the report's order.
    Linearizability of the strong ops is :func:`check_linearizable`'s (not repeated here).
    Lazy harness import."""
    from harness.checker.level_history import LEVEL_RANK, level_history
    from harness.checker.levels import NOT_PROMISED, check_level

    report = check_level(level_history(list(events)), None, staleness_versions=staleness_versions,
                         staleness_ms=staleness_ms, final_start_ns=final_start_ns,
                         linearizability=False)
    history = report.history

    def breaks(v: Any) -> bool:  # rules out the level its op asked for (the report's rule)
        asked = history.op(v.op).level
        return (LEVEL_RANK[v.level] <= LEVEL_RANK.get(asked, LEVEL_RANK["strong"])
                and v.level not in NOT_PROMISED.get(asked, frozenset()))

    broken = tuple((v.check, v.cause) for v in report.violations if breaks(v))
    return report.valid, report.cause or "", broken


def lost_writes(
    acked: Iterable[tuple[str, int, Any]],
    applied_commands: dict[tuple[str, int], list[int]],
    final_applied: int,
) -> list[str]:
    """Acknowledged writes not applied at or below ``final_applied``; described."""
    lost = []
    for client_id, seq, op in acked:
        at = applied_commands.get((client_id, seq), [])
        if not any(index <= final_applied for index in at):
            where = f"applied at {at}" if at else "never applied"
            lost.append(f"{client_id}#{seq} {op.f} {op.key}={op.value!r} ({where}, cluster at {final_applied})")
    return lost


__all__ = [
    "INVARIANT_NAMES",
    "StepJudge",
    "Verdict",
    "check_levels",
    "check_linearizable",
    "invariant_name",
    "lost_writes",
    "view_of",
]
