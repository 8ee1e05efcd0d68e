"""Node and cluster configuration: decoded once, validated once, frozen afterwards.

A config file is JSON with these sections (see ``docs/config.md`` for every field):

``node_id``, ``region_id``, ``cluster``, ``storage``, ``network``, ``consensus``, ``replication``,
``distribution``, ``control_plane``, ``data_plane`` and, only for testing the harness, ``unsafe``.

One cluster file describes every node (``cluster.nodes``); ``--node-id`` picks which node a
process is, so the same file starts a whole cluster. The decoding is strict: an unknown key, a
wrong type, a value out of range, a ``node_id`` that is not in the cluster or two nodes on one
port raise :class:`~exapyte.errors.ConfigError` whose message names the field (as a JSON path),
the value found and what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from exapyte import limits
from exapyte.errors import ConfigError
from exapyte.protocol import registry

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Ident = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]

StorageBackend = Literal["memory", "sqlite", "tiered"]
ConsensusProtocol = Literal["none", "raft", "multipaxos", "zab"]
ReplicationStrategy = Literal["sync", "async", "optimized"]
DistributionStrategy = Literal["centralized", "sharded", "hierarchical"]
ConsistencyLevel = Literal["strong", "bounded_staleness", "session", "consistent_prefix", "eventual"]
EvictionPolicy = Literal["lru", "lfu"]
SecurityMode = Literal["curve", "off"]

CONSISTENCY_LEVELS: tuple[str, ...] = typing.get_args(ConsistencyLevel)


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: strict, frozen, keyword-only."""


class NodeSpec(_Section):
    """One node of the cluster: where its sockets listen."""

    id: Ident  # the node's name: its peer identity and its key's name (nodes/<id>.key)
    port: Port  # ROUTER socket: clients and peers
    region: Ident = "local"  # the region it sits in (cluster.regions)
    host: str = "127.0.0.1"  # the address others dial (IPv4 or host name); also bound by default
    pub_port: Port | None = None  # PUB socket: topology updates (port + 1000 when absent)

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def pub_endpoint(self) -> str:
        return f"tcp://{self.host}:{self.resolved_pub_port}"

    @property
    def resolved_pub_port(self) -> int:
        return self.pub_port if self.pub_port is not None else self.port + 1000


class RegionSpec(_Section):
    id: Ident  # what cluster.nodes[].region and cluster.links[] refer to
    name: str = ""  # a label for plots and reports


class LinkSpec(_Section):
    """A network link between two regions with its one-way latency."""

    a: Ident  # one region
    b: Ident  # the other region
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] = 0.0  # one-way; the harness injects it


class ClusterSection(_Section):
    nodes: Annotated[tuple[NodeSpec, ...], msgspec.Meta(min_length=1, max_length=64)]  # every node
    regions: tuple[RegionSpec, ...] = ()  # when given, every node's region must be one of these
    links: tuple[LinkSpec, ...] = ()  # inter-region latencies (topology graphs, harness)


class StorageSection(_Section):
    backend: StorageBackend = "sqlite"  # memory (lost at exit), sqlite (fsynced) or tiered
    # File path of the SQLite database; "{node_id}" is replaced by the node's id. Relative paths
    # are relative to the working directory. Ignored by the memory backend.
    path: str = "./data/{node_id}/store.db"
    hot_keys: PositiveInt = limits.TIERED_HOT_KEYS_DEFAULT  # tiered: records kept in memory
    policy: EvictionPolicy = "lru"  # tiered: which record leaves memory first


class NetworkSection(_Section):
    # The address this node's ROUTER and PUB sockets bind: "" binds the node's own host from
    # cluster.nodes; "0.0.0.0" binds every interface. Anything but loopback needs security.mode
    # "curve".
    bind_host: str = ""
    tick_ms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = limits.TICK_MS_DEFAULT  # one protocol tick
    # Larger frames are dropped before decoding (ZeroMQ MAXMSGSIZE and the codec).
    frame_bytes_max: Annotated[int, msgspec.Meta(ge=1024, le=limits.FRAME_BYTES_MAX)] = (
        limits.FRAME_BYTES_MAX
    )
    # How long `--client` (and Client.from_config) waits for a definite answer, retries included.
    request_timeout_ms: Annotated[int, msgspec.Meta(ge=10, le=600_000)] = (
        limits.CLIENT_TIMEOUT_MS_DEFAULT
    )
    sndhwm: PositiveInt = limits.ZMQ_SNDHWM_MESSAGES  # messages queued per socket before sends drop
    rcvhwm: PositiveInt = limits.ZMQ_RCVHWM_MESSAGES  # messages queued per socket on receive
    # Where this node dials each peer, when not the peer's own endpoint (node id -> tcp://host:port).
    # The harness points these at one Toxiproxy proxy per directed link.
    peer_endpoints: dict[str, str] = {}


