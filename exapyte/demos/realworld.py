"""``python main.py --demo consensus --real``: the consensus demo on real node processes.

Theory of operation
-------------------
The same experiments as the simulator mode (:mod:`exapyte.demos.consensus`), with the same
workload and fault schedule, on five real ``python -m exapyte --node`` processes per protocol,
one protocol after the other (one cluster at a time: the machine may have two cores).

**Placement.** The cluster is the topology file (``topologies/three-region.json``: n1, n2 in
us-east, n3, n4 in us-west, n5 in ap-northeast) moved to free loopback ports
(:func:`topology_on_free_ports`), started by the harness's db role
(:class:`harness.db.ClusterDB`): one Toxiproxy proxy per directed pair of nodes, with the
topology's one-way latency as a ``latency`` toxic on both streams of every inter-region proxy,
each node dialling its peers through them. Clients sit in a region too: each region has a proxy
to every node carrying the latency from that region to the node's (none inside a region), and a
writer's client (:class:`RegionClient`) dials only those, redirects to the leader included.

**Toxiproxy is required**, never faked: a real ``toxiproxy-server`` on ``PATH`` when there is
one (``toxiproxy=auto`` or ``real``), else exapyte's Toxiproxy-compatible server
(``harness/toxiproxy``, docs/toxiproxy.md), started in a process of its own so that the demo's
client threads do not share its interpreter. Both delay real TCP bytes. Before any cluster
starts, :func:`probe_latency` sends bytes through a proxy with the topology's smallest WAN
latency to an echo socket and refuses to go on (:class:`RealUnavailable`, exit status 2) unless
the round trip took at least twice that latency (less :data:`PROBE_TOLERANCE`). ``toxiproxy=real``
without the binary, or a server that does not answer, is refused the same way.

**Measuring.** Writers are closed loops on threads (:class:`WriteLoop`, one client each): a new
write as soon as the previous one is acknowledged; a retried write keeps its session, so it is
exactly-once. Times are ``time.monotonic_ns``. A :class:`Monitor` thread asks every running node
for its status every :data:`POLL_S`: the leader (the highest term a node says it leads), leader
changes, commit indexes. Messages and bytes are counted **at the transport**, by the nodes
themselves: every node's status carries ``sent`` (:meth:`exapyte.runtime.node.Node._count_sent`:
messages per consensus message kind as handed to a peer's socket, and the bytes of the frames
that carried them; a frame batching several messages counts under ``peers``). The counts
experiment reads every node's counters before and after its writes.

**Per protocol, on one cluster:** set-up; ``counts`` (leader moved to n1 by a leadership
transfer, one writer in n1's region, ``count_writes`` writes one at a time, no faults); ``main``
(one writer per region for ``steady_s``, then ``kill -9`` of the leader's process, the writers go
on for ``after_kill_s``; the killed node is restarted and caught up afterwards); then each of the
three partial-connectivity scenarios (leader back to n1, baseline, the cut for ``scenario_s``,
then every link healed and every node running again). The cuts disable the proxies of the links
(the harness's ``down`` mode: connections closed, connects refused, like a real partition).
The election-time distribution over many failures stays a simulator measurement: a thousand
real leader kills would take hours; the output says so.

The differences from the simulator: a node's leader is whatever its status says (not "a leader
that committed an entry of its term"); the clients reach the nodes through one more proxy hop
on loopback; CPU is shared by five nodes, the proxy and the writers; nothing is deterministic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from exapyte.client import Client
from exapyte.control import topology as topo
from exapyte.demos.consensus import (
    DOCUMENTED_COUNTS,
    PROTOCOLS,
    SCENARIOS,
    WARMUP_S,
    WINDOW_S,
    _round,
    bins_of,
    gap_after,
    percentile,
    recovered_after,
    relative_difference,
    scenario_links,
)
from exapyte.demos.simworld import BACKGROUND_KINDS
from exapyte.errors import ExapyteError
from exapyte.sim.scheduler import NS_PER_MS, NS_PER_S

REPO_ROOT = Path(__file__).resolve().parents[2]
TOXIPROXY_CHOICES = ("auto", "real", "exapyte")
PORT_LOW = 20_000  # node ports come from below the kernel's ephemeral range (proxies bind(0))
TOXIPROXY_START_TIMEOUT_S = 10.0
PROBE_TOLERANCE = 0.9  # the probe's round trip must be at least this share of 2 x latency
PROBE_ROUNDS = 3
STATUS_TIMEOUT_S = 0.5  # one status request of the monitor
POLL_S = 0.2  # the monitor's period
LEADER_TIMEOUT_S = 30.0  # a first leader (after set-up or a heal) within this, or the run fails
TRANSFER_TIMEOUT_S = 15.0  # moving the leadership to the first node: tries for this long
TRANSFER_WAIT_S = 3.0  # after one transfer request, wait this long for the new leader
CATCH_UP_TIMEOUT_S = 30.0  # a restarted node reaches the leader's commit within this
CLIENT_ATTEMPT_TIMEOUT_S = 1.5  # as the simulator's clients: above any WAN commit round trip
CLIENT_DEADLINE_S = 10.0  # a write retries this long before it is given up
WRITER_JOIN_S = CLIENT_DEADLINE_S + 5.0
COUNTS_TIMEOUT_S = 300.0
BASELINE_S = 2 * WINDOW_S


class RealUnavailable(ExapyteError):
    """The real mode cannot run here (no Toxiproxy, latency not applied); nothing was measured."""


@dataclass(frozen=True)
class RealParams:
    """Everything a ``--real`` run depends on; the defaults keep it under about five minutes."""

    seed: int = 1
    topology: str = "topologies/three-region.json"
    protocols: tuple[str, ...] = PROTOCOLS
    steady_s: float = 8.0
    after_kill_s: float = 8.0
    count_writes: int = 100
    scenario_s: float = 8.0
    lag_s: float = 2.0
    bin_ms: float = 100.0
    toxiproxy: str = "auto"
    scenarios: tuple[str, ...] = SCENARIOS


# --- Toxiproxy ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_toxiproxy(prefer: str, seed: int, log_path: Path) -> Any:
    """A running Toxiproxy API (a :class:`harness.toxiproxy.ToxiproxyHandle`): the real
    ``toxiproxy-server`` when ``prefer`` allows it and it is on PATH, else exapyte's server in a
    process of its own. Raises :class:`RealUnavailable` saying why none could be had."""
    if prefer not in TOXIPROXY_CHOICES:
        raise ValueError(f"toxiproxy: {prefer!r}; allowed: {', '.join(TOXIPROXY_CHOICES)}")
    try:
        from harness.toxiproxy import ToxiproxyHandle, fetch_version, find_or_start
        from harness.toxiproxy.limits import SERVER_BINARY_NAME
    except ImportError as exc:
        raise RealUnavailable(f"--real needs the harness package (harness/toxiproxy): {exc}") from None
    binary = shutil.which(SERVER_BINARY_NAME)
    if prefer == "real" and binary is None:
        raise RealUnavailable(
            f"toxiproxy=real: {SERVER_BINARY_NAME} is not on PATH; install it, or run with "
            "toxiproxy=auto to use exapyte's Toxiproxy-compatible server (docs/toxiproxy.md)"
        )
    if binary is not None and prefer != "exapyte":
        try:
            return find_or_start(prefer="real")
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise RealUnavailable(f"{binary} did not start: {exc}") from None
    stack = contextlib.ExitStack()
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("LOG_LEVEL", "warning")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = stack.enter_context(open(log_path, "ab"))  # noqa: SIM115 - closed by the stack
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.toxiproxy", "--host", "127.0.0.1", "--port", str(port),
         "--seed", str(seed)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT),
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    stack.callback(stop)
    deadline = time.monotonic() + TOXIPROXY_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stack.close()
            raise RealUnavailable(f"exapyte's Toxiproxy server exited with status "
                                  f"{proc.returncode}; see {log_path}")
        version = fetch_version("127.0.0.1", port)
        if version is not None:
            return ToxiproxyHandle("exapyte", "127.0.0.1", port, version, stack)
        time.sleep(0.05)
    stack.close()
    raise RealUnavailable(f"exapyte's Toxiproxy server did not answer within "
                          f"{TOXIPROXY_START_TIMEOUT_S:g} s; see {log_path}")


def toxiproxy_api(handle: Any) -> Any:
    from toxiproxy import Toxiproxy  # the client the harness drives Toxiproxy with

    api = Toxiproxy()
    api.update_api_consumer(handle.host, handle.port)
    return api


def probe_latency(handle: Any, latency_ms: int) -> float:
    """The smallest round trip, in ms, of one byte through a proxy carrying ``latency_ms`` on both
    streams to an echo socket. Raises :class:`RealUnavailable` when it is shorter than twice the
    latency (less :data:`PROBE_TOLERANCE`): the proxy does not delay bytes."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10.0)

    def echo() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10.0)
            with contextlib.suppress(OSError):
                while data := conn.recv(64):
                    conn.sendall(data)

    thread = threading.Thread(target=echo, name="latency-probe-echo", daemon=True)
    thread.start()
    api = toxiproxy_api(handle)
    name = "demo_latency_probe"
    existing = api.proxies()
    if name in existing:
        existing[name].destroy()
    proxy = api.create(upstream=f"127.0.0.1:{listener.getsockname()[1]}", name=name,
                       listen=f"127.0.0.1:{_free_port()}", enabled=True)
    try:
        for stream in ("upstream", "downstream"):
            proxy.add_toxic(type="latency", stream=stream, name=f"probe_{stream}", toxicity=1.0,
                            attributes={"latency": latency_ms, "jitter": 0})
        host, port = proxy.listen.rsplit(":", 1)
        best = float("inf")
        with socket.create_connection((host, int(port)), timeout=10.0) as conn:
            for _ in range(PROBE_ROUNDS):
                t0 = time.monotonic_ns()
                conn.sendall(b"x")
                if conn.recv(1) != b"x":
                    raise RealUnavailable("the latency probe's echo came back wrong")
                best = min(best, (time.monotonic_ns() - t0) / NS_PER_MS)
    except OSError as exc:
        raise RealUnavailable(f"the latency probe through Toxiproxy failed: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            proxy.destroy()
        listener.close()
        thread.join(timeout=1.0)
    if best < PROBE_TOLERANCE * 2 * latency_ms:
        raise RealUnavailable(
            f"Toxiproxy does not delay bytes: a round trip through a proxy with {latency_ms} ms "
            f"each way took {best:.1f} ms (at least {2 * latency_ms} ms expected); refusing to "
            "measure without the topology's latencies"
        )
    return best


# --- the cluster ----------------------------------------------------------------------------


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_node_ports(count: int, rng: random.Random) -> list[int]:
    """Distinct ports free on 127.0.0.1 a moment ago, below the ephemeral range (so no proxy's
    bind(0) and no outgoing connection can take one before its node binds it)."""
    high = _ephemeral_low()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(PORT_LOW, high)
        if port in ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def topology_on_free_ports(source: Path, target: Path, protocol: str) -> Path:
    """``source`` with every node on free ports and ``consensus.protocol`` set, written to
    ``target``."""
    raw = json.loads(source.read_text())
    nodes = raw["cluster"]["nodes"]
    ports = free_node_ports(2 * len(nodes), random.Random())
    for i, node in enumerate(nodes):
        node["host"] = "127.0.0.1"
        node["port"], node["pub_port"] = ports[2 * i], ports[2 * i + 1]
    raw.setdefault("consensus", {})["protocol"] = protocol
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(raw, indent=2) + "\n")
    return target


