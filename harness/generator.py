"""Generators: what operations a test performs, and when, as pure values.

Theory of operation
-------------------
A generator is an immutable value with two methods:

``op(ctx) -> (result, next_generator)``
    ``result`` is an :class:`Op` to perform now (its ``process`` chosen among ``ctx.free``), a
    :class:`Pending` (nothing yet: ask again at ``until_ns``, or when an operation completes), or
    ``None`` (this generator is exhausted). ``next_generator`` is the state to use from then on;
    the old value is never changed, so asking twice gives the same answer.
``update(ctx, event) -> next_generator``
    an operation completed (``event`` is a :class:`Completion`); generators that care (per-key
    groups, phases) route or count it.

Generators do no IO, read no clock and own no random generator: time comes in ``ctx.time_ns`` and
randomness is a :class:`Rand` value carried in their state (splitmix64, so a seed replays the
same choices). The **interpreter** (``harness.runner``) is the only part that does IO: it asks the
generator for an op, hands it to the process's worker, sleeps when told ``Pending``, and feeds
completions back. So every generator here is unit-tested by stepping it with made-up contexts.

Combinators (after Jepsen's generator library): :func:`once`, :func:`repeat`, :func:`from_fn`,
:func:`limit`, :func:`time_limit`, :func:`stagger` (random spacing), :func:`rate_limit` (at most R
ops/s), :func:`delay` (fixed spacing), :func:`mix`, :func:`seq`, :func:`phases` (each phase waits
for every outstanding op of the previous one), :func:`sleep`, :func:`any_of` (several generators
side by side, e.g. clients and nemesis), :func:`clients` / :func:`nemesis` (route to client
processes or to the nemesis), and :func:`concurrent_keys` (independent keys: groups of N
processes each work on one key at a time, moving to a fresh key when its generator ends).
"""

from __future__ import annotations

import abc

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "NEMESIS",
    "Completion",
    "Context",
    "Generator",
    "Op",
    "Pending",
    "Rand",
    "any_of",
    "clients",
    "concurrent_keys",
    "delay",
    "drain",
    "from_fn",
    "from_index",
    "limit",
    "mix",
    "nemesis",
    "once",
    "phases",
    "rate_limit",
    "repeat",
    "seq",
    "sleep",
    "stagger",
    "time_limit",
]

NEMESIS = "nemesis"
Process = int | str
_MASK64 = (1 << 64) - 1


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """An operation to perform. ``process`` is filled in by the generator that emits it."""

    f: str
    key: str | None = None
    value: Any = None
    process: Process | None = None
    #: the consistency level a read asks for (None: the client's default, ``strong``); updates
    #: always go through the group's leader whatever it says
    consistency: str | None = None
    #: the node a read is sent to first (None: the worker's home node)
    node: str | None = None


@dataclass(frozen=True)
class Pending:
    """Nothing to do yet: ask again at ``until_ns`` (None: when some operation completes)."""

    until_ns: int | None = None


@dataclass(frozen=True)
class Completion:
    """An operation finished: ``type`` is ``ok``, ``fail`` or ``info``."""

    process: Process
    type: str
    op: Op
    time_ns: int
    value: Any = None


@dataclass(frozen=True)
class Context:
    """What a generator may know: the time, the processes in scope, and which of them are free.

    ``concurrency`` is the number of client worker threads: client process ``p`` runs on thread
    ``p % concurrency`` (a worker whose op ended ``info`` continues as ``p + concurrency``).
    ``cursor`` is the thread the next op should go to if it is free: the interpreter moves it on
    past each thread it hands an op to, so work goes round-robin over the threads instead of
    piling onto the lowest-numbered free one.
    """

    time_ns: int
    free: frozenset[Process]
    processes: frozenset[Process]
    concurrency: int = 1
    cursor: int = 0

    def restrict(self, allowed: Callable[[Process], bool]) -> Context:
        return replace(
            self,
            free=frozenset(p for p in self.free if allowed(p)),
            processes=frozenset(p for p in self.processes if allowed(p)),
        )

    def some_free(self) -> Process | None:
        """The free client process whose thread comes first from ``cursor`` on, round-robin
        (deterministic); the nemesis only when no client process is free."""
        if not self.free:
            return None
        n = max(1, self.concurrency)

        def order(p: Process) -> tuple[int, int, Any]:
            if isinstance(p, int):
                return (0, (p % n - self.cursor) % n, p)
            return (1, 0, str(p))

        return min(self.free, key=order)

    def advance(self, process: Process) -> Context:
        """The context after an op went to ``process``: the cursor moves past its thread."""
        if not isinstance(process, int):
            return self
        return replace(self, cursor=(process + 1) % max(1, self.concurrency))

    def all_free(self) -> bool:
        return self.free == self.processes

    def thread(self, process: Process) -> Process:
        return process % self.concurrency if isinstance(process, int) else process


