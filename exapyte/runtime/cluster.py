"""Start, stop, kill, pause and restart the nodes of a cluster file as local processes.

Used by ``python main.py --cluster FILE``, by the integration tests and by the harness's db role.
Each node is ``python -m exapyte --node --config FILE --node-id ID`` with its output in
``RUN_DIR/ID.log``. ``RUN_DIR/cluster.json`` lists node ids, pids and endpoints, and is rewritten
whenever a node is restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from exapyte import config as config_mod
from exapyte.client import Client
from exapyte.config import Config
from exapyte.errors import ExapyteError

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class ClusterError(ExapyteError):
    """A node did not start, or stopped unexpectedly."""


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
    ) -> None:
        self.config_path = Path(config_path).resolve()
        self.cfg: Config = config_mod.load(self.config_path)
        self.run_dir = Path(run_dir).resolve()
        self.data_in_run_dir = data_in_run_dir
        self.extra_args = extra_args
        self.env = env
        # Per-node config files (same cluster, e.g. different network.peer_endpoints), if any.
        self.node_config_paths = {k: Path(v).resolve() for k, v in (node_config_paths or {}).items()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}

    @property
    def node_ids(self) -> list[str]:
        return self.cfg.node_ids()

    def endpoint(self, node_id: str) -> str:
        return self.cfg.node_by_id(node_id).endpoint

    def endpoints(self) -> dict[str, str]:
        return {n.id: n.endpoint for n in self.cfg.cluster.nodes}

    def client(self, **kwargs: Any) -> Client:
        """A client of the whole cluster (follows redirects to the leader)."""
        return Client(
            list(self.endpoints().values()), node_endpoints=self.endpoints(), **kwargs
        )

    def admin_client(self, **kwargs: Any) -> Client:
        """A client allowed to make admin requests (membership, leadership transfer, clock)."""
        return self.client(**kwargs)

    def dealer(self, node_id: str, ctx: zmq.Context[Any]) -> zmq.Socket[Any]:
        """A raw DEALER connected to ``node_id``'s ROUTER, as an ordinary client connects (for
        tests that send hand-built frames). The caller closes it."""
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint(node_id))
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
        log = open(self.run_dir / f"{node_id}.log", "ab")  # noqa: SIM115 - kept open while it runs
        old = self._logs.pop(node_id, None)
        if old is not None:
            old.close()
        self._logs[node_id] = log
        self.procs[node_id] = subprocess.Popen(
            self.command(node_id), stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=str(REPO_ROOT), start_new_session=True,
        )
        self.write_manifest()
        if wait:
            self.wait_ready(node_id)

    def wait_ready(self, node_id: str, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Wait until the node answers a status request; returns its status."""
        deadline = time.monotonic() + timeout_s
        with Client(self.endpoint(node_id), timeout_s=1.0) as client:
            while True:
                proc = self.procs.get(node_id)
                if proc is not None and proc.poll() is not None:
                    raise ClusterError(
                        f"node {node_id} exited with code {proc.returncode}; see "
                        f"{self.run_dir / (node_id + '.log')}:\n{self.log_tail(node_id)}"
                    )
                try:
                    return client.status(timeout_s=min(1.0, max(0.1, deadline - time.monotonic())))
                except ExapyteError:
                    if time.monotonic() > deadline:
                        raise ClusterError(
                            f"node {node_id} did not answer within {timeout_s} s:\n"
                            f"{self.log_tail(node_id)}"
                        ) from None

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
