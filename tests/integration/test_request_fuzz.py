"""Arbitrary client requests sent as raw frames to a real three-node Raft cluster: every request
gets an answer, and every node stays up and answers status.

Requests are built from the wire structs with absurd fields: client ids and keys empty, at and
past their limits, with lone surrogates; seqs and session tokens over the whole msgpack integer
range; values just below and above VALUE_BYTES_MAX; unknown consistency levels and groups; scan
bounds and limits; admin ops naming real and unknown nodes; clock faults with NaN and infinity.
A string holding a lone surrogate has no UTF-8 form, so msgpack cannot carry it: such a request
is sent with the surrogate's raw bytes, and the node must drop the frame as undecodable (and
count it) instead of answering.

Membership changes name only unknown nodes: a change of a real member is a feature tested in
test_membership.py, and would leave the cluster with fewer voters for the examples that follow.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import event, given, settings
from hypothesis import strategies as st

from exapyte import limits
from exapyte.config import CONSISTENCY_LEVELS
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import (
    ADMIN_OPS,
    MEMBERSHIP_CHANGES,
    CasOp,
    ClientReply,
    ClientRequest,
    ClockOp,
    Codec,
    DeleteOp,
    Envelope,
    FrameError,
    GetOp,
    MembershipOp,
    PutOp,
    ReplyCode,
    ScanOp,
    StatusOp,
    TransferLeaderOp,
)
from tests.conftest import cluster_config
from tests.integration.test_raft_cluster import leader_of, wait_for

pytestmark = pytest.mark.integration

NODE_IDS = ["n1", "n2", "n3"]
REPLY_WAIT_S = 10.0  # a write waits for its commit; a transfer or an election may come first
CODES = {
    ReplyCode.OK, ReplyCode.NOT_FOUND, ReplyCode.CAS_FAILED, ReplyCode.NOT_LEADER,
    ReplyCode.UNAVAILABLE, ReplyCode.BAD_REQUEST, ReplyCode.OVERLOADED,
}

# --- requests ------------------------------------------------------------------------------------

KEY_MAX, VALUE_MAX = limits.KEY_BYTES_MAX, limits.VALUE_BYTES_MAX
ID_MAX = limits.CLIENT_ID_BYTES_MAX

surrogates = st.sampled_from(["\ud800", "k\udfff", "\udbff\udc00", "ключ\udc80"])
odd_texts = st.one_of(st.text(max_size=12), st.just(""), surrogates)
odd_ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([-1, 0, -(2**63), 2**63 - 1, 2**63, 2**64 - 1]),
)
odd_keys = st.one_of(
    odd_texts,
    st.sampled_from([KEY_MAX, KEY_MAX + 1]).map(lambda n: "k" * n),
    st.sampled_from([KEY_MAX // 2, KEY_MAX // 2 + 1]).map(lambda n: "é" * n),
)
odd_values = st.sampled_from([VALUE_MAX - 1, VALUE_MAX, VALUE_MAX + 1]).map(lambda n: b"v" * n)
odd_numbers = st.one_of(st.floats(), st.sampled_from([0.0, -1.0, 3_600_001.0, 1e308]))

# Each field: (a sensible value, an absurd one). A request gets absurd values in up to two
# fields, so refusals name every field and well-formed requests reach the log too.
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "client_id": (
        st.text(min_size=1, max_size=16),
        st.one_of(
            odd_texts,
            st.sampled_from([ID_MAX, ID_MAX + 1, 248, 249, 10_000]).map(lambda n: "c" * n),
            st.sampled_from([42, 43, 83]).map(lambda n: "€" * n),  # 126, 129 and 249 bytes
        ),
    ),
    "seq": (st.integers(0, 2**40), odd_ints),
    "session_index": (st.integers(0, 100), odd_ints),
    "consistency": (st.sampled_from(CONSISTENCY_LEVELS), odd_texts),
    "group": (st.just("default"), odd_texts),
    "key": (st.sampled_from(["k1", "k2", "k3", "ключ"]), odd_keys),
    "value": (st.binary(max_size=16), odd_values),
    "expected": (st.none() | st.binary(max_size=4), odd_values),
    "new": (st.none() | st.binary(max_size=4), odd_values),
    "start": (st.sampled_from(["", "k1"]), odd_keys),
    "end": (st.none() | st.just("k3"), odd_keys),
    "limit": (st.integers(1, 100), odd_ints | st.just(limits.SCAN_LIMIT_MAX + 1)),
    "to": (st.sampled_from(NODE_IDS), odd_texts),
    # Only unknown nodes (see the module docstring).
    "node": (st.sampled_from(["n4", "n99"]), odd_texts.filter(lambda n: n not in NODE_IDS)),
    "change": (st.sampled_from(MEMBERSHIP_CHANGES), odd_texts),
    "shift_ms": (st.floats(-1000, 1000), odd_numbers),
    "rate": (st.floats(0.5, 2), odd_numbers),
    "reset": (st.booleans(), st.booleans()),
}
OPS: dict[type, tuple[str, ...]] = {
    GetOp: ("key",),
    PutOp: ("key", "value"),
    DeleteOp: ("key",),
    CasOp: ("key", "expected", "new"),
    ScanOp: ("start", "end", "limit"),
    StatusOp: (),
    TransferLeaderOp: ("to",),
    MembershipOp: ("change", "node"),
    ClockOp: ("shift_ms", "rate", "reset"),
}
REQUEST_FIELDS = ("client_id", "seq", "session_index", "consistency", "group")


@st.composite
def requests(draw: st.DrawFn) -> ClientRequest:
    op_type = draw(st.sampled_from([PutOp, PutOp, GetOp, DeleteOp, CasOp, ScanOp, StatusOp,
                                    TransferLeaderOp, MembershipOp, ClockOp]))
    names = REQUEST_FIELDS + OPS[op_type]
    odd = draw(st.sets(st.sampled_from(names), max_size=2))
    values = {name: draw(FIELDS[name][name in odd]) for name in names}
    op = op_type(*(values[name] for name in OPS[op_type]))
    return ClientRequest(op=op, **{name: values[name] for name in REQUEST_FIELDS})


def _msgpack_str(data: bytes) -> bytes:
    n = len(data)
    if n < 32:
        return bytes([0xA0 | n]) + data
    if n < 256:
        return b"\xd9" + bytes([n]) + data
    if n < 65536:
        return b"\xda" + n.to_bytes(2, "big") + data
    return b"\xdb" + n.to_bytes(4, "big") + data


def _with_raw_surrogates(obj: Any) -> Any:
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return msgspec.Raw(_msgpack_str(obj.encode("utf-8", "surrogatepass")))
        return obj
    if isinstance(obj, dict):
        return {k: _with_raw_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_with_raw_surrogates(v) for v in obj]
    return obj


def frame_of(codec: Codec, req: ClientRequest) -> tuple[bytes, bool]:
    """The frame a sender would put on the wire, and whether it can be decoded at all."""
    try:
        return codec.encode(req), True
    except UnicodeEncodeError:  # a lone surrogate: send its bytes as they are
        plain = msgspec.to_builtins(Envelope(limits.PROTOCOL_VERSION, req), builtin_types=(bytes,))
        frame = msgspec.msgpack.encode(_with_raw_surrogates(plain))
        with pytest.raises(FrameError) as info:
            codec.decode(frame)
        assert info.value.reason == "undecodable"
        return frame, False


# --- the cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = cluster_config(NODE_IDS)
    cfg["storage"] = {"backend": "sqlite", "path": str(tmp / "data" / "{node_id}" / "store.db")}
    path = tmp / "cluster.json"
    path.write_text(json.dumps(cfg))
    c = LocalCluster(path, tmp / "run")
    c.start()
    wait_for(lambda: leader_of(c), "a leader")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def dealers(cluster: LocalCluster) -> Iterator[dict[str, zmq.Socket[Any]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    socks = {node_id: cluster.dealer(node_id, ctx) for node_id in NODE_IDS}
    yield socks
    for sock in socks.values():
        sock.close()
    ctx.term()


def await_reply(
    sock: zmq.Socket[Any], codec: Codec, client_id: str, seq: int
) -> ClientReply | None:
    deadline = time.monotonic() + REPLY_WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(int(left * 1000) + 1):
            break
        msg = codec.decode(sock.recv())
        if isinstance(msg, ClientReply) and msg.client_id == client_id and msg.seq == seq:
            return msg
    return None


status_seqs = itertools.count(1)
undecodable_seen: dict[str, int] = {}


@settings(max_examples=200)
@given(req=requests(), node_id=st.sampled_from(NODE_IDS))
def test_every_request_is_answered_and_every_node_stays_up(
    cluster: LocalCluster, dealers: dict[str, zmq.Socket[Any]], req: ClientRequest, node_id: str
) -> None:
    for n in NODE_IDS:  # a node an earlier example stopped is started again (while shrinking)
        if not cluster.alive(n):
            cluster.start_node(n)
            undecodable_seen[n] = 0
    codec = Codec()
    sock = dealers[node_id]
    frame, decodable = frame_of(codec, req)
    sock.send(frame)
    if decodable:
        reply = await_reply(sock, codec, req.client_id, req.seq)
        assert reply is not None, f"{node_id} did not answer {str(req)[:300]}"
        # This connection holds a client key: every admin op is refused before any service sees
        # it, and nothing else ever is.
        if isinstance(req.op, (*ADMIN_OPS, ClockOp)):
            assert reply.code == ReplyCode.FORBIDDEN, reply
        else:
            assert reply.code in CODES, reply.code
        event(f"{type(req.op).__name__}: {reply.code}")
    else:
        event("undecodable")

    # The node read the frame (frames on one connection are read in order) and is still up.
    seq = next(status_seqs)
    sock.send(codec.encode(ClientRequest("fuzz-status", seq, StatusOp())))
    status = await_reply(sock, codec, "fuzz-status", seq)
    assert status is not None and status.code == ReplyCode.OK, (
        f"{node_id} stopped answering:\n{cluster.log_tail(node_id)}"
    )
    assert status.status is not None
    dropped = status.status["frames"].get("frames_dropped_undecodable", 0)
    if not decodable:
        assert dropped == undecodable_seen.get(node_id, 0) + 1
    undecodable_seen[node_id] = dropped
    for n in NODE_IDS:
        assert cluster.alive(n), f"{n} stopped:\n{cluster.log_tail(n)}"


def test_after_the_fuzz_the_cluster_still_serves(cluster: LocalCluster) -> None:
    assert all(cluster.alive(n) for n in NODE_IDS)
    with cluster.client(timeout_s=10) as c:
        assert c.put("after-fuzz", "v") >= 1
        assert c.get("after-fuzz").value == b"v"