def _process_order(p: Process) -> tuple[int, Any]:
    return (0, p) if isinstance(p, int) else (1, str(p))


def is_client(p: Process) -> bool:
    return isinstance(p, int) and not isinstance(p, bool)


@dataclass(frozen=True)
class Rand:
    """A pure random stream (splitmix64): each draw returns the value and the next stream."""

    state: int

    @staticmethod
    def seeded(seed: int) -> Rand:
        return Rand((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64)

    def next_u64(self) -> tuple[int, Rand]:
        state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31), Rand(state)

    def random(self) -> tuple[float, Rand]:
        """Uniform in [0, 1)."""
        value, nxt = self.next_u64()
        return (value >> 11) / float(1 << 53), nxt

    def randint(self, lo: int, hi: int) -> tuple[int, Rand]:
        """Uniform integer in [lo, hi]."""
        if hi < lo:
            raise ValueError(f"randint: empty range [{lo}, {hi}]")
        value, nxt = self.next_u64()
        return lo + value % (hi - lo + 1), nxt

    def choice(self, items: Sequence[Any]) -> tuple[Any, Rand]:
        if not items:
            raise ValueError("choice from an empty sequence")
        i, nxt = self.randint(0, len(items) - 1)
        return items[i], nxt

    def shuffle(self, items: Sequence[Any]) -> tuple[tuple[Any, ...], Rand]:
        out = list(items)
        rand = self
        for i in range(len(out) - 1, 0, -1):
            j, rand = rand.randint(0, i)
            out[i], out[j] = out[j], out[i]
        return tuple(out), rand

    def split(self) -> tuple[Rand, Rand]:
        """Two independent streams (for sub-generators)."""
        a, nxt = self.next_u64()
        return Rand.seeded(a), nxt


Result = Op | Pending | None


class Generator(abc.ABC):
    """Base class: see the module docstring. Subclasses are frozen dataclasses."""

    @abc.abstractmethod
    def op(self, ctx: Context) -> tuple[Result, Generator]:
        """The next operation (or what to wait for), and the generator that follows it."""

    def update(self, ctx: Context, event: Completion) -> Generator:
        return self


def _soonest(a: Pending | None, b: Pending) -> Pending:
    """Of two pendings, the one that asks to be woken first (a timed one beats 'on completion')."""
    if a is None:
        return b
    if a.until_ns is None:
        return b
    if b.until_ns is None:
        return a
    return a if a.until_ns <= b.until_ns else b


# --- leaves ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Once(Generator):
    template: Op

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        process = ctx.some_free()
        if process is None:
            return Pending(), self
        return replace(self.template, process=process), _Exhausted()


@dataclass(frozen=True)
class _Exhausted(Generator):
    def op(self, ctx: Context) -> tuple[Result, Generator]:
        return None, self


@dataclass(frozen=True)
class _FromFn(Generator):
    """Ops made by a pure function of a random stream, forever."""

    fn: Callable[[Rand], tuple[Op, Rand]]
    rand: Rand

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        process = ctx.some_free()
        if process is None:
            return Pending(), self
        template, rand = self.fn(self.rand)
        return replace(template, process=process), replace(self, rand=rand)


@dataclass(frozen=True)
class _FromIndex(Generator):
    """Ops ``fn(0)``, ``fn(1)``, ... forever (unique elements, sequence numbers)."""

    fn: Callable[[int], Op]
    index: int = 0

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        process = ctx.some_free()
        if process is None:
            return Pending(), self
        return replace(self.fn(self.index), process=process), replace(self, index=self.index + 1)


