"""One member of a replicated group: a consensus core, its storage, the KV state machine and the
client requests waiting on them. No sockets and no clock: the ZeroMQ node and the deterministic
simulator both run this same class, passing in how to reply and how to send.

Theory of operation
-------------------
- **Writes** become :class:`~exapyte.kv.Command` proposals. Every request handled in one loop
  iteration is proposed before the core is driven, so they share one Ready: one append message
  per follower and one fsync (group commit). A request waits in ``pending_writes`` under the
  ``(index, term)`` its entry got; when the entry at that index is applied, the client gets the
  state machine's outcome if the term matches, or ``unavailable`` if another leader's entry won
  the index (its own entry can then never commit, so a retry is safe; sessions make it
  exactly-once anyway).
- **Strong reads** use ReadIndex: the leader records its commit index, confirms it is still
  leader with a heartbeat round, and answers once that index is applied. Followers answer
  ``not_leader`` with the leader's id and endpoint, which the client follows. Every read waiting
  here ends: the core answers it or fails it (``fail_reads``: leadership lost, answered with
  ``not_leader`` and the new leader if known, else ``unavailable``; not confirmed within an
  election timeout, answered ``unavailable``), so the client retries elsewhere. A read the core
  has neither answered nor failed after ``READ_HELD_ELECTIONS_MAX`` election timeouts is failed
  here (``reads_expired``, which is never expected to count).
- **Weaker levels** are served by any replica from applied state, within each level's promise:
  ``session`` needs this replica's applied state to hold the entry the client's session token
  names (:meth:`Replica.session_verdict`: applied at least to the token's index, with the token's
  term at that index, from the state machine's term runs, exapyte/kv.py); a replica behind the
  token sends the read to the leader (ReadIndex, then the same check), and one that applied
  another entry at the token's index answers ``session_lost`` (the token's entry was truncated:
  the session's writes may be lost) instead of serving a state without them. ``bounded_staleness``
  needs its applied state within K entries and T ms of the commit its leader stamped, judged on
  the clock when the read is handled (exapyte/data/staleness.py), ``consistent_prefix`` and ``eventual`` are served as they are
  (applied state is always a prefix of the committed log).
- **Durability**: the log is fsynced before anything that depends on it is sent (the ``Ready``
  contract); applying committed entries writes without an fsync of its own (see ``__init__``),
  so a write costs one fsync per node on its way to commit, not two.
- **Snapshots**: :meth:`maintenance` snapshots the state machine and compacts the log once it
  holds more than ``consensus.snapshot_entries`` applied entries.

``unsafe.bugs`` (refused unless ``unsafe.enabled``) switch on known bugs so the harness can show
it catches them: ``stale-reads`` (strong reads answered locally on any node), ``ack-before-fsync``
(a write is acknowledged as soon as the leader appends it, before it is fsynced or committed),
``no-term-check`` (no pre-vote, no check-quorum stickiness; every vote request of the current
term is granted, without the log up-to-date check), ``session-ahead`` (a session read is served
without checking its token), ``token-after-truncate`` (a session token is checked by its index only, and writes are acknowledged at
append as with ``ack-before-fsync``, so that a token can name an entry the next leader truncates),
``bounded-unchecked`` (any replica serves ``bounded_staleness``
without the check), ``bounded-follower-view`` (the old check: K against this replica's own view
of the commit index, no time bound), ``stop-applying`` (the group's highest-named member stops
applying committed entries after :data:`STOP_APPLYING_AFTER` and keeps serving weak reads),
``apply-out-of-order`` (a follower applies the commands of each batch of committed entries in
reverse order, :func:`commands_reversed`, while its applied index stays right).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from exapyte import limits
from exapyte.config import Config
from exapyte.control.group import ControlStateMachine
from exapyte.data.router import Descriptor
from exapyte.data.staleness import LeaderStamps, StalenessBound
from exapyte.distribution.base import GroupSpec
from exapyte.errors import NotLeader, ProposalDropped, ProtocolMisuse, StorageError
from exapyte.kv import Command, Outcome, encode_command
from exapyte.protocol.core import RandomSource
from exapyte.protocol.drive import drive
from exapyte.protocol.registry import make_core
from exapyte.protocol.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    CoreSpec,
    Entry,
    EntryKind,
    HardState,
    PersistedState,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from exapyte.replication.leadership import LeaderPlacement
from exapyte.runtime.service import ReplySink, ServiceBase, outcome_reply
from exapyte.storage import Storage
from exapyte.storage.base import decode_state
from exapyte.wire import (
    CONTROL_GROUP,
    ClientReply,
    ClientRequest,
    ControlOp,
    MembershipOp,
    ReplyCode,
    StatusOp,
    TransferLeaderOp,
)

log = logging.getLogger(__name__)

STOP_APPLYING_AFTER = 20  # unsafe bug stop-applying: the applied index at which the replica stops

# What a session read's token says of this replica's applied state (Replica.session_verdict).
SESSION_HELD = "held"  # the token's entry is applied here (or an index-only token is reached)
SESSION_BEHIND = "behind"  # not applied that far yet
SESSION_LOST = "lost"  # another entry was applied at the token's index: the token's was truncated

# (peer node id, consensus message[, the leader's stamp: commit index, clock ms]); the stamp is
# passed only to a replica given a clock
PeerSink = Callable[..., None]

_CHANGE_KINDS = {
    "add-voter": ConfChangeKind.ADD_VOTER,
    "add-learner": ConfChangeKind.ADD_LEARNER,
    "remove": ConfChangeKind.REMOVE_NODE,
}


def state_image_ok(data: bytes) -> bool:
    """Whether ``data`` is a state image this replica's storage can install (decodes, and every
    record and meta entry is within the storage limits)."""
    try:
        decode_state(data)
    except StorageError:
        return False
    return True


def commands_reversed(entries: Sequence[Entry]) -> list[Entry]:
    """The unsafe bug ``apply-out-of-order``: the same entries at the same indexes and terms, with
    the commands of the client entries (NORMAL, non-empty) in reverse order among themselves.
    The state machine's applied index comes out right; the state does not whenever two commands
    of the batch touch one key (the earlier one's value is left, a cas compares against the wrong
    value), which a weak read and the replicas' final states show."""
    slots = [i for i, e in enumerate(entries) if e.kind == EntryKind.NORMAL and e.data]
    out = list(entries)
    for at, source in zip(slots, reversed(slots), strict=True):
        out[at] = msgspec.structs.replace(entries[at], data=entries[source].data)
    return out


