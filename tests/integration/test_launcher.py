"""``--cluster`` supervises: a node that exits is reported and restarted while the others serve;
a port held by someone else is reported as such, never mistaken for a node."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exapyte.errors import ExapyteError
from exapyte.runtime.cluster import ClusterError, LocalCluster
from tests.integration.test_raft_cluster import wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def statuses(view: LocalCluster) -> dict[str, dict]:
    """Every answering node's status (the launcher, not ``view``, owns the processes)."""
    out = {}
    for node_id in view.node_ids:
        with view.node_client(node_id, timeout_s=0.5) as c:
            try:
                out[node_id] = c.status()
            except ExapyteError:
                pass
    return out


def leader_of(view: LocalCluster) -> str | None:
    leaders = {s["node"] for s in statuses(view).values() if s.get("role") == "leader"}
    return next(iter(leaders)) if len(leaders) == 1 else None


class Launcher:
    """``main.py --cluster`` as a child process, its output collected line by line."""

    def __init__(self, config: Path, run_dir: Path, *extra: str) -> None:
        self.run_dir = run_dir
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), "--cluster", str(config), "--run-dir",
             str(run_dir), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, fragment: str) -> bool:
        return any(fragment in line for line in self.lines)

    def pids(self) -> dict[str, int]:
        manifest = json.loads((self.run_dir / "cluster.json").read_text())
        return {n["id"]: n["pid"] for n in manifest["nodes"]}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_a_killed_node_is_restarted_while_the_others_serve(write_config, tmp_path: Path, role: str) -> None:
    path = write_config(["n1", "n2", "n3"])
    launcher = Launcher(path, tmp_path / "run")
    view = LocalCluster(path, tmp_path / "view")  # for its clients only: starts nothing
    try:
        wait_for(lambda: launcher.said("cluster running"), "the cluster to start", 60)
        leader = wait_for(lambda: leader_of(view), "a leader")
        victim = leader if role == "leader" else next(n for n in view.node_ids if n != leader)
        before = launcher.pids()
        os.kill(before[victim], signal.SIGKILL)
        wait_for(lambda: launcher.said(f"node {victim} exited with signal 9 (SIGKILL)"), "the exit report")
        with view.client(timeout_s=10) as c:  # the other two keep serving
            for i in range(30):
                c.put(f"during-{i}", str(i))
        wait_for(lambda: launcher.said(f"node {victim} restarted"), "the restart")
        after = launcher.pids()
        assert after[victim] != before[victim]
        assert {n: after[n] for n in after if n != victim} == {n: before[n] for n in before if n != victim}
        now_leader = wait_for(lambda: leader_of(view), "a leader")
        target = statuses(view)[now_leader]["commit"]
        wait_for(lambda: statuses(view).get(victim, {}).get("applied", 0) >= target, f"{victim} to catch up")
        with view.node_client(victim, timeout_s=5) as c:
            assert c.get("during-29", consistency="eventual").value == b"29"
    finally:
        code = launcher.stop()
    assert code == 0, "\n".join(launcher.lines)


def test_no_restart_leaves_the_node_down_and_keeps_serving(write_config, tmp_path: Path) -> None:
    path = write_config(["n1", "n2", "n3"])
    launcher = Launcher(path, tmp_path / "run", "--no-restart")
    view = LocalCluster(path, tmp_path / "view")
    try:
        wait_for(lambda: launcher.said("cluster running"), "the cluster to start", 60)
        wait_for(lambda: leader_of(view), "a leader")
        os.kill(launcher.pids()["n3"], signal.SIGKILL)
        wait_for(lambda: launcher.said("node n3 stays down"), "the report")
        assert launcher.proc.poll() is None
        with view.client(timeout_s=10) as c:
            c.put("still", "serving")
        assert not launcher.said("node n3 restarted")
    finally:
        launcher.stop()


def test_a_port_held_by_another_process_is_reported(write_config, tmp_path: Path) -> None:
    path = write_config(["n1"])
    port = json.loads(path.read_text())["cluster"]["nodes"][0]["port"]
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        proc = subprocess.run(
            [sys.executable, str(REPO / "main.py"), "--cluster", str(path), "--run-dir",
             str(tmp_path / "run"), "--smoke", "--once"],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )
    finally:
        squatter.close()
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use by another process" in proc.stderr


def test_a_node_answering_with_another_instance_id_is_not_taken_for_ours(write_config, tmp_path: Path) -> None:
    path = write_config(["n1"])
    first = LocalCluster(path, tmp_path / "first")
    first.start()
    try:
        second = LocalCluster(path, tmp_path / "second")
        # Pretend the ports were free (a race the port check cannot close) and the start "worked":
        second.procs["n1"] = first.procs["n1"]
        second.instances["n1"] = "an-instance-this-launcher-started"
        with pytest.raises(ClusterError, match="answered by another process"):
            second.wait_ready("n1", timeout_s=10)
    finally:
        first.stop()


def test_localhost_and_127_0_0_1_are_one_address(tmp_path: Path) -> None:
    from exapyte import config
    from exapyte.errors import ConfigError

    doc = {"cluster": {"nodes": [{"id": "n1", "port": 7000, "host": "127.0.0.1"},
                                 {"id": "n2", "port": 7000, "host": "localhost"}]}}
    with pytest.raises(ConfigError, match="already used"):
        config.loads(json.dumps(doc))


def test_supervisor_backs_off_on_quick_failures() -> None:
    from exapyte.runtime.cluster import Supervisor

    class Proc:
        returncode = 1
        pid = 0

        def poll(self) -> int:
            return 1

    class FakeCluster:
        node_ids = ["n1"]

        def __init__(self) -> None:
            self.procs = {"n1": Proc()}
            self.starts: list[float] = []

        def alive(self, node_id: str) -> bool:
            return False

        def log_tail(self, node_id: str, lines: int = 5) -> str:
            return "boom"

        def start_node(self, node_id: str, wait: bool = True) -> None:
            self.starts.append(now[0])
            self.procs[node_id] = Proc()

    now = [0.0]
    cluster = FakeCluster()
    said: list[str] = []
    sup = Supervisor(cluster, say=said.append, clock=lambda: now[0])  # type: ignore[arg-type]
    while now[0] < 20:
        sup.poll()
        now[0] += 0.1
    gaps = [b - a for a, b in zip(cluster.starts, cluster.starts[1:])]
    assert len(cluster.starts) >= 4
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:])), gaps  # doubling
    assert any("exited with exit code 1" in line for line in said)
