"""Generators are pure values: stepped here with made-up contexts, no cluster, no clock."""

from __future__ import annotations

from collections import Counter

import pytest

from harness import generator as gen
from harness.generator import NEMESIS, Completion, Context, Op, Pending, Rand

SECOND = 1_000_000_000


def ctx(t: int = 0, free: tuple = (0, 1), processes: tuple | None = None, concurrency: int = 2) -> Context:
    return Context(t, frozenset(free), frozenset(processes if processes is not None else free), concurrency)


def test_rand_is_a_pure_replayable_stream() -> None:
    a = Rand.seeded(7)
    x1, a1 = a.randint(0, 100)
    x2, _ = a.randint(0, 100)
    assert x1 == x2  # the same value, asked twice
    y, _ = a1.randint(0, 100)
    values = [Rand.seeded(s).random()[0] for s in range(200)]
    assert all(0 <= v < 1 for v in values) and len(set(values)) == 200
    shuffled, _ = Rand.seeded(3).shuffle(range(10))
    assert sorted(shuffled) == list(range(10))


def test_asking_twice_gives_the_same_answer() -> None:
    g = gen.mix([gen.from_fn(lambda r: (Op("read"), r)), gen.from_fn(lambda r: (Op("write", value=1), r))], seed=5)
    first, _ = g.op(ctx())
    again, _ = g.op(ctx())
    assert first == again


def test_once_and_limit_and_repeat() -> None:
    one = gen.once(Op("read", key="x"))
    op, rest = one.op(ctx())
    assert op == Op("read", key="x", process=0)
    assert rest.op(ctx())[0] is None
    ops = gen.drain(gen.limit(5, gen.repeat(Op("write", value=3))), concurrency=2, nemesis_process=False)
    assert [o.f for _, o in ops] == ["write"] * 5
    ops = gen.drain(gen.repeat(gen.seq(Op("a"), Op("b")), times=3), nemesis_process=False)
    assert [o.f for _, o in ops] == ["a", "b"] * 3


def test_no_free_process_is_pending() -> None:
    result, _ = gen.once(Op("read")).op(ctx(free=(), processes=(0, 1)))
    assert result == Pending(None)


