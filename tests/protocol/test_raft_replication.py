"""Log replication: Raft §5.3, §5.4.2 (Figure 8), pipelining and batching, persistence, recovery."""

from __future__ import annotations

import msgspec
import pytest

from exapyte.errors import InvariantViolation, NotLeader, ProtocolMisuse
from exapyte.protocol.drive import drive
from exapyte.protocol.raft import RaftConfig
from exapyte.protocol.raft.core import decode_hard_state
from exapyte.protocol.raft.messages import Append, AppendResp, Vote, VoteResp
from exapyte.protocol.types import Entry, EntryKind, PersistedState, Role

from .cluster import Cluster
from .helpers import make_core, pump, sent_of


# Raft §5.3
def test_leader_replicates_and_commits_on_majority() -> None:
    c = Cluster(seed=1)
    c.elect("n1")
    c.cut("n1", "n3")
    index, term = c.put("x", "1")
    assert c.core("n1").log.committed >= index  # n1 + n2 are a majority
    # n2 holds the entry but learns that it is committed only from the next append or
    # heartbeat, which carries the leader's commit index: no round of its own announces it
    assert c.core("n2").log.last_index >= index > c.core("n2").log.committed
    assert c.hosts["n2"].kv.data == {}
    c.run(1)  # one heartbeat
    assert c.hosts["n2"].kv.data == {"x": "1"}
    assert c.core("n3").log.last_index < index
    c.heal()
    c.run(3)
    assert c.hosts["n3"].kv.data == {"x": "1"}


# Raft §5.3: a follower refuses entries that do not follow a matching entry
def test_follower_rejects_append_without_matching_prev_and_hints() -> None:
    core, host = make_core(check_quorum=False)  # log: bootstrap entries 1..3 of term 1
    core.step(Append("n2", "n1", 2, 7, 2, (Entry(2, 8),), 3))
    pump(core, host)
    (resp,) = sent_of(host, AppendResp)
    assert resp.reject and resp.index == 7
    assert (resp.hint_index, resp.hint_term) == (4, 0)  # our log is too short: last + 1


# Raft §5.3: conflicting uncommitted entries are truncated and replaced
def test_conflicting_suffix_is_truncated() -> None:
    core, host = make_core(check_quorum=False)
    core.step(Append("n2", "n1", 2, 3, 1, (Entry(2, 4), Entry(2, 5), Entry(2, 6)), 3))
    pump(core, host)
    assert core.log.last_index == 6
    core.step(Append("n3", "n1", 3, 4, 2, (Entry(3, 5, data=b"new"),), 5))
    pump(core, host)
    assert core.log.last_index == 5 and core.log.entry(5).data == b"new"
    assert core.log.committed == 5
    # the storage was told to overwrite from index 5
    persisted = [args[1] for name, args in host.calls if name == "persist" and args[1]]
    assert persisted[-1][0].index == 5


# Raft §5.3: a stale, shorter append never truncates matching entries
def test_duplicate_old_append_does_not_truncate() -> None:
    core, host = make_core(check_quorum=False)
    core.step(Append("n2", "n1", 2, 3, 1, (Entry(2, 4), Entry(2, 5)), 3))
    core.step(Append("n2", "n1", 2, 3, 1, (Entry(2, 4),), 3))
    pump(core, host)
    assert core.log.last_index == 5
    assert [r.index for r in sent_of(host, AppendResp)] == [5, 4]


# Raft §5.3: truncating a committed entry is an invariant violation, never silent
def test_truncating_committed_entry_raises() -> None:
    core, host = make_core(check_quorum=False)
    core.step(Append("n2", "n1", 2, 3, 1, (Entry(2, 4), Entry(2, 5)), 5))
    pump(core, host)
    with pytest.raises(InvariantViolation):
        core.log.truncate_and_append([Entry(3, 5)])


