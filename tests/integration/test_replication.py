"""Replication strategies on real processes: four nodes in three regions (two in east).

``async``: the east nodes vote, the others learn and serve weak reads in their region; with the
east region gone, writes stop and the learners still answer weak reads with what had shipped.
``optimized``: the leader moves to the region that writes most."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exapyte import config as config_mod
from exapyte.client import Client
from exapyte.errors import ExapyteError
from exapyte.runtime.cluster import LocalCluster
from tests.integration.test_raft_cluster import statuses, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REGIONS = {"n1": "east", "n2": "east", "n3": "west", "n4": "asia"}
LINKS = [{"a": "east", "b": "west", "latency_ms": 30}, {"a": "west", "b": "asia", "latency_ms": 50},
         {"a": "east", "b": "asia", "latency_ms": 90}]


def three_regions(write_config, strategy: str) -> Path:
    path = write_config(
        list(REGIONS), network={"tick_ms": 10, "request_timeout_ms": 3000},
        consensus={"election_timeout_ticks": 20, "heartbeat_ticks": 2},
        replication={"strategy": strategy},
    )
    raw = json.loads(path.read_text())
    for node in raw["cluster"]["nodes"]:
        node["region"] = REGIONS[node["id"]]
    raw["cluster"]["regions"] = [{"id": r} for r in ("east", "west", "asia")]
    raw["cluster"]["links"] = LINKS
    path.write_text(json.dumps(raw))
    return path


def leader_of(cluster: LocalCluster) -> str | None:
    return next((n for n, st in statuses(cluster).items() if st.get("role") == "leader"), None)


def test_async_learners_serve_their_region_and_writes_stop_without_the_home_region(
    write_config, tmp_path: Path,
) -> None:
    path = three_regions(write_config, "async")
    with LocalCluster(path, tmp_path / "run") as cluster:
        cluster.start()
        assert wait_for(lambda: leader_of(cluster), "a leader") in ("n1", "n2")
        st = statuses(cluster)["n1"]
        assert sorted(st["voters"]) == ["n1", "n2"] and sorted(st["learners"]) == ["n3", "n4"]
        with cluster.client(timeout_s=10) as c:
            for i in range(5):
                c.put(f"k{i}", f"v{i}")
        asia = config_mod.load(path, "n4")
        with Client.from_config(asia, timeout_s=10) as reader:
            def shipped() -> bool:
                got = reader.get("k4", consistency="eventual")
                return got is not None and got.value == b"v4" and reader.last_node == "n4"
            wait_for(shipped, "the asia learner serving what shipped")
        cluster.kill("n1")
        cluster.kill("n2")
        west = config_mod.load(path, "n3")
        with Client.from_config(west, timeout_s=2) as c:
            with pytest.raises(ExapyteError):
                c.put("k9", "lost")  # no voter left: the home region holds them all
            got = c.get("k3", consistency="eventual")
            assert got is not None and got.value == b"v3" and c.last_node == "n3"


def test_optimized_moves_the_leader_to_the_region_that_writes_most(write_config, tmp_path: Path) -> None:
    path = three_regions(write_config, "optimized")
    with LocalCluster(path, tmp_path / "run") as cluster:
        cluster.start()
        first = wait_for(lambda: leader_of(cluster), "a leader")
        st = statuses(cluster)["n1"]
        assert sorted(st["voters"]) == ["n1", "n2", "n3", "n4"]  # 2 east, 1 west, 1 asia
        west = config_mod.load(path, "n3")
        with Client.from_config(west, timeout_s=10) as c:
            def moved() -> bool:
                for i in range(10):
                    c.put(f"w{i}", "x" * 2048)  # large enough to ship compressed
                return leader_of(cluster) == "n3"
            wait_for(moved, "leadership in west, where the writes come from")
        every = statuses(cluster).values()
        # a transfer moved it there, unless the founding election already chose n3
        transfers = sum(s["counters"].get("leader_placement_transfers", 0) for s in every)
        assert transfers >= 1 or first == "n3", (first, transfers)
        # streams to other regions go compressed, and the peers took them
        assert sum(s["frames"].get("peer_frames_packed", 0) for s in every) > 0
        assert not any(k.startswith("frames_dropped") for s in every for k in s["frames"])