def core_spec(cfg: Config) -> CoreSpec:
    """The consensus core this node's config asks for."""
    c = cfg.consensus
    return CoreSpec(
        protocol=c.protocol,
        node_id=cfg.node_id or "",
        election_timeout_ticks=c.election_timeout_ticks,
        heartbeat_ticks=c.heartbeat_ticks,
        max_inflight_msgs=c.max_inflight_msgs,
        max_entries_per_msg=c.max_entries_per_msg,
        snapshot_chunk_bytes=min(c.snapshot_chunk_bytes, cfg.network.frame_bytes_max // 2),
        pre_vote=c.pre_vote,
        check_quorum=c.check_quorum,
        bugs=tuple(cfg.unsafe.bugs) if cfg.unsafe.enabled else (),
    )


class Replica(ServiceBase):
    """A consensus-backed KV replica. Single-threaded; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        storage: Storage,
        rng: RandomSource,
        *,
        reply: ReplySink,
        send: PeerSink,
        group: GroupSpec | None = None,
        clock_ms: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(cfg, storage, reply)
        # The group this replica belongs to; a node of the centralized strategy has only
        # "default", whose founding voters are the config's initial voters.
        self.group = group if group is not None else GroupSpec("default", cfg.initial_voters())
        if self.group.id == CONTROL_GROUP:
            self.sm = ControlStateMachine(storage, sync=self.sm.sync)
        # Applied state needs no fsync of its own and is stored behind the requests (the state
        # machine's write-behind, stored from idle(), see has_idle_work()): every applied entry
        # is already persisted in the log and committed on a quorum, so writes lost to a crash
        # are re-applied from the log on restart (the applied index travels in the same
        # transaction as the data). Before the log is compacted, sm.snapshot() flushes and
        # compact() commits with fsync.
        self.sm.sync = False
        self.sm.write_behind = True
        self.send_to = send
        self.bugs = frozenset(cfg.unsafe.bugs if cfg.unsafe.enabled else ())
        regions = {n.id: n.region for n in cfg.cluster.nodes}
        self.regions = frozenset(regions.values())
        # Where the replication strategy keeps this group's leadership (its home region, or
        # the region that writes most): checked every few election timeouts.
        self.leadership = LeaderPlacement(
            cfg.replication_strategy, self.group.region, regions.get,
            check_ticks=4 * cfg.consensus.election_timeout_ticks,
        )
        persisted = storage.load_persisted()
        founding = False
        if persisted.hard_state == HardState() and persisted.snapshot is None and not persisted.entries:
            voters = self.group.voters
            if self.node_id in voters:
                founding = True
                persisted = PersistedState(
                    conf=ConfState(voters=voters, learners=self.group.learners)
                )
            # else: a node outside the initial voters starts empty and waits to be added.
        snap = persisted.snapshot
        if snap is not None and self.sm.applied_index < snap.meta.index:
            # The node stopped between storing a received snapshot (which dropped the log up to
            # it) and installing it into the state machine: install it now, or the entries in
            # between could never be applied.
            self.sm.restore(snap.data)
            log.info(
                "%s: state machine at %d restored from the stored snapshot at %d",
                self.node_id, self.sm.applied_index, snap.meta.index,
            )
        hs = persisted.hard_state
        if hs.commit < self.sm.applied_index:
            # Applied entries are committed; the persisted commit index may lag (it is written
            # lazily, see persist()).
            persisted = msgspec.structs.replace(
                persisted, hard_state=msgspec.structs.replace(hs, commit=self.sm.applied_index)
            )
        self.core = make_core(
            core_spec(cfg), persisted, rng, applied=self.sm.applied_index,
            snapshot_check=state_image_ok,
        )
        first = self.group.voters[0] if self.group.voters else None
        if founding and self.group.id != "default" and first == self.node_id:
            # A shard's group is founded with a leader: its first voter campaigns at once (the
            # placement spreads first voters over the nodes), so a node founding many groups
            # does not wait out an election timeout, ticking, for each of them.
            self.core.campaign()
        # index -> (term, requester, request): writes and membership changes awaiting apply
        self.pending_writes: dict[int, tuple[int, Any, ClientRequest]] = {}
        # request id -> (requester, request, tick it arrived), in arrival order
        self.pending_reads: dict[bytes, tuple[Any, ClientRequest, int]] = {}
        self._read_seq = 0
        self._ticks = 0
        self._applied_entry_term = 0  # the term of the last entry applied (stamps, send())
        self._read_held_ticks_max = (
            cfg.consensus.election_timeout_ticks * limits.READ_HELD_ELECTIONS_MAX
        )
        self._deferred_hard_state: HardState | None = None
        self._store_due = False
        # bounded_staleness: the leader's stamps (exapyte/data/staleness.py); without a clock
        # this replica neither stamps what it sends nor serves bounded reads as a follower
        self._clock_ms = clock_ms
        self.staleness = StalenessBound()
        self._leader_stamps = LeaderStamps()
        self._stamps_from: str | None = None  # the leader whose stamps are kept

    # -- helpers ------------------------------------------------------------------------------

    def _leader_endpoint(self, leader: str | None) -> str | None:
        if leader is None or leader == self.node_id:
            return None
        try:
            return self.cfg.node_by_id(leader).endpoint
        except Exception:  # a leader id outside the static cluster file
            return None

    def _redirect(self, identity: Any, req: ClientRequest, leader: str | None) -> None:
        if leader is None or leader == self.node_id:
            self.error(identity, req, ReplyCode.UNAVAILABLE, "no leader is known yet")
        else:
            self.error(
                identity,
                req,
                ReplyCode.NOT_LEADER,
                f"{self.node_id} is not the leader",
                leader_hint=leader,
                leader_endpoint=self._leader_endpoint(leader),
            )

    # -- configuration versions (docs/control-plane.md) ----------------------------------------

    def descriptor(self) -> Descriptor:
        """This group as this replica's applied log says: the members of its configuration
        version (both from the state machine, so they always belong together) and the leader
        this replica follows."""
        conf = self.sm.conf
        spec = GroupSpec(self.group.id, conf.voters, conf.learners, self.group.region)
        leader = self.core.leader
        return Descriptor(spec, conf.version, leader if leader in conf.voters else None)

    def respond(self, identity: Any, req: ClientRequest, reply: ClientReply) -> None:
        version = self.sm.conf_version
        if req.config_version == version:
            self.reply(identity, msgspec.structs.replace(
                reply, config_version=version, group=self.group.id,
            ))
        else:  # the client routed by another version: tell it the current one
            self.reply(identity, msgspec.structs.replace(
                reply, config_version=version, descriptor=self.descriptor(), group=self.group.id,
            ))

    def on_request(self, identity: Any, req: ClientRequest) -> None:
        version = req.config_version
        if (
            version != 0
            and type(version) is int
            and version != self.sm.conf_version
            and not isinstance(req.op, StatusOp)
            and "stale-config" not in self.bugs
        ):
            # Routed by another configuration of this group than the one this replica applied:
            # an older one may send it to a replica that left, a newer one means this replica
            # is behind. Either way the client learns this replica's descriptor and goes on.
            self.count("requests_stale_config")
            self.error(
                identity, req, ReplyCode.STALE_CONFIG,
                f"group {self.group.id} is at configuration {self.sm.conf_version} here; the "
                f"request was routed by configuration {version}",
            )
            return
        super().on_request(identity, req)

    # -- requests -----------------------------------------------------------------------------

    def on_write(self, identity: Any, req: ClientRequest) -> None:
        done = self.sm.cached_outcome(req.client_id, req.seq)
        if done is not None:  # a retry of a write that was already applied
            self.respond(identity, req, self._applied_reply(req, done))
            return
        if len(self.pending_writes) >= limits.PENDING_REQUESTS_MAX:
            self.error(identity, req, ReplyCode.OVERLOADED, "too many writes in flight")
            return
        try:
            index, term = self.core.propose(
                encode_command(Command(req.client_id, req.seq, req.op))  # type: ignore[arg-type]
            )
        except NotLeader as exc:
            self._redirect(identity, req, exc.leader_hint)
            return
        except ProposalDropped as exc:
            self.error(identity, req, ReplyCode.UNAVAILABLE, str(exc))
            return
        self.count("writes_proposed")
        origin = req.origin
        if origin:
            if type(origin) is str and origin in self.regions:
                self.leadership.on_write(origin)
            else:
                self.count("requests_origin_unknown")
        if "ack-before-fsync" in self.bugs or "token-after-truncate" in self.bugs:
            # Known bug: acknowledge now, before persisting or replicating (with the term the
            # entry was proposed in: the session token names it).
            reply = outcome_reply(req, Outcome(ReplyCode.OK, None, 0, index), self.node_id)
            self.respond(identity, req, msgspec.structs.replace(reply, term=term))
            return
        self.pending_writes[index] = (term, identity, req)

    def _applied_reply(self, req: ClientRequest, outcome: Outcome) -> ClientReply:
        """The reply to a write applied earlier (a retry): its outcome, with the term of the
        entry at its index as this replica applied it (0 when that is no longer known)."""
        reply = outcome_reply(req, outcome, self.node_id)
        return msgspec.structs.replace(reply, term=self.sm.term_at(outcome.index) or 0)

    def propose_internal(self, command: Command) -> bool:
        """Propose a command this node makes itself (the control plane's founding batch and
        shard reports); nobody waits on its outcome. False when this replica cannot propose."""
        try:
            self.core.propose(encode_command(command))
        except (NotLeader, ProposalDropped):
            return False
        self.count("writes_proposed")
        return True

    def on_admin(self, identity: Any, req: ClientRequest) -> None:
        op = req.op
        if isinstance(op, ControlOp):
            if self.group.id != CONTROL_GROUP:
                self.error(
                    identity, req, ReplyCode.BAD_REQUEST,
                    f"control-plane commands go to group {CONTROL_GROUP!r}, not {self.group.id!r}",
                )
                return
            self.on_write(identity, req)
            return
        target = op.node if isinstance(op, MembershipOp) else op.to  # type: ignore[union-attr]
        if target not in self.cfg.node_ids():
            self.error(
                identity, req, ReplyCode.BAD_REQUEST,
                f"unknown node {target!r}; allowed: {', '.join(self.cfg.node_ids())}",
            )
            return
        try:
            if isinstance(op, TransferLeaderOp):
                self.core.transfer_leadership(op.to)
                self.respond(
                    identity, req,
                    ClientReply(req.client_id, req.seq, ReplyCode.OK, node=self.node_id,
                                message=f"leadership transfer to {op.to} started"),
                )
                return
            assert isinstance(op, MembershipOp)
            if op.change not in _CHANGE_KINDS:
                self.error(
                    identity, req, ReplyCode.BAD_REQUEST,
                    f"unknown membership change {op.change!r}; allowed: {', '.join(_CHANGE_KINDS)}",
                )
                return
            index, term = self.core.propose_conf_change(ConfChange(_CHANGE_KINDS[op.change], op.node))
        except NotLeader as exc:
            self._redirect(identity, req, exc.leader_hint)
            return
        except ProtocolMisuse as exc:
            self.error(identity, req, ReplyCode.BAD_REQUEST, str(exc))
            return
        except ProposalDropped as exc:
            self.error(identity, req, ReplyCode.UNAVAILABLE, str(exc))
            return
        self.pending_writes[index] = (term, identity, req)

    def on_read(self, identity: Any, req: ClientRequest) -> None:
        level = req.consistency
        if level == "strong" and "stale-reads" not in self.bugs:
            self._read_index(identity, req)
            return
        if level == "session" and "session-ahead" not in self.bugs:
            verdict = self.session_verdict(req)
            if verdict == SESSION_LOST:
                self._session_lost(identity, req)
                return
            if verdict == SESSION_BEHIND:
                # This replica has not caught up with the client's session: the leader can.
                if self.core.role is Role.LEADER:
                    self._read_index(identity, req)
                else:
                    self._redirect(identity, req, self.core.leader)
                return
        if level == "bounded_staleness" and "bounded-unchecked" not in self.bugs and not self._within_staleness_bound():
            if self.core.role is Role.LEADER:
                self._read_index(identity, req)
            else:
                self._redirect(identity, req, self.core.leader)
            return
        self.read_local(identity, req)

    def session_verdict(self, req: ClientRequest) -> str:
        """Whether this replica's applied state holds the entry ``req``'s session token names:
        :data:`SESSION_HELD`, :data:`SESSION_BEHIND` (not applied that far) or
        :data:`SESSION_LOST` (the entry applied at the token's index has another term: the
        token's entry was truncated, and a state "at" that index may lack the session's
        writes). A token of the older form (term 0) is judged by its index alone, and so is one
        whose index is older than the terms this state machine remembers (counted:
        ``session_terms_unknown``)."""
        index = req.session_index
        if self.sm.applied_index < index:
            return SESSION_BEHIND
        if req.session_term == 0 or index == 0:
            return SESSION_HELD
        term = self.sm.term_at(index)
        if term is None:
            self.count("session_terms_unknown")
            return SESSION_HELD
        if term == req.session_term:
            return SESSION_HELD
        if "token-after-truncate" in self.bugs:
            # Known bug: indexes compared only; the token's entry is gone and this is served.
            self.count("session_tokens_reused")
            return SESSION_HELD
        return SESSION_LOST

    def _session_lost(self, identity: Any, req: ClientRequest) -> None:
        self.count("reads_session_lost")
        self.error(
            identity, req, ReplyCode.SESSION_LOST,
            f"the session token [{req.session_term}, {req.session_index}] names an entry group "
            f"{self.group.id} no longer has: index {req.session_index} holds an entry of term "
            f"{self.sm.term_at(req.session_index)} here, so the token's entry was truncated and "
            f"the session's writes may be lost; start a new session",
        )

    def _within_staleness_bound(self) -> bool:
        """Whether this replica's applied state is within the bounded_staleness bounds of the
        group's commit, as its leader stamped it (exapyte/data/staleness.py). A leader never
        judges itself fresh: one that was paused or cut off may have been deposed without
        knowing it yet (it steps down only when its ticks run), and its state then lags what
        its successor committed, so the caller serves its bounded reads through ReadIndex."""
        if self.core.role is Role.LEADER:
            return False
        if "bounded-follower-view" in self.bugs:  # known bug: the follower's own commit, no T
            return self.core.status().commit - self.sm.applied_index <= self.cfg.data_plane.staleness_versions_max
        if self._clock_ms is None or self.core.leader is None or self.core.leader != self._stamps_from:
            return False
        dp = self.cfg.data_plane
        return self.staleness.within(
            self.sm.applied_index, self._clock_ms(), dp.staleness_versions_max,
            dp.staleness_ms_max, dp.clock_skew_ms_max,
        )

    def _read_index(self, identity: Any, req: ClientRequest) -> None:
        if len(self.pending_reads) >= limits.PENDING_REQUESTS_MAX:
            self.error(identity, req, ReplyCode.OVERLOADED, "too many reads in flight")
            return
        self._read_seq += 1  # never reused: the core and pending_reads know a read by its id
        request_id = self._read_seq.to_bytes(8, "big")
        try:
            self.core.read(request_id)
        except NotLeader as exc:
            self._redirect(identity, req, exc.leader_hint)
            return
        self.pending_reads[request_id] = (identity, req, self._ticks)

    def on_peer(self, msg: Any, stamp: tuple[int, float] | None = None) -> None:
        if stamp is not None and self.core.is_from_leader(msg):
            frm = msg.frm
            if frm != self._stamps_from:
                self.staleness.clear()
                self._stamps_from = frm
            self.staleness.on_stamp(*stamp)
        self.core.step(msg)

    def tick(self) -> None:
        self._store_due = True
        self._ticks += 1
        self.core.tick()
        if self.pending_reads:
            self._expire_reads()
        to = self.leadership.tick(
            leader=self.core.role is Role.LEADER, me=self.node_id,
            voters=lambda: self.core.status().conf.voters,
        )
        if to is not None:
            try:
                self.core.transfer_leadership(to)
            except (NotLeader, ProtocolMisuse) as exc:
                log.info("%s: group %s keeps its leader here: %s", self.node_id, self.group.id, exc)
                return
            self.count("leader_placement_transfers")
            log.info("%s: group %s hands leadership to %s, in region %s (replication %s)",
                     self.node_id, self.group.id, to, self.leadership.target(),
                     self.leadership.strategy)

    def _expire_reads(self) -> None:
        # The core answers or fails every read within an election timeout; this only guards
        # against a read it lost, so that no client waits on one forever.
        oldest = self._ticks - self._read_held_ticks_max
        expired = []
        for request_id, (_, _, arrived) in self.pending_reads.items():
            if arrived > oldest:
                break
            expired.append(request_id)
        if not expired:
            return
        log.warning(
            "%s: %d read(s) neither answered nor failed by the core", self.node_id, len(expired)
        )
        for request_id in expired:
            identity, req, _ = self.pending_reads.pop(request_id)
            self.count("reads_expired")
            self.error(identity, req, ReplyCode.UNAVAILABLE, "the read was not confirmed; retry")

    # -- driving the core (this object is the drive() host) ------------------------------------

    def flush(self, before_sync: Callable[[], None] | None = None) -> None:
        """Drive the core until it has nothing left; ``before_sync`` runs before each fsync of
        the log (the group table sends the peer messages queued so far, so that a leader's
        appends leave while it syncs)."""
        while drive(self.core, self, before_sync):
            pass

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool,
    ) -> None:
        if not sync and not entries and snapshot is None:
            # Only the commit index moved. It is recomputed after a restart if lost, so it
            # rides along with the next write instead of costing a transaction of its own.
            self._deferred_hard_state = hard_state
            return
        if hard_state is None:
            hard_state = self._deferred_hard_state
        self._deferred_hard_state = None
        self.storage.persist(hard_state, entries, snapshot, sync=sync)

    def send(self, messages: Sequence[Any]) -> None:
        if self._clock_ms is None:
            for msg in messages:
                self.send_to(msg.to, msg)
            return
        # A leader stamps what it sends, once per Ready, with its commit index and the time of
        # its newest quorum-confirmed heartbeat round (exapyte/data/staleness.py), once its
        # commit index is the group's: when it has applied an entry of its own term (each
        # protocol's leader commits one first: Raft's empty entry, the NOOP of a Paxos round or
        # a ZAB epoch), everything committed before it is committed here too. Until then a new
        # leader's commit index may lag what its predecessor committed, and a stamp of it would
        # make a follower's old state look fresh.
        core = self.core
        stamp = None
        if core.role is Role.LEADER and self._applied_entry_term == core.term:
            if "bounded-send-time" in self.bugs:  # known bug: stamped with the send time
                stamp = (core.status().commit, self._clock_ms())
            else:
                stamp = self._leader_stamps.stamp(
                    core.term, core.status().commit, core.leadership_rounds(), self._clock_ms(),
                )
        for msg in messages:
            self.send_to(msg.to, msg, stamp)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self._applied_entry_term = snapshot.meta.term
        self.sm.restore(snapshot.data)
        self.count("snapshots_installed")
        # Writes waiting at indexes the snapshot covers can no longer be matched to an outcome.
        for index in [i for i in self.pending_writes if i <= snapshot.meta.index]:
            _, identity, req = self.pending_writes.pop(index)
            done = self.sm.cached_outcome(req.client_id, req.seq)
            if done is not None:
                self.respond(identity, req, self._applied_reply(req, done))
            else:
                self.error(identity, req, ReplyCode.UNAVAILABLE, "superseded by a snapshot; retry")

    def apply(self, entries: Sequence[Entry]) -> None:
        # Committed entries are durable on a quorum: clients are answered as soon as the
        # outcomes are known, before the state machine's own (unsynced) write.
        if "stop-applying" in self.bugs and self.sm.applied_index >= STOP_APPLYING_AFTER \
                and self.node_id == max(self.members()):
            return  # known bug: committed entries are dropped here, reads still served
        if entries:
            self._applied_entry_term = entries[-1].term
        if "apply-out-of-order" in self.bugs and self.core.role is not Role.LEADER:
            entries = commands_reversed(entries)  # known bug: the batch's commands run backwards
        self.sm.apply(entries, before_write=self._answer_writes)

    def _answer_writes(self, results: Sequence[tuple[Entry, Outcome | None]]) -> None:
        for entry, outcome in results:
            waiting = self.pending_writes.pop(entry.index, None)
            if waiting is None:
                continue
            term, identity, req = waiting
            if term == entry.term and outcome is not None:
                reply = outcome_reply(req, outcome, self.node_id)
                self.respond(identity, req, msgspec.structs.replace(reply, term=entry.term))
            elif term == entry.term and entry.kind == EntryKind.CONF_CHANGE:
                self.respond(
                    identity, req,
                    ClientReply(req.client_id, req.seq, ReplyCode.OK, index=entry.index,
                                node=self.node_id, message="membership change applied"),
                )
            else:
                self.error(
                    identity, req, ReplyCode.UNAVAILABLE,
                    "leadership changed before the write committed; retry",
                )

    def answer_reads(self, read_states: Sequence[ReadState]) -> None:
        for rs in read_states:
            waiting = self.pending_reads.pop(rs.request_id, None)
            if waiting is None:
                continue
            identity, req, _ = waiting
            if req.consistency == "session" and "session-ahead" not in self.bugs:
                # The commit index the leader confirmed holds every entry a correct cluster
                # gave out a token for; a token past it (a write acknowledged before it
                # committed) or naming a truncated entry is not served from this state.
                verdict = self.session_verdict(req)
                if verdict == SESSION_LOST:
                    self._session_lost(identity, req)
                    continue
                if verdict == SESSION_BEHIND:
                    self.error(
                        identity, req, ReplyCode.UNAVAILABLE,
                        f"group {self.group.id} has not committed the session token's entry "
                        f"[{req.session_term}, {req.session_index}] yet; retry",
                    )
                    continue
            self.read_local(identity, req)

    def fail_reads(self, request_ids: Sequence[bytes]) -> None:
        leading = self.core.role is Role.LEADER
        for request_id in request_ids:
            waiting = self.pending_reads.pop(request_id, None)
            if waiting is None:
                continue
            identity, req, _ = waiting
            self.count("reads_failed")
            if leading:
                self.error(
                    identity, req, ReplyCode.UNAVAILABLE,
                    "the read was not confirmed by a quorum within an election timeout; retry",
                )
            else:  # leadership was lost: the reads can no longer be confirmed here
                self._redirect(identity, req, self.core.leader)

    # -- quiescence (see exapyte/runtime/groups.py) --------------------------------------------

    def members(self) -> tuple[str, ...]:
        """The group's members as this replica's core knows them (voters and learners)."""
        conf = self.core.status().conf
        return conf.voters + conf.learners + conf.voters_outgoing

    def may_quiesce(self) -> bool:
        """Whether this replica may stop ticking: no request waits on it and its core is
        quiescent."""
        return not self.pending_writes and not self.pending_reads and self.core.quiescent()

    # -- maintenance --------------------------------------------------------------------------

    def maintenance(self) -> None:
        applied = self.sm.applied_index
        first = self.core.status().first_index
        if applied - first + 1 <= self.cfg.consensus.snapshot_entries:
            return
        try:
            full = self.core.compact(Snapshot(SnapshotMeta(index=applied), self.sm.snapshot()))
        except ProtocolMisuse as exc:
            log.warning("snapshot at %d skipped: %s", applied, exc)
            return
        self.storage.compact(full)
        self.count("snapshots_taken")
        log.info("%s: snapshot at index %d, log compacted", self.node_id, applied)

    def has_idle_work(self) -> bool:
        # Small stores cost their transaction more than their rows: store once enough is
        # pending, or once a tick has passed since the last store.
        return self.sm.pending_ops >= limits.WRITE_BEHIND_IDLE_OPS or (
            self._store_due and self.sm.has_pending
        )

    def idle(self) -> None:
        self.sm.flush()
        self._store_due = False

    def close(self) -> None:
        self.sm.flush()
        if self._deferred_hard_state is not None:
            self.storage.persist(self._deferred_hard_state, (), None, sync=True)
            self._deferred_hard_state = None
        super().close()

    def status(self) -> dict[str, Any]:
        status = super().status()
        st = self.core.status()
        status.update(
            group=self.group.id,
            role=str(st.role),
            term=st.term,
            leader=st.leader,
            commit=st.commit,
            first_index=st.first_index,
            last_index=st.last_index,
            voters=list(st.conf.voters),
            learners=list(st.conf.learners),
            pending_writes=len(self.pending_writes),
            pending_reads=len(self.pending_reads),
            applied_not_stored=self.sm.pending_ops,
            dropped=self.core.dropped,
        )
        return status