# Raft §5.3: fast backtracking
def test_fast_backtracking_round_trips_are_per_term_not_per_entry() -> None:
    # A follower with 200 divergent entries of one old term needs O(1) rejections.
    leader, lhost = make_core("n1", check_quorum=False, pre_vote=False)
    follower, fhost = make_core("n2", check_quorum=False, pre_vote=False)
    follower.step(Append("n3", "n2", 2, 3, 1, tuple(Entry(2, i) for i in range(4, 204)), 3))
    pump(follower, fhost)
    # leader: term 3 with entries 4..10 from term 1's era replaced by its own
    leader.step(Vote("n3", "n1", 2, 3, 1))  # move to term 2 (grant), irrelevant
    pump(leader, lhost)
    leader.campaign()
    pump(leader, lhost)
    leader.step(VoteResp("n3", "n1", leader.term, False))
    pump(leader, lhost)
    assert leader.role is Role.LEADER
    rounds = 0
    fhost.take()
    while rounds < 20:
        rounds += 1
        to_f = [m for m in lhost.take() if getattr(m, "to", None) == "n2" and isinstance(m, Append)]
        if not to_f:
            break
        for m in to_f:
            follower.step(m)
        pump(follower, fhost)
        replies = [m for m in fhost.take() if isinstance(m, AppendResp)]
        for r in replies:
            leader.step(r)
        pump(leader, lhost)
        if follower.log.last_index == leader.log.last_index and not any(r.reject for r in replies):
            break
    assert follower.log.last_index == leader.log.last_index
    assert follower.log.last_term == leader.term
    assert rounds <= 4


# Raft §5.4.2: a leader never commits an entry of an earlier term by counting replicas
def test_figure_8_previous_term_entry_not_committed_by_replica_count() -> None:
    ids = ("n1", "n2", "n3", "n4", "n5")
    c = Cluster(ids, seed=11, pre_vote=False, check_quorum=False, max_entries_per_msg=1)
    c.elect("n1")
    # n1 (term t1) replicates X to n2 only
    c.partition(["n1", "n2"], ["n3", "n4", "n5"])
    x_index, t1 = c.propose("n1", b"x=term-old") or (0, 0)
    c.stabilize()
    assert c.core("n2").log.term(x_index) == t1
    assert c.core("n1").log.committed < x_index
    c.crash("n1")
    # n5 becomes leader of a later term with n3, n4; its NOOP never leaves n5
    c.heal()
    c.cut("n5", "n2")
    c.core("n5").campaign()
    c.drive_all()
    for _ in range(2):  # votes only: n5's appends never leave
        c.deliver(where=lambda m: isinstance(m, (Vote, VoteResp)))
    assert c.core("n5").role is Role.LEADER
    c.crash("n5")
    c.queue.clear()
    c.heal()
    # n1 comes back and is elected in an even later term
    c.restart("n1")
    for _ in range(5):
        if c.core("n1").role is Role.LEADER:
            break
        c.core("n1").campaign()
        c.drive_all()
        for _ in range(2):
            c.deliver(where=lambda m: isinstance(m, (Vote, VoteResp)))
    leader = c.core("n1")
    assert leader.role is Role.LEADER and leader.term > t1 + 1
    # the network loses every entry of the new term but delivers the rest: X reaches n3
    def strip_new_term(m: object) -> object:
        if isinstance(m, Append):
            kept = tuple(e for e in m.entries if e.term != leader.term)
            return msgspec.structs.replace(m, entries=kept)
        return m

    for _ in range(30):
        if not c.queue:
            c.tick(1, nodes=["n1"])
        c.queue = [strip_new_term(m) for m in c.queue]
        c.deliver(max_messages=1)
        if c.core("n3").log.term(x_index) == t1:
            break
    holders = [n for n in ("n1", "n2", "n3") if c.core(n).log.term(x_index) == t1]
    for _ in range(6):  # let the acknowledgements of X reach the leader
        c.queue = [strip_new_term(m) for m in c.queue]
        c.deliver()
    assert len(holders) == 3  # a majority of five stores X, and the leader knows it...
    assert sum(1 for n in ("n1", "n2", "n3") if leader.trk.progress[n].match >= x_index) == 3
    assert leader.log.committed < x_index  # ...and still it is not committed (§5.4.2)
    # once an entry of the current term is replicated, both are committed
    c.run(6)  # lost appends are detected by the stalled heartbeat answers and resent
    assert leader.log.committed > x_index


