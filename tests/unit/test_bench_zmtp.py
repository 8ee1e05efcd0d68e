"""The raft benchmark's exapyte adapter speaks ZMTP 3.0 by hand: check it against libzmq."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import zmq

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
