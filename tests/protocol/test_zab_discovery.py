"""Discovery (Zab paper §IV-A, Phase 1): FOLLOWERINFO(acceptedEpoch) -> NEWEPOCH(e') from a
quorum -> ACKEPOCH(currentEpoch, last entry); each epoch persisted before it is acknowledged;
the leader's history must be the quorum's most up to date."""

from __future__ import annotations

from typing import Any

from exapyte.protocol.zab.core import Phase, ZabState, decode_record
from exapyte.protocol.zab.messages import (
    AckEpoch,
    FollowerInfo,
    NewEpoch,
    Notification,
    PeerState,
)
from tests.protocol.helpers import RecordingHost, sent_of
from tests.protocol.zab_helpers import make_zab, pump, zab_cluster


def vote_for(core: Any, frm: str, leader: str) -> Notification:
    return Notification(frm, core.node_id, core.election_round, PeerState.LOOKING, leader, 0, 0,
                        core.log.last_index)


def leading(node: str = "n3") -> tuple[Any, RecordingHost]:
    core, host = make_zab(node)
    core.step(vote_for(core, "n1", node))
    pump(core, host)
    assert core.state is ZabState.LEADING and core.phase is Phase.DISCOVERY
    host.take()
    host.calls.clear()
    return core, host


def following(node: str = "n1", leader: str = "n3") -> tuple[Any, RecordingHost]:
    core, host = make_zab(node)
    core.step(vote_for(core, leader, leader))
    pump(core, host)
    assert core.state is ZabState.FOLLOWING and core.leader == leader
    host.take()
    host.calls.clear()
    return core, host


def persist_then_send(host: RecordingHost, kind: type) -> tuple[int, int]:
    """Positions of the last persist with a record before the first send holding ``kind``."""
    send_at = next(i for i, (what, arg) in enumerate(host.calls)
                   if what == "send" and any(isinstance(m, kind) for m in arg))
    persist_at = max(i for i, (what, arg) in enumerate(host.calls[:send_at])
                     if what == "persist" and arg[0] is not None)
    return persist_at, send_at


def test_the_new_epoch_is_one_above_the_quorums_highest_accepted_epoch() -> None:
    core, host = leading()
    core.step(FollowerInfo("n1", "n3", accepted_epoch=6))
    pump(core, host)
    (new_epoch,) = sent_of(host, NewEpoch)
    assert new_epoch.epoch == 7 and core.accepted_epoch == 7


def test_the_leader_persists_its_accepted_epoch_before_sending_newepoch() -> None:
    core, host = leading()
    core.step(FollowerInfo("n1", "n3", accepted_epoch=2))
    pump(core, host)
    persist_at, send_at = persist_then_send(host, NewEpoch)
    assert persist_at < send_at
    hard_state = host.calls[persist_at][1][0]
    assert decode_record(hard_state.record).accepted_epoch == 3
    assert host.calls[persist_at][1][3] is True  # fsynced


def test_no_epoch_before_a_quorum_of_followerinfo() -> None:
    core, host = make_zab("n5", voters=("n1", "n2", "n3", "n4", "n5"))
    for n in ("n1", "n2"):
        core.step(vote_for(core, n, "n5"))
    pump(core, host)
    assert core.state is ZabState.LEADING
    core.step(FollowerInfo("n1", "n5", 0))
    pump(core, host)
    assert sent_of(host, NewEpoch) == []
    core.step(FollowerInfo("n2", "n5", 0))
    pump(core, host)
    assert {m.to for m in sent_of(host, NewEpoch)} == {"n1", "n2"}


def test_a_follower_persists_the_epoch_before_acknowledging_it() -> None:
    core, host = following()
    core.step(NewEpoch("n3", "n1", 4))
    pump(core, host)
    persist_at, send_at = persist_then_send(host, AckEpoch)
    rec = decode_record(host.calls[persist_at][1][0].record)
    assert (rec.accepted_epoch, rec.accepted_by, rec.current_epoch) == (4, "n3", 0)
    (ack,) = sent_of(host, AckEpoch)
    assert (ack.epoch, ack.current_epoch, ack.last_index) == (4, 0, 3)
    assert core.phase is Phase.SYNC