# Raft §5.3: pipelining is bounded by max_inflight_msgs
def test_pipelining_respects_inflight_window() -> None:
    c = Cluster(seed=3, max_inflight_msgs=3, max_entries_per_msg=2)
    c.elect("n1")
    c.stabilize()
    for i in range(40):
        c.cores["n1"].propose(f"k{i}=v".encode())
    c.drive_all()
    appends = [m for m in c.queue if isinstance(m, Append) and m.to == "n2" and m.entries]
    assert len(appends) == 3
    assert all(len(m.entries) <= 2 for m in appends)
    c.stabilize()
    assert c.core("n2").log.last_index == c.core("n1").log.last_index


# batching: proposals made between two Readies share append messages
def test_batching_coalesces_proposals_into_one_message() -> None:
    c = Cluster(seed=3)
    c.elect("n1")
    for i in range(100):
        c.cores["n1"].propose(f"k{i}=v".encode())
    c.drive_all()
    appends = [m for m in c.queue if isinstance(m, Append) and m.to == "n2"]
    assert len(appends) == 1 and len(appends[0].entries) == 100


def test_batching_respects_byte_bound() -> None:
    c = Cluster(seed=3, max_bytes_per_msg=1000)
    c.elect("n1")
    for i in range(10):
        c.cores["n1"].propose(b"k=" + bytes(300))
    c.drive_all()
    appends = [m for m in c.queue if isinstance(m, Append) and m.to == "n2"]
    assert len(appends) >= 4
    assert all(sum(len(e.data) for e in m.entries) <= 1000 for m in appends)


# Raft §5.2 + Figure 2 "persistent state": the vote is durable before the response leaves
def test_vote_response_never_precedes_its_hard_state() -> None:
    core, host = make_core(pre_vote=False, check_quorum=False)
    core.step(Vote("n2", "n1", 4, 3, 1))
    pump(core, host)
    persisted = decode_hard_state(b"")
    for name, args in host.calls:
        if name == "persist" and args[0] is not None:
            persisted = decode_hard_state(args[0].record)
            assert args[3] is True  # term/vote changes are fsynced
        if name == "send":
            for m in args:
                if isinstance(m, VoteResp) and not m.reject:
                    assert persisted.term == m.term and persisted.vote == m.to


def test_append_ack_never_precedes_persisting_the_entries() -> None:
    core, host = make_core(check_quorum=False)
    core.step(Append("n2", "n1", 2, 3, 1, (Entry(2, 4), Entry(2, 5)), 3))
    pump(core, host)
    stored = 0
    for name, args in host.calls:
        if name == "persist" and args[1]:
            stored = args[1][-1].index
        if name == "send":
            for m in args:
                if isinstance(m, AppendResp) and not m.reject:
                    assert m.index <= stored


def test_drive_applies_ready_in_documented_order() -> None:
    core, host = make_core("n1", voters=("n1",))
    for _ in range(25):
        core.tick()
        pump(core, host)
    assert core.role is Role.LEADER
    core.propose(b"a=1")
    core.read(b"r")
    rank = {"persist": 0, "send": 1, "install": 2, "apply": 3, "reads": 4}
    while core.has_ready():
        host.calls.clear()
        assert drive(core, host)
        ranks = [rank[name] for name, _ in host.calls]
        assert ranks == sorted(ranks)
    assert [r.request_id for r in host.reads] == [b"r"]


# crash recovery: term, vote and log survive; unpersisted state does not matter
def test_restart_recovers_term_vote_and_log() -> None:
    c = Cluster(seed=5)
    c.elect("n1")
    for i in range(10):
        c.put(f"k{i}", str(i))
    before = c.core("n2")
    term, vote, last = before.term, before.vote, before.log.last_index
    c.crash("n2")
    c.restart("n2")
    after = c.core("n2")
    assert (after.term, after.vote, after.log.last_index) == (term, vote, last)
    c.run(3)
    assert c.hosts["n2"].kv.data == {f"k{i}": str(i) for i in range(10)}


