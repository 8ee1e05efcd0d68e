"""Fixtures shared by every test tier: free loopback ports and throw-away cluster files."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# The machine is shared and noisy: no per-example deadlines (a slow example is not a bug), and a
# failing example is printed so it can be replayed with @reproduce_failure.
settings.register_profile(
    "exapyte", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("exapyte")


def free_ports(count: int) -> list[int]:
    """Ports that were free on 127.0.0.1 a moment ago (held open together, so distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster_config(
    node_ids: list[str], *, protocol: str | None = None, **sections: Any
) -> dict[str, Any]:
    ports = free_ports(2 * len(node_ids))
    nodes = [
        {"id": nid, "port": ports[2 * i], "pub_port": ports[2 * i + 1]}
        for i, nid in enumerate(node_ids)
    ]
    cfg: dict[str, Any] = {"cluster": {"nodes": nodes}}
    cfg["consensus"] = {"protocol": protocol or ("none" if len(node_ids) == 1 else "raft")}
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(name), dict):
            cfg[name].update(value)
        else:
            cfg[name] = value
    return cfg


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """``write_config(["n1"], storage={...})`` writes a cluster file and returns its path."""

    def write(node_ids: list[str], name: str = "cluster.json", **sections: Any) -> Path:
        cfg = cluster_config(node_ids, **sections)
        cfg.setdefault("storage", {"backend": "sqlite", "path": str(tmp_path / "data" / "{node_id}" / "store.db")})
        # Keys of this test only (LocalCluster creates them; a bare --node needs keygen first).
        cfg.setdefault("security", {})
        cfg["security"].setdefault("keys_dir", str(tmp_path / "keys"))
        path = tmp_path / name
        path.write_text(json.dumps(cfg, indent=2))
        return path

    return write