def from_index(fn: Callable[[int], Op], start: int = 0) -> Generator:
    """An infinite generator of ``fn(i)`` for i = start, start + 1, ... ``fn`` must be pure."""
    return _FromIndex(fn, start)


def once(op: Op) -> Generator:
    """Emit ``op`` once, to whichever process is free."""
    return _Once(op)


def from_fn(fn: Callable[[Rand], tuple[Op, Rand]], seed: int | Rand = 0) -> Generator:
    """An infinite generator of ``fn(rand) -> (op, rand')``. ``fn`` must be pure."""
    return _FromFn(fn, seed if isinstance(seed, Rand) else Rand.seeded(seed))


# --- combinators -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Repeat(Generator):
    template: Generator
    current: Generator
    remaining: int | None  # repetitions left after the current one (None: forever)
    emitted: bool = False  # the current repetition emitted something (guards against spinning)

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        result, nxt = self.current.op(ctx)
        if result is not None:
            emitted = self.emitted or isinstance(result, Op)
            return result, replace(self, current=nxt, emitted=emitted)
        if not self.emitted or self.remaining == 0:
            return None, _Exhausted()
        remaining = None if self.remaining is None else self.remaining - 1
        return replace(self, current=self.template, remaining=remaining, emitted=False).op(ctx)

    def update(self, ctx: Context, event: Completion) -> Generator:
        return replace(self, current=self.current.update(ctx, event))


def repeat(gen: Generator | Op, times: int | None = None) -> Generator:
    """Run ``gen`` again from its initial value each time it is exhausted (``times`` in all, or
    forever). An :class:`Op` repeats that op. A repetition that emits nothing ends the repeat."""
    template = once(gen) if isinstance(gen, Op) else gen
    if times is not None and times < 1:
        return _Exhausted()
    return _Repeat(template, template, None if times is None else times - 1)


@dataclass(frozen=True)
class _Limit(Generator):
    remaining: int
    gen: Generator

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        if self.remaining <= 0:
            return None, _Exhausted()
        result, nxt = self.gen.op(ctx)
        if isinstance(result, Op):
            return result, _Limit(self.remaining - 1, nxt)
        return result, replace(self, gen=nxt)

    def update(self, ctx: Context, event: Completion) -> Generator:
        return replace(self, gen=self.gen.update(ctx, event))


def limit(n: int, gen: Generator) -> Generator:
    """At most ``n`` ops from ``gen``."""
    return _Limit(n, gen)


@dataclass(frozen=True)
class _TimeLimit(Generator):
    duration_ns: int
    gen: Generator
    deadline_ns: int | None = None

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        deadline = self.deadline_ns if self.deadline_ns is not None else ctx.time_ns + self.duration_ns
        if ctx.time_ns >= deadline:
            return None, _Exhausted()
        result, nxt = self.gen.op(ctx)
        state = replace(self, gen=nxt, deadline_ns=deadline)
        if isinstance(result, Pending):
            # Wake at the deadline at the latest, even when waiting for a completion.
            until = deadline if result.until_ns is None else min(result.until_ns, deadline)
            result = Pending(until)
        return result, state

    def update(self, ctx: Context, event: Completion) -> Generator:
        return replace(self, gen=self.gen.update(ctx, event))


def time_limit(seconds: float, gen: Generator) -> Generator:
    """Ops from ``gen`` until ``seconds`` after this generator is first asked."""
    return _TimeLimit(int(seconds * 1e9), gen)


@dataclass(frozen=True)
class _Spaced(Generator):
    """Ops from ``gen`` separated by ``mean_ns``: exactly (``jitter`` False) or uniform [0, 2·mean)."""

    mean_ns: int
    gen: Generator
    rand: Rand
    jitter: bool
    next_ns: int | None = None

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        if self.next_ns is not None and ctx.time_ns < self.next_ns:
            return Pending(self.next_ns), self
        result, nxt = self.gen.op(ctx)
        if not isinstance(result, Op):
            return result, replace(self, gen=nxt)
        rand = self.rand
        gap = self.mean_ns
        if self.jitter:
            u, rand = rand.random()
            gap = int(2 * self.mean_ns * u)
        base = max(ctx.time_ns, self.next_ns or 0)
        return result, replace(self, gen=nxt, rand=rand, next_ns=base + gap)

    def update(self, ctx: Context, event: Completion) -> Generator:
        return replace(self, gen=self.gen.update(ctx, event))


