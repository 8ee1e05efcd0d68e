"""Linearizability checking: Wing & Gong's search with Lowe's just-in-time linearization,
memoised on (linearized set, state), applied per partition (P-compositionality).

Theory of operation
-------------------
A history is *linearizable* with respect to a model when every operation can be given a single
instant (its linearization point) between its call and its return, such that applying the
operations in the order of those instants to the model, one after another, gives every
operation the output it was observed to have (Herlihy & Wing).

**Entries.** Each operation contributes a *call entry* at its call time and a *return entry* at
its return time; all entries are sorted by time into one doubly linked list, calls before
returns at equal times (touching operations are concurrent). The list is held in flat integer
arrays ``nxt``/``prv`` with entry 0 as a circular sentinel, so removing an operation ("lifting"
it) and putting it back are four array writes each, and a removed entry remembers its
neighbours (dancing links).

**Search** (Wing & Gong, with Lowe's refinement). Walk the list from the front. At a call
entry, try to linearize that operation *now*: step the model with it; if the step is allowed and
the pair (set of linearized operations, new state) has not been seen before, push the entry and
the old state on a stack, lift the operation out of the list, and restart from the front. At a
return entry, the operation it returns cannot be delayed any further and none of the calls
before it worked: undo the most recent linearization (pop, put the operation back, restore the
state) and try the next call after it. The history is linearizable when no return entry is left
in the list, and not linearizable when a return entry is reached with nothing left to undo.

Only call entries *before the first return entry* are ever tried (Lowe's just-in-time
linearization), which keeps the branching to the operations that are actually concurrent.

**Memoisation.** Two search states that have linearized the same set of operations and reached
equal model states have the same future, so the second is pruned. The set is a Python ``int``
used as a bitset over the partition's operations; model states are interned to small ints, and
the key ``(bitset, state number)`` goes into a ``set``. Each entry also remembers, per state
number, the state number its operation leads to, so the model's ``step`` runs once per
(operation, state) pair however often the search comes back to it.

**Incomplete operations** (``info``, or never completed) have an infinite return time, so
they have a call entry and no return entry: nothing ever forces them, the search may linearize
them at any point after their call, and once every completed operation is linearized the ones
still listed are taken never to have happened. Models accept any output for them (see
:mod:`harness.checker.models`).

**Symmetry.** Two operations with equal input and output, the first called and returning no
later than the second, can always be linearized in that order (swapping them in any
linearization leaves it valid), so the second is only tried once the first is linearized. Jepsen
histories have many such twins (timed-out writes of the same value, reads of the same value),
and without this rule the search would try every subset of them.

**P-compositionality** (Horn & Kroening): linearizability is local, so a history over
independent objects is linearizable iff the sub-history of each object is. Models split a
history with ``partition``; each partition is searched on its own, smallest first, within a
share of the time budget. A partition that is not linearizable makes the whole history not
linearizable, even if another partition ran out of time.

**Evidence.** While searching, the deepest stack seen is kept: it is the longest partial
linearization found, and the operation whose return entry stopped it is the one that could not
be linearized after it. Both are reported for a failing partition and drawn by
:mod:`harness.checker.visualize`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Literal

from harness.checker.history import RETURN_NEVER, History, Operation
from harness.checker.limits import DEADLINE_CHECK_MASK
from harness.checker.models import Model, get_model

__all__ = ["CheckResult", "PartitionResult", "Verdict", "check", "check_operations"]

Verdict = bool | Literal["unknown"]


@dataclass
class PartitionResult:
    """The outcome for one partition (one key, or one group of keys, or the whole history)."""

    label: str
    valid: Verdict
    operations: list[Operation]
    elapsed_s: float
    cause: str | None = None
    #: Positions in ``operations``: the full linearization when valid, else the longest partial one.
    linearization: list[int] = field(default_factory=list)
    #: Position in ``operations`` of the operation that could not be linearized (invalid only).
    failing_op: int | None = None
    #: Model states after each operation of ``linearization`` (filled on demand by :meth:`states`).
    _states: list[Any] | None = field(default=None, repr=False)

    def states(self, model: Model) -> list[Any]:
        """The model state after each operation of ``linearization``, starting with ``init()``."""
        if self._states is None:
            state = model.init()
            states = [state]
            for i in self.linearization:
                op = self.operations[i]
                _, state = model.step(state, op.input, op.output)
                states.append(state)
            self._states = states
        return self._states

    def describe_failure(self, model: Model) -> str | None:
        """One line naming the operation that could not be linearized, or None."""
        if self.failing_op is None:
            return None
        op = self.operations[self.failing_op]
        return f"process {op.process}: {model.describe_op(op.input, op.output)} (op #{op.id})"


@dataclass
class CheckResult:
    """The verdict on a whole history: ``valid`` is True, False or ``"unknown"``."""

    valid: Verdict
    cause: str | None
    partitions: list[PartitionResult]
    elapsed_s: float
    ops_count: int
    model: Model

    @property
    def failing_partitions(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.valid is False]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no operations, only counts and the evidence in words)."""
        return {
            "valid": self.valid,
            "cause": self.cause,
            "model": self.model.name,
            "ops": self.ops_count,
            "elapsed_s": round(self.elapsed_s, 6),
            "partitions": len(self.partitions),
            "failing": [
                {
                    "partition": p.label,
                    "ops": len(p.operations),
                    "longest_linearization": len(p.linearization),
                    "failing_op": p.describe_failure(self.model),
                }
                for p in self.failing_partitions
            ],
        }


