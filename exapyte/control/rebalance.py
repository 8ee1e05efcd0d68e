"""Rebalancing by moving replicas, not keys: ``node add`` / ``node remove``.

Theory of operation
-------------------
A shard's keys never change shard (the strategy's ``shard_of`` depends on the key alone); what a
new or departing node changes is *where the shards' replicas live*. :func:`plan` computes the
placement the strategy gives the new set of nodes and the moves from the groups' *current*
memberships to it (:func:`exapyte.distribution.plan_moves`: per shard, one move at a time, each
adding one replica and removing one). :func:`execute` carries each move out with membership
changes in the shard's own log, through an :class:`Admin` (the running cluster, or a model in
the tests):

1. ``add-learner X``: X receives the log (a snapshot first: its node creates the group's replica
   when the leader's first message for that group arrives);
2. wait until X has **caught up**: its applied index has reached the commit index the group's
   leader reported when the wait began, so promoting X cannot leave the group with fewer
   up-to-date voters than a quorum needs;
3. ``add-voter X`` (X is promoted);
4. ``remove Y``; when Y leads the group, leadership moves to another voter first. Once every
   member of the new configuration has applied the removal (:class:`Settle`), Y is
   told to drop its replica (``admin.drop_group`` with the configuration after the removal): a
   removed replica may never learn of its removal from the log, and must not go on serving the
   weaker read levels from a state that no longer advances. The drop waits for the members
   because a dropped replica forgets its log: a member that has not yet applied the removal
   still counts Y as a voter, and a replica of Y re-created empty (by a late message) would,
   without more, grant it a vote it must not have (found by the simulator's rebalance fault).
   Y's node also keeps the dropped replica's promises and a replica holding no log never votes
   (``ConsensusCore.standby`` / ``tombstone``, exapyte/runtime/groups.py), so the wait is the
   first of two guards (tests/mutants/amnesia.py takes it away). A member that does not apply
   the removal in time (it is down) leaves Y's replica in place: no drop.

With a control group (sharded and hierarchical strategies), ``node add`` first enters the node
in the control plane's topology (``NodeAdd``, a new membership epoch) and ``node remove`` takes it
out last (``NodeRemove``), once the shard leaders' reports show it holds no replica; the shard
map itself follows the groups' own logs through those reports (exapyte/control/group.py). The
control group stays where the config put it: a node holding one of its replicas keeps it.

The steps of one move are a sans-IO program (:func:`move_program`: it yields
:class:`Change`, :class:`CatchUp`, :class:`Query`, :class:`Transfer`, :class:`Drop` and
:class:`Note` actions and is sent their results), and so is the plan
(:func:`plan_node_change`). :func:`execute` carries the program out against a blocking
:class:`Admin`; the simulator's ``rebalance`` fault carries the very same program out over its
simulated network (``exapyte/sim/moves.py``). Both judge "caught up" with :func:`caught_up`.

Reads and writes keep working throughout: each step is one single-server membership change, so
every configuration along the way has a quorum of caught-up voters. A client whose routing table
is older learns the new configuration from the ``stale_config`` answer of the first replica it
asks (docs/control-plane.md). Plans are computed from what the groups hold *now*, so running the
same ``node add`` again after an interruption finishes the remaining moves and repeats none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from exapyte.distribution.base import (
    GroupSpec,
    Move,
    Placement,
    PlacementError,
    Strategy,
    plan_moves,
)
from exapyte.errors import ExapyteError
from exapyte.wire import CONTROL_GROUP, DropGroupOp

if TYPE_CHECKING:
    from exapyte.config import Config

CATCH_UP_TIMEOUT_S = 120.0
POLL_S = 0.1


class RebalanceError(ExapyteError):
    """A move could not be carried out (a member never caught up, a change was refused)."""


@dataclass(frozen=True)
class GroupState:
    """One group as its leader reports it."""

    group: str
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    leader: str | None
    commit: int


class Admin(Protocol):
    """What the rebalancer needs from a cluster."""

    def groups(self) -> Mapping[str, GroupState]:
        """Every group's current membership and leader (the groups with a leader)."""
        ...

    def applied(self, group: str, node: str) -> int | None:
        """How far ``node``'s replica of ``group`` has applied (None: no such replica yet)."""
        ...

    def change(self, group: str, change: str, node: str) -> None:
        """One membership change (``add-learner``, ``add-voter``, ``remove``), applied when
        this returns; raises on refusal."""
        ...

    def transfer(self, group: str, to: str) -> None:
        """Move ``group``'s leadership to voter ``to``."""
        ...

    def drop(self, group: str, node: str) -> None:
        """Tell ``node``, which left ``group``, to drop its replica (best effort: a node that is
        down keeps it until asked again; it serves nothing a current client routes to it)."""
        ...


