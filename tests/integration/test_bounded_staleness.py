"""bounded_staleness on real processes: a follower resumed after a SIGSTOP does not serve state
older than the bound (it redirects to the leader), and serves again once caught up."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from exapyte.errors import RequestFailed
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import GetOp, ReplyCode
from tests.integration.test_raft_cluster import statuses, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_a_follower_resumed_after_a_pause_refuses_reads_beyond_the_bound(write_config, tmp_path: Path) -> None:
    path = write_config(
        ["n1", "n2", "n3"], network={"tick_ms": 10},
        consensus={"election_timeout_ticks": 30, "heartbeat_ticks": 3},
        data_plane={"staleness_ms_max": 1_000, "staleness_versions_max": 1_000, "clock_skew_ms_max": 50},
    )
    with LocalCluster(path, tmp_path / "run") as cluster:
        cluster.start()
        leader = wait_for(lambda: next((n for n, st in statuses(cluster).items() if st.get("role") == "leader"), None),
                          "a leader")
        follower = next(n for n in cluster.node_ids if n != leader)
        with cluster.client(timeout_s=10) as c:
            c.put("k", "0")
            with cluster.node_client(follower, timeout_s=5) as f:
                wait_for(lambda: f.request(GetOp("k"), consistency="bounded_staleness", follow=False).value == b"0",
                         "the follower serving within the bound")
                cluster.pause(follower)
                # superseded_after[i]: value i was still current when put(i + 1) was sent, since
                # that put commits after it is sent; value 15 is never superseded.
                superseded_after: dict[int, float] = {}
                try:
                    for i in range(1, 16):  # 3 s of writes while it is stopped: far beyond T = 1 s
                        superseded_after[i - 1] = time.monotonic()
                        c.put("k", str(i))
                        time.sleep(0.2)
                finally:
                    cluster.resume(follower)
                # The first read it handles after the pause comes with the queued messages.
                read_at = time.monotonic()
                try:
                    reply = f.request(GetOp("k"), consistency="bounded_staleness", follow=False)
                except RequestFailed as exc:  # refused: redirected to the leader
                    assert exc.code in (ReplyCode.NOT_LEADER, ReplyCode.UNAVAILABLE), exc
                else:
                    served = int(reply.value)
                    if served != 15:  # the newest value is within any bound
                        stale_s = read_at - superseded_after[served]
                        # T = 1 s plus the 50 ms skew bound the leader's stamp allows
                        assert stale_s <= 1.05, f"served {served}, {stale_s:.1f} s stale under a 1 s bound"
                # Caught up, it serves bounded reads again.
                wait_for(lambda: f.request(GetOp("k"), consistency="bounded_staleness", follow=False).value == b"15",
                         "the follower serving again once caught up")
