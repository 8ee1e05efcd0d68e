"""Reads of the weaker levels go to the nearest replica, by the topology's link latencies;
strong reads and writes to the leader. Real processes: three nodes in three regions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exapyte import config as config_mod
from exapyte.client import Client
from exapyte.data.router import Proximity
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import GetOp, PutOp
from tests.integration.test_raft_cluster import statuses, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REGIONS = {"n1": "east", "n2": "west", "n3": "asia"}
LINKS = [{"a": "east", "b": "west", "latency_ms": 30}, {"a": "west", "b": "asia", "latency_ms": 50},
         {"a": "east", "b": "asia", "latency_ms": 90}]


def test_proximity_orders_by_the_cheapest_path_and_ties_by_id() -> None:
    p = Proximity("east", {"a": "east", "b": "west", "c": "asia", "d": "mars", "e": "east"},
                  [("east", "west", 30), ("west", "asia", 50), ("east", "asia", 90)])
    assert p.order(["c", "b", "a", "d", "e"]) == ["a", "e", "b", "c", "d"]
    assert p.latency_ms("c") == 80.0  # through west, cheaper than the direct 90
    assert p.latency_ms("d") == float("inf")
    assert Proximity(None, {"a": "east"}).latency_ms("a") == 0.0


@pytest.mark.parametrize("distribution", ["centralized", "sharded"])
def test_weak_reads_are_served_in_the_clients_region(write_config, tmp_path: Path, distribution: str) -> None:
    sections: dict = {"network": {"tick_ms": 10},
                      "consensus": {"election_timeout_ticks": 20, "heartbeat_ticks": 2}}
    if distribution == "sharded":
        sections["distribution"] = {"strategy": "sharded", "shards": 2, "replication_factor": 3}
    path = write_config(["n1", "n2", "n3"], **sections)
    raw = json.loads(path.read_text())
    for node in raw["cluster"]["nodes"]:
        node["region"] = REGIONS[node["id"]]
    raw["cluster"]["links"] = LINKS
    path.write_text(json.dumps(raw))
    with LocalCluster(path, tmp_path / "run") as cluster:
        cluster.start()
        wait_for(lambda: all(st.get("leader") or st.get("groups") for st in statuses(cluster).values()), "a leader")
        with cluster.client(timeout_s=10) as writer:
            for i in range(6):
                writer.put(f"k{i}", f"v{i}")
        for me in ("n1", "n2", "n3"):
            cfg = config_mod.load(path, me)
            with Client.from_config(cfg, timeout_s=10) as c:
                for i in range(6):
                    got = c.get(f"k{i}", consistency="eventual")
                    assert got is not None and got.value == f"v{i}".encode()
                    assert c.last_node == me, (me, i, c.last_node)  # its own region's replica
                    strong = c.get(f"k{i}", consistency="strong")
                    assert strong is not None and strong.value == f"v{i}".encode()
                    # after the strong read went to the leader, weak reads still stay near
                    again = c.get(f"k{i}", consistency="consistent_prefix")
                    assert again is not None and c.last_node == me
                # every reply names its group and the (term, index) of the state it read
                group = c.group_of("k0")
                reply = c.request(GetOp("k0"), consistency="eventual", group=group)
                assert reply.group == group and reply.term >= 1 and reply.index >= 1, reply
                written = c.request(PutOp("k0", b"v0"), group=group)  # the same value again
                assert written.group == group and written.term >= reply.term and written.index > reply.index