@dataclass
class Report:
    moves: list[Move] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    catch_up_s: dict[str, float] = field(default_factory=dict)


def current_placement(groups: Mapping[str, GroupState]) -> Placement:
    return Placement(tuple(
        GroupSpec(g.group, g.voters, g.learners) for _, g in sorted(groups.items())
    ))


def plan(
    strategy: Strategy,
    groups: Mapping[str, GroupState],
    nodes: Mapping[str, str],
    replication_factor: int,
) -> tuple[Placement, list[Move]]:
    """The placement ``strategy`` gives ``nodes`` (id -> region) and the moves to it from the
    groups' current memberships. Raises PlacementError when a shard has no leader to ask."""
    missing = sorted(set(strategy.shards()) - set(groups))
    if missing:
        raise PlacementError(f"shards without a known leader: {', '.join(missing[:8])}; retry")
    target = strategy.place(nodes, min(replication_factor, len(nodes)))
    return target, plan_moves(current_placement(groups), target)


def wait_caught_up(
    admin: Admin, group: str, node: str, *, timeout_s: float = CATCH_UP_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
) -> float:
    """Block until ``node``'s replica of ``group`` has applied what the leader had committed
    when the wait began; returns the seconds it took."""
    state = admin.groups().get(group)
    if state is None:
        raise RebalanceError(f"group {group} has no leader to report its commit index")
    goal = state.commit
    started = clock()
    while True:
        applied = admin.applied(group, node)
        if caught_up(applied, goal):
            return clock() - started
        if clock() - started > timeout_s:
            raise RebalanceError(
                f"{node} did not catch up on group {group} within {timeout_s:g} s (applied "
                f"{applied}, leader's commit {goal}); the move stops before promoting it"
            )
        sleep(POLL_S)


# --- the move program (sans-IO) ----------------------------------------------------------------
#
# One move is a short program of actions; :func:`move_program` yields them in order and is sent
# each action's result. :func:`execute` carries the actions out against an :class:`Admin`
# (blocking, polling with ``sleep``); the simulator carries the same program out over its
# simulated network, one event at a time (exapyte/sim/moves.py). Both decide "caught up" with
# :func:`caught_up`.


@dataclass(frozen=True)
class Change:
    """One membership change (``add-learner``, ``add-voter``, ``remove``); result: None."""

    group: str
    change: str
    node: str


@dataclass(frozen=True)
class CatchUp:
    """Wait until ``node`` has applied what ``group``'s leader had committed when the wait
    began (:func:`caught_up`); result: the seconds it took."""

    group: str
    node: str


@dataclass(frozen=True)
class Query:
    """The group as its leader reports it now; result: a :class:`GroupState` or None."""

    group: str


@dataclass(frozen=True)
class Transfer:
    """Move ``group``'s leadership to voter ``to``, and wait until ``off`` no longer leads;
    result: None."""

    group: str
    to: str
    off: str


@dataclass(frozen=True)
class Drop:
    """Tell ``node``, which left ``group``, to drop its replica (best effort); result: None."""

    group: str
    node: str


@dataclass(frozen=True)
class Settle:
    """Wait until every member of ``group``'s configuration (as its leader reports it) has
    applied what the leader had committed when the wait began; result: True when they all did,
    False when one did not in time."""

    group: str


@dataclass(frozen=True)
class Note:
    """A step done, for the report; result: None."""

    text: str


Action = Change | CatchUp | Query | Transfer | Settle | Drop | Note


def caught_up(applied: int | None, goal: int) -> bool:
    """Whether a replica that has applied ``applied`` (None: no replica yet) has caught up with
    ``goal``, the commit index its group's leader reported when the wait began."""
    return applied is not None and applied >= goal


def move_program(move: Move) -> Generator[Action, Any, None]:
    """The actions of one move, in order (module docstring); send each action's result."""
    group = move.shard
    if move.add is not None:
        yield Change(group, "add-learner", move.add)
        yield Note(f"{group}: {move.add} added as a learner")
    if move.promote is not None:
        took = yield CatchUp(group, move.promote)
        yield Note(f"{group}: {move.promote} caught up in {took:.2f} s")
        yield Change(group, "add-voter", move.promote)
        yield Note(f"{group}: {move.promote} promoted to voter")
    if move.remove is not None:
        state = yield Query(group)
        if state is not None and state.leader == move.remove:
            others = [v for v in state.voters if v != move.remove]
            if not others:
                raise RebalanceError(f"{group}: no other voter to lead before removing {move.remove}")
            yield Transfer(group, others[0], move.remove)
            yield Note(f"{group}: leadership moved off {move.remove}")
        yield Change(group, "remove", move.remove)
        yield Note(f"{group}: {move.remove} removed")
        settled = yield Settle(group)
        if not settled:
            yield Note(f"{group}: {move.remove} keeps its replica (a member had not applied "
                       "the removal in time)")
            return
        yield Drop(group, move.remove)
        yield Note(f"{group}: {move.remove} dropped its replica")


