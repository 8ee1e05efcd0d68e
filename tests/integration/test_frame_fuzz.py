"""A frame fuzzer against a real Raft node: random bytes, msgpack of the wrong shapes, truncated
frames, length bombs and forged peer messages, from an authenticated client connection, while a
writer keeps writing. Every frame is counted and dropped by the reason the node's own codec gives,
the node keeps serving, and no acknowledged write is lost."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from exapyte import limits
from exapyte.errors import RequestTimeout
from exapyte.protocol.raft.messages import Append, AppendResp, Vote
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import ClientRequest, Codec, FrameError, GetOp, PeerMessage, PutOp
from tests.integration.test_raft_cluster import leader_of, statuses, wait_for

pytestmark = pytest.mark.integration

SEED = 20261201
FRAMES = 3000
FUZZ_S = 4.0  # how long the node is fuzzed

# msgpack headers that promise far more than the frame holds
LENGTH_BOMBS = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 G elements
    b"\xdf\xff\xff\xff\xff",  # map32 of 4 G pairs
    b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
    b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
    b"\x92\x01\xdd\x7f\xff\xff\xff",  # [1, array of 2 G]
    b"\x92\x01\xdf\xff\xff\xff\xff" + b"\xa1a" * 3,
    b"\x91" * 10_000,  # nesting 10 000 deep
    b"\xc7\xff\x05",  # ext8 of 255 bytes, 0 given
]


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-encodable value (the shapes a confused or hostile sender might use)."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.randrange(-(2**63), 2**64)
    if kind == 1:
        return rng.random() * 10 ** rng.randrange(-5, 300)
    if kind == 2:
        return "".join(rng.choice("ab\u00e9\u4e2d:\x00") for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.randbytes(rng.randrange(40))
    if kind == 4:
        return rng.choice([None, True, False])
    if kind == 5:
        return rng.choice(["client.request", "peer", "raft.append", "control.beat", "client.reply"])
    if kind == 6:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 7:
        keys = ["type", "client_id", "seq", "op", "group", "msg", "frm", "to", "term", "key"]
        return {rng.choice(keys): junk(rng, depth + 1) for _ in range(rng.randrange(6))}
    return {"type": rng.choice(["client.request", "peer"]), "op": junk(rng, depth + 1),
            "msg": junk(rng, depth + 1), "client_id": junk(rng, depth + 1)}


def valid_frames(codec: Codec) -> list[bytes]:
    msgs: list[Any] = [
        ClientRequest("fuzz", 1, PutOp("k", b"v")),
        ClientRequest("fuzz", 2, GetOp("k")),
        PeerMessage("default", Append("n2", "n1", 99, 0, 0, (), 0)),
        PeerMessage("default", AppendResp("n2", "n1", 1, 10**9)),
        PeerMessage("default", Vote("n3", "n1", 10**6, 10**6, 10**6)),
    ]
    return [codec.encode(m) for m in msgs]


def fuzz_frames(rng: random.Random, codec: Codec, count: int) -> list[bytes]:
    valid = valid_frames(codec)
    out: list[bytes] = []
    while len(out) < count:
        kind = rng.randrange(6)
        if kind == 0:
            frame = rng.randbytes(rng.randrange(0, 600))
        elif kind == 1:
            frame = msgspec.msgpack.encode(junk(rng))
        elif kind == 2:
            frame = msgspec.msgpack.encode([rng.choice([limits.PROTOCOL_VERSION, 0, 2, -1]), junk(rng)])
        elif kind == 3:
            whole = rng.choice(valid)
            frame = whole[: rng.randrange(len(whole))]  # truncated
        elif kind == 4:
            frame = rng.choice(LENGTH_BOMBS) + rng.randbytes(rng.randrange(8))
        else:
            whole = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):  # bit flips
                whole[rng.randrange(len(whole))] ^= 1 << rng.randrange(8)
            frame = bytes(whole)
        try:
            codec.decode(frame)
        except FrameError:
            out.append(frame)
        # a frame that happens to decode is a real request or message: not part of this count
    return out


def expected_reasons(codec: Codec, frames: list[bytes]) -> Counter[str]:
    reasons: Counter[str] = Counter()
    for frame in frames:
        try:
            codec.decode(frame)
        except FrameError as exc:
            reasons[f"frames_dropped_{exc.reason}"] += 1
    return reasons


@pytest.fixture
def cluster(write_config, tmp_path: Path):
    path = write_config(["n1", "n2", "n3"])
    c = LocalCluster(path, tmp_path / "run")
    c.start()
    yield c
    c.stop()


def test_fuzzed_frames_are_counted_and_dropped_and_nothing_is_lost(cluster: LocalCluster) -> None:
    leader = wait_for(lambda: leader_of(cluster), "a leader")
    target = leader  # the node with the most to lose
    codec = Codec()
    rng = random.Random(SEED)
    frames = fuzz_frames(rng, codec, FRAMES)
    expected = expected_reasons(codec, frames)
    assert set(expected) >= {"frames_dropped_undecodable", "frames_dropped_invalid"}
    before = statuses(cluster)[target]

    acked: dict[str, str] = {}
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        with cluster.client(timeout_s=5) as c:
            i = 0
            while not stop.is_set():
                try:
                    c.put(f"w{i}", str(i))
                    acked[f"w{i}"] = str(i)
                except RequestTimeout as exc:  # unknown outcome: not counted as acknowledged
                    errors.append(str(exc))
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    ctx = zmq.Context()
    try:
        sock = cluster.dealer(target, ctx)
        sock.setsockopt(zmq.SNDHWM, 0)
        forged_peer = [f for f in valid_frames(codec) if isinstance(codec.decode(f), PeerMessage)]
        # Rounds of the same frames for FUZZ_S seconds, while the writer writes.
        rounds = 0
        end = time.monotonic() + FUZZ_S
        while rounds == 0 or time.monotonic() < end:
            for i, frame in enumerate(frames):
                sock.send(frame)
                if i % 10 == 0:
                    sock.send(forged_peer[i % len(forged_peer)])
                if i % 500 == 0:
                    sock.send_multipart([b"two", b"parts"])
            rounds += 1
            time.sleep(0.05)
        expected = Counter({k: n * rounds for k, n in expected.items()})
        peer_sent = rounds * len(range(0, len(frames), 10))
        shape_sent = rounds * len(range(0, len(frames), 500))

        def counted() -> dict[str, Any] | None:
            st = statuses(cluster).get(target)
            if st is None:
                return None
            got = {k: st["frames"].get(k, 0) - before["frames"].get(k, 0) for k in expected}
            refused = st["refused"].get("peer_not_member", 0) - before["refused"].get("peer_not_member", 0)
            shape = st["frames"].get("frames_dropped_shape", 0) - before["frames"].get("frames_dropped_shape", 0)
            done = all(got[k] >= n for k, n in expected.items()) and refused >= peer_sent and shape >= shape_sent
            return {"got": got, "refused": refused, "shape": shape} if done else None

        result = wait_for(counted, "every fuzzed frame to be counted", 60)
        wait_for(lambda: len(acked) >= 50, "the writer to keep writing", 60)
    finally:
        stop.set()
        t.join(timeout=60)
        ctx.destroy(linger=0)
    # Exactly the node's own codec's reasons, each frame once.
    assert result["got"] == dict(expected), json.dumps(result)
    assert result["refused"] == peer_sent and result["shape"] == shape_sent
    assert all(cluster.alive(n) for n in cluster.node_ids)
    assert len(acked) >= 50, errors[:3]
    with cluster.client(timeout_s=10) as c:
        stored = {k: r.value.decode() for k, r in c.scan("w", "x", limit=limits.SCAN_LIMIT_MAX)}
    lost = {k for k in acked if stored.get(k) != acked[k]}
    assert not lost, sorted(lost)[:10]
    st = statuses(cluster)[target]
    assert st["term"] == before["term"], "a forged frame moved the term"
