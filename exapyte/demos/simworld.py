"""A simulated cluster placed on a topology, with a meter at the transport: the consensus demo's
laboratory.

Theory of operation
-------------------
:class:`TopologyWorld` is the simulator's :class:`~exapyte.sim.world.World` (the product
``Replica`` on simulated storage, the simulated network and clock, the invariant judges after
every step), with three differences that only a demo needs:

- **Placement.** The i-th simulated node (``n1``, ``n2``, ...) lives in the region of the i-th
  node of a topology file (:mod:`exapyte.control.topology`), every node-to-node link takes the
  topology's one-way latency (a small LAN delay inside a region), and each client sits in a
  region: its links to that region's nodes are LAN links, to the others WAN links. The delays
  are set after the network drew its own (:meth:`~exapyte.sim.network.Network.set_delay` draws
  nothing), so every other random choice of the seed stays what it was.
- **Timers from the topology.** A WAN round trip of 180 ms would outlast the simulator's LAN
  election timeout (100 ms): the nodes run the topology's ``election_timeout_ticks`` and
  ``heartbeat_ticks`` (``network.tick_ms`` must be the simulator's 10 ms).
- **The clock.** Every node reads the simulated clock, through the simulator's own boot
  (:meth:`World._boot <exapyte.sim.world.World._boot>` passes ``clock_ms``): leaders stamp what
  they send and followers serve ``bounded_staleness`` reads within the ``data_plane`` bounds
  (exapyte/data/staleness.py). The simulator's bounds are sized for its LAN delays; a demo
  passes its own (``data_plane``) for the topology's WAN latencies. One clock: no skew.
- **No scripted run.** Instead of :meth:`World.run` (random faults, then heal and judge), the
  demo drives the clock itself (:meth:`run_for`, :meth:`run_until`) and injects the faults it
  means (:meth:`crash`, :meth:`restart`, :meth:`cut`, :meth:`heal_links`). Clients write in a
  closed loop (:class:`WriteLoop`) and their latencies are recorded.

The meter (:class:`Meter`) sees every message the network is handed (its ``on_sent`` hook),
before any fate: its kind (the consensus message's tag, ``node.beat``, ``client.request`` or
``client.reply``) and its size as the real wire codec frames it (:class:`~exapyte.wire.Codec`).
Peer messages are framed one per frame here; a real node may batch several peer messages for one
node in one frame (``PeerBatch``), which saves a few bytes of envelope per message.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from exapyte import distribution as dist
from exapyte.config import Config, loads
from exapyte.control import topology as topo
from exapyte.errors import ExapyteError
from exapyte.protocol.types import Role
from exapyte.sim.faults import Fault
from exapyte.sim.judge import StepJudge
from exapyte.sim.network import Delay
from exapyte.sim.scheduler import NS_PER_MS, NS_PER_S, derive_seed
from exapyte.sim.workload import Op, SimClient
from exapyte.sim.world import TICK_MS, SimNode, SimSpec, World, sim_config
from exapyte.wire import (
    ClientReply,
    ClientRequest,
    Codec,
    DropGroupOp,
    MembershipOp,
    NodeBeat,
    PeerMessage,
    ReplyCode,
    TransferLeaderOp,
)

LAN_DELAY_MS = (0.2, 1.0)  # one-way delay inside a region (the topology says 0)
WAN_JITTER = 0.05  # a WAN link's delay is uniform in [latency, latency * (1 + this)]
CLIENT_ATTEMPT_TIMEOUT_MS = 1_500  # above any WAN commit round trip of the topology
CLIENT_DEADLINE_MS = 10_000  # a write retries this long before it is given up
ADMIN_PROCESS = 9_999  # the process number of the admin endpoint (c9999), above any client's
# A placed cluster (distribution demo) compacts its logs now and then, so that a replica added
# by a rebalance catches up by snapshot, in chunks of a realistic size.
PLACED_SNAPSHOT_ENTRIES = 300
PLACED_SNAPSHOT_CHUNK_BYTES = 16 * 1024
BACKGROUND_KINDS = frozenset({
    # sent on a timer whether or not anything is written: not part of a write's cost
    "node.beat",
    "raft.heartbeat", "raft.heartbeat_resp",
    "paxos.heartbeat", "paxos.heartbeat_ack",
    "zab.ping", "zab.ping_ack",
})


def message_kind(msg: Any) -> str:
    """The meter's name for a message on the simulated network."""
    if isinstance(msg, PeerMessage):
        tag = type(msg.msg).__struct_config__.tag
        return str(tag)
    if isinstance(msg, NodeBeat):
        return "node.beat"
    if isinstance(msg, tuple) and len(msg) == 3 and isinstance(msg[2], ClientRequest):
        return "client.request"
    if isinstance(msg, tuple) and len(msg) == 2 and isinstance(msg[1], ClientReply):
        return "client.reply"
    return type(msg).__name__


