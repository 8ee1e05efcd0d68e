"""An in-memory cluster of consensus cores driven through ``drive()``, for deterministic tests.

``Cluster(protocol="raft")`` (the default) builds Raft cores from ``RaftConfig(**config)``; any
other registered protocol is built with ``make_core(CoreSpec(protocol, node_id, **config))``.

Each node has:

- a :class:`MemoryStore` that survives a crash (what ``persist`` wrote with ``sync=True``;
  a hard state written with ``sync=False`` is lost by a crash until a later synced write);
- a :class:`KV` state machine applying ``b"key=value"`` commands, rebuilt from the stored
  snapshot on restart;
- a :class:`NodeHost` implementing the ``Host`` protocol.

The network is a list of in-flight messages. Links can be cut (one way or both), nodes isolated
and healed; delivery can drop, duplicate, reorder and delay messages, all decided by one seeded
``random.Random``. Invariants (election safety, log matching, leader completeness, state-machine
safety) are checked after every step.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from exapyte.errors import NotLeader, ProposalDropped
from exapyte.protocol.core import ConsensusCore
from exapyte.protocol.drive import drive
from exapyte.protocol.invariants import InvariantChecker, NodeView
from exapyte.protocol.raft import Raft, RaftConfig
from exapyte.protocol.registry import make_core
from exapyte.protocol.types import (
    ConfState,
    CoreSpec,
    Entry,
    EntryKind,
    HardState,
    PersistedState,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
)

_KV_ENCODER = msgspec.msgpack.Encoder()
_KV_DECODER = msgspec.msgpack.Decoder(dict[str, str])


class MemoryStore:
    """Durable storage of one node: what survives a crash."""

    def __init__(self, boot_conf: ConfState) -> None:
        self.boot_conf = boot_conf
        self.hard_state = HardState()
        self.unsynced_hard_state: HardState | None = None
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []  # after the snapshot, contiguous
        self.persist_calls: list[tuple[HardState | None, tuple[Entry, ...], bool]] = []

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool,
    ) -> None:
        if snapshot is not None:
            self.snapshot = snapshot
            self.entries = []
        if entries:
            first = entries[0].index
            offset = self.snapshot.meta.index if self.snapshot else 0
            del self.entries[max(first - offset - 1, 0) :]
            self.entries.extend(entries)
            expected = offset + 1
            for e in self.entries:
                assert e.index == expected, (e.index, expected)
                expected += 1
        if hard_state is not None:
            if sync:
                self.hard_state = hard_state
                self.unsynced_hard_state = None
            else:
                self.unsynced_hard_state = hard_state
        elif sync and self.unsynced_hard_state is not None:
            self.hard_state = self.unsynced_hard_state
            self.unsynced_hard_state = None
        self.persist_calls.append((hard_state, tuple(entries), sync))

    def compact(self, snapshot: Snapshot) -> None:
        index = snapshot.meta.index
        self.entries = [e for e in self.entries if e.index > index]
        self.snapshot = snapshot

    def crash(self) -> None:
        self.unsynced_hard_state = None

    def load(self) -> PersistedState:
        hs = self.unsynced_hard_state or self.hard_state
        return PersistedState(
            hard_state=hs, snapshot=self.snapshot, entries=tuple(self.entries), conf=self.boot_conf
        )


class KV:
    """The trivial replicated state machine: ``b"k=v"`` sets key k to v."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.applied = 0

    def apply(self, entry: Entry) -> None:
        if entry.index != self.applied + 1:
            raise AssertionError(f"applied {entry.index} after {self.applied}")
        self.applied = entry.index
        if entry.kind == EntryKind.NORMAL:
            key, _, value = entry.data.decode().partition("=")
            self.data[key] = value

    def snapshot_data(self) -> bytes:
        return _KV_ENCODER.encode(self.data)

    def restore(self, snapshot: Snapshot) -> None:
        self.data = dict(_KV_DECODER.decode(snapshot.data)) if snapshot.data else {}
        self.applied = snapshot.meta.index