def _search(
    model: Model, ops: Sequence[Operation], deadline: float
) -> tuple[Verdict, list[int], int | None]:
    """Search one partition. Returns (verdict, linearization or longest partial one, failing op)."""
    n = len(ops)
    if n == 0:
        return True, [], None
    events = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        if op.ret != RETURN_NEVER:
            events.append((op.ret, 1, i))
    events.sort()
    size = len(events)
    # One circular list over entries 1..size (positions in time order) with entry 0 as its
    # sentinel, held in flat arrays. Operations of unknown outcome have a call entry only.
    nxt = list(range(1, size + 2))
    nxt[size] = 0
    prv = list(range(-1, size))
    prv[0] = size
    # match: call entry of a completed op -> its return entry; call entry of an op of unknown
    # outcome -> -1; return entry -> 0.
    match = [0] * (size + 1)
    opof = [0] * (size + 1)
    call_entry = [0] * n
    for pos, (_, kind, i) in enumerate(events, start=1):
        opof[pos] = i
        if kind == 0:
            call_entry[i] = pos
            match[pos] = -1
        else:
            match[call_entry[i]] = pos

    inputs = [op.input for op in ops]
    outputs = [op.output for op in ops]
    bits = [1 << i for i in range(n)]
    # Symmetry: of two operations with equal input and output whose intervals are ordered the
    # same way at both ends, the earlier may always be linearized first (swapping them in any
    # linearization keeps it valid), so the later one waits until the earlier is linearized.
    needs = [0] * (size + 1)
    for later, earlier in _interchangeable(ops):
        needs[call_entry[later]] = bits[earlier]
    step = model.step
    # States are interned to small ints, and each entry keeps a table from state number to the
    # state number after its operation (-1: not allowed), so the model runs once per
    # (operation, state) pair and the hot loop only does list and dict lookups.
    states: list[Any] = []
    state_ids: dict[Any, int] = {}
    tables: list[dict[int, int]] = [{} for _ in range(size + 1)]

    def transition(table: dict[int, int], i: int, sid: int) -> int:
        ok, new_state = step(states[sid], inputs[i], outputs[i])
        if ok:
            new_sid = state_ids.get(new_state)
            if new_sid is None:
                new_sid = state_ids[new_state] = len(states)
                states.append(new_state)
        else:
            new_sid = -1
        table[sid] = new_sid
        return new_sid

    initial = model.init()
    state_ids[initial] = 0
    states.append(initial)

    seen: set[tuple[int, int]] = set()
    seen_add = seen.add
    stack: list[tuple[int, int, int]] = []  # (entry linearized, state number before, set before)
    push = stack.append
    pop = stack.pop
    sid = 0
    linearized = 0
    best: list[int] = []
    best_depth = -1
    low = 0  # lowest stack depth since ``best`` was last copied from the stack
    failing: int | None = None
    moves = 0
    mask = DEADLINE_CHECK_MASK
    entry = nxt[0]
    # The walk reaches the sentinel only when no return entry is left: every completed operation
    # is linearized, and the operations of unknown outcome still listed never took effect.
    while entry:
        ret = match[entry]
        if ret:
            need = needs[entry]
            if need and not linearized & need:
                entry = nxt[entry]
                continue
            table = tables[entry]
            new_sid = table.get(sid)
            if new_sid is None:
                new_sid = transition(table, opof[entry], sid)
            if new_sid >= 0:
                new_linearized = linearized | bits[opof[entry]]
                key = (new_linearized, new_sid)
                if key not in seen:
                    seen_add(key)
                    push((entry, sid, linearized))
                    sid = new_sid
                    linearized = new_linearized
                    # Lift the call entry, and the return entry if there is one, out of the list.
                    p = prv[entry]
                    q = nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    if ret > 0:
                        p = prv[ret]
                        q = nxt[ret]
                        nxt[p] = q
                        prv[q] = p
                    moves += 1
                    if not moves & mask and perf_counter() > deadline:
                        return "unknown", best, failing
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            # A return entry: its operation cannot wait any longer and no call before it fits.
            depth = len(stack)
            if depth > best_depth:
                # The stack below ``low`` has not changed since the last copy: copy the rest.
                del best[low:]
                best.extend([opof[frame[0]] for frame in stack[low:]])
                best_depth = low = depth
                failing = opof[entry]
            if not depth:
                return False, best, failing
            moves += 1
            if not moves & mask and perf_counter() > deadline:
                return "unknown", best, failing
            entry, sid, linearized = pop()
            if depth <= low:
                low = depth - 1
            ret = match[entry]
            # Put the return entry back, then the call entry (reverse order of lifting).
            if ret > 0:
                nxt[prv[ret]] = ret
                prv[nxt[ret]] = ret
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            entry = nxt[entry]
    return True, [opof[frame[0]] for frame in stack], None


