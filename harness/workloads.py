"""Workloads: what the clients do, how to read the final state, and which checkers judge it.

Theory of operation
-------------------
A :class:`Workload` is data: a pure function building the client generator for the main phase,
a pure function giving the final reads from the keys the run touched, and the checkers (with the
linearizability model, when one applies). The workloads above the line ask for ``strong`` on
every op; the level workloads below mix the five levels.

``register``
    read / write / cas on a few keys, many ops per key: groups of client processes work on one
    key at a time (:func:`~harness.generator.concurrent_keys`) with values from a small domain,
    so compare-and-sets often match. With shards, successive keys go round-robin over them
    (:class:`ShardKeys`), so every shard gets keys as the run goes on. Checked per key against ``cas-register`` (a ``fail`` cas
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

The level workloads: ``session``, ``bounded``, ``prefix``, ``eventual`` and ``levels``
    puts of unique values and gets over the ``kv`` keys, each op at a level drawn from a mix:
    the workload's own level (``session``, ``bounded_staleness``, ``consistent_prefix``,
    ``eventual``) for :data:`PRIMARY_SHARE` of the ops, the other four levels for the rest in
    equal parts; ``levels`` draws all five equally. Updates always go through the group's leader
    whatever level they carry; the level of an update says which guarantees it is judged by
    (a session's monotonic writes and writes-follow-reads; real-time order and linearizability at
    ``strong``). Reads go to the worker's home node first: a follower answers what its level
    lets it, else redirects. The final phase reads every key at ``strong`` and then at
    ``eventual`` on every node (:attr:`Workload.final_replicas`), so that convergence is judged
    replica by replica. Checked by the per-level checkers (``levels``: each op at the level it
    requested, with the cluster's staleness bounds) and for lost writes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from harness import generator as gen
from harness.generator import Generator, Op, Rand

__all__ = ["BUG_WORKLOADS", "WORKLOADS", "ShardKeys", "Workload", "WorkloadOptions", "default_workload", "get_workload"]

REGISTER_VALUES = 5
KV_KEYS = 8
COUNTER_KEY = "counter"
BANK_KEY = "bank"
BANK_ACCOUNTS = ("a0", "a1", "a2", "a3", "a4")
BANK_BALANCE = 100
BANK_TRANSFER_MAX = 20
COUNTER_DELTA_MAX = 5
SHARD_KEY_SEARCH_MAX = 1000  # names tried per wanted key before a shard is declared unreachable


@dataclass(frozen=True)
class WorkloadOptions:
    seed: int = 0
    concurrency: int = 5
    ops_per_key: int = 200
    group_size: int | None = None  # register: processes per key (default: up to 5)
    # register with shards: the cluster's shards and a key's shard (the strategy's shard_of);
    # the keys then go round-robin over the shards
    shards: tuple[str, ...] = ()
    shard_of: Callable[[str], str] | None = None


class ShardKeys:
    """Register keys spread over shards: key ``i`` is the ``i // S``-th of the names ``r0, r1,
    ...`` that fall in shard ``shards[i % S]``, so any ``k·S`` consecutive keys hold ``k`` keys
    of every shard. A pure function of its arguments (the lists it builds are only a cache)."""

    def __init__(self, shards: tuple[str, ...], shard_of: Callable[[str], str], prefix: str = "r") -> None:
        if not shards:
            raise ValueError("ShardKeys needs at least one shard")
        self.shards = tuple(shards)
        self.shard_of = shard_of
        self.prefix = prefix
        self._by_shard: dict[str, list[str]] = {s: [] for s in self.shards}
        self._next = 0

    def __call__(self, i: int) -> str:
        shard = self.shards[i % len(self.shards)]
        wanted = i // len(self.shards)
        keys = self._by_shard[shard]
        while len(keys) <= wanted:
            if self._next > SHARD_KEY_SEARCH_MAX * (wanted + 1) * len(self.shards):
                raise ValueError(f"no key of shard {shard!r} among {self._next} names: is it one of the strategy's?")
            name = f"{self.prefix}{self._next}"
            self._next += 1
            owner = self.shard_of(name)
            if owner in self._by_shard:
                self._by_shard[owner].append(name)
        return keys[wanted]


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    build: Callable[[WorkloadOptions], Generator]
    final_ops: Callable[[Iterable[str | None]], list[Op]]
    checkers: tuple[str, ...]
    model: str | None = None
    #: the final phase also reads every key at ``eventual`` on every node (convergence)
    final_replicas: bool = False


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

    key_fn: Callable[[int], str] = lambda i: f"r{i}"
    if options.shards and options.shard_of is not None and len(options.shards) > 1:
        key_fn = ShardKeys(options.shards, options.shard_of)
    return gen.concurrent_keys(group, per_key, key_fn=key_fn)


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


# --- mixed levels ------------------------------------------------------------------------------

#: The five levels, strongest first, as ``Op.consistency`` names them.
LEVELS = ("strong", "bounded_staleness", "session", "consistent_prefix", "eventual")
#: Share of a level workload's ops at its own level (the rest: the other levels, equally).
PRIMARY_SHARE = 0.6
#: Share of a level workload's ops that are puts (the rest are gets).
LEVEL_WRITE_SHARE = 0.35


def _level_op(rand: Rand, primary: str | None) -> tuple[Op, Rand]:
    roll, rand = rand.random()
    if primary is not None and roll < PRIMARY_SHARE:
        level = primary
    else:
        level, rand = rand.choice([lv for lv in LEVELS if lv != primary])
    index, rand = rand.randint(0, KV_KEYS - 1)
    key = f"k{index}"
    roll, rand = rand.random()
    if roll < LEVEL_WRITE_SHARE:
        token, rand = rand.next_u64()
        return Op("write", key=key, value=f"v{token & 0xFFFFFFFFFFFF:012x}", consistency=level), rand
    return Op("read", key=key, consistency=level), rand


def level_generator(primary: str | None) -> Callable[[WorkloadOptions], Generator]:
    """Puts and gets over the kv keys at ``primary`` mostly (None: all five levels equally)."""
    if primary is not None and primary not in LEVELS:
        raise ValueError(f"unknown level {primary!r}; allowed: {', '.join(LEVELS)}")

    def build(options: WorkloadOptions) -> Generator:
        return gen.from_fn(lambda rand: _level_op(rand, primary), options.seed)

    return build


def _level_workload(name: str, primary: str | None) -> Workload:
    mix = (f"{primary} for {PRIMARY_SHARE:.0%} of the ops, the other levels for the rest"
           if primary is not None else "all five levels equally")
    return Workload(name, f"puts and gets at mixed levels: {mix}", level_generator(primary), _final_reads,
                    ("levels", "lost-writes"), final_replicas=True)


WORKLOADS: dict[str, Workload] = {
    "register": Workload(
        "register", "read/write/cas on a few keys, many ops per key",
        register_generator, _final_reads, ("linearizable", "lost-writes", "levels"), model="cas-register",
    ),
    "kv": Workload(
        "kv", "get/put/delete over several keys with unique values",
        kv_generator, _final_reads, ("linearizable", "lost-writes", "levels"), model="kv",
    ),
    "set": Workload("set", "add unique elements, then read the whole set", set_generator, _set_final, ("set",)),
    "counter": Workload(
        "counter", "increments by cas loops and reads of one counter", counter_generator, _counter_final, ("counter",),
    ),
    "bank": Workload(
        "bank", "transfers between accounts kept in one key; the total never changes",
        bank_generator, _bank_final, ("bank",),
    ),
    "session": _level_workload("session", "session"),
    "bounded": _level_workload("bounded", "bounded_staleness"),
    "prefix": _level_workload("prefix", "consistent_prefix"),
    "eventual": _level_workload("eventual", "eventual"),
    "levels": _level_workload("levels", None),
}


#: The workload a run with a bug uses when none is named: one whose ops ask for the level the bug
#: breaks (the others break strong ops, which every workload has).
BUG_WORKLOADS: dict[str, str] = {
    "session-ahead": "session",
    "bounded-unchecked": "bounded",
    "bounded-follower-view": "bounded",
    "bounded-send-time": "bounded",
    "stop-applying": "eventual",
    "apply-out-of-order": "prefix",
    "token-after-truncate": "session",
}
DEFAULT_WORKLOAD = "register"


def default_workload(bugs: Iterable[str]) -> str:
    """The workload of a run that names none: the first bug's in :data:`BUG_WORKLOADS`, else
    ``register``."""
    for bug in bugs:
        if bug in BUG_WORKLOADS:
            return BUG_WORKLOADS[bug]
    return DEFAULT_WORKLOAD


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; allowed: {', '.join(WORKLOADS)}") from None

