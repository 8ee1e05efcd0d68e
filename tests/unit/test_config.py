"""Config decoding: a broken file is refused with a message naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exapyte import config
from exapyte.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

BASE = {"cluster": {"nodes": [{"id": "n1", "port": 7000}, {"id": "n2", "port": 7001}]}}


def load(doc: dict | str, node_id: str | None = None) -> config.Config:
    data = doc if isinstance(doc, str) else json.dumps(doc)
    return config.loads(data, node_id=node_id)


def with_(**sections: object) -> dict:
    doc = json.loads(json.dumps(BASE))
    doc.update(sections)
    return doc


def test_root_config_is_a_valid_single_node_durable_default() -> None:
    cfg = config.load(REPO / "config.json")
    assert cfg.node_id == "n1"
    assert len(cfg.cluster.nodes) == 1
    assert cfg.storage.backend == "sqlite"
    assert cfg.storage_path().startswith("./data/")
    assert cfg.node.host == "127.0.0.1"


def test_defaults_and_node_override() -> None:
    cfg = load(BASE, node_id="n2")
    assert cfg.node_id == "n2"
    assert cfg.node.port == 7001
    assert cfg.node.resolved_pub_port == 8001
    assert cfg.network.bind_host == ""
    assert cfg.bind_host == "127.0.0.1"  # the node's own host
    assert cfg.data_plane.default_consistency == "strong"
    assert cfg.with_node("n1").node.port == 7000


@pytest.mark.parametrize(
    ("doc", "node_id", "must_mention"),
    [
        (with_(storage={"backend": "rocks"}), None, ["storage.backend", "rocks", "memory, sqlite, tiered"]),
        (with_(network={"tick": 5}), None, ["network.tick", "unknown field", "tick_ms"]),
        (with_(network={"tick_ms": 0}), None, ["network.tick_ms", ">= 1", "0"]),
        (with_(network={"tick_ms": "fast"}), None, ["network.tick_ms", "int", "fast"]),
        ({"cluster": {"nodes": [{"id": "n1", "port": 70000}]}}, None, ["port", "65535", "70000"]),
        (BASE, "n9", ["node_id", "n9", "n1, n2"]),
        ({"cluster": {"nodes": [{"id": "n1", "port": 7000}, {"id": "n2", "port": 7000}]}}, None, ["port", "7000", "already used"]),
        ({"cluster": {"nodes": [{"id": "n1", "port": 7000, "pub_port": 7001}, {"id": "n2", "port": 7001}]}}, None, ["7001", "already used"]),
        ({"cluster": {"nodes": [{"id": "n1", "port": 7000}, {"id": "n1", "port": 7001}]}}, None, ["more than once", "n1"]),
        ({"cluster": {"nodes": []}}, None, ["cluster.nodes", "length"]),
        (with_(consensus={"protocol": "none"}), None, ["consensus.protocol", "single node"]),
        (with_(consensus={"protocol": "viewstamped"}), None, ["consensus.protocol", "none, raft"]),
        (with_(consensus={"heartbeat_ticks": 20, "election_timeout_ticks": 10}), None, ["heartbeat_ticks"]),
        (with_(data_plane={"default_consistency": "linearish"}), None, ["default_consistency", "strong, bounded_staleness"]),
        (with_(unsafe={"bugs": ["stale-reads"]}), None, ["unsafe.enabled"]),
        (with_(unsafe={"enabled": True, "bugs": ["nope"]}), None, ["unsafe.bugs", "stale-reads"]),
        (with_(consensus={"protocol": "zab"}, unsafe={"enabled": True, "bugs": ["no-term-check"]}), None,
         ["unsafe.bugs", "no-term-check", "raft core only", "zab"]),
        (with_(storage={"backend": "sqlite", "path": ""}), None, ["storage.path"]),
        (with_(surprise=1), None, ["surprise", "known fields"]),
        (with_(replication={"strategy": "semi-sync"}), None, ["replication.strategy", "sync", "async", "optimized"]),
        (with_(distribution={"shards": 4}), None, ["distribution.shards", "centralized has exactly 1"]),
        (with_(distribution={"strategy": "sharded", "rules": {"a": "local"}}), None, ["distribution.rules", "hierarchical"]),
        (with_(distribution={"strategy": "hierarchical", "rules": {"a": "mars"}}), None, ["distribution.rules", "mars", "local"]),
        (with_(distribution={"strategy": "sharded", "replication_factor": 0}), None, ["replication_factor", ">= 1"]),
        (with_(network={"peer_endpoints": {"n7": "tcp://127.0.0.1:1"}}), None, ["peer_endpoints.n7", "n1, n2"]),
        (with_(network={"peer_endpoints": {"n2": "udp://x"}}), None, ["peer_endpoints.n2", "tcp://HOST:PORT"]),
        ("[1, 2]", None, ["JSON object"]),
        ('{"cluster": ', None, ["not valid JSON", "line 1"]),
        ({"storage": {}}, None, ["cluster"]),
        (with_(cluster={"nodes": [{"id": "n1", "port": 7000, "region": "eu"}], "regions": [{"id": "us"}]}), None, ["region", "eu", "us"]),
        # one address, two spellings
        ({"cluster": {"nodes": [{"id": "n1", "port": 7000}, {"id": "n2", "port": 7000, "host": "localhost"}]}},
         None, ["port 7000", "already used by n1.port"]),
        ({"cluster": {"nodes": [{"id": "n1", "port": 7000, "host": "not a host!"}]}}, None,
         ["cluster.nodes[n1].host", "not an IPv4 address or a host name"]),
        ({"cluster": {"nodes": [{"id": "n1", "port": 7000, "host": "300.1.1.1"}]}}, None, ["not a valid IPv4"]),
        ({"cluster": {"nodes": [{"id": "n1", "port": 7000, "host": "::1"}]}}, None, ["IPv6"]),
        (with_(network={"bind_host": "example.com"}), None, ["network.bind_host", "IPv4 address"]),
        (with_(network={"peer_endpoints": {"n2": "tcp://127.0.0.1:99999"}}), None, ["peer_endpoints.n2", "1..65535"]),
        # no authentication: loopback only
        (with_(security={"mode": "off"}, network={"bind_host": "0.0.0.0"}), None,
         ["network.bind_host", "0.0.0.0", "not a loopback address", "curve"]),
        ({"cluster": {"nodes": [{"id": "n1", "port": 7000, "host": "10.1.2.3"}]}, "security": {"mode": "off"}},
         None, ["cluster.nodes[n1].host", "10.1.2.3", "loopback"]),
        (with_(security={"mode": "plaintext"}), None, ["security.mode", "curve, off"]),
        (with_(security={"keys_dir": ""}), None, ["security.keys_dir"]),
    ],
)
def test_broken_config_names_the_field(doc: dict | str, node_id: str | None, must_mention: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load(doc, node_id)
    message = str(info.value)
    for fragment in must_mention:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_every_interface_and_other_hosts_are_accepted_with_curve() -> None:
    cfg = load(with_(network={"bind_host": "0.0.0.0"}))
    assert cfg.bind_host == "0.0.0.0" and cfg.security.mode == "curve"
    cfg = load({"cluster": {"nodes": [{"id": "n1", "port": 7000, "host": "db-1.example.com"},
                                      {"id": "n2", "port": 7000, "host": "10.0.0.2"}]}})
    assert cfg.bind_host == "db-1.example.com"
    assert load(with_(security={"mode": "off"})).security.mode == "off"  # loopback: allowed


def test_unsafe_bugs_accepted_only_when_enabled() -> None:
    cfg = load(with_(unsafe={"enabled": True, "bugs": ["stale-reads"]}))
    assert cfg.unsafe.bugs == ("stale-reads",)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (with_(storage={"backend": "rocks"}), "storage.backend"),
        (BASE | {"node_id": "zz"}, "node_id"),
    ],
)
def test_cli_exits_non_zero_naming_the_field(tmp_path: Path, doc: dict, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    proc = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--node", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert proc.returncode != 0
    assert fragment in proc.stderr


def test_config_reference_is_current() -> None:
    from exapyte.configdoc import render

    assert (REPO / "docs" / "config.md").read_text() == render(), (
        "docs/config.md is stale: run python -m exapyte.configdoc > docs/config.md"
    )
