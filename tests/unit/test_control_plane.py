"""The control-plane state machine and its feed."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exapyte.control.plane import (
    ControlPlane,
    LinkSet,
    NodeAdd,
    NodeRemove,
    PlaneError,
    RegionSet,
    ShardCreate,
    ShardDrop,
    ShardReport,
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
        ShardCreate(GroupSpec("s0001", ("n1",)), conf_version=-1),
        ShardReport("s9999", 4, ("n1", "n2", "n3")),  # no such shard
        ShardReport("s0000", 0, ("n1", "n2", "n4")),  # version 0 is known with other members
        ShardReport("s0000", 0, ("n1", "n2", "n3")),  # changes nothing
        ShardReport("s0000", 5, ()),  # no voter
        ShardReport("s0000", 5, ("n1", "n1")),
        ShardReport("s0000", 5, ("n1", "n77")),  # unknown node
        ShardReport("s0000", 5, ("n1", "n2"), leader="n5", term=1),  # the leader is not a voter
        ShardDrop("s0000", expect_version=2),
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


def test_reports_move_the_shard_map_forward_only() -> None:
    p = _booted()
    i = p.applied_index

    def run(cmd: object) -> bool:
        nonlocal i
        i += 1
        out = p.apply(i, cmd)  # type: ignore[arg-type]
        assert out is not None
        return out.ok

    assert run(ShardReport("s0000", 0, ("n1", "n2", "n3"), leader="n3", term=4))  # a leader hint
    assert not run(ShardReport("s0000", 0, ("n1", "n2", "n3"), leader="n2", term=3))  # older term
    assert not run(ShardReport("s0000", 0, ("n1", "n2", "n3"), leader="n2", term=4))  # one per term
    assert run(ShardReport("s0000", 12, ("n1", "n2", "n3"), ("n4",), leader="n3", term=4))  # learner
    assert run(ShardReport("s0000", 15, ("n1", "n2", "n3", "n4"), leader="n3", term=4))  # promoted
    assert not run(ShardReport("s0000", 12, ("n1", "n2", "n3"), ("n4",), leader="n3", term=4))  # late
    assert run(ShardReport("s0000", 19, ("n1", "n2", "n4")))  # removed n3, the leader
    e = p.shard("s0000")
    assert e is not None
    assert (e.group.voters, e.group.learners, e.conf_version) == (("n1", "n2", "n4"), (), 19)
    assert e.leader is None and e.leader_term == 4  # the hint left with the version it was seen in
    assert not run(ShardReport("s0000", 19, ("n1", "n2", "n4"), leader="n1", term=3))  # older term
    assert run(ShardReport("s0000", 19, ("n1", "n2", "n4"), leader="n1", term=5))
    assert run(NodeRemove("n3"))
    assert not run(ShardReport("s0000", 25, ("n1", "n3")))  # n3 left the topology


def test_a_rebalance_plan_runs_as_commands() -> None:
    """plan_moves' output, step by step as the shard leaders report it, applies cleanly."""
    p = ControlPlane()
    cmds: list[object] = [RegionSet("r")] + [NodeAdd(f"n{i}", "r", f"tcp://h:{i}") for i in range(1, 7)]
    strategy = ShardedStrategy(8)
    old = strategy.place({f"n{i}": "r" for i in range(1, 6)}, 3)
    new = strategy.place({f"n{i}": "r" for i in range(1, 7)}, 3)
    cmds += [ShardCreate(g) for g in old.groups]
    for i, c in enumerate(cmds, 1):
        assert p.apply(i, c).ok  # type: ignore[arg-type, union-attr]
    i = len(cmds)
    version = 0
    for move in plan_moves(old, new):
        for step in move.steps():
            e = p.shards[step.shard]
            voters, learners = list(e.group.voters), list(e.group.learners)
            if step.step.value == "add_learner":
                learners.append(step.node)
            elif step.step.value == "promote":
                learners.remove(step.node)
                voters.append(step.node)
            else:
                voters = [n for n in voters if n != step.node]
            i += 1
            version += 1  # each step's membership change is a later entry of the shard's log
            out = p.apply(i, ShardReport(step.shard, version, tuple(voters), tuple(learners)))
            assert out is not None and out.ok, (step, out)
    for g in new.groups:
        assert set(p.shards[g.id].group.voters) == set(g.voters)


_cmds = st.one_of(
    st.builds(RegionSet, st.sampled_from(["a", "b", "c"]), st.sampled_from(["", "x"])),
    st.builds(LinkSet, st.sampled_from(["a", "b"]), st.sampled_from(["b", "c"]), st.sampled_from([1.0, 2.0])),
    st.builds(NodeAdd, st.sampled_from(["n1", "n2", "n3", "n4"]), st.sampled_from(["a", "b"]), st.just("tcp://h:1")),
    st.builds(NodeRemove, st.sampled_from(["n1", "n2", "n3", "n4"])),
    st.builds(ShardCreate, st.builds(GroupSpec, st.sampled_from(["s0", "s1"]), st.lists(st.sampled_from(["n1", "n2", "n3"]), max_size=3, unique=True).map(tuple))),
    st.builds(ShardReport, st.sampled_from(["s0", "s1"]), st.integers(0, 4),
              st.lists(st.sampled_from(["n1", "n2", "n3", "n4"]), max_size=3, unique=True).map(tuple),
              st.lists(st.sampled_from(["n3", "n4"]), max_size=1).map(tuple),
              st.sampled_from([None, "n1", "n2"]), st.integers(0, 3)),
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
            assert e.leader is None or e.leader in e.group.voters
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
