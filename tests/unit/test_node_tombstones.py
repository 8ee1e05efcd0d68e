"""A node keeps the tombstone of every replica it drops in ``<storage>.groups/dropped.json``
(the core's promises, hex-encoded) and hands them to its group table at start, so that a
replica of that group created again starts from them (docs/control-plane.md)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from exapyte.errors import ConfigError
from exapyte.protocol.raft.core import RaftHardState, encode_hard_state
from exapyte.protocol.types import HardState
from exapyte.runtime.node import Node


class _Node:
    """The part of a Node its dropped-groups bookkeeping uses."""

    _dropped_path = Node._dropped_path
    _dropped_groups = Node._dropped_groups
    _remove_storage = Node._remove_storage

    def __init__(self, tmp_path: Path, backend: str = "sqlite") -> None:
        path = str(tmp_path / "n1.db")
        self.cfg: Any = SimpleNamespace(
            storage=SimpleNamespace(backend=backend), storage_path=lambda: path,
        )


def test_a_drop_writes_the_tombstone_and_a_restart_reads_it_back(tmp_path: Path) -> None:
    node = _Node(tmp_path)
    tomb = HardState(record=encode_hard_state(RaftHardState(7, "n2")))
    (tmp_path / "n1.groups").mkdir()
    (tmp_path / "n1.groups" / "s0.db").write_bytes(b"the group store")
    node._remove_storage("s0", tomb)
    node._remove_storage("s1", HardState())
    assert not (tmp_path / "n1.groups" / "s0.db").exists()
    raw = json.loads((tmp_path / "n1.groups" / "dropped.json").read_text())
    assert raw["s0"] == {"commit": 0, "record": tomb.record.hex()}
    assert node._dropped_groups() == {"s0": tomb, "s1": HardState()}


def test_the_list_older_nodes_wrote_reads_as_tombstones_without_promises(tmp_path: Path) -> None:
    node = _Node(tmp_path)
    (tmp_path / "n1.groups").mkdir()
    (tmp_path / "n1.groups" / "dropped.json").write_text(json.dumps(["s0", "s3"]))
    assert node._dropped_groups() == {"s0": HardState(), "s3": HardState()}


def test_an_unreadable_tombstone_is_a_clear_error(tmp_path: Path) -> None:
    node = _Node(tmp_path)
    (tmp_path / "n1.groups").mkdir()
    (tmp_path / "n1.groups" / "dropped.json").write_text(json.dumps({"s0": {"record": "zz"}}))
    with pytest.raises(ConfigError, match="tombstone of 's0'"):
        node._dropped_groups()


def test_a_memory_node_keeps_no_file(tmp_path: Path) -> None:
    node = _Node(tmp_path, backend="memory")
    node._remove_storage("s0", HardState(record=b"x"))
    assert not (tmp_path / "n1.groups").exists() and node._dropped_groups() == {}