def frame_body(msg: Any) -> Any:
    """What the real transport would frame for this simulated message."""
    if isinstance(msg, tuple):
        return msg[-1]  # (process, attempt, request) or (attempt, reply): the payload
    return msg


def placed_config(
    topo_cfg: Config,
    node_ids: Sequence[str],
    region: Mapping[str, str],
    protocol: str,
    *,
    distribution: Mapping[str, Any],
    founders: Sequence[str],
    replication: str | None = None,
    data_plane: Mapping[str, Any] | None = None,
) -> Config:
    """The simulated nodes' config for a placed cluster: the simulator's (memory storage, its
    ports) with every node in its region, the topology's regions, links and consensus timers,
    ``distribution`` as the ``distribution`` section, ``replication`` as
    ``replication.strategy`` (None: the distribution's default), ``founders`` as the initial
    voters (a spare node starts empty and joins by a rebalance), and ``data_plane``'s keys
    over the simulator's ``data_plane`` section (the bounded_staleness bounds)."""
    consensus = topo_cfg.consensus
    base = sim_config(
        len(node_ids), protocol=protocol,
        election_timeout_ticks=consensus.election_timeout_ticks,
        heartbeat_ticks=consensus.heartbeat_ticks,
    )
    raw = msgspec.to_builtins(base)
    for node in raw["cluster"]["nodes"]:
        node["region"] = region[node["id"]]
    raw["cluster"]["regions"] = msgspec.to_builtins(topo_cfg.cluster.regions)
    raw["cluster"]["links"] = msgspec.to_builtins(topo_cfg.cluster.links)
    raw["consensus"].update(
        initial_voters=list(founders),
        snapshot_entries=PLACED_SNAPSHOT_ENTRIES,
        snapshot_chunk_bytes=PLACED_SNAPSHOT_CHUNK_BYTES,
    )
    raw["distribution"] = dict(distribution)
    if replication is not None:
        raw["replication"] = {"strategy": replication}
    raw["data_plane"].update(data_plane or {})
    raw.pop("node_id", None)
    raw.pop("region_id", None)
    return loads(json.dumps(raw), source="<placed simulator>")


@dataclass
class Meter:
    """Counts of messages and framed bytes per kind, while :attr:`on` is set."""

    on: bool = False
    messages: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    codec: Codec = field(default_factory=Codec)

    def __call__(self, frm: str, to: str, msg: Any) -> None:
        if not self.on:
            return
        kind = message_kind(msg)
        size = len(self.codec.encode(frame_body(msg)))
        self.messages[kind] = self.messages.get(kind, 0) + 1
        self.bytes[kind] = self.bytes.get(kind, 0) + size

    def reset(self) -> None:
        self.messages.clear()
        self.bytes.clear()

    def totals(self, *, peer_only: bool = True, background: bool | None = None) -> tuple[int, int]:
        """(messages, bytes) over the kinds selected: peer kinds only (no client traffic), and
        background kinds only (True), write-path kinds only (False) or both (None)."""
        msgs = size = 0
        for kind, count in self.messages.items():
            if peer_only and kind.startswith("client."):
                continue
            if background is not None and (kind in BACKGROUND_KINDS) != background:
                continue
            msgs += count
            size += self.bytes[kind]
        return msgs, size


