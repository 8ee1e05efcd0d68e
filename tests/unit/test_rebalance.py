"""The rebalancer against a model cluster: every move adds a learner, waits for it to catch up,
promotes it and removes the source (leadership first moved off it); the moves of ``node add``
follow the strategy's placement; a lagging learner is never promoted."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from exapyte.config import loads
from exapyte.control import rebalance
from exapyte.control.rebalance import GroupState, RebalanceError, execute, node_change
from exapyte.distribution import Move

NODES = ["n1", "n2", "n3", "n4"]


class ModelCluster:
    """Groups with members, a leader, a commit index and each member's applied index. A learner
    catches up ``catch_up_polls`` polls after it was added. Promoting a learner that has not
    applied the commit index its group had when it was added is recorded as a violation."""

    def __init__(self, groups: Mapping[str, tuple[str, ...]], catch_up_polls: int = 3) -> None:
        self.state = {
            g: {"voters": list(v), "learners": [], "leader": v[0], "commit": 100}
            for g, v in groups.items()
        }
        self.applied_at: dict[tuple[str, str], int] = {
            (g, n): 100 for g, v in groups.items() for n in v
        }
        self.catch_up_polls = catch_up_polls
        self._polls: dict[tuple[str, str], int] = {}
        self._goal: dict[tuple[str, str], int] = {}
        self.log: list[str] = []
        self.violations: list[str] = []
        self.dropped: list[tuple[str, str]] = []

    def groups(self) -> dict[str, GroupState]:
        return {
            g: GroupState(g, tuple(s["voters"]), tuple(s["learners"]), s["leader"], s["commit"])
            for g, s in self.state.items()
        }

    def applied(self, group: str, node: str) -> int | None:
        key = (group, node)
        if key not in self.applied_at:
            return None
        polls = self._polls.get(key, 0) + 1
        self._polls[key] = polls
        if polls >= self.catch_up_polls:
            self.applied_at[key] = self.state[group]["commit"]
        return self.applied_at[key]

    def change(self, group: str, change: str, node: str) -> None:
        s = self.state[group]
        s["commit"] += 1
        self.log.append(f"{group} {change} {node}")
        if change == "add-learner":
            s["learners"].append(node)
            self.applied_at[(group, node)] = 0
            self._goal[(group, node)] = s["commit"]
        elif change == "add-voter":
            if self.applied_at.get((group, node), 0) < self._goal.get((group, node), 0):
                self.violations.append(f"{group}: {node} promoted before it caught up")
            s["learners"].remove(node)
            s["voters"].append(node)
        elif change == "remove":
            assert s["leader"] != node, "the leader is removed only after a transfer"
            s["voters"].remove(node)
        self.applied_at[(group, node)] = self.applied_at.get((group, node), 0)

    def transfer(self, group: str, to: str) -> None:
        self.log.append(f"{group} transfer {to}")
        self.state[group]["leader"] = to

    def drop(self, group: str, node: str) -> None:
        self.dropped.append((group, node))


def _cfg(shards: int = 6) -> object:
    return loads(json.dumps({
        "cluster": {"nodes": [{"id": n, "port": 7000 + i} for i, n in enumerate(NODES)]},
        "consensus": {"initial_voters": NODES[:3]},
        "distribution": {"strategy": "sharded", "shards": shards, "replication_factor": 3},
    }), node_id="n1")


def _no_sleep(_s: float) -> None:
    return None


def test_a_move_adds_catches_up_promotes_then_removes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rebalance.time, "sleep", _no_sleep)
    model = ModelCluster({"s0": ("n1", "n2", "n3")})
    report = execute(model, [Move("s0", 0, add="n4", promote="n4", remove="n1")], sleep=_no_sleep)
    assert model.log == [
        "s0 add-learner n4", "s0 add-voter n4", "s0 transfer n2", "s0 remove n1",
    ]
    assert model.violations == [] and model.dropped == [("s0", "n1")]
    assert "s0/n4" in report.catch_up_s
    assert sorted(model.state["s0"]["voters"]) == ["n2", "n3", "n4"]


def test_node_add_follows_the_placement_and_every_group_keeps_three_voters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rebalance, "POLL_S", 0.0)
    cfg = _cfg()
    from exapyte import distribution

    _, placement = distribution.from_config(cfg)
    model = ModelCluster({g.id: g.voters for g in placement.groups}, catch_up_polls=2)
    out = node_change(cfg, "add", "n4", model, timeout_s=5)
    assert model.violations == []
    got = {g: sorted(s["voters"]) for g, s in model.state.items()}
    assert all(len(v) == 3 for v in got.values())
    assert sum("n4" in v for v in got.values()) == out["moves"] >= 1
    again = node_change(cfg, "add", "n4", model, timeout_s=5)  # nothing left to do
    assert again["moves"] == 0


def test_a_learner_that_never_catches_up_is_never_promoted() -> None:
    model = ModelCluster({"s0": ("n1", "n2", "n3")}, catch_up_polls=10**9)
    clock = iter(range(10**6))
    with pytest.raises(RebalanceError, match="did not catch up"):
        execute(model, [Move("s0", 0, add="n4", promote="n4", remove="n1")], timeout_s=5,
                sleep=_no_sleep, clock=lambda: float(next(clock)))
    assert model.log == ["s0 add-learner n4"]  # stopped before promoting, nothing removed


def test_node_change_refuses_an_unknown_node() -> None:
    model = ModelCluster({"s0": ("n1", "n2", "n3")})
    with pytest.raises(RebalanceError, match="not in the cluster file"):
        node_change(_cfg(), "add", "n9", model)
