"""Toxic effects on real TCP traffic through exapyte's Toxiproxy-compatible server.

Every test proxies to a local echo server on 127.0.0.1. Timing checks are lower bounds with
generous margins (the machines are shared and noisy); the few upper bounds only separate
"delayed by seconds" from "not delayed".
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import zmq
from toxiproxy import Toxiproxy
from toxiproxy.proxy import Proxy

from harness.toxiproxy import ToxiproxyServer, find_or_start

REPO_ROOT = Path(__file__).resolve().parents[2]
IO_TIMEOUT_S = 5.0


class ToxiproxyEchoServer:
    """A TCP echo server on 127.0.0.1 with its own event loop thread."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    def __enter__(self) -> ToxiproxyEchoServer:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        writers: set[asyncio.StreamWriter] = set()
        handlers: set[asyncio.Task[None]] = set()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            writers.add(writer)
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                writer.close()
                writers.discard(writer)
                handlers.discard(task)

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for writer in list(writers):
            writer.close()
        if handlers:
            await asyncio.wait(list(handlers), timeout=IO_TIMEOUT_S)
        await server.wait_closed()


@pytest.fixture()
def echo_port() -> Iterator[int]:
    with ToxiproxyEchoServer() as echo:
        yield echo.port


@pytest.fixture()
def api_port() -> Iterator[int]:
    with ToxiproxyServer("127.0.0.1", 0, seed=7).run_in_thread() as port:
        yield port


@pytest.fixture()
def client(api_port: int) -> Toxiproxy:
    toxiproxy = Toxiproxy()
    toxiproxy.update_api_consumer("127.0.0.1", api_port)
    return toxiproxy


@pytest.fixture()
def proxy(client: Toxiproxy, echo_port: int) -> Proxy:
    return client.create(upstream=f"127.0.0.1:{echo_port}", name="echo", listen="127.0.0.1:0")


def address(proxy: Proxy) -> tuple[str, int]:
    host, port = proxy.listen.rsplit(":", 1)
    return host, int(port)


def connect(proxy: Proxy) -> socket.socket:
    sock = socket.create_connection(address(proxy), timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    parts = bytearray()
    while len(parts) < size:
        data = sock.recv(size - len(parts))
        if not data:
            break
        parts += data
    return bytes(parts)


def recv_until_closed(sock: socket.socket) -> bytes:
    parts = bytearray()
    while data := sock.recv(65536):
        parts += data
    return bytes(parts)


def round_trip_s(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - started


def assert_closed(sock: socket.socket) -> None:
    """The peer closed (FIN or RST) within the socket timeout; no data arrives."""
    try:
        assert sock.recv(1024) == b""
    except ConnectionResetError:
        pass


# --- pass-through and latency -------------------------------------------------------------------


def test_bytes_pass_through_unchanged(proxy: Proxy) -> None:
    payload = os.urandom(200_000)
    with connect(proxy) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload


def test_latency_delays_each_round_trip(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        round_trip_s(sock)
        proxy.add_toxic(type="latency", attributes={"latency": 300})
        assert round_trip_s(sock) >= 0.28


def test_latency_in_both_directions_adds_up(proxy: Proxy) -> None:
    proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 200})
    proxy.add_toxic(type="latency", stream="downstream", attributes={"latency": 200})
    with connect(proxy) as sock:
        assert round_trip_s(sock) >= 0.38


def test_stacked_latency_toxics_apply_in_chain(proxy: Proxy) -> None:
    proxy.add_toxic(type="latency", name="first", attributes={"latency": 150})
    proxy.add_toxic(type="latency", name="second", attributes={"latency": 150, "jitter": 20})
    with connect(proxy) as sock:
        assert round_trip_s(sock) >= 0.28


def test_jitter_stays_within_bounds_from_below(proxy: Proxy) -> None:
    proxy.add_toxic(type="latency", attributes={"latency": 200, "jitter": 100})
    with connect(proxy) as sock:
        for _ in range(3):
            assert round_trip_s(sock) >= 0.09


def test_latency_never_reorders_chunks(proxy: Proxy) -> None:
    proxy.add_toxic(type="latency", attributes={"latency": 50, "jitter": 45})
    with connect(proxy) as sock:
        expected = b""
        for index in range(20):
            piece = f"<{index}>".encode()
            expected += piece
            sock.sendall(piece)
            time.sleep(0.005)
        assert recv_exactly(sock, len(expected)) == expected


def test_removing_latency_on_a_live_connection_restores_speed(proxy: Proxy) -> None:
    proxy.add_toxic(type="latency", attributes={"latency": 2000})
    with connect(proxy) as sock:
        sock.sendall(b"queued")
        proxy.destroy_toxic("latency_downstream")
        assert recv_exactly(sock, 6) == b"queued"  # held data is handed on, not dropped
        assert round_trip_s(sock) < 1.0


def test_updating_a_toxic_applies_to_live_connections(proxy: Proxy, api_port: int) -> None:
    proxy.add_toxic(type="latency", name="slow", attributes={"latency": 2500})
    with connect(proxy) as sock:
        url = f"http://127.0.0.1:{api_port}/proxies/echo/toxics/slow"
        reply = requests.patch(url, json={"attributes": {"latency": 0}}, timeout=5)
        assert reply.json()["attributes"] == {"latency": 0, "jitter": 0}
        assert round_trip_s(sock) < 1.5
        requests.patch(url, json={"attributes": {"latency": 300}}, timeout=5)
        assert round_trip_s(sock) >= 0.28


def test_toxicity_zero_has_no_effect(proxy: Proxy) -> None:
    proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 3000})
    proxy.add_toxic(type="timeout", stream="upstream", toxicity=0.0, attributes={"timeout": 0})
    with connect(proxy) as sock:
        assert round_trip_s(sock) < 1.5


