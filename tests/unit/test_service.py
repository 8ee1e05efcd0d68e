"""Request validation at the edge: every field bounded, a refusal names the field and the limit,
is counted, and nothing refused reaches the log or the state machine."""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exapyte import limits
from exapyte.config import loads
from exapyte.protocol.types import Role
from exapyte.runtime.replica import Replica
from exapyte.runtime.service import DirectService, validate_request
from exapyte.storage import open_storage
from exapyte.wire import (
    CasOp,
    ClientOp,
    ClientReply,
    ClientRequest,
    ClockOp,
    DeleteOp,
    GetOp,
    MembershipOp,
    PutOp,
    ScanOp,
    StatusOp,
    TransferLeaderOp,
)

KEY_MAX = limits.KEY_BYTES_MAX
VALUE_MAX = limits.VALUE_BYTES_MAX


def request(op: ClientOp = GetOp("k"), **fields: Any) -> ClientRequest:  # type: ignore[valid-type]
    return msgspec.structs.replace(ClientRequest("c", 1, op), **fields)


# Each bad request, and words its refusal must hold (the field, and the limit where one applies).
REFUSED = {
    "client_id empty": (request(client_id=""), ["client_id", "empty"]),
    "client_id long": (
        request(client_id="x" * (limits.CLIENT_ID_BYTES_MAX + 1)),
        ["client_id", "CLIENT_ID_BYTES_MAX=128", "129 bytes"],
    ),
    "client_id 249 bytes": (request(client_id="x" * 249), ["client_id", "CLIENT_ID_BYTES_MAX"]),
    "client_id 10 KB": (request(client_id="x" * 10_000), ["client_id", "CLIENT_ID_BYTES_MAX"]),
    # 43 three-byte characters: 43 characters, 129 bytes
    "client_id long in bytes": (request(client_id="€" * 43), ["client_id", "129 bytes"]),
    "client_id surrogate": (request(client_id="c\udc80"), ["client_id", "UTF-8", "surrogate"]),
    "client_id not str": (request(client_id=7), ["client_id", "str"]),
    "seq negative": (request(seq=-1), ["seq", "SEQ_MAX"]),
    "seq past int64": (request(seq=2**63), ["seq", "SEQ_MAX"]),
    "seq bool": (request(seq=True), ["seq"]),
    "session_index negative": (request(session_index=-5), ["session_index", "SESSION_INDEX_MAX"]),
    "session_index past int64": (request(session_index=2**64 - 1), ["session_index"]),
    "group empty": (request(group=""), ["group", "empty"]),
    "group long": (request(group="g" * 65), ["group", "GROUP_NAME_BYTES_MAX=64"]),
    "consistency unknown": (request(consistency="psychic"), ["consistency", "allowed: strong"]),
    "consistency huge": (request(consistency="s" * 100_000), ["consistency", "..."]),
    "key empty": (request(PutOp("", b"v")), ["key", "empty"]),
    "key long": (request(GetOp("k" * (KEY_MAX + 1))), ["key", f"KEY_BYTES_MAX={KEY_MAX}"]),
    "key long in bytes": (request(DeleteOp("é" * (KEY_MAX // 2 + 1))), ["key", "KEY_BYTES_MAX"]),
    "key surrogate": (request(PutOp("k\ud800", b"v")), ["key", "surrogate"]),
    "key not str": (request(GetOp(b"k")), ["key", "str"]),  # type: ignore[arg-type]
    "value long": (request(PutOp("k", b"v" * (VALUE_MAX + 1))), ["value", "VALUE_BYTES_MAX"]),
    "value not bytes": (request(PutOp("k", "v")), ["value", "bytes"]),  # type: ignore[arg-type]
    "cas expected long": (
        request(CasOp("k", b"e" * (VALUE_MAX + 1), None)), ["expected", "VALUE_BYTES_MAX"]
    ),
    "cas new long": (request(CasOp("k", None, b"n" * (VALUE_MAX + 1))), ["new", "VALUE_BYTES_MAX"]),
    "cas key surrogate": (request(CasOp("\udfff", None, b"n")), ["key", "surrogate"]),
    "scan start long": (request(ScanOp("s" * (KEY_MAX + 1))), ["start", "KEY_BYTES_MAX"]),
    "scan start surrogate": (request(ScanOp("\ud800")), ["start", "surrogate"]),
    "scan end long": (request(ScanOp("", "e" * (KEY_MAX + 1))), ["end", "KEY_BYTES_MAX"]),
    "scan end surrogate": (request(ScanOp("", "\udbff")), ["end", "surrogate"]),
    "scan limit zero": (request(ScanOp(limit=0)), ["limit", "SCAN_LIMIT_MAX"]),
    "scan limit huge": (request(ScanOp(limit=10_001)), ["limit", "SCAN_LIMIT_MAX=10000"]),
    "scan limit negative": (request(ScanOp(limit=-(2**63))), ["limit"]),
    "transfer to empty": (request(TransferLeaderOp("")), ["to", "empty"]),
    "transfer to long": (request(TransferLeaderOp("n" * 65)), ["to", "NODE_ID_BYTES_MAX=64"]),
    "membership change unknown": (
        request(MembershipOp("promote", "n1")), ["unknown membership change", "(change)"]
    ),
    "membership node long": (request(MembershipOp("remove", "n" * 99)), ["node", "NODE_ID_BYTES"]),
    "membership node surrogate": (request(MembershipOp("add-voter", "\ud800")), ["node", "UTF-8"]),
    "clock shift nan": (request(ClockOp(shift_ms=math.nan)), ["shift_ms", "finite"]),
    "clock shift huge": (request(ClockOp(shift_ms=3_600_001.0)), ["shift_ms", "SHIFT_MS_MAX"]),
    "clock shift inf": (request(ClockOp(shift_ms=-math.inf)), ["shift_ms", "finite"]),
    "clock rate zero": (request(ClockOp(rate=0.0)), ["rate", "CLOCK_RATE_MAX"]),
    "clock rate huge": (request(ClockOp(rate=1e300)), ["rate", "CLOCK_RATE_MAX"]),
    "clock rate nan": (request(ClockOp(rate=math.nan)), ["rate", "finite"]),
    "clock reset not bool": (request(ClockOp(reset=1)), ["reset", "bool"]),  # type: ignore
    "unknown op": (request(op="get"), ["unknown operation"]),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_each_bad_field_is_refused_naming_the_field_and_the_limit(name: str) -> None:
    req, words = REFUSED[name]
    problem = validate_request(req)
    assert problem is not None
    for word in words:
        assert word in problem
    assert len(problem) < 300  # a refused value is never echoed whole


ACCEPTED = {
    "client_id at the limit": request(client_id="x" * limits.CLIENT_ID_BYTES_MAX),
    "client_id at the limit in bytes": request(client_id="€" * 42 + "xx"),  # 128 bytes
    "seq at the limit": request(seq=limits.SEQ_MAX, session_index=limits.SESSION_INDEX_MAX),
    "seq zero": request(seq=0),
    "key at the limit": request(PutOp("k" * KEY_MAX, b"")),
    "key at the limit in bytes": request(PutOp("é" * (KEY_MAX // 2), b"v")),
    "value at the limit": request(PutOp("k", b"v" * VALUE_MAX)),
    "cas absent and delete": request(CasOp("k", None, None)),
    "cas at the limit": request(CasOp("k", b"e" * VALUE_MAX, b"n" * VALUE_MAX)),
    "scan everything": request(ScanOp("", None, limits.SCAN_LIMIT_MAX)),
    "scan empty end": request(ScanOp("b", "", 1)),
    "scan bounds at the limit": request(ScanOp("a" * KEY_MAX, "z" * KEY_MAX, 1)),
    "status": request(StatusOp(), consistency="eventual"),
    "transfer": request(TransferLeaderOp("n" * limits.NODE_ID_BYTES_MAX)),
    "membership": request(MembershipOp("add-learner", "n4")),
    "clock": request(ClockOp(shift_ms=-3_600_000, rate=limits.CLOCK_RATE_MAX, reset=True)),
    "non-ASCII key and group": request(GetOp("ключ"), group="группа"),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_requests_within_every_limit_are_accepted(name: str) -> None:
    assert validate_request(ACCEPTED[name]) is None


# --- anything at all: validation itself never raises ---------------------------------------------

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just(10**5000),  # past the interpreter's digit limit for str()
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(["x" * 300, "\ud800", "€" * 500]),
    st.lists(st.integers(), max_size=3),
)
ops = st.one_of(
    st.builds(GetOp, anything),
    st.builds(PutOp, anything, anything),
    st.builds(DeleteOp, anything),
    st.builds(CasOp, anything, anything, anything),
    st.builds(ScanOp, anything, anything, anything),
    st.builds(StatusOp),
    st.builds(TransferLeaderOp, anything),
    st.builds(MembershipOp, anything, anything),
    st.builds(ClockOp, anything, anything, anything),
    anything,
)


@given(
    st.builds(
        ClientRequest, anything, anything, ops,
        consistency=anything, session_index=anything, group=anything,
    )
)
def test_validation_never_raises_whatever_the_fields_hold(req: ClientRequest) -> None:
    problem = validate_request(req)
    assert problem is None or isinstance(problem, str)


# --- services: refused requests are counted and never proposed -----------------------------------

DIRECT = """{
  "node_id": "n1",
  "cluster": {"nodes": [{"id": "n1", "port": 7001, "pub_port": 7101}]},
  "storage": {"backend": "memory"},
  "consensus": {"protocol": "none"}
}"""
SINGLE_RAFT = DIRECT.replace('"none"', '"raft"')


def leader(replies: list[ClientReply]) -> Replica:
    replica = Replica(loads(SINGLE_RAFT), open_storage("memory", None), random.Random(1),
                      reply=lambda _who, reply: replies.append(reply), send=lambda *a: None)
    for _ in range(100):
        if replica.core.role is Role.LEADER:
            break
        replica.tick()
        replica.flush()
    assert replica.core.role is Role.LEADER
    return replica


POISON = [
    ClientRequest("x" * 249, 1, PutOp("k", b"v")),
    ClientRequest("x" * 10_000, 1, PutOp("k", b"v")),
    ClientRequest("c", 1, PutOp("k\ud800", b"v")),
    ClientRequest("c", 2**64, DeleteOp("k")),
    ClientRequest("c", 1, CasOp("k" * (KEY_MAX + 1), None, b"v")),
]


def test_direct_service_refuses_counts_and_applies_nothing() -> None:
    replies: list[ClientReply] = []
    service = DirectService(loads(DIRECT), open_storage("memory", None),
                            lambda _who, reply: replies.append(reply))
    for req in POISON:
        service.on_request(b"who", req)
        service.flush()
    assert [r.code for r in replies] == ["bad_request"] * len(POISON)
    assert [(r.client_id, r.seq) for r in replies] == [(q.client_id, q.seq) for q in POISON]
    assert service.sm.applied_index == 0 and service.storage.count() == 0
    assert service.counters["requests_invalid"] == len(POISON)
    service.on_request(b"who", ClientRequest("c", 3, PutOp("k", b"v")))
    service.flush()
    assert replies[-1].code == "ok" and service.sm.applied_index == 1


def test_replica_refuses_counts_and_proposes_nothing() -> None:
    replies: list[ClientReply] = []
    replica = leader(replies)
    replies.clear()
    last = replica.core.status().last_index
    for req in POISON:
        replica.on_request(b"who", req)
        replica.flush()
    assert [r.code for r in replies] == ["bad_request"] * len(POISON)
    assert replica.core.status().last_index == last  # nothing reached the log
    assert replica.counters["requests_invalid"] == len(POISON)
    assert replica.status()["counters"]["requests_invalid"] == len(POISON)


def test_a_clock_op_that_reaches_a_service_is_refused_not_a_crash() -> None:
    replies: list[ClientReply] = []
    service = DirectService(loads(DIRECT), open_storage("memory", None),
                            lambda _who, reply: replies.append(reply))
    service.on_request(b"who", ClientRequest("c", 1, ClockOp(shift_ms=5.0)))
    replica = leader(replies)
    replica.on_request(b"who", ClientRequest("c", 2, ClockOp(shift_ms=5.0)))
    replica.flush()
    assert [(r.seq, r.code) for r in replies if r.seq in (1, 2)] == [
        (1, "bad_request"), (2, "bad_request"),
    ]


def test_direct_service_flush_never_raises_on_a_write_that_escaped_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Were a check at the edge missing, the state machine and the flush still refuse the write.
    monkeypatch.setattr("exapyte.runtime.service.validate_request", lambda req: None)
    replies: list[ClientReply] = []
    service = DirectService(loads(DIRECT), open_storage("memory", None),
                            lambda _who, reply: replies.append(reply))
    for req in [*POISON, ClientRequest("c", 9, PutOp("k", b"v"))]:
        service.on_request(b"who", req)
    service.flush()  # one batch: the refused writes and the good one
    assert sorted(r.code for r in replies) == ["bad_request"] * len(POISON) + ["ok"]
    messages = [r.message for r in replies if r.code == "bad_request"]
    assert sum("META_NAME_BYTES_MAX" in m for m in messages) == 2
    assert sum("not encodable" in m for m in messages) == 2  # the surrogate key, seq 2**64
    assert sum("KEY_BYTES_MAX" in m for m in messages) == 1
    assert service.storage.count() == 1 and service.sm.get("k") is not None
