"""The protocol-independent machinery: log, quorum, progress, read index, invariants, drive."""

from __future__ import annotations

import pytest

from exapyte.errors import InvariantViolation, ProtocolMisuse
from exapyte.protocol.invariants import (
    InvariantChecker,
    NodeView,
    check_election_safety,
    check_log_matching,
    check_state_machine_safety,
)
from exapyte.protocol.log import ReplicatedLog
from exapyte.protocol.progress import Inflights, Progress, ProgressState
from exapyte.protocol.quorum import JointConfig, MajorityConfig, VoteResult
from exapyte.protocol.readindex import ReadIndexTracker
from exapyte.protocol.types import Entry, Snapshot, SnapshotMeta


def log_with(terms: list[int]) -> ReplicatedLog:
    return ReplicatedLog(entries=[Entry(t, i + 1) for i, t in enumerate(terms)])


def test_log_positions_and_term_lookup() -> None:
    log = log_with([1, 1, 2, 3, 3])
    assert (log.first_index, log.last_index, log.last_term) == (1, 5, 3)
    assert log.term(0) == 0 and log.term(3) == 2 and log.term(6) is None
    assert log.first_index_of_term(3, 5) == 4 and log.first_index_of_term(1, 2) == 1
    assert log.last_index_of_term(1) == 2 and log.last_index_of_term(4) is None


def test_log_slice_bounds_by_count_and_bytes() -> None:
    log = ReplicatedLog(entries=[Entry(1, i, data=bytes(100)) for i in range(1, 11)])
    assert len(log.slice(1, 11, max_count=3)) == 3
    assert len(log.slice(1, 11, max_bytes=250)) == 2
    assert len(log.slice(1, 11, max_bytes=1)) == 1  # never empty
    with pytest.raises(ProtocolMisuse):
        log.slice(0, 3)


def test_log_maybe_append_truncates_conflicts_only() -> None:
    log = log_with([1, 1, 2])
    assert log.maybe_append(1, 1, [Entry(1, 2), Entry(3, 3)]) == 3
    assert log.term(3) == 3 and log.stable == 2
    assert log.maybe_append(1, 2, [Entry(3, 2)]) is None
    log.commit_to(3)
    with pytest.raises(InvariantViolation):
        log.maybe_append(1, 1, [Entry(4, 2)])


def test_log_compact_and_restore() -> None:
    log = log_with([1, 1, 2, 2])
    log.commit_to(4)
    log.applied_to(3)
    log.compact(Snapshot(SnapshotMeta(index=3, term=2)))
    assert (log.first_index, log.term(3), log.term(2)) == (4, 2, None)
    with pytest.raises(ProtocolMisuse):
        log.compact(Snapshot(SnapshotMeta(index=4, term=2)))  # not applied
    snap = Snapshot(SnapshotMeta(index=10, term=5))
    log.restore(snap)
    assert log.last_index == 10 and log.committed == 10 and log.pending_snapshot is snap
    assert log.committed_unapplied() == []


def test_majority_committed_index_and_votes() -> None:
    q = MajorityConfig(["a", "b", "c"])
    assert q.committed_index({"a": 5, "b": 3, "c": 1}) == 3
    assert q.committed_index({"a": 5}) == 0
    assert q.vote_result({"a": True, "b": True}) is VoteResult.WON
    assert q.vote_result({"a": False, "b": False}) is VoteResult.LOST
    assert q.vote_result({"a": True, "b": False}) is VoteResult.PENDING


def test_joint_needs_both_majorities() -> None:
    j = JointConfig(["a", "b", "c"], ["c", "d", "e"])
    assert j.committed_index({"a": 9, "b": 9, "c": 1, "d": 1, "e": 1}) == 1
    assert j.vote_result({"a": True, "b": True}) is VoteResult.PENDING
    assert j.vote_result({"a": True, "b": True, "d": True, "e": True}) is VoteResult.WON
    assert j.vote_result({"d": False, "e": False}) is VoteResult.LOST
    assert JointConfig(["a"]).committed_index({"a": 4}) == 4


def test_progress_states_and_inflight_window() -> None:
    pr = Progress(next_index=11, max_inflight=2)
    assert pr.state is ProgressState.PROBE
    pr.sent_entries(10)
    assert pr.is_paused()
    assert not pr.maybe_decrease_to(5, 3)  # stale rejection
    assert pr.maybe_decrease_to(10, 4) and pr.next == 4
    pr.maybe_update(6)
    pr.become_replicate()
    pr.sent_entries(8)
    pr.sent_entries(9)
    assert pr.is_paused() and len(pr.inflights) == 2
    pr.maybe_update(8)
    pr.inflights.free_le(8)
    assert not pr.is_paused()
    infl = Inflights(3)
    for i in (1, 2, 3):
        infl.add(i)
    assert infl.full()
    infl.free_first()
    assert len(infl) == 2


def test_read_index_rounds_release_in_order() -> None:
    voters = JointConfig(["a", "b", "c"])
    t = ReadIndexTracker()
    t.add(b"r1", 5)
    t.add(b"r2", 5)
    round1 = t.next_round()
    t.add(b"r3", 6)  # arrives after round 1 left: needs round 2
    assert t.release(voters, "a") == []
    t.ack("b", round1)
    assert t.release(voters, "a") == [(b"r1", 5), (b"r2", 5)]
    round2 = t.next_round()
    t.ack("c", round2)
    assert t.release(voters, "a") == [(b"r3", 6)]
    t.wait_for_commit(b"r4")
    assert t.reset() == [b"r4"]


def view(node: str, term: int, leader: bool, commit: int, terms: list[int]) -> NodeView:
    entries = [Entry(t, i + 1, data=f"{t}".encode()) for i, t in enumerate(terms)]
    return NodeView(node, term, leader, commit, 0, 0, entries)


def test_invariants_detect_two_leaders_in_a_term() -> None:
    history: dict[int, str] = {}
    check_election_safety(history, [view("a", 2, True, 0, [])])
    with pytest.raises(InvariantViolation, match="election safety"):
        check_election_safety(history, [view("b", 2, True, 0, [])])


def test_invariants_detect_log_mismatch() -> None:
    a = NodeView("a", 3, False, 0, 0, 0, [Entry(1, 1), Entry(2, 2, data=b"x")])
    b = NodeView("b", 3, False, 0, 0, 0, [Entry(1, 1), Entry(2, 2, data=b"y")])
    with pytest.raises(InvariantViolation, match="log matching"):
        check_log_matching([a, b])
    c = NodeView("c", 3, False, 0, 0, 0, [Entry(2, 1), Entry(2, 2, data=b"x")])
    with pytest.raises(InvariantViolation, match="differ before"):
        check_log_matching([a, c])


def test_invariants_detect_lost_committed_entry() -> None:
    checker = InvariantChecker()
    checker.observe([view("a", 2, True, 2, [1, 2]), view("b", 2, False, 2, [1, 2])])
    with pytest.raises(InvariantViolation, match="leader completeness"):
        checker.observe([view("c", 3, True, 1, [1, 3])])


def test_invariants_detect_divergent_apply() -> None:
    applied: dict[int, tuple[str, Entry]] = {}
    check_state_machine_safety(applied, "a", [Entry(1, 1, data=b"x")])
    with pytest.raises(InvariantViolation, match="state-machine safety"):
        check_state_machine_safety(applied, "b", [Entry(1, 1, data=b"y")])