class RegionClient(Client):
    """A client sitting in a region: it thinks in the nodes' own endpoints (so redirects to the
    leader work as usual) but dials each through its region's proxy (``via``)."""

    def __init__(self, *args: Any, via: dict[str, str], **kwargs: Any) -> None:
        self.via = dict(via)
        creds = kwargs.get("credentials")
        if creds is not None:  # the proxied endpoint holds the node's key
            keys = dict(creds.server_keys)
            keys.update({proxied: keys[direct] for direct, proxied in via.items() if direct in keys})
            kwargs["credentials"] = msgspec.structs.replace(creds, server_keys=keys)
        super().__init__(*args, **kwargs)

    def _socket(self, endpoint: str) -> Any:
        return super()._socket(self.via.get(endpoint, endpoint))


@dataclass
class WriteLoop:
    """One closed-loop writer on a thread of its own."""

    make_client: Callable[[], Client]
    region: str
    key: str
    writes_max: int | None = None
    latencies_ms: list[float] = field(default_factory=list)
    acked_at_ns: list[int] = field(default_factory=list)
    failed: int = 0
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"writer-{self.region}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop after the write in flight (see :meth:`join`)."""
        self._stop.set()

    def join(self, timeout_s: float = WRITER_JOIN_S) -> None:
        """Wait for the thread (it stops on :meth:`stop` or after ``writes_max`` writes)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            client = self.make_client()
        except Exception as exc:  # noqa: BLE001 - reported by the experiment
            self.error = f"{type(exc).__name__}: {exc}"
            return
        counter = 0
        try:
            while not self._stop.is_set():
                if self.writes_max is not None and counter >= self.writes_max:
                    break
                counter += 1
                started = time.monotonic_ns()
                try:
                    client.put(self.key, f"{self.region}-{counter}", timeout_s=CLIENT_DEADLINE_S)
                except ExapyteError:
                    self.failed += 1
                    continue
                now = time.monotonic_ns()
                self.latencies_ms.append((now - started) / NS_PER_MS)
                self.acked_at_ns.append(now)
        finally:
            client.close()


class Monitor:
    """Polls every running node's status on a thread: the leader, leader changes, commits."""

    def __init__(self, cluster: RealCluster) -> None:
        self.cluster = cluster
        self.lock = threading.Lock()
        self.latest: dict[str, dict[str, Any]] = {}
        self.best: tuple[int, str] | None = None  # (term, node) of the highest term led so far
        self.leader_changes: list[tuple[int, str, int]] = []  # (time ns, node, term)
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        db = self.cluster.db
        assert db.cluster is not None
        clients = {n: db.cluster.node_client(n, timeout_s=STATUS_TIMEOUT_S) for n in db.node_ids}
        try:
            while not self._stop.is_set():
                for node, client in clients.items():
                    if not db.alive(node):
                        with self.lock:
                            self.latest.pop(node, None)
                        continue
                    try:
                        status = client.status(timeout_s=STATUS_TIMEOUT_S)
                    except ExapyteError:
                        continue
                    self._note(node, status)
                self.polls += 1
                self._stop.wait(POLL_S)
        finally:
            for client in clients.values():
                client.close()

    def _note(self, node: str, status: dict[str, Any]) -> None:
        now = time.monotonic_ns()
        with self.lock:
            self.latest[node] = status
            term = status.get("term")
            if status.get("role") == "leader" and isinstance(term, int):
                if self.best is None or term > self.best[0]:  # a leader of a newer term
                    self.leader_changes.append((now, node, term))
                    self.best = (term, node)

    def leader(self) -> tuple[str, int] | None:
        """The running node that says it leads the highest term, with the term."""
        with self.lock:
            best: tuple[int, str] | None = None
            for node, status in self.latest.items():
                term = status.get("term")
                if status.get("role") == "leader" and isinstance(term, int):
                    if best is None or term > best[0]:
                        best = (term, node)
        return (best[1], best[0]) if best else None

    def commit(self, node: str) -> int | None:
        with self.lock:
            status = self.latest.get(node)
        value = status.get("commit") if status else None
        return value if isinstance(value, int) else None

    def fresh(self) -> None:
        """Wait for one more complete poll round."""
        start = self.polls
        deadline = time.monotonic() + 5.0
        while self.polls < start + 2 and time.monotonic() < deadline:
            time.sleep(0.02)


