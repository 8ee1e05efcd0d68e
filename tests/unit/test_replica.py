"""A replica restarting from what its storage holds, and storing its state machine when idle."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from exapyte import limits
from exapyte.config import loads
from exapyte.kv import Command, KVStateMachine, encode_command
from exapyte.protocol.raft.core import raft_hard_state
from exapyte.protocol.types import ConfState, Entry, Role, Snapshot, SnapshotMeta
from exapyte.runtime.replica import Replica
from exapyte.storage import Record, open_storage
from exapyte.wire import ClientReply, ClientRequest, PutOp

CONFIG = """{
  "node_id": "n1",
  "cluster": {"nodes": [
    {"id": "n1", "port": 7001, "pub_port": 7101},
    {"id": "n2", "port": 7002, "pub_port": 7102},
    {"id": "n3", "port": 7003, "pub_port": 7103}]},
  "storage": {"backend": "sqlite", "path": "unused"},
  "consensus": {"protocol": "raft"}
}"""


def test_a_stored_snapshot_the_state_machine_missed_is_installed_at_boot(tmp_path: Path) -> None:
    # The image a leader sent: 12 puts applied on another replica.
    source = KVStateMachine(open_storage("memory", None))
    source.apply([
        Entry(1, i, 0, encode_command(Command("c", i, PutOp(f"k{i % 5}", b"%d" % i))))
        for i in range(1, 13)
    ])
    image = source.snapshot()
    conf = ConfState(voters=("n1", "n2", "n3"))
    snapshot = Snapshot(SnapshotMeta(12, 1, conf), image)

    # This node stored the snapshot (the log is cut at 12) and stopped before installing it.
    store = open_storage("sqlite", str(tmp_path / "n1.db"))
    store.persist(raft_hard_state(1, None, 12), [], snapshot)
    store.persist(None, [Entry(1, 13, 0, encode_command(Command("c", 13, PutOp("k0", b"x"))))])
    assert KVStateMachine(store).applied_index == 0

    replica = Replica(loads(CONFIG), store, random.Random(1), reply=lambda *a: None,
                      send=lambda *a: None)
    assert replica.sm.applied_index == 12
    assert replica.sm.get("k2") == Record(b"12", 3)  # written by entries 2, 7 and 12
    assert replica.core.status().first_index == 13
    replica.close()


SINGLE = """{
  "node_id": "n1",
  "cluster": {"nodes": [{"id": "n1", "port": 7001, "pub_port": 7101}]},
  "storage": {"backend": "memory"},
  "consensus": {"protocol": "raft"}
}"""


def test_idle_stores_the_write_behind_once_enough_is_pending_or_a_tick_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "WRITE_BEHIND_IDLE_OPS", 3)
    replies: list[ClientReply] = []
    store = open_storage("memory", None)
    replica = Replica(loads(SINGLE), store, random.Random(1),
                      reply=lambda _who, reply: replies.append(reply), send=lambda *a: None)
    for _ in range(100):
        if replica.core.role is Role.LEADER:
            break
        replica.tick()
        replica.flush()
    assert replica.core.role is Role.LEADER
    replica.idle()  # whatever the election left
    replica._store_due = False  # as after a store with no tick since

    def put(seq: int) -> None:
        replica.on_request(b"c", ClientRequest("c", seq, PutOp(f"k{seq}", b"v")))
        replica.flush()

    put(1)
    put(2)
    assert [r.code for r in replies] == ["ok", "ok"]
    assert replica.sm.pending_ops == 2 and not replica.has_idle_work()  # 2 < 3, no tick yet
    put(3)
    assert replica.has_idle_work()  # 3 pending
    replica.idle()
    assert replica.sm.pending_ops == 0 and store.get("k3") is not None
    put(4)
    assert not replica.has_idle_work()
    replica.tick()
    assert replica.has_idle_work()  # a tick passed
    replica.idle()
    assert not replica.has_idle_work() and store.get("k4") is not None


SINGLE_SQLITE = SINGLE.replace('"backend": "memory"', '"backend": "sqlite", "path": "unused"')


def single_leader(store: object, replies: list[ClientReply]) -> Replica:
    replica = Replica(loads(SINGLE_SQLITE), store, random.Random(1),  # type: ignore[arg-type]
                      reply=lambda _who, reply: replies.append(reply), send=lambda *a: None)
    for _ in range(100):
        if replica.core.role is Role.LEADER:
            return replica
        replica.tick()
        replica.flush()
    raise AssertionError("no leader")


def test_committed_entries_that_cannot_be_applied_never_stop_the_replica_nor_its_restart(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "n1.db")
    replies: list[ClientReply] = []
    store = open_storage("sqlite", path)
    replica = single_leader(store, replies)
    # Entries an older node accepted before its requests were checked, proposed as it did.
    poison = [
        encode_command(Command("x" * 249, 1, PutOp("k", b"v"))),
        encode_command(Command("x" * 10_000, 1, PutOp("k", b"v"))),
        b"\xc1 not a command",
        encode_command(Command("c", 1, PutOp("k" * (limits.KEY_BYTES_MAX + 1), b"v"))),
    ]
    indexes = [replica.core.propose(data)[0] for data in poison]
    replica.flush()
    assert replica.sm.applied_index == indexes[-1]
    assert replica.sm.entries_refused == len(poison)
    replica.on_request(b"c", ClientRequest("c", 2, PutOp("k", b"good")))
    replica.flush()
    assert replies[-1].code == "ok"
    last = replica.sm.applied_index
    expected = Record(b"good", 1)
    store.close()  # a crash: the write-behind overlay is lost, the log is not

    for seq in (3, 4):  # each restart replays the bad entries from the log
        store = open_storage("sqlite", path)
        replies.clear()
        replica = single_leader(store, replies)
        assert replica.sm.applied_index > last  # replayed, then the new term's first entry
        assert replica.sm.get("k") == expected
        assert replica.sm.cached_outcome("c", seq - 1) is not None
        replica.on_request(b"c", ClientRequest("c", seq, PutOp("k", b"%d" % seq)))
        replica.flush()
        assert replies[-1].code == "ok"
        expected = Record(b"%d" % seq, expected.version + 1)
        last = replica.sm.applied_index
        store.close()  # a crash again
