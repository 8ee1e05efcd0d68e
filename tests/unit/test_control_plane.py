"""The control-plane state machine and its feed."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exapyte.control.plane import (
    ControlPlane,
    LeaderHint,
    LinkSet,
    NodeAdd,
    NodeRemove,
    PlaneError,
    RegionSet,
    ReplicaAddLearner,
    ReplicaPromote,
    ReplicaRemove,
    ShardCreate,
    ShardDrop,
    encode_command,
)
from exapyte.control.pubsub import FeedState, Mirror, Publication, Verdict
from exapyte.distribution import GroupSpec, ShardedStrategy, plan_moves


def _booted() -> ControlPlane:
    p = ControlPlane()
    cmds = [RegionSet("east"), RegionSet("west"), LinkSet("east", "west", 35)]
    cmds += [NodeAdd(f"n{i}", "east" if i % 2 else "west", f"tcp://h:{7700 + i}") for i in range(1, 6)]
    cmds.append(ShardCreate(GroupSpec("s0000", ("n1", "n2", "n3"))))
    for i, c in enumerate(cmds, 1):
        assert p.apply(i, c).ok, c  # type: ignore[union-attr]
    return p


def test_every_change_adds_one_to_the_version_and_node_changes_to_the_epoch() -> None:
    p = _booted()
    assert (p.version, p.epoch, p.applied_index) == (9, 5, 9)
    assert p.apply(10, NodeRemove("n5")).ok  # type: ignore[union-attr]
    assert (p.version, p.epoch) == (10, 6)


def test_a_bad_command_is_a_failed_outcome_that_changes_nothing() -> None:
    p = _booted()
    before = p.snapshot()
    bad = [
        NodeAdd("n1", "east", "tcp://h:1"),  # exists
        NodeAdd("n9", "north", "tcp://h:1"),  # unknown region
        NodeAdd("n9", "east", "http://x"),
        NodeAdd("a/b", "east", "tcp://h:1"),
        NodeRemove("n1"),  # still holds a replica
        NodeRemove("n42"),
        LinkSet("east", "east", 1),
        LinkSet("east", "north", 1),
        ShardCreate(GroupSpec("s0000", ("n1",))),  # exists
        ShardCreate(GroupSpec("s0001", ())),
        ShardCreate(GroupSpec("s0001", ("n1", "n1"))),
        ShardCreate(GroupSpec("s0001", ("n77",))),
        ReplicaAddLearner("s0000", "n4", expect_version=7),  # stale version
        ReplicaAddLearner("s0000", "n1", expect_version=1),  # already a member
        ReplicaAddLearner("s9999", "n4", expect_version=1),
        ReplicaPromote("s0000", "n4", expect_version=1),  # not a learner
        ReplicaRemove("s0000", "n5", expect_version=1),  # not a member
        ShardDrop("s0000", expect_version=2),
        LeaderHint("s0000", 1, "n5", 1),  # not a voter
        LeaderHint("s0000", 2, "n1", 1),  # another configuration version
    ]
    index = p.applied_index
    for c in bad:
        index += 1
        outcome = p.apply(index, c)
        assert outcome is not None and not outcome.ok and outcome.error, c
        assert outcome.version == 9
    index += 1
    junk = p.apply(index, b"\x93garbage")
    assert junk is not None and not junk.ok
    assert p.commands_refused == len(bad) + 1
    after = ControlPlane()
    after.restore(p.snapshot())
    before_plane = ControlPlane()
    before_plane.restore(before)
    assert after.state().shards == before_plane.state().shards and after.version == 9
    assert after.applied_index == index  # the index moves past a failed command


def test_replayed_indexes_are_skipped_and_gaps_are_a_broken_invariant() -> None:
    p = _booted()
    assert p.apply(3, RegionSet("x")) is None and "x" not in p.regions
    with pytest.raises(AssertionError):
        p.apply(p.applied_index + 2, RegionSet("x"))


def test_a_move_adds_promotes_then_removes_and_each_step_bumps_the_shards_version() -> None:
    p = _booted()
    i = p.applied_index

    def run(cmd: object) -> bool:
        nonlocal i
        i += 1
        out = p.apply(i, cmd)  # type: ignore[arg-type]
        assert out is not None
        return out.ok

    assert run(LeaderHint("s0000", 1, "n3", 4))
    assert run(ReplicaAddLearner("s0000", "n4", expect_version=1))
    assert not run(ReplicaAddLearner("s0000", "n5", expect_version=2))  # one move at a time
    assert not run(ReplicaRemove("s0000", "n3", expect_version=2))  # the learner is not promoted
    assert run(ReplicaPromote("s0000", "n4", expect_version=2))
    assert run(ReplicaRemove("s0000", "n3", expect_version=3))
    e = p.shard("s0000")
    assert e is not None
    assert (e.group.voters, e.group.learners, e.conf_version, e.moving) == (("n1", "n2", "n4"), (), 4, None)
    assert e.leader is None  # the hinted leader left
    assert not run(LeaderHint("s0000", 4, "n1", 3))  # an older term than the last hint
    assert run(LeaderHint("s0000", 4, "n1", 5))
    assert run(NodeRemove("n3"))


def test_a_rebalance_plan_runs_as_commands() -> None:
    """plan_moves' output, as move-step commands, applies cleanly on the plane."""
    p = ControlPlane()
    cmds: list[object] = [RegionSet("r")] + [NodeAdd(f"n{i}", "r", f"tcp://h:{i}") for i in range(1, 7)]
    strategy = ShardedStrategy(8)
    old = strategy.place({f"n{i}": "r" for i in range(1, 6)}, 3)
    new = strategy.place({f"n{i}": "r" for i in range(1, 7)}, 3)
    cmds += [ShardCreate(g) for g in old.groups]
    for i, c in enumerate(cmds, 1):
        assert p.apply(i, c).ok  # type: ignore[arg-type, union-attr]
    i = len(cmds)
    for move in plan_moves(old, new):
        for step in move.steps():
            version = p.shards[step.shard].conf_version
            cls = {"add_learner": ReplicaAddLearner, "promote": ReplicaPromote, "remove": ReplicaRemove}[step.step.value]
            i += 1
            out = p.apply(i, cls(step.shard, step.node, expect_version=version))
            assert out is not None and out.ok, (step, out)
    for g in new.groups:
        assert set(p.shards[g.id].group.voters) == set(g.voters)


