"""The control-plane group: its state machine (the plane in one KV record) and a node's agent
(founding, reports, feed, resync), without sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exapyte.control.group import (
    ControlAgent,
    ControlStateMachine,
    bootstrap_commands,
    control_spec,
    decode_outcomes,
)
from exapyte.control.plane import (
    ControlPlane,
    NodeAdd,
    RegionSet,
    ShardCreate,
    ShardReport,
    encode_command,
)
from exapyte.distribution import GroupSpec
from exapyte.kv import Command
from exapyte.kv import encode_command as kv_encode
from exapyte.protocol.types import Entry
from exapyte.storage import open_storage
from exapyte.wire import (
    PLANE_KEY,
    ControlOp,
    FeedBeat,
    FeedDelta,
    FeedResync,
    FeedSnapshot,
    PutOp,
    ReplyCode,
)


@pytest.fixture
def make_config(write_config):  # type: ignore[no-untyped-def]
    from exapyte import config as config_mod

    def make(node_ids: list[str], node_id: str = "n1", **sections: Any):  # type: ignore[no-untyped-def]
        return config_mod.load(write_config(node_ids, **sections), node_id)

    return make


def _entry(index: int, op: Any, client: str = "admin", seq: int | None = None) -> Entry:
    return Entry(1, index, data=kv_encode(Command(client, index if seq is None else seq, op)))


def _op(*cmds: Any) -> ControlOp:
    return ControlOp(tuple(encode_command(c) for c in cmds))


FOUNDING = [RegionSet("r"), NodeAdd("n1", "r", "tcp://h:1"), NodeAdd("n2", "r", "tcp://h:2"),
            ShardCreate(GroupSpec("s0", ("n1", "n2")))]


def test_commands_apply_in_order_and_each_outcome_is_returned(tmp_path: Path) -> None:
    sm = ControlStateMachine(open_storage("sqlite", tmp_path / "c.db"))
    [(_, out)] = sm.apply([_entry(1, _op(*FOUNDING, NodeAdd("n1", "r", "tcp://h:1")))])
    assert out is not None and out.code == ReplyCode.OK and out.version == 4
    assert [ok for ok, _, _ in decode_outcomes(out.value)] == [True, True, True, True, False]
    assert [p.version for p in sm.take_published()] == [1, 2, 3, 4]  # one per change
    assert sm.take_published() == []
    assert sm.plane.shards["s0"].group.voters == ("n1", "n2")
    # a put, delete or cas is not a control-plane command: refused, nothing changes
    [(_, out)] = sm.apply([_entry(2, PutOp(PLANE_KEY, b"junk"))])
    assert out is not None and out.code == ReplyCode.BAD_REQUEST and sm.plane.version == 4
    assert sm.get(PLANE_KEY) is not None and sm.get(PLANE_KEY).value == sm.plane.snapshot()


def test_the_plane_survives_a_restart_and_travels_in_snapshots(tmp_path: Path) -> None:
    store = open_storage("sqlite", tmp_path / "c.db")
    sm = ControlStateMachine(store, write_behind=True)
    sm.apply([_entry(1, _op(*FOUNDING)), _entry(2, _op(ShardReport("s0", 7, ("n1", "n2"), (), "n2", 3)))])
    sm.flush()
    image = sm.snapshot()
    store.close()
    again = ControlStateMachine(open_storage("sqlite", tmp_path / "c.db"))
    assert again.plane.snapshot() == sm.plane.snapshot() and again.plane.shards["s0"].leader == "n2"
    other = ControlStateMachine(open_storage("memory", None))
    other.restore(image)
    assert other.plane.snapshot() == sm.plane.snapshot() and other.applied_index == 2


def test_a_retry_of_an_applied_op_answers_again_and_changes_nothing(tmp_path: Path) -> None:
    sm = ControlStateMachine(open_storage("memory", None))
    first = sm.apply([_entry(1, _op(*FOUNDING), seq=5)])[0][1]
    again = sm.apply([_entry(2, _op(*FOUNDING), seq=5)])[0][1]
    assert first == again and sm.plane.version == 4


def test_the_founding_batch_covers_the_config(make_config) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config(["n1", "n2", "n3", "n4"], distribution={"strategy": "sharded", "shards": 4})
    from exapyte import distribution

    _, placement = distribution.from_config(cfg)
    plane = ControlPlane()
    for i, c in enumerate(bootstrap_commands(cfg, placement.groups), 1):
        assert plane.apply(i, c).ok, c  # type: ignore[union-attr]
    assert sorted(plane.nodes) == ["n1", "n2", "n3", "n4"] and len(plane.shards) == 4
    spec = control_spec(cfg)
    assert spec is not None and spec.voters == ("n1", "n2", "n3")
    assert control_spec(make_config(["n1", "n2", "n3"])) is None  # centralized: no control group


class _Agent:
    def __init__(self, make_config: Any) -> None:
        cfg = make_config(["n1", "n2", "n3"], node_id="n3", distribution={"strategy": "sharded", "shards": 2})
        self.sent: list[tuple[str, Any]] = []
        self.published: list[Any] = []
        self.maps: list[int] = []
        self.agent = ControlAgent(
            cfg, replicas=dict, send=lambda to, m: self.sent.append((to, m)),
            publish=self.published.append, on_map=lambda p: self.maps.append(p.version),
        )


@pytest.fixture
def agent(make_config):  # type: ignore[no-untyped-def]
    return _Agent(make_config)


def _deltas() -> list[FeedDelta]:
    plane = ControlPlane()
    out = []
    for i, c in enumerate(FOUNDING, 1):
        outcome = plane.apply(i, c)
        assert outcome is not None and outcome.ok
        out.append(FeedDelta("n1", 2, outcome.version, plane.epoch, i, encode_command(c)))
    return out


def test_a_subscriber_applies_deltas_in_order_and_resyncs_after_a_gap(agent: _Agent) -> None:
    a = agent.agent
    d = _deltas()
    a.on_feed(d[0])
    a.on_feed(d[1])
    assert a.mirror.plane.version == 2 and agent.maps == [1, 2] and a.leader == (2, "n1")
    a.ticks = 100
    a.on_feed(d[3])  # version 4 after 2: a gap
    assert agent.sent == [("n1", FeedResync("n3", "n1", 2))] and a.mirror.feed.resync_needed
    a.on_feed(d[2])  # deltas wait for the snapshot
    assert a.mirror.plane.version == 2
    full = ControlPlane()
    for i, c in enumerate(FOUNDING, 1):
        full.apply(i, c)
    a.on_feed(FeedSnapshot("n1", 2, full.version, full.snapshot()))
    assert a.mirror.plane.snapshot() == full.snapshot() and not a.mirror.feed.resync_needed
    assert agent.maps[-1] == 4


def test_a_beat_ahead_of_the_mirror_asks_for_a_resync_and_a_newer_publisher_wins(agent: _Agent) -> None:
    a = agent.agent
    a.ticks = 100
    a.on_feed(FeedBeat("n2", 5, 3, 1))
    assert agent.sent == [("n2", FeedResync("n3", "n2", 0))] and a.leader == (5, "n2")
    a.on_feed(FeedBeat("n1", 4, 3, 1))  # an older term does not take over
    assert a.leader == (5, "n2")
    a.on_feed(FeedBeat("n2", 5, 3, 1))  # asked lately: not again at once
    assert len(agent.sent) == 1


def test_reports_from_a_node_that_does_not_lead_the_control_group_are_not_proposed(agent: _Agent) -> None:
    from exapyte.wire import ShardReports

    agent.agent.on_reports(ShardReports("n1", "n3", (encode_command(ShardReport("s0", 3, ("n1",), (), "n1", 1)),)))
    assert agent.agent.counters == {"reports_not_leader": 1}


class _LeadingReplica:
    """The part of a control replica ControlAgent.propose uses: it leads, and keeps proposals."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        from exapyte.protocol.types import Role

        self.core = SimpleNamespace(role=Role.LEADER)
        self.proposed: list[Any] = []

    def propose_internal(self, command: Any) -> bool:
        self.proposed.append(command)
        return True


