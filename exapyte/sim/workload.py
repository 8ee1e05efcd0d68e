"""Simulated clients, their workload and the history they record.

Theory of operation
-------------------
Each client is one Jepsen *process* with at most one operation outstanding. An operation is a
read, a write or a compare-and-set on one of a few keys (``k0``, ``k1``, ...), sent as the same
:class:`~exapyte.wire.ClientRequest` the real client sends, with a ``(client_id, seq)`` that stays
the same across retries (the replicas' sessions make retried writes exactly-once).

An attempt goes to the node the client believes leads (or a random one), and ends with:

- a result (``ok``, ``not_found``, ``cas_failed``): the operation completes ``ok`` (a failed
  compare completes ``fail``: it definitely did not apply);
- a refusal (``not_leader``, ``unavailable``, ``overloaded``): that attempt did not apply; the
  client follows the leader hint or picks another node and retries after a short backoff;
- silence until the attempt timeout: the attempt *may* have applied; the client retries.

When the operation's deadline passes, it completes ``info`` if any attempt may have applied (or
it is a cas, whose ``fail`` would mean "compare failed"), and ``fail`` if every attempt was
refused. A result that arrives for any attempt of the current operation counts, since the
session makes them all the same write.

**Sharded runs** (a :class:`~exapyte.data.router.Router` given): the client routes as
:class:`exapyte.client.Client` does. Each process caches one descriptor per shard (the real
``Router``: replaced only by a newer one); every attempt carries the cached descriptor's
configuration version and goes to the leader guess or a voter of that descriptor; a reply's
descriptor is offered to the cache; ``stale_config`` with a newer descriptor now cached sends
the request again at once by it (a *config redirect*), otherwise it is a refusal. A routing
promise is checked on every attempt and recorded in :attr:`SimClient.routing_violations`: a
request is **never routed by an older descriptor** than one the client was already given for
that shard. (The world checks the replicas' side: a request is served only by a replica at the
configuration version it was routed by.)

The :class:`History` holds the records the harness writes too (:class:`exapyte.history.Event`,
through the same writer): ``type``, ``process``, ``f``, ``key``, ``value``, ``time`` (simulated
ns), ``node``, ``consistency``, ``session``; fault events use ``process: "nemesis"``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from exapyte.data.router import Router
from exapyte.history import NEMESIS, Event, HistoryWriter
from exapyte.sim.scheduler import NS_PER_MS, Scheduler
from exapyte.wire import CasOp, ClientReply, ClientRequest, GetOp, PutOp, ReplyCode

ATTEMPT_TIMEOUT_MS = 250  # silence after which an attempt is presumed lost (it may have applied)
OP_DEADLINE_MS = 1_200  # an operation gives up (info or fail) after this long
RETRY_BACKOFF_MS = (2.0, 20.0)  # wait before retrying after a refusal

_RESULT_CODES = frozenset({ReplyCode.OK, ReplyCode.NOT_FOUND, ReplyCode.CAS_FAILED})
_REFUSAL_CODES = frozenset({ReplyCode.NOT_LEADER, ReplyCode.UNAVAILABLE, ReplyCode.OVERLOADED})


#: The consistency levels, strongest first; a read asks for one of them (writes are strong).
LEVELS: tuple[str, ...] = ("strong", "bounded_staleness", "session", "consistent_prefix", "eventual")
#: How often a read of the mixed workload asks for each level (in the order of :data:`LEVELS`).
READ_LEVEL_WEIGHTS: tuple[float, ...] = (0.4, 0.15, 0.15, 0.15, 0.15)


@dataclass(frozen=True, slots=True)
class Op:
    f: str  # "read" | "write" | "cas"
    key: str
    value: Any  # write: str; cas: [expected, new]; read: None
    level: str = "strong"  # the consistency level asked for (reads; writes are strong)

    @property
    def weak(self) -> bool:
        """A read at a level weaker than strong: any member may serve it."""
        return self.level != "strong"


class History:
    """The run's history: :class:`~exapyte.history.Event` records, written in the order they
    happened through the one writer the harness uses too (:class:`~exapyte.history.HistoryWriter`,
    kept in memory). ``on_record`` sees each record and its encoded line (the trace hash)."""

    def __init__(self, on_record: Callable[[Event, bytes], None] | None = None) -> None:
        self._writer = HistoryWriter(keep=True)
        self.records: list[Event] = self._writer.events
        self.on_record = on_record

    def add(self, event: Event) -> None:
        line = self._writer.write(event)
        if self.on_record is not None:
            self.on_record(event, line)

    def op(self, kind: str, process: int, op: Op, value: Any, time_ns: int, node: str | None, *,
           level: str = "strong", session: str | None = None, group: Any = None,
           index: tuple[int, int] | None = None, replica: str | None = None,
           error: str | None = None) -> None:
        self.add(Event(kind, process, op.f, key=op.key, value=value, time=time_ns,  # type: ignore[arg-type]
                       node=node, consistency=level, session=session, error=error, group=group,
                       index=index, replica=replica))

    def nemesis(self, kind: str, f: str, value: Any, time_ns: int) -> None:
        self.add(Event(kind, NEMESIS, f, value=value, time=time_ns))  # type: ignore[arg-type]

    def to_jsonl(self) -> str:
        return self._writer.jsonl()

    def strong_jsonl(self) -> str:
        """The history without its weak reads (the reads at a level below strong): what the
        linearizability checker judges. Writes and cas are strong whatever the mix."""
        return b"".join(
            line for event, line in zip(self._writer.events, self._writer.lines)
            if not (event.f == "read" and event.is_client and event.level != "strong")
        ).decode("utf-8")

    def client_ops(self) -> list[Event]:
        return [r for r in self.records if r.is_client]


class Workload:
    """Draws the next operation for a client: reads, unique-valued writes, cas on known values.
    With ``mixed_levels`` a read asks for a level drawn by ``weights`` (one per level of
    :data:`LEVELS`; default :data:`READ_LEVEL_WEIGHTS`); without, every op is strong."""

    def __init__(self, rng: random.Random, keys: int, *, mixed_levels: bool = True,
                 weights: Sequence[float] = READ_LEVEL_WEIGHTS) -> None:
        if len(weights) != len(LEVELS):
            raise ValueError(f"one read weight per level ({', '.join(LEVELS)}), got {len(weights)}")
        self.rng = rng
        self.mixed_levels = mixed_levels
        self.weights = tuple(weights)
        self.keys = tuple(f"k{i}" for i in range(keys))
        self.known: dict[str, list[str]] = {k: [] for k in self.keys}  # values seen per key
        self._counter = 0

    def observe(self, key: str, value: str | None) -> None:
        if value is not None:
            seen = self.known[key]
            seen.append(value)
            if len(seen) > 4:
                del seen[0]

    def next_op(self) -> Op:
        rng = self.rng
        key = self.keys[rng.randrange(len(self.keys))]
        roll = rng.random()
        if roll < 0.4:
            if not self.mixed_levels:
                return Op("read", key, None)
            return Op("read", key, None, rng.choices(LEVELS, self.weights)[0])
        self._counter += 1
        new = f"v{self._counter}"
        seen = self.known[key]
        if roll < 0.7 or not seen:
            return Op("write", key, new)
        return Op("cas", key, [seen[rng.randrange(len(seen))], new])


def op_request(
    client_id: str, seq: int, op: Op, group: str = "default", config_version: int = 0,
    session: tuple[int, int] = (0, 0), origin: str = "",
) -> ClientRequest:
    if op.f == "read":
        body: Any = GetOp(op.key)
    elif op.f == "write":
        body = PutOp(op.key, op.value.encode())
    else:
        body = CasOp(op.key, op.value[0].encode(), op.value[1].encode())
    term, index = session
    return ClientRequest(client_id, seq, body, consistency=op.level, session_index=index,
                         session_term=term, group=group, config_version=config_version,
                         origin=origin)


class SimClient:
    """One process of the workload; see the module docstring."""

    def __init__(
        self,
        process: int,
        scheduler: Scheduler,
        rng: random.Random,
        nodes: tuple[str, ...],
        history: History,
        send: Callable[[str, str, Any], None],
        on_done: Callable[[SimClient], None],
        *,
        deadline_ms: float = OP_DEADLINE_MS,
        attempt_timeout_ms: float = ATTEMPT_TIMEOUT_MS,
        route: Callable[[str], tuple[str, tuple[str, ...]]] | None = None,
        router: Router | None = None,
    ) -> None:
        self.process = process
        # sharded runs: descriptors cached per shard (module docstring); route is then unused
        self.router = router
        self.seen_versions: dict[str, int] = {}  # shard -> newest descriptor version given
        self.attempt_versions: dict[int, int] = {}  # attempt -> the version it was routed by
        self.routing_violations: list[str] = []
        self.config_redirects = 0
        # key -> (its group, the group's members); one group on every node by default
        self.route = route or (lambda _key: ("default", nodes))
        self.group = "default"
        self.members = nodes
        self.leader_guesses: dict[str, str | None] = {}
        self.endpoint = f"c{process}"
        self.client_id = f"sim-client-{process}"
        self.origin = ""  # the client's region, when the world places it in one
        # Where a weak read goes first (members -> one of them; None: any, at random): a world
        # that knows distances sends it to the nearest replica, as exapyte.client does.
        self.prefer: Callable[[Sequence[str]], str] | None = None
        self.sched = scheduler
        self.rng = rng
        self.nodes = nodes
        self.history = history
        self.send = send
        self.on_done = on_done
        self.deadline_ns = int(deadline_ms * NS_PER_MS)
        self.attempt_timeout_ns = int(attempt_timeout_ms * NS_PER_MS)  # WAN clients wait longer
        self.seq = 0
        self.op: Op | None = None
        self.attempt = 0
        self.uncertain = False
        self.last_refusal: str | None = None  # the code of the current op's last refusal
        self.op_deadline_ns = 0
        self.last_node: str | None = None
        self.result: tuple[str, Any] | None = None  # (type, value) of the last completed op
        self.last_op: Op | None = None
        self.acked: list[tuple[str, int, Op]] = []  # writes/cas acknowledged ok
        # The session: one per process, for the whole run (the client id). Its token per group
        # is the highest index a reply showed it, as exapyte.client.Client keeps it.
        # group -> (term, index) of the newest entry this session wrote or read there (the
        # session token, as exapyte.client.Client keeps it)
        self.session_tokens: dict[str, tuple[int, int]] = {}

    @property
    def busy(self) -> bool:
        return self.op is not None

    def start(self, op: Op) -> None:
        assert self.op is None, "one outstanding operation per client"
        self.seq += 1
        self.op = op
        if self.router is not None:
            self.group = self.router.strategy.shard_of(op.key)
            self._refresh_members()
            self.attempt_versions.clear()
        else:
            self.group, self.members = self.route(op.key)
        self.attempt = 0
        self.uncertain = False
        self.last_refusal = None
        self.op_deadline_ns = self.sched.now_ns + self.deadline_ns
        target = self._pick_any() if op.weak else self._pick_node()
        self.history.op("invoke", self.process, op, None if op.f == "read" else op.value,
                        self.sched.now_ns, target, level=op.level, session=self.client_id,
                        group=self.group)
        self._send_attempt(target)

    @property
    def leader_guess(self) -> str | None:
        return self.leader_guesses.get(self.group)

    @leader_guess.setter
    def leader_guess(self, node: str | None) -> None:
        self.leader_guesses[self.group] = node

    def _pick_node(self, avoid: str | None = None) -> str:
        guess = self.leader_guess
        if guess is not None and guess != avoid:
            return guess
        choices = [n for n in self.members if n != avoid] or list(self.members)
        return choices[self.rng.randrange(len(choices))]

    def _pick_any(self) -> str:
        """A weak read's first attempt: any member, learners included (they serve weak reads),
        or the one ``prefer`` picks."""
        members = self.members
        if self.router is not None:
            descriptor = self.router.descriptor(self.group)
            if descriptor is not None:
                members = descriptor.group.members
        if self.prefer is not None:
            return self.prefer(members)
        return members[self.rng.randrange(len(members))]

    def _refresh_members(self) -> None:
        assert self.router is not None
        descriptor = self.router.descriptor(self.group)
        assert descriptor is not None, self.group
        self.members = descriptor.group.voters

    def _version(self) -> int:
        """The configuration version the next attempt carries (0 without a router)."""
        if self.router is None:
            return 0
        descriptor = self.router.descriptor(self.group)
        version = descriptor.version if descriptor is not None else 0
        seen = self.seen_versions.get(self.group, 0)
        if version < seen:
            self.routing_violations.append(
                f"client {self.process} routed {self.op.key if self.op else '?'} (group "
                f"{self.group}) by configuration {version} after it had been given {seen}"
            )
        return version

    def _send_attempt(self, node: str) -> None:
        assert self.op is not None
        self.attempt += 1
        self.last_node = node
        version = self._version()
        if self.router is not None:
            self.attempt_versions[self.attempt] = version
        request = op_request(self.client_id, self.seq, self.op, self.group, version,
                             self.session_tokens.get(self.group, (0, 0)), self.origin)
        self.send(self.endpoint, node, (self.process, self.attempt, request))
        self.sched.after(self.attempt_timeout_ns, self._on_timeout, self.seq, self.attempt)

    def _retry(self, node: str | None, backoff: bool) -> None:
        if self.sched.now_ns >= self.op_deadline_ns:
            self._give_up()
            return
        target = node or self._pick_node(avoid=self.last_node)
        if backoff:
            delay = int(self.rng.uniform(*RETRY_BACKOFF_MS) * NS_PER_MS)
            self.sched.after(delay, self._resend, self.seq, self.attempt, target)
        else:
            self._send_attempt(target)

    def _resend(self, seq: int, attempt: int, node: str) -> None:
        if self.op is not None and seq == self.seq and attempt == self.attempt:
            if self.sched.now_ns >= self.op_deadline_ns:
                self._give_up()
            else:
                self._send_attempt(node)

    def _on_timeout(self, seq: int, attempt: int) -> None:
        if self.op is None or seq != self.seq or attempt != self.attempt:
            return
        self.uncertain = True
        self.leader_guess = None
        self._retry(None, backoff=False)

    def on_reply(self, attempt: int, reply: ClientReply) -> None:
        op = self.op
        if op is None or reply.seq != self.seq:
            return  # an answer to an operation that already completed
        code = reply.code
        if self.router is not None:
            self._on_routing(attempt, reply)
        if code in _RESULT_CODES:
            if not op.weak:  # a weak read may come from a follower
                self.leader_guess = reply.node or self.leader_guess
            term, index = self.session_tokens.get(self.group, (0, 0))
            if reply.index and (reply.index, reply.term) > (index, term):  # as Client orders them
                self.session_tokens[self.group] = (reply.term, reply.index)
            if op.f == "read":
                value = reply.value.decode() if code == ReplyCode.OK and reply.value is not None else None
                self._complete("ok", value, reply.node, reply)
            elif op.f == "write" or code == ReplyCode.OK:
                self._complete("ok", op.value, reply.node, reply)
            else:
                self._complete("fail", op.value, reply.node, reply, error="cas-mismatch")
            return
        if attempt != self.attempt:
            return  # a refusal of an attempt already superseded
        if code == ReplyCode.STALE_CONFIG and self.router is not None:
            if self._version() != self.attempt_versions.get(attempt):
                # A newer descriptor is cached now: route again by it, at once.
                self.config_redirects += 1
                descriptor = self.router.descriptor(self.group)
                assert descriptor is not None
                self.leader_guess = descriptor.leader if descriptor.leader in self.members else None
                self._retry(self._pick_node(), backoff=False)
                return
            self.leader_guess = None  # the replica is behind, or left: ask another one
            self._retry(None, backoff=True)
            return
        if code in _REFUSAL_CODES:
            self.last_refusal = code
            hint = reply.leader_hint if reply.leader_hint in self.members else None
            self.leader_guess = hint
            self._retry(hint, backoff=True)
            return
        self._complete("fail", None if op.f == "read" else op.value, reply.node, error=code)

    def _on_routing(self, attempt: int, reply: ClientReply) -> None:
        """Offer the reply's descriptor to the cache (only a newer one replaces it)."""
        assert self.router is not None
        descriptor = reply.descriptor
        if descriptor is not None and descriptor.shard == self.group:
            if descriptor.version > self.seen_versions.get(self.group, 0):
                self.seen_versions[self.group] = descriptor.version
            self.router.update(descriptor)
            self._refresh_members()

    def _give_up(self) -> None:
        op = self.op
        assert op is not None
        value = None if op.f == "read" else op.value
        if self.uncertain or op.f == "cas":
            self._complete("info", value, self.last_node, error="timeout")
        else:  # every attempt was refused: it did not happen
            self._complete("fail", value, self.last_node, error=self.last_refusal or "refused")

    def _complete(self, kind: str, value: Any, node: str | None, reply: ClientReply | None = None,
                  *, error: str | None = None) -> None:
        """Record the completion; a reply gives the group, the replica and [term, index] of the
        state read or the entry written (as the harness records them)."""
        op = self.op
        assert op is not None
        group = self.group
        index: tuple[int, int] | None = None
        replica = None
        if reply is not None:
            group = reply.group or group
            replica = reply.node or None
            if reply.index > 0:
                index = (reply.term, reply.index)
        self.history.op(kind, self.process, op, value, self.sched.now_ns, node or None,
                        level=op.level, session=self.client_id, group=group, index=index,
                        replica=replica, error=error)
        if kind == "ok" and op.f != "read":
            self.acked.append((self.client_id, self.seq, op))
        self.result = (kind, value)
        self.last_op = op
        self.op = None
        self.on_done(self)
