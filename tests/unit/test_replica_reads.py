"""A replica answers every strong read it accepted: with data, or with a refusal to retry on."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest

from exapyte.config import loads
from exapyte.protocol.types import Role
from exapyte.runtime.replica import Replica
from exapyte.storage import open_storage
from exapyte.wire import ClientReply, ClientRequest, GetOp, ReplyCode

TIMEOUT = 10  # election timeout, in ticks


def config(check_quorum: bool) -> str:
    return """{
      "cluster": {"nodes": [
        {"id": "n1", "port": 7001, "pub_port": 7101},
        {"id": "n2", "port": 7002, "pub_port": 7102},
        {"id": "n3", "port": 7003, "pub_port": 7103}]},
      "storage": {"backend": "memory"},
      "consensus": {"protocol": "raft", "election_timeout_ticks": %d, "heartbeat_ticks": 2,
                    "check_quorum": %s}
    }""" % (TIMEOUT, "true" if check_quorum else "false")


class Group:
    """Three replicas and a network that can be cut; replies are collected per request."""

    def __init__(self, check_quorum: bool = True) -> None:
        cfg = loads(config(check_quorum))
        self.replies: dict[str, list[ClientReply]] = {}
        self.queue: list[Any] = []
        self.cut: set[str] = set()
        self.replicas = {
            n: Replica(cfg.with_node(n), open_storage("memory", None), random.Random(n),
                       reply=self._reply, send=functools.partial(self._send, n))
            for n in ("n1", "n2", "n3")
        }

    def _reply(self, identity: Any, reply: ClientReply) -> None:
        self.replies.setdefault(identity, []).append(reply)

    def _send(self, frm: str, to: str, msg: Any) -> None:
        if frm not in self.cut and to not in self.cut:
            self.queue.append(msg)

    def settle(self) -> None:
        for _ in range(100):
            for r in self.replicas.values():
                r.flush()
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for msg in batch:
                self.replicas[msg.to].on_peer(msg)
        raise AssertionError("the network did not settle")

    def tick(self, nodes: tuple[str, ...] = ("n1", "n2", "n3")) -> None:
        for n in nodes:
            self.replicas[n].tick()
        self.settle()

    def leader(self) -> str:
        for _ in range(20 * TIMEOUT):
            leaders = [n for n, r in self.replicas.items() if r.core.role is Role.LEADER]
            if len(leaders) == 1:
                return leaders[0]
            self.tick()
        raise AssertionError("no leader")

    def read(self, node: str, who: str) -> None:
        self.replicas[node].on_request(who, ClientRequest(who, 1, GetOp("k")))


def test_a_read_at_a_leader_that_steps_down_is_redirected_or_refused() -> None:
    g = Group()
    leader = g.leader()
    g.cut.add(leader)
    g.read(leader, "c1")
    g.settle()
    assert "c1" not in g.replies
    for _ in range(3 * TIMEOUT):
        g.tick()
        if "c1" in g.replies:
            break
    (reply,) = g.replies["c1"]
    assert reply.code in (ReplyCode.NOT_LEADER, ReplyCode.UNAVAILABLE)
    assert g.replicas[leader].counters.get("reads_failed") == 1
    assert not g.replicas[leader].pending_reads


def test_a_read_a_quorum_does_not_confirm_is_refused_within_an_election_timeout() -> None:
    g = Group(check_quorum=False)  # the leader keeps leading: only the read's timeout ends it
    leader = g.leader()
    g.cut.add(leader)
    g.read(leader, "c1")
    for _ in range(TIMEOUT - 1):
        g.tick((leader,))
    assert "c1" not in g.replies
    g.tick((leader,))
    (reply,) = g.replies["c1"]
    assert reply.code == ReplyCode.UNAVAILABLE and "retry" in reply.message
    assert g.replicas[leader].core.role is Role.LEADER


def test_a_read_the_core_lost_is_refused_by_the_replica(caplog: pytest.LogCaptureFixture) -> None:
    g = Group()
    leader = g.leader()
    replica = g.replicas[leader]
    g.cut.update(("n1", "n2", "n3"))  # nothing moves: the read stays in the core
    g.read(leader, "c1")
    g.settle()
    replica.core.reads.reset()  # as if the core had forgotten it without saying so
    for _ in range(3 * TIMEOUT):
        g.tick((leader,))
    (reply,) = g.replies["c1"]
    assert reply.code == ReplyCode.UNAVAILABLE
    assert replica.counters.get("reads_expired") == 1
    assert "neither answered nor failed" in caplog.text


def test_reads_get_distinct_ids_and_are_answered_once() -> None:
    g = Group()
    leader = g.leader()
    for who in ("c1", "c2", "c3"):
        g.read(leader, who)
    assert len(g.replicas[leader].pending_reads) == 3
    g.settle()
    for who in ("c1", "c2", "c3"):
        (reply,) = g.replies[who]
        assert reply.code == ReplyCode.NOT_FOUND
