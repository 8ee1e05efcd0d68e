"""Properties of the KV state machine over arbitrary logs, good entries and garbage alike:
applying never raises, the applied index always reaches the last entry, and state machines fed
the same entries (in different runs, with write-behind, across restarts) end in the same state."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from exapyte import limits
from exapyte.kv import Command, KVStateMachine, Outcome, command_problem, encode_command
from exapyte.protocol.types import Entry, EntryKind
from exapyte.runtime.service import validate_request
from exapyte.storage import open_storage
from exapyte.wire import WRITE_OPS, CasOp, ClientRequest, DeleteOp, GetOp, PutOp, ScanOp

LONG_KEY = "k" * (limits.KEY_BYTES_MAX + 1)
VALUE_AT_LIMIT = b"v" * limits.VALUE_BYTES_MAX
VALUE_PAST_LIMIT = VALUE_AT_LIMIT + b"v"

client_ids = st.one_of(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([1, 128, 129, 247, 248, 249, 10_000]).map(lambda n: "x" * n),
    st.sampled_from([83, 84]).map(lambda n: "€" * n),  # 249 and 252 bytes: around the limit
    st.text(max_size=6),
)
keys = st.one_of(
    st.sampled_from(["k1", "k2", "k3", ""]),
    st.just(LONG_KEY),
    st.just("é" * (limits.KEY_BYTES_MAX // 2 + 1)),
    st.text(max_size=4),
)
values = st.one_of(st.binary(max_size=6), st.sampled_from([VALUE_AT_LIMIT, VALUE_PAST_LIMIT]))
seqs = st.one_of(st.integers(0, 6), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, -1, -(2**63)]))
write_ops = st.one_of(
    st.builds(PutOp, keys, values),
    st.builds(DeleteOp, keys),
    st.builds(CasOp, keys, st.none() | values, st.none() | values),
)
commands = st.builds(Command, client_ids, seqs, write_ops).map(encode_command)
msgpack_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
    st.text(max_size=5), st.binary(max_size=5),
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid command's bytes with one byte changed, or cut short."""
    data = bytearray(draw(commands))
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    at = draw(st.integers(0, len(data) - 1))
    data[at] = draw(st.integers(0, 255))
    return bytes(data)


payloads = st.one_of(
    commands,
    commands,
    mangled(),
    st.binary(max_size=40),
    msgpack_values.map(msgspec.msgpack.encode),
    st.just(b""),
)
logs = st.lists(
    st.tuples(
        st.sampled_from([EntryKind.NORMAL] * 6 + [EntryKind.NOOP, EntryKind.CONF_CHANGE]), payloads
    ),
    max_size=14,
).map(lambda items: [Entry(1, i + 1, kind, data) for i, (kind, data) in enumerate(items)])


@settings(max_examples=150)
@given(
    logs,
    st.lists(st.integers(0, 14), max_size=4),  # where the second machine's runs end
    st.lists(st.sampled_from(["flush", "restart", "nothing"]), min_size=5, max_size=5),
)
def test_any_log_applies_without_raising_and_to_the_same_state_however_it_is_run(
    log: list[Entry], cuts: list[int], between: list[str]
) -> None:
    # One machine applies the whole log at once, storing as it goes.
    reference = KVStateMachine(open_storage("memory", None))
    results = reference.apply(log)
    assert reference.applied_index == len(log)
    assert [e.index for e, _ in results] == [e.index for e in log]
    expected = {e.index: o for e, o in results}
    for e, outcome in results:
        assert (outcome is None) == (e.kind != EntryKind.NORMAL or not e.data)
        assert outcome is None or outcome.index <= e.index  # a retry answers as it first did

    # The other applies it in runs with write-behind; between runs it may store its overlay or
    # restart (losing the overlay), and the host then replays the log from the start, as a
    # replica does.
    store = open_storage("memory", None)
    sm = KVStateMachine(store, write_behind=True)
    for end, step in zip([*sorted(cuts), len(log)], between, strict=False):
        for e, outcome in sm.apply(log[:end]):
            assert outcome == expected[e.index]  # a replayed entry too
        if step == "flush":
            sm.flush()
        elif step == "restart":
            sm = KVStateMachine(store, write_behind=True)
    for e, outcome in sm.apply(log):
        assert outcome == expected[e.index]
    assert sm.applied_index == len(log)
    assert sm.snapshot() == reference.snapshot()
    assert store.count() == reference.storage.count()


def outcome_codes(log: list[Entry]) -> list[str | None]:
    sm = KVStateMachine(open_storage("memory", None))
    return [o.code if isinstance(o, Outcome) else None for _, o in sm.apply(log)]


def test_the_two_machines_differ_when_the_log_does() -> None:
    # The property above compares whole states; make sure a changed log is seen as one.
    log = [Entry(1, 1, EntryKind.NORMAL, encode_command(Command("a", 1, PutOp("k", b"v"))))]
    bad = [Entry(1, 1, EntryKind.NORMAL, encode_command(Command("x" * 249, 1, PutOp("k", b"v"))))]
    assert outcome_codes(log) == ["ok"] and outcome_codes(bad) == ["bad_request"]


# --- whatever the edge accepts, the state machine applies -----------------------------------------

requests = st.builds(
    ClientRequest,
    client_ids,
    seqs,
    st.one_of(write_ops, st.builds(GetOp, keys), st.builds(ScanOp, keys, st.none() | keys)),
    session_index=st.integers(0, 10),
)


@given(requests)
def test_a_write_the_service_accepts_is_a_command_the_state_machine_applies(
    req: ClientRequest,
) -> None:
    if validate_request(req) is not None or not isinstance(req.op, WRITE_OPS):
        return
    cmd = Command(req.client_id, req.seq, req.op)  # type: ignore[arg-type]
    assert command_problem(cmd) is None
    sm = KVStateMachine(open_storage("memory", None))
    [(_, outcome)] = sm.apply([Entry(1, 1, EntryKind.NORMAL, encode_command(cmd))])
    assert outcome is not None and outcome.code in ("ok", "not_found", "cas_failed")
