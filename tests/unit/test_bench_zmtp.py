"""The raft benchmark's exapyte adapter speaks ZMTP 3.0 by hand, with the NULL and the CURVE
mechanisms: check it against libzmq."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from exapyte.security import generate
from exapyte.wire import ClientReply, ClientRequest, Codec, PutOp, ReplyCode

BENCH = Path(__file__).resolve().parents[2] / "bench" / "raft.py"


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_raft", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_raft"] = module
    spec.loader.exec_module(module)
    return module


def test_the_zmtp_adapter_talks_to_a_zeromq_router_both_ways() -> None:
    bench = load_bench()
    codec = Codec()
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        conn = bench.ExapyteConn({"endpoints": {}, "leader_endpoint": endpoint}, 7)
        big = b"v" * 300  # a long ZMTP frame (size above 255) in both directions
        conn.send(b"k" * 16, big)
        assert router.poll(5_000)
        identity, payload = router.recv_multipart()
        request = codec.decode(payload)
        assert isinstance(request, ClientRequest)
        assert request.op == PutOp("k" * 16, big) and request.client_id == conn.client_id

        stale = ClientReply(request.client_id, request.seq - 1, ReplyCode.OK)
        reply = ClientReply(request.client_id, request.seq, ReplyCode.OK, value=big)
        router.send_multipart([identity, codec.encode(stale)])
        router.send_multipart([identity, codec.encode(reply)])
        done = None
        while done is None:  # the two replies may arrive in one read or in several
            assert zmq.select([conn.sock], [], [], 5.0)[0]
            done = conn.on_readable()
        assert done is True

        conn.resend()  # the same frame again, byte for byte
        assert router.poll(5_000)
        assert router.recv_multipart()[1] == payload
        conn.close()
    finally:
        router.close(linger=0)
        ctx.term()


def test_a_redirected_request_reaches_the_leader_unchanged() -> None:
    bench = load_bench()
    codec = Codec()
    ctx = zmq.Context()
    follower, leader = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    try:
        endpoints = []
        for router in (follower, leader):
            router.setsockopt(zmq.LINGER, 0)
            endpoints.append(f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}")
        conn = bench.ExapyteConn({"endpoints": {}, "leader_endpoint": endpoints[0]}, 3)
        conn.send(b"k" * 16, b"v")
        assert follower.poll(5_000)
        identity, payload = follower.recv_multipart()
        request = codec.decode(payload)
        redirect = ClientReply(
            request.client_id, request.seq, ReplyCode.NOT_LEADER, leader_endpoint=endpoints[1]
        )
        follower.send_multipart([identity, codec.encode(redirect)])
        done = None
        while done is None and conn.redirects == 0:
            assert zmq.select([conn.sock], [], [], 5.0)[0]
            done = conn.on_readable()
        assert conn.endpoint == endpoints[1]
        assert leader.poll(5_000)
        assert leader.recv_multipart()[1] == payload
        conn.close()
    finally:
        follower.close(linger=0)
        leader.close(linger=0)
        ctx.term()


# --- the CURVE mechanism ----------------------------------------------------------------------


@contextlib.contextmanager
def curve_router(
    keys_dir: Path, server_secret: bytes | None = None, admitted: Path | None = None
) -> Iterator[tuple[zmq.Socket[Any], str]]:
    """A libzmq ROUTER that is a CURVE server with the secret of node n1 in ``keys_dir`` (or
    ``server_secret``), whose ZAP handler admits the public keys in ``admitted`` (default: the
    client keys of ``keys_dir``)."""
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(admitted or keys_dir / "clients"))
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    if server_secret is None:
        _, server_secret = zmq.auth.load_certificate(str(keys_dir / "nodes" / "n1.key_secret"))
    router.curve_server = True
    router.curve_secretkey = server_secret
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield router, f"tcp://127.0.0.1:{port}"
    finally:
        router.close(linger=0)
        auth.stop()
        ctx.term()


def curve_spec(keys_dir: Path, endpoint: str) -> dict[str, Any]:
    return {"endpoints": {"n1": endpoint}, "leader_endpoint": endpoint, "keys_dir": str(keys_dir)}


def test_the_curve_adapter_talks_to_a_curve_router_both_ways(tmp_path: Path) -> None:
    bench = load_bench()
    codec = Codec()
    generate(tmp_path, ["n1"])
    client_public, _ = zmq.auth.load_certificate(str(tmp_path / "clients" / "client.key"))
    with curve_router(tmp_path) as (router, endpoint):
        conn = bench.ExapyteCurveConn(curve_spec(tmp_path, endpoint), 7)
        for round_, value in enumerate((b"v", b"w" * 300, b"", b"x" * 70_000, b"y")):
            key = f"k{round_:015d}"
            conn.send(key.encode(), value)
            assert router.poll(5_000)
            identity = router.recv()
            frame = router.recv(copy=False)
            assert not frame.more
            # The ZAP handler admitted the cluster's client key and named the connection by it.
            assert frame.get("User-Id") == client_public.decode()
            request = codec.decode(frame.bytes)
            assert isinstance(request, ClientRequest)
            assert request.op == PutOp(key, value)
            if round_ == 1:
                conn.resend()  # sealed again under a new counter, which libzmq accepts
                assert router.poll(5_000)
                assert router.recv_multipart()[1] == frame.bytes
            stale = ClientReply(request.client_id, request.seq - 1, ReplyCode.OK)
            reply = ClientReply(request.client_id, request.seq, ReplyCode.OK, value=value)
            router.send_multipart([identity, codec.encode(stale)])
            router.send_multipart([identity, b"a", b"multi-frame"])  # skipped, as by ExapyteConn
            router.send_multipart([identity, codec.encode(reply)])
            done = None
            while done is None:  # the replies may arrive in one read or in several
                assert zmq.select([conn.sock], [], [], 5.0)[0]
                done = conn.on_readable()
            assert done is True
        conn.close()


def test_a_curve_message_is_opened_once_and_only_unaltered(tmp_path: Path) -> None:
    bench = load_bench()
    generate(tmp_path, ["n1"])
    with curve_router(tmp_path) as (router, endpoint):
        conn = bench.ExapyteCurveConn(curve_spec(tmp_path, endpoint), 1)
        secret = b"a value nobody on the path may read"
        conn.send(b"k" * 16, secret)
        assert router.poll(5_000)
        identity, _ = router.recv_multipart()
        router.send_multipart([identity, secret])
        data = b""
        while (got := bench.zmtp_next(data, 0)) is None:
            assert zmq.select([conn.sock], [], [], 5.0)[0]
            data += conn.sock.recv(65536)
        flags, message, _ = got
        assert flags == 0 and secret not in data  # a MESSAGE, encrypted
        tampered = message[:-1] + bytes((message[-1] ^ 1,))
        with pytest.raises(bench.CurveError, match="does not open"):
            conn._curve.open(tampered)
        assert conn._curve.open(message) == (0, secret)
        with pytest.raises(bench.CurveError, match="replay"):
            conn._curve.open(message)
        conn.close()


def test_a_wrong_server_key_fails_the_handshake_with_a_clear_error(tmp_path: Path) -> None:
    bench = load_bench()
    generate(tmp_path, ["n1"])
    _, impostor_secret = zmq.curve_keypair()  # the server does not hold n1's key
    with curve_router(tmp_path, server_secret=impostor_secret) as (_router, endpoint):
        started = time.monotonic()
        with pytest.raises(bench.CurveError, match="server key given for"):
            bench.ExapyteCurveConn(curve_spec(tmp_path, endpoint), 1)
        assert time.monotonic() - started < bench.CURVE_HANDSHAKE_S + 1.0


def test_a_client_key_the_server_does_not_know_is_refused(tmp_path: Path) -> None:
    bench = load_bench()
    generate(tmp_path, ["n1"])
    others = tmp_path / "others"
    generate(others, ["n1"], clients=("someone-else",))
    with (
        curve_router(tmp_path, admitted=others / "clients") as (_router, endpoint),
        pytest.raises(bench.CurveError, match="refused INITIATE .*400"),
    ):
        bench.ExapyteCurveConn(curve_spec(tmp_path, endpoint), 1)


def test_a_server_that_never_answers_fails_the_handshake_by_its_deadline(tmp_path: Path) -> None:
    bench = load_bench()
    bench.CURVE_HANDSHAKE_S = 0.3
    generate(tmp_path, ["n1"])
    with socket.create_server(("127.0.0.1", 0)) as silent:
        endpoint = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(bench.CurveError, match="no the server's greeting within 0.3 s"):
            bench.ExapyteCurveConn(curve_spec(tmp_path, endpoint), 1)
        assert time.monotonic() - started < 2.0