@dataclass
class WriteLoop:
    """One closed-loop writer: a new write as soon as the previous one completes."""

    client: SimClient
    region: str
    key: str
    latencies_ms: list[float] = field(default_factory=list)
    acked_at_ns: list[int] = field(default_factory=list)
    failed: int = 0
    running: bool = False
    writes_max: int | None = None
    _counter: int = 0
    _started_ns: int = 0

    def start(self) -> None:
        self.running = True
        self._next()

    def stop(self) -> None:
        self.running = False

    def _next(self) -> None:
        if not self.running or self.client.busy:
            return
        if self.writes_max is not None and self._counter >= self.writes_max:
            self.running = False
            return
        self._counter += 1
        self._started_ns = self.client.sched.now_ns
        self.client.start(Op("write", self.key, f"{self.client.process}-{self._counter}"))

    def on_done(self, client: SimClient) -> None:
        kind = client.result[0] if client.result is not None else "fail"
        now = client.sched.now_ns
        if kind == "ok":
            self.latencies_ms.append((now - self._started_ns) / NS_PER_MS)
            self.acked_at_ns.append(now)
        else:
            self.failed += 1
        self._next()


def serving_term(node: SimNode) -> int | None:
    """The term ``node`` leads and serves in (it committed an entry of that term), or None."""
    if not node.up:
        return None
    for _, replica in node.replicas():  # the first group: the only one of a one-group world
        return replica_serving_term(replica)
    return None


