"""Sequential specifications the linearizability checker tests histories against.

Theory of operation
-------------------
A model is a deterministic state machine described by pure functions:

``init() -> state``
    The state before any operation. States must be hashable and compare by value: the search
    memoises (linearized set, state) pairs.
``step(state, input, output) -> (ok, new_state)``
    Apply one operation. ``ok`` is False when the operation, with the output it was observed to
    have, cannot take effect in ``state`` (a read that saw another value, a successful
    compare-and-set whose expected value is not the current one).
``partition(ops) -> list[list[Operation]]``
    Split a history into independent sub-histories (P-compositionality: a history is
    linearizable iff each partition is). By default every key is its own object; a history
    without keys is one partition.
``prepare(op) -> Operation | None``
    Decide what an operation means before the search: return None to drop it (an operation that
    definitely did not happen, or a read whose result is unknown, constrains nothing).
``describe_op(input, output)`` / ``describe_state(state)``
    Short human text for reports and the HTML timeline.

Unknown outcomes
~~~~~~~~~~~~~~~~
An operation with status ``info`` (a timeout, a crash, or never completed) has an unknown
output and an infinite return time. Every model's ``step`` returns ``ok=True`` for such an
operation in *every* state: if it took effect, it did so with whatever result the state gave
(an unknown compare-and-set swaps if the expected value is there and does nothing otherwise).
That it may never have taken effect is the search's business: it may leave such an operation
out (see :mod:`harness.checker.linearizability`).

The models
~~~~~~~~~~
``register``
    read/write; starts as nil; a nil read means "never written".
``cas-register-etcd`` (alias ``cas-register``)
    read/write/cas; starts as nil (absent); a nil read means absent; a ``fail`` cas is a
    definite failed compare (the value was not the expected one at its linearization point);
    ``fail`` reads and writes did not happen.
``cas-register-knossos``
    read/write/cas; starts as 0; a nil read matches any value; ``fail`` operations did not
    happen and are dropped.
``kv``
    get/put/append/delete/cas, one string per key; each key starts as ``""``, and a missing key
    reads as ``""`` (a nil read and an empty read are the same observation; delete makes a key
    empty). ``read``/``write`` are synonyms of ``get``/``put``. ``fail`` operations did not
    happen, cas included (a client cannot tell a failed compare from a refused request).
``multi-register``
    transactions ``f="txn"`` whose value is a sequence of ``(f, key, value)`` micro-operations
    (``read``/``write``), plus single-key ``read``/``write``; registers start as nil.
    Partitioned into groups of keys that no transaction spans.
``mutex``
    ``acquire``/``release`` of a lock; acquiring a held lock or releasing a free one is
    impossible.
``set``
    ``add`` an element; ``read`` returns the whole set.

Every model except ``multi-register`` takes each key as its own object (a history without keys
is one object).

Initial states
~~~~~~~~~~~~~~
:func:`with_initial` gives a model its initial state: a value for every register (``register``,
the cas registers, ``kv``, ``multi-register``), or a mapping key -> value (registers not named
keep the model's default); ``true``/``false`` for ``mutex`` (held or free); a collection for
``set``. A per-key initial state is resolved when an operation first touches the key (the state
before that is the marker :data:`KEY_INITIAL`), so partitions stay independent.

Inference
~~~~~~~~~
:func:`infer_model` picks the model from the operations when none is named: ``acquire`` or
``release`` -> ``mutex``; ``txn`` -> ``multi-register``; only ``add`` and ``read`` ->
``set``; any of ``get``/``put``/``append``/``delete`` -> ``kv``; otherwise (``read``/``write``/
``cas``) the format's register (etcd logs: ``cas-register-etcd``; EDN: ``cas-register-knossos``;
exapyte JSONL and kv logs: ``kv``).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.checker.history import Call, Operation, Output

__all__ = [
    "KEY_INITIAL",
    "MODELS",
    "CasRegister",
    "Kv",
    "Model",
    "MultiRegister",
    "Mutex",
    "Register",
    "SetModel",
    "get_model",
    "infer_model",
    "model_names",
    "with_initial",
]

State = Hashable

_READS = frozenset({"read", "get"})
_WRITES = frozenset({"write", "put"})


class _KeyInitial:
    """The state of a register whose initial value depends on its key, before it is touched."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEY_INITIAL"


#: The state :meth:`Model.init` returns when the initial value is given per key.
KEY_INITIAL = _KeyInitial()


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    return value


