"""The db role: a topology's nodes as real processes, on one host or on a host each.

Theory of operation
-------------------
There are two host modes (``hosts``). In ``local`` mode (the default) every node runs on
127.0.0.1 and every peer link goes through its own proxy; :class:`ClusterDB` sets it up in four
steps:

1. a Toxiproxy API is found or started (:func:`harness.toxiproxy.find_or_start`: a real
   ``toxiproxy-server`` on PATH, else exapyte's compatible server) and driven with the
   ``toxiproxy-python`` client;
2. one proxy per **directed** pair of nodes: proxy ``a_to_b`` listens on a free loopback port and
   forwards to ``b``'s ROUTER. Node ``a`` dials ``b`` there (``network.peer_endpoints`` in ``a``'s
   own config file), so everything ``a`` sends ``b`` crosses that proxy and nothing else does.
   Proxies between regions get a ``latency`` toxic on both streams equal to the topology's
   one-way latency for the whole run (named ``wan``; :meth:`heal_all` never removes it);
3. one config file per node in ``RUN/config/`` (the topology file plus ``peer_endpoints`` and,
   for ``--bugs`` or clock faults, ``unsafe.enabled``/``unsafe.bugs``);
4. :class:`~exapyte.runtime.cluster.LocalCluster` starts the processes; their logs and data go
   to ``RUN/nodes/``.

In ``netns`` mode every node is a host of its own (:mod:`harness.netns`): a network namespace
with its own address on a bridge, no proxy anywhere. Each node's config sets its ``host`` to that
address (and ``network.bind_host`` empty: it binds that address), so peers dial each other
directly; ``security.mode`` is ``curve`` with the run's keys in ``RUN/keys`` (a node on an
address beyond loopback refuses to run without), which ``LocalCluster`` creates and gives its
clients; the processes are started inside their namespaces (``LocalCluster``'s ``wrap``); the
run's plan (namespaces, addresses) is written to ``RUN/netns.json``. The WAN latency is a tc netem delay per directed link, where the kernel has
netem (otherwise the run says that it went without, in its notes).

Faults are thin effects on that setup: :meth:`cut` disables a proxy (``down``) or blackholes it
(``timeout`` toxic, 0 ms), or in netns mode adds an iptables rule in the destination's namespace
(``drop``, or ``reject`` with a TCP reset); :meth:`add_toxic`/:meth:`remove_toxic` manage named
toxics (in netns mode: ``latency`` is a netem delay, ``bandwidth`` an htb rate, ``reset_peer``
a TCP-reset rule; any other toxic is refused); :meth:`applied_cuts` reads back what the fault
layer holds (the kernel's rule count in netns mode), which the nemesis records in the history.
:meth:`kill` is SIGKILL, :meth:`pause`/:meth:`resume` are SIGSTOP/SIGCONT, :meth:`clock_fault`
and :meth:`reset_clock` move a node's clock (an ``admin.clock`` request, refused by a node
without ``unsafe.enabled``). Clients talk to the nodes directly (their ports are not proxied,
the root namespace is never cut): faults sit between nodes, as in Jepsen.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from exapyte import config as config_mod
from exapyte import distribution
from exapyte.client import make_router
from exapyte.config import KNOWN_BUGS, Config
from exapyte.control import topology as topo
from exapyte.distribution.base import PlacementError
from exapyte.errors import ConfigError
from exapyte.runtime.cluster import ClusterError, LocalCluster
from harness import netns
from harness.toxiproxy import ToxiproxyHandle, find_or_start

__all__ = ["CUT_MODES", "HOST_MODES", "ClusterDB", "DbError", "HostsUnavailable", "check_hosts", "group_statuses",
           "proxy_name"]

WAN_TOXIC = "wan"
CUT_TOXIC = "partition"
NODE_READY_TIMEOUT_S = 30.0
CLOCK_REQUEST_TIMEOUT_S = 2.0
REBALANCE_TIMEOUT_S = 20.0  # a learner must catch up within this, or the move stops


#: Where the nodes run: all on 127.0.0.1 behind proxies, or each in a network namespace.
HOST_MODES: tuple[str, ...] = ("local", "netns")
#: How a partition cuts a link, per host mode (the first is the default): disable the proxy or
#: blackhole it; drop the packets in the kernel or answer them with a TCP reset.
CUT_MODES: dict[str, tuple[str, ...]] = {"local": ("down", "blackhole"), "netns": ("drop", "reject")}
#: Faults that need a tc facility in netns mode, and which (a ``Support`` field).
NETNS_FAULT_NEEDS: dict[str, str] = {"latency": "netem", "bandwidth": "shaping"}


class DbError(RuntimeError):
    """The cluster could not be set up or a node could not be (re)started."""


class HostsUnavailable(DbError):
    """The host mode cannot run on this machine, or cannot apply a fault that was asked for."""


def check_hosts(hosts: str, faults: Sequence[str] = (), cut_mode: str | None = None) -> None:
    """Refuse at once what a run in host mode ``hosts`` could not do here: raises ValueError for
    an unknown mode or a cut mode of the other host mode, :class:`HostsUnavailable` (saying why)
    when namespaces do not work here or a fault needs what this kernel lacks."""
    if hosts not in HOST_MODES:
        raise ValueError(f"unknown hosts {hosts!r}; allowed: {', '.join(HOST_MODES)}")
    if cut_mode is not None and cut_mode not in CUT_MODES[hosts]:
        raise ValueError(f"cut mode {cut_mode!r} does not exist with hosts {hosts!r}; allowed: "
                         f"{', '.join(CUT_MODES[hosts])}")
    if hosts != "netns":
        return
    support = netns.probe()
    if support.namespaces is not None:
        raise HostsUnavailable(f"--hosts netns cannot run here: {support.namespaces}")
    for fault, need in NETNS_FAULT_NEEDS.items():
        reason = getattr(support, need)
        if fault in faults and reason is not None:
            raise HostsUnavailable(f"the {fault} nemesis cannot run with --hosts netns here: {reason}")


def group_statuses(status: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The per-group part of a node's status: ``status.groups`` (group -> role, leader, term,
    commit, applied, quiesced); a status without it is the one group ``default``."""
    if not status:
        return {}
    groups = status.get("groups")
    if isinstance(groups, dict) and groups:
        return {str(g): dict(v) for g, v in groups.items() if isinstance(v, dict)}
    if "role" in status:
        return {"default": {k: status.get(k) for k in ("role", "leader", "term", "commit", "applied")}}
    return {}


