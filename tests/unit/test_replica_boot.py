"""A replica restarting from what its storage holds."""

from __future__ import annotations

import random
from pathlib import Path

from exapyte.config import loads
from exapyte.kv import Command, KVStateMachine, encode_command
from exapyte.protocol.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from exapyte.runtime.replica import Replica
from exapyte.storage import Record, open_storage
from exapyte.wire import PutOp

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
    store.persist(HardState(1, None, 12), [], snapshot)
    store.persist(None, [Entry(1, 13, 0, encode_command(Command("c", 13, PutOp("k0", b"x"))))])
    assert KVStateMachine(store).applied_index == 0

    replica = Replica(loads(CONFIG), store, random.Random(1), reply=lambda *a: None,
                      send=lambda *a: None)
    assert replica.sm.applied_index == 12
    assert replica.sm.get("k2") == Record(b"12", 3)  # written by entries 2, 7 and 12
    assert replica.core.status().first_index == 13
    replica.close()