class NodeHost:
    """The ``Host`` of one node inside a :class:`Cluster`."""

    def __init__(self, cluster: Cluster, node_id: str) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.store = cluster.stores[node_id]
        self.kv = KV()
        self.applied_log: list[Entry] = []
        self.read_results: dict[bytes, tuple[int, dict[str, str]]] = {}
        self.failed_reads: list[bytes] = []
        self.events: list[str] = []

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool,
    ) -> None:
        self.events.append("persist")
        self.store.persist(hard_state, entries, snapshot, sync)

    def send(self, messages: Sequence[msgspec.Struct]) -> None:
        self.events.append("send")
        for m in messages:
            self.cluster.enqueue(m)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self.events.append("install")
        self.kv.restore(snapshot)

    def apply(self, entries: Sequence[Entry]) -> None:
        self.events.append("apply")
        if self.kv.applied > entries[0].index - 1:
            raise AssertionError(f"{self.node_id} re-applies {entries[0].index}")
        for e in entries:
            self.kv.apply(e)
        self.applied_log.extend(entries)
        self.cluster.checker.on_apply(self.node_id, entries)
        self.cluster.on_applied(self.node_id, entries)

    def answer_reads(self, read_states: Sequence[ReadState]) -> None:
        self.events.append("reads")
        for rs in read_states:
            assert rs.index <= self.kv.applied, (rs, self.kv.applied)
            self.read_results[rs.request_id] = (rs.index, dict(self.kv.data))
            self.cluster.on_read(self.node_id, rs, self.kv.data)

    def fail_reads(self, request_ids: Sequence[bytes]) -> None:
        self.events.append("failed_reads")
        self.failed_reads.extend(request_ids)
        self.cluster.failed_reads.extend(request_ids)


