"""Workloads: what the clients do, how to read the final state, and which checkers judge it.

Theory of operation
-------------------
A :class:`Workload` is data: a pure function building the client generator for the main phase,
a pure function giving the final reads from the keys the run touched, and the checkers (with the
linearizability model, when one applies). Every workload uses consistency ``strong``.

``register``
    read / write / cas on a few keys, many ops per key: groups of client processes work on one
    key at a time (:func:`~harness.generator.concurrent_keys`) with values from a small domain,
    so compare-and-sets often match. Checked per key against ``cas-register`` (a ``fail`` cas
    with ``error: cas-mismatch`` is a compare that did not match), plus "no acknowledged write
    lost" on the final reads.
``kv``
    get / put / delete over a handful of keys with unique values; checked against ``kv`` and for
    lost writes (unique values make that check exact).
``set``
    add unique integers (one key each), then one final read of the whole set (a strong scan):
    every acknowledged add must be there, nothing never added may be.
``counter``
    increments by 1..5 (read-then-cas loops in the client) and reads of one key; every read must
    lie between the increments certainly done and those possibly done.
``bank``
    five accounts in **one** key holding a JSON map, transfers by read-then-cas; the total never
    changes and no balance goes negative. One key, because the KV has only single-key cas: the
    invariant stays checkable (and every transfer is atomic by construction).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from harness import generator as gen
from harness.generator import Generator, Op, Rand

__all__ = ["WORKLOADS", "Workload", "WorkloadOptions", "get_workload"]

REGISTER_VALUES = 5
KV_KEYS = 8
COUNTER_KEY = "counter"
BANK_KEY = "bank"
BANK_ACCOUNTS = ("a0", "a1", "a2", "a3", "a4")
BANK_BALANCE = 100
BANK_TRANSFER_MAX = 20
COUNTER_DELTA_MAX = 5


@dataclass(frozen=True)
class WorkloadOptions:
    seed: int = 0
    concurrency: int = 5
    ops_per_key: int = 200
    group_size: int | None = None  # register: processes per key (default: up to 5)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    build: Callable[[WorkloadOptions], Generator]
    final_ops: Callable[[Iterable[str | None]], list[Op]]
    checkers: tuple[str, ...]
    model: str | None = None


def _seed_for(seed: int, key: str) -> int:
    return seed * 1_000_003 + zlib.crc32(key.encode())


# --- register ----------------------------------------------------------------------------------


def _register_read(rand: Rand) -> tuple[Op, Rand]:
    return Op("read"), rand


def _register_write(rand: Rand) -> tuple[Op, Rand]:
    value, rand = rand.randint(0, REGISTER_VALUES - 1)
    return Op("write", value=value), rand


def _register_cas(rand: Rand) -> tuple[Op, Rand]:
    expected, rand = rand.randint(0, REGISTER_VALUES - 1)
    new, rand = rand.randint(0, REGISTER_VALUES - 1)
    return Op("cas", value=[expected, new]), rand


def register_generator(options: WorkloadOptions) -> Generator:
    group = options.group_size or max(1, min(5, options.concurrency))

    def per_key(key: str) -> Generator:
        seed = _seed_for(options.seed, key)
        return gen.limit(options.ops_per_key, gen.mix(
            [gen.from_fn(_register_read, seed + 1), gen.from_fn(_register_write, seed + 2),
             gen.from_fn(_register_cas, seed + 3)],
            seed,
        ))

    return gen.concurrent_keys(group, per_key, key_fn=lambda i: f"r{i}")


def _final_reads(keys: Iterable[str | None]) -> list[Op]:
    return [Op("read", key=k) for k in sorted({k for k in keys if k is not None})]


# --- multi-key kv ------------------------------------------------------------------------------


def _kv_op(rand: Rand) -> tuple[Op, Rand]:
    index, rand = rand.randint(0, KV_KEYS - 1)
    key = f"k{index}"
    roll, rand = rand.random()
    if roll < 0.5:
        return Op("read", key=key), rand
    if roll < 0.95:
        token, rand = rand.next_u64()
        return Op("write", key=key, value=f"v{token & 0xFFFFFFFFFFFF:012x}"), rand
    return Op("delete", key=key), rand


def kv_generator(options: WorkloadOptions) -> Generator:
    return gen.from_fn(_kv_op, options.seed)


# --- set ---------------------------------------------------------------------------------------


def set_generator(options: WorkloadOptions) -> Generator:
    # Elements 0, 1, 2, ...: unique within a run (every run starts from empty node data).
    return gen.from_index(lambda i: Op("add", value=i))


def _set_final(keys: Iterable[str | None]) -> list[Op]:
    return [Op("read-set")]


# --- counter -----------------------------------------------------------------------------------


def _counter_op(rand: Rand) -> tuple[Op, Rand]:
    roll, rand = rand.random()
    if roll < 0.7:
        delta, rand = rand.randint(1, COUNTER_DELTA_MAX)
        return Op("add", key=COUNTER_KEY, value=delta), rand
    return Op("read-counter", key=COUNTER_KEY), rand


def counter_generator(options: WorkloadOptions) -> Generator:
    return gen.from_fn(_counter_op, options.seed)


def _counter_final(keys: Iterable[str | None]) -> list[Op]:
    return [Op("read-counter", key=COUNTER_KEY)]


# --- bank --------------------------------------------------------------------------------------


def bank_initial() -> dict[str, int]:
    return {a: BANK_BALANCE for a in BANK_ACCOUNTS}


def _bank_op(rand: Rand) -> tuple[Op, Rand]:
    roll, rand = rand.random()
    if roll < 0.3:
        return Op("read-bank", key=BANK_KEY), rand
    source, rand = rand.choice(BANK_ACCOUNTS)
    target, rand = rand.choice([a for a in BANK_ACCOUNTS if a != source])
    amount, rand = rand.randint(1, BANK_TRANSFER_MAX)
    return Op("transfer", key=BANK_KEY, value={"from": source, "to": target, "amount": amount}), rand


def bank_generator(options: WorkloadOptions) -> Generator:
    return gen.phases(
        gen.once(Op("init", key=BANK_KEY, value=bank_initial())),
        gen.from_fn(_bank_op, options.seed),
    )


def _bank_final(keys: Iterable[str | None]) -> list[Op]:
    return [Op("read-bank", key=BANK_KEY)]


WORKLOADS: dict[str, Workload] = {
    "register": Workload(
        "register", "read/write/cas on a few keys, many ops per key",
        register_generator, _final_reads, ("linearizable", "lost-writes"), model="cas-register",
    ),
    "kv": Workload(
        "kv", "get/put/delete over several keys with unique values",
        kv_generator, _final_reads, ("linearizable", "lost-writes"), model="kv",
    ),
    "set": Workload("set", "add unique elements, then read the whole set", set_generator, _set_final, ("set",)),
    "counter": Workload(
        "counter", "increments by cas loops and reads of one counter", counter_generator, _counter_final, ("counter",),
    ),
    "bank": Workload(
        "bank", "transfers between accounts kept in one key; the total never changes",
        bank_generator, _bank_final, ("bank",),
    ),
}


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; allowed: {', '.join(WORKLOADS)}") from None

