"""Synchronization (Zab paper §IV-B, Phase 2): DIFF, TRUNC and SNAP, then NEWLEADER; the
follower persists the synced transactions, THEN its currentEpoch, THEN acknowledges NEWLEADER;
it applies only what is committed; the leader commits after a quorum of acknowledgements and
sends UPTODATE."""

from __future__ import annotations

from typing import Any

from exapyte.protocol.types import Entry, EntryKind
from exapyte.protocol.zab.core import Phase, ZabState, decode_record
from exapyte.protocol.zab.messages import (
    AckNewLeader,
    NewEpoch,
    NewLeader,
    Notification,
    PeerState,
    SnapChunk,
    SyncAck,
    SyncEntries,
    SyncMode,
    UpToDate,
)
from tests.protocol.helpers import RecordingHost, sent_of
from tests.protocol.zab_helpers import make_zab, pump, zab_cluster


def follower_in_sync(epoch: int = 1) -> tuple[Any, RecordingHost]:
    """n1 following n3, which sent NEWEPOCH(epoch); n1's log holds the 3 bootstrap entries."""
    core, host = make_zab("n1")
    core.step(Notification("n3", "n1", core.election_round, PeerState.LOOKING, "n3", 0, 0, 3))
    core.step(NewEpoch("n3", "n1", epoch))
    pump(core, host)
    assert core.phase is Phase.SYNC
    host.take()
    host.calls.clear()
    return core, host


def entries(epoch: int, first: int, count: int, kind: int = EntryKind.NORMAL) -> tuple[Entry, ...]:
    return tuple(Entry(epoch, first + i, kind, f"k{first + i}=v".encode()) for i in range(count))


def record_of(hard_state: Any) -> Any:
    return decode_record(hard_state.record)


def test_the_follower_persists_history_then_epoch_then_acknowledges() -> None:
    core, host = follower_in_sync(epoch=2)
    sync = entries(1, 4, 2) + (Entry(2, 6, EntryKind.NOOP),)
    core.step(SyncEntries("n3", "n1", 2, SyncMode.DIFF, 3, 0, sync, start=True))
    core.step(NewLeader("n3", "n1", 2, last_index=6, last_term=2, commit=3, epoch_start=6))
    pump(core, host)
    persists = [(i, arg) for i, (what, arg) in enumerate(host.calls) if what == "persist"]
    sends = [(i, arg) for i, (what, arg) in enumerate(host.calls) if what == "send"]
    # 1. the synced history, with the epoch unchanged
    history_at, (hs1, written, _, sync1) = next((i, a) for i, a in persists if a[1])
    assert [e.index for e in written] == [4, 5, 6] and sync1
    assert hs1 is None or record_of(hs1).current_epoch == 0
    # 2. currentEpoch = 2, in a persist of its own, fsynced
    epoch_at, (hs2, written2, _, sync2) = next(
        (i, a) for i, a in persists if a[0] is not None and record_of(a[0]).current_epoch == 2
    )
    assert epoch_at > history_at and not written2 and sync2
    # 3. ACK(NEWLEADER) only after both
    ack_at = next(i for i, msgs in sends if any(isinstance(m, AckNewLeader) for m in msgs))
    assert ack_at > epoch_at
    assert core.current_epoch == 2 and core.phase is Phase.BROADCAST


def test_the_follower_applies_only_what_newleader_says_is_committed() -> None:
    core, host = follower_in_sync(epoch=2)
    sync = entries(1, 4, 3) + (Entry(2, 7, EntryKind.NOOP),)
    core.step(SyncEntries("n3", "n1", 2, SyncMode.DIFF, 3, 0, sync, start=True))
    core.step(NewLeader("n3", "n1", 2, last_index=7, last_term=2, commit=5, epoch_start=7))
    pump(core, host)
    assert [e.index for e in host.applied] == [1, 2, 3, 4, 5]
    core.step(UpToDate("n3", "n1", 2, commit=7))
    pump(core, host)
    assert [e.index for e in host.applied] == [1, 2, 3, 4, 5, 6, 7]


def test_a_newleader_that_does_not_end_the_sync_is_refused() -> None:
    core, host = follower_in_sync()
    core.step(SyncEntries("n3", "n1", 1, SyncMode.DIFF, 3, 0, entries(1, 4, 1), start=True))
    core.step(NewLeader("n3", "n1", 1, last_index=5, last_term=1, commit=3, epoch_start=5))
    pump(core, host)
    (nack,) = sent_of(host, AckNewLeader)
    assert not nack.ok and nack.last_index == 4
    assert core.current_epoch == 0 and core.log.last_index == 3


def test_a_sync_batch_out_of_order_is_answered_with_what_the_follower_holds() -> None:
    core, host = follower_in_sync()
    core.step(SyncEntries("n3", "n1", 1, SyncMode.DIFF, 3, 0, entries(1, 4, 2), start=True))
    core.step(SyncEntries("n3", "n1", 1, SyncMode.DIFF, 7, 1, entries(1, 8, 2)))  # 6, 7 lost
    pump(core, host)
    assert core.dropped["sync_out_of_order"] == 1
    acks = sent_of(host, SyncAck)
    assert [a.index for a in acks] == [5, 5]