def test_a_follower_refuses_an_epoch_below_the_one_it_accepted() -> None:
    core, host = following()
    core.step(NewEpoch("n3", "n1", 4))
    pump(core, host)
    core.step(NewEpoch("n3", "n1", 3))
    pump(core, host)
    assert core.state is ZabState.LOOKING
    assert core.dropped["newepoch_refused"] == 1
    assert core.accepted_epoch == 4


def test_an_epoch_is_acknowledged_again_only_to_the_leader_it_was_accepted_from() -> None:
    core, host = following()
    core.step(NewEpoch("n3", "n1", 4))
    core.step(NewEpoch("n3", "n1", 4))  # the same leader again (it lost our ACKEPOCH)
    pump(core, host)
    assert len(sent_of(host, AckEpoch)) == 2
    core2, host2 = following("n1", leader="n2")
    core2._set_record(accepted_epoch=4, accepted_by="n3")  # promised to n3 earlier
    core2.step(NewEpoch("n2", "n1", 4))
    pump(core2, host2)
    assert sent_of(host2, AckEpoch) == []
    assert core2.state is ZabState.LOOKING


def test_a_leader_whose_quorum_holds_a_more_recent_history_gives_the_epoch_up() -> None:
    core, host = leading()
    core.step(FollowerInfo("n1", "n3", 0))
    pump(core, host)
    core.step(AckEpoch("n1", "n3", 1, current_epoch=0, last_term=0, last_index=9, commit=3))
    pump(core, host)
    assert core.state is ZabState.LOOKING
    assert core.dropped["follower_ahead"] == 1


def test_a_leader_with_the_most_recent_history_moves_to_sync_with_its_epochs_noop() -> None:
    core, host = leading()
    core.step(FollowerInfo("n1", "n3", 0))
    pump(core, host)
    core.step(AckEpoch("n1", "n3", 1, current_epoch=0, last_term=0, last_index=3, commit=3))
    pump(core, host)
    assert core.phase is Phase.SYNC and core.observe().is_leader
    assert core.current_epoch == 1
    noop = core.log.entry(4)
    assert (noop.term, noop.index) == (1, 4)
    assert core.zxid(4) == (1 << 32) | 1  # counter 1 of epoch 1


def test_a_leader_is_not_reported_leading_before_its_epoch_is_acknowledged() -> None:
    core, _ = leading()
    assert core.role.value == "leader"
    assert not core.observe().is_leader  # no quorum acknowledged an epoch of it yet


def test_one_leader_per_epoch_under_partitions() -> None:
    # The cluster checks election safety (one leader per epoch, over observe()) after every
    # step; the leader is cut off with one other node each round, so epochs keep changing.
    for seed in range(4):
        c = zab_cluster(("n1", "n2", "n3", "n4", "n5"), seed=seed)
        leader = c.wait_leader()
        for round_ in range(4):
            others = sorted(n for n in c.ids if n != leader)
            c.rng.shuffle(others)
            c.partition([leader, others[0]], others[1:])
            c.propose(leader, b"lost=1")  # may reach the minority only: never committed
            c.run(40)
            c.heal()
            leader = c.wait_leader()
            c.put(f"k{round_}", str(seed))
        assert c.core(leader).accepted_epoch >= 5
        c.run(20)
        data = [c.hosts[n].kv.data for n in c.ids]
        assert all(d == data[0] for d in data) and "lost" not in data[0]


def test_a_member_promised_a_newer_epoch_makes_the_leader_start_over() -> None:
    c = zab_cluster(seed=2)
    leader = c.wait_leader()
    c.put("a", "1")
    follower = next(n for n in c.ids if n != leader)
    old_epoch = c.core(leader).accepted_epoch
    c.crash(follower)
    from exapyte.protocol.types import HardState
    from exapyte.protocol.zab.core import ZabRecord, encode_record

    store = c.stores[follower]
    rec = decode_record(store.hard_state.record)
    promised = ZabRecord(old_epoch + 3, "n9", rec.current_epoch)
    store.hard_state = HardState(store.hard_state.commit, encode_record(promised))
    c.restart(follower)
    c.run(80)
    new_leader = c.wait_leader()
    assert c.core(new_leader).accepted_epoch > old_epoch + 3
    assert c.core(leader).dropped.get("follower_promised_newer_epoch", 0) >= 1 or (
        new_leader != leader
    )
    c.put("b", "2")
    c.run(10)
    assert all(c.hosts[n].kv.data == {"a": "1", "b": "2"} for n in c.ids)
