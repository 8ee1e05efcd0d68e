"""The protocol registry: one switch (``consensus.protocol``) names a core everywhere."""

from __future__ import annotations

import json
import random

import pytest

from exapyte.config import loads
from exapyte.errors import ConfigError
from exapyte.protocol.core import ConsensusCore
from exapyte.protocol.registry import PEER_MESSAGE_TYPES, PROTOCOLS, make_core, names
from exapyte.protocol.types import ConfState, CoreSpec, PersistedState
from exapyte.runtime.replica import core_spec
from exapyte.sim.cli import build_parser

_SCHEMA_PROTOCOLS = ("raft", "multipaxos", "zab")


def _config(protocol: str) -> str:
    return json.dumps({
        "cluster": {"nodes": [{"id": "n1", "port": 7000}, {"id": "n2", "port": 7001},
                              {"id": "n3", "port": 7002}]},
        "consensus": {"protocol": protocol},
    })


def test_every_registered_protocol_builds_a_core_that_boots_and_reports() -> None:
    assert "raft" in names()
    for name in names():
        core = make_core(
            CoreSpec(name, "n1"), PersistedState(conf=ConfState(voters=("n1", "n2", "n3"))),
            random.Random(1),
        )
        assert isinstance(core, ConsensusCore)
        view = core.observe()
        assert view.node_id == "n1" and not view.is_leader
        assert core.status().node_id == "n1"
        assert set(PROTOCOLS[name].messages) <= set(PEER_MESSAGE_TYPES)


def test_an_unknown_protocol_is_refused_with_what_exists() -> None:
    with pytest.raises(ConfigError, match="'viewstamped' is not available.*raft"):
        make_core(CoreSpec("viewstamped", "n1"), None, random.Random(1))


@pytest.mark.parametrize("protocol", _SCHEMA_PROTOCOLS)
def test_the_config_accepts_exactly_the_protocols_this_build_runs(protocol: str) -> None:
    if protocol in names():
        cfg = loads(_config(protocol), node_id="n1")
        assert core_spec(cfg).protocol == protocol
    else:
        with pytest.raises(ConfigError, match=f"'{protocol}' is not available.*raft"):
            loads(_config(protocol), node_id="n1")


def test_the_simulator_offers_the_registered_protocols() -> None:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "protocol")
    assert tuple(action.choices) == names()


def test_core_spec_carries_bugs_only_when_unsafe_is_enabled() -> None:
    raw = json.loads(_config("raft"))
    raw["unsafe"] = {"enabled": True, "bugs": ["no-term-check"]}
    assert core_spec(loads(json.dumps(raw), node_id="n1")).bugs == ("no-term-check",)
    assert core_spec(loads(_config("raft"), node_id="n1")).bugs == ()