def test_the_leader_commits_its_initial_history_after_a_quorum_acks_newleader() -> None:
    c = zab_cluster(seed=4)
    # Hold every ACK(NEWLEADER): the new leader must not commit its epoch's NOOP.
    held: list[Any] = []
    original = c.enqueue

    def enqueue(m: Any) -> None:
        (held if isinstance(m, AckNewLeader) else c.queue).append(m)

    c.enqueue = enqueue  # type: ignore[method-assign]
    leader = None
    for _ in range(100):
        c.tick()
        c.stabilize()
        leader = next((n for n in c.ids if c.core(n).phase is Phase.SYNC
                       and c.core(n).state is ZabState.LEADING
                       and any(m.to == n for m in held)), None)
        if leader is not None:
            break
    assert leader is not None
    core = c.core(leader)
    noop = core.log.last_index
    assert core.log.entry(noop).kind == EntryKind.NOOP and core.log.committed < noop
    held = [m for m in held if m.to == leader and m.epoch == core.accepted_epoch]
    c.enqueue = original  # type: ignore[method-assign]
    first = next(m for m in held if m.to == leader)
    c.queue.append(first)
    uptodates: list[Any] = []
    c.enqueue = lambda m: (uptodates.append(m), original(m))  # type: ignore[method-assign,func-returns-value]
    c.deliver()
    assert core.phase is Phase.BROADCAST and core.log.committed == noop
    assert [m.to for m in uptodates if isinstance(m, UpToDate)] == [first.frm]


def _watch(c: Any) -> list[Any]:
    seen: list[Any] = []
    original = c.enqueue

    def enqueue(m: Any) -> None:
        seen.append(m)
        original(m)

    c.enqueue = enqueue
    return seen


def test_diff_sends_only_what_a_lagging_follower_lacks() -> None:
    c = zab_cluster(seed=1)
    leader = c.wait_leader()
    lagging = next(n for n in c.ids if n != leader)
    c.put("a", "1")
    c.crash(lagging)
    for i in range(5):
        c.put(f"b{i}", "2")
    seen = _watch(c)
    c.restart(lagging)
    c.run(20)
    syncs = [m for m in seen if isinstance(m, SyncEntries) and m.to == lagging]
    assert syncs and all(m.mode == SyncMode.DIFF for m in syncs)
    assert syncs[0].start and syncs[0].prev_index == 5  # bootstrap 3 + NOOP + a
    assert c.hosts[lagging].kv.data == c.hosts[leader].kv.data


def test_trunc_cuts_a_suffix_the_new_leader_never_had() -> None:
    c = zab_cluster(seed=1)
    old = c.wait_leader()
    c.put("a", "1")
    c.isolate(old)
    for i in range(3):
        c.propose(old, f"lost{i}=x".encode())  # only the isolated leader holds these
    c.crash(old)
    c.drop(lambda m: m.frm == old)
    c.heal()
    new = c.wait_leader()
    c.put("b", "2")
    seen = _watch(c)
    c.restart(old)
    c.run(30)
    syncs = [m for m in seen if isinstance(m, SyncEntries) and m.to == old and m.start]
    assert syncs and syncs[-1].mode == SyncMode.TRUNC
    held = [(e.index, e.term) for e in c.core(old).log._entries]
    assert held == [(e.index, e.term) for e in c.core(new).log._entries]
    assert c.hosts[old].kv.data == {"a": "1", "b": "2"}
    stored = [e.data for e in c.stores[old].entries]
    assert not any(d.startswith(b"lost") for d in stored)  # the cut reached the disk


def test_snap_sends_a_compacted_history_in_chunks() -> None:
    c = zab_cluster(seed=2, snapshot_chunk_bytes=16)
    leader = c.wait_leader()
    lagging = next(n for n in c.ids if n != leader)
    c.crash(lagging)
    for i in range(6):
        c.put(f"key{i}", "value")
    c.snapshot(leader)
    seen = _watch(c)
    c.restart(lagging)
    c.run(40)
    chunks = [m for m in seen if isinstance(m, SnapChunk) and m.to == lagging]
    assert len(chunks) > 2 and chunks[0].offset == 0 and chunks[-1].done
    assert c.hosts[lagging].kv.data == c.hosts[leader].kv.data
    assert c.core(lagging).current_epoch == c.core(leader).current_epoch
    assert c.stores[lagging].snapshot is not None


def test_a_follower_crashing_between_history_and_epoch_restarts_with_its_old_epoch() -> None:
    from exapyte.protocol.drive import drive
    from exapyte.protocol.types import HardState, PersistedState
    from exapyte.protocol.zab import Zab, ZabConfig
    import random

    core, host = follower_in_sync(epoch=2)
    sync = entries(1, 4, 1) + (Entry(2, 5, EntryKind.NOOP),)
    core.step(SyncEntries("n3", "n1", 2, SyncMode.DIFF, 3, 0, sync, start=True))
    core.step(NewLeader("n3", "n1", 2, last_index=5, last_term=2, commit=3, epoch_start=5))
    drive(core, host)  # only the first Ready, the history, reaches the disk: then a crash
    assert sent_of(host, AckNewLeader) == []
    stored = record_of(host.hard_state)
    assert (stored.accepted_epoch, stored.current_epoch) == (2, 0)
    written = [e for what, arg in host.calls if what == "persist" for e in arg[1]]
    boot = [core.log.entry(i) for i in (1, 2, 3)]
    again = Zab(ZabConfig(node_id="n1"),
                PersistedState(HardState(3, host.hard_state.record), None, tuple(boot + written)),
                random.Random(1))
    assert again.current_epoch == 0 and again.log.last_index == 5
    # Its vote ranks below any node that acknowledged NEWLEADER(2) with the same history.
    assert again._self_vote().key() < (2, 2, 5, False, "n0")
