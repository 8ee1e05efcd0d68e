"""Helpers for the ZAB tests: single cores with a recording host, clusters, and the checks of
the Zab paper's properties (§III) over what the cluster's nodes applied."""

from __future__ import annotations

import random
from typing import Any

from exapyte.protocol.types import ConfState, EntryKind, PersistedState
from exapyte.protocol.zab import Zab, ZabConfig
from exapyte.protocol.zab.core import Phase, ZabState
from tests.protocol.cluster import Cluster
from tests.protocol.helpers import RecordingHost, pump

__all__ = [
    "Cluster",
    "Phase",
    "RecordingHost",
    "ZabState",
    "check_zab_properties",
    "make_zab",
    "pump",
    "zab_cluster",
]


def make_zab(
    node_id: str = "n1",
    voters: tuple[str, ...] = ("n1", "n2", "n3"),
    seed: int = 0,
    persisted: PersistedState | None = None,
    **config: Any,
) -> tuple[Zab, RecordingHost]:
    core = Zab(
        ZabConfig(node_id=node_id, **config),
        persisted if persisted is not None else PersistedState(conf=ConfState(voters=voters)),
        random.Random(seed),
    )
    host = RecordingHost()
    pump(core, host)  # type: ignore[arg-type]
    return core, host


def zab_cluster(ids: tuple[str, ...] = ("n1", "n2", "n3"), **kwargs: Any) -> Cluster:
    return Cluster(ids, protocol="zab", **kwargs)


def check_zab_properties(c: Cluster) -> None:
    """The Zab paper's broadcast properties over every node's applied sequence (§III):

    - integrity: a delivered (applied) transaction was broadcast (proposed) by some primary;
    - total order and agreement: any two delivered sequences are prefixes of one another;
    - local and global primary order: the epochs of delivered transactions never decrease,
      and within one epoch the indexes a primary gave them increase one by one.
    """
    logs = {n: c.hosts[n].applied_log for n in c.ids}
    for node, log in logs.items():
        prev_term = -1
        prev_index = 0
        for e in log:
            if prev_index and e.index <= prev_index:
                # A restart: the host re-applies its log from its snapshot on.
                prev_term, prev_index = -1, 0
            if e.kind == EntryKind.NORMAL:
                who = c.proposed.get((e.index, e.term))
                assert who is not None and who[1] == e.data, f"integrity: {node} applied {e}"
            assert e.term >= prev_term, f"global primary order: {node} applied {e} after epoch {prev_term}"
            if prev_index:
                assert e.index == prev_index + 1, f"{node} applied {e.index} after {prev_index}"
            prev_term, prev_index = e.term, e.index
    # Snapshots replace a prefix: compare the overlapping index ranges.
    by_index: dict[int, tuple[str, Any]] = {}
    for node, log in logs.items():
        for e in log:
            known = by_index.get(e.index)
            if known is None:
                by_index[e.index] = (node, e)
            else:
                assert known[1] == e, f"agreement: {known[0]} applied {known[1]}, {node} applied {e}"