def test_restarted_node_does_not_vote_twice_in_a_term() -> None:
    core, host = make_core(pre_vote=False, check_quorum=False)
    core.step(Vote("n2", "n1", 4, 3, 1))
    pump(core, host)
    stored = tuple(core.log.entry(i) for i in range(1, core.log.last_index + 1))
    again, ahost = make_core(
        persisted=PersistedState(hard_state=host.hard_state, entries=stored),
        pre_vote=False,
        check_quorum=False,
    )
    assert (again.term, again.vote) == (4, "n2")
    again.step(Vote("n3", "n1", 4, 3, 1))
    pump(again, ahost)
    assert sent_of(ahost, VoteResp)[-1].reject


def test_whole_cluster_restart_keeps_committed_writes() -> None:
    c = Cluster(seed=6)
    c.elect("n2")
    for i in range(5):
        c.put(f"k{i}", "v")
    for n in ("n1", "n2", "n3"):
        c.crash(n)
    c.queue.clear()
    for n in ("n1", "n2", "n3"):
        c.restart(n)
    c.wait_leader()
    c.run(3)
    for n in ("n1", "n2", "n3"):
        assert c.hosts[n].kv.data == {f"k{i}": "v" for i in range(5)}


# defensive input handling
def test_bad_remote_input_is_counted_not_raised() -> None:
    core, host = make_core(check_quorum=False)
    core.step(object())
    core.step(Append("n2", "n9", 2, 3, 1, (), 3))  # misrouted
    core.step(Append("n1", "n1", 2, 3, 1, (), 3))  # from ourselves
    core.step(Append("n2", "n1", 2, -1, 1, (), 3))  # malformed
    core.step(Append("n2", "n1", 2, 3, 1, (Entry(2, 9),), 3))  # not contiguous
    core.step(Append("n2", "n1", 0, 0, 0, (), 0))  # stale term
    pump(core, host)
    expected = {
        "unknown_message": 1, "misrouted": 1, "bad_sender": 1, "malformed": 1,
        "malformed_entries": 1,
    }
    assert core.dropped == expected | {
        k: v for k, v in core.dropped.items() if k not in expected
    }
    assert core.status().dropped["malformed"] == 1


def test_local_misuse_raises() -> None:
    core, host = make_core(check_quorum=False)
    with pytest.raises(NotLeader):
        core.propose(b"x")
    core.tick()
    rd = core.ready() if core.has_ready() else None
    if rd is not None:
        with pytest.raises(ProtocolMisuse):
            core.step(Append("n2", "n1", 2, 3, 1, (), 3))
        core.advance(rd)
    with pytest.raises(ProtocolMisuse, match="election_timeout_ticks"):
        RaftConfig("n1", election_timeout_ticks=1).validate()
    with pytest.raises(ProtocolMisuse, match="max_inflight_msgs"):
        RaftConfig("n1", max_inflight_msgs=0).validate()


def test_two_leaders_in_one_term_is_an_invariant_violation() -> None:
    c = Cluster(seed=7)
    c.elect("n1")
    leader = c.core("n1")
    with pytest.raises(InvariantViolation):
        leader.step(Append("n2", "n1", leader.term, 0, 0, (), 0))


def test_noop_and_conf_entries_are_passed_to_apply() -> None:
    c = Cluster(seed=8)
    c.elect("n1")
    kinds = {e.kind for e in c.hosts["n1"].applied_log}
    assert EntryKind.CONF_CHANGE in kinds and EntryKind.NOOP in kinds


# Raft §5.4 (leader completeness): a follower acknowledging an index the leader does not hold
# proves a committed entry is missing from the leader's log; the leader stops loudly.
def test_leader_crashes_on_an_acknowledgement_beyond_its_log() -> None:
    c = Cluster(seed=1)
    c.elect("n1")
    leader = c.core("n1")
    beyond = leader.log.last_index + 5
    with pytest.raises(InvariantViolation, match="leader completeness"):
        leader.step(AppendResp("n2", "n1", leader.term, index=beyond))