def test_a_proposal_wakes_the_control_group_and_sequences_follow_the_injected_clock(make_config) -> None:  # type: ignore[no-untyped-def]
    # A quiesced control group is neither ticked nor flushed: a proposal the agent makes (a
    # report from a peer) would wait for other input unless the agent wakes it.
    from exapyte.wire import CONTROL_GROUP

    cfg = make_config(["n1", "n2", "n3"], node_id="n1", distribution={"strategy": "sharded", "shards": 2})
    replica = _LeadingReplica()
    woken: list[str] = []
    now = [5_000]
    agent = ControlAgent(
        cfg, replicas=lambda: {CONTROL_GROUP: replica}, send=lambda to, m: None,  # type: ignore[dict-item]
        publish=lambda m: None, now_us=lambda: now[0], wake=woken.append,
    )
    assert agent.propose([ShardReport("s0", 3, ("n1",), (), "n1", 1)])
    assert woken == [CONTROL_GROUP]
    assert agent.propose([ShardReport("s0", 4, ("n1",), (), "n1", 1)])  # same instant: seq + 1
    now[0] = 9_000
    assert agent.propose([ShardReport("s0", 5, ("n1",), (), "n1", 1)])
    assert [c.seq for c in replica.proposed] == [5_001, 5_002, 9_000]


