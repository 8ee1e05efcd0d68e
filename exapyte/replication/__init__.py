"""Replication strategies over the regions of the topology: ``sync``, ``async``, ``optimized``.

See :mod:`exapyte.replication.base` for what each promises and ``docs/replication.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exapyte.replication.base import (
    Latency,
    Quota,
    ReplicaPlan,
    ReplicationError,
    ReplicationPolicy,
)
from exapyte.replication.strategies import (
    AsyncReplication,
    OptimizedReplication,
    SyncReplication,
)

if TYPE_CHECKING:
    from exapyte.config import Config

__all__ = [
    "AsyncReplication",
    "Latency",
    "OptimizedReplication",
    "Quota",
    "ReplicaPlan",
    "ReplicationError",
    "ReplicationPolicy",
    "STRATEGIES",
    "SyncReplication",
    "from_config",
    "latency_of",
    "make_policy",
]

STRATEGIES: dict[str, type[SyncReplication] | type[AsyncReplication] | type[OptimizedReplication]] = {
    "sync": SyncReplication,
    "async": AsyncReplication,
    "optimized": OptimizedReplication,
}


def make_policy(name: str, latency: Latency | None = None) -> ReplicationPolicy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ReplicationError(
            f"unknown replication strategy {name!r}; allowed: {', '.join(STRATEGIES)}"
        ) from None
    return cls(latency or Latency())


def latency_of(cfg: Config) -> Latency:
    """The topology's inter-region links of ``cfg`` (one-way ms)."""
    return Latency((link.a, link.b, link.latency_ms) for link in cfg.cluster.links)


def from_config(cfg: Config) -> ReplicationPolicy:
    """The policy ``replication.strategy`` names (resolved: ``async`` for a hierarchical
    distribution when the config names none, ``sync`` otherwise)."""
    return make_policy(cfg.replication_strategy, latency_of(cfg))
