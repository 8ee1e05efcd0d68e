"""The group table: every replica group one node hosts, under one loop.

Theory of operation
-------------------
A node hosts one :class:`~exapyte.runtime.replica.Replica` per replica group it is a member of
(the centralized group ``default``, or the shards the placement gives it). Each replica has its
own consensus core, log, state machine and storage namespace, so a group is created and dropped
on its own (:meth:`GroupTable.create`, :meth:`GroupTable.drop`). The table is what the node loop
(and the simulator) drives; it never touches a socket or a clock:

- **Routing.** A client request goes to the replica of ``request.group``; a request for a group
  this node does not host is answered ``not_leader`` with a member of that group (from the
  placement) when one is known, else ``bad_request`` naming the groups it does host. A peer
  message goes to the replica of its group; one for a group not hosted is dropped and counted.
  A node that left a group answers its requests ``stale_config`` with the configuration it was
  told when it dropped its replica, and so it answers the reads still waiting in that replica.
- **Sending.** A replica hands its peer messages to ``send(to, group, message)``: the host batches
  everything bound for one node in one loop iteration into one frame. Before a replica's fsync
  the host's ``before_sync`` hook sends what is queued, so a leader's appends still leave while
  its own fsync runs (the Ready contract's early messages).
- **Ticks and quiescence.** Each tick goes to the *active* replicas only. A replica whose core is
  :meth:`~exapyte.protocol.core.ConsensusCore.quiescent` with nothing pending, for
  ``QUIESCE_AFTER_HEARTBEATS`` heartbeat intervals, while every member it depends on is alive (a
  leader: all members; a follower: its leader), is *quiesced*: it is not ticked, so it sends no
  heartbeats and runs no election timer. Any input for the group (a request, a peer message)
  wakes it, and so does a change in the liveness of a member's node. Stopping ticks can only delay
  an election, never break safety, and an idle group then costs nothing per tick.
- **Node liveness.** Instead of every group heartbeating, the host sends one ``beat`` per peer
  node every ``beat_ticks`` ticks (:attr:`GroupTable.beat_ticks`), and reports every frame it
  receives from a peer (:meth:`heard_from`, with the peer's instance id when the frame says it).
  A peer unheard for two election timeouts is down; a peer that comes back, or comes back as a new
  instance (it restarted and lost its volatile state), wakes every group it is a member of.
- **A dropped replica leaves its promises behind.** A replica is dropped (``DropGroupOp``) only
  once this node left the group, and its storage goes with it; but members that have not
  applied the removal yet, or a stale leader, may still count this node as a voter and send
  it the group's messages. The table keeps the dropped core's ``tombstone()`` (its term and
  vote, promised ballot or accepted epoch; durable through ``remove_storage``, and handed back
  at start as ``tombstones``), and a replica of that group created again on this node starts
  from it instead of from nothing. The new replica is also in *standby* (it holds no log): it
  grants no vote and makes no promise until a leader's append or snapshot gives it one. Together: the node never gives a term, ballot or epoch twice, never
  takes a leader's entries of a term it had already left, and is never counted in an election
  or a read quorum for a log it no longer holds. A peer message for a group dropped less than
  ``down_after_ticks`` ago is not even given a replica (what its members sent before they
  applied the removal is still arriving).
- **Only dirty replicas are flushed**: those that got input since the last flush, so a loop
  iteration costs what changed, not the number of groups. They are driven together
  (:func:`~exapyte.protocol.drive.drive_many`): each group keeps the Ready order, and the
  persists of one round, which write separate logs, run on a small thread pool when
  ``parallel_persist`` is on (the node), so the fsyncs of eight shards cost about one. The
  simulator drives them one after the other (its runs must be a pure function of the seed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from exapyte.config import Config
from exapyte.data.router import Descriptor
from exapyte.distribution.base import GroupSpec
from exapyte.protocol.drive import drive_many
from exapyte.protocol.types import HardState, PersistedState
from exapyte.runtime.replica import Replica
from exapyte.runtime.service import ReplySink, ServiceBase, validate_request
from exapyte.storage import Storage
from exapyte.wire import ClientReply, ClientRequest, DropGroupOp, ReplyCode, StatusOp

log = logging.getLogger(__name__)

QUIESCE_AFTER_HEARTBEATS = 3  # quiet heartbeat intervals before a group stops ticking
PERSIST_THREADS_MAX = 8  # threads that run the persists (fsyncs) of different groups at once

GroupSink = Callable[[str, str, Any], None]  # (peer node id, group id, consensus message)


def _holds_nothing(persisted: PersistedState) -> bool:
    """A store no replica has written to (a new one, or one whose writes were never synced)."""
    return (
        persisted.hard_state == HardState() and persisted.snapshot is None
        and not persisted.entries
    )


class GroupTable:
    """The replica groups of one node. Single-threaded; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        *,
        open_storage: Callable[[str], Storage],
        rng_for: Callable[[str], Any],
        reply: ReplySink,
        send: GroupSink,
        beat: Callable[[str], None] | None = None,
        before_sync: Callable[[], None] | None = None,
        make_replica: Callable[..., Replica] = Replica,
        parallel_persist: bool = False,
        remove_storage: Callable[[str, HardState], None] | None = None,
        clock_ms: Callable[[], float] | None = None,
        tombstones: Mapping[str, HardState] | None = None,
    ) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id or ""
        self._open_storage = open_storage
        self._rng_for = rng_for
        self._reply = reply
        self._send = send
        self._beat = beat
        self._before_sync = before_sync
        self._make_replica = make_replica
        self._parallel_persist = parallel_persist
        self._remove_storage = remove_storage
        # With a clock (the node's wall clock, the simulator's simulated one), leaders stamp what
        # they send (commit index, time) and followers measure bounded staleness against it
        # (exapyte/data/staleness.py); without one followers refuse bounded_staleness reads and
        # the leader serves them.
        self._clock_ms = clock_ms
        self._left: dict[str, Descriptor] = {}  # groups this node dropped: what it was told
        self._left_at: dict[str, int] = {}  # group -> the tick it was dropped at
        # group -> the promises of the replica this node dropped (see the module docstring)
        self.tombstones: dict[str, HardState] = dict(tombstones or {})
        self._pool: ThreadPoolExecutor | None = None
        self.replicas: dict[str, Replica] = {}
        self.placement: dict[str, GroupSpec] = {}  # every group of the cluster, hosted or not
        self._active: dict[str, Replica] = {}  # ticked: not quiesced
        self._quiet: dict[str, int] = {}  # group -> consecutive quiescent ticks
        self._dirty: dict[str, Replica] = {}  # got input since the last flush
        self._touched: set[str] = set()  # got input or a tick since the last take_touched()
        self._idle: dict[str, Replica] = {}  # may have idle work
        self.counters: dict[str, int] = {}
        c = cfg.consensus
        self.ticks = 0
        self.quiesce_after_ticks = QUIESCE_AFTER_HEARTBEATS * c.heartbeat_ticks + 1
        self.beat_ticks = max(c.heartbeat_ticks, c.election_timeout_ticks // 8)
        # Two election timeouts: a loaded peer's beats come late (its ticks slow down), and a
        # false "down" wakes every group it is a member of.
        self.down_after_ticks = 2 * c.election_timeout_ticks
        peers = [n for n in cfg.node_ids() if n != self.node_id]
        self._heard: dict[str, int] = {p: 0 for p in peers}  # peer -> tick last heard
        self._instance: dict[str, str] = {}
        self._down: set[str] = set(peers)  # unheard peers count as down until heard
        self.status_extra: Callable[[], dict[str, Any]] | None = None

    # -- groups ---------------------------------------------------------------------------------

    def set_placement(self, groups: Iterable[GroupSpec]) -> None:
        """Every group of the cluster (the hosted ones and the others, for redirects)."""
        self.placement = {g.id: g for g in groups}

    def create(self, spec: GroupSpec) -> Replica:
        """Start hosting ``spec`` (its storage namespace is opened or created)."""
        if spec.id in self.replicas:
            raise ValueError(f"group {spec.id!r} is already hosted on {self.node_id}")
        storage = self._open_storage(spec.id)
        try:
            tombstone = self.tombstones.get(spec.id)
            if tombstone is not None and _holds_nothing(storage.load_persisted()):
                # A replica this node dropped: the new one keeps the old one's promises.
                storage.persist(tombstone, [], sync=True)
                self.count("groups_from_tombstone")
            if self._clock_ms is None:
                send = lambda to, msg, stamp=None, _g=spec.id: self._send(to, _g, msg)  # noqa: E731
            else:
                send = lambda to, msg, stamp=None, _g=spec.id: self._send(to, _g, msg, stamp)  # noqa: E731
            replica = self._make_replica(
                self.cfg, storage, self._rng_for(spec.id),
                reply=self._reply,
                send=send,
                group=spec,
                clock_ms=self._clock_ms,
            )
        except BaseException:
            storage.close()
            raise
        replica.status_extra = self._node_status
        self.replicas[spec.id] = replica
        self.placement.setdefault(spec.id, spec)
        self._wake(spec.id, replica)
        return replica

    def drop(self, group: str) -> None:
        """Stop hosting ``group`` (its storage is closed; the caller removes the files)."""
        replica = self.replicas.pop(group)
        tables: tuple[dict[str, Any], ...] = (self._active, self._quiet, self._dirty, self._idle)
        for table in tables:
            table.pop(group, None)
        replica.flush()
        replica.close()

    def wake(self, group: str) -> None:
        """Input for ``group`` that did not come through the table (the control agent proposed
        on its replica): tick and flush it again."""
        replica = self.replicas.get(group)
        if replica is not None:
            self._wake(group, replica)
            self._idle[group] = replica

    def _wake(self, group: str, replica: Replica) -> None:
        # An active group keeps its count of quiet ticks: a heartbeat that changes nothing must
        # not hold a group awake (the tick resets the count whenever the group is not quiet).
        if group not in self._active:
            self._active[group] = replica
            self._quiet[group] = 0
            self.count("groups_woken")
        self._dirty[group] = replica
        self._touched.add(group)

    def take_touched(self) -> set[str]:
        """The groups that got input or a tick (or were created) since the last call: what
        the control agent looks at again (exapyte/control/group.py)."""
        touched, self._touched = self._touched, set()
        return touched

    # -- inputs ---------------------------------------------------------------------------------

    def on_request(self, identity: Any, req: ClientRequest) -> None:
        if isinstance(req.op, DropGroupOp):
            self._drop_request(identity, req)
            return
        replica = self.replicas.get(req.group) if type(req.group) is str else None
        if replica is not None:
            if not isinstance(req.op, StatusOp):  # a status request leaves a quiet group quiet
                self._wake(req.group, replica)
                self._idle[req.group] = replica
            replica.on_request(identity, req)
            return
        problem = validate_request(req)
        if problem is not None:
            self.count("requests_invalid")
            self._error(identity, req, ReplyCode.BAD_REQUEST, problem)
            return
        if isinstance(req.op, StatusOp):
            self._reply(identity, ClientReply(
                req.client_id, req.seq, ReplyCode.OK, node=self.node_id, status=self.status(),
            ))
            return
        left = self._left.get(req.group)
        if left is not None:  # this node left the group: the configuration it was told then
            self.count("requests_not_member")
            self._error(
                identity, req, ReplyCode.STALE_CONFIG,
                f"{self.node_id} left group {req.group} at configuration {left.version}",
                descriptor=left, config_version=left.version,
            )
            return
        spec = self.placement.get(req.group)
        others = [v for v in spec.voters if v != self.node_id] if spec is not None else []
        if others:
            leader = others[0]
            self.count("requests_not_member")
            self._error(
                identity, req, ReplyCode.NOT_LEADER,
                f"{self.node_id} does not host group {req.group!r}",
                leader_hint=leader, leader_endpoint=self._endpoint(leader),
            )
            return
        self.count("requests_unknown_group")
        hosted = ", ".join(sorted(self.replicas)[:8]) or "none"
        self._error(
            identity, req, ReplyCode.BAD_REQUEST,
            f"unknown group {req.group!r}; {self.node_id} hosts: {hosted}",
        )

    def _drop_request(self, identity: Any, req: ClientRequest) -> None:
        op = req.op
        assert isinstance(op, DropGroupOp)
        problem = validate_request(req)
        replica = self.replicas.get(req.group)
        if problem is None and self.node_id in op.members:
            problem = f"{self.node_id} is a member of group {req.group} in the configuration given"
        if problem is None and replica is not None:
            conf = replica.sm.conf
            if self.node_id in conf.voters + conf.learners and op.version <= conf.version:
                problem = (
                    f"{self.node_id}'s replica of {req.group} is at configuration {conf.version}, "
                    f"which lists it; the configuration given is {op.version}"
                )
        if problem is not None:
            self._error(identity, req, ReplyCode.BAD_REQUEST, problem)
            return
        if replica is None:
            message = f"{self.node_id} does not host group {req.group}"
        else:
            # Reads waiting in the replica (a leader's read index not confirmed yet) would never
            # be answered once it is gone: they get the answer a read arriving after the drop
            # gets. Writes waiting for their entry keep an unknown outcome (the entry may still
            # commit in the group): the client's timeout records them as indeterminate.
            waiting_reads = [(who, r) for who, r, _ in replica.pending_reads.values()]
            replica.pending_reads.clear()
            self.drop(req.group)
            tombstone = replica.core.tombstone()  # after the drop's last flush
            self.tombstones[req.group] = tombstone
            region = replica.group.region
            left = self._left[req.group] = Descriptor(
                GroupSpec(req.group, op.members, (), region), op.version,
            )
            self._left_at[req.group] = self.ticks
            for who, read in waiting_reads:
                self.count("reads_failed_on_drop")
                self._error(
                    who, read, ReplyCode.STALE_CONFIG,
                    f"{self.node_id} left group {req.group} at configuration {left.version}",
                    descriptor=left, config_version=left.version,
                )
            if self._remove_storage is not None:
                self._remove_storage(req.group, tombstone)
            self.count("groups_dropped")
            log.info("%s: dropped its replica of group %s (it left the group)", self.node_id, req.group)
            message = f"{self.node_id} dropped its replica of group {req.group}"
        self._reply(identity, ClientReply(
            req.client_id, req.seq, ReplyCode.OK, node=self.node_id, message=message,
        ))

    def on_peer(self, group: str, msg: Any, stamp: tuple[int, float] | None = None) -> None:
        replica = self.replicas.get(group)
        if replica is None:
            spec = self.placement.get(group)
            if spec is None:
                self.count("peer_unknown_group")
                return
            left = self._left_at.get(group)
            if left is not None and self.ticks - left < self.down_after_ticks:
                # Just dropped: what its members sent before they applied the removal is still
                # arriving. Re-added since (a later rebalance), the leader retries past this.
                self.count("peer_left_group")
                return
            # A group of the cluster this node does not host yet: it was just added to it (as a
            # learner, by a rebalance), or it is a stale member's message for a group this node
            # left. Its replica starts empty (or from the tombstone of the one it dropped) and
            # in standby, and catches up from the leader, by snapshot if need be. Never as a
            # founder: the group exists, and this replica learns it from the leader.
            replica = self.create(GroupSpec(spec.id, (), (), spec.region))
            self.count("groups_joined")
            log.info("%s: hosting group %s (a member sent it the first message)", self.node_id, group)
        self._wake(group, replica)
        self._idle[group] = replica
        replica.on_peer(msg, stamp)

    def heard_from(self, peer: str, instance: str | None = None) -> None:
        """A frame from ``peer`` arrived (``instance``: its process instance, when known)."""
        if peer not in self._heard:
            return
        self._heard[peer] = self.ticks
        restarted = False
        if instance is not None:
            known = self._instance.get(peer)
            self._instance[peer] = instance
            restarted = known is not None and known != instance
        if peer in self._down or restarted:
            self._down.discard(peer)
            self._wake_members_of(peer)

    def _wake_members_of(self, node: str) -> None:
        for group, replica in self.replicas.items():
            if group not in self._active and node in replica.members():
                self._wake(group, replica)

    # -- the loop -------------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        ticks = self.ticks
        if self._beat is not None and ticks % self.beat_ticks == 0:
            for peer in self._heard:
                self._beat(peer)
        oldest = ticks - self.down_after_ticks
        for peer, heard in self._heard.items():
            if heard < oldest and peer not in self._down:
                self._down.add(peer)
                self.count("peers_down")
                self._wake_members_of(peer)
        quiet_after = self.quiesce_after_ticks
        quiesced = []
        for group, replica in self._active.items():
            # Judged on the state the last flush left (a tick itself queues heartbeats).
            if replica.may_quiesce() and self._depends_on_live(replica):
                quiet = self._quiet.get(group, 0) + 1
                self._quiet[group] = quiet
                if quiet >= quiet_after:
                    quiesced.append(group)
                    continue
            else:
                self._quiet[group] = 0
            replica.tick()
            self._dirty[group] = replica
            self._idle[group] = replica
            self._touched.add(group)
        for group in quiesced:
            del self._active[group]
            self.count("groups_quiesced")

    def _depends_on_live(self, replica: Replica) -> bool:
        down = self._down
        if not down:
            return True
        leader = replica.core.leader
        if leader == self.node_id:
            return not any(m in down for m in replica.members())
        return leader is not None and leader not in down

    def flush(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        if len(dirty) == 1:
            (replica,) = dirty.values()
            replica.flush(self._before_sync)
            return
        runner = self._run_persists if self._parallel_persist else None
        drive_many([(r.core, r) for r in dirty.values()], runner, before_sync=self._before_sync)

    def _run_persists(self, persists: Sequence[Callable[[], None]]) -> None:
        pool = self._pool
        if pool is None:
            pool = self._pool = ThreadPoolExecutor(
                PERSIST_THREADS_MAX, thread_name_prefix="persist"
            )
        futures = [pool.submit(p) for p in persists]
        first: BaseException | None = None
        for future in futures:  # every persist returns before the round goes on
            exc = future.exception()
            if exc is not None and first is None:
                first = exc
        if first is not None:
            raise first

    def has_idle_work(self) -> bool:
        idle = self._idle
        for group in [g for g, r in idle.items() if not r.has_idle_work()]:
            del idle[group]
        return bool(idle)

    def idle(self) -> None:
        idle, self._idle = self._idle, {}
        for replica in idle.values():
            if replica.has_idle_work():
                replica.idle()

    def maintenance(self) -> None:
        for replica in self.replicas.values():
            replica.maintenance()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        replicas, self.replicas = self.replicas, {}
        first: BaseException | None = None
        for replica in replicas.values():
            try:
                replica.flush()
                replica.close()
            except BaseException as exc:  # close every store; report the first failure
                first = first or exc
        if first is not None:
            raise first

    # -- reporting ------------------------------------------------------------------------------

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _error(self, identity: Any, req: ClientRequest, code: str, message: str, **kw: Any) -> None:
        self._reply(identity, ClientReply(
            req.client_id, req.seq, code, node=self.node_id, message=message, **kw,
        ))

    def _endpoint(self, node: str) -> str | None:
        try:
            return self.cfg.node_by_id(node).endpoint
        except Exception:
            return None

    def _node_status(self) -> dict[str, Any]:
        status = self.status_extra() if self.status_extra is not None else {}
        status["groups"] = self.groups_summary()
        status["group_table"] = {
            "hosted": len(self.replicas),
            "active": len(self._active),
            "peers_down": sorted(self._down),
            "counters": dict(sorted(self.counters.items())),
        }
        return status

    def groups_summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for group, replica in sorted(self.replicas.items()):
            st = replica.core.status()
            out[group] = {
                "role": str(st.role), "leader": st.leader, "term": st.term, "commit": st.commit,
                "applied": replica.sm.applied_index, "quiesced": group not in self._active,
                "voters": list(st.conf.voters), "learners": list(st.conf.learners),
                "config_version": replica.sm.conf_version,
            }
        return out

    def status(self) -> dict[str, Any]:
        """The node's status when no single group is asked for."""
        if "default" in self.replicas:
            return self.replicas["default"].status()
        return {"node": self.node_id, "region": self.cfg.region_id, **self._node_status()}

    def one(self) -> ServiceBase:
        """The only group (a node of the centralized strategy)."""
        assert len(self.replicas) == 1, sorted(self.replicas)
        return next(iter(self.replicas.values()))
