"""Authenticated peers on real processes: forged consensus messages change nothing.

Each attack was once enough to wipe, fork or stall a cluster: a forged InstallSnapshot (every
acknowledged key gone at the next leader change), a forged AppendResp past the leader's log (the
leader stopped), a forged Append in the current term (a follower kept a forged value), a stream of
TimeoutNow (the term ran away). They are sent here from a plain DEALER, from a DEALER with a key
the cluster does not know, from a DEALER holding a *client* key, and from one holding a member's
key but claiming to be another member. After each: the same keys and values on every node, the
same term, every node up, and the refusal counted by cause.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from exapyte.kv import Command, encode_command
from exapyte.protocol.raft.messages import Append, AppendResp, InstallSnapshot, TimeoutNow
from exapyte.protocol.types import ConfState, Entry, SnapshotMeta
from exapyte.runtime.cluster import LocalCluster
from exapyte.security import key_path, make_curve_client
from exapyte.wire import Codec, PeerMessage, PutOp
from tests.integration.test_raft_cluster import leader_of, statuses, wait_for

pytestmark = pytest.mark.integration

KEYS = {f"k{i}": f"v{i}" for i in range(20)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import cluster_config
    import json

    tmp = tmp_path_factory.mktemp("security")
    cfg = cluster_config(["n1", "n2", "n3"])
    cfg["storage"] = {"backend": "sqlite", "path": str(tmp / "data" / "{node_id}" / "store.db")}
    cfg["security"] = {"keys_dir": str(tmp / "keys")}
    path = tmp / "cluster.json"
    path.write_text(json.dumps(cfg))
    c = LocalCluster(path, tmp / "run")
    c.start()
    wait_for(lambda: leader_of(c), "a leader")
    with c.client(timeout_s=10) as client:
        for k, v in KEYS.items():
            client.put(k, v)
    yield c
    c.stop()


def snapshot_of(cluster: LocalCluster) -> dict[str, Any]:
    """Leader, term and every node's view of the keys (eventual reads: each replica's own)."""
    wait_for(lambda: leader_of(cluster), "a leader")
    st = statuses(cluster)
    views = {}
    for node in cluster.node_ids:
        with cluster.node_client(node, timeout_s=5) as c:
            wait_for(
                lambda: len(c.scan(consistency="eventual")) >= len(KEYS), f"{node} to converge"
            )
            views[node] = {k: r.value.decode() for k, r in c.scan(consistency="eventual")}
    return {"terms": {n: s["term"] for n, s in st.items()}, "views": views}


def forged(cluster: LocalCluster, leader: str, follower: str, term: int) -> list[Any]:
    """One of each forged message that once broke a cluster, aimed where it hurts."""
    evil = encode_command(Command("attacker", 1, PutOp("k0", b"forged")))
    image = b"not a snapshot"
    return [
        # wipe a follower: a snapshot "from the leader" far ahead of everyone's log
        InstallSnapshot(leader, follower, term, SnapshotMeta(10**6, term, ConfState(("n1", "n2", "n3"))),
                        0, image, len(image), True),
        # stop the leader: an acknowledgement past its log
        AppendResp(follower, leader, term, 10**9),
        # fork a follower: a forged entry in the current term
        Append(leader, follower, term, 0, 0, (Entry(term, 1, 0, evil),), 1),
        # run the term away
        TimeoutNow(leader, follower, term),
    ]


def blast(sock: zmq.Socket, messages: list[Any], rounds: int = 10) -> None:  # type: ignore[type-arg]
    codec = Codec()
    for _ in range(rounds):
        for msg in messages:
            try:
                sock.send(codec.encode(PeerMessage("default", msg)), zmq.NOBLOCK)
            except zmq.Again:
                pass
        time.sleep(0.1)  # 10/s, the rate that once pushed the term from 3 to 107


def curve_dealer(ctx: zmq.Context, endpoint: str, server_key: bytes, public: bytes,  # type: ignore[type-arg]
                 secret: bytes, identity: str | None = None) -> zmq.Socket:  # type: ignore[type-arg]
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity.encode())
    make_curve_client(sock, public, secret, server_key)
    sock.connect(endpoint)
    return sock


def attackers(
    cluster: LocalCluster, target: str, member: str, ctx: zmq.Context  # type: ignore[type-arg]
) -> dict[str, zmq.Socket]:  # type: ignore[type-arg]
    """Sockets to ``target``: no CURVE, an unknown key, a client's key, and ``member``'s key."""
    assert cluster.keys_dir is not None
    endpoint = cluster.endpoint(target)
    server_key = zmq.auth.load_certificate(str(key_path(cluster.keys_dir, "nodes", target)))[0]
    plain = ctx.socket(zmq.DEALER)
    plain.setsockopt(zmq.LINGER, 0)
    plain.setsockopt(zmq.IDENTITY, b"n2")
    plain.connect(endpoint)
    stranger_pub, stranger_sec = zmq.curve_keypair()
    member_pub, member_sec = zmq.auth.load_certificate(
        str(key_path(cluster.keys_dir, "nodes", member, secret=True))
    )
    assert member_sec is not None
    return {
        "plain": plain,
        "unknown key": curve_dealer(ctx, endpoint, server_key, stranger_pub, stranger_sec, "n2"),
        "client key": cluster.dealer(target, ctx),
        # a real member's key, but every forged message claims another sender
        "member key": curve_dealer(ctx, endpoint, server_key, member_pub, member_sec, "intruder"),
    }


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_forged_peer_messages_change_nothing(cluster: LocalCluster, role: str) -> None:
    before = snapshot_of(cluster)
    leader = leader_of(cluster)
    assert leader is not None
    follower = next(n for n in cluster.node_ids if n != leader)
    target = leader if role == "leader" else follower
    # The member whose key forges: the other one of leader and follower, so that the third node,
    # whose name the forged messages claim, is never the key's own member (who would be
    # admitted: a member speaks for itself, and a leader message of its term from it would prove
    # two leaders and stop the target).
    member = follower if target == leader else leader
    other = next(n for n in cluster.node_ids if n not in (leader, follower))
    term = before["terms"][leader]
    ctx = zmq.Context()
    try:
        socks = attackers(cluster, target, member, ctx)
        for name, sock in socks.items():
            messages = forged(cluster, leader, follower, term)
            if name == "member key":
                # The sender id must be the key's member: claim to be the third node instead.
                messages = [
                    type(m)(**{**{f: getattr(m, f) for f in m.__struct_fields__}, "frm": other})
                    for m in messages
                ]
            blast(sock, messages)
        # The refusals are counted by cause on the target.
        wait_for(
            lambda: (r := statuses(cluster)[target]["refused"]).get("auth_unknown_key", 0) >= 1
            and r.get("peer_not_member", 0) >= 1 and r.get("peer_sender_mismatch", 0) >= 1
            and sum(v for k, v in r.items() if k.startswith("handshake_failed")) >= 1,
            f"{target} to count each refusal",
        )
    finally:
        ctx.destroy(linger=0)
    after = snapshot_of(cluster)
    assert after == before
    assert all(cluster.alive(n) for n in cluster.node_ids)
    # A leader change still finds every acknowledged key (the forged snapshot would have won it).
    new = next(n for n in cluster.node_ids if n != leader)
    with cluster.admin_client(timeout_s=10) as admin:
        admin.transfer_leader(new)
    wait_for(lambda: leader_of(cluster) == new, f"{new} to lead")
    with cluster.client(timeout_s=10) as c:
        assert {k: r.value.decode() for k, r in c.scan()} == before["views"][leader]


def test_admin_requests_need_the_admin_key(cluster: LocalCluster) -> None:
    from exapyte.errors import RequestFailed

    leader = wait_for(lambda: leader_of(cluster), "a leader")
    voters = statuses(cluster)[leader]["voters"]
    with cluster.client(timeout_s=5) as c:
        for change in (lambda: c.change_membership("remove", "n3"),
                       lambda: c.change_membership("remove", "n2"),
                       lambda: c.transfer_leader(next(n for n in voters if n != leader))):
            with pytest.raises(RequestFailed) as err:
                change()
            assert err.value.code == "forbidden"
    assert statuses(cluster)[leader]["voters"] == voters
    assert leader_of(cluster) == leader


def test_a_node_without_its_keys_refuses_to_start(tmp_path: Path, write_config) -> None:
    import subprocess
    import sys

    path = write_config(["n1"])
    proc = subprocess.run(
        [sys.executable, "-m", "exapyte", "--node", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2
    assert "n1.key_secret does not exist" in proc.stderr and "--keygen" in proc.stderr
