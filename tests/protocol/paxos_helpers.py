"""Helpers for the Multi-Paxos tests: one core fed by hand, or a cluster of them."""

from __future__ import annotations

import random
from typing import Any

from exapyte.protocol.multipaxos.core import MultiPaxos, PaxosRecord, decode_record
from exapyte.protocol.types import ConfState, CoreSpec, PersistedState
from tests.protocol.cluster import Cluster
from tests.protocol.helpers import RecordingHost, pump

VOTERS = ("n1", "n2", "n3")


def paxos_core(
    node_id: str = "n1",
    voters: tuple[str, ...] = VOTERS,
    seed: int = 0,
    persisted: PersistedState | None = None,
    **spec: Any,
) -> tuple[MultiPaxos, RecordingHost]:
    core = MultiPaxos(
        CoreSpec("multipaxos", node_id, **spec),
        persisted if persisted is not None else PersistedState(conf=ConfState(voters=voters)),
        random.Random(seed),
    )
    host = RecordingHost()
    pump(core, host)  # type: ignore[arg-type]
    host.take()
    return core, host


def drive(core: MultiPaxos, host: RecordingHost) -> list[Any]:
    """Drive ``core`` until idle; returns (and forgets) what it sent."""
    pump(core, host)  # type: ignore[arg-type]
    return host.take()


def start_phase1(core: MultiPaxos, host: RecordingHost) -> list[Any]:
    """Campaign and answer the probe with yeses from every voter: phase 1 starts. Returns what
    the core sent then (its Prepares)."""
    from exapyte.protocol.multipaxos.messages import Prepare, Promise

    core.campaign()
    probes = [m for m in drive(core, host) if isinstance(m, Prepare)]
    assert probes and all(m.probe for m in probes)
    for m in probes:
        core.step(Promise(m.to, m.frm, m.round, m.start, m.commit, probe=True))
    return drive(core, host)


def record_of(host: RecordingHost) -> PaxosRecord:
    return decode_record(host.hard_state.record)


def paxos_cluster(ids: tuple[str, ...] = VOTERS, **kw: Any) -> Cluster:
    return Cluster(ids, protocol="multipaxos", **kw)