class TopologyWorld(World):
    """See the module docstring. ``graph`` is a topology (:func:`exapyte.control.topology.load`)
    and ``topo_cfg`` the config it was read from (for its consensus timers)."""

    def __init__(
        self,
        spec: SimSpec,
        graph: Any,
        topo_cfg: Config,
        *,
        distribution: Mapping[str, Any] | None = None,
        spares: Sequence[str] = (),
        replication: str | None = None,
        data_plane: Mapping[str, Any] | None = None,
    ) -> None:
        topo_nodes = [n.id for n in topo_cfg.cluster.nodes]
        if len(topo_nodes) + len(spares) != spec.nodes:
            raise ValueError(
                f"the topology has {len(topo_nodes)} nodes and {len(spares)} spare(s), the spec "
                f"{spec.nodes}"
            )
        if topo_cfg.network.tick_ms != TICK_MS:
            raise ValueError(
                f"field 'network.tick_ms' of the topology is {topo_cfg.network.tick_ms}; the "
                f"simulator ticks every {TICK_MS} ms"
            )
        super().__init__(spec)
        consensus = topo_cfg.consensus
        self.election_timeout_ticks = consensus.election_timeout_ticks
        self.graph = graph
        self.topo_node = dict(zip(self.node_ids, topo_nodes, strict=False))
        self.region = {n: topo.region_of(graph, t) for n, t in self.topo_node.items()}
        for node_id, region in zip(self.node_ids[len(topo_nodes):], spares, strict=True):
            if region not in self.region.values():
                raise ValueError(f"spare region {region!r} holds no node of the topology")
            self.region[node_id] = region
        self.regions = list(dict.fromkeys(self.region[n] for n in self.node_ids))
        if distribution is None and not spares and replication is None and data_plane is None:
            self.cfg = sim_config(
                spec.nodes,
                protocol=spec.protocol,
                election_timeout_ticks=consensus.election_timeout_ticks,
                heartbeat_ticks=consensus.heartbeat_ticks,
            )
        else:
            self.cfg = placed_config(
                topo_cfg, self.node_ids, self.region, spec.protocol,
                distribution=distribution or {}, founders=self.node_ids[: len(topo_nodes)],
                replication=replication, data_plane=data_plane,
            )
            self.strategy, placement = dist.from_config(self.cfg)
            self.placement = placement.groups
            self.group_members = {g.id: g.members for g in self.placement}
            self.judges = {g.id: StepJudge() for g in self.placement}
        self.meter = Meter()
        self.network.on_sent = self.meter
        self.clients_by_endpoint: dict[str, Any] = {}  # SimClient or SimAdmin, by endpoint
        self.endpoint_region: dict[str, str] = {}
        self.loops: list[WriteLoop] = []
        # the serving leader of the highest term seen so far, and when it began to serve
        self.serving: tuple[str, int] | None = None
        self.serving_since_ns = 0
        self.leader_changes: list[tuple[int, str, int]] = []  # (time, node, term)
        # (process, seq, node) -> (served by a follower, age ms of the state its leader's
        # stamps prove): one entry per weak read answered, taken by take_weak_read
        self.weak_served: dict[tuple[int, int, str], tuple[bool, float | None]] = {}
        for a in self.node_ids:
            for b in self.node_ids:
                if a != b:
                    self.network.set_delay(a, b, self._delay(self.region[a], self.region[b]))

    # --- placement ------------------------------------------------------------------------------

    def _delay(self, region_a: str, region_b: str) -> Delay:
        if region_a == region_b:
            return Delay("uniform", *LAN_DELAY_MS)
        ms = self.region_latency_ms(region_a, region_b)
        return Delay("uniform", ms, ms * (1.0 + WAN_JITTER))

    def region_latency_ms(self, region_a: str, region_b: str) -> float:
        if region_a == region_b:
            return 0.0
        a = next(n for n in self.node_ids if self.region[n] == region_a)
        b = next(n for n in self.node_ids if self.region[n] == region_b)
        return float(topo.latency_ms(self.graph, self.topo_node[a], self.topo_node[b]))

    # --- driving --------------------------------------------------------------------------------

    def start(self) -> None:
        """Boot every node."""
        for node_id in self.node_ids:
            self._boot(self.nodes[node_id])

    def run_for(self, seconds: float) -> None:
        self.sched.run_until(self.sched.now_ns + int(seconds * NS_PER_S))

    def run_until(self, predicate: Callable[[], bool], timeout_s: float, poll_ms: float = 10.0) -> bool:
        """Advance the clock until ``predicate()`` holds (checked every ``poll_ms``); False if it
        did not within ``timeout_s``."""
        deadline = self.sched.now_ns + int(timeout_s * NS_PER_S)
        step = int(poll_ms * NS_PER_MS)
        while self.sched.now_ns < deadline:
            if predicate():
                return True
            self.sched.run_until(min(deadline, self.sched.now_ns + step))
        return predicate()

    @property
    def now_s(self) -> float:
        return self.sched.now_ns / NS_PER_S

    def add_writer(self, region: str, key: str, writes_max: int | None = None) -> WriteLoop:
        """A closed-loop writer sitting in ``region`` (not started)."""
        holder: list[WriteLoop] = []
        client = self.add_client(region, lambda c: holder[0].on_done(c))
        loop = WriteLoop(client, region, key, writes_max=writes_max)
        holder.append(loop)
        self.loops.append(loop)
        return loop

    def add_client(
        self, region: str, on_done: Callable[[SimClient], None], *, routed: bool = False
    ) -> SimClient:
        """A client sitting in ``region``: LAN links to that region's nodes, WAN to the others.
        ``routed``: it sends each key to its shard's group (the placement's members), else to
        the one group every node hosts."""
        process = len(self.clients_by_endpoint)
        client = SimClient(
            process,
            self.sched,
            random.Random(derive_seed(self.spec.seed, "demo-client", process)),
            self.node_ids,
            self.history,
            self._client_send,
            on_done,
            deadline_ms=CLIENT_DEADLINE_MS,
            attempt_timeout_ms=CLIENT_ATTEMPT_TIMEOUT_MS,
            route=self._route if routed else None,
        )
        client.origin = region
        self.clients_by_endpoint[client.endpoint] = client
        self.endpoint_region[client.endpoint] = region
        self._place_endpoint(client.endpoint, region)
        return client

    def _place_endpoint(self, endpoint: str, region: str) -> None:
        for node_id in self.node_ids:
            delay = self._delay(region, self.region[node_id])
            self.network.set_delay(endpoint, node_id, delay)
            self.network.set_delay(node_id, endpoint, delay)

    def region_of_endpoint(self, endpoint: str) -> str:
        """The region of a node or of a client endpoint."""
        return self.region.get(endpoint) or self.endpoint_region[endpoint]

    # --- faults ---------------------------------------------------------------------------------

    def crash(self, node_id: str) -> Fault:
        now = self.sched.now_ns
        fault = Fault(now, now, "crash", node=node_id)
        self._fault_start(fault)
        return fault

    def restart(self, fault: Fault) -> None:
        self._fault_end(fault)

    def cut(self, links: set[tuple[str, str]]) -> Fault:
        """Cut these links, both directions of each."""
        both = {(a, b) for a, b in links} | {(b, a) for a, b in links}
        now = self.sched.now_ns
        fault = Fault(now, now, "partition", shape="demo", links=tuple(sorted(both)))
        self._fault_start(fault)
        return fault

    def heal_links(self, fault: Fault) -> None:
        self._fault_end(fault)

    # --- weak reads: who served them ------------------------------------------------------------

    def _weak_read_served(self, process: int, reply: ClientReply, node_id: str, replica: Any) -> None:
        """A record of this read for its client: whether a follower served it and, if so, how
        old the state it read was by its leader's stamps (the clock now minus the ``as_of`` of
        the newest stamp its applied index covers, the very age a ``bounded_staleness`` check
        compares with T; None with no such stamp)."""
        follower = replica.core.role is not Role.LEADER
        age_ms: float | None = None
        if follower:
            as_of = replica.staleness.fresh_as_of(int(replica.sm.applied_index))
            age_ms = None if as_of is None else self._clock_ms() - as_of
        self.weak_served[(process, reply.seq, node_id)] = (follower, age_ms)

    def take_weak_read(self, process: int, seq: int, node_id: str) -> tuple[bool, float | None] | None:
        """What :meth:`_weak_read_served` recorded of the weak read of ``process``'s operation
        ``seq`` that ``node_id`` answered (removed), or None if none was recorded."""
        return self.weak_served.pop((process, seq, node_id), None)

    # --- what the cluster looks like ------------------------------------------------------------

    def _after(self, node: SimNode) -> None:
        super()._after(node)
        term = serving_term(node)
        if term is not None and (self.serving is None or term > self.serving[1]):
            self.serving = (node.id, term)
            self.serving_since_ns = self.sched.now_ns
            self.leader_changes.append((self.sched.now_ns, node.id, term))

    def leader(self) -> tuple[str, int] | None:
        """The up node that leads the highest term and has committed an entry of that term (so
        it serves writes), with its term; None while there is none."""
        best: tuple[str, int] | None = None
        for node_id in self.node_ids:
            node = self.nodes[node_id]
            if node.paused:
                continue
            term = serving_term(node)
            if term is not None and (best is None or term > best[1]):
                best = (node_id, term)
        return best

    def wait_new_leader(self, above_term: int, timeout_s: float) -> tuple[str, int] | None:
        """Run until a leader of a term above ``above_term`` serves (checked after every event,
        so the clock stops at the very event); None if none did within ``timeout_s``."""

        def elected() -> bool:
            return self.serving is not None and self.serving[1] > above_term

        if not elected():
            self.sched.run_until(self.sched.now_ns + int(timeout_s * NS_PER_S), stop=elected)
        return self.serving if elected() else None

    def role_of(self, node_id: str) -> Role | None:
        node = self.nodes[node_id]
        for _, replica in node.replicas():
            return replica.core.role
        return None

    def transfer_to(self, target: str, timeout_s: float = 10.0) -> bool:
        """Make ``target`` the serving leader (leadership transfer, retried); False if it could
        not within ``timeout_s``."""
        deadline = self.now_s + timeout_s
        while self.now_s < deadline:
            if not self.run_until(lambda: self.leader() is not None, deadline - self.now_s):
                return False
            current = self.leader()
            assert current is not None
            if current[0] == target:
                return True
            node = self.nodes[current[0]]
            for _, replica in node.replicas():
                try:
                    replica.core.transfer_leadership(target)
                except ExapyteError:  # refused (one already under way, not leader): retry
                    pass
            self._after(node)
            self.run_until(
                lambda: (lead := self.leader()) is not None and lead[0] == target,
                timeout_s=min(2.0, max(0.0, deadline - self.now_s)),
            )
        return False

    # --- many groups ----------------------------------------------------------------------------

    def group_leader(self, group: str) -> tuple[str, int] | None:
        """The up node that leads ``group`` in the highest term and has committed an entry of
        that term (it serves), with its term; None while there is none."""
        best: tuple[str, int] | None = None
        for node_id in self.node_ids:
            node = self.nodes[node_id]
            if node.paused or not node.up:
                continue
            assert node.table is not None
            replica = node.table.replicas.get(group)
            term = None if replica is None else replica_serving_term(replica)
            if term is not None and (best is None or term > best[1]):
                best = (node_id, term)
        return best

    def group_replica(self, group: str, node_id: str) -> Any:
        """``node_id``'s replica of ``group`` (None: not hosted, or the node is down)."""
        table = self.nodes[node_id].table
        return None if table is None else table.replicas.get(group)

    def groups(self) -> tuple[str, ...]:
        return tuple(g.id for g in self.placement)

    def all_groups_led(self) -> bool:
        return all(self.group_leader(g) is not None for g in self.groups())


