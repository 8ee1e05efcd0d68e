"""The control plane on real processes: the control group founds the plane from the config, the
shard leaders' reports keep its shard map, its leader publishes every version, nodes and clients
follow the feed (a subscriber that starts late or misses a version resyncs), and a client five
configuration versions behind still reaches the right replica within two redirects."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exapyte import distribution
from exapyte.client import Client
from exapyte.control.plane import NodeAdd, NodeRemove
from exapyte.data.feed import read_plane, submit
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import CONTROL_GROUP, DropGroupOp
from tests.integration.test_raft_cluster import statuses, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SHARDS = 4
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(write_config, tmp_path: Path):
    path = write_config(
        ["n1", "n2", "n3", "n4"],
        network={"tick_ms": 10},
        consensus={"election_timeout_ticks": 20, "heartbeat_ticks": 2},
        distribution={"strategy": "sharded", "shards": SHARDS, "replication_factor": 3},
        control_plane={"publish_interval_s": 0.3, "replicas": 3},
    )
    c = LocalCluster(path, tmp_path / "run")
    c.start()
    yield c
    c.stop()


def reported(cluster: LocalCluster, client: Client) -> bool:
    """Every shard in the plane at a reported version with a leader hint."""
    plane = read_plane(client, timeout_s=5)
    return len(plane.shards) == SHARDS and all(
        e.conf_version > 0 and e.leader is not None for e in plane.shards.values()
    )


def test_the_plane_is_founded_reported_and_followed_by_every_node(cluster: LocalCluster) -> None:
    _, placement = distribution.from_config(cluster.cfg)
    with cluster.admin_client(timeout_s=10) as admin:
        wait_for(lambda: reported(cluster, admin), "every shard reported to the plane")
        plane = read_plane(admin)
    assert sorted(plane.nodes) == ["n1", "n2", "n3", "n4"] and plane.epoch == 4
    for g in placement.groups:
        assert set(plane.shards[g.id].group.voters) == set(g.voters)

    def followed() -> bool:
        sts = statuses(cluster)
        return all(st["control"]["version"] >= plane.version for st in sts.values())

    wait_for(followed, "every node's copy of the plane at the committed version")
    sts = statuses(cluster)
    leaders = {st["control"]["leader"] for st in sts.values()}
    assert len(leaders) == 1 and leaders <= {"n1", "n2", "n3"}  # the control group's leader
    for node_id, st in sts.items():
        assert set(st["control"]["shards"]) == {g.id for g in placement.groups}, node_id
        assert (CONTROL_GROUP in st["groups"]) == (node_id in ("n1", "n2", "n3"))
    # `--client status` shows the committed shard map.
    proc = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--client", "--config", str(cluster.config_path), "status"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    shard_map = json.loads(proc.stdout)["shard_map"]
    assert set(shard_map["shards"]) == {g.id for g in placement.groups}
    assert shard_map["version"] >= plane.version and shard_map["epoch"] == 4
    # Commands are refused with a reason, and change nothing.
    with cluster.admin_client(timeout_s=10) as admin:
        [(changed, version, why)] = submit(admin, [NodeRemove("n1")])
        assert not changed and "still holds replicas" in why and version == plane.version
        [(changed, _, why)] = submit(admin, [NodeAdd("n2", "local", "tcp://127.0.0.1:1")])
        assert not changed and "already" in why


def test_a_late_subscriber_resyncs_and_a_stale_client_needs_at_most_two_redirects(cluster: LocalCluster) -> None:
    with cluster.admin_client(timeout_s=10) as admin:
        wait_for(lambda: reported(cluster, admin), "every shard reported to the plane")
        plane = read_plane(admin)
        shard = next(s for s, e in sorted(plane.shards.items()) if "n4" not in e.group.members)
        members = plane.shards[shard].group.voters
        key = next(f"k{i}" for i in range(10_000) if admin.group_of(f"k{i}") == shard)
        admin.put(key, "v0")
        stale = cluster.client(timeout_s=10, subscribe=False)
        assert stale.feed is None
        stale.get(key)  # its descriptor of the shard is now the current one
        before = stale.router.descriptor(shard).version  # type: ignore[union-attr]
        out = members[-1]
        # Five membership changes in the shard's own log: five newer configuration versions.
        for change, node in [("add-learner", "n4"), ("add-voter", "n4"), ("remove", out),
                             ("add-learner", out), ("add-voter", out)]:
            admin.change_membership(change, node, group=shard)
        admin.put(key, "v1")

        def at_final() -> bool:
            e = read_plane(admin).shards[shard]
            return set(e.group.voters) == set(members) | {"n4"} and e.conf_version > before

        wait_for(at_final, "the plane at the shard's newest configuration")
        final = read_plane(admin).shards[shard]
    try:
        got = stale.get(key)
        assert got is not None and got.value == b"v1"
        assert 1 <= stale.config_redirects <= 2
        assert stale.router.descriptor(shard).version == final.conf_version  # type: ignore[union-attr]
    finally:
        stale.close()
    # A client subscribing now hears only beats and new versions: it resyncs once and then
    # holds the committed plane; its router has the shard's newest descriptor without asking.
    with cluster.client(timeout_s=10) as late:
        assert late.feed is not None
        deadline = time.monotonic() + 20
        while late.feed.version < final_version(cluster) and time.monotonic() < deadline:
            if late.feed.drain():
                late.feed.resync(late)
            time.sleep(0.05)
        assert late.feed.version >= final_version(cluster) > 0
        assert late.feed.counters.get("resynced", 0) >= 1
        assert late.router.descriptor(shard).version == final.conf_version  # type: ignore[union-attr]
        assert late.config_redirects == 0


def final_version(cluster: LocalCluster) -> int:
    with cluster.admin_client(timeout_s=10) as admin:
        return read_plane(admin).version


def test_a_node_dropped_from_a_shard_refuses_a_stale_request_with_the_new_descriptor(cluster: LocalCluster) -> None:
    with cluster.admin_client(timeout_s=10) as admin:
        wait_for(lambda: reported(cluster, admin), "every shard reported to the plane")
        plane = read_plane(admin)
        shard, entry = next((s, e) for s, e in sorted(plane.shards.items()) if "n4" not in e.group.members)
        out = next(n for n in entry.group.voters if n != entry.leader)
        admin.change_membership("add-learner", "n4", group=shard)
        admin.change_membership("add-voter", "n4", group=shard)
        version = admin.change_membership("remove", out, group=shard)
        members = tuple(n for n in entry.group.voters if n != out) + ("n4",)
        admin.request(DropGroupOp(version, members), endpoint=cluster.endpoint(out), follow=False,
                      group=shard)
        wait_for(lambda: set(read_plane(admin).shards[shard].group.voters) == set(members),
                 "the plane without the removed replica")
    assert shard not in statuses(cluster)[out]["groups"]
    # The removed node's copy of the plane follows the feed: its redirects name the new members.
    wait_for(lambda: set(statuses(cluster)[out]["control"]["shards"][shard]["voters"]) == set(members),
             f"{out}'s copy of the plane with the new members")
