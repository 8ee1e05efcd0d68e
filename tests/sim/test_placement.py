"""Named placements, read level weights and partition shapes in a SimSpec and its replay command."""

from __future__ import annotations

import shlex
from collections import Counter

import pytest

from exapyte.sim import cli
from exapyte.sim.runner import run_seed
from exapyte.sim.workload import LEVELS
from exapyte.sim.world import SimSpec, World

PLACED = (("n1", "us-east"), ("n2", "us-east"), ("n3", "us-west"), ("n4", "us-west"), ("n5", "ap-northeast"))


def _replayed(spec: SimSpec) -> SimSpec:
    args = cli.build_parser().parse_args(shlex.split(spec.replay_command())[3:])
    return cli.spec_from_args(args)


def test_a_placement_names_the_nodes_and_their_regions() -> None:
    world = World(SimSpec(seed=1, nodes=5, placement=PLACED, ops=10, fault_s=1.0))
    assert world.node_ids == ("n1", "n2", "n3", "n4", "n5")
    assert world.node_region == dict(PLACED)
    assert [r.id for r in world.cfg.cluster.regions] == ["us-east", "us-west", "ap-northeast"]


def test_isolate_region_cuts_exactly_one_region_off() -> None:
    spec = SimSpec(seed=2, nodes=5, placement=PLACED, faults=("partition",), shapes=("isolate-region",),
                   fault_s=6.0, ops=20)
    faults = World(spec).faults
    assert faults and {f.shape for f in faults} == {"isolate-region"}
    region = dict(PLACED)
    nodes = [n for n, _ in PLACED]
    for fault in faults:
        # every link between one region and the rest, both ways, and nothing else
        assert any(set(fault.links) == {(a, b) for a in nodes for b in nodes if (region[a] == r) != (region[b] == r)}
                   for r in set(region.values())), fault.links


def test_read_weights_steer_the_levels_asked_for() -> None:
    weights = (0.0, 0.0, 1.0, 0.0, 0.0)  # session only
    result = run_seed(SimSpec(seed=4, read_weights=weights, faults=(), ops=80, fault_s=2.0), keep_history=True)
    assert result.ok, result.detail
    levels = Counter(line.split('"consistency":"')[1].split('"')[0]
                     for line in result.history_jsonl.splitlines()
                     if '"type":"invoke"' in line and '"f":"read"' in line and '"consistency"' in line)
    assert set(levels) <= {"session", "strong"}  # final reads are strong
    assert levels["session"] > 10


def test_the_replay_command_carries_every_new_field() -> None:
    spec = SimSpec(seed=7, nodes=5, placement=PLACED, read_weights=(0.1, 0.1, 0.6, 0.1, 0.1),
                   shapes=("isolate-node", "ring"), quiet_s=4.0, faults=("partition", "crash"))
    assert _replayed(spec) == spec
    plain = SimSpec(seed=7)
    assert "--placement" not in plain.replay_command() and "--read-weights" not in plain.replay_command()
    assert _replayed(plain) == plain


@pytest.mark.parametrize(("kw", "needle"), [
    ({"nodes": 3, "placement": PLACED}, "placement has 5 nodes"),
    ({"read_weights": (1.0,)}, f"needs {len(LEVELS)} weights"),
    ({"read_weights": (0.0,) * 5}, "positive sum"),
    ({"shapes": ("square",)}, "unknown partition shape"),
    ({"shapes": ("isolate-region",)}, "at least 2 regions"),
])
def test_bad_specs_are_refused(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        SimSpec(seed=0, **kw)  # type: ignore[arg-type]
