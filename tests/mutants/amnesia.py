"""Mutants of the rules that keep a re-created empty replica from voting (amnesia).

Nothing here is product code. A node's replica of a group can be created again empty while some
member still counts that node as a voter: the node dropped it (it left the group) and a stale
member's message arrives, or its storage was lost. Two rules keep such a replica harmless
(docs/simulator.md, "Amnesia"):

- the move waits until every member applied the removal before telling the source to drop its
  replica (:class:`exapyte.control.rebalance.Settle`), so no member still counts it;
- a replica that holds nothing is in *standby* (``ConsensusCore.standby``: no vote, promise or
  read confirmation until a leader gives it a log), and a re-created replica starts from the
  promises of the dropped one (``ConsensusCore.tombstone``, kept by the GroupTable).

==================  ==============================================================================
mutant              what is broken
==================  ==============================================================================
drop-unsettled      the source drops its replica as soon as its removal committed, while members
                    that have not applied it still count it as a voter; the standby rule and the
                    tombstone alone must keep the run safe: hunted as a *survivor* (it must pass)
amnesia             drop-unsettled, and no standby and no tombstone: the replica re-created by a
                    stale member's message votes and acknowledges with an empty log and term 0
==================  ==============================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from exapyte.protocol.multipaxos.core import MultiPaxos
from exapyte.protocol.raft.core import Raft
from exapyte.protocol.types import HardState
from exapyte.protocol.zab.core import Zab
from exapyte.sim.moves import Rebalancer
from tests.mutants.mutants import Mutant, patched

CORES = (Raft, MultiPaxos, Zab)


@contextlib.contextmanager
def drop_unsettled() -> Iterator[None]:
    def settle(self: Rebalancer, *_args: object) -> None:
        self._advance(True)  # Broken: drops at once, whoever has not applied the removal yet

    with patched(Rebalancer, "_settle", settle):
        yield


@contextlib.contextmanager
def amnesia() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        stack.enter_context(drop_unsettled())
        for core in CORES:
            # Broken: an empty replica votes, and a re-created one starts from nothing.
            stack.enter_context(patched(core, "standby", property(lambda self: False)))
            stack.enter_context(patched(core, "tombstone", lambda self: HardState()))
        yield


# Crashes and partitions keep members from applying a removal for a while; the rebalances come
# one after the other.
SIM_FAULTS = ("partition", "crash", "loss", "rebalance")
SIM_SHARDS = 4

AMNESIA_SIM_MUTANTS: tuple[Mutant, ...] = tuple(
    Mutant(
        f"amnesia{suffix}",
        "a dropped replica re-created empty by a stale message votes with no log (no standby, "
        "no tombstone, drop before the members applied the removal)",
        amnesia,
        faults=SIM_FAULTS,
        shards=SIM_SHARDS,
        protocol=protocol,
    )
    # ZAB's sharded runs with rebalances already fail liveness on some seeds without any
    # mutant (a replica that stops applying after a move), so a hunt there would not say which
    # rule it caught: ZAB's standby rule is checked by tests/protocol/test_standby.py.
    for protocol, suffix in (("raft", ""), ("multipaxos", "-paxos"))
)