_cmds = st.one_of(
    st.builds(RegionSet, st.sampled_from(["a", "b", "c"]), st.sampled_from(["", "x"])),
    st.builds(LinkSet, st.sampled_from(["a", "b"]), st.sampled_from(["b", "c"]), st.sampled_from([1.0, 2.0])),
    st.builds(NodeAdd, st.sampled_from(["n1", "n2", "n3", "n4"]), st.sampled_from(["a", "b"]), st.just("tcp://h:1")),
    st.builds(NodeRemove, st.sampled_from(["n1", "n2", "n3", "n4"])),
    st.builds(ShardCreate, st.builds(GroupSpec, st.sampled_from(["s0", "s1"]), st.lists(st.sampled_from(["n1", "n2", "n3"]), max_size=3, unique=True).map(tuple))),
    st.builds(ReplicaAddLearner, st.sampled_from(["s0", "s1"]), st.sampled_from(["n1", "n2", "n3", "n4"]), st.integers(1, 4), st.booleans()),
    st.builds(ReplicaPromote, st.sampled_from(["s0", "s1"]), st.sampled_from(["n1", "n2", "n3", "n4"]), st.integers(1, 4)),
    st.builds(ReplicaRemove, st.sampled_from(["s0", "s1"]), st.sampled_from(["n1", "n2", "n3", "n4"]), st.integers(1, 4)),
    st.builds(LeaderHint, st.sampled_from(["s0", "s1"]), st.integers(1, 4), st.sampled_from(["n1", "n2", "n3", "n4"]), st.integers(0, 3)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_cmds, max_size=40), st.integers(0, 40))
