"""The group table on real processes: idle groups quiesce and cost only node beats; input wakes
them; a leader's death is noticed through node liveness, not through group heartbeats."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from exapyte.runtime.cluster import LocalCluster
from exapyte.runtime.groups import GroupTable
from tests.integration.test_raft_cluster import leader_of, statuses, wait_for

pytestmark = pytest.mark.integration

TICK_MS = 10
ELECTION_TICKS = 20
HEARTBEAT_TICKS = 2


@pytest.fixture
def cluster(write_config, tmp_path: Path):
    path = write_config(
        ["n1", "n2", "n3"],
        network={"tick_ms": TICK_MS},
        consensus={"election_timeout_ticks": ELECTION_TICKS, "heartbeat_ticks": HEARTBEAT_TICKS},
    )
    c = LocalCluster(path, tmp_path / "run")
    c.start()
    yield c
    c.stop()


def all_quiesced(cluster: LocalCluster) -> dict[str, dict] | None:
    st = statuses(cluster)
    alive = [n for n in cluster.node_ids if cluster.alive(n)]
    if len(st) == len(alive) and all(s["groups"]["default"]["quiesced"] for s in st.values()):
        return st
    return None


def test_an_idle_group_quiesces_and_sends_only_node_beats(cluster: LocalCluster) -> None:
    wait_for(lambda: leader_of(cluster), "a leader")
    with cluster.client(timeout_s=10) as c:
        c.put("k", "v1")
    before = wait_for(lambda: all_quiesced(cluster), "every replica to quiesce")
    started = time.monotonic()
    time.sleep(1.0)
    after = statuses(cluster)
    elapsed_ticks = (time.monotonic() - started) * 1000 / TICK_MS
    table = GroupTable(cluster.cfg.with_node("n1"), open_storage=None, rng_for=None,  # type: ignore[arg-type]
                       reply=None, send=None)  # type: ignore[arg-type]
    # Two peers per node, one beat each per beat interval (a tick never runs early, so this is
    # an upper bound on a loaded machine too); a heartbeating leader would send twice as much.
    beats_max = 1.5 * 2 * (elapsed_ticks / table.beat_ticks) + 4
    for node_id, st in after.items():
        sent = st["frames"].get("peer_frames_sent", 0) - before[node_id]["frames"].get(
            "peer_frames_sent", 0
        )
        assert sent <= beats_max, (node_id, sent, beats_max)
        assert st["groups"]["default"]["quiesced"], node_id
        assert st["group_table"]["active"] == 0
    # Input wakes the group: a write commits and is read back, then the group quiesces again.
    with cluster.client(timeout_s=10) as c:
        c.put("k", "v2")
        assert c.get("k").value == b"v2"
    wait_for(lambda: all_quiesced(cluster), "the replicas to quiesce again")


def test_a_quiesced_leaders_death_is_noticed_through_node_liveness(cluster: LocalCluster) -> None:
    wait_for(lambda: leader_of(cluster), "a leader")
    with cluster.client(timeout_s=10) as c:
        c.put("k", "v1")
    wait_for(lambda: all_quiesced(cluster), "every replica to quiesce")
    old = leader_of(cluster)
    assert old is not None
    cluster.kill(old)
    new = wait_for(lambda: leader_of(cluster), "a new leader", timeout_s=20)
    assert new != old
    with cluster.client(timeout_s=10) as c:
        assert c.get("k").value == b"v1"
        c.put("k", "v2")
    cluster.restart(old)
    # The restarted node catches up although the others may be quiesced again by then.
    with cluster.node_client(old, timeout_s=2) as c:
        wait_for(lambda: c.get("k", consistency="eventual").value == b"v2", f"{old} to catch up")
