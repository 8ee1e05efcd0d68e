"""The ``rebalance`` fault: node changes carried out in the simulated world, and their judge.

Theory of operation
-------------------
A rebalance fault says ``add`` or ``remove`` of one node (:func:`~exapyte.sim.faults.plan_rebalances`).
When it starts, :class:`Rebalancer` plans the moves with the product's own planner
(:func:`exapyte.control.rebalance.plan_node_change`, from the groups as their leaders report
them *now*) and carries each move out with the product's own step program
(:func:`exapyte.control.rebalance.move_program`): add the target as a learner, wait until it has
**caught up** (:func:`exapyte.control.rebalance.caught_up`, the predicate the blocking
rebalancer uses too), promote it, move leadership off the source if it leads, remove the source,
wait until every member has applied the removal, tell the source to drop its replica. The program is the same; only its effects differ from
:func:`~exapyte.control.rebalance.execute`:

- a membership change, a leadership transfer or a drop is a real admin ``ClientRequest``
  (``MembershipOp``, ``TransferLeaderOp``, ``DropGroupOp``) sent by the admin endpoint
  ``cadmin`` over the simulated client links to the group's leader (or the leaving node), with
  retries on refusal or silence until the step's deadline; a change already in effect (an
  earlier attempt applied) counts as done;
- what the blocking admin learns from ``status`` requests (each group's leader, members and
  commit index; a replica's applied index) is read from the nodes that are up and not paused,
  through the same :func:`~exapyte.control.rebalance._groups_of`.

Waits poll every ``POLL_MS`` of simulated time. A step that runs past its deadline stops the
node change (like ``RebalanceError``: what was done stays done; a later fault plans from there).
When the fault ends (or at the heal), no new move starts; the move under way finishes its steps.
Faults queue: a node change starts only when the previous one is over.

:class:`MoveJudge` checks the rule that a move must keep, from the entries the replicas apply:
**a learner is promoted only once it has caught up**: when ``add-voter X`` is applied in a
group, X's replica has applied at least that group's ``add-learner X`` entry. The product's
rebalancer waits for far more (the leader's commit index when the wait began), so the check
never fires on it; a rebalancer that promotes at once (the ``early-remove`` mutant) is caught.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from exapyte.control import rebalance
from exapyte.control.rebalance import (
    CatchUp,
    Change,
    Drop,
    GroupState,
    Note,
    Query,
    RebalanceError,
    Settle,
    Transfer,
)
from exapyte.distribution import Move, PlacementError
from exapyte.protocol.types import ConfChangeKind, Entry, EntryKind, decode_conf_change
from exapyte.sim.faults import Fault
from exapyte.sim.scheduler import NS_PER_MS, NS_PER_S
from exapyte.wire import (
    ClientReply,
    ClientRequest,
    DropGroupOp,
    MembershipOp,
    ReplyCode,
    TransferLeaderOp,
)

if TYPE_CHECKING:
    from exapyte.sim.world import World

ADMIN_PROCESS = "admin"  # the admin's process id: its endpoint is "cadmin"
POLL_MS = 50  # waits poll this often (simulated)
ATTEMPT_TIMEOUT_MS = 250  # silence after which an admin request is sent again
BACKOFF_MS = 20  # wait after a refusal
CHANGE_TIMEOUT_MS = 4_000  # a membership change or transfer not done by then stops the change
CATCH_UP_TIMEOUT_MS = 4_000  # a learner not caught up by then is not promoted
DROP_TIMEOUT_MS = 2_000  # a drop is best effort: given up after this long
SETTLE_TIMEOUT_MS = 2_000  # members that have not applied a removal by then: no drop
PLAN_TIMEOUT_MS = 2_000  # shards without a known leader for this long: the change is skipped


class MoveJudge:
    """A learner is promoted only once it has caught up (module docstring)."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._learner_at: dict[tuple[str, str], int] = {}  # (group, node) -> add-learner index
        self._applied: dict[tuple[str, str], int] = {}  # (group, node) -> most it has applied
        self._seen: set[tuple[str, int]] = set()  # conf changes already judged

    def observe(self, group: str, node: str, applied: int) -> None:
        key = (group, node)
        if applied > self._applied.get(key, 0):
            self._applied[key] = applied

    def forget(self, group: str, node: str) -> None:
        """``node`` dropped its replica of ``group``: a later one starts from nothing."""
        self._applied.pop((group, node), None)

    def on_apply(self, group: str, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if entry.kind != EntryKind.CONF_CHANGE or (group, entry.index) in self._seen:
                continue
            self._seen.add((group, entry.index))
            change = decode_conf_change(entry.data)
            key = (group, change.node_id)
            if change.kind == ConfChangeKind.ADD_LEARNER:
                self._learner_at[key] = entry.index
            elif change.kind == ConfChangeKind.ADD_VOTER:
                joined = self._learner_at.pop(key, None)
                have = self._applied.get(key, 0)
                if joined is not None and have < joined:
                    self.violations.append(
                        f"{group}: {change.node_id} promoted to voter at index {entry.index} "
                        f"having applied {have}, short of its own add-learner entry at {joined} "
                        "(it had not caught up)"
                    )
            else:
                self._learner_at.pop(key, None)


class Rebalancer:
    """Carries out the rebalance faults of one :class:`~exapyte.sim.world.World`, one after
    the other (module docstring). Single-threaded, driven by the world's scheduler."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.sched = world.sched
        self.endpoint = f"c{ADMIN_PROCESS}"
        self.client_id = "sim-admin"
        self.queue: deque[Fault] = deque()
        self.current: Fault | None = None
        self.stopping = False
        self.moves: list[Move] = []
        self.program: Generator[Any, Any, None] | None = None
        self.steps: list[str] = []  # what was done, as the blocking rebalancer reports it
        self.counters: dict[str, int] = {
            "rebalances": 0, "rebalances_skipped": 0, "rebalances_stopped": 0,
            "moves_planned": 0, "moves_done": 0, "admin_requests": 0, "drops_given_up": 0,
        }
        self._seq = 0
        self._token = 0  # the wait or request under way; a stale timer or reply is ignored
        self._on_reply: Callable[[ClientReply], None] | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.queue)

    # --- the fault -----------------------------------------------------------------------------

    def start(self, fault: Fault) -> None:
        self.queue.append(fault)
        if self.current is None:
            self._begin_next()

    def stop(self, fault: Fault) -> None:
        """The fault ended: no new move of it starts (one still queued never starts)."""
        if fault in self.queue:
            self.queue.remove(fault)
            self.counters["rebalances_skipped"] += 1
        elif fault is self.current:
            self.stopping = True

    def _begin_next(self) -> None:
        if not self.queue:
            return
        self.current = self.queue.popleft()
        self.stopping = False
        self.counters["rebalances"] += 1
        self._plan(self.sched.now_ns + PLAN_TIMEOUT_MS * NS_PER_MS)

    def _finish(self, outcome: str | None = None) -> None:
        if outcome is not None:
            self.counters[outcome] += 1
        self.current = None
        self.program = None
        self.moves = []
        self._on_reply = None
        self._token += 1
        self._begin_next()

    def _plan(self, deadline_ns: int) -> None:
        fault = self.current
        assert fault is not None and fault.node is not None and fault.action is not None
        groups = self.world.admin_groups()
        members = {m for g in groups.values() for m in (*g.voters, *g.learners)}
        if fault.action == "remove" and len(members - {fault.node}) < len(self.world.founders):
            self._finish("rebalances_skipped")  # never below the founding size: nothing to do
            return
        try:
            moves = rebalance.plan_node_change(self.world.cfg, fault.action, fault.node, groups)
        except (RebalanceError, PlacementError):
            if self.stopping or self.sched.now_ns >= deadline_ns:
                self._finish("rebalances_skipped")  # no leader to ask for some shard
                return
            self._later(POLL_MS, self._plan, deadline_ns)
            return
        self.moves = list(moves)
        self.counters["moves_planned"] += len(moves)
        self._next_move()

    def _next_move(self) -> None:
        if not self.moves:
            self._finish()
            return
        if self.stopping:
            self._finish("rebalances_stopped")
            return
        self.program = rebalance.move_program(self.moves.pop(0))
        self._advance(None)

    def _advance(self, result: Any) -> None:
        """Run the move's program until it waits on the world."""
        program = self.program
        assert program is not None
        self._on_reply = None  # a late answer to a request given up on must not resume it
        while True:
            try:
                action = program.send(result)
            except StopIteration:
                self.counters["moves_done"] += 1
                self._next_move()
                return
            except RebalanceError as exc:
                self._stopped(str(exc))
                return
            result = None
            if isinstance(action, Note):
                self.steps.append(action.text)
            elif isinstance(action, Query):
                result = self.world.admin_groups().get(action.group)
            elif isinstance(action, Change):
                self._change(action, self._deadline(CHANGE_TIMEOUT_MS))
                return
            elif isinstance(action, CatchUp):
                self._catch_up(action, None, self.sched.now_ns)
                return
            elif isinstance(action, Transfer):
                self._transfer(action, self._deadline(CHANGE_TIMEOUT_MS), None)
                return
            elif isinstance(action, Settle):
                self._settle(action, None, self._deadline(SETTLE_TIMEOUT_MS))
                return
            else:
                assert isinstance(action, Drop)
                self._drop(action, self._deadline(DROP_TIMEOUT_MS))
                return

    def _stopped(self, why: str) -> None:
        self.steps.append(f"stopped: {why}")
        self._finish("rebalances_stopped")

    # --- effects -------------------------------------------------------------------------------

    def _deadline(self, ms: int) -> int:
        return self.sched.now_ns + ms * NS_PER_MS

    def _later(self, ms: float, fn: Callable[..., None], *args: Any) -> None:
        token = self._token

        def fire() -> None:
            if token == self._token:
                fn(*args)

        self.sched.after(int(ms * NS_PER_MS), fire)

    def _request(
        self, node: str, group: str, op: Any, on_reply: Callable[[ClientReply], None],
        on_silence: Callable[[], None],
    ) -> None:
        """Send one admin request; exactly one of the callbacks runs."""
        self._seq += 1
        self._token += 1
        self.counters["admin_requests"] += 1
        req = ClientRequest(self.client_id, self._seq, op, group=group)
        self._on_reply = on_reply
        self.world.network.send(self.endpoint, node, (ADMIN_PROCESS, self._seq, req))

        def silence() -> None:
            self._on_reply = None  # its answer, if it still comes, is ignored
            on_silence()

        self._later(ATTEMPT_TIMEOUT_MS, silence)

    def on_reply(self, attempt: int, reply: ClientReply) -> None:
        if attempt != self._seq or self._on_reply is None:
            return  # an answer to a request already given up on
        on_reply, self._on_reply = self._on_reply, None
        self._token += 1  # the silence timer of this request is void
        on_reply(reply)

    def _change(self, action: Change, deadline_ns: int) -> None:
        state = self.world.admin_groups().get(action.group)
        if state is not None and _in_effect(action, state):
            self._advance(None)  # an earlier attempt applied
            return
        if self.sched.now_ns >= deadline_ns:
            self._stopped(f"{action.group}: {action.change} {action.node} not done in time")
            return
        if state is None or state.leader is None:
            self._later(POLL_MS, self._change, action, deadline_ns)
            return

        def replied(reply: ClientReply) -> None:
            if reply.code == ReplyCode.OK:
                self._advance(None)
            else:  # not the leader, unavailable, a change still in flight: ask again
                self._later(BACKOFF_MS, self._change, action, deadline_ns)

        self._request(
            state.leader, action.group, MembershipOp(action.change, action.node), replied,
            lambda: self._change(action, deadline_ns),
        )

    def _catch_up(self, action: CatchUp, goal: int | None, started_ns: int) -> None:
        if goal is None:
            state = self.world.admin_groups().get(action.group)
            if state is not None:
                goal = state.commit
        if goal is not None and rebalance.caught_up(
            self.world.admin_applied(action.group, action.node), goal
        ):
            self._advance((self.sched.now_ns - started_ns) / NS_PER_S)
            return
        if self.sched.now_ns - started_ns >= CATCH_UP_TIMEOUT_MS * NS_PER_MS:
            self._stopped(f"{action.node} did not catch up on group {action.group}")
            return
        self._later(POLL_MS, self._catch_up, action, goal, started_ns)

    def _transfer(self, action: Transfer, deadline_ns: int, asked_ns: int | None) -> None:
        state = self.world.admin_groups().get(action.group)
        if state is not None and state.leader not in (None, action.off):
            self._advance(None)
            return
        if self.sched.now_ns >= deadline_ns:
            self._stopped(f"{action.group}: leadership did not leave {action.off}")
            return
        due = asked_ns is None or self.sched.now_ns - asked_ns >= 10 * POLL_MS * NS_PER_MS
        if state is None or state.leader is None or not due:
            self._later(POLL_MS, self._transfer, action, deadline_ns, asked_ns)
            return
        now = self.sched.now_ns

        def replied(_reply: ClientReply) -> None:
            self._later(POLL_MS, self._transfer, action, deadline_ns, now)

        self._request(
            state.leader, action.group, TransferLeaderOp(action.to), replied,
            lambda: self._transfer(action, deadline_ns, now),
        )

    def _settle(self, action: Settle, goal: tuple[int, tuple[str, ...]] | None,
                deadline_ns: int) -> None:
        if goal is None:
            state = self.world.admin_groups().get(action.group)
            if state is not None:
                goal = (state.commit, (*state.voters, *state.learners))
        if goal is not None and all(
            rebalance.caught_up(self.world.admin_applied(action.group, m), goal[0])
            for m in goal[1]
        ):
            self._advance(True)
            return
        if self.sched.now_ns >= deadline_ns:
            self.counters["drops_given_up"] += 1
            self._advance(False)
            return
        self._later(POLL_MS, self._settle, action, goal, deadline_ns)

    def _drop(self, action: Drop, deadline_ns: int) -> None:
        if self.sched.now_ns >= deadline_ns:
            self.counters["drops_given_up"] += 1
            self._advance(None)  # best effort, like Admin.drop
            return
        state = self.world.admin_groups().get(action.group)
        if state is None or state.leader is None:
            self._later(POLL_MS, self._drop, action, deadline_ns)
            return
        version = self.world.admin_config_version(action.group, state.leader)
        op = DropGroupOp(version, (*state.voters, *state.learners))

        def replied(reply: ClientReply) -> None:
            if reply.code == ReplyCode.OK:
                self._advance(None)
            elif reply.code == ReplyCode.BAD_REQUEST:
                self.counters["drops_given_up"] += 1
                self._advance(None)
            else:
                self._later(BACKOFF_MS, self._drop, action, deadline_ns)

        self._request(action.node, action.group, op, replied,
                      lambda: self._drop(action, deadline_ns))


def _in_effect(action: Change, state: GroupState) -> bool:
    if action.change == "add-learner":
        return action.node in state.learners or action.node in state.voters
    if action.change == "add-voter":
        return action.node in state.voters
    return action.node not in state.voters and action.node not in state.learners


def groups_of_nodes(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, GroupState]:
    """Each group as its leader reports it, from ``{node: groups_summary()}``."""
    return rebalance._groups_of({n: {"groups": s} for n, s in summaries.items()})


__all__ = ["MoveJudge", "Rebalancer", "groups_of_nodes"]