def _show(value: Any) -> str:
    if value is KEY_INITIAL:
        return "initial"
    if value is None:
        return "nil"
    if isinstance(value, str):
        return repr(value) if value == "" or " " in value else value
    if isinstance(value, tuple):
        return "[" + " ".join(_show(v) for v in value) + "]"
    if isinstance(value, frozenset):
        return "#{" + " ".join(sorted(_show(v) for v in value)) + "}"
    return str(value)


class Model(abc.ABC):
    """Base of every model: one object per key, drop ``fail`` ops and reads with unknown results."""

    name: str = "model"

    @abc.abstractmethod
    def init(self) -> State:
        """The state before any operation."""

    @abc.abstractmethod
    def step(self, state: State, input: Call, output: Output) -> tuple[bool, State]:
        """Whether ``input`` returning ``output`` is possible in ``state``, and the next state."""

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        """Operations on different keys touch different objects (all keys None: one object)."""
        return _by_key(ops)

    def prepare(self, op: Operation) -> Operation | None:
        status = op.output.status
        if status == "fail":
            return None
        if status == "info" and op.input.f in _READS:
            return None
        return op

    def describe_op(self, input: Call, output: Output) -> str:
        key = "" if input.key is None else f"[{_show(input.key)}]"
        if input.f in _READS:
            shown = "?" if output.status == "info" else _show(output.value)
            text = f"{input.f}{key}() -> {shown}"
        elif input.value is None:
            text = f"{input.f}{key}()"
        else:
            text = f"{input.f}{key}({_show(input.value)})"
        if output.status != "ok":
            text += f" :{output.status}"
        return text

    def describe_state(self, state: State) -> str:
        return _show(state)


def _by_key(ops: Sequence[Operation]) -> list[list[Operation]]:
    groups: dict[Any, list[Operation]] = {}
    for op in ops:
        groups.setdefault(op.input.key, []).append(op)
    return list(groups.values())


