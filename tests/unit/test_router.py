"""The routing cache: only newer descriptors replace older ones; stale clients converge."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exapyte.data.router import Descriptor, Redirect, Router
from exapyte.distribution import CentralizedStrategy, GroupSpec, ShardedStrategy


def _d(version: int, voters: tuple[str, ...] = ("n1", "n2", "n3"), leader: str | None = None, shard: str = "default") -> Descriptor:
    return Descriptor(GroupSpec(shard, voters), version, leader, tuple((n, f"tcp://h:{i}") for i, n in enumerate(voters)))


def test_update_takes_only_a_strictly_newer_version() -> None:
    r = Router(CentralizedStrategy())
    assert r.route("k").descriptor is None and r.route("k").version == 0
    assert r.update(_d(3))
    assert not r.update(_d(3, ("n4", "n5", "n6")))  # same version: not newer
    assert not r.update(_d(2, ("n7", "n8", "n9")))
    assert r.descriptor("default") == _d(3) and r.stale_ignored == 2
    assert r.update(_d(4, ("n1", "n2", "n4")))
    assert r.route("k").version == 4


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["s0000", "s0001", "s0002"]), st.integers(0, 20)), max_size=40))
def test_any_interleaving_keeps_each_shards_highest_version(arrivals: list[tuple[str, int]]) -> None:
    r = Router(ShardedStrategy(3))
    best: dict[str, int] = {}
    for shard, version in arrivals:
        replaced = r.update(_d(version, shard=shard, voters=(f"v{version}",)))
        assert replaced == (shard not in best or version > best[shard])
        best[shard] = max(best.get(shard, version), version)
        cached = r.descriptor(shard)
        assert cached is not None and cached.version == best[shard]
        assert cached.group.voters == (f"v{best[shard]}",)  # the newest one's content, not a mix


def test_leader_hint_refreshes_only_the_cached_version() -> None:
    r = Router(CentralizedStrategy(), [_d(5, leader="n1")])
    assert r.route("k").target == "n1"
    assert not r.note_leader("default", 4, "n2")  # a hint of another version
    assert not r.note_leader("default", 5, "n9")  # not a voter
    assert r.note_leader("default", 5, "n2")
    assert r.route("k").target == "n2" and r.descriptor("default").version == 5  # type: ignore[union-attr]


def test_target_falls_back_to_the_first_voter() -> None:
    assert _d(1, leader=None).target() == "n1"
    assert _d(1, leader="n9").target() == "n1"
    assert _d(1).endpoint("n2") == "tcp://h:1" and _d(1).endpoint("n9") is None


def test_scan_plan_lists_every_shard_in_order_with_its_descriptor() -> None:
    r = Router(ShardedStrategy(3), [_d(2, shard="s0001")])
    plan = r.scan_plan("a", "b")
    assert [s for s, _ in plan] == ["s0000", "s0001", "s0002"]
    assert plan[1][1] == _d(2, shard="s0001") and plan[0][1] is None


# --- a model of redirects -------------------------------------------------------------------
#
# One shard's history: versions 1..V, each moving one voter (add a fresh node, remove one) and
# electing a leader among the voters. Nodes answer a request routed by (version, target):
# - the current leader at the current version serves it (the only correct answer);
# - any other node answers with the descriptor it holds (a Redirect) when it is newer than the
#   request's, else "not leader" with its own leader hint, as the runtime's rule says.
# What a node holds: a current member holds the current descriptor with the true leader; any
# other node holds what the control-plane feed last gave it: `view[node]` (in the first model
# the feed is current, but its leader hint may be one election behind).


class _Cluster:
    def __init__(self, history: list[Descriptor], views: dict[str, Descriptor]) -> None:
        self.history = history
        self.current = history[-1]
        self.views = views
        self.served_by: list[tuple[str, int]] = []

    def held(self, node: str) -> Descriptor:
        if node in self.current.group.voters:
            return self.current
        return self.views.get(node, self.history[0])

    def request(self, node: str, version: int) -> Redirect | str | None:
        """None: served. A Redirect: a newer descriptor. A str: not the leader, try this one."""
        cur = self.current
        if node == cur.leader and version == cur.version:
            self.served_by.append((node, version))
            return None
        held = self.held(node)
        if held.version > version:
            return Redirect(held)
        return held.leader or held.group.voters[0]


@st.composite
def _histories(draw: st.DrawFn, versions: int = 6) -> list[Descriptor]:
    voters = ["n1", "n2", "n3"]
    fresh = iter(f"m{i}" for i in range(100))
    out = [_d(1, tuple(voters), draw(st.sampled_from(voters)))]
    for v in range(2, versions + 1):
        gone = draw(st.sampled_from(voters))
        voters = [n for n in voters if n != gone] + [next(fresh)]
        out.append(_d(v, tuple(voters), draw(st.sampled_from(voters))))
    return out


def _run(cluster: _Cluster, router: Router, hops_max: int) -> int:
    """Follow answers until served. A "not leader" hint that leads nowhere new at this version
    (a node already asked, stale about its own membership) makes the client ask the control
    plane for the shard's descriptor instead, which counts as one more hop."""
    route = router.route("k")
    redirects = 0
    asked: set[tuple[str, int]] = set()
    while True:
        assert route.target is not None
        asked.add((route.target, route.version))
        answer = cluster.request(route.target, route.version)
        if answer is None:
            return redirects
        redirects += 1
        assert redirects <= hops_max, "the client did not converge"
        if isinstance(answer, Redirect):
            route = router.on_redirect("k", answer)
        elif (answer, route.version) in asked:
            route = router.on_redirect("k", Redirect(cluster.current))  # resync
        else:
            route = msgspec.structs.replace(route, target=answer)


