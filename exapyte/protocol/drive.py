"""``drive()``: the one function that applies a core's ``Ready`` to a host.

Theory of operation
-------------------
The ZeroMQ runtime and the deterministic simulator both run a consensus core the same way: feed
it input (``step``/``tick``/``propose``/``read``), then call :func:`drive` until it returns False.
Each call takes at most one :class:`~exapyte.protocol.types.Ready` and applies it in this order:

0. **send early** — ``host.send(early_messages)``: a leader's appends, heartbeats and snapshots,
   which may travel while the leader's own fsync runs (Raft thesis §10.2.1);

1. **persist** — ``host.persist(hard_state, entries, snapshot, sync)``, called when any of the
   three is present. The host writes, in this order: the snapshot (which replaces the *whole*
   stored log: every stored entry, before or after the snapshot index, is dropped), the entries
   (an entry whose index is already stored replaces it and every later entry), the hard state.
   When ``sync`` is true the call returns only after an fsync; when false (only the commit index
   moved) the write may stay buffered, because a lost commit index is recomputed.
2. **send** — ``host.send(messages)``. Only now: a vote, an append acknowledgement or a leader's
   append must never leave before the term, vote or entries it depends on are durable. Sending
   is best effort; the protocols tolerate loss, duplication and reordering.
3. **install / apply** — ``host.install_snapshot(snapshot)`` when the Ready carries one (the
   state machine is replaced by the image), then ``host.apply(committed_entries)`` in index
   order. Every kind of entry is passed: the state machine executes ``NORMAL`` entries and only
   records ``NOOP`` and ``CONF_CHANGE`` entries as applied (it may decode a conf change for its
   own routing). **The core applies conf changes itself**, in step 5, for exactly the entries
   the host was given here.
4. **answer reads** — ``host.answer_reads(read_states)``. Every ReadState in a Ready has an
   index at or below the applied index reached in step 3, so the host answers it at once. Then
   ``host.fail_reads(failed_reads)``: reads the core gave up on (leadership lost, or not
   confirmed in time); the host fails them so the client retries. Every ``read()`` ends in
   exactly one of the two.
5. **advance** — ``core.advance(ready)``: the core marks entries stable and applied, applies
   committed membership changes, and may produce a new Ready (for example the commit a
   single-node leader reaches once its own entry is durable). Hence: loop until False.

If any host call raises, :func:`drive` lets the exception propagate without advancing: the core
is then mid-Ready and must be discarded (the process restarts from what was persisted).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec

from exapyte.protocol.core import ConsensusCore
from exapyte.protocol.types import Entry, HardState, ReadState, Ready, Snapshot


class Host(Protocol):
    """What a core needs from the process that runs it. See the module docstring."""

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool,
    ) -> None: ...

    def send(self, messages: Sequence[msgspec.Struct]) -> None: ...

    def install_snapshot(self, snapshot: Snapshot) -> None: ...

    def apply(self, entries: Sequence[Entry]) -> None: ...

    def answer_reads(self, read_states: Sequence[ReadState]) -> None: ...

    def fail_reads(self, request_ids: Sequence[bytes]) -> None: ...


def drive(
    core: ConsensusCore, host: Host, before_sync: Callable[[], None] | None = None
) -> bool:
    """Apply at most one Ready of ``core`` to ``host``; returns whether there was one.

    ``before_sync`` runs just before a persist that fsyncs (a node sends the peer messages
    queued so far, so that they travel while the log syncs)."""
    if not core.has_ready():
        return False
    rd = core.ready()
    if rd.early_messages:
        host.send(rd.early_messages)
    if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
        if before_sync is not None and rd.must_sync:
            before_sync()
        host.persist(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
    _after_persist(core, host, rd)
    return True


def _after_persist(core: ConsensusCore, host: Host, rd: Ready) -> None:
    """Steps 2-5 of the Ready order (module docstring)."""
    if rd.messages:
        host.send(rd.messages)
    if rd.snapshot is not None:
        host.install_snapshot(rd.snapshot)
    if rd.committed_entries:
        host.apply(rd.committed_entries)
    if rd.read_states:
        host.answer_reads(rd.read_states)
    if rd.failed_reads:
        host.fail_reads(rd.failed_reads)
    core.advance(rd)


def drive_until_idle(core: ConsensusCore, host: Host, max_rounds: int = 1_000) -> int:
    """Call :func:`drive` until the core has nothing left; returns how many Readies were applied.

    ``max_rounds`` guards against a core that never settles (a bug): exceeding it raises
    ``RuntimeError``.
    """
    rounds = 0
    while drive(core, host):
        rounds += 1
        if rounds >= max_rounds:
            raise RuntimeError(f"core {core.node_id} still has a Ready after {rounds} rounds")
    return rounds


# A host-provided way to run independent persist calls (of different cores) to completion,
# possibly at the same time (a node runs them on threads, so that the fsyncs of its groups'
# separate logs overlap); it returns once every call has returned and re-raises the first error.
PersistRunner = Callable[[Sequence[Callable[[], None]]], None]


def drive_many(
    pairs: Sequence[tuple[ConsensusCore, Host]],
    run_persists: PersistRunner | None = None,
    before_sync: Callable[[], None] | None = None,
) -> int:
    """:func:`drive` for many cores at once (the replica groups of one node), until none has
    a Ready; returns the number of rounds.

    Each round takes one Ready from every core that has one and applies them in :func:`drive`'s
    order, step by step across the cores: every core's early messages, then every persist, then
    for each core its messages, snapshot, entries, reads and ``advance``. So each core sees
    exactly the order :func:`drive` gives it, and the persists of a round, which touch
    independent logs, may run together through ``run_persists`` (sequentially when it is None
    or when fewer than two are due). ``before_sync`` runs once before the persists of a round
    when any of them fsyncs, as in :func:`drive`. If a host call raises, the cores of that round are mid-Ready and must be
    discarded, as with :func:`drive`.
    """
    rounds = 0
    while True:
        batch = [(core, host, core.ready()) for core, host in pairs if core.has_ready()]
        if not batch:
            return rounds
        rounds += 1
        for _, host, rd in batch:
            if rd.early_messages:
                host.send(rd.early_messages)
        due = [
            (host, rd) for _, host, rd in batch
            if rd.hard_state is not None or rd.entries or rd.snapshot is not None
        ]
        persists = [
            functools.partial(host.persist, rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
            for host, rd in due
        ]
        if persists:
            if before_sync is not None and any(rd.must_sync for _, rd in due):
                before_sync()
            if run_persists is None or len(persists) < 2:
                for persist in persists:
                    persist()
            else:
                run_persists(persists)
        for core, host, rd in batch:
            _after_persist(core, host, rd)
