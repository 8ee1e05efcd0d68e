"""The control-plane state machine: topology, shard map and membership epoch.

Theory of operation
-------------------
The control plane is its own replica group; this module is the state machine its replicas apply
committed commands to, with the shape of :mod:`exapyte.kv`: commands are applied strictly in log
index order (an index at or below the applied one is a replay and is skipped; a gap is a broken
invariant and raises), a command that cannot apply is a **failed outcome that changes nothing**
(never an exception: every replica reaches the same outcome from the same bytes), and the whole
state is a deterministic function of the commands applied, so every replica holds the same state
and :meth:`ControlPlane.snapshot` gives the same bytes on each.

State:

- **topology**: regions (id -> name), links ({a, b} -> one-way latency ms), nodes (id -> region,
  endpoint);
- **shard map**: shard -> :class:`ShardEntry` (the group's :class:`GroupSpec`, its configuration
  version, a leader hint with the term it was seen in);
- **epoch**: the membership epoch, one more with each node added or removed;
- **version**: one more with every command that changes anything; the feed publishes each one
  (:mod:`exapyte.control.pubsub`).

Commands (tagged msgspec structs, :data:`Command`): ``RegionSet``, ``LinkSet``, ``NodeAdd``,
``NodeRemove``, ``ShardCreate``, ``ShardDrop`` (which names the shard's configuration version it
expects, so a drop decided on an old map fails) and ``ShardReport``: a shard's leader reporting
the group as it applied it. A shard's membership changes in the shard's own log (a rebalance
moves replicas with membership changes there, exapyte/control/rebalance.py), so the plane records
what the group did, never the other way round: a report is taken when its configuration version
is newer than the one held (the members are replaced, the leader hint set), or, at the same
version and the same members, when it names a leader of a later term. An older version, other
members at a version already held, a node the topology does not hold, no voter: refused. So the
map only moves forward, version by version, whatever order reports arrive in. A node still
holding a replica cannot be removed.

The runtime hosts this state machine in the control-plane group (exapyte/control/service.py,
docs/control-plane.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import msgspec

from exapyte.distribution.base import GroupSpec, NodeId, RegionId, ShardId
from exapyte.errors import ExapyteError

__all__ = [
    "Command",
    "ControlPlane",
    "ControlState",
    "LinkSet",
    "NodeAdd",
    "NodeInfo",
    "NodeRemove",
    "Outcome",
    "PlaneError",
    "RegionSet",
    "ShardCreate",
    "ShardDrop",
    "ShardEntry",
    "ShardReport",
    "decode_command",
    "encode_command",
]


class PlaneError(ExapyteError):
    """A snapshot image that does not decode as a control-plane state."""


class _Cmd(msgspec.Struct, frozen=True, tag_field="cmd", forbid_unknown_fields=True):
    pass


class RegionSet(_Cmd, frozen=True, tag="region_set"):
    region: RegionId
    name: str = ""


class LinkSet(_Cmd, frozen=True, tag="link_set"):
    a: RegionId
    b: RegionId
    latency_ms: float


class NodeAdd(_Cmd, frozen=True, tag="node_add"):
    node: NodeId
    region: RegionId
    endpoint: str


class NodeRemove(_Cmd, frozen=True, tag="node_remove"):
    node: NodeId


class ShardCreate(_Cmd, frozen=True, tag="shard_create"):
    group: GroupSpec
    conf_version: int = 0  # the group's configuration version when it is entered


class ShardDrop(_Cmd, frozen=True, tag="shard_drop"):
    shard: ShardId
    expect_version: int


class ShardReport(_Cmd, frozen=True, tag="shard_report"):
    """A shard's group as its leader applied it: the configuration version (the index of the
    group's last applied membership change), the members of that version, and the leader with
    its term."""

    shard: ShardId
    conf_version: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    leader: NodeId | None = None
    term: int = 0


Command = Union[RegionSet, LinkSet, NodeAdd, NodeRemove, ShardCreate, ShardDrop, ShardReport]

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Command] = msgspec.msgpack.Decoder(Command)


def encode_command(command: Command) -> bytes:
    return _encoder.encode(command)


def decode_command(data: bytes) -> Command:
    return _decoder.decode(data)


class NodeInfo(msgspec.Struct, frozen=True):
    region: RegionId
    endpoint: str


class ShardEntry(msgspec.Struct, frozen=True):
    group: GroupSpec
    conf_version: int = 0  # the group's own configuration version (its founding one is 0)
    leader: NodeId | None = None
    leader_term: int = 0


class ControlState(msgspec.Struct, frozen=True):
    """Everything the plane holds; maps are kept sorted so the encoding is deterministic."""

    applied_index: int = 0
    version: int = 0
    epoch: int = 0
    regions: dict[RegionId, str] = {}
    links: list[tuple[RegionId, RegionId, float]] = []
    nodes: dict[NodeId, NodeInfo] = {}
    shards: dict[ShardId, ShardEntry] = {}


class Outcome(msgspec.Struct, frozen=True):
    """``ok``: the command changed the state (to ``version``); else ``error`` says why not."""

    ok: bool
    version: int
    error: str | None = None


_state_encoder = msgspec.msgpack.Encoder(order="sorted")
_state_decoder = msgspec.msgpack.Decoder(ControlState)


class _Refused(Exception):
    """A command that cannot apply; becomes a failed Outcome (never leaves this module)."""


class ControlPlane:
    """The control plane's replicated state machine. Single-threaded, deterministic."""

    def __init__(self) -> None:
        self.applied_index = 0
        self.version = 0
        self.epoch = 0
        self.regions: dict[RegionId, str] = {}
        self.links: dict[tuple[RegionId, RegionId], float] = {}
        self.nodes: dict[NodeId, NodeInfo] = {}
        self.shards: dict[ShardId, ShardEntry] = {}
        self.commands_refused = 0

    # -- applying ---------------------------------------------------------------------------

    def apply(self, index: int, command: Command | bytes) -> Outcome | None:
        """Apply the committed command at log ``index``; None for a replayed index.

        ``command`` may be the entry's bytes: bytes that do not decode are a failed outcome.
        """
        if index <= self.applied_index:
            return None
        if index != self.applied_index + 1:
            raise AssertionError(f"control plane gap: applied {self.applied_index}, next {index}")
        self.applied_index = index
        if isinstance(command, (bytes, bytearray, memoryview)):
            try:
                command = decode_command(bytes(command))
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                self.commands_refused += 1
                return Outcome(False, self.version, f"entry {index} is not a command: {exc}")
        return self.execute(command)

    def execute(self, command: Command) -> Outcome:
        """Validate and run one command (no log index: a feed subscriber's mirror uses this)."""
        handler = _HANDLERS.get(type(command))
        try:
            if handler is None:
                raise _Refused(f"not a control-plane command: {type(command).__name__}")
            handler(self, command)
        except _Refused as exc:
            self.commands_refused += 1
            return Outcome(False, self.version, str(exc))
        self.version += 1
        return Outcome(True, self.version)

    # -- reads ------------------------------------------------------------------------------

    def shard(self, shard: ShardId) -> ShardEntry | None:
        return self.shards.get(shard)

    def shards_of_node(self, node: NodeId) -> list[ShardId]:
        return sorted(s for s, e in self.shards.items() if node in e.group.members)

    # -- snapshots --------------------------------------------------------------------------

    def state(self) -> ControlState:
        return ControlState(
            self.applied_index, self.version, self.epoch,
            dict(sorted(self.regions.items())),
            [(a, b, lat) for (a, b), lat in sorted(self.links.items())],
            dict(sorted(self.nodes.items())),
            dict(sorted(self.shards.items())),
        )

    def snapshot(self) -> bytes:
        return _state_encoder.encode(self.state())

    @staticmethod
    def snapshot_check(image: bytes) -> bool:
        try:
            _state_decoder.decode(image)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return False
        return True

    def restore(self, image: bytes) -> None:
        """Replace the whole state with a snapshot image; raises PlaneError if it is not one."""
        try:
            s = _state_decoder.decode(image)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise PlaneError(f"not a control-plane snapshot: {exc}") from None
        self.applied_index, self.version, self.epoch = s.applied_index, s.version, s.epoch
        self.regions = dict(s.regions)
        self.links = {(a, b): lat for a, b, lat in s.links}
        self.nodes = dict(s.nodes)
        self.shards = dict(s.shards)

    # -- command handlers (raise _Refused; change nothing before every check passed) --------

    def _region_set(self, c: RegionSet) -> None:
        _ident(c.region, "region")
        if self.regions.get(c.region) == c.name:
            raise _Refused(f"region {c.region!r} already has that name")
        self.regions[c.region] = c.name

    def _link_set(self, c: LinkSet) -> None:
        if c.a == c.b:
            raise _Refused(f"a link joins two different regions, got {c.a!r} twice")
        for r in (c.a, c.b):
            if r not in self.regions:
                raise _Refused(f"link names unknown region {r!r}")
        if not (0 <= c.latency_ms <= 60_000):
            raise _Refused(f"latency_ms must be in 0..60000, got {c.latency_ms}")
        key = (min(c.a, c.b), max(c.a, c.b))
        if self.links.get(key) == c.latency_ms:
            raise _Refused(f"link {key[0]}-{key[1]} already has that latency")
        self.links[key] = float(c.latency_ms)

    def _node_add(self, c: NodeAdd) -> None:
        _ident(c.node, "node")
        if c.node in self.nodes:
            raise _Refused(f"node {c.node!r} is already in the topology")
        if c.region not in self.regions:
            raise _Refused(f"node {c.node!r} names unknown region {c.region!r}")
        if not c.endpoint.startswith("tcp://"):
            raise _Refused(f"endpoint must be tcp://host:port, got {c.endpoint[:40]!r}")
        self.nodes[c.node] = NodeInfo(c.region, c.endpoint)
        self.epoch += 1

    def _node_remove(self, c: NodeRemove) -> None:
        if c.node not in self.nodes:
            raise _Refused(f"node {c.node!r} is not in the topology")
        held = self.shards_of_node(c.node)
        if held:
            raise _Refused(f"node {c.node!r} still holds replicas of {held[:5]}: move them first")
        del self.nodes[c.node]
        self.epoch += 1

    def _shard_create(self, c: ShardCreate) -> None:
        g = c.group
        if g.id in self.shards:
            raise _Refused(f"shard {g.id!r} exists")
        if not g.id or len(g.id) > 64:
            raise _Refused("a shard id is 1..64 characters")
        if not g.voters:
            raise _Refused(f"shard {g.id!r} needs at least one voter")
        members = g.voters + g.learners
        if len(set(members)) != len(members):
            raise _Refused(f"shard {g.id!r} names a node twice")
        for n in members:
            if n not in self.nodes:
                raise _Refused(f"shard {g.id!r} names unknown node {n!r}")
        if g.region is not None and g.region not in self.regions:
            raise _Refused(f"shard {g.id!r} names unknown region {g.region!r}")
        if type(c.conf_version) is not int or c.conf_version < 0:
            raise _Refused(f"shard {g.id!r}: a configuration version is an int >= 0")
        self.shards[g.id] = ShardEntry(g, c.conf_version)

    def _entry(self, shard: ShardId, expect_version: int) -> ShardEntry:
        entry = self.shards.get(shard)
        if entry is None:
            raise _Refused(f"shard {shard!r} does not exist")
        if entry.conf_version != expect_version:
            raise _Refused(
                f"shard {shard!r} is at configuration version {entry.conf_version}, "
                f"the command expected {expect_version}"
            )
        return entry

    def _shard_drop(self, c: ShardDrop) -> None:
        self._entry(c.shard, c.expect_version)
        del self.shards[c.shard]

    def _shard_report(self, c: ShardReport) -> None:
        e = self.shards.get(c.shard)
        if e is None:
            raise _Refused(f"shard {c.shard!r} does not exist")
        members = c.voters + c.learners
        if c.conf_version < e.conf_version:
            raise _Refused(
                f"shard {c.shard!r} is at configuration version {e.conf_version}; the report "
                f"is of version {c.conf_version}"
            )
        if c.leader is not None and c.leader not in c.voters:
            raise _Refused(f"{c.leader!r} is not a voter of {c.shard!r}")
        if c.conf_version == e.conf_version:
            if (c.voters, c.learners) != (e.group.voters, e.group.learners):
                raise _Refused(
                    f"shard {c.shard!r}: configuration version {c.conf_version} is known with "
                    "other members"
                )
            if c.leader is None or c.term < e.leader_term or (
                c.term == e.leader_term and (c.leader == e.leader or e.leader is not None)
            ):
                raise _Refused(f"the report on {c.shard!r} changes nothing")
            self.shards[c.shard] = msgspec.structs.replace(e, leader=c.leader, leader_term=c.term)
            return
        if not c.voters:
            raise _Refused(f"shard {c.shard!r} would have no voter")
        if len(set(members)) != len(members):
            raise _Refused(f"the report on {c.shard!r} names a node twice")
        for n in members:
            if n not in self.nodes:
                raise _Refused(f"the report on {c.shard!r} names unknown node {n!r}")
        group = msgspec.structs.replace(e.group, voters=c.voters, learners=c.learners)
        leader, term = (c.leader, c.term) if c.leader is not None else (None, e.leader_term)
        self.shards[c.shard] = ShardEntry(group, c.conf_version, leader, max(term, e.leader_term))


def _ident(value: str, what: str) -> None:
    if not value or len(value) > 64 or "/" in value:
        raise _Refused(f"a {what} id is 1..64 characters without '/', got {value[:40]!r}")


_HANDLERS: dict[type, Callable[[ControlPlane, Any], None]] = {
    RegionSet: ControlPlane._region_set,
    LinkSet: ControlPlane._link_set,
    NodeAdd: ControlPlane._node_add,
    NodeRemove: ControlPlane._node_remove,
    ShardCreate: ControlPlane._shard_create,
    ShardDrop: ControlPlane._shard_drop,
    ShardReport: ControlPlane._shard_report,
}