class RealCluster:
    """One protocol's five nodes behind per-link proxies, client proxies per region, a monitor."""

    def __init__(self, protocol: str, params: RealParams, run_dir: Path, toxiproxy: Any,
                 say: Callable[[str], None] = lambda text: None) -> None:
        from harness.db import ClusterDB

        self.protocol = protocol
        self.params = params
        self.run_dir = run_dir
        self.say = say
        topology = topology_on_free_ports(Path(params.topology), run_dir / "topology.json", protocol)
        self.db = ClusterDB(topology, run_dir, toxiproxy=toxiproxy, seed=params.seed, log=say,
                            overrides={"consensus": {"protocol": protocol}})
        self.graph = self.db.graph
        self.node_ids: list[str] = [n.id for n in _nodes_in_file_order(topology)]
        self.region = {n: topo.region_of(self.graph, n) for n in self.node_ids}
        self.regions = list(dict.fromkeys(self.region[n] for n in self.node_ids))
        self.toxiproxy = toxiproxy
        self.client_proxies: dict[tuple[str, str], Any] = {}
        self.via: dict[str, dict[str, str]] = {}  # region -> node endpoint -> proxied endpoint
        self.monitor: Monitor | None = None

    # --- set-up and teardown -------------------------------------------------------------------

    def setup(self) -> None:
        self.db.setup()
        self._client_proxies()
        self.monitor = Monitor(self)
        self.monitor.start()
        if self.wait_leader(LEADER_TIMEOUT_S) is None:
            raise ExapyteError(f"{self.protocol}: no leader within {LEADER_TIMEOUT_S:g} s of the "
                               f"cluster's start; node logs in {self.db.nodes_dir}")

    def _client_proxies(self) -> None:
        api = toxiproxy_api(self.toxiproxy)
        existing = api.proxies()
        endpoints = self.db.endpoints()
        for region in self.regions:
            here = next(n for n in self.node_ids if self.region[n] == region)
            self.via[region] = {}
            for node in self.node_ids:
                name = f"client_{region}_to_{node}"
                if name in existing:
                    existing[name].destroy()
                spec = self.graph.nodes[node]
                proxy = api.create(upstream=f"{spec['host']}:{spec['port']}", name=name,
                                   listen=f"127.0.0.1:{_free_port()}", enabled=True)
                self.client_proxies[(region, node)] = proxy
                self.via[region][endpoints[node]] = f"tcp://{proxy.listen}"
                latency = int(round(topo.latency_ms(self.graph, here, node)))
                if latency > 0:
                    for stream in ("upstream", "downstream"):
                        proxy.add_toxic(type="latency", stream=stream, name=f"wan_{stream}",
                                        toxicity=1.0, attributes={"latency": latency, "jitter": 0})

    def teardown(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        cluster = self.db.cluster
        if cluster is not None:  # every node stops at once; the db role then waits for each
            for node in self.node_ids:
                if cluster.alive(node):
                    cluster.resume(node)
                    cluster.signal(node, signal.SIGTERM)
        try:
            self.db.teardown()
        finally:
            for proxy in self.client_proxies.values():
                with contextlib.suppress(Exception):
                    proxy.destroy()
            self.client_proxies.clear()

    def applied_latencies_ms(self) -> dict[str, int]:
        """The WAN toxics the node-to-node proxies hold, read back from Toxiproxy."""
        out: dict[str, int] = {}
        for (src, dst), proxy in sorted(self.db.proxies.items()):
            for toxic in proxy.toxics().values():
                if toxic.type == "latency" and toxic.stream == "upstream":
                    out[f"{src}->{dst}"] = int(toxic.attributes["latency"])
        return out

    # --- clients --------------------------------------------------------------------------------

    def writer(self, region: str, key: str, writes_max: int | None = None) -> WriteLoop:
        endpoints = self.db.endpoints()
        creds = self.db.credentials()
        router = self.db.router()
        via = self.via[region]
        order = sorted(endpoints, key=lambda n: (self.region[n] != region, n))

        def make() -> Client:
            return RegionClient(
                [endpoints[n] for n in order], node_endpoints=endpoints, via=via,
                credentials=creds, router=router, timeout_s=CLIENT_DEADLINE_S,
                attempt_timeout_s=CLIENT_ATTEMPT_TIMEOUT_S,
            )

        return WriteLoop(make, region, key, writes_max=writes_max)

    def writers(self) -> list[WriteLoop]:
        loops = [self.writer(region, f"k-{region}") for region in self.regions]
        for loop in loops:
            loop.start()
        return loops

    # --- what the cluster looks like ------------------------------------------------------------

    def leader(self) -> tuple[str, int] | None:
        assert self.monitor is not None
        return self.monitor.leader()

    def wait_leader(self, timeout_s: float, *, other_than: str | None = None) -> tuple[str, int] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead is not None and lead[0] != other_than:
                return lead
            time.sleep(0.05)
        return None

    def transfer_to(self, target: str) -> str:
        """Move the leadership to ``target`` (retried for :data:`TRANSFER_TIMEOUT_S`); returns
        the leader it ended with."""
        deadline = time.monotonic() + TRANSFER_TIMEOUT_S
        while time.monotonic() < deadline:
            lead = self.wait_leader(max(0.1, deadline - time.monotonic()))
            if lead is None:
                break
            if lead[0] == target:
                return target
            self.db.transfer_leader(target)
            until = time.monotonic() + TRANSFER_WAIT_S
            while time.monotonic() < until:
                now = self.leader()
                if now is not None and now[0] == target:
                    return target
                time.sleep(0.05)
        lead = self.leader()
        return lead[0] if lead else target

    def sent(self) -> dict[str, dict[str, Any]]:
        """Every node's transport counters (status ``sent``) and instance id, read now."""
        out: dict[str, dict[str, Any]] = {}
        for node, status in self.db.statuses(timeout_s=2.0).items():
            if status is None or "sent" not in status:
                raise ExapyteError(f"{self.protocol}: node {node} did not report its counters")
            out[node] = {"instance": status.get("instance"), **status["sent"]}
        return out

    def commit_lag(self, node: str) -> int:
        assert self.monitor is not None
        self.monitor.fresh()
        lead = self.leader()
        if lead is None:
            return 0
        leader_commit = self.monitor.commit(lead[0]) or 0
        return max(0, leader_commit - (self.monitor.commit(node) or 0))

    # --- faults ---------------------------------------------------------------------------------

    def kill(self, node: str) -> None:
        self.db.kill(node)

    def restart_caught_up(self, node: str) -> None:
        """Start ``node`` again and wait until its commit reaches the leader's."""
        assert self.monitor is not None
        self.db.start_node(node, wait=True)
        lead = self.wait_leader(LEADER_TIMEOUT_S)
        self.monitor.fresh()
        target = self.monitor.commit(lead[0]) if lead else None
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while target is not None and time.monotonic() < deadline:
            commit = self.monitor.commit(node)
            if commit is not None and commit >= target:
                return
            time.sleep(0.1)

    def cut(self, links: set[tuple[str, str]]) -> None:
        """Cut these undirected links, both directions of each."""
        for a, b in sorted(links):
            self.db.cut(a, b)
            self.db.cut(b, a)

    def uncut(self, links: set[tuple[str, str]]) -> None:
        for a, b in sorted(links):
            self.db.uncut(a, b)
            self.db.uncut(b, a)

    def heal(self) -> None:
        """Every link whole (WAN latency kept), every node running, a leader."""
        self.db.heal_all()
        if self.wait_leader(LEADER_TIMEOUT_S) is None:
            raise ExapyteError(f"{self.protocol}: no leader within {LEADER_TIMEOUT_S:g} s of a heal")


def _nodes_in_file_order(path: Path) -> list[Any]:
    from exapyte.config import load as load_config

    return list(load_config(path).cluster.nodes)


# --- the experiments ------------------------------------------------------------------------


def _acks(loops: list[WriteLoop]) -> list[int]:
    return sorted(t for loop in loops for t in loop.acked_at_ns)


def _join_all(loops: list[WriteLoop]) -> None:
    for loop in loops:
        loop.stop()
    for loop in loops:
        loop.join()


def _writer_errors(loops: list[WriteLoop]) -> None:
    for loop in loops:
        if loop.error is not None:
            raise ExapyteError(f"the writer in {loop.region} could not start: {loop.error}")


def run_counts(rc: RealCluster) -> dict[str, Any]:
    p = rc.params
    leader = rc.transfer_to(rc.node_ids[0])
    loop = rc.writer(rc.region[leader], "k0", writes_max=p.count_writes)
    time.sleep(WARMUP_S)
    before = rc.sent()
    loop.start()
    loop.join(COUNTS_TIMEOUT_S)
    _writer_errors([loop])
    time.sleep(WARMUP_S)  # the last write's messages to the farthest follower land
    after = rc.sent()
    restarted = [n for n in after if after[n]["instance"] != before[n]["instance"]]
    if restarted:
        raise ExapyteError(f"{rc.protocol}: node(s) {restarted} restarted during the counts")
    messages: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for node in after:
        for kind, count in after[node]["messages"].items():
            messages[kind] = messages.get(kind, 0) + count - before[node]["messages"].get(kind, 0)
        for kind, size in after[node]["bytes"].items():
            sizes[kind] = sizes.get(kind, 0) + size - before[node]["bytes"].get(kind, 0)
    messages = {k: v for k, v in messages.items() if v}
    sizes = {k: v for k, v in sizes.items() if v}
    writes = len(loop.latencies_ms)
    n = len(rc.node_ids)
    formula, count = DOCUMENTED_COUNTS[rc.protocol]
    path_msgs = sum(v for k, v in messages.items() if k not in BACKGROUND_KINDS)
    all_msgs = sum(messages.values())
    all_bytes = sum(sizes.values())
    # bytes of a batch frame (several messages) are write-path bytes: see the module doc
    path_bytes = all_bytes - sum(v for k, v in sizes.items() if k in BACKGROUND_KINDS)
    per_write = path_msgs / writes if writes else 0.0
    return {
        "leader": leader,
        "nodes": n,
        "writes": writes,
        "failed_writes": loop.failed,
        "documented": {"formula": formula, "messages_per_write": count(n)},
        "messages_per_write": round(per_write, 4),
        "bytes_per_write": round(path_bytes / writes, 1) if writes else 0.0,
        "relative_difference": round(relative_difference(per_write, count(n)), 4),
        "all_messages_per_write": round(all_msgs / writes, 4) if writes else 0.0,
        "all_bytes_per_write": round(all_bytes / writes, 1) if writes else 0.0,
        "batched_bytes": sizes.get("peers", 0),
        "by_kind": {
            kind: {"messages": messages.get(kind, 0), "bytes": sizes.get(kind, 0),
                   "background": kind in BACKGROUND_KINDS}
            for kind in sorted(set(messages) | set(sizes))
        },
        "counted_at": "transport (every node's status.sent)",
    }


def run_main(rc: RealCluster) -> dict[str, Any]:
    p = rc.params
    assert rc.monitor is not None
    leader = rc.transfer_to(rc.node_ids[0])
    loops = rc.writers()
    time.sleep(WARMUP_S)
    _writer_errors(loops)
    start_ns = time.monotonic_ns()
    marks = {id(loop): len(loop.latencies_ms) for loop in loops}
    time.sleep(p.steady_s)
    kill_ns = time.monotonic_ns()
    per_region: dict[str, dict[str, Any]] = {}
    for loop in loops:
        lat = [x for x, t in zip(loop.latencies_ms[marks[id(loop)]:], loop.acked_at_ns[marks[id(loop)]:],
                                 strict=True) if t < kill_ns]
        per_region[loop.region] = {
            "writes": len(lat),
            "p50_ms": _round(percentile(lat, 50)),
            "p99_ms": _round(percentile(lat, 99)),
            "latencies_ms": [round(x, 3) for x in lat],
        }
    steady = sum(1 for t in _acks(loops) if start_ns <= t < kill_ns)
    throughput = steady / p.steady_s
    current = rc.leader()
    killed = current[0] if current else leader
    rc.kill(killed)
    kill_ns = time.monotonic_ns()
    time.sleep(p.after_kill_s)
    end_ns = time.monotonic_ns()
    new = next(((t, n) for t, n, _ in list(rc.monitor.leader_changes) if t >= kill_ns and n != killed),
               None)
    _join_all(loops)
    acks = _acks(loops)
    before_ns = max(start_ns, kill_ns - int(min(3.0, p.steady_s) * NS_PER_S))
    timeline = bins_of(acks, before_ns, end_ns, p.bin_ms)
    after = bins_of(acks, kill_ns, end_ns, p.bin_ms)
    gap = gap_after(after, p.bin_ms, throughput)
    tail_s = min(3.0, p.after_kill_s)
    after_wps = sum(1 for t in acks if end_ns - int(tail_s * NS_PER_S) <= t < end_ns) / tail_s
    result = {
        "leader": leader,
        "leader_region": rc.region[leader],
        "throughput_wps": round(throughput, 3),
        "per_region": per_region,
        "killed": killed,
        "kill": "SIGKILL of the leader's process",
        "new_leader": new[1] if new else None,
        "new_leader_region": rc.region[new[1]] if new else None,
        "new_leader_after_s": _round((new[0] - kill_ns) / NS_PER_S if new else None),
        "gap_s": _round(gap),
        "after_kill_wps": round(after_wps, 3),  # over the last (up to) 3 s
        "timeline": {
            "bin_ms": p.bin_ms,
            "start_s": round((before_ns - kill_ns) / NS_PER_S, 3),
            "writes_per_bin": timeline,
        },
        "failed_writes": sum(loop.failed for loop in loops),
    }
    rc.restart_caught_up(killed)
    return result


def _link(x: str, y: str) -> tuple[str, str]:
    return (x, y) if x < y else (y, x)


def run_scenario(rc: RealCluster, name: str) -> dict[str, Any]:
    p = rc.params
    assert rc.monitor is not None
    a = rc.transfer_to(rc.node_ids[0])
    others = [n for n in rc.node_ids if n != a]
    c = others[1] if len(others) > 1 else others[0]
    loops = rc.writers()
    try:
        time.sleep(WARMUP_S)
        _writer_errors(loops)
        base_start = time.monotonic_ns()
        time.sleep(BASELINE_S)
        baseline = sum(1 for t in _acks(loops) if t >= base_start) / BASELINE_S
        lag = None
        cut = {_link(x, y) for x, y in scenario_links(name, a, c, tuple(rc.node_ids))}
        if name == "constrained-election":
            isolate = {_link(c, x) for x in rc.node_ids if x != c}
            rc.cut(isolate)
            time.sleep(p.lag_s)
            lag = rc.commit_lag(c)
            rc.cut(cut)  # before C's isolation ends, so that C never hears A again
            rc.uncut(isolate - cut)
        else:
            rc.cut(cut)
        fault_ns = time.monotonic_ns()
        changes_before = len(rc.monitor.leader_changes)
        time.sleep(p.scenario_s)
        end_ns = time.monotonic_ns()
        changes = rc.monitor.leader_changes[changes_before:]
        final = rc.leader()
        bins = bins_of(_acks(loops), fault_ns, end_ns, p.bin_ms)
    finally:
        for loop in loops:
            loop.stop()
        rc.heal()
        _join_all(loops)
    recovered = recovered_after(bins, p.bin_ms, baseline)
    return {
        "leader": a,
        "hub": c,
        "cut": sorted(list(pair) for pair in cut),
        "hub_commit_lag": lag,
        "baseline_wps": round(baseline, 3),
        "recovered_s": _round(recovered),
        "outcome": f"recovered in {recovered:.1f} s" if recovered is not None else "stuck",
        "leader_changes": len(changes),
        "final_leader": final[0] if final else None,
        "writes_after_cut": sum(bins),
    }


ELECTIONS_NOTE = ("the election-time distribution over 1,000 leader failures is a simulator "
                  "measurement (python main.py --demo consensus); --real kills the leader once")


def steps(params: RealParams) -> list[tuple[str, str]]:
    """(protocol, step) in the order a run goes through them."""
    out: list[tuple[str, str]] = []
    for protocol in params.protocols:
        out += [(protocol, "set-up"), (protocol, "counts"), (protocol, "main")]
        out += [(protocol, name) for name in params.scenarios]
    return out


def run_protocol(protocol: str, params: RealParams, run_dir: Path, toxiproxy: Any,
                 on_step: Callable[[str, str], None], say: Callable[[str], None]) -> dict[str, Any]:
    """One protocol's cluster through every experiment; its ``results.json`` entry."""
    rc = RealCluster(protocol, params, run_dir / protocol, toxiproxy, say=say)
    try:
        on_step(protocol, "set-up")
        rc.setup()
        entry: dict[str, Any] = {"links_ms_applied": rc.applied_latencies_ms()}
        on_step(protocol, "counts")
        entry["messages"] = run_counts(rc)
        on_step(protocol, "main")
        entry["main"] = run_main(rc)
        entry["scenarios"] = {}
        for name in params.scenarios:
            on_step(protocol, name)
            entry["scenarios"][name] = run_scenario(rc, name)
        entry["elections"] = {"measured": False, "note": ELECTIONS_NOTE}
        entry["node_logs"] = str(rc.db.nodes_dir)
        return entry
    finally:
        rc.teardown()


def run(params: RealParams, run_dir: Path, on_step: Callable[[str, str], None] | None = None,
        say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Every protocol on real processes; ``results.json``'s content (``"mode": "real"``). Raises
    :class:`RealUnavailable` before anything starts when Toxiproxy is missing or does not delay."""
    from exapyte.config import load as load_config

    cfg = load_config(params.topology)
    wan = sorted(int(round(link.latency_ms)) for link in cfg.cluster.links if link.latency_ms > 0)
    handle = start_toxiproxy(params.toxiproxy, params.seed, run_dir / "toxiproxy.log")
    try:
        probe_ms = wan[0] if wan else 0
        rtt = probe_latency(handle, probe_ms) if probe_ms else None
        say(f"toxiproxy ({handle.kind} {handle.version}) at {handle.api_url}; latency probe: "
            f"{rtt:.1f} ms round trip for {probe_ms} ms each way" if rtt is not None else
            f"toxiproxy ({handle.kind}) at {handle.api_url}; the topology has no WAN latency")
        protocols: dict[str, Any] = {}
        for protocol in params.protocols:
            protocols[protocol] = run_protocol(protocol, params, run_dir, handle,
                                               on_step or (lambda p, s: None), say)
    finally:
        handle.close()
    return {
        "mode": "real",
        "params": dataclasses.asdict(params),
        "toxiproxy": {"kind": handle.kind, "version": handle.version,
                      "latency_probe": {"each_way_ms": probe_ms,
                                        "round_trip_ms": None if rtt is None else round(rtt, 2)}},
        "run_dir": str(run_dir),
        "notes": [ELECTIONS_NOTE,
                  "a leader is the node whose status says it leads the highest term",
                  "clients reach the nodes through their region's proxies (one more loopback hop)"],
        "protocols": protocols,
    }


__all__ = [
    "ELECTIONS_NOTE",
    "RealCluster",
    "RealParams",
    "RealUnavailable",
    "RegionClient",
    "probe_latency",
    "run",
    "start_toxiproxy",
    "steps",
    "topology_on_free_ports",
]
