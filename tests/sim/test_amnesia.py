"""A replica re-created empty on a node some configuration still lists as a voter must not vote.

The group table keeps the promises of a replica it drops (``ConsensusCore.tombstone``) and a
replica that holds nothing is in standby (no vote, promise or read confirmation until a leader
gives it a log). ``tests/mutants/amnesia.py`` takes the move's own safeguard away (the source
drops its replica before the members applied its removal): with the two rules the runs stay
safe; without them the simulator's judge finds two leaders of one term or a leader without a
committed entry.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from exapyte.distribution.base import GroupSpec
from exapyte.protocol.raft.core import decode_hard_state
from exapyte.protocol.raft.messages import Vote, VoteResp
from exapyte.runtime.groups import GroupTable
from exapyte.sim.runner import run_seed
from exapyte.sim.storage import SimStorage
from exapyte.sim.world import SimSpec, sim_config
from exapyte.wire import ClientRequest, DropGroupOp
from tests.mutants.amnesia import SIM_FAULTS, SIM_SHARDS, amnesia, drop_unsettled

GROUP = "s0"


def table_of(node: str, tombstones: Any = None) -> tuple[GroupTable, list[Any], dict[str, Any]]:
    cfg = sim_config(3, shards=2).with_node(node)
    sent: list[Any] = []
    stores: dict[str, SimStorage] = {}
    removed: dict[str, Any] = {}

    def open_storage(group: str) -> SimStorage:
        return stores.setdefault(group, SimStorage())

    def remove_storage(group: str, tombstone: Any) -> None:
        stores.pop(group, None)
        removed[group] = tombstone

    table = GroupTable(
        cfg, open_storage=open_storage, rng_for=lambda g: random.Random(0),
        reply=lambda *a: None, send=lambda to, group, msg: sent.append((to, group, msg)),
        remove_storage=remove_storage, tombstones=tombstones,
    )
    table.set_placement([GroupSpec(GROUP, ("n1", "n2", "n3"), ())])
    return table, sent, removed


def drop(table: GroupTable) -> None:
    table.on_request(None, ClientRequest("admin", 1, DropGroupOp(9, ("n1", "n2", "n4")),
                                         group=GROUP))


def test_a_dropped_replica_leaves_a_tombstone_and_its_successor_refuses_to_vote() -> None:
    table, sent, removed = table_of("n3")
    replica = table.create(GroupSpec(GROUP, ("n1", "n2", "n3"), ()))
    replica.core.step(Vote("n2", "n3", 7, last_index=3, last_term=1, transfer=True))
    table.flush()
    assert replica.core.vote == "n2"
    drop(table)
    assert GROUP not in table.replicas
    stored = decode_hard_state(removed[GROUP].record)
    assert (stored.term, stored.vote) == (7, "n2")
    # Long after the drop, a member that never applied the removal asks for a vote of term 7.
    for _ in range(table.down_after_ticks + 1):
        table.tick()
    sent.clear()
    table.on_peer(GROUP, Vote("n1", "n3", 7, last_index=3, last_term=1, transfer=True))
    table.flush()
    again = table.replicas[GROUP]
    assert again.core.standby and again.core.term == 7 and again.core.vote == "n2"
    votes = [m for _, _, m in sent if isinstance(m, VoteResp)]
    assert votes and all(v.reject for v in votes)
    assert table.counters["groups_from_tombstone"] == 1


def test_a_restarted_node_recreates_a_dropped_group_from_its_durable_tombstone() -> None:
    table, _, removed = table_of("n3")
    replica = table.create(GroupSpec(GROUP, ("n1", "n2", "n3"), ()))
    replica.core.step(Vote("n2", "n3", 4, last_index=3, last_term=1, transfer=True))
    table.flush()
    drop(table)
    # A new process: the table starts from the tombstones the node kept (dropped.json).
    fresh, sent, _ = table_of("n3", tombstones=removed)
    fresh.on_peer(GROUP, Vote("n1", "n3", 4, last_index=3, last_term=1))
    fresh.flush()
    again = fresh.replicas[GROUP]
    assert again.core.term == 4 and again.core.vote == "n2"
    assert all(m.reject for _, _, m in sent if isinstance(m, VoteResp))


def amnesia_spec(seed: int, protocol: str = "raft") -> SimSpec:
    return SimSpec(seed=seed, protocol=protocol, faults=SIM_FAULTS, shards=SIM_SHARDS,
                   keys=2 * SIM_SHARDS)


# The first seeds that catch the amnesia mutant (hunted with tests/mutants: see
# docs/simulator.md, "Amnesia").
CAUGHT = {"raft": 17, "multipaxos": 26}


@pytest.mark.parametrize("protocol", sorted(CAUGHT))
def test_early_drops_are_safe_with_standby_and_tombstones_and_break_without(protocol: str) -> None:
    spec = amnesia_spec(CAUGHT[protocol], protocol)
    with amnesia():
        broken = run_seed(spec)
    assert not broken.ok and broken.check.startswith("invariant:"), broken.check
    with drop_unsettled():
        fixed = run_seed(spec)
    assert fixed.ok, (fixed.check, fixed.detail)