# --- bandwidth, slicer, limit_data ----------------------------------------------------------------


def test_bandwidth_limits_throughput(proxy: Proxy) -> None:
    proxy.add_toxic(type="bandwidth", attributes={"rate": 100})  # 100 KB/s
    payload = os.urandom(100_000)
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        elapsed = time.monotonic() - started
    assert 0.7 <= elapsed < 10.0


def test_bandwidth_rate_zero_is_unlimited(proxy: Proxy) -> None:
    proxy.add_toxic(type="bandwidth", attributes={"rate": 0})
    payload = os.urandom(500_000)
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        assert time.monotonic() - started < 3.0


def test_slicer_delivers_every_byte_in_order(proxy: Proxy) -> None:
    proxy.add_toxic(
        type="slicer", attributes={"average_size": 64, "size_variation": 32, "delay": 50}
    )
    proxy.add_toxic(type="slicer", stream="upstream", attributes={"average_size": 1})
    payload = os.urandom(20_000)
    with connect(proxy) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload


def test_limit_data_closes_after_the_limit(proxy: Proxy) -> None:
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    with connect(proxy) as sock:
        sock.sendall(b"0123456789abcdefghij")
        try:
            received = recv_until_closed(sock)
        except ConnectionResetError:  # the proxy closed with our bytes unread
            received = b"0123456789"
    assert received == b"0123456789"


# --- closing toxics -------------------------------------------------------------------------------


def test_slow_close_delays_the_close(proxy: Proxy) -> None:
    proxy.add_toxic(type="slow_close", attributes={"delay": 600})
    with connect(proxy) as sock:
        assert round_trip_s(sock) < 2.0
        started = time.monotonic()
        sock.shutdown(socket.SHUT_WR)  # the echo server closes; the close comes back late
        assert_closed(sock)
        assert time.monotonic() - started >= 0.55


def test_timeout_zero_swallows_data_and_removal_closes(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        round_trip_s(sock)
        proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
        sock.sendall(b"lost")
        sock.settimeout(0.7)
        with pytest.raises(TimeoutError):
            sock.recv(1024)
        sock.settimeout(IO_TIMEOUT_S)
        proxy.destroy_toxic("timeout_upstream")
        assert_closed(sock)
    with connect(proxy) as sock:  # new connections are clean again
        assert round_trip_s(sock) < 2.0


def test_timeout_positive_closes_after_idle_time(proxy: Proxy) -> None:
    proxy.add_toxic(type="timeout", attributes={"timeout": 400})
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"swallowed")
        assert_closed(sock)
        assert time.monotonic() - started >= 0.35


def test_reset_peer_sends_rst(proxy: Proxy) -> None:
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 100})
    with connect(proxy) as sock:
        sock.sendall(b"first chunk")
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)


def test_reset_peer_leaves_idle_connections_alone(proxy: Proxy) -> None:
    proxy.add_toxic(type="reset_peer", stream="upstream", attributes={"timeout": 0})
    with connect(proxy) as sock:
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1024)
        sock.settimeout(IO_TIMEOUT_S)
        sock.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)


def test_noop_passes_data(proxy: Proxy) -> None:
    proxy.add_toxic(type="noop", stream="upstream")
    proxy.add_toxic(type="noop")
    with connect(proxy) as sock:
        assert round_trip_s(sock, b"x" * 1000) < 2.0


# --- proxy state ----------------------------------------------------------------------------------