@settings(max_examples=300, deadline=None)
@given(history=_histories(), data=st.data())
def test_a_client_five_versions_behind_reaches_the_leader_within_two_redirects(
    history: list[Descriptor], data: st.DataObject
) -> None:
    current = history[-1]
    # The feed's view of the shard: the current version, its leader hint possibly stale.
    hint = data.draw(st.sampled_from(current.group.voters))
    view = msgspec.structs.replace(current, leader=hint)
    everyone = {n for d in history for n in d.group.voters}
    cluster = _Cluster(history, {n: view for n in everyone})
    router = Router(CentralizedStrategy(), [history[0]])  # five versions behind
    assert current.version - history[0].version == 5
    assert _run(cluster, router, hops_max=2) <= 2
    assert cluster.served_by == [(current.leader, current.version)]
    assert router.descriptor("default").version == current.version  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(history=_histories(), data=st.data())
def test_with_any_stale_views_a_client_converges_and_only_the_current_leader_answers(
    history: list[Descriptor], data: st.DataObject
) -> None:
    """Nodes outside the current group may hold any older descriptor: each redirect either
    raises the client's version, follows a new hint, or (a hint to a node already asked) ends
    in a resync from the control plane; it converges within 2 x 5 + 2 hops, and nothing but
    the current leader at the current version ever serves."""
    everyone = sorted({n for d in history for n in d.group.voters})
    views = {n: history[data.draw(st.integers(0, len(history) - 1))] for n in everyone}
    cluster = _Cluster(history, views)
    start = data.draw(st.integers(0, len(history) - 1))
    router = Router(CentralizedStrategy(), [history[start]])
    _run(cluster, router, hops_max=2 * 5 + 2)
    assert cluster.served_by == [(history[-1].leader, history[-1].version)]


def test_an_older_redirect_never_rolls_the_cache_back() -> None:
    r = Router(CentralizedStrategy(), [_d(7, ("n4", "n5", "n6"), "n4")])
    route = r.on_redirect("k", Redirect(_d(3, leader="n1")))
    assert route.version == 7 and route.target == "n4"


@pytest.mark.parametrize("version", [0, 1])
def test_router_with_no_descriptor_yet_has_no_target(version: int) -> None:
    r = Router(ShardedStrategy(2))
    assert r.route(f"k{version}").target is None