def test_time_limit_stops_and_wakes_at_its_deadline() -> None:
    g = gen.time_limit(2.0, gen.repeat(Op("read")))
    ops = gen.drain(g, concurrency=1, nemesis_process=False, op_duration_ns=SECOND // 10)
    assert 18 <= len(ops) <= 21
    assert all(t < 2 * SECOND for t, _ in ops)
    pending = gen.time_limit(1.0, gen.sleep(10)).op(ctx(t=0))[0]
    assert pending == Pending(SECOND)


def test_rate_limit_gives_about_the_rate() -> None:
    g = gen.time_limit(10.0, gen.rate_limit(50, gen.repeat(Op("read")), seed=1))
    ops = gen.drain(g, concurrency=5, nemesis_process=False, op_duration_ns=1_000_000)
    assert 400 <= len(ops) <= 600
    gaps = {b - a for (a, _), (b, _) in zip(ops, ops[1:])}
    assert len(gaps) > 10  # randomized, not a fixed beat


def test_delay_spaces_ops_exactly() -> None:
    ops = gen.drain(gen.limit(4, gen.delay(0.5, gen.repeat(Op("r")))), concurrency=3, nemesis_process=False)
    assert [t for t, _ in ops] == [0, SECOND // 2, SECOND, 3 * SECOND // 2]


def test_mix_draws_from_every_member() -> None:
    g = gen.limit(300, gen.mix([gen.repeat(Op("a")), gen.repeat(Op("b")), gen.repeat(Op("c"))], seed=9))
    counts = Counter(o.f for _, o in gen.drain(g, concurrency=3, nemesis_process=False))
    assert set(counts) == {"a", "b", "c"} and min(counts.values()) > 60


def test_phases_wait_for_outstanding_ops() -> None:
    g = gen.phases(gen.limit(3, gen.repeat(Op("write"))), Op("final-read"))
    ops = gen.drain(g, concurrency=3, nemesis_process=False, op_duration_ns=1000)
    writes = [t for t, o in ops if o.f == "write"]
    final = [t for t, o in ops if o.f == "final-read"]
    assert writes == [0, 0, 0] and final == [1000]  # only after all three writes completed
    seq_ops = gen.drain(gen.seq(gen.limit(3, gen.repeat(Op("write"))), Op("x")), concurrency=4, nemesis_process=False)
    assert [t for t, _ in seq_ops] == [0, 0, 0, 0]  # seq does not wait


def test_clients_and_nemesis_are_routed_apart() -> None:
    g = gen.time_limit(3.0, gen.any_of(
        gen.clients(gen.repeat(Op("read"))),
        gen.nemesis(gen.repeat(gen.seq(gen.sleep(1.0), Op("start-partition"), gen.sleep(1.0), Op("stop-partition")))),
    ))
    ops = gen.drain(g, concurrency=2, op_duration_ns=SECOND // 4)
    nemesis_ops = [(t, o.f) for t, o in ops if o.process == NEMESIS]
    assert nemesis_ops == [(SECOND, "start-partition"), (2 * SECOND, "stop-partition")]  # a sleep counts from when first asked
    assert all(isinstance(o.process, int) for _, o in ops if o.f == "read")


def test_info_retires_a_process_and_the_worker_continues_as_a_new_one() -> None:
    ops = gen.drain(gen.limit(4, gen.repeat(Op("write"))), concurrency=1, nemesis_process=False,
                    outcome=lambda op: "info")
    assert [o.process for _, o in ops] == [0, 1, 2, 3]


def test_concurrent_keys_gives_each_group_its_own_key() -> None:
    def per_key(key: str) -> gen.Generator:
        return gen.limit(4, gen.repeat(Op("read")))

    g = gen.concurrent_keys(2, per_key, key_fn=lambda i: f"r{i}", keys_max=3)
    ops = gen.drain(g, concurrency=4, nemesis_process=False)
    by_key = Counter(o.key for _, o in ops)
    assert by_key == {"r0": 4, "r1": 4, "r2": 4}
    threads = {o.key: {o.process % 4 for _, o in ops if o.key == k} for _, o in ops for k in [o.key]}
    assert threads["r0"] <= {0, 1} and threads["r1"] <= {2, 3}
    with pytest.raises(ValueError, match="at least"):
        gen.concurrent_keys(5, per_key).op(ctx())


def test_update_reaches_the_group_of_the_completed_process() -> None:
    g = gen.concurrent_keys(1, lambda k: gen.repeat(Op("read")), keys_max=2)
    c = ctx(free=(0, 1))
    op, g2 = g.op(c)
    assert op is not None and op.key == "k0"
    g3 = g2.update(c, Completion(0, "ok", op, 5))
    assert isinstance(g3, gen.Generator)


def test_ops_go_round_robin_over_free_processes() -> None:
    c = Context(0, frozenset({0, 1, 2, NEMESIS}), frozenset({0, 1, 2, NEMESIS}), 3)
    assert c.some_free() == 0
    assert c.advance(0).some_free() == 1 and c.advance(2).some_free() == 0
    assert c.advance(1).advance(2).cursor == 0
    retired = Context(0, frozenset({3, 1}), frozenset({3, 1, 2}), 3, cursor=2)
    assert retired.some_free() == 3  # thread 0 comes after thread 2, before thread 1
    assert Context(0, frozenset({NEMESIS}), frozenset({0, NEMESIS}), 1).some_free() == NEMESIS
    # Ops faster than the rate: the lowest process would get them all; round-robin spreads them.
    ops = gen.drain(gen.limit(300, gen.rate_limit(100, gen.repeat(Op("read")), seed=1)), concurrency=5,
                    nemesis_process=False, op_duration_ns=1_000_000)
    per_process = Counter(o.process for _, o in ops)
    assert set(per_process) == {0, 1, 2, 3, 4} and max(per_process.values()) - min(per_process.values()) <= 1