def test_disable_refuses_connects_and_drops_live_ones(client: Toxiproxy, proxy: Proxy) -> None:
    with connect(proxy) as sock:
        round_trip_s(sock)
        proxy.disable()
        assert_closed(sock)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address(proxy), timeout=IO_TIMEOUT_S).close()
    proxy.enable()
    with connect(proxy) as sock:
        round_trip_s(sock)


def test_reset_enables_proxies_and_removes_toxics(
    client: Toxiproxy, proxy: Proxy, api_port: int
) -> None:
    proxy.add_toxic(type="latency", attributes={"latency": 3000})
    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
    proxy.disable()
    client.reset()
    listed = requests.get(f"http://127.0.0.1:{api_port}/proxies/echo", timeout=5).json()
    assert listed["enabled"] is True and listed["toxics"] == []
    with connect(proxy) as sock:
        assert round_trip_s(sock) < 1.5


def test_toxicity_is_drawn_per_connection(client: Toxiproxy, proxy: Proxy) -> None:
    proxy.add_toxic(type="timeout", stream="upstream", toxicity=0.5, attributes={"timeout": 0})
    outcomes = set()
    for _ in range(16):
        with connect(proxy) as sock:
            sock.settimeout(0.3)
            sock.sendall(b"?")
            try:
                outcomes.add(sock.recv(1) == b"?")
            except TimeoutError:
                outcomes.add(False)
    assert outcomes == {True, False}  # 2 * 0.5**16 chance of a false failure


# --- ZeroMQ through the proxy ---------------------------------------------------------------------


def test_zeromq_dealer_router_survives_faults(client: Toxiproxy) -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    try:
        for sock in (router, dealer):
            sock.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RECONNECT_IVL, 100)
        router_port = router.bind_to_random_port("tcp://127.0.0.1")
        proxy = client.create(upstream=f"127.0.0.1:{router_port}", name="zmq")
        dealer.connect(f"tcp://{proxy.listen}")
        counter = iter(range(1_000_000))

        def received_within(message: bytes, timeout_s: float) -> bool:
            deadline = time.monotonic() + timeout_s
            while (left_ms := int((deadline - time.monotonic()) * 1000)) > 0:
                if router.poll(left_ms, zmq.POLLIN) and router.recv_multipart()[-1] == message:
                    return True
            return False

        def flows(timeout_s: float = 8.0) -> bool:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                message = f"probe-{next(counter)}".encode()
                dealer.send(message)
                if received_within(message, 0.3):
                    return True
            return False

        assert flows()
        proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
        dealer.send(b"blackholed")
        assert not received_within(b"blackholed", 0.8)
        proxy.destroy_toxic("timeout_upstream")  # closes the connection; ZeroMQ reconnects
        assert flows()

        proxy.disable()
        dealer.send(b"while-down")
        assert not received_within(b"while-down", 0.8)
        proxy.enable()
        assert flows()
    finally:
        dealer.close()
        router.close()
        context.term()


# --- running the server ---------------------------------------------------------------------------


def test_find_or_start_runs_our_server_without_a_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with find_or_start() as handle:
        assert handle.kind == "exapyte"
        assert handle.api_url == f"http://127.0.0.1:{handle.port}"
        reply = requests.get(f"{handle.api_url}/version", timeout=5)
        assert reply.json()["version"] == handle.version


def _write_shim(directory: Path) -> None:
    shim = directory / "toxiproxy-server"
    shim.write_text(
        f"#!/bin/sh\ncd {REPO_ROOT}\nexec {sys.executable} -m harness.toxiproxy \"$@\"\n"
    )
    shim.chmod(0o755)


def test_find_or_start_spawns_a_binary_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_shim(tmp_path)  # stands in for a real toxiproxy-server: same -host/-port flags
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    handle = find_or_start()
    try:
        assert handle.kind == "real"
        toxiproxy = Toxiproxy()
        toxiproxy.update_api_consumer("127.0.0.1", handle.port)
        assert toxiproxy.proxies() == {}
    finally:
        handle.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{handle.api_url}/version", timeout=2)


def test_command_line_serves_and_stops_on_sigterm(tmp_path: Path, echo_port: int) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(
        json.dumps([{"name": "cfg", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo_port}"}])
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.toxiproxy", "--port", "0", "--config", str(config)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = None
        for line in process.stdout:
            message = json.loads(line)["message"]
            if message.startswith("API listening on"):
                port = int(message.rsplit(":", 1)[1])
            if message.startswith("started proxy cfg"):
                break
        assert port is not None
        proxies = requests.get(f"http://127.0.0.1:{port}/proxies", timeout=5).json()
        assert proxies["cfg"]["enabled"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _out, errors = process.communicate()
    assert errors == ""


def test_command_line_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness.toxiproxy", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--config" in result.stdout and "--port" in result.stdout