class ConsensusSection(_Section):
    # "none" serves a single node's durable KV directly; "raft" replicates through Raft.
    protocol: ConsensusProtocol = "raft"  # "none" serves a single node's durable KV directly; the others replicate through that consensus protocol (those this release does not run yet are refused at load)
    # Ticks without a leader before a follower campaigns (randomized in [T, 2T)).
    election_timeout_ticks: Annotated[int, msgspec.Meta(ge=2, le=10_000)] = 20
    heartbeat_ticks: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 2  # ticks between heartbeats
    pre_vote: bool = True  # ask whether an election could be won before raising the term
    check_quorum: bool = True  # a leader cut off from a quorum steps down; leader stickiness
    # Unacknowledged append messages per follower (pipelining).
    max_inflight_msgs: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    max_entries_per_msg: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 512  # entries per append
    # Applied entries kept in the log before a snapshot compacts it (checked each maintenance pass).
    snapshot_entries: Annotated[int, msgspec.Meta(ge=10, le=10_000_000)] = 100_000
    # Snapshot bytes per InstallSnapshot message: a snapshot of any size crosses the wire in
    # frames of bounded size (used: at most half of network.frame_bytes_max).
    snapshot_chunk_bytes: Annotated[int, msgspec.Meta(ge=64, le=limits.FRAME_BYTES_MAX // 2)] = (
        limits.RAFT_SNAPSHOT_CHUNK_BYTES_DEFAULT
    )
    # The voters a brand-new group starts with (default: every node of the cluster). Other nodes
    # start empty and join when a membership change adds them.
    initial_voters: tuple[Ident, ...] = ()


class ReplicationSection(_Section):
    # "sync": voters span the regions, no acknowledged write is lost with a region;
    # "async": voters in each group's home region, learners elsewhere fed in log order;
    # "optimized": voters placed by link latency (home + nearest region make a quorum, no region
    # holds one), leadership kept in the region that writes most (docs/replication.md).
    # Unset: "async" for the hierarchical distribution (its shards' voters sit in their home
    # region), "sync" for the others.
    strategy: ReplicationStrategy | None = None  # sync | async | optimized; unset: async when hierarchical, else sync


class DistributionSection(_Section):
    # "centralized": one group holds every key; "sharded": a key's shard by a stable hash, shard
    # replicas on nodes by consistent hashing; "hierarchical": a key's home region first, then a
    # shard of that region on that region's nodes (docs/distribution.md).
    strategy: DistributionStrategy = "centralized"
    shards: Annotated[int, msgspec.Meta(ge=1, le=limits.SHARDS_MAX)] = 1  # shards (per region for hierarchical); 1 for centralized
    virtual_nodes: Annotated[int, msgspec.Meta(ge=1, le=65536)] = limits.VIRTUAL_NODES_DEFAULT  # ring points per node (sharded, hierarchical)
    replication_factor: Annotated[int, msgspec.Meta(ge=1, le=9)] = 3  # replicas of each shard, capped at the nodes available (per region for hierarchical)
    rules: dict[str, Ident] = {}  # hierarchical: key prefix -> home region (the longest matching prefix wins; other keys hash over the regions)


class ControlPlaneSection(_Section):
    # Seconds between the control leader's beats (its current version) on the PUB socket.
    publish_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    # Voters of the control group: the first this many initial voters (sharded, hierarchical).
    replicas: Annotated[int, msgspec.Meta(ge=1, le=9)] = 3


class DataPlaneSection(_Section):
    # The consistency level of a request that names none (`--client` and Client.from_config).
    default_consistency: ConsistencyLevel = "strong"
    # bounded_staleness reads: a follower serves them only if its applied state is within K
    # entries and T ms of the commit its leader stamped (exapyte/data/staleness.py); else the
    # leader serves them.
    staleness_versions_max: PositiveInt = 100  # K
    staleness_ms_max: PositiveInt = 5_000  # T
    # The most two nodes' clocks may differ by: a follower adds it to the age of its state
    # (exapyte/data/staleness.py). Beyond it, bounded_staleness may serve up to the difference
    # older than T.
    clock_skew_ms_max: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 250


class MaintenanceSection(_Section):
    # Seconds between maintenance passes (snapshot check, metrics line).
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0


class SecuritySection(_Section):
    """How nodes and clients authenticate (docs/security.md)."""

    # "curve": every ZeroMQ link is CurveZMQ (encrypted; each end proves its key); peers must hold
    # a member key, admin requests an admin key. "off": plain TCP and no authentication at all:
    # allowed only when every address is loopback.
    mode: SecurityMode = "curve"
    # Key directory (nodes/, admins/, clients/; `python main.py --keygen DIR`). Relative paths are
    # relative to the working directory; `--keys-dir` overrides it.
    keys_dir: str = "keys"
    # Whether a client with a key the node does not know may read and write (never admin).
    anonymous_clients: bool = False


class UnsafeSection(_Section):
    """Known bugs, for proving that the harness catches them. Refused unless ``enabled``."""

    enabled: bool = False  # also allows admin.clock (clock-fault injection by an admin key)
    bugs: tuple[str, ...] = ()  # see "Known bugs" below


class Config(_Section):
    cluster: ClusterSection
    node_id: Ident | None = None  # which node this process is (default: the first; --node-id)
    region_id: Ident | None = None  # must equal the node's region when given
    storage: StorageSection = StorageSection()
    network: NetworkSection = NetworkSection()
    consensus: ConsensusSection = ConsensusSection()
    replication: ReplicationSection = ReplicationSection()
    distribution: DistributionSection = DistributionSection()
    control_plane: ControlPlaneSection = ControlPlaneSection()
    data_plane: DataPlaneSection = DataPlaneSection()
    maintenance: MaintenanceSection = MaintenanceSection()
    security: SecuritySection = SecuritySection()
    unsafe: UnsafeSection = UnsafeSection()

    # -- derived views ------------------------------------------------------------------------

    @property
    def node(self) -> NodeSpec:
        """This process's own node (``node_id`` is checked to exist at load)."""
        return self.node_by_id(self.node_id or "")

    def node_by_id(self, node_id: str) -> NodeSpec:
        for spec in self.cluster.nodes:
            if spec.id == node_id:
                return spec
        raise ConfigError(f"node_id: {node_id!r} is not in cluster.nodes ({self.node_ids()})")

    def peer_endpoint(self, node_id: str) -> str:
        """The endpoint this node dials to reach ``node_id``."""
        return self.network.peer_endpoints.get(node_id) or self.node_by_id(node_id).endpoint

    def node_ids(self) -> list[str]:
        return [n.id for n in self.cluster.nodes]

    def initial_voters(self) -> tuple[str, ...]:
        return self.consensus.initial_voters or tuple(self.node_ids())

    @property
    def replication_strategy(self) -> str:
        """``replication.strategy``, or its default for the distribution when unset."""
        if self.replication.strategy is not None:
            return self.replication.strategy
        return "async" if self.distribution.strategy == "hierarchical" else "sync"

    @property
    def replicated(self) -> bool:
        return self.consensus.protocol != "none"

    def storage_path(self) -> str:
        return self.storage.path.replace("{node_id}", self.node_id or "node")

    def with_node(self, node_id: str) -> Config:
        """The same cluster seen from ``node_id`` (validated)."""
        cfg = msgspec.structs.replace(self, node_id=node_id, region_id=None)
        return _validate(cfg)

    @property
    def bind_host(self) -> str:
        """The address this node's sockets bind."""
        return self.network.bind_host or self.node.host

    def with_keys_dir(self, path: str) -> Config:
        return msgspec.structs.replace(
            self, security=msgspec.structs.replace(self.security, keys_dir=path)
        )

    def with_storage_path(self, path: str) -> Config:
        return msgspec.structs.replace(
            self, storage=msgspec.structs.replace(self.storage, path=path)
        )


KNOWN_BUGS: dict[str, str] = {
    "stale-reads": "strong reads are answered from local state on any node, without ReadIndex",
    "ack-before-fsync": (
        "a write is acknowledged as soon as the leader appends it, before it is fsynced or "
        "committed by a quorum"
    ),
    "no-term-check": (
        "pre-vote and check-quorum are off and every vote request of the current term is "
        "granted (no one-vote-per-term rule, no log up-to-date check)"
    ),
    "session-ahead": "a session read is served by any replica without checking the session token",
    "bounded-unchecked": "bounded_staleness reads are served by any replica without the staleness check",
    "bounded-follower-view": (
        "bounded_staleness is checked against the replica's own commit index (K only, no time bound)"
    ),
    "bounded-send-time": (
        "a leader stamps what it sends with its clock at sending, not with the time of its last "
        "quorum-confirmed heartbeat round, so a deposed leader's followers judge old state fresh"
    ),
    "stop-applying": (
        "the highest-named member of each group stops applying committed entries (after index 20) "
        "and keeps serving weak reads"
    ),
    "apply-out-of-order": (
        "a follower applies each batch of committed entries with their commands in reverse order "
        "(the applied index stays right), so writes of one key in one batch end in the wrong value"
    ),
    "token-after-truncate": (
        "a session token is checked by its index only, not the term of its entry; the variant "
        "also acknowledges writes at append, as ack-before-fsync does (the unsafe path that "
        "gives a session a token for an entry the next leader truncates), so a replica at that "
        "index serves the session a state without its writes"
    ),
}


#: Known bugs of the Raft core alone (the other protocols have no such switch): refused with them.
RAFT_ONLY_BUGS = frozenset({"no-term-check"})


# -- loading ----------------------------------------------------------------------------------


def load(path: str | Path, node_id: str | None = None) -> Config:
    """Read, decode and validate a config file. ``node_id`` overrides the file's ``node_id``."""
    p = Path(path)
    try:
        raw_bytes = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(p)!r}: {exc.strerror or exc}") from None
    return loads(raw_bytes, node_id=node_id, source=str(p))