def stagger(seconds: float, gen: Generator, seed: int | Rand = 0) -> Generator:
    """Space ops by a random gap, uniform in [0, 2·seconds): ``1/seconds`` ops/s on average."""
    return _Spaced(int(seconds * 1e9), gen, seed if isinstance(seed, Rand) else Rand.seeded(seed), True)


def delay(seconds: float, gen: Generator) -> Generator:
    """Space ops exactly ``seconds`` apart (or more, when no process is free)."""
    return _Spaced(int(seconds * 1e9), gen, Rand(0), False)


def rate_limit(ops_per_s: float, gen: Generator, seed: int | Rand = 0) -> Generator:
    """About ``ops_per_s`` ops per second in all, with randomized gaps (never a fixed beat)."""
    if ops_per_s <= 0:
        raise ValueError(f"rate must be positive, got {ops_per_s}")
    return stagger(1.0 / ops_per_s, gen, seed)


@dataclass(frozen=True)
class _Mix(Generator):
    gens: tuple[Generator, ...]
    rand: Rand

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        gens = self.gens
        rand = self.rand
        pending: Pending | None = None
        while gens:
            i, rand = rand.randint(0, len(gens) - 1)
            result, nxt = gens[i].op(ctx)
            if result is None:
                gens = gens[:i] + gens[i + 1:]
                continue
            new = _Mix(gens[:i] + (nxt,) + gens[i + 1:], rand)
            if isinstance(result, Op):
                return result, new
            # That one is pending; a mix is pending only if every member is.
            pending = _soonest(pending, result)
            others = [j for j in range(len(gens)) if j != i]
            for j in others:
                other, other_next = gens[j].op(ctx)
                if isinstance(other, Op):
                    return other, _Mix(new.gens[:j] + (other_next,) + new.gens[j + 1:], rand)
                if isinstance(other, Pending):
                    pending = _soonest(pending, other)
            return pending, new
        return None, _Exhausted()

    def update(self, ctx: Context, event: Completion) -> Generator:
        return replace(self, gens=tuple(g.update(ctx, event) for g in self.gens))


def mix(gens: Sequence[Generator], seed: int | Rand = 0) -> Generator:
    """Each op from a member chosen at random; exhausted members drop out."""
    return _Mix(tuple(gens), seed if isinstance(seed, Rand) else Rand.seeded(seed))


@dataclass(frozen=True)
class _Seq(Generator):
    gens: tuple[Generator, ...]
    synchronize: bool
    waiting: bool = False  # between phases: waiting for outstanding ops to finish

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        gens = self.gens
        waiting = self.waiting
        while gens:
            if waiting:
                if not ctx.all_free():
                    return Pending(), replace(self, gens=gens, waiting=True)
                waiting = False
            result, nxt = gens[0].op(ctx)
            if result is not None:
                return result, replace(self, gens=(nxt,) + gens[1:], waiting=False)
            gens = gens[1:]
            waiting = self.synchronize
        return None, _Exhausted()

    def update(self, ctx: Context, event: Completion) -> Generator:
        if not self.gens:
            return self
        return replace(self, gens=(self.gens[0].update(ctx, event),) + self.gens[1:])


def seq(*gens: Generator | Op) -> Generator:
    """One generator after another (an :class:`Op` counts as :func:`once`)."""
    return _Seq(tuple(once(g) if isinstance(g, Op) else g for g in gens), synchronize=False)


def phases(*gens: Generator | Op) -> Generator:
    """Like :func:`seq`, but each phase starts only once every op of the previous one completed."""
    return _Seq(tuple(once(g) if isinstance(g, Op) else g for g in gens), synchronize=True)


@dataclass(frozen=True)
class _Sleep(Generator):
    duration_ns: int
    until_ns: int | None = None

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        until = self.until_ns if self.until_ns is not None else ctx.time_ns + self.duration_ns
        if ctx.time_ns >= until:
            return None, _Exhausted()
        return Pending(until), replace(self, until_ns=until)