class _ShardLeader:
    """A shard replica this node leads, as ControlAgent._report reads it; counts the statuses
    it builds (the expensive look at a shard)."""

    def __init__(self, spec: GroupSpec, term: int) -> None:
        from types import SimpleNamespace

        from exapyte.protocol.types import Role

        self.statuses = 0
        self.group = spec
        self.sm = SimpleNamespace(conf_version=0, conf=SimpleNamespace(version=0))

        def status() -> Any:
            self.statuses += 1
            return SimpleNamespace(term=self.core.term)

        self.core = SimpleNamespace(role=Role.LEADER, term=term, status=status)


def test_a_shard_the_plane_already_describes_is_looked_at_again_only_once_it_got_input(
    make_config,  # type: ignore[no-untyped-def]
) -> None:
    # A node hosting a thousand quiet shards must not look at each of them at every report:
    # only a group that got input (the group table's take_touched) can have changed.
    cfg = make_config(["n1", "n2", "n3"], node_id="n1", distribution={"strategy": "sharded", "shards": 2})
    shard = _ShardLeader(GroupSpec("s0", ("n1", "n2")), term=3)
    sent: list[Any] = []
    touched: set[str] = set()

    def take() -> set[str]:
        out = set(touched)
        touched.clear()
        return out

    agent = ControlAgent(cfg, replicas=lambda: {"s0": shard}, send=lambda to, m: sent.append((to, m)),
                         publish=lambda m: None, on_map=lambda p: None, touched=take)
    plane = ControlPlane()
    for i, c in enumerate([*FOUNDING, ShardReport("s0", 0, ("n1", "n2"), (), "n1", 3)], 1):
        outcome = plane.apply(i, c)
        assert outcome is not None and outcome.ok
    agent.ticks = 100
    agent.on_feed(FeedSnapshot("n2", 2, plane.version, plane.snapshot()))
    agent._report()
    assert shard.statuses == 1 and sent == []  # a new plane version: every group; it agrees
    for _ in range(3):
        agent._report()
    assert shard.statuses == 1  # no input: not looked at
    touched.add("s0")
    agent._report()
    assert shard.statuses == 2 and sent == []
    from types import SimpleNamespace

    # a membership change applied (the group got input): the plane's entry is behind, and the
    # control leader hears it; until the plane agrees the group is looked at at every report
    shard.sm = SimpleNamespace(conf_version=7, conf=SimpleNamespace(version=7, voters=("n1", "n2"), learners=()))
    touched.add("s0")
    agent._report()
    assert shard.statuses == 3
    [(to, reports)] = sent
    assert to == "n2" and len(reports.reports) == 1
    agent._report()
    assert shard.statuses == 4