def loads(data: bytes | str, node_id: str | None = None, source: str = "<config>") -> Config:
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object, got {type(raw).__name__}")
    if node_id is not None:
        raw["node_id"] = node_id
    try:
        cfg = msgspec.convert(raw, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(exc, raw)}") from None
    try:
        return _validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _explain(exc: msgspec.ValidationError, raw: dict[str, Any]) -> str:
    """Turn msgspec's message into one that names field, value and what is allowed."""
    message = str(exc)
    m = _PATH_RE.search(message)
    if not m:
        if "unknown field" in message.lower():
            return f"{message} at the top level; known fields: {', '.join(Config.__struct_fields__)}"
        return message
    json_path = m.group("path")
    reason = message[: m.start()]
    parts = [p for p in re.split(r"\.|\[|\]", json_path) if p]
    field = ".".join(parts) or "(top level)"
    if "unknown field" in reason.lower():
        # msgspec points at the object holding the unknown key: name that key in full.
        unknown = re.search(r"`([^`]*)`", reason)
        name = f"{field}.{unknown.group(1)}" if unknown else field
        text = f"field {name!r}: unknown field"
        section = _section_type(parts)
        if section is not None:
            text += f"; known fields of {field!r}: {', '.join(section.__struct_fields__)}"
        return text
    value = _lookup(raw, parts)
    text = f"field {field!r}: {reason}"
    if value is not _MISSING:
        text += f" (got {json.dumps(value)[:80]})"
    allowed = _allowed(parts)
    if allowed:
        text += f"; allowed: {', '.join(allowed)}"
    return text


