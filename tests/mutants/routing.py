"""Mutants of the routing and rebalancing rules, each with the checks that catch it.

Nothing here is product code. Each mutant breaks one rule while its ``with`` block is active;
``tests/mutants/test_routing_mutants.py`` runs each unit check without the mutant (it passes)
and with it (it must fail), and replays each one's shrunk failing seed in the simulator.
:data:`ROUTING_SIM_MUTANTS` are the same mutants as the simulator hunts them (``make mutants``):
sharded runs with the ``rebalance`` fault, caught by the ``routing`` check (a request served at
another configuration version than it was routed by; a request routed by an older descriptor
than the client was given) and the ``rebalance`` check (a learner promoted before it caught up).

========================  ========================================================================
mutant                    what is broken
========================  ========================================================================
stale-config-accepted     a replica serves a request routed by another configuration version
                          (the ``stale-config`` known bug switched on)
router-older-descriptor   the routing cache replaces a descriptor by an older one
early-remove              a move promotes its learner and removes the source without waiting
                          for the learner to catch up
========================  ========================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from exapyte.control import rebalance
from exapyte.data.router import Router
from exapyte.runtime.replica import Replica
from tests.mutants.mutants import Mutant, patched


@contextlib.contextmanager
def stale_config_accepted() -> Iterator[None]:
    original = Replica.__dict__["__init__"]

    def init(self: Replica, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        self.bugs = self.bugs | {"stale-config"}

    with patched(Replica, "__init__", init):
        yield


@contextlib.contextmanager
def router_older_descriptor() -> Iterator[None]:
    def update(self: Router, descriptor: object) -> bool:
        self._cache[descriptor.shard] = descriptor  # type: ignore[attr-defined]  # Broken
        return True

    with patched(Router, "update", update):
        yield


@contextlib.contextmanager
def early_remove() -> Iterator[None]:
    def always(_applied: object, _goal: object) -> bool:
        return True  # Broken: the learner counts as caught up at once, and is promoted

    # The predicate both the blocking rebalancer and the simulator's rebalance fault use.
    with patched(rebalance, "caught_up", always):
        yield


ROUTING_MUTANTS = {
    "stale-config-accepted": stale_config_accepted,
    "router-older-descriptor": router_older_descriptor,
    "early-remove": early_remove,
}


# Partitions and crashes make replicas lag behind their group's configuration, so that stale
# descriptors and redirects happen around every move.
SIM_FAULTS = ("partition", "crash", "loss", "rebalance")
SIM_SHARDS = 4

ROUTING_SIM_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "stale-config-accepted",
        "a replica serves requests routed by another configuration version",
        stale_config_accepted,
        faults=SIM_FAULTS,
        shards=SIM_SHARDS,
    ),
    Mutant(
        "router-older-descriptor",
        "the routing cache replaces a descriptor by an older one",
        router_older_descriptor,
        faults=SIM_FAULTS,
        shards=SIM_SHARDS,
    ),
    Mutant(
        "early-remove",
        "a learner is promoted (and the source removed) before it caught up",
        early_remove,
        faults=SIM_FAULTS,
        shards=SIM_SHARDS,
    ),
)
