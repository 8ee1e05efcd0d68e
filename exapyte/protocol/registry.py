"""Every consensus protocol exapyte runs, by name: how to build a core and which peer messages
it sends.

Theory of operation
-------------------
A protocol registers one :class:`ProtocolDef` in :data:`PROTOCOLS`: its name (the value of
``consensus.protocol``), a factory with the signature of :func:`make_core`, and the tuple of its
peer message classes. Everything above the protocol layer goes through here, never through a
protocol's own module: the replica builds its core with :func:`make_core`, the wire format
decodes peer messages against :data:`PEER_MESSAGE_TYPES` (the union of every protocol's
messages; each class has a tag prefixed with its protocol's name and the fields ``frm`` and
``to`` the runtime checks against the authenticated sender), and the config, the simulator and
the harness offer exactly :func:`names`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from exapyte.errors import ConfigError
from exapyte.protocol.core import ConsensusCore, RandomSource
from exapyte.protocol.multipaxos import core as paxos_core
from exapyte.protocol.multipaxos.messages import PAXOS_MESSAGE_TYPES
from exapyte.protocol.raft import core as raft_core
from exapyte.protocol.raft.messages import RAFT_MESSAGE_TYPES
from exapyte.protocol.types import CoreSpec, PersistedState
from exapyte.protocol.zab import core as zab_core
from exapyte.protocol.zab.messages import ZAB_MESSAGE_TYPES


class CoreFactory(Protocol):
    def __call__(
        self,
        spec: CoreSpec,
        persisted: PersistedState | None,
        rng: RandomSource,
        *,
        applied: int | None = ...,
        snapshot_check: Callable[[bytes], bool] | None = ...,
    ) -> ConsensusCore: ...


@dataclass(frozen=True)
class ProtocolDef:
    name: str
    factory: CoreFactory
    messages: tuple[type, ...]
    summary: str


PROTOCOLS: dict[str, ProtocolDef] = {
    "raft": ProtocolDef(
        "raft", raft_core.build, RAFT_MESSAGE_TYPES,
        "Raft with pre-vote, check-quorum, ReadIndex and leadership transfer",
    ),
    "multipaxos": ProtocolDef(
        "multipaxos", paxos_core.build, PAXOS_MESSAGE_TYPES,
        "Multi-Paxos with a stable leader, hole filling, ReadIndex and leadership transfer",
    ),
    "zab": ProtocolDef(
        "zab", zab_core.build, ZAB_MESSAGE_TYPES,
        "ZooKeeper's atomic broadcast: Fast Leader Election, discovery, DIFF/TRUNC/SNAP sync",
    ),
}

PEER_MESSAGE_TYPES: tuple[type, ...] = tuple(
    cls for definition in PROTOCOLS.values() for cls in definition.messages
)


def names() -> tuple[str, ...]:
    """The protocols this build runs, in registration order."""
    return tuple(PROTOCOLS)


def make_core(
    spec: CoreSpec,
    persisted: PersistedState | None,
    rng: RandomSource,
    *,
    applied: int | None = None,
    snapshot_check: Callable[[bytes], bool] | None = None,
) -> ConsensusCore:
    """The core of ``spec.protocol`` for one replica.

    ``persisted`` is what the replica's storage holds (``PersistedState(conf=...)`` for a
    founding member of a new group, ``PersistedState()`` for a node that waits to be added);
    ``applied`` the index its state machine already reflects; ``snapshot_check(image)`` whether
    an assembled snapshot image is one the host can install. Raises ConfigError for a protocol
    this build does not have.
    """
    definition = PROTOCOLS.get(spec.protocol)
    if definition is None:
        raise ConfigError(
            f"consensus protocol {spec.protocol!r} is not available; this build runs: "
            f"{', '.join(PROTOCOLS)}"
        )
    return definition.factory(
        spec, persisted, rng, applied=applied, snapshot_check=snapshot_check
    )