_MISSING = object()


def _lookup(raw: Any, parts: list[str]) -> Any:
    cur = raw
    for part in parts:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _section_type(parts: list[str]) -> type | None:
    t: Any = Config
    for part in parts:
        if part.isdigit():
            continue
        t = _field_type(t, part)
        if t is None:
            return None
    return t if isinstance(t, type) and issubclass(t, msgspec.Struct) else None


def _field_type(struct_type: Any, name: str) -> Any:
    if not (isinstance(struct_type, type) and issubclass(struct_type, msgspec.Struct)):
        return None
    hints = typing.get_type_hints(struct_type, include_extras=True)
    t = hints.get(name)
    return _unwrap(t)


def _unwrap(t: Any) -> Any:
    while True:
        origin = typing.get_origin(t)
        if origin is Annotated:
            t = typing.get_args(t)[0]
        elif origin is tuple:
            t = typing.get_args(t)[0]
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            t = args[0] if len(args) == 1 else t
            if len(args) != 1:
                return t
        else:
            return t


def _allowed(parts: list[str]) -> list[str]:
    t: Any = Config
    for part in parts:
        if part.isdigit():
            continue
        t = _field_type(t, part)
        if t is None:
            return []
    if typing.get_origin(t) is Literal:
        return [str(a) for a in typing.get_args(t)]
    return []