def replica_serving_term(replica: Any) -> int | None:
    """The term ``replica`` leads and serves in (it committed an entry of that term), or None."""
    view = replica.core.observe()
    if not view.is_leader or view.commit <= view.offset:
        return None
    position = view.commit - view.offset - 1
    if position >= len(view.entries) or view.entries[position].term != view.term:
        return None
    return int(view.term)


class SimAdmin:
    """:class:`exapyte.control.rebalance.Admin` over a :class:`TopologyWorld`: the very admin
    requests ``--client member ...`` sends (``MembershipOp``, ``TransferLeaderOp``,
    ``DropGroupOp``), from an admin endpoint in ``region`` over the simulated network, each
    waited for on the simulated clock (``wait`` advances it). Pass ``sleep=world.run_for`` and
    ``clock=lambda: world.now_s`` to :func:`~exapyte.control.rebalance.execute`."""

    def __init__(self, world: TopologyWorld, region: str, timeout_s: float = 20.0) -> None:
        self.world = world
        self.process = ADMIN_PROCESS
        self.endpoint = f"c{self.process}"
        self.timeout_s = timeout_s
        self.seq = 0
        self.reply: ClientReply | None = None
        world.clients_by_endpoint[self.endpoint] = self
        world.endpoint_region[self.endpoint] = region
        world._place_endpoint(self.endpoint, region)

    def on_reply(self, attempt: int, reply: ClientReply) -> None:
        if reply.seq == self.seq:
            self.reply = reply

    def request(self, op: Any, group: str, node: str, *, follow: bool = True) -> ClientReply:
        """Send ``op`` for ``group`` to ``node`` and wait for the answer (following redirects
        when ``follow``); raises RebalanceError on silence or refusal."""
        from exapyte.control.rebalance import RebalanceError

        deadline = self.world.now_s + self.timeout_s
        target = node
        while True:
            self.seq += 1
            self.reply = None
            req = ClientRequest("sim-admin", self.seq, op, consistency="strong", group=group)
            self.world.network.send(self.endpoint, target, (self.process, 1, req))
            self.world.run_until(lambda: self.reply is not None, max(0.0, deadline - self.world.now_s),
                                 poll_ms=1.0)
            reply = self.reply
            if reply is None:
                raise RebalanceError(f"{group}: {type(op).__name__} to {target} went unanswered")
            if reply.code in (ReplyCode.OK, ReplyCode.NOT_FOUND):
                return reply
            retry = follow and reply.code in (ReplyCode.NOT_LEADER, ReplyCode.UNAVAILABLE)
            if not retry or self.world.now_s >= deadline:
                raise RebalanceError(f"{group}: {type(op).__name__} refused: {reply.code} {reply.message}")
            if reply.leader_hint:
                target = reply.leader_hint
            self.world.run_for(0.05)

    # -- rebalance.Admin -------------------------------------------------------------------------

    def groups(self) -> dict[str, Any]:
        from exapyte.control.rebalance import GroupState

        out: dict[str, Any] = {}
        for group in self.world.groups():
            lead = self.world.group_leader(group)
            if lead is None:
                continue
            replica = self.world.group_replica(group, lead[0])
            st = replica.core.status()
            out[group] = GroupState(group, tuple(st.conf.voters), tuple(st.conf.learners),
                                    lead[0], int(st.commit))
        return out

    def applied(self, group: str, node: str) -> int | None:
        replica = self.world.group_replica(group, node)
        return None if replica is None else int(replica.sm.applied_index)

    def _leader(self, group: str) -> str:
        lead = self.world.group_leader(group)
        if lead is None:
            self.world.run_until(lambda: self.world.group_leader(group) is not None, self.timeout_s)
            lead = self.world.group_leader(group)
        if lead is None:
            from exapyte.control.rebalance import RebalanceError

            raise RebalanceError(f"group {group} has no leader")
        return lead[0]

    def change(self, group: str, change: str, node: str) -> None:
        self.request(MembershipOp(change, node), group, self._leader(group))
        # The simulated clients route by the world's member lists (the routing table a real
        # client learns from replies): they follow the group to its new members.
        state = self.groups().get(group)
        if state is not None:
            self.world.group_members[group] = (*state.voters, *state.learners)

    def transfer(self, group: str, to: str) -> None:
        self.request(TransferLeaderOp(to), group, self._leader(group))

    def pin(self, group: str, target: str, timeout_s: float = 10.0) -> bool:
        """Make ``target`` the serving leader of ``group`` (the admin's leadership transfer,
        retried); False if it could not within ``timeout_s``."""
        world = self.world
        deadline = world.now_s + timeout_s
        while world.now_s < deadline:
            if not world.run_until(lambda: world.group_leader(group) is not None,
                                   deadline - world.now_s):
                return False
            current = world.group_leader(group)
            assert current is not None
            if current[0] == target:
                return True
            try:
                self.request(TransferLeaderOp(target), group, current[0])
            except ExapyteError:  # refused (one already under way): wait and retry
                pass
            world.run_until(
                lambda: (lead := world.group_leader(group)) is not None and lead[0] == target,
                timeout_s=min(2.0, max(0.0, deadline - world.now_s)),
            )
        return False

    def drop(self, group: str, node: str) -> None:
        leader = self._leader(group)
        replica = self.world.group_replica(group, leader)
        conf = replica.sm.conf
        op = DropGroupOp(int(replica.sm.conf_version), (*conf.voters, *conf.learners))
        try:
            self.request(op, group, node, follow=False)
        except ExapyteError:
            pass  # best effort, as on a real cluster (rebalance.Admin.drop)