def sleep(seconds: float) -> Generator:
    """Emit nothing for ``seconds`` after first asked, then end (use inside :func:`seq`)."""
    return _Sleep(int(seconds * 1e9))


@dataclass(frozen=True)
class _Any(Generator):
    gens: tuple[Generator, ...]

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        gens = list(self.gens)
        pending: Pending | None = None
        alive: list[Generator] = []
        found: Op | None = None
        for gen in gens:
            if found is not None:
                alive.append(gen)
                continue
            result, nxt = gen.op(ctx)
            if result is None:
                continue
            alive.append(nxt)
            if isinstance(result, Op):
                found = result
            else:
                pending = _soonest(pending, result)
        if found is not None:
            return found, _Any(tuple(alive))
        if not alive:
            return None, _Exhausted()
        return pending, _Any(tuple(alive))

    def update(self, ctx: Context, event: Completion) -> Generator:
        return _Any(tuple(g.update(ctx, event) for g in self.gens))


def any_of(*gens: Generator) -> Generator:
    """Several generators side by side: the first with an op now wins; ends when all have."""
    return _Any(tuple(gens))


@dataclass(frozen=True)
class _On(Generator):
    allowed: Callable[[Process], bool]
    gen: Generator

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        result, nxt = self.gen.op(ctx.restrict(self.allowed))
        return result, replace(self, gen=nxt)

    def update(self, ctx: Context, event: Completion) -> Generator:
        if not self.allowed(event.process):
            return self
        return replace(self, gen=self.gen.update(ctx.restrict(self.allowed), event))


def _is_nemesis(p: Process) -> bool:
    return p == NEMESIS


def clients(gen: Generator) -> Generator:
    """Give ``gen`` only the client processes."""
    return _On(is_client, gen)


def nemesis(gen: Generator) -> Generator:
    """Give ``gen`` only the nemesis process."""
    return _On(_is_nemesis, gen)


@dataclass(frozen=True)
class _Group:
    threads: frozenset[int]
    key: Any
    gen: Generator


@dataclass(frozen=True)
class _ConcurrentKeys(Generator):
    group_size: int
    key_fn: Callable[[int], Any]
    gen_fn: Callable[[Any], Generator]
    keys_max: int | None
    next_key: int = 0
    groups: tuple[_Group, ...] | None = None

    def _start(self, ctx: Context) -> _ConcurrentKeys:
        if self.groups is not None:
            return self
        threads = sorted(ctx.thread(p) for p in ctx.processes if is_client(p))
        if len(threads) < self.group_size:
            raise ValueError(
                f"concurrent_keys: groups of {self.group_size} processes need at least that many "
                f"client threads, got {len(threads)}"
            )
        # Whole groups only: leftover threads would idle, as in Jepsen.
        count = len(threads) // self.group_size
        groups = []
        state = self
        for g in range(count):
            members = frozenset(threads[g * self.group_size:(g + 1) * self.group_size])
            key, state = state._take_key()
            groups.append(_Group(members, key, _Exhausted() if key is None else self.gen_fn(key)))
        return replace(state, groups=tuple(groups))

    def _take_key(self) -> tuple[Any, _ConcurrentKeys]:
        if self.keys_max is not None and self.next_key >= self.keys_max:
            return None, self
        return self.key_fn(self.next_key), replace(self, next_key=self.next_key + 1)

    def op(self, ctx: Context) -> tuple[Result, Generator]:
        state = self._start(ctx)
        assert state.groups is not None
        groups = list(state.groups)
        pending: Pending | None = None
        for i, group in enumerate(groups):
            sub = ctx.restrict(lambda p, t=group.threads: is_client(p) and ctx.thread(p) in t)
            while group.key is not None:
                result, nxt = group.gen.op(sub)
                if isinstance(result, Op):
                    groups[i] = replace(group, gen=nxt)
                    op = replace(result, key=group.key)
                    return op, replace(state, groups=tuple(groups))
                if isinstance(result, Pending):
                    groups[i] = replace(group, gen=nxt)
                    pending = _soonest(pending, result)
                    break
                # This key is done: move the group on to a fresh key, once its ops completed.
                if not sub.all_free():
                    pending = _soonest(pending, Pending())
                    groups[i] = group
                    break
                key, state = state._take_key()
                group = _Group(group.threads, key, _Exhausted() if key is None else self.gen_fn(key))
                groups[i] = group
        state = replace(state, groups=tuple(groups))
        if all(g.key is None for g in groups):
            return None, _Exhausted()
        return pending or Pending(), state

    def update(self, ctx: Context, event: Completion) -> Generator:
        if self.groups is None or not is_client(event.process):
            return self
        thread = ctx.thread(event.process)
        groups = tuple(
            replace(g, gen=g.gen.update(ctx, event)) if thread in g.threads else g for g in self.groups
        )
        return replace(self, groups=groups)


