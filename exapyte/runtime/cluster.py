"""Start, stop, kill, pause and restart the nodes of a cluster file as local processes.

Used by ``python main.py --cluster FILE``, by the integration tests and by the harness's db role.
Each node is ``python -m exapyte --node --config FILE --node-id ID`` with its output in
``RUN_DIR/ID.log``. ``RUN_DIR/cluster.json`` lists node ids, pids and endpoints, and is rewritten
whenever a node is restarted.

With ``security.mode: curve`` the launcher creates whatever keys are missing in the config's key
directory (``--keygen``'s layout) before it starts anything, and its clients carry them.

Each start gets a fresh *instance id*, passed to the node (``--instance-id``) and reported in its
status: :meth:`LocalCluster.wait_ready` accepts only the process it started, so a port held by
someone else is reported as such instead of mistaken for a node. Ports are also checked free
before a node starts.

:class:`Supervisor` keeps a running cluster alive: when a node exits it says which and how, and
restarts it after a backoff that doubles per quick failure.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from exapyte import config as config_mod
from exapyte.client import Client, feed_setup, make_router
from exapyte.config import Config, canonical_host
from exapyte.errors import ExapyteError
from exapyte.security import Credentials, generate, load_credentials

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


RESTART_BACKOFF_S = 0.5  # first restart delay; doubles per quick failure
RESTART_BACKOFF_MAX_S = 30.0
RESTART_STABLE_S = 30.0  # a node that ran this long is healthy again: its backoff resets


class ClusterError(ExapyteError):
    """A node did not start, or stopped unexpectedly."""


def describe_exit(returncode: int | None) -> str:
    """``exit code 1`` / ``signal 9 (SIGKILL)`` for a Popen return code."""
    if returncode is None:
        return "no exit yet"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"


class LocalCluster:
    """The processes of one cluster file. Not thread-safe."""

    def __init__(
        self,
        config_path: str | Path,
        run_dir: str | Path,
        *,
        data_in_run_dir: bool = True,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        node_config_paths: dict[str, Path] | None = None,
        keys_dir: str | Path | None = None,
        wrap: Callable[[str, list[str]], list[str]] | None = None,
    ) -> None:
        self.config_path = Path(config_path).resolve()
        self.cfg: Config = config_mod.load(self.config_path)
        self.run_dir = Path(run_dir).resolve()
        self.data_in_run_dir = data_in_run_dir
        self.extra_args = extra_args
        self.env = env
        # Per-node config files (same cluster, e.g. different network.peer_endpoints), if any.
        self.node_config_paths = {k: Path(v).resolve() for k, v in (node_config_paths or {}).items()}
        # (node id, command) -> the command actually run, e.g. inside the node's network namespace.
        # It must exec the command in place, so the pid signalled is the node's own.
        self.wrap = wrap
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.instances: dict[str, str] = {}  # node id -> instance id of the process started
        self._logs: dict[str, Any] = {}
        self.keys_dir: Path | None = None
        self._credentials: dict[str, Credentials] = {}
        if self.cfg.security.mode == "curve":
            self.keys_dir = Path(keys_dir or self.cfg.security.keys_dir).resolve()
            generate(self.keys_dir, self.node_ids)

    def credentials(self, *, admin: bool = False) -> Credentials | None:
        """The client (or admin) credentials of this cluster; None when security is off."""
        if self.keys_dir is None:
            return None
        role = "admins" if admin else "clients"
        creds = self._credentials.get(role)
        if creds is None:
            creds = load_credentials(self.keys_dir, self.endpoints(), role=role)
            self._credentials[role] = creds
        return creds

    @property
    def node_ids(self) -> list[str]:
        return self.cfg.node_ids()

    def endpoint(self, node_id: str) -> str:
        return self.cfg.node_by_id(node_id).endpoint

    def endpoints(self) -> dict[str, str]:
        return {n.id: n.endpoint for n in self.cfg.cluster.nodes}

    def client(self, *, admin: bool = False, subscribe: bool = True, **kwargs: Any) -> Client:
        """A client of the whole cluster (follows redirects to the leader); with shards and
        ``subscribe``, it follows the control plane's feed."""
        kwargs.setdefault("credentials", self.credentials(admin=admin))
        kwargs.setdefault("router", make_router(self.cfg))
        if subscribe and kwargs["router"] is not None and "feed_endpoints" not in kwargs:
            kwargs["feed_endpoints"], kwargs["credentials"] = feed_setup(self.cfg, kwargs["credentials"])
        return Client(
            list(self.endpoints().values()), node_endpoints=self.endpoints(), **kwargs
        )

    def admin_client(self, **kwargs: Any) -> Client:
        """A client allowed to make admin requests (membership, leadership transfer, clock)."""
        return self.client(admin=True, **kwargs)

    def node_client(self, node_id: str, *, admin: bool = False, **kwargs: Any) -> Client:
        """A client of one node only (status, requests that must not be redirected)."""
        kwargs.setdefault("credentials", self.credentials(admin=admin))
        return Client(self.endpoint(node_id), node_endpoints=self.endpoints(), **kwargs)

    def dealer(self, node_id: str, ctx: zmq.Context[Any], *, admin: bool = False) -> zmq.Socket[Any]:
        """A raw DEALER connected to ``node_id``'s ROUTER, as an ordinary client connects (for
        tests that send hand-built frames). The caller closes it."""
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        creds = self.credentials(admin=admin)
        endpoint = self.endpoint(node_id)
        if creds is not None:
            creds.apply(sock, endpoint)
        sock.connect(endpoint)
        return sock

    # -- processes ----------------------------------------------------------------------------

    def command(self, node_id: str) -> list[str]:
        cmd = [
            sys.executable, "-m", "exapyte", "--node",
            "--config", str(self.node_config_paths.get(node_id, self.config_path)),
            "--node-id", node_id,
        ]
        if self.data_in_run_dir:
            cmd += ["--data-dir", str(self.run_dir / node_id)]
        if self.keys_dir is not None:
            cmd += ["--keys-dir", str(self.keys_dir)]
        return cmd + list(self.extra_args)

    def start(self, wait: bool = True) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for node_id in self.node_ids:
            self.start_node(node_id, wait=False)
        if wait:
            for node_id in self.node_ids:
                self.wait_ready(node_id)

    def start_node(self, node_id: str, wait: bool = True) -> None:
        proc = self.procs.get(node_id)
        if proc is not None and proc.poll() is None:
            raise ClusterError(f"node {node_id} is already running (pid {proc.pid})")
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.check_ports_free(node_id)
        log = open(self.run_dir / f"{node_id}.log", "ab")  # noqa: SIM115 - kept open while it runs
        old = self._logs.pop(node_id, None)
        if old is not None:
            old.close()
        self._logs[node_id] = log
        instance = uuid.uuid4().hex
        self.instances[node_id] = instance
        command = [*self.command(node_id), "--instance-id", instance]
        if self.wrap is not None:
            command = self.wrap(node_id, command)
        self.procs[node_id] = subprocess.Popen(
            command, stdout=log,
            stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT), start_new_session=True,
        )
        self.write_manifest()
        if wait:
            self.wait_ready(node_id)

    def check_ports_free(self, node_id: str) -> None:
        """Raise :class:`ClusterError` when another process already listens on one of the
        node's ports (on its bind address)."""
        spec = self.cfg.node_by_id(node_id)
        host = self.cfg.network.bind_host or spec.host
        for what, port in (("port", spec.port), ("pub_port", spec.resolved_pub_port)):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((canonical_host(host), port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ClusterError(
                        f"node {node_id}: {what} {port} on {host} is already in use by another "
                        "process; stop it or choose other ports in the cluster file"
                    ) from None
                if exc.errno != errno.EADDRNOTAVAIL:  # an address of another host: the node says
                    raise ClusterError(f"node {node_id}: cannot bind {host}:{port}: {exc}") from None
            finally:
                probe.close()

    def wait_ready(self, node_id: str, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Wait until the process this launcher started for ``node_id`` answers a status request
        (its instance id must match); returns its status."""
        deadline = time.monotonic() + timeout_s
        with self.node_client(node_id, timeout_s=1.0) as client:
            while True:
                proc = self.procs.get(node_id)
                if proc is not None and proc.poll() is not None:
                    raise ClusterError(
                        f"node {node_id} exited with {describe_exit(proc.returncode)}; see "
                        f"{self.run_dir / (node_id + '.log')}:\n{self.log_tail(node_id)}"
                    )
                try:
                    status = client.status(
                        timeout_s=min(1.0, max(0.1, deadline - time.monotonic()))
                    )
                except ExapyteError:
                    status = None
                if status is not None:
                    expected = self.instances.get(node_id)
                    if expected is None or status.get("instance") == expected:
                        return status
                    raise ClusterError(
                        f"{self.endpoint(node_id)} is answered by another process (instance "
                        f"{status.get('instance')}, pid {status.get('pid')}), not by the node "
                        f"{node_id} this launcher started (pid "
                        f"{proc.pid if proc is not None else '?'}); is another cluster running "
                        "on these ports?"
                    )
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"node {node_id} did not answer within {timeout_s} s:\n"
                        f"{self.log_tail(node_id)}"
                    )

    def log_tail(self, node_id: str, lines: int = 20) -> str:
        path = self.run_dir / f"{node_id}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def signal(self, node_id: str, sig: int) -> None:
        proc = self.procs[node_id]
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def kill(self, node_id: str) -> None:
        """kill -9: no flush, no goodbye."""
        self.signal(node_id, signal.SIGKILL)
        self.procs[node_id].wait(timeout=STOP_TIMEOUT_S)

    def pause(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGCONT)

    def stop_node(self, node_id: str) -> int | None:
        """SIGTERM (after SIGCONT, in case it is paused); SIGKILL if it does not exit in time."""
        proc = self.procs.get(node_id)
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        return proc.returncode

    def restart(self, node_id: str, wait: bool = True) -> None:
        self.stop_node(node_id)
        self.start_node(node_id, wait=wait)

    def alive(self, node_id: str) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def stop(self) -> dict[str, int | None]:
        codes = {node_id: self.stop_node(node_id) for node_id in list(self.procs)}
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        return codes

    def write_manifest(self) -> None:
        manifest = {
            "config": str(self.config_path),
            "run_dir": str(self.run_dir),
            "nodes": [
                {
                    "id": n.id,
                    "region": n.region,
                    "endpoint": n.endpoint,
                    "pub_endpoint": n.pub_endpoint,
                    "pid": self.procs[n.id].pid if n.id in self.procs else None,
                    "log": str(self.run_dir / f"{n.id}.log"),
                }
                for n in self.cfg.cluster.nodes
            ],
        }
        tmp = self.run_dir / "cluster.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.replace(self.run_dir / "cluster.json")

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Supervisor:
    """Restarts the nodes of a :class:`LocalCluster` that exit, with backoff.

    :meth:`poll` is called periodically by its owner (``--cluster``'s loop); it never blocks for
    long: a restart starts the process and does not wait for it to answer. ``say`` receives one
    line per event (exit seen, restart scheduled, restart done, restart failed).
    """

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        restart: bool = True,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.restart = restart
        self.say = say
        self.clock = clock
        self.exits: dict[str, list[int | None]] = {}
        self._backoff: dict[str, float] = {}
        self._due: dict[str, float] = {}  # node id -> when its restart is due
        self._started: dict[str, float] = {n: clock() for n in cluster.node_ids}
        self._reported: set[str] = set()

    def poll(self) -> None:
        now = self.clock()
        for node_id in self.cluster.node_ids:
            if node_id not in self.cluster.procs:
                continue
            if self.cluster.alive(node_id):
                if now - self._started.get(node_id, now) >= RESTART_STABLE_S:
                    self._backoff.pop(node_id, None)
                continue
            if node_id not in self._reported:
                self._reported.add(node_id)
                code = self.cluster.procs[node_id].returncode
                self.exits.setdefault(node_id, []).append(code)
                alive = [n for n in self.cluster.node_ids if self.cluster.alive(n)]
                self.say(
                    f"node {node_id} exited with {describe_exit(code)}; still serving: "
                    f"{', '.join(alive) or 'none'}; last log lines:\n"
                    f"{self.cluster.log_tail(node_id, lines=5)}"
                )
                if not self.restart:
                    self.say(f"node {node_id} stays down (restarting is off)")
                    continue
                ran_s = now - self._started.get(node_id, now)
                delay = self._backoff.get(node_id, 0.0) if ran_s < RESTART_STABLE_S else 0.0
                delay = min(RESTART_BACKOFF_MAX_S, max(RESTART_BACKOFF_S, 2 * delay))
                self._backoff[node_id] = delay
                self._due[node_id] = now + delay
                self.say(f"restarting {node_id} in {delay:.1f} s")
            due = self._due.get(node_id)
            if due is not None and now >= due:
                del self._due[node_id]
                try:
                    self.cluster.start_node(node_id, wait=False)
                except ClusterError as exc:
                    self.say(f"node {node_id} could not be restarted: {exc}")
                    self._due[node_id] = now + self._backoff.get(node_id, RESTART_BACKOFF_S)
                    continue
                self._started[node_id] = now
                self._reported.discard(node_id)
                self.say(f"node {node_id} restarted (pid {self.cluster.procs[node_id].pid})")
