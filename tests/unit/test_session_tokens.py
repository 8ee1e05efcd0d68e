"""Session tokens name an entry, ``(term, index)``: a replica serves a session read only from a
state that holds that entry, refuses one whose entry was truncated (``session_lost``), and still
takes the older, index-only form."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from exapyte import limits
from exapyte.cli import _read_session, _write_session
from exapyte.client import SessionToken, session_token
from exapyte.config import loads
from exapyte.kv import Command, KVStateMachine, encode_command
from exapyte.protocol.types import Entry, EntryKind, Role
from exapyte.runtime.replica import SESSION_BEHIND, SESSION_HELD, SESSION_LOST, Replica
from exapyte.storage import open_storage
from exapyte.wire import ClientReply, ClientRequest, GetOp, PutOp, ReplyCode

TIMEOUT = 10  # election timeout, in ticks
NODES = ("n1", "n2", "n3")


# --- the state machine's term runs --------------------------------------------------------------


def _entries(terms: list[int], first: int = 1) -> list[Entry]:
    return [
        Entry(term, first + i, EntryKind.NORMAL, encode_command(Command("c", first + i, PutOp("k", b"v"))))
        for i, term in enumerate(terms)
    ]


@pytest.mark.parametrize("behind", [False, True], ids=["write_through", "write_behind"])
def test_the_term_of_every_applied_index_survives_restart_and_snapshot(tmp_path: Path, behind: bool) -> None:
    store = open_storage("sqlite", str(tmp_path / "a.db"))
    sm = KVStateMachine(store, write_behind=behind)
    sm.apply(_entries([1, 1, 3, 3, 3, 4]))
    assert [sm.term_at(i) for i in range(0, 8)] == [0, 1, 1, 3, 3, 3, 4, None]  # 7: not applied
    assert sm.term_runs == [(1, 1), (3, 3), (6, 4)]  # one run per term change
    image = sm.snapshot()
    store.close()
    reopened = KVStateMachine(open_storage("sqlite", str(tmp_path / "a.db")))
    assert [reopened.term_at(i) for i in range(1, 7)] == [1, 1, 3, 3, 3, 4]
    other = KVStateMachine(open_storage("memory", None))
    other.restore(image)  # a snapshot install: the log before it is gone, the terms are not
    assert other.term_at(2) == 1 and other.term_at(5) == 3 and other.applied_index == 6


def test_only_the_newest_term_runs_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "TERM_RUNS_MAX", 3)
    sm = KVStateMachine(open_storage("memory", None))
    sm.apply(_entries([1, 2, 3, 4, 5]))
    assert sm.term_runs == [(3, 3), (4, 4), (5, 5)]
    assert sm.term_at(2) is None  # older than the window: not known any more
    assert sm.term_at(3) == 3


def test_a_store_of_an_older_release_knows_the_applied_entry_only() -> None:
    store = open_storage("memory", None)
    KVStateMachine(store).apply(_entries([2, 2, 2]))
    store.apply([], {"term_runs": None}, sync=True)  # as written before the runs were kept
    sm = KVStateMachine(store)
    assert sm.term_at(3) == 2 and sm.term_at(2) is None


# --- tokens on the client side ------------------------------------------------------------------


def test_tokens_parse_both_forms_and_order_by_index_then_term() -> None:
    assert session_token(7) == SessionToken(0, 7)  # the older, index-only form
    assert session_token([3, 7]) == SessionToken(3, 7)
    for bad in (-1, [1], [1, -2], "7", [True, 2]):
        with pytest.raises(ValueError, match="session token"):
            session_token(bad)
    assert SessionToken(1, 8).newer(SessionToken(5, 7))
    assert SessionToken(5, 7).newer(SessionToken(3, 7))
    assert not SessionToken(3, 7).newer(SessionToken(3, 7))


def test_the_session_file_keeps_term_and_index_and_reads_older_files(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    _write_session(path, {"default": SessionToken(4, 12), "s1": SessionToken(2, 3)})
    assert json.loads(path.read_text()) == {"tokens": {"default": [4, 12], "s1": [2, 3]}}
    assert _read_session(path) == {"default": SessionToken(4, 12), "s1": SessionToken(2, 3)}
    path.write_text(json.dumps({"tokens": {"default": 9}}))
    assert _read_session(path) == {"default": SessionToken(0, 9)}
    path.write_text(json.dumps({"session_index": 5}))
    assert _read_session(path) == {"default": SessionToken(0, 5)}


# --- the replica's check, on a real truncation --------------------------------------------------


def _config(bugs: tuple[str, ...] = ()) -> str:
    unsafe = {"enabled": bool(bugs), "bugs": list(bugs)}
    return json.dumps({
        "cluster": {"nodes": [{"id": n, "port": 7000 + i, "pub_port": 7100 + i} for i, n in enumerate(NODES, 1)]},
        "storage": {"backend": "memory"},
        "consensus": {"protocol": "raft", "election_timeout_ticks": TIMEOUT, "heartbeat_ticks": 2},
        "unsafe": unsafe,
    })


class Group:
    """Three replicas and a network that can be cut; replies are collected per caller."""

    def __init__(self, bugs: tuple[str, ...] = ()) -> None:
        cfg = loads(_config(bugs))
        self.replies: dict[str, list[ClientReply]] = {}
        self.queue: list[Any] = []
        self.cut: set[str] = set()
        self.replicas = {
            n: Replica(cfg.with_node(n), open_storage("memory", None), random.Random(n),
                       reply=self._reply, send=functools.partial(self._send, n))
            for n in NODES
        }
        self._seq = 0

    def _reply(self, identity: Any, reply: ClientReply) -> None:
        self.replies.setdefault(identity, []).append(reply)

    def _send(self, frm: str, to: str, msg: Any) -> None:
        if frm not in self.cut and to not in self.cut:
            self.queue.append(msg)

    def settle(self) -> None:
        for _ in range(200):
            for r in self.replicas.values():
                r.flush()
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for msg in batch:
                self.replicas[msg.to].on_peer(msg)
        raise AssertionError("the network did not settle")

    def tick(self, nodes: tuple[str, ...] = NODES) -> None:
        for n in nodes:
            self.replicas[n].tick()
        self.settle()

    def leader(self, among: tuple[str, ...] = NODES) -> str:
        for _ in range(40 * TIMEOUT):
            leaders = [n for n in among if self.replicas[n].core.role is Role.LEADER
                       and self.replicas[n].core.status().term == max(
                           self.replicas[m].core.status().term for m in among)]
            if len(leaders) == 1:
                return leaders[0]
            self.tick(among)
        raise AssertionError("no leader")

    def request(self, node: str, who: str, op: Any, **kw: Any) -> None:
        self._seq += 1
        self.replicas[node].on_request(who, ClientRequest(who, self._seq, op, **kw))
        self.settle()

    def last(self, who: str) -> ClientReply:
        return self.replies[who][-1]


def _truncated_token() -> tuple[Group, str, str, SessionToken]:
    """A leader cut off with a write it appended but never committed; the other two elect a
    leader that writes over that index; after the heal the old leader truncates the entry. The
    token names the truncated entry."""
    g = Group()
    old = g.leader()
    g.request(old, "w0", PutOp("k", b"first"))  # committed everywhere
    g.cut.add(old)
    g.request(old, "lost", PutOp("k", b"lost"))  # appended by the cut-off leader only
    (lost_index,) = g.replicas[old].pending_writes
    token = SessionToken(g.replicas[old].core.status().term, lost_index)
    others = tuple(n for n in NODES if n != old)
    new = g.leader(others)
    for i in range(3):
        g.request(new, "w1", PutOp("k", f"new{i}".encode()))
    g.cut.clear()
    for _ in range(3 * TIMEOUT):
        g.tick()
    assert g.replicas[old].sm.applied_index == g.replicas[new].sm.applied_index >= lost_index
    assert g.replicas[new].sm.term_at(lost_index) != token.term  # the index was reused
    return g, old, new, token


def _session_get(g: Group, node: str, who: str, token: SessionToken) -> ClientReply:
    g.request(node, who, GetOp("k"), consistency="session", session_index=token.index,
              session_term=token.term)
    return g.last(who)


def test_a_token_whose_entry_was_truncated_is_refused_everywhere() -> None:
    g, old, new, token = _truncated_token()
    for node in NODES:  # the old leader too: it truncated the entry on rejoining
        reply = _session_get(g, node, f"r-{node}", token)
        assert reply.code == ReplyCode.SESSION_LOST, (node, reply)
        assert f"[{token.term}, {token.index}]" in reply.message and "truncated" in reply.message
        assert g.replicas[node].session_verdict(ClientRequest(
            "x", 1, GetOp("k"), consistency="session", session_index=token.index,
            session_term=token.term)) == SESSION_LOST


def test_a_token_of_the_entry_that_holds_the_index_is_served() -> None:
    g, old, new, token = _truncated_token()
    held = SessionToken(g.replicas[new].sm.term_at(token.index) or 0, token.index)
    reply = _session_get(g, old, "r", held)
    assert reply.code == ReplyCode.OK and reply.value == b"new2"


def test_an_index_only_token_is_still_accepted() -> None:
    g, old, new, token = _truncated_token()
    reply = _session_get(g, old, "r", SessionToken(0, token.index))  # the older form
    assert reply.code == ReplyCode.OK and reply.value == b"new2"
    assert reply.term == g.replicas[old].sm.applied_term and reply.index == g.replicas[old].sm.applied_index


def test_the_known_bug_compares_indexes_only() -> None:
    g = Group(bugs=("token-after-truncate",))
    leader = g.leader()
    g.request(leader, "w", PutOp("k", b"v"))
    replica = g.replicas[leader]
    applied = replica.sm.applied_index
    wrong = ClientRequest("x", 1, GetOp("k"), consistency="session", session_index=applied,
                          session_term=replica.sm.applied_term + 5)
    assert replica.session_verdict(wrong) == SESSION_HELD  # a correct replica: SESSION_LOST
    assert Group().replicas["n1"].session_verdict(
        ClientRequest("x", 1, GetOp("k"), consistency="session", session_index=3)) == SESSION_BEHIND


def test_a_write_reply_carries_the_term_of_its_entry() -> None:
    g = Group()
    leader = g.leader()
    g.request(leader, "w", PutOp("k", b"v"))
    reply = g.last("w")
    assert reply.code == ReplyCode.OK and reply.term == g.replicas[leader].sm.term_at(reply.index) > 0
