"""A real three-node Raft cluster on loopback: failover under load, catch-up through a snapshot."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from exapyte.errors import ExapyteError, RequestFailed, RequestTimeout
from exapyte.runtime.cluster import LocalCluster

pytestmark = pytest.mark.integration

WAIT_S = 30.0


def wait_for(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except ExapyteError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def statuses(cluster: LocalCluster) -> dict[str, dict]:
    out = {}
    for node_id in cluster.node_ids:
        if not cluster.alive(node_id):
            continue
        with cluster.node_client(node_id, timeout_s=0.5) as c:
            try:
                out[node_id] = c.status()
            except ExapyteError:
                pass
    return out


def leader_of(cluster: LocalCluster) -> str | None:
    leaders = {s["node"] for s in statuses(cluster).values() if s.get("role") == "leader"}
    return next(iter(leaders)) if len(leaders) == 1 else None


@pytest.fixture
def cluster(write_config, tmp_path: Path):
    path = write_config(
        ["n1", "n2", "n3"],
        # small snapshot chunks: a restarted node catches up through many InstallSnapshot chunks
        consensus={"snapshot_entries": 50, "snapshot_chunk_bytes": 256,
                   "election_timeout_ticks": 20, "heartbeat_ticks": 2},
        maintenance={"interval_s": 0.2},
    )
    c = LocalCluster(path, tmp_path / "run")
    c.start()
    yield c
    c.stop()


def test_any_node_serves_clients_by_redirect(cluster: LocalCluster) -> None:
    wait_for(lambda: leader_of(cluster), "a leader")
    for node_id in cluster.node_ids:
        with cluster.node_client(node_id, timeout_s=10) as c:
            c.put(f"via-{node_id}", node_id)
            assert c.get(f"via-{node_id}").value == node_id.encode()
    with cluster.client(timeout_s=10) as c:
        assert len(c.scan()) == 3
    for node_id in cluster.node_ids:  # every replica converges on the writes
        with cluster.node_client(node_id, timeout_s=2) as c:
            wait_for(lambda: len(c.scan(consistency="eventual")) == 3, f"{node_id} to converge")


def test_leader_kill_under_load_loses_no_acknowledged_write(cluster: LocalCluster) -> None:
    old_leader = wait_for(lambda: leader_of(cluster), "a leader")
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(wid: int) -> None:
        with cluster.client(timeout_s=10) as c:
            i = 0
            while not stop.is_set():
                key, value = f"w{wid}-{i}", f"{wid}:{i}"
                try:
                    c.put(key, value)
                except RequestTimeout:
                    continue  # unknown outcome: not counted as acknowledged
                with lock:
                    acked[key] = value
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 150, "150 acknowledged writes")
    cluster.kill(old_leader)  # kill -9 the leader mid-load
    before = len(acked)
    new_leader = wait_for(lambda: (l := leader_of(cluster)) and l != old_leader and l, "a new leader")
    wait_for(lambda: len(acked) >= before + 100, "writes to continue under the new leader")
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert new_leader != old_leader

    with cluster.client(timeout_s=10) as c:
        for key, value in acked.items():
            got = c.get(key)
            assert got is not None and got.value == value.encode(), f"acknowledged {key} lost"

    # The killed node restarts and catches up; its log was compacted away meanwhile (snapshots
    # every 50 entries), so it catches up through InstallSnapshot.
    cluster.start_node(old_leader)
    target = max(s["commit"] for s in statuses(cluster).values())
    st = wait_for(
        lambda: (s := statuses(cluster).get(old_leader)) and s["applied"] >= target and s,
        f"{old_leader} to catch up to {target}",
    )
    leader_status = statuses(cluster)[new_leader]
    assert leader_status["counters"].get("snapshots_taken", 0) >= 1
    assert st["counters"].get("snapshots_installed", 0) >= 1
    with cluster.node_client(old_leader, timeout_s=5) as c:
        for key, value in list(acked.items())[:: max(1, len(acked) // 50)]:
            got = c.get(key, consistency="eventual")
            assert got is not None and got.value == value.encode()


def test_follower_reads_honour_session_tokens(cluster: LocalCluster) -> None:
    wait_for(lambda: leader_of(cluster), "a leader")
    with cluster.client(timeout_s=10, consistency="session") as c:
        for i in range(20):
            c.put("s", str(i))
            got = c.get("s")  # read-your-writes on whichever replica answers
            assert got is not None and got.value == str(i).encode()


def test_clock_faults_move_timers_and_are_refused_when_unsafe_is_off(write_config, tmp_path: Path) -> None:
    path = write_config(["n1", "n2", "n3"], unsafe={"enabled": True})
    cluster = LocalCluster(path, tmp_path / "run")
    try:
        cluster.start()
        leader = wait_for(lambda: leader_of(cluster), "a leader")
        follower = next(n for n in cluster.node_ids if n != leader)
        term = statuses(cluster)[leader]["term"]
        with cluster.client(timeout_s=10) as plain:
            with pytest.raises(RequestFailed, match="forbidden"):  # clock faults are admin
                plain.clock_fault(cluster.endpoint(follower), rate=20.0)
        with cluster.admin_client(timeout_s=10) as c:
            # A follower whose clock runs 20x fast times out before the leader's heartbeats reach
            # it; pre-vote and leader stickiness keep it from disturbing the leader.
            c.clock_fault(cluster.endpoint(follower), rate=20.0)
            c.clock_fault(cluster.endpoint(follower), shift_ms=5_000)
            for i in range(50):
                c.put(f"k{i}", "v")
            c.clock_fault(cluster.endpoint(follower), reset=True)
            st = statuses(cluster)
            assert st[follower]["frames"].get("clock_faults") == 3
            assert leader_of(cluster) == leader and st[leader]["term"] == term
    finally:
        cluster.stop()

    path = write_config(["n1"], name="safe.json")
    single = LocalCluster(path, tmp_path / "run-safe")
    try:
        single.start()
        with single.admin_client(timeout_s=5) as c:
            with pytest.raises(RequestFailed, match="unsafe.enabled"):
                c.clock_fault(single.endpoint("n1"), shift_ms=1000)
    finally:
        single.stop()


def test_whole_cluster_kill_9_and_restart_keeps_acknowledged_writes(cluster: LocalCluster) -> None:
    wait_for(lambda: leader_of(cluster), "a leader")
    with cluster.client(timeout_s=10) as c:
        versions = {f"k{i}": c.put(f"k{i}", f"v{i}") for i in range(100)}
        assert c.cas("k0", "v0", "swapped")
    for node_id in cluster.node_ids:
        cluster.kill(node_id)
    for node_id in cluster.node_ids:
        cluster.start_node(node_id, wait=False)
    for node_id in cluster.node_ids:
        cluster.wait_ready(node_id)
    wait_for(lambda: leader_of(cluster), "a leader after the restart")
    with cluster.client(timeout_s=10) as c:
        assert c.get("k0").value == b"swapped"
        for i in range(1, 100):
            got = c.get(f"k{i}")
            assert got is not None and got.value == f"v{i}".encode()
            assert got.version == versions[f"k{i}"]
        # Versions continue from the recovered state.
        assert c.put("k1", "again") == versions["k1"] + 1