class Cluster:
    def __init__(
        self,
        ids: Sequence[str] = ("n1", "n2", "n3"),
        *,
        seed: int = 0,
        learners: Sequence[str] = (),
        joiners: Sequence[str] = (),
        check: bool = True,
        protocol: str = "raft",
        **config: Any,
    ) -> None:
        self.protocol = protocol
        self.rng = random.Random(seed)
        self.seed = seed
        self.config = config
        self.check = check
        boot = ConfState(voters=tuple(ids), learners=tuple(learners))
        self.ids = list(ids) + list(learners) + list(joiners)
        self.stores = {n: MemoryStore(boot if n not in joiners else ConfState()) for n in self.ids}
        self.hosts: dict[str, NodeHost] = {}
        self.cores: dict[str, Any] = {}
        self.alive: set[str] = set()
        self.queue: list[Any] = []
        self.cut_links: set[tuple[str, str]] = set()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.reorder = False
        self.checker = InvariantChecker()
        self.proposed: dict[tuple[int, int], tuple[str, bytes]] = {}
        self.acked: list[bytes] = []
        self.read_answers: list[tuple[str, ReadState, dict[str, str]]] = []
        self.failed_reads: list[bytes] = []
        self.delivered = 0
        for n in self.ids:
            self.hosts[n] = NodeHost(self, n)
            self._boot(n)
        self.settle()

    # --- nodes -----------------------------------------------------------------------------

    def make_config(self, node_id: str) -> RaftConfig:
        return RaftConfig(node_id=node_id, **self.config)

    def _boot(self, node_id: str) -> None:
        store = self.stores[node_id]
        host = self.hosts[node_id]
        host.kv = KV()
        if store.snapshot is not None:
            host.kv.restore(store.snapshot)
        rng = random.Random(f"{self.seed}/{node_id}/{len(host.events)}")
        core: ConsensusCore
        if self.protocol == "raft":
            core = Raft(self.make_config(node_id), store.load(), rng)
        else:
            core = make_core(CoreSpec(self.protocol, node_id, **self.config), store.load(), rng)
        self.cores[node_id] = core
        self.alive.add(node_id)

    def crash(self, node_id: str) -> None:
        self.alive.discard(node_id)
        self.stores[node_id].crash()
        del self.cores[node_id]

    def restart(self, node_id: str) -> None:
        assert node_id not in self.alive
        self._boot(node_id)
        self.settle()

    def core(self, node_id: str) -> Any:
        return self.cores[node_id]

    # --- network ---------------------------------------------------------------------------

    def enqueue(self, message: Any) -> None:
        self.queue.append(message)

    def cut(self, a: str, b: str, both: bool = True) -> None:
        self.cut_links.add((a, b))
        if both:
            self.cut_links.add((b, a))

    def isolate(self, node_id: str) -> None:
        for other in self.ids:
            if other != node_id:
                self.cut(node_id, other)

    def partition(self, *groups: Iterable[str]) -> None:
        sets = [set(g) for g in groups]
        for i, g in enumerate(sets):
            for h in sets[i + 1 :]:
                for a in g:
                    for b in h:
                        self.cut(a, b)

    def heal(self) -> None:
        self.cut_links.clear()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.reorder = False

    def link_up(self, frm: str, to: str) -> bool:
        return (frm, to) not in self.cut_links

    def _deliver_one(self, m: Any) -> None:
        if m.to not in self.alive or not self.link_up(m.frm, m.to):
            return
        self.cores[m.to].step(m)
        self.delivered += 1

    def deliver(
        self, max_messages: int | None = None, where: Callable[[Any], bool] | None = None
    ) -> int:
        """Deliver queued messages (subject to faults) and drive the receivers; returns count."""
        batch = self.queue
        if where is not None:
            batch = [m for m in self.queue if where(m)]
            self.queue = [m for m in self.queue if not where(m)]
        else:
            self.queue = []
        if self.reorder:
            self.rng.shuffle(batch)
        if max_messages is not None and len(batch) > max_messages:
            self.queue = batch[max_messages:] + self.queue
            batch = batch[:max_messages]
        count = 0
        for m in batch:
            if self.drop_rate and self.rng.random() < self.drop_rate:
                continue
            copies = 2 if self.dup_rate and self.rng.random() < self.dup_rate else 1
            for _ in range(copies):
                self._deliver_one(m)
                count += 1
            self.drive_all()
        return count

    def drop(self, where: Callable[[Any], bool]) -> int:
        before = len(self.queue)
        self.queue = [m for m in self.queue if not where(m)]
        return before - len(self.queue)

    # --- driving ---------------------------------------------------------------------------

    def drive_all(self) -> None:
        for n in sorted(self.alive):
            core = self.cores[n]
            rounds = 0
            while drive(core, self.hosts[n]):
                rounds += 1
                assert rounds < 1000
        if self.check:
            self.check_invariants()

    def settle(self) -> None:
        self.drive_all()

    def tick(self, n: int = 1, nodes: Iterable[str] | None = None) -> None:
        for _ in range(n):
            for node in sorted(nodes if nodes is not None else self.alive):
                if node in self.alive:
                    self.cores[node].tick()
            self.drive_all()

    def stabilize(self, max_rounds: int = 200) -> None:
        """Deliver until no message is in flight."""
        for _ in range(max_rounds):
            if not self.queue:
                return
            self.deliver()
        raise AssertionError(f"network did not quiesce in {max_rounds} rounds")

    def run(self, ticks: int) -> None:
        """Alternate ticks and full delivery."""
        for _ in range(ticks):
            self.tick()
            self.stabilize()

    def elect(self, node_id: str) -> None:
        self.cores[node_id].campaign()
        self.drive_all()
        self.stabilize()
        assert self.cores[node_id].role is Role.LEADER, self.describe()

    def leader(self) -> str | None:
        best: tuple[int, str] | None = None
        for n in self.alive:
            c = self.cores[n]
            if c.role is Role.LEADER and (best is None or c.term > best[0]):
                best = (c.term, n)
        return best[1] if best else None

    def wait_leader(self, max_ticks: int = 300) -> str:
        for _ in range(max_ticks):
            leader = self.leader()
            # A ZAB leader in discovery still names the epoch it led before (its new one is
            # not chosen yet), so its commit looks current: it must also be established.
            if leader is not None and self.cores[leader].log.term(
                self.cores[leader].log.committed
            ) == self.cores[leader].term and getattr(self.cores[leader], "established", True):
                return leader
            self.tick()
            self.stabilize()
        raise AssertionError("no leader elected: " + self.describe())

    def propose(self, node_id: str, data: bytes) -> tuple[int, int] | None:
        try:
            index, term = self.cores[node_id].propose(data)
        except (NotLeader, ProposalDropped):
            return None
        self.proposed[(index, term)] = (node_id, data)
        self.drive_all()
        return index, term

    def put(self, key: str, value: str) -> tuple[int, int]:
        leader = self.wait_leader()
        result = self.propose(leader, f"{key}={value}".encode())
        assert result is not None
        self.stabilize()
        return result

    def on_applied(self, node_id: str, entries: Sequence[Entry]) -> None:
        for e in entries:
            who = self.proposed.get((e.index, e.term))
            if who is not None and who[0] == node_id and who[1] == e.data:
                self.acked.append(e.data)

    def on_read(self, node_id: str, rs: ReadState, data: dict[str, str]) -> None:
        self.read_answers.append((node_id, rs, dict(data)))

    def snapshot(self, node_id: str) -> Snapshot:
        """Take a snapshot of ``node_id``'s state machine and compact its log."""
        host = self.hosts[node_id]
        snap = Snapshot(SnapshotMeta(index=host.kv.applied), host.kv.snapshot_data())
        full = self.cores[node_id].compact(snap)
        self.stores[node_id].compact(full)
        return full

    # --- observation -----------------------------------------------------------------------

    def views(self) -> list[NodeView]:
        return [self.cores[n].observe() for n in sorted(self.alive)]

    def check_invariants(self) -> None:
        self.checker.observe(self.views())

    def describe(self) -> str:
        parts = []
        for n in self.ids:
            if n in self.alive:
                c = self.cores[n]
                parts.append(
                    f"{n}:{c.role.value} t{c.term} last={c.log.last_index} "
                    f"commit={c.log.committed} applied={c.log.applied}"
                )
            else:
                parts.append(f"{n}:down")
        return f"seed={self.seed} " + "; ".join(parts)
