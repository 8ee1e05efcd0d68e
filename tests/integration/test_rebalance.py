"""Rebalancing on real processes: ``node add`` moves shard replicas to a new node with membership
changes in each shard's own log (learner, catch-up, promotion, removal) while clients keep
writing; ``node remove`` moves them off again. No acknowledged write is lost, and a client whose
routing table predates the moves still reaches the right replicas."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exapyte.control.rebalance import ClusterAdmin, node_change
from exapyte.errors import ExapyteError
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import CONTROL_GROUP
from tests.integration.test_raft_cluster import statuses, wait_for

pytestmark = pytest.mark.integration

SHARDS = 6
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(write_config, tmp_path: Path):
    path = write_config(
        ["n1", "n2", "n3", "n4"],
        network={"tick_ms": 10},
        consensus={"election_timeout_ticks": 20, "heartbeat_ticks": 2, "snapshot_entries": 20,
                   "initial_voters": ["n1", "n2", "n3"]},
        maintenance={"interval_s": 0.2},
        distribution={"strategy": "sharded", "shards": SHARDS, "replication_factor": 3},
    )
    c = LocalCluster(path, tmp_path / "run")
    c.start()
    yield c
    c.stop()


def voters_by_group(cluster: LocalCluster) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for st in statuses(cluster).values():
        for group, g in st["groups"].items():
            if g["role"] == "leader" and group != CONTROL_GROUP:
                out[group] = set(g["voters"])
    return out


def test_node_add_and_remove_move_replicas_while_clients_write(cluster: LocalCluster) -> None:
    wait_for(lambda: len(voters_by_group(cluster)) == SHARDS, "a leader in every shard")
    before = voters_by_group(cluster)
    assert all(v == {"n1", "n2", "n3"} for v in before.values())
    stale = cluster.client(timeout_s=20, subscribe=False)  # its routing table predates every move
    with cluster.client(timeout_s=20) as c:
        for i in range(40):
            c.put(f"k{i}", f"v{i}")
        assert stale.get("k1").value == b"v1"  # the stale client's cache is now filled
    acked: dict[str, str] = {}
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        with cluster.client(timeout_s=20) as c:
            i = 0
            while not stop.is_set():
                key, value = f"w{i % 25}", f"x{i}"
                try:
                    c.put(key, value)
                    acked[key] = value
                except ExapyteError as exc:
                    errors.append(str(exc))
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    admin = ClusterAdmin(cluster.cfg, credentials=cluster.credentials(admin=True))
    try:
        added = node_change(cluster.cfg, "add", "n4", admin, timeout_s=60)
        after_add = voters_by_group(cluster)
        moved = sum(1 for g in after_add if "n4" in after_add[g])
        assert added["moves"] == moved and 1 <= moved < SHARDS
        assert all(len(v) == 3 for v in after_add.values())
        removed = node_change(cluster.cfg, "remove", "n1", admin, timeout_s=60)
        after_remove = voters_by_group(cluster)
        assert removed["moves"] >= 1
        assert all("n1" not in v and len(v) == 3 for v in after_remove.values()), after_remove
    finally:
        stop.set()
        thread.join()
        admin.close()
    assert not errors, errors[:3]
    with cluster.client(timeout_s=20) as c:
        for i in range(40):
            assert c.get(f"k{i}").value == f"v{i}".encode()
        for key, value in acked.items():
            assert c.get(key).value == value.encode()
    # A client routed by the first configuration is redirected, and answers right.
    with stale:
        for i in range(40):
            assert stale.get(f"k{i}").value == f"v{i}".encode()
        assert stale.config_redirects >= 1


def test_node_change_from_the_command_line(cluster: LocalCluster) -> None:
    wait_for(lambda: len(voters_by_group(cluster)) == SHARDS, "a leader in every shard")
    cmd = [sys.executable, str(ROOT / "main.py"), "--client", "--config",
           str(cluster.config_path), "node", "add", "n4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] and out["moves"] >= 1
    assert "promoted to voter" in done.stderr
    unknown = subprocess.run([*cmd[:-1], "n9"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert unknown.returncode == 1 and "not in the cluster file" in unknown.stdout