def execute(
    admin: Admin,
    moves: Iterable[Move],
    *,
    timeout_s: float = CATCH_UP_TIMEOUT_S,
    on_step: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Carry out ``moves`` in order (see the module docstring)."""
    report = Report()
    for move in moves:
        report.moves.append(move)
        program = move_program(move)
        result: Any = None
        while True:
            try:
                action = program.send(result)
            except StopIteration:
                break
            result = None
            if isinstance(action, Note):
                report.steps.append(action.text)
                if on_step is not None:
                    on_step(action.text)
            elif isinstance(action, Change):
                admin.change(action.group, action.change, action.node)
            elif isinstance(action, CatchUp):
                result = wait_caught_up(
                    admin, action.group, action.node, timeout_s=timeout_s, sleep=sleep, clock=clock
                )
                report.catch_up_s[f"{action.group}/{action.node}"] = round(result, 3)
            elif isinstance(action, Query):
                result = admin.groups().get(action.group)
            elif isinstance(action, Transfer):
                admin.transfer(action.group, action.to)
                _wait_leader_not(admin, action.group, action.off, timeout_s, sleep, clock)
            elif isinstance(action, Settle):
                result = _wait_settled(admin, action.group, timeout_s, sleep, clock)
            else:
                admin.drop(action.group, action.node)
    return report


def _wait_settled(
    admin: Admin, group: str, timeout_s: float,
    sleep: Callable[[float], None], clock: Callable[[], float],
) -> bool:
    state = admin.groups().get(group)
    if state is None:
        return False
    for member in (*state.voters, *state.learners):
        try:
            wait_caught_up(admin, group, member, timeout_s=timeout_s, sleep=sleep, clock=clock)
        except RebalanceError:
            return False
    return True


def _wait_leader_not(
    admin: Admin, group: str, node: str, timeout_s: float,
    sleep: Callable[[float], None], clock: Callable[[], float],
) -> None:
    started = clock()
    while True:
        state = admin.groups().get(group)
        if state is not None and state.leader not in (None, node):
            return
        if clock() - started > timeout_s:
            raise RebalanceError(f"{group}: leadership did not leave {node} within {timeout_s:g} s")
        sleep(POLL_S)


class ClusterAdmin:
    """:class:`Admin` over a running cluster: membership changes through an admin client (which
    routes each to its group's leader), progress from every node's ``status``."""

    def __init__(self, cfg: Config, *, timeout_s: float = 10.0, credentials: Any = None) -> None:
        from exapyte.client import Client

        self.cfg = cfg
        kwargs: dict[str, Any] = {"timeout_s": timeout_s}
        if credentials is not None:
            kwargs["credentials"] = credentials
        self.client = Client.from_config(cfg, admin=True, **kwargs)
        self._status_timeout_s = min(timeout_s, 2.0)

    def close(self) -> None:
        self.client.close()

    def statuses(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for node in self.cfg.cluster.nodes:
            try:
                out[node.id] = self.client.status(node.endpoint, timeout_s=self._status_timeout_s)
            except ExapyteError:
                continue  # a node that is down reports nothing
        return out

    def groups(self) -> dict[str, GroupState]:
        return _groups_of(self.statuses())

    def applied(self, group: str, node: str) -> int | None:
        spec = next((n for n in self.cfg.cluster.nodes if n.id == node), None)
        if spec is None:
            return None
        try:
            status = self.client.status(spec.endpoint, timeout_s=self._status_timeout_s)
        except ExapyteError:
            return None
        g = (status.get("groups") or {}).get(group)
        return None if g is None else int(g["applied"])

    def change(self, group: str, change: str, node: str) -> None:
        self.client.change_membership(change, node, group=group)

    def transfer(self, group: str, to: str) -> None:
        self.client.transfer_leader(to, group=group)

    def record_topology(self, action: str, node: str, timeout_s: float) -> str | None:
        """Commit the node change in the control plane's topology (a new membership epoch), once
        the shard reports show the moves done; None when the cluster has no control group. A
        node that holds a control-plane replica keeps it, and stays in the topology."""
        from exapyte.control.group import control_spec
        from exapyte.control.plane import NodeAdd, NodeRemove
        from exapyte.data.feed import read_plane, submit

        control = control_spec(self.cfg)
        if control is None:
            return None
        spec = self.cfg.node_by_id(node)
        if action == "add":
            if node in read_plane(self.client).nodes:
                return f"{node} is in the topology"
            (changed, version, why), = submit(self.client, [NodeAdd(node, spec.region, spec.endpoint)])
            return f"topology: {node} added at version {version}" if changed else f"topology: {why}"
        if node in control.members:
            return f"{node} keeps its control-plane replica and stays in the topology"
        deadline = time.monotonic() + timeout_s
        while True:
            plane = read_plane(self.client)
            if node not in plane.nodes:
                return f"{node} is not in the topology"
            held = plane.shards_of_node(node)
            if not held:
                break
            if time.monotonic() > deadline:
                raise RebalanceError(
                    f"the control plane still lists {node} in {held[:5]} after {timeout_s:g} s "
                    "(the shard leaders' reports did not arrive)"
                )
            time.sleep(POLL_S * 5)
        (changed, version, why), = submit(self.client, [NodeRemove(node)])
        return f"topology: {node} removed at version {version}" if changed else f"topology: {why}"

    def drop(self, group: str, node: str) -> None:
        statuses = self.statuses()  # one round of status requests: membership and version
        state = _groups_of(statuses).get(group)
        spec = next((n for n in self.cfg.cluster.nodes if n.id == node), None)
        if state is None or spec is None:
            return
        leading = (statuses[state.leader or ""].get("groups") or {}).get(group) or {}
        op = DropGroupOp(int(leading.get("config_version", 0)), (*state.voters, *state.learners))
        try:
            self.client.request(op, endpoint=spec.endpoint, follow=False, group=group,
                                timeout_s=self._status_timeout_s)
        except ExapyteError:
            pass  # best effort (see Admin.drop)


def _groups_of(statuses: Mapping[str, Mapping[str, Any]]) -> dict[str, GroupState]:
    """Each group as its leader reports it, from the nodes' statuses (two nodes may both say
    they lead a group: the higher term wins)."""
    out: dict[str, GroupState] = {}
    terms: dict[str, int] = {}
    for node_id, status in statuses.items():
        for group, g in (status.get("groups") or {}).items():
            if group == CONTROL_GROUP:
                continue  # placed by the config, not by the strategy: it does not move
            if g.get("role") == "leader" and g["term"] > terms.get(group, -1):
                out[group] = GroupState(
                    group, tuple(g["voters"]), tuple(g["learners"]), node_id, g["commit"]
                )
                terms[group] = g["term"]
    return out

def plan_node_change(
    cfg: Config, action: str, node: str, groups: Mapping[str, GroupState],
) -> list[Move]:
    """The moves of ``node add ID`` / ``node remove ID`` from the groups as they are now: the
    placement the strategy gives the members after the change (pure; raises RebalanceError or
    PlacementError when there is nothing to plan from)."""
    from exapyte import distribution

    known = {n.id: n.region for n in cfg.cluster.nodes}
    if action not in ("add", "remove"):
        raise RebalanceError(f"unknown node change {action!r}; allowed: add, remove")
    if node not in known:
        raise RebalanceError(
            f"node {node!r} is not in the cluster file; allowed: {', '.join(sorted(known))}"
        )
    from exapyte import replication

    strategy, _ = distribution.from_config(cfg)
    if cfg.distribution.strategy == "centralized":
        if "default" not in groups:
            raise RebalanceError("the group has no leader to ask; retry")
        # Every member holds the group; the replication strategy says who votes, homed where
        # the founders' first node is.
        strategy = distribution.CentralizedStrategy(
            (), replication.from_config(cfg), home=known[cfg.initial_voters()[0]],
        )
    members = {m for g in groups.values() for m in (*g.voters, *g.learners)}
    nodes = members | {node} if action == "add" else members - {node}
    if not nodes:
        raise RebalanceError("removing the last node would leave the shards nowhere")
    _, moves = plan(
        strategy, groups, {n: known[n] for n in sorted(nodes)},
        cfg.distribution.replication_factor,
    )
    return moves


def node_change(
    cfg: Config, action: str, node: str, admin: Admin, *,
    on_step: Callable[[str], None] | None = None, timeout_s: float = CATCH_UP_TIMEOUT_S,
) -> dict[str, Any]:
    """``node add ID`` / ``node remove ID``: move replicas so that the placement is the
    strategy's for the nodes after the change. Returns what was done (for the CLI's JSON)."""
    moves = plan_node_change(cfg, action, node, admin.groups())
    record = getattr(admin, "record_topology", None)
    topology = None
    if record is not None and action == "add":
        topology = record(action, node, timeout_s)
    report = execute(admin, moves, timeout_s=timeout_s, on_step=on_step)
    if record is not None and action == "remove":
        topology = record(action, node, timeout_s)
    if topology is not None and on_step is not None:
        on_step(topology)
    return {
        "action": action, "node": node, "moves": len(report.moves),
        "steps": report.steps, "catch_up_s": report.catch_up_s, "topology": topology,
    }