_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot name a node (an IPv4 address or a DNS host name), or None."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.version == 6:
            return "IPv6 addresses are not supported; use an IPv4 address or a host name"
        return None
    if len(host) > 253 or not _HOSTNAME_RE.fullmatch(host):
        return "not an IPv4 address or a host name"
    if host.replace(".", "").isdigit():
        return "not a valid IPv4 address"
    return None


def canonical_host(host: str) -> str:
    """One spelling per address: ``localhost`` is 127.0.0.1, names are lower case."""
    lowered = host.lower()
    return "127.0.0.1" if lowered == "localhost" else lowered


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _validate_distribution(cfg: Config) -> None:
    d = cfg.distribution
    if d.strategy == "centralized" and d.shards != 1:
        raise ConfigError(
            f"field 'distribution.shards': {d.shards} shards need the sharded or hierarchical "
            "strategy; centralized has exactly 1"
        )
    if d.strategy != "centralized" and cfg.consensus.protocol == "none":
        raise ConfigError(
            f"field 'distribution.strategy': {d.strategy!r} places shards on replica groups and "
            "needs a consensus protocol; consensus.protocol is 'none'"
        )
    regions = {n.region for n in cfg.cluster.nodes}
    bad = sorted({r for r in d.rules.values() if r not in regions})
    if bad:
        raise ConfigError(
            f"field 'distribution.rules': region(s) {bad} hold no node; allowed: "
            f"{', '.join(sorted(regions))}"
        )
    if d.rules and d.strategy != "hierarchical":
        raise ConfigError(
            "field 'distribution.rules': placement rules are read by the hierarchical strategy "
            f"only; distribution.strategy is {d.strategy!r}"
        )
    too_long = [p for p in d.rules if not p or len(p.encode("utf-8")) > limits.KEY_BYTES_MAX]
    if too_long:
        raise ConfigError(
            f"field 'distribution.rules': prefix {too_long[0]!r} must be a non-empty key prefix "
            f"of at most {limits.KEY_BYTES_MAX} bytes"
        )


