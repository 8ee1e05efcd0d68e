"""A real single node on loopback: serving, garbage frames, kill -9 durability, exactly-once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest
import zmq

from exapyte import limits
from exapyte.errors import RequestFailed, RequestTimeout
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import ClientReply, ClientRequest, Codec, PutOp

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def node(write_config, tmp_path: Path):
    path = write_config(["n1"], network={"frame_bytes_max": 65536})
    cluster = LocalCluster(path, tmp_path / "run")
    cluster.start()
    yield cluster
    cluster.stop()


def test_put_get_cas_delete_scan(node: LocalCluster) -> None:
    with node.client() as c:
        assert c.put("a", "1") == 1
        assert c.put("a", "2") == 2
        assert c.get("a").value == b"2"
        assert c.cas("a", "1", "3") is False
        assert c.cas("a", "2", "3") is True
        assert c.cas("b", None, "x") is True
        assert [k for k, _ in c.scan()] == ["a", "b"]
        assert c.delete("a") is True
        assert c.delete("a") is False
        assert c.get("a") is None
        assert c.session_index >= 6


def test_bad_requests_get_a_clear_refusal(node: LocalCluster) -> None:
    with node.client() as c:
        # The client refuses what it can tell is wrong before sending anything...
        with pytest.raises(ValueError, match="consistency"):
            c.request(PutOp("k", b"v"), consistency="psychic")
        with pytest.raises(ValueError, match="empty"):
            c.put("", "v")
        with pytest.raises(ValueError, match=str(limits.KEY_BYTES_MAX)):
            c.put("k" * (limits.KEY_BYTES_MAX + 1), "v")
        # ...and the node refuses the same requests when they arrive anyway.
        with pytest.raises(RequestFailed, match="key"):
            c.request(PutOp("", b"v"))
        with pytest.raises(RequestFailed, match="longer"):
            c.request(PutOp("k" * (limits.KEY_BYTES_MAX + 1), b"v"))
        assert c.get("k") is None  # nothing of the refused requests was applied


def test_node_survives_garbage_oversized_and_unknown_frames(node: LocalCluster) -> None:
    ctx = zmq.Context()
    try:
        bad = node.dealer("n1", ctx)
        frames = [
            b"",
            b"\xc1 not msgpack",
            msgspec.msgpack.encode([limits.PROTOCOL_VERSION, {"type": "client.teleport", "to": "mars"}]),
            msgspec.msgpack.encode([limits.PROTOCOL_VERSION, {"type": "client.request", "client_id": 1}]),
            msgspec.msgpack.encode(
                [999, {"type": "control.beat", "publisher": "x", "term": 1, "version": 1, "epoch": 1}]
            ),
            msgspec.msgpack.encode({"just": "a map"}),
        ]
        for f in frames:
            bad.send(f)
        bad.send_multipart([b"one", b"too", b"many"])
        # Oversized: ZeroMQ drops the connection that sent it; the node keeps serving others.
        big = node.dealer("n1", ctx)
        big.send(b"x" * 200_000)
        expected = {
            "frames_dropped_undecodable": 2,
            "frames_dropped_invalid": 3,
            "frames_dropped_version": 1,
            "frames_dropped_shape": 1,
        }
        with node.client() as c:
            deadline = time.monotonic() + 20
            while True:  # the bad frames travel on their own connections: wait until counted
                dropped = c.status()["frames"]
                if all(dropped.get(k, 0) >= n for k, n in expected.items()):
                    break
                assert time.monotonic() < deadline, f"frames not all counted: {dropped}"
                time.sleep(0.05)
            assert c.put("still", "here") == 1
            assert c.get("still").value == b"here"
        assert node.alive("n1")
    finally:
        ctx.destroy(linger=0)


def test_retried_request_is_applied_once(node: LocalCluster) -> None:
    codec = Codec()
    ctx = zmq.Context()
    try:
        sock = node.dealer("n1", ctx)
        req = ClientRequest("retrying-client", 41, PutOp("once", b"v"))
        replies = []
        for _ in range(3):
            sock.send(codec.encode(req))
            assert sock.poll(5000)
            replies.append(codec.decode(sock.recv()))
        assert all(isinstance(r, ClientReply) and r.code == "ok" for r in replies)
        assert {r.version for r in replies} == {1}
    finally:
        ctx.destroy(linger=0)
    with node.client() as c:
        assert c.get("once").version == 1


def test_acknowledged_writes_survive_kill_9(node: LocalCluster) -> None:
    acked: dict[str, int] = {}
    stop = threading.Event()

    def writer() -> None:
        with node.client(timeout_s=1.0) as c:
            i = 0
            while not stop.is_set():
                key = f"k{i}"
                try:
                    c.put(key, str(i))
                except RequestTimeout:
                    return
                acked[key] = i
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    while len(acked) < 200 and t.is_alive():
        threading.Event().wait(0.01)
    node.kill("n1")  # SIGKILL mid-stream
    stop.set()
    t.join(timeout=30)
    assert len(acked) >= 200
    node.start_node("n1")
    with node.client() as c:
        for key, i in acked.items():
            got = c.get(key)
            assert got is not None and got.value == str(i).encode(), key


def test_sigterm_stops_cleanly(node: LocalCluster) -> None:
    with node.client() as c:
        c.put("k", "v")
    assert node.stop_node("n1") == 0
    assert "stopped" in node.log_tail("n1")


def test_cluster_mode_starts_serves_and_stops(write_config, tmp_path: Path) -> None:
    path = write_config(["n1"])
    run_dir = tmp_path / "cl"
    proc = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--cluster", str(path), "--run-dir", str(run_dir), "--smoke", "--once"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    ops = [(l["op"], l.get("found", l.get("swapped", l.get("existed")))) for l in lines]
    assert ops[:6] == [("put", None), ("get", True), ("cas", True), ("get", True), ("delete", True), ("get", False)]
    manifest = json.loads((run_dir / "cluster.json").read_text())
    assert [n["id"] for n in manifest["nodes"]] == ["n1"]
    assert manifest["nodes"][0]["pid"] > 0


def test_cluster_mode_stops_on_sigterm(write_config, tmp_path: Path) -> None:
    path = write_config(["n1"])
    run_dir = tmp_path / "cl"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--cluster", str(path), "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Ctrl-C" in line:
            break
    manifest = json.loads((run_dir / "cluster.json").read_text())
    pid = manifest["nodes"][0]["pid"]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert '"n1": 0' in out
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_client_cli_prints_json_and_exit_codes(node: LocalCluster) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "main.py"), "--client", "--config", str(node.config_path), *args],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )

    def cli(*args: str) -> tuple[int, dict]:
        p = run(*args)
        return p.returncode, json.loads(p.stdout)

    assert cli("put", "x", "1") == (0, {"ok": True, "op": "put", "key": "x", "version": 1, "node": "n1"})
    code, out = cli("get", "x")
    assert code == 0 and out["value"] == "1"
    code, out = cli("cas", "x", "1", ":absent")
    assert code == 0 and out["swapped"] is True
    bad_level = run("--consistency", "nope", "get", "x")
    assert bad_level.returncode == 2 and "unknown consistency level 'nope'" in bad_level.stderr
    code, out = cli("status")
    assert code == 0 and out["status"]["node"] == "n1"
    assert out["status"]["security"] == "curve" and len(out["status"]["instance"]) == 32


def test_client_cli_keeps_a_session_and_says_when_a_scan_was_cut(node: LocalCluster, tmp_path: Path) -> None:
    def cli(*args: str) -> tuple[int, dict, str]:
        p = subprocess.run(
            [sys.executable, str(REPO / "main.py"), "--client", "--config", str(node.config_path), *args],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )
        return p.returncode, json.loads(p.stdout), p.stderr

    session = tmp_path / "session.json"
    for key in ("a", "b", "c"):
        code, out, _ = cli("--session", str(session), "put", key, key.upper())
        assert code == 0
    term, index = token = json.loads(session.read_text())["tokens"]["default"]  # [term, index]
    # the last write's [term, index] travels on (term 0: one node, no consensus log)
    assert token == out["session_tokens"]["default"] and index >= 3 and term == 0
    code, out, err = cli("--session", str(session), "--consistency", "session", "get", "c")
    assert code == 0 and out["value"] == "C" and out["session_tokens"]["default"][1] >= index
    assert not err
    code, out, err = cli("--consistency", "session", "get", "c")  # no session file: said so
    assert code == 0 and "every call is a new session" in err
    session.write_text(json.dumps({"session_index": index}))  # an older release's file
    code, out, _ = cli("--session", str(session), "get", "c")
    assert code == 0 and out["session_tokens"]["default"][1] >= index
    session.write_text(json.dumps({"tokens": {"default": index}}))  # index-only tokens: accepted
    code, out, _ = cli("--session", str(session), "--consistency", "session", "get", "c")
    assert code == 0 and out["value"] == "C"
    session.write_text('{"tokens": {"default": -4}}')
    p = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--client", "--config", str(node.config_path),
         "--session", str(session), "get", "c"], capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert p.returncode == 2 and "must be an int >= 0" in p.stderr

    code, out, err = cli("scan", "--limit", "2")
    assert code == 0 and [r["key"] for r in out["records"]] == ["a", "b"]
    assert out["truncated"] is True and out["next_after"] == "b"
    assert "stopped at its limit of 2" in err and "--after b" in err
    code, out, err = cli("scan", "--after", out["next_after"], "--limit", "2")
    assert [r["key"] for r in out["records"]] == ["c"] and out["truncated"] is False and not err
