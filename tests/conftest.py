"""Fixtures shared by every test tier: free loopback ports and throw-away cluster files."""

from __future__ import annotations

import json
import random
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


# Ports handed out for test clusters come from below the kernel's ephemeral range: a port the
# kernel gives to bind(0) (the harness's proxies) or to an outgoing connection can then never be
# one a test node is about to bind.
_PORT_LOW = 20_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


_PORT_RNG = random.Random()


def free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 a moment ago, outside the ephemeral range."""
    high = _ephemeral_low()
    ports: list[int] = []
    while len(ports) < count:
        port = _PORT_RNG.randrange(_PORT_LOW, high)
        if port in ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


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