def _interchangeable(ops: Sequence[Operation]) -> list[tuple[int, int]]:
    """Pairs (later, earlier) of equal operations where ``earlier`` can always go first.

    Within a group of operations with equal input and output, sorted by call time, each one is
    paired with the previous one when that one also returns no later. Sorting the positions of
    such a chain in any linearization keeps every operation inside its interval (there are as
    many positions before each return and after each call as before), and the model sees the same
    sequence, so searching only chain-ordered linearizations loses nothing.
    """
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, op in enumerate(ops):
        try:
            groups.setdefault((op.input, op.output), []).append(i)
        except TypeError:  # an unhashable value: no symmetry is assumed for it
            continue
    pairs = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda i: (ops[i].call, ops[i].ret))
        for earlier, later in zip(members, members[1:]):
            if ops[earlier].ret <= ops[later].ret:
                pairs.append((later, earlier))
    return pairs


def _label(ops: Sequence[Operation]) -> str:
    keys = []
    seen: set[Any] = set()
    for op in ops:
        k = op.input.key
        if k not in seen:
            seen.add(k)
            keys.append(k)
        if len(keys) > 3:
            break
    if keys == [None]:
        return "all"
    shown = ",".join(str(k) for k in keys[:3]) + (",..." if len(keys) > 3 else "")
    return f"key={shown}" if len(keys) == 1 else f"keys={shown}"


def check_operations(
    model: Model | str, operations: Iterable[Operation], timeout_s: float | None = None
) -> CheckResult:
    """Check a list of operations against ``model`` within ``timeout_s`` seconds (None: no limit)."""
    started = perf_counter()
    model = get_model(model)
    ops = list(operations)
    prepared = [p for p in (model.prepare(op) for op in ops) if p is not None]
    partitions = sorted((part for part in model.partition(prepared) if part), key=len)
    budget_end = math.inf if timeout_s is None else started + timeout_s
    results: list[PartitionResult] = []
    for index, part in enumerate(partitions):
        now = perf_counter()
        remaining = budget_end - now
        # Each partition gets an equal share of what is left; small ones (first) rarely use it,
        # so the large ones at the end get the rest.
        deadline = now + remaining / (len(partitions) - index) if remaining != math.inf else math.inf
        verdict, linearization, failing = _search(model, part, deadline)
        elapsed = perf_counter() - now
        label = _label(part)
        result = PartitionResult(
            label=label,
            valid=verdict,
            operations=part,
            elapsed_s=elapsed,
            linearization=linearization,
            failing_op=failing if verdict is False else None,
        )
        if verdict is False:
            result.cause = (
                f"not linearizable in partition {label}: {result.describe_failure(model)} cannot be "
                f"linearized (longest partial linearization: {len(linearization)} of {len(part)} ops)"
            )
        elif verdict == "unknown":
            result.cause = f"timed out after {elapsed:.1f} s in partition {label} ({len(part)} ops)"
        results.append(result)
    elapsed_total = perf_counter() - started
    failed = [r for r in results if r.valid is False]
    unknown = [r for r in results if r.valid == "unknown"]
    verdict_all: Verdict
    if failed:
        verdict_all, cause = False, failed[0].cause
        if len(failed) > 1:
            cause = f"{cause} (and {len(failed) - 1} more partitions)"
    elif unknown:
        verdict_all, cause = "unknown", unknown[0].cause
        if timeout_s is not None:
            cause = f"{cause}; budget {timeout_s:g} s"
    else:
        verdict_all, cause = True, None
    return CheckResult(
        valid=verdict_all,
        cause=cause,
        partitions=results,
        elapsed_s=elapsed_total,
        ops_count=len(ops),
        model=model,
    )


def check(
    model: Model | str, history: History | Iterable[Operation], timeout_s: float | None = None
) -> CheckResult:
    """Check ``history`` (a :class:`History` or operations) against ``model`` (a model or its name)."""
    operations = history.operations if isinstance(history, History) else history
    return check_operations(model, operations, timeout_s)