def concurrent_keys(
    group_size: int,
    gen_fn: Callable[[Any], Generator],
    *,
    key_fn: Callable[[int], Any] = lambda i: f"k{i}",
    keys_max: int | None = None,
) -> Generator:
    """Independent keys: client threads in groups of ``group_size``; each group runs
    ``gen_fn(key)`` on its own key (ops get ``key`` set) and takes the next key (``key_fn(i)``,
    i = 0, 1, ...) when that generator ends, until ``keys_max`` keys were used."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return _ConcurrentKeys(group_size, key_fn, gen_fn, keys_max)


# --- stepping without IO (tests, dry runs) -----------------------------------------------------


@dataclass
class _SimProcess:
    busy_until: int = 0
    op: Op | None = None


def drain(
    gen: Generator,
    *,
    concurrency: int = 2,
    nemesis_process: bool = True,
    op_duration_ns: int = 1_000_000,
    time_limit_ns: int = 10**12,
    ops_max: int = 100_000,
    outcome: Callable[[Op], str] = lambda op: "ok",
) -> list[tuple[int, Op]]:
    """Run ``gen`` against an imaginary system where every op takes ``op_duration_ns`` and ends
    with ``outcome(op)``; returns ``(time_ns, op)`` for every op emitted. No IO, no real time:
    this is how the tests (and ``--dry-run``) see what a generator would do."""
    now = 0
    cursor = 0
    processes: dict[Process, _SimProcess] = {p: _SimProcess() for p in range(concurrency)}
    if nemesis_process:
        processes[NEMESIS] = _SimProcess()
    emitted: list[tuple[int, Op]] = []
    while now <= time_limit_ns and len(emitted) < ops_max:
        # Complete what is due, in time order.
        for p, sim in sorted(processes.items(), key=lambda kv: (kv[1].busy_until, _process_order(kv[0]))):
            if sim.op is not None and sim.busy_until <= now:
                op = sim.op
                sim.op = None
                kind = outcome(op)
                ctx = _ctx(now, processes, concurrency, cursor)
                gen = gen.update(ctx, Completion(p, kind, op, now))
                if kind == "info" and is_client(p):
                    processes.pop(p)
                    processes[p + concurrency] = _SimProcess()
        ctx = _ctx(now, processes, concurrency, cursor)
        result, gen = gen.op(ctx)
        if result is None:
            if all(s.op is None for s in processes.values()):
                break
            now = min(s.busy_until for s in processes.values() if s.op is not None)
            continue
        if isinstance(result, Op):
            assert result.process in ctx.free, f"{result} went to a busy or unknown process"
            processes[result.process] = _SimProcess(now + op_duration_ns, result)
            cursor = ctx.advance(result.process).cursor
            emitted.append((now, result))
            continue
        wake = [s.busy_until for s in processes.values() if s.op is not None]
        if result.until_ns is not None:
            wake.append(result.until_ns)
        if not wake:
            raise RuntimeError(f"generator is pending forever with every process idle at t={now}")
        now = max(now + 1, min(wake))
    return emitted


def _ctx(now: int, processes: dict[Process, _SimProcess], concurrency: int, cursor: int = 0) -> Context:
    return Context(
        now,
        frozenset(p for p, s in processes.items() if s.op is None),
        frozenset(processes),
        concurrency,
        cursor,
    )
