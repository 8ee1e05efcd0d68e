"""A sharded cluster on real processes: four nodes, eight shards of three replicas each. Keys
reach their shard's group; scans merge the shards in key order; a node that does not host a
group redirects; losing one node loses no acknowledged write."""

from __future__ import annotations

from pathlib import Path

import pytest

from exapyte import distribution
from exapyte.client import Client
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import CONTROL_GROUP, GetOp
from tests.integration.test_raft_cluster import statuses, wait_for

pytestmark = pytest.mark.integration

SHARDS = 8


@pytest.fixture
def cluster(write_config, tmp_path: Path):
    path = write_config(
        ["n1", "n2", "n3", "n4"],
        network={"tick_ms": 10},
        consensus={"election_timeout_ticks": 20, "heartbeat_ticks": 2},
        distribution={"strategy": "sharded", "shards": SHARDS, "replication_factor": 3},
    )
    c = LocalCluster(path, tmp_path / "run")
    c.start()
    yield c
    c.stop()


def leaders(cluster: LocalCluster) -> dict[str, str]:
    """group -> its leader, for the groups whose live members agree on one."""
    out: dict[str, set[str]] = {}
    for node_id, st in statuses(cluster).items():
        for group, g in st["groups"].items():
            if g["role"] == "leader" and group != CONTROL_GROUP:
                out.setdefault(group, set()).add(node_id)
    return {g: next(iter(n)) for g, n in out.items() if len(n) == 1}


def test_keys_go_to_their_shard_and_scans_merge_the_shards(cluster: LocalCluster) -> None:
    _, placement = distribution.from_config(cluster.cfg)
    hosted = {n: set(placement.shards_of_node(n)) for n in cluster.node_ids}
    assert all(len(p.voters) == 3 for p in placement.groups)
    wait_for(lambda: len(leaders(cluster)) == SHARDS, "a leader in every shard")
    for node_id, st in statuses(cluster).items():
        # exactly its shards, and the control group on the first three nodes
        assert set(st["groups"]) - {CONTROL_GROUP} == hosted[node_id], node_id
        assert (CONTROL_GROUP in st["groups"]) == (node_id in ("n1", "n2", "n3"))
    keys = [f"key-{i:03d}" for i in range(40)]
    with cluster.client(timeout_s=10) as c:
        assert c.router is not None
        for k in keys:
            c.put(k, k.upper())
        used = {c.group_of(k) for k in keys}
        assert len(used) >= SHARDS - 1  # the keys spread over the shards
        for k in keys:
            assert c.get(k).value == k.upper().encode()
        scanned = c.scan(limit=1000)
        assert [k for k, _ in scanned] == keys
        page = c.scan_page("key-010", "key-030", limit=5)
        assert [k for k, _ in page.records] == keys[10:15] and page.truncated
        assert c.delete("key-007") and c.get("key-007") is None
    # Each key sits in its own shard's state machine only.
    for node_id, st in statuses(cluster).items():
        assert sum(1 for s, g in st["groups"].items() if g["applied"] > 0 and s != CONTROL_GROUP) == len(hosted[node_id])


def test_a_node_outside_a_group_redirects_to_a_member(cluster: LocalCluster) -> None:
    wait_for(lambda: len(leaders(cluster)) == SHARDS, "a leader in every shard")
    _, placement = distribution.from_config(cluster.cfg)
    spec = next(g for g in placement.groups if "n1" not in g.members)
    with cluster.client(timeout_s=10) as c:
        key = next(f"k{i}" for i in range(10_000) if c.group_of(f"k{i}") == spec.id)
        c.put(key, "v")
    with cluster.node_client("n1", timeout_s=10) as plain:  # no router: follows the redirect
        reply = plain.request(GetOp(key), group=spec.id)
        assert reply.value == b"v" and reply.node in spec.members


def test_losing_one_node_loses_no_acknowledged_write(cluster: LocalCluster) -> None:
    wait_for(lambda: len(leaders(cluster)) == SHARDS, "a leader in every shard")
    with cluster.client(timeout_s=10) as c:
        for i in range(30):
            c.put(f"k{i}", str(i))
    cluster.kill("n2")
    with cluster.client(timeout_s=20) as c:
        for i in range(30):
            assert c.get(f"k{i}").value == str(i).encode()
        for i in range(30, 40):
            c.put(f"k{i}", str(i))
    cluster.restart("n2")
    client = Client.from_config(cluster.cfg.with_node("n2"), credentials=cluster.credentials())
    with client:
        wait_for(lambda: client.get("k35").value == b"35", "n2's shards to serve again")
