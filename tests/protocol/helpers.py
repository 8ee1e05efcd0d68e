"""Helpers for single-core tests: build a core, collect what it sends."""

from __future__ import annotations

import random
from typing import Any

from exapyte.protocol.drive import drive
from exapyte.protocol.raft import Raft, RaftConfig
from exapyte.protocol.types import ConfState, Entry, HardState, PersistedState


class RecordingHost:
    """A Host that records every call in order and keeps the Readies."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.sent: list[Any] = []
        self.applied: list[Entry] = []
        self.reads: list[Any] = []
        self.failed_reads: list[bytes] = []
        self.hard_state = HardState()

    def persist(self, hard_state, entries, snapshot, sync) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("persist", (hard_state, tuple(entries), snapshot, sync)))
        if hard_state is not None:
            self.hard_state = hard_state

    def send(self, messages) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("send", tuple(messages)))
        self.sent.extend(messages)

    def install_snapshot(self, snapshot) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("install", snapshot))

    def apply(self, entries) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("apply", tuple(entries)))
        self.applied.extend(entries)

    def answer_reads(self, read_states) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("reads", tuple(read_states)))
        self.reads.extend(read_states)

    def fail_reads(self, request_ids) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("failed_reads", tuple(request_ids)))
        self.failed_reads.extend(request_ids)

    def take(self) -> list[Any]:
        sent, self.sent = self.sent, []
        return sent


def make_core(
    node_id: str = "n1",
    voters: tuple[str, ...] = ("n1", "n2", "n3"),
    seed: int = 0,
    persisted: PersistedState | None = None,
    **config: Any,
) -> tuple[Raft, RecordingHost]:
    core = Raft(
        RaftConfig(node_id=node_id, **config),
        persisted if persisted is not None else PersistedState(conf=ConfState(voters=voters)),
        random.Random(seed),
    )
    host = RecordingHost()
    pump(core, host)
    return core, host


def pump(core: Raft, host: RecordingHost) -> int:
    """Drive ``core`` until it has nothing left; returns how many Readies were applied."""
    rounds = 0
    while drive(core, host):
        rounds += 1
        assert rounds < 1000
    return rounds


def sent_of(host: RecordingHost, kind: type) -> list[Any]:
    return [m for m in host.sent if isinstance(m, kind)]
