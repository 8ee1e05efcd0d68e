"""A request no replica could apply is refused at the edge, and the cluster keeps serving.

A client id of 249 bytes or more names a session record longer than META_NAME_BYTES_MAX. Such a
put was once acknowledged and then stopped every replica applying it, at every restart too (the
entry replays from the log); on a single node the process exited.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exapyte import limits
from exapyte.errors import RequestFailed
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import ReplyCode
from tests.integration.test_raft_cluster import leader_of, statuses, wait_for

pytestmark = pytest.mark.integration

POISONED_IDS = ["p" * 249, "p" * 10_000, "€" * 83]  # 249, 10,000 and 249 bytes in UTF-8


def assert_refused_and_still_serving(cluster: LocalCluster) -> None:
    for client_id in POISONED_IDS:
        with cluster.client(client_id=client_id, timeout_s=10) as c:
            with pytest.raises(RequestFailed) as info:
                c.put("poison", "pill")
            assert info.value.code == ReplyCode.BAD_REQUEST
            assert "client_id" in str(info.value) and "CLIENT_ID_BYTES_MAX=128" in str(info.value)
    # A client id at the limit is served, as is an ordinary one.
    with cluster.client(client_id="q" * limits.CLIENT_ID_BYTES_MAX, timeout_s=10) as c:
        assert c.put("at-limit", "ok") == 1
    with cluster.client(timeout_s=10) as c:
        assert c.get("poison") is None  # no refused put was applied
        assert c.put("after", "v") == 1
        assert c.get("after").value == b"v"
        assert c.get("at-limit").value == b"ok"
    assert all(cluster.alive(n) for n in cluster.node_ids)
    refused = sum(st["counters"].get("requests_invalid", 0) for st in statuses(cluster).values())
    assert refused >= len(POISONED_IDS)


def test_a_raft_cluster_refuses_an_oversized_client_id_and_keeps_serving(
    write_config, tmp_path: Path
) -> None:
    path = write_config(["n1", "n2", "n3"])
    cluster = LocalCluster(path, tmp_path / "run")
    try:
        cluster.start()
        wait_for(lambda: leader_of(cluster), "a leader")
        assert_refused_and_still_serving(cluster)
        # Nothing in any log stops a restart: every node comes back and serves.
        for node_id in cluster.node_ids:
            cluster.restart(node_id)
        wait_for(lambda: leader_of(cluster), "a leader after the restart")
        with cluster.client(timeout_s=10) as c:
            assert c.get("after").value == b"v"
            assert c.put("after-restart", "v") == 1
        target = max(s["commit"] for s in statuses(cluster).values())
        for node_id in cluster.node_ids:
            wait_for(
                lambda n=node_id: statuses(cluster)[n]["applied"] >= target, f"{node_id} to apply"
            )
    finally:
        cluster.stop()


def test_a_single_node_refuses_an_oversized_client_id_and_keeps_serving(
    write_config, tmp_path: Path
) -> None:
    path = write_config(["n1"], consensus={"protocol": "none"})
    cluster = LocalCluster(path, tmp_path / "run")
    try:
        cluster.start()
        assert_refused_and_still_serving(cluster)
        cluster.restart("n1")
        with cluster.node_client("n1", timeout_s=10) as c:
            assert c.get("after").value == b"v"
    finally:
        cluster.stop()