def _validate_addresses(cfg: Config) -> None:
    for spec in cfg.cluster.nodes:
        problem = host_problem(spec.host)
        if problem:
            raise ConfigError(f"field 'cluster.nodes[{spec.id}].host': {spec.host!r}: {problem}")
    bind = cfg.network.bind_host
    if bind:
        problem = host_problem(bind)
        if problem is None and not (bind.lower() == "localhost" or _is_ip(bind)):
            problem = "must be an IPv4 address (or localhost), or empty for the node's own host"
        if problem:
            raise ConfigError(f"field 'network.bind_host': {bind!r}: {problem}")
    peer_hosts: list[tuple[str, str]] = []
    for peer, endpoint in cfg.network.peer_endpoints.items():
        m = re.fullmatch(r"tcp://([^:/]+):(\d{1,5})", endpoint)
        if m is None or not 1 <= int(m.group(2)) <= 65535 or host_problem(m.group(1)):
            raise ConfigError(
                f"field 'network.peer_endpoints.{peer}': {endpoint!r} is not tcp://HOST:PORT "
                "(HOST an IPv4 address or host name, PORT 1..65535)"
            )
        peer_hosts.append((f"network.peer_endpoints.{peer}", m.group(1)))
    if cfg.security.mode == "off":
        exposed = [(f"cluster.nodes[{n.id}].host", n.host) for n in cfg.cluster.nodes]
        exposed += peer_hosts
        if bind:
            exposed.append(("network.bind_host", bind))
        for field, host in exposed:
            if not is_loopback(host):
                raise ConfigError(
                    f"field {field!r}: {host!r} is not a loopback address, and security.mode is "
                    "'off' (no authentication, no encryption); allowed with 'off': 127.0.0.1 or "
                    "localhost. Set security.mode to 'curve' to serve other addresses"
                )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _validate(cfg: Config) -> Config:
    """Cross-field rules msgspec cannot express."""
    ids = cfg.node_ids()
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"field 'cluster.nodes': node id(s) {dupes} appear more than once")
    if cfg.node_id is None:
        cfg = msgspec.structs.replace(cfg, node_id=ids[0])
    if cfg.node_id not in ids:
        raise ConfigError(
            f"field 'node_id': {cfg.node_id!r} is not in the cluster; allowed: {', '.join(ids)}"
        )
    node = cfg.node
    if cfg.region_id is None:
        cfg = msgspec.structs.replace(cfg, region_id=node.region)
    elif cfg.region_id != node.region:
        raise ConfigError(
            f"field 'region_id': {cfg.region_id!r} differs from node {node.id!r}'s region "
            f"{node.region!r} in cluster.nodes"
        )
    seen: dict[tuple[str, int], str] = {}
    for spec in cfg.cluster.nodes:
        for what, port in (("port", spec.port), ("pub_port", spec.resolved_pub_port)):
            if port > 65535:
                raise ConfigError(
                    f"field 'cluster.nodes[{spec.id}].pub_port': derived port {port} is out of "
                    f"range; set pub_port explicitly (1..65535)"
                )
            key = (canonical_host(spec.host), port)
            if key in seen:
                raise ConfigError(
                    f"field 'cluster.nodes[{spec.id}].{what}': port {port} on {spec.host} is "
                    f"already used by {seen[key]}"
                )
            seen[key] = f"{spec.id}.{what}"
    region_ids = {r.id for r in cfg.cluster.regions}
    if region_ids:
        for spec in cfg.cluster.nodes:
            if spec.region not in region_ids:
                raise ConfigError(
                    f"field 'cluster.nodes[{spec.id}].region': {spec.region!r} is not a declared "
                    f"region; allowed: {', '.join(sorted(region_ids))}"
                )
        for link in cfg.cluster.links:
            for end in (link.a, link.b):
                if end not in region_ids:
                    raise ConfigError(
                        f"field 'cluster.links': region {end!r} is not declared; allowed: "
                        f"{', '.join(sorted(region_ids))}"
                    )
    for peer in cfg.network.peer_endpoints:
        if peer not in ids:
            raise ConfigError(
                f"field 'network.peer_endpoints.{peer}': not a node of the cluster; allowed: "
                f"{', '.join(ids)}"
            )
    _validate_addresses(cfg)
    if not cfg.security.keys_dir and cfg.security.mode == "curve":
        raise ConfigError("field 'security.keys_dir': must name a directory when mode is 'curve'")
    stray = [v for v in cfg.consensus.initial_voters if v not in ids]
    if stray:
        raise ConfigError(
            f"field 'consensus.initial_voters': {stray} not in the cluster; allowed: {', '.join(ids)}"
        )
    available = registry.names()
    if cfg.consensus.protocol == "none" and len(ids) > 1:
        raise ConfigError(
            "field 'consensus.protocol': 'none' serves a single node only, but cluster.nodes has "
            f"{len(ids)} nodes; allowed for a cluster: {', '.join(available)}"
        )
    if cfg.consensus.protocol != "none" and cfg.consensus.protocol not in available:
        raise ConfigError(
            f"field 'consensus.protocol': {cfg.consensus.protocol!r} is not available in this "
            f"release yet; allowed: none, {', '.join(available)}"
        )
    if cfg.consensus.heartbeat_ticks >= cfg.consensus.election_timeout_ticks:
        raise ConfigError(
            "field 'consensus.heartbeat_ticks': must be smaller than election_timeout_ticks "
            f"({cfg.consensus.heartbeat_ticks} >= {cfg.consensus.election_timeout_ticks})"
        )
    if cfg.storage.backend != "memory" and not cfg.storage.path:
        raise ConfigError("field 'storage.path': must be a file path for the sqlite/tiered backends")
    _validate_distribution(cfg)
    unknown_bugs = [b for b in cfg.unsafe.bugs if b not in KNOWN_BUGS]
    if unknown_bugs:
        raise ConfigError(
            f"field 'unsafe.bugs': unknown bug(s) {unknown_bugs}; allowed: {', '.join(KNOWN_BUGS)}"
        )
    raft_only = [b for b in cfg.unsafe.bugs if b in RAFT_ONLY_BUGS]
    if raft_only and cfg.consensus.protocol != "raft":
        raise ConfigError(
            f"field 'unsafe.bugs': {raft_only} break Raft's election rules and exist in the raft "
            f"core only; consensus.protocol is {cfg.consensus.protocol!r}"
        )
    if cfg.unsafe.bugs and not cfg.unsafe.enabled:
        raise ConfigError(
            "field 'unsafe.enabled': bugs are listed in unsafe.bugs but unsafe.enabled is false; "
            "known bugs are refused unless explicitly enabled"
        )
    return cfg