def proxy_name(src: str, dst: str) -> str:
    """The proxy node ``src`` dials ``dst`` through."""
    return f"{src}_to_{dst}"


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _toxiproxy_client(handle: ToxiproxyHandle) -> Any:
    from toxiproxy import Toxiproxy  # imported late: it pulls in requests and future

    client = Toxiproxy()
    client.update_api_consumer(handle.host, handle.port)
    return client


class ClusterDB:
    """The nodes of ``topology_path`` behind per-link proxies. Use as a context manager."""

    def __init__(
        self,
        topology_path: str | Path,
        run_dir: str | Path,
        *,
        bugs: tuple[str, ...] = (),
        unsafe: bool = False,
        wan_latency: bool = True,
        toxiproxy: ToxiproxyHandle | None = None,
        seed: int | None = None,
        log: Any = None,
        hosts: str = "local",
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        unknown = [b for b in bugs if b not in KNOWN_BUGS]
        if unknown:
            raise ValueError(f"unknown bug(s) {unknown}; allowed: {', '.join(KNOWN_BUGS)}")
        if hosts not in HOST_MODES:
            raise ValueError(f"unknown hosts {hosts!r}; allowed: {', '.join(HOST_MODES)}")
        self.hosts = hosts
        self.topology_path = Path(topology_path)
        self.graph: nx.Graph = topo.load(self.topology_path)
        self.run_dir = Path(run_dir)
        self.nodes_dir = self.run_dir / "nodes"
        self.config_dir = self.run_dir / "config"
        self.bugs = tuple(bugs)
        # unsafe.enabled: for the bugs, and for clock faults (admin.clock is refused without it)
        self.unsafe = unsafe or bool(self.bugs)
        self._skewed: set[str] = set()  # nodes whose clock a fault moved and no reset restored
        self.wan_latency = wan_latency
        self.seed = seed
        self._log = log or (lambda text: None)
        self._own_toxiproxy = toxiproxy is None
        self.toxiproxy: ToxiproxyHandle | None = toxiproxy
        self._client: Any = None
        self.proxies: dict[tuple[str, str], Any] = {}
        self.listen: dict[tuple[str, str], str] = {}
        self.cluster: LocalCluster | None = None
        self._cut: dict[tuple[str, str], str] = {}
        self._toxics: dict[tuple[str, str], set[str]] = {}
        self._netns_toxics: dict[tuple[str, str], dict[str, str]] = {}  # netns: link -> name -> type
        self._lock = threading.RLock()
        self.node_ids: list[str] = sorted(self.graph.nodes)
        self.netns: netns.NetnsHosts | None = None
        self._addresses: dict[str, str] = {}  # netns mode: node -> its namespace's address
        self.notes: list[str] = []  # what the run should report about its setup
        # Config sections merged into every node's config (consensus.protocol, distribution...).
        self.overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (overrides or {}).items()}
        self._config: Config | None = None
        self._placement: Any = None  # (strategy, placement) of distribution.from_config

    # -- setup and teardown ---------------------------------------------------------------------

    def prepare(self) -> dict[str, Path]:
        """Toxiproxy, the proxies (with WAN latency) and the per-node config files; no process.
        In netns mode: the namespaces (with WAN latency where netem exists) and the configs."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.hosts == "netns":
            self._create_namespaces()
            return self._write_configs()
        if self.toxiproxy is None:
            self.toxiproxy = find_or_start(seed=self.seed)
        self._client = _toxiproxy_client(self.toxiproxy)
        self._log(f"toxiproxy ({self.toxiproxy.kind}) at {self.toxiproxy.api_url}")
        self._create_proxies()
        return self._write_configs()

    def setup(self) -> None:
        """Proxies, config files, processes; returns once every node answers a status request."""
        paths = self.prepare()
        self.cluster = LocalCluster(
            self.config_dir / "base.json", self.nodes_dir, node_config_paths=paths,
            wrap=self.netns.wrap if self.netns is not None else None,
        )
        try:
            self.cluster.start(wait=True)
        except ClusterError as exc:
            raise DbError(f"the cluster did not start: {exc}") from None
        self._log(f"{len(self.node_ids)} nodes up: " + ", ".join(
            f"{n}@{endpoint.removeprefix('tcp://')}" for n, endpoint in self.endpoints().items()))

    def _create_namespaces(self) -> None:
        support = netns.probe()
        if support.namespaces is not None:
            raise HostsUnavailable(f"--hosts netns cannot run here: {support.namespaces}")
        wan = {(a, b): int(round(topo.latency_ms(self.graph, a, b)))
               for a in self.node_ids for b in self.node_ids if a != b} if self.wan_latency else {}
        wan = {link: ms for link, ms in wan.items() if ms > 0}
        if wan and support.netem is not None:
            note = (f"WAN latency not applied: with --hosts netns it is a tc netem delay per link, and "
                    f"{support.netem}")
            self.notes.append(note)
            self._log(note)
            wan = {}
        self.netns = netns.NetnsHosts(self.node_ids, delays_ms=wan, support=support, log=self._log)
        try:
            plan = self.netns.create()
        except netns.NetnsError as exc:
            self.netns = None
            raise DbError(f"the network namespaces could not be created: {exc}") from None
        self._addresses = {h.node_id: h.address for h in plan.hosts}
        (self.run_dir / "netns.json").write_text(json.dumps(
            plan.to_dict() | {"support": support.to_dict(),
                              "wan_latency_ms": {f"{a}->{b}": ms for (a, b), ms in sorted(wan.items())}},
            indent=2) + "\n")

    def _create_proxies(self) -> None:
        pairs = [(a, b) for a in self.node_ids for b in self.node_ids if a != b]
        ports = _free_ports(len(pairs))
        existing = self._client.proxies()
        for (src, dst), port in zip(pairs, ports):
            name = proxy_name(src, dst)
            if name in existing:
                existing[name].destroy()
            node = self.graph.nodes[dst]
            proxy = self._client.create(
                upstream=f"{node['host']}:{node['port']}", name=name, listen=f"127.0.0.1:{port}", enabled=True,
            )
            self.proxies[(src, dst)] = proxy
            self.listen[(src, dst)] = f"127.0.0.1:{port}"
            self._toxics[(src, dst)] = set()
            latency = topo.latency_ms(self.graph, src, dst)
            if self.wan_latency and latency > 0:
                self.add_toxic(src, dst, WAN_TOXIC, "latency", {"latency": int(round(latency)), "jitter": 0})

    def _write_configs(self) -> dict[str, Path]:
        raw = json.loads(self.topology_path.read_text())
        # Every run has keys of its own (LocalCluster creates them in RUN/keys).
        security = raw.setdefault("security", {})
        security["keys_dir"] = str((self.run_dir / "keys").resolve())
        if self.unsafe:
            raw["unsafe"] = {"enabled": True, "bugs": list(self.bugs)}
        for section, values in self.overrides.items():
            raw.setdefault(section, {}).update(values)
        if self.hosts == "netns":
            # Every node on a host of its own, which peers dial directly and it binds; addresses
            # beyond loopback are served only with CURVE.
            for spec in raw["cluster"]["nodes"]:
                spec["host"] = self._addresses[spec["id"]]
            raw.setdefault("network", {})["bind_host"] = ""
            security["mode"] = "curve"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        base = dict(raw)
        (self.config_dir / "base.json").write_text(json.dumps(base, indent=2) + "\n")
        try:
            self._config = config_mod.load(self.config_dir / "base.json")
            self._placement = distribution.from_config(self._config)
        except (ConfigError, PlacementError) as exc:
            raise DbError(f"the node config is refused: {exc}") from None
        paths: dict[str, Path] = {}
        for node in self.node_ids:
            cfg = json.loads(json.dumps(raw))
            cfg["node_id"] = node
            cfg.pop("region_id", None)
            if self.hosts == "local":
                network = cfg.setdefault("network", {})
                network["peer_endpoints"] = {
                    dst: f"tcp://{self.listen[(node, dst)]}" for dst in self.node_ids if dst != node
                }
            path = self.config_dir / f"{node}.json"
            path.write_text(json.dumps(cfg, indent=2) + "\n")
            paths[node] = path
        return paths

    def teardown(self, *, keep_data: bool = False) -> None:
        """Stop every node (SIGCONT first), remove the proxies, stop a Toxiproxy we started;
        in netns mode delete the namespaces, links and (with them) the rules and qdiscs."""
        with self._lock:
            try:
                if self.cluster is not None:
                    self.cluster.stop()
            finally:
                if self.netns is not None:
                    left = self.netns.teardown()
                    if left:
                        self._log(f"left after teardown: {', '.join(left)}")
            for proxy in self.proxies.values():
                with contextlib.suppress(Exception):
                    proxy.destroy()
            self.proxies.clear()
            if self._own_toxiproxy and self.toxiproxy is not None:
                self.toxiproxy.close()
                self.toxiproxy = None
            if not keep_data:
                for node in self.node_ids:
                    shutil.rmtree(self.nodes_dir / node, ignore_errors=True)

    def __enter__(self) -> ClusterDB:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # -- what clients need ----------------------------------------------------------------------

    def config(self) -> Config:
        """The cluster's config as every node loads it (the base of the per-node files)."""
        if self._config is None:
            raise DbError("the configs are not written yet")
        return self._config

    def groups(self) -> dict[str, tuple[str, ...]]:
        """Every replica group of the cluster and its voters, from the placement the config
        implies (a pure function of it: the nodes compute the same)."""
        self.config()
        return {g.id: tuple(g.voters) for g in self._placement[1].groups}

    def router(self) -> Any:
        """A fresh routing cache for one client (None when one group holds every key)."""
        return make_router(self.config())

    def credentials(self, *, admin: bool = False) -> Any:
        """The run's client (or admin) credentials; None when the topology turns security off."""
        return self._cluster().credentials(admin=admin)

    def endpoints(self) -> dict[str, str]:
        """Client endpoints (direct, not proxied) by node id."""
        return {n: f"tcp://{self._addresses.get(n, self.graph.nodes[n]['host'])}:{self.graph.nodes[n]['port']}"
                for n in self.node_ids}

    def node_log(self, node: str) -> Path:
        return self.nodes_dir / f"{node}.log"

    # -- link faults ----------------------------------------------------------------------------

    @property
    def cut_modes(self) -> tuple[str, ...]:
        """The cut modes of this host mode; the first is the default."""
        return CUT_MODES[self.hosts]

    def cut(self, src: str, dst: str, *, mode: str | None = None) -> None:
        """Stop ``src``'s messages to ``dst``: disable the proxy, or blackhole it; in netns mode
        drop (or reject) src's packets in dst's namespace."""
        mode = mode or self.cut_modes[0]
        if mode not in self.cut_modes:
            raise ValueError(f"cut mode must be one of {', '.join(self.cut_modes)} with hosts {self.hosts!r}, "
                             f"got {mode!r}")
        with self._lock:
            key = (src, dst)
            if key in self._cut:
                return
            if self.netns is not None:
                self.netns.cut(src, dst, mode)
            elif mode == "down":
                self.proxies[key].disable()
            else:
                self.add_toxic(src, dst, CUT_TOXIC, "timeout", {"timeout": 0})
            self._cut[key] = mode

    def uncut(self, src: str, dst: str) -> None:
        with self._lock:
            mode = self._cut.pop((src, dst), None)
            if mode is not None and self.netns is not None:
                self.netns.uncut(src, dst)
            elif mode == "down":
                self.proxies[(src, dst)].enable()
            elif mode == "blackhole":
                self.remove_toxic(src, dst, CUT_TOXIC)

    def add_toxic(
        self, src: str, dst: str, name: str, type: str, attributes: dict[str, Any],
        *, streams: tuple[str, ...] = ("upstream", "downstream"),
    ) -> None:
        with self._lock:
            if self.netns is not None:
                self._add_netns_toxic(src, dst, name, type, attributes)
                return
            proxy = self.proxies[(src, dst)]
            for stream in streams:
                full = f"{name}_{stream}"
                if full in self._toxics[(src, dst)]:
                    continue
                proxy.add_toxic(type=type, stream=stream, name=full, toxicity=1.0, attributes=attributes)
                self._toxics[(src, dst)].add(full)

    def _add_netns_toxic(self, src: str, dst: str, name: str, type: str, attributes: dict[str, Any]) -> None:
        """A toxic's kernel equivalent on link (src, dst): ``latency`` a netem delay on src's
        egress, ``bandwidth`` an htb rate there (KB/s -> kbit/s), ``reset_peer`` a TCP-reset rule
        at dst. Anything else has none, and is refused."""
        assert self.netns is not None
        names = self._netns_toxics.setdefault((src, dst), {})
        if name in names:
            return
        try:
            if type == "latency":
                self.netns.add_latency(src, dst, int(attributes.get("latency", 0)), int(attributes.get("jitter", 0)))
            elif type == "bandwidth":
                self.netns.limit_rate(src, dst, int(attributes["rate"]) * 8)
            elif type == "reset_peer":
                self.netns.add_reset(src, dst)
            else:
                raise HostsUnavailable(f"toxic {type!r} has no equivalent with --hosts netns "
                                       "(latency, bandwidth and reset_peer have)")
        except netns.NetnsError as exc:
            raise HostsUnavailable(f"{type} on {src}->{dst} with --hosts netns: {exc}") from None
        names[name] = type

    def _remove_netns_toxic(self, src: str, dst: str, name: str) -> None:
        assert self.netns is not None
        type = self._netns_toxics.setdefault((src, dst), {}).pop(name, None)
        if type == "latency":
            self.netns.remove_latency(src, dst)
        elif type == "bandwidth":
            self.netns.unlimit_rate(src, dst)
        elif type == "reset_peer":
            self.netns.remove_reset(src, dst)

    def remove_toxic(self, src: str, dst: str, name: str, *, streams: tuple[str, ...] = ("upstream", "downstream")) -> None:
        with self._lock:
            if self.netns is not None:
                self._remove_netns_toxic(src, dst, name)
                return
            proxy = self.proxies[(src, dst)]
            for stream in streams:
                full = f"{name}_{stream}"
                if full in self._toxics[(src, dst)]:
                    proxy.destroy_toxic(full)
                    self._toxics[(src, dst)].discard(full)

    def toxics(self, src: str, dst: str) -> set[str]:
        with self._lock:
            if self.netns is not None:
                return set(self._netns_toxics.get((src, dst), ()))
            return set(self._toxics[(src, dst)])

    def is_cut(self, src: str, dst: str) -> bool:
        with self._lock:
            return (src, dst) in self._cut

    def applied_cuts(self) -> dict[str, Any]:
        """What the fault layer holds now, read back from it: in netns mode the rules of the
        harness's iptables chains as the kernel lists them, per node; else the proxies cut."""
        with self._lock:
            if self.netns is None:
                modes = sorted(set(self._cut.values()))
                text = f"{len(self._cut)} proxies cut ({', '.join(modes)})" if self._cut else "no proxy cut"
                return {"layer": "toxiproxy", "links_cut": len(self._cut), "modes": modes, "text": text}
            rules = self.netns.rules()
        cut = {n: len(chains[netns.CUT_CHAIN]) for n, chains in rules.items()}
        reset = {n: len(chains[netns.RESET_CHAIN]) for n, chains in rules.items()}
        targets = sorted({r.rsplit("-j ", 1)[-1].split()[0] for chains in rules.values()
                          for r in chains[netns.CUT_CHAIN]})
        total = sum(cut.values())
        if total:
            text = (f"{total} iptables {'/'.join(targets)} rules in {netns.CUT_CHAIN}: "
                    + ", ".join(f"{n} {k}" for n, k in cut.items() if k))
        else:
            text = f"no iptables rule in {netns.CUT_CHAIN}"
        if any(reset.values()):
            text += f"; {sum(reset.values())} in {netns.RESET_CHAIN}"
        return {"layer": "iptables", "chain": netns.CUT_CHAIN, "rules": total,
                "rules_by_node": {n: k for n, k in cut.items() if k}, "targets": targets,
                "reset_rules": sum(reset.values()), "text": text}

    # -- process faults -------------------------------------------------------------------------

    def _cluster(self) -> LocalCluster:
        if self.cluster is None:
            raise DbError("the cluster is not set up")
        return self.cluster

    def kill(self, node: str) -> None:
        self._cluster().kill(node)

    def start_node(self, node: str, *, wait: bool = True) -> None:
        cluster = self._cluster()
        if cluster.alive(node):
            return
        with self._lock:
            self._skewed.discard(node)  # a new process starts with a true clock
        try:
            cluster.start_node(node, wait=False)
            if wait:
                cluster.wait_ready(node, timeout_s=NODE_READY_TIMEOUT_S)
        except ClusterError as exc:
            raise DbError(f"node {node} did not restart: {exc}") from None

    def pause(self, node: str) -> None:
        self._cluster().pause(node)

    def resume(self, node: str) -> None:
        self._cluster().resume(node)

    def alive(self, node: str) -> bool:
        return self._cluster().alive(node)

    # -- clock faults ---------------------------------------------------------------------------

    def _clock_request(self, node: str, *, shift_ms: float, rate: float, reset: bool) -> str:
        if not self.unsafe:
            raise DbError("clock faults need unsafe.enabled in the node configs (ClusterDB(unsafe=True))")
        with self._cluster().node_client(node, admin=True, timeout_s=CLOCK_REQUEST_TIMEOUT_S) as client:
            return client.clock_fault(self.endpoints()[node], shift_ms=shift_ms, rate=rate, reset=reset,
                                      timeout_s=CLOCK_REQUEST_TIMEOUT_S)

    def clock_fault(self, node: str, *, shift_ms: float = 0.0, rate: float = 1.0) -> str:
        """Jump ``node``'s clock forward by ``shift_ms`` and/or run it at ``rate``; returns the
        node's answer (its offset and rate). Raises the client's error when the node refuses or
        does not answer (killed or paused)."""
        with self._lock:
            self._skewed.add(node)
        return self._clock_request(node, shift_ms=shift_ms, rate=rate, reset=False)

    def reset_clock(self, node: str) -> None:
        """Offset 0 and rate 1 again. A node that is down has a fresh clock when it restarts."""
        if not self.alive(node):
            with self._lock:
                self._skewed.discard(node)
            return
        self._clock_request(node, shift_ms=0.0, rate=1.0, reset=True)
        with self._lock:
            self._skewed.discard(node)

    def transfer_leader(self, to: str, group: str = "default") -> dict[str, Any]:
        """Ask ``group``'s leader (found through redirects) to hand leadership to ``to``, with
        the run's admin key. Returns what happened: the leader's answer or why it was refused
        (no leader during a partition, a transfer already running, ``to`` is the leader...)."""
        from exapyte.errors import ExapyteError

        with self._cluster().admin_client(timeout_s=CLOCK_REQUEST_TIMEOUT_S) as client:
            try:
                message = client.transfer_leader(to, timeout_s=CLOCK_REQUEST_TIMEOUT_S, group=group)
            except ExapyteError as exc:
                return {"result": f"not transferred: {exc}", "from": None, "group": group}
            return {"result": message, "from": client.last_node, "group": group}

    def rebalance(self, action: str, node: str) -> dict[str, Any]:
        """``node add`` / ``node remove`` ``node`` with the run's admin key: replicas move by
        membership changes in each group's log (exapyte/control/rebalance.py). Returns what was
        done, or why it stopped (a group without a leader during a partition, a learner that did
        not catch up in time): a rebalance that stops half way leaves every group with a quorum
        of caught-up voters, and the next one finishes it."""
        from exapyte.control.rebalance import ClusterAdmin, node_change
        from exapyte.errors import ExapyteError

        cfg = self.config()
        admin = ClusterAdmin(cfg, timeout_s=CLOCK_REQUEST_TIMEOUT_S,
                             credentials=self.credentials(admin=True))
        try:
            done = node_change(cfg, action, node, admin, timeout_s=REBALANCE_TIMEOUT_S)
            return {"result": f"{action} {node}: {done['moves']} move(s)", "moves": done["moves"],
                    "steps": done["steps"][-20:]}
        except ExapyteError as exc:
            return {"result": f"{action} {node} stopped: {exc}", "moves": None}
        finally:
            admin.close()

    def leaders(self, timeout_s: float = 1.0) -> dict[str, str]:
        """Each group's leader as the nodes report it now (group -> node): a node that says it
        leads a group, the highest term winning (a deposed leader may not know yet)."""
        best: dict[str, tuple[int, str]] = {}
        for node, status in self.statuses(timeout_s=timeout_s).items():
            for group, st in group_statuses(status).items():
                term = st.get("term")
                if st.get("role") == "leader" and isinstance(term, int):
                    if group not in best or term > best[group][0]:
                        best[group] = (term, node)
        return {g: n for g, (_, n) in sorted(best.items())}

    def heal_all(self) -> None:
        """Every link whole (WAN latency kept), every node running, not paused, true clock."""
        with self._lock:
            if self.netns is not None:
                self.netns.heal()  # flushes the harness's chains, every link back to its base shape
                self._cut.clear()
                self._netns_toxics.clear()
            else:
                for src, dst in list(self._cut):
                    self.uncut(src, dst)
                for (src, dst), names in self._toxics.items():
                    for full in sorted(names):
                        if not full.startswith(WAN_TOXIC + "_"):
                            self.proxies[(src, dst)].destroy_toxic(full)
                            names.discard(full)
        for node in self.node_ids:
            if self.alive(node):
                self.resume(node)
            else:
                self.start_node(node, wait=False)
        deadline = time.monotonic() + NODE_READY_TIMEOUT_S
        for node in self.node_ids:
            try:
                self._cluster().wait_ready(node, timeout_s=max(1.0, deadline - time.monotonic()))
            except ClusterError as exc:
                raise DbError(f"node {node} is not back after the heal: {exc}") from None
        with self._lock:
            skewed = sorted(self._skewed)
        for node in skewed:
            self.reset_clock(node)

    def statuses(self, timeout_s: float = 1.0) -> dict[str, dict[str, Any] | None]:
        """Each node's status (None when it does not answer)."""
        from exapyte.errors import ExapyteError

        out: dict[str, dict[str, Any] | None] = {}
        for node in self.endpoints():
            with self._cluster().node_client(node, timeout_s=timeout_s) as client:
                try:
                    out[node] = client.status(timeout_s=timeout_s)
                except ExapyteError:
                    out[node] = None
        return out