def test_replicas_agree_and_snapshots_restore_exactly(cmds: list[object], cut: int) -> None:
    """Same commands in the same order: the same bytes on every replica; one that restores a
    snapshot taken mid-way and applies the rest ends identical; invariants hold throughout."""
    a, b = ControlPlane(), ControlPlane()
    for i, c in enumerate(cmds, 1):
        oa = a.apply(i, c)  # type: ignore[arg-type]
        ob = b.apply(i, encode_command(c))  # type: ignore[arg-type]
        assert oa == ob
        for e in a.shards.values():
            assert e.group.voters  # never a shard without voters
            assert all(n in a.nodes for n in e.group.members)  # never a replica on a removed node
            assert e.moving is None or e.moving in e.group.learners
    assert a.snapshot() == b.snapshot()
    c_plane = ControlPlane()
    for i, c in enumerate(cmds[:cut], 1):
        c_plane.apply(i, c)  # type: ignore[arg-type]
    d = ControlPlane()
    d.restore(c_plane.snapshot())
    for i, c in enumerate(cmds, 1):
        d.apply(i, c)  # type: ignore[arg-type]
    assert d.snapshot() == a.snapshot()


def test_restore_refuses_an_image_that_is_not_a_snapshot() -> None:
    assert not ControlPlane.snapshot_check(b"nope")
    with pytest.raises(PlaneError):
        ControlPlane().restore(b"nope")


# --- the feed ---------------------------------------------------------------------------------


def test_feed_applies_in_order_ignores_duplicates_and_older_and_detects_gaps() -> None:
    f = FeedState()
    assert [f.offer(v) for v in (1, 2, 2, 1, 4, 3, 5)] == [
        Verdict.APPLY, Verdict.APPLY, Verdict.DUPLICATE, Verdict.OLDER, Verdict.GAP,
        Verdict.WAITING, Verdict.WAITING,
    ]
    assert f.resync_needed and f.version == 2
    assert not f.install(1)
    assert f.install(5) and not f.resync_needed
    assert f.offer(6) is Verdict.APPLY
    assert not f.install(6)  # nothing to repair at the same version


def _by_version(plane: ControlPlane) -> object:
    return msgspec.structs.replace(plane.state(), applied_index=0)


def _published(cmds: list[object]) -> tuple[list[Publication], list[bytes]]:
    leader = ControlPlane()
    pubs, snaps = [], []
    for i, c in enumerate(cmds, 1):
        out = leader.apply(i, c)  # type: ignore[arg-type]
        if out is not None and out.ok:
            pubs.append(Publication(leader.version, leader.epoch, i, c))  # type: ignore[arg-type]
        snaps.append(leader.snapshot())
    return pubs, snaps


@settings(max_examples=100, deadline=None)
@given(st.lists(_cmds, min_size=1, max_size=30), st.integers(0, 2**32))
def test_a_mirror_fed_a_lossy_reordered_feed_converges_after_resync(cmds: list[object], seed: int) -> None:
    pubs, snaps = _published(cmds)
    rng = random.Random(seed)
    delivered = [p for p in pubs for _ in range(rng.choice([0, 1, 1, 2]))]  # loss, duplicates
    rng.shuffle(delivered)
    m = Mirror()
    for p in delivered:
        m.on_publication(p)
    final = snaps[-1]
    leader = ControlPlane()
    leader.restore(final)
    if m.feed.resync_needed or m.plane.version != leader.version:
        assert m.on_snapshot(final)
    # Equal at the version level (failed commands after the last change move only the index).
    assert _by_version(m.plane) == _by_version(leader)
    assert not m.on_snapshot(b"junk")


def test_a_mirror_in_order_needs_no_resync() -> None:
    cmds = [RegionSet("a"), NodeAdd("n1", "a", "tcp://h:1"), ShardCreate(GroupSpec("s0", ("n1",)))]
    pubs, snaps = _published(cmds)
    m = Mirror()
    assert [m.on_publication(p) for p in pubs] == [Verdict.APPLY] * 3
    assert m.plane.snapshot() == snaps[-1] and not m.feed.resync_needed


def test_a_diverged_mirror_asks_for_a_resync() -> None:
    cmds = [RegionSet("a"), NodeAdd("n1", "a", "tcp://h:1")]
    pubs, snaps = _published(cmds)
    m = Mirror()
    assert m.on_publication(pubs[0]) is Verdict.APPLY
    forged = Publication(2, 1, 2, NodeAdd("n1", "nowhere", "tcp://h:1"))  # cannot apply here
    assert m.on_publication(forged) is Verdict.GAP and m.feed.resync_needed
    assert m.on_snapshot(snaps[-1]) and m.plane.snapshot() == snaps[-1]