# --- registers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Register(Model):
    """A read/write register (one per key)."""

    name: str = "register"
    initial: Any = None
    nil_read_matches_any: bool = False
    #: Per-key initial values, as sorted (key, value) pairs; keys not named start at ``initial``.
    initial_by_key: tuple[tuple[Any, Any], ...] = ()
    _initial_map: dict[Any, Any] = field(init=False, repr=False, compare=False, hash=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_initial_map", dict(self.initial_by_key))

    def initial_of(self, key: Any) -> Any:
        return self._initial_map.get(key, self.initial)

    def init(self) -> State:
        return KEY_INITIAL if self.initial_by_key else self.initial

    def step(self, state: State, input: Call, output: Output) -> tuple[bool, State]:
        if state is KEY_INITIAL:
            state = self.initial_of(input.key)
        f = input.f
        if f in _WRITES:
            return True, input.value
        if f in _READS:
            if output.status != "ok":
                return True, state
            value = output.value
            if value is None and self.nil_read_matches_any:
                return True, state
            return value == state, state
        raise ValueError(f"{self.name}: unknown operation {f!r}")


@dataclass(frozen=True)
class CasRegister(Register):
    """A register with compare-and-set; ``input.value`` of a cas is ``(expected, new)``.

    ``fail_cas_is_mismatch`` selects etcd's meaning of a failed cas: a compare that was
    linearized and did not match. Without it a failed cas did not happen and is dropped.
    """

    name: str = "cas-register-etcd"
    fail_cas_is_mismatch: bool = True

    def prepare(self, op: Operation) -> Operation | None:
        if op.output.status == "fail" and op.input.f == "cas" and self.fail_cas_is_mismatch:
            return op
        return super().prepare(op)

    def step(self, state: State, input: Call, output: Output) -> tuple[bool, State]:
        if state is KEY_INITIAL:
            state = self.initial_of(input.key)
        f = input.f
        if f != "cas":
            return Register.step(self, state, input, output)
        expected, new = input.value
        status = output.status
        matched = state == expected and state is not None
        if status == "ok":
            return matched, new
        if status == "fail":
            return not matched, state
        return True, (new if matched else state)

    def describe_op(self, input: Call, output: Output) -> str:
        if input.f != "cas":
            return super().describe_op(input, output)
        expected, new = input.value
        key = "" if input.key is None else f"[{_show(input.key)}]"
        text = f"cas{key}({_show(expected)} -> {_show(new)})"
        if output.status == "fail":
            return text + " :fail (no match)" if self.fail_cas_is_mismatch else text + " :fail"
        if output.status == "info":
            return text + " :info"
        return text


# --- key-value --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kv(Model):
    """Many independent string registers; the state seen by ``step`` is one key's value."""

    name: str = "kv"
    initial: str = ""
    fail_cas_is_mismatch: bool = False
    #: Per-key initial values, as sorted (key, value) pairs; keys not named start at ``initial``.
    initial_by_key: tuple[tuple[Any, Any], ...] = ()
    _initial_map: dict[Any, Any] = field(init=False, repr=False, compare=False, hash=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_initial_map", dict(self.initial_by_key))

    def init(self) -> State:
        return KEY_INITIAL if self.initial_by_key else self.initial

    def prepare(self, op: Operation) -> Operation | None:
        if op.output.status == "fail" and op.input.f == "cas" and self.fail_cas_is_mismatch:
            return op
        return super().prepare(op)

    def step(self, state: State, input: Call, output: Output) -> tuple[bool, State]:
        if state is KEY_INITIAL:
            state = self._initial_map.get(input.key, self.initial)
        f = input.f
        if f in _READS:
            if output.status != "ok":
                return True, state
            value = output.value
            return (self.initial if value is None else value) == state, state
        if f in _WRITES:
            value = input.value
            return True, self.initial if value is None else value
        if f == "append":
            value = input.value
            if not isinstance(value, str) or not isinstance(state, str):
                raise ValueError(f"kv: append needs strings, got {value!r} onto {state!r}")
            return True, state + value
        if f == "delete":
            return True, self.initial
        if f == "cas":
            expected, new = input.value
            matched = state == (self.initial if expected is None else expected)
            status = output.status
            if status == "ok":
                return matched, new
            if status == "fail":
                return not matched, state
            return True, (new if matched else state)
        raise ValueError(f"kv: unknown operation {f!r}")


# --- multi-register ---------------------------------------------------------------------------


def _micro_ops(input: Call, output: Output) -> tuple[tuple[str, Any, Any], ...]:
    """The micro-operations of a transaction, with read results taken from the completion."""
    if input.f != "txn":
        value = output.value if input.f in _READS else input.value
        return ((input.f, input.key, value),)
    if output.status == "ok" and output.value is not None:
        return tuple(output.value)
    return tuple(input.value)


@dataclass(frozen=True)
class MultiRegister(Model):
    """Registers updated by multi-key transactions. The state is a sorted tuple of (key, value)."""

    name: str = "multi-register"
    initial: Any = None
    #: Per-key initial values, as sorted (key, value) pairs (Knossos' ``{x 0, y 0}``); keys not
    #: named start at ``initial``.
    initial_by_key: tuple[tuple[Any, Any], ...] = ()
    _initial_map: dict[Any, Any] = field(init=False, repr=False, compare=False, hash=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_initial_map", dict(self.initial_by_key))

    def init(self) -> State:
        return ()

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        # Union-find over keys: keys one transaction touches belong to the same partition.
        parent: dict[Any, Any] = {}

        def find(k: Any) -> Any:
            while parent.setdefault(k, k) != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        op_keys: list[list[Any]] = []
        for op in ops:
            keys = [m[1] for m in _micro_ops(op.input, op.output)]
            op_keys.append(keys)
            for k in keys[1:]:
                parent[find(k)] = find(keys[0])
            if keys:
                find(keys[0])
        groups: dict[Any, list[Operation]] = {}
        for op, keys in zip(ops, op_keys):
            groups.setdefault(find(keys[0]) if keys else None, []).append(op)
        return list(groups.values())

    def step(self, state: State, input: Call, output: Output) -> tuple[bool, State]:
        assert isinstance(state, tuple)
        values = dict(state)
        known = output.status == "ok"
        changed = False
        for f, key, value in _micro_ops(input, output):
            if f in _READS:
                if known and values.get(key, self._initial_map.get(key, self.initial)) != value:
                    return False, state
            elif f in _WRITES:
                values[key] = value
                changed = True
            else:
                raise ValueError(f"multi-register: unknown micro-operation {f!r}")
        if not changed:
            return True, state
        return True, tuple(sorted(values.items(), key=lambda kv: repr(kv[0])))

    def prepare(self, op: Operation) -> Operation | None:
        if op.output.status == "fail":
            return None
        if op.output.status == "info":
            micro = _micro_ops(op.input, op.output)
            if all(m[0] in _READS for m in micro):
                return None
        return op

    def describe_op(self, input: Call, output: Output) -> str:
        parts = []
        for f, key, value in _micro_ops(input, output):
            shown = "?" if f in _READS and output.status != "ok" else _show(value)
            parts.append(f"{'r' if f in _READS else 'w'} {_show(key)} {shown}")
        text = "[" + ", ".join(parts) + "]"
        return text if output.status == "ok" else text + f" :{output.status}"

    def describe_state(self, state: State) -> str:
        assert isinstance(state, tuple)
        return "{" + ", ".join(f"{_show(k)}: {_show(v)}" for k, v in state) + "}"


# --- mutex and set ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutex(Model):
    """One lock. The state is True while it is held."""

    name: str = "mutex"
    initial: bool = False  # held at the start

    def init(self) -> State:
        return self.initial

    def step(self, state: State, input: Call, output: Output) -> tuple[bool, State]:
        f = input.f
        unknown = output.status != "ok"
        if f == "acquire":
            if state:
                return unknown, state
            return True, True
        if f == "release":
            if not state:
                return unknown, state
            return True, False
        raise ValueError(f"mutex: unknown operation {f!r}")

    def describe_state(self, state: State) -> str:
        return "held" if state else "free"


@dataclass(frozen=True)
class SetModel(Model):
    """A grow-only set: ``add`` an element, ``read`` the whole set. The state is a frozenset."""

    name: str = "set"
    initial: frozenset[Any] = frozenset()

    def init(self) -> State:
        return self.initial

    def step(self, state: State, input: Call, output: Output) -> tuple[bool, State]:
        assert isinstance(state, frozenset)
        f = input.f
        if f == "add":
            return True, state | {input.value}
        if f == "read":
            if output.status != "ok":
                return True, state
            value = output.value
            seen = frozenset(() if value is None else value)
            return seen == state, state
        raise ValueError(f"set: unknown operation {f!r}")


# --- registry ---------------------------------------------------------------------------------

_ETCD = CasRegister()
MODELS: dict[str, Callable[[], Model]] = {
    "register": lambda: Register(),
    "cas-register": lambda: _ETCD,
    "cas-register-etcd": lambda: _ETCD,
    "cas-register-knossos": lambda: CasRegister(
        name="cas-register-knossos", initial=0, nil_read_matches_any=True, fail_cas_is_mismatch=False
    ),
    "kv": lambda: Kv(),
    "multi-register": lambda: MultiRegister(),
    "mutex": lambda: Mutex(),
    "set": lambda: SetModel(),
}


def model_names() -> list[str]:
    """The names :func:`get_model` accepts."""
    return list(MODELS)


def get_model(name: str | Model) -> Model:
    """The model called ``name`` (a model instance is returned as is)."""
    if isinstance(name, Model):
        return name
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}") from None


def with_initial(model: str | Model, initial: Any) -> Model:
    """``model`` (or the model called so) starting from ``initial`` (None: the model's default).

    A mapping gives per-key initial values to the register models (``register``, the cas
    registers, ``kv``, ``multi-register``); any other value is every register's initial value.
    ``mutex`` takes a boolean (held), ``set`` a collection of elements. Raises ValueError for an
    initial state the model cannot take.
    """
    model = get_model(model)
    if initial is None:
        return model
    if isinstance(model, Mutex):
        if not isinstance(initial, bool):
            raise ValueError(f"mutex: the initial state is true (held) or false (free), got {initial!r}")
        return dataclasses.replace(model, initial=initial)
    if isinstance(model, SetModel):
        if isinstance(initial, (str, bytes, Mapping)) or not isinstance(initial, Iterable):
            raise ValueError(f"set: the initial state is a collection of elements, got {initial!r}")
        return dataclasses.replace(model, initial=frozenset(_freeze(v) for v in initial))
    if isinstance(model, (Register, Kv, MultiRegister)):
        if isinstance(initial, Mapping):
            pairs = tuple(sorted(((k, _freeze(v)) for k, v in initial.items()), key=lambda kv: repr(kv[0])))
            return dataclasses.replace(model, initial_by_key=pairs)
        return dataclasses.replace(model, initial=_freeze(initial))
    raise ValueError(f"{model.name}: no initial state can be given to this model")


_MUTEX_FS = frozenset({"acquire", "release"})
_KV_FS = frozenset({"get", "put", "append", "delete"})
_FORMAT_REGISTER = {"etcd": "cas-register-etcd", "edn": "cas-register-knossos", "jsonl": "kv", "kv": "kv"}


def infer_model(operations: Iterable[Operation], fmt: str = "edn") -> tuple[str, str]:
    """The model name the operations call for, and why (see the module's theory)."""
    fs = {str(op.input.f) for op in operations}
    shown = ", ".join(sorted(fs)) or "none"
    if fs & _MUTEX_FS:
        return "mutex", f"mutex operations ({shown})"
    if "txn" in fs:
        return "multi-register", f"transactions ({shown})"
    if "add" in fs and fs <= {"add", "read"}:
        return "set", f"set operations ({shown})"
    if fs & _KV_FS:
        return "kv", f"key-value operations ({shown})"
    name = _FORMAT_REGISTER.get(fmt, "kv")
    return name, f"register operations ({shown}) in a {fmt} history"
