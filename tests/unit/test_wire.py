"""The wire codec: round trips, and refusal (never a crash) of every kind of bad frame."""

from __future__ import annotations

import typing

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exapyte import limits
from exapyte.protocol.raft.messages import RAFT_MESSAGE_TYPES
from exapyte.wire import (
    CasOp,
    ClientReply,
    ClientRequest,
    Codec,
    ConsensusMessage,
    ControlOp,
    FeedBeat,
    FeedDelta,
    FeedResync,
    FeedSnapshot,
    FrameError,
    GetOp,
    Message,
    PeerMessage,
    PutOp,
    ScanOp,
    ShardReports,
)


def test_round_trip_of_each_family() -> None:
    codec = Codec()
    msgs = [
        ClientRequest("c1", 7, PutOp("k", b"v"), consistency="session", session_index=3),
        ClientRequest("c1", 8, CasOp("k", None, b"x")),
        ClientRequest("c1", 9, ScanOp("a", "z", 10)),
        ClientReply("c1", 7, "ok", version=2, index=5, node="n1"),
        ClientRequest("a1", 10, ControlOp((b"\x81", b"\x82")), group="control"),
        FeedDelta("n1", 3, 7, 2, 40, b"cmd"),
        FeedBeat("n1", 3, 7, 2),
        FeedSnapshot("n1", 3, 7, b"image"),
        FeedResync("n2", "n1", 5),
        ShardReports("n2", "n1", (b"r1", b"r2")),
    ]
    for msg in msgs:
        assert codec.decode(codec.encode(msg)) == msg


def test_every_protocols_messages_fit_the_peer_envelope() -> None:
    from exapyte.protocol.registry import PROTOCOLS

    assert RAFT_MESSAGE_TYPES
    expected: set[type] = set()
    for name, definition in PROTOCOLS.items():
        prefix = "paxos." if name == "multipaxos" else f"{name}."
        for cls in definition.messages:
            assert cls.__struct_config__.tag.startswith(prefix), (name, cls)
            # The runtime checks these two against the authenticated sender.
            assert {"frm", "to"} <= set(cls.__struct_fields__), cls
        expected |= set(definition.messages)
    # The peer envelope's union is exactly the registered message set: none missing, none extra.
    assert set(RAFT_MESSAGE_TYPES) <= expected
    assert set(typing.get_args(ConsensusMessage)) == expected


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "undecodable"),
        (b"\xc1garbage", "undecodable"),
        (msgspec.msgpack.encode([limits.PROTOCOL_VERSION, {"type": "nope"}]), "invalid"),
        (msgspec.msgpack.encode([limits.PROTOCOL_VERSION, {"type": "client.request", "client_id": 5}]), "invalid"),
        (msgspec.msgpack.encode({"hello": "world"}), "invalid"),
        (msgspec.msgpack.encode([99, {"type": "control.beat", "publisher": "x", "term": 1, "version": 1, "epoch": 1}]), "version"),
    ],
)
def test_bad_frames_are_refused_with_a_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        Codec().decode(frame)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "bad_utf8",
    [b"\xed\xa0\x80", b"\xff", b"\x80", b"a\xc3"],  # a lone surrogate, stray and cut-off bytes
    ids=["surrogate", "invalid-start", "continuation", "truncated"],
)
@pytest.mark.parametrize("field", ["client_id", "key"])
def test_a_string_that_is_not_utf8_is_refused_as_undecodable(bad_utf8: bytes, field: str) -> None:
    codec = Codec()
    frame = codec.encode(ClientRequest("cccc", 1, GetOp("kkkk")))
    placeholder = b"\xa4cccc" if field == "client_id" else b"\xa4kkkk"
    assert frame.count(placeholder) == 1
    bad = frame.replace(placeholder, bytes([0xA0 | len(bad_utf8)]) + bad_utf8)
    with pytest.raises(FrameError) as info:
        codec.decode(bad)
    assert info.value.reason == "undecodable"


def test_oversized_frame_is_refused_before_decoding() -> None:
    codec = Codec(frame_bytes_max=1024)
    big = codec.encode(ClientRequest("c", 1, PutOp("k", b"x" * 2000)))
    with pytest.raises(FrameError) as info:
        codec.decode(big)
    assert info.value.reason == "oversized"


@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_anything_but_frame_error(data: bytes) -> None:
    codec = Codec()
    try:
        msg = codec.decode(data)
    except FrameError:
        return
    assert isinstance(msg, Message.__args__)  # type: ignore[attr-defined]


def test_get_op_tag_is_stable() -> None:
    # The tag is part of the protocol: changing it breaks mixed-version clusters.
    assert msgspec.msgpack.decode(Codec().encode(ClientRequest("c", 1, GetOp("k"))))[1]["op"]["type"] == "get"


def test_a_packed_peer_frame_round_trips_and_is_smaller() -> None:
    from exapyte.protocol.raft.messages import Append
    from exapyte.protocol.types import Entry
    from exapyte.wire import PeerBatch, PeerPacked

    codec = Codec()
    entries = tuple(Entry(term=3, index=i, data=b"value-" * 40) for i in range(1, 20))
    batch = PeerBatch((PeerMessage("s0001", Append("n1", "n2", 3, 0, 0, entries, 0)),) * 3)
    frame = codec.encode(batch)
    packed = codec.pack(frame)
    assert packed is not None and len(packed) < len(frame) // 4
    msg = codec.decode(packed)
    assert isinstance(msg, PeerPacked)
    assert codec.unpack(msg) == batch
    assert codec.pack(codec.encode(FeedResync("n2", "n1", 5))) is None  # nothing to gain


@pytest.mark.parametrize("data, reason", [
    (b"not zlib at all", "undecodable"),
    (__import__("zlib").compress(b"\x00" * 4096)[:-3], "undecodable"),  # a truncated stream
    (__import__("zlib").compress(b"\x00" * (64 * 1024)), "oversized"),  # inflates past the bound
])
def test_a_bad_packed_frame_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    from exapyte.wire import PeerPacked

    codec = Codec(frame_bytes_max=16 * 1024)
    with pytest.raises(FrameError) as info:
        codec.unpack(PeerPacked(data))
    assert info.value.reason == reason


def test_a_packed_frame_holds_peer_messages_only() -> None:
    import zlib

    from exapyte.wire import PeerPacked

    codec = Codec()
    inner = codec.encode(ClientRequest("c1", 7, PutOp("k", b"v")))
    with pytest.raises(FrameError) as info:
        codec.unpack(PeerPacked(zlib.compress(inner)))
    assert info.value.reason == "invalid"
