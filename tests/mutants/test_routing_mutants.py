"""Each routing/rebalancing mutant (tests/mutants/routing.py) is caught by its unit check and by
the simulator on its shrunk failing seed; both pass on the unmodified code."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from exapyte.config import loads
from exapyte.control.rebalance import execute
from exapyte.data.router import Descriptor, Router
from exapyte.distribution import GroupSpec, Move, ShardedStrategy
from exapyte.protocol.types import Role
from exapyte.runtime.replica import Replica
from exapyte.storage import open_storage
from exapyte.wire import ClientReply, ClientRequest, GetOp, PutOp, ReplyCode
from tests.mutants.routing import ROUTING_MUTANTS
from tests.unit.test_rebalance import ModelCluster

SINGLE = """{
  "node_id": "n1",
  "cluster": {"nodes": [{"id": "n1", "port": 7001, "pub_port": 7101}]},
  "storage": {"backend": "memory"},
  "consensus": {"protocol": "raft"}
}"""


def check_stale_version_refused() -> None:
    """A replica at configuration V answers a request routed by V - 1 with ``stale_config`` and
    its descriptor, and serves one routed by V."""
    replies: list[ClientReply] = []
    replica = Replica(loads(SINGLE), open_storage("memory", None), random.Random(1),
                      reply=lambda _i, r: replies.append(r), send=lambda *_a: None)
    for _ in range(50):
        replica.tick()
        replica.flush()
        if replica.core.role is Role.LEADER:
            break
    replica.on_request(b"c", ClientRequest("c", 1, PutOp("k", b"v")))
    replica.flush()
    version = replica.sm.conf_version
    assert version >= 1
    replica.on_request(b"c", ClientRequest("c", 2, GetOp("k"), config_version=version - 1 or 99))
    replica.flush()
    stale = replies[-1]
    assert stale.code == ReplyCode.STALE_CONFIG, stale
    assert stale.descriptor is not None and stale.descriptor.version == version
    replica.on_request(b"c", ClientRequest("c", 3, GetOp("k"), config_version=version))
    replica.flush()
    assert replies[-1].code == ReplyCode.OK and replies[-1].value == b"v"


def check_router_never_regresses() -> None:
    """Descriptors arriving in every order leave the newest one cached."""
    rng = random.Random(7)
    for _ in range(50):
        versions = list(range(1, 8))
        rng.shuffle(versions)
        router = Router(ShardedStrategy(2, 8))
        for v in versions:
            router.update(Descriptor(GroupSpec("s0000", (f"n{v}",)), v))
        cached = router.descriptor("s0000")
        assert cached is not None and cached.version == 7, cached


def check_learner_caught_up_before_promotion() -> None:
    model = ModelCluster({"s0": ("n1", "n2", "n3")}, catch_up_polls=3)
    execute(model, [Move("s0", 0, add="n4", promote="n4", remove="n1")], sleep=lambda _s: None)
    assert model.violations == [], model.violations


CHECKS: dict[str, Callable[[], None]] = {
    "stale-config-accepted": check_stale_version_refused,
    "router-older-descriptor": check_router_never_regresses,
    "early-remove": check_learner_caught_up_before_promotion,
}


@pytest.mark.parametrize("name", sorted(ROUTING_MUTANTS))
def test_the_check_passes_unmodified_and_catches_the_mutant(name: str) -> None:
    check = CHECKS[name]
    check()
    with ROUTING_MUTANTS[name](), pytest.raises(AssertionError):
        check()
    check()  # the mutant is gone again


# Each routing mutant's shrunk failing seed in the simulator (python -m tests.mutants hunts
# them; exapyte.sim.runner.shrink shrank the first catching seed): (seed, ops, kept faults,
# the check that fails).
SHRUNK = {
    "stale-config-accepted": (0, 11, (13,), "routing"),
    "router-older-descriptor": (0, 39, (0, 4, 9, 10, 11, 12, 13, 14), "routing"),
    "early-remove": (0, 1, (13,), "rebalance"),
}


@pytest.mark.parametrize("name", sorted(SHRUNK))
def test_the_simulator_catches_the_mutant_on_its_shrunk_seed(name: str) -> None:
    from exapyte.sim import World, run_seed
    from tests.mutants.run import BY_NAME, mutant_spec

    seed, ops, keep, check = SHRUNK[name]
    spec = mutant_spec(BY_NAME[name], seed, ops=ops, keep_faults=keep)
    assert any(f.kind == "rebalance" for f in World(spec).faults)
    clean = run_seed(spec)
    assert clean.ok, f"{clean.check}: {clean.detail}"
    with BY_NAME[name].patches():
        caught = run_seed(spec)
    assert not caught.ok and caught.check == check, (caught.check, caught.detail)
