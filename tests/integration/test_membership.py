"""Membership change and leadership transfer on real processes (Raft thesis §4.1, §3.10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exapyte.wire import MembershipOp
from exapyte.errors import RequestFailed
from exapyte.runtime.cluster import LocalCluster
from tests.integration.test_raft_cluster import leader_of, statuses, wait_for

pytestmark = pytest.mark.integration


def test_add_learner_promote_remove_and_transfer(write_config, tmp_path: Path) -> None:
    path = write_config(
        ["n1", "n2", "n3", "n4"],
        consensus={"initial_voters": ["n1", "n2", "n3"]},
    )
    cluster = LocalCluster(path, tmp_path / "run")
    try:
        cluster.start()
        leader = wait_for(lambda: leader_of(cluster), "a leader")
        with cluster.client(timeout_s=10) as plain:
            # Admin operations need the admin key: a client key is refused, nothing changes.
            with pytest.raises(RequestFailed, match="forbidden"):
                plain.change_membership("remove", "n3")
            with pytest.raises(RequestFailed, match="forbidden"):
                plain.transfer_leader("n2")
            assert len(statuses(cluster)[leader]["voters"]) == 3
        with cluster.admin_client(timeout_s=10) as c:
            for i in range(20):
                c.put(f"k{i}", str(i))
            # n4 started empty: it is no member until added.
            assert statuses(cluster)["n4"]["voters"] == []
            c.change_membership("add-learner", "n4")
            wait_for(lambda: statuses(cluster)["n4"]["applied"] >= 20, "the learner to catch up")
            assert statuses(cluster)["n4"]["role"] == "learner"
            c.change_membership("add-voter", "n4")
            wait_for(lambda: "n4" in statuses(cluster)[leader]["voters"], "n4 to become a voter")

            victim = next(n for n in ["n1", "n2", "n3"] if n != leader)
            c.change_membership("remove", victim)
            wait_for(lambda: victim not in statuses(cluster)[leader]["voters"], f"{victim} removed")

            c.transfer_leader("n4")
            wait_for(lambda: leader_of(cluster) == "n4", "n4 to lead")
            c.put("after", "transfer")
            assert c.get("after").value == b"transfer"

            with pytest.raises(RequestFailed, match="unknown node"):
                c.change_membership("add-voter", "n99")
            with pytest.raises(ValueError, match="unknown membership change"):
                c.change_membership("promote-everyone", "n1")
            with pytest.raises(RequestFailed, match="unknown membership change"):
                c.request(MembershipOp("promote-everyone", "n1"))
        with cluster.node_client("n4", timeout_s=5) as c4:
            assert c4.get("k19", consistency="eventual").value == b"19"
    finally:
        cluster.stop()
