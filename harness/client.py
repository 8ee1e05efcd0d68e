"""The client role: one per worker thread; turns a harness op into exapyte client calls.

Theory of operation
-------------------
:meth:`HarnessClient.invoke` takes an :class:`~harness.generator.Op` and returns an
:class:`Outcome`: ``ok`` (it happened, with this value), ``fail`` (it definitely did not happen)
or ``info`` (unknown). The rules, from :mod:`exapyte.client`:

- a :class:`~exapyte.errors.RequestTimeout` is ``info``: the request may have applied;
- a :class:`~exapyte.errors.RequestFailed` is ``fail``: the node refused it, nothing applied;
- a compare-and-set whose compare did not match is ``fail`` with ``error="cas-mismatch"``
  (the checkers give that one its etcd meaning: the compare was linearized and did not match);
- any other exception (a broken socket, a bug in a workload) is ``info`` with the error text,
  never a dropped op: the worker records it and carries on as a fresh process.

Multi-step operations (counter increments and bank transfers are read-then-cas loops inside one
op) end ``info`` as soon as one of their writes has an unknown outcome, and ``fail`` when every
attempt was a definite mismatch or refusal.

Each worker has a *home* node: its reads are sent there first, as a Jepsen client is bound to
one node, so a node that answers strong reads without asking the leader is exercised; writes
follow the leader. Values are stored as UTF-8 text; each workload's ``encode``/``decode`` turn its values (ints,
JSON maps) into that text. The node that answered and the session (client id) are recorded.

**Shards.** With a router (``router_factory``: the routing cache the cluster's config implies,
:func:`exapyte.client.make_router`) every keyed request goes to its key's shard group, reads too
(home node first: a node that does not host the shard redirects to a member). An outcome carries
what the history records of a keyed op: ``group`` (the key's shard, ``default`` without shards),
``index`` (``[term, index]`` of the state the last definite reply read or the entry it wrote)
and ``replica`` (the node whose state that reply came from).

**Levels and sessions.** A read asks for its op's level (``Op.consistency``, else the client's,
``strong``); updates always go through the group's leader. A worker keeps **one session for the
whole run**: :meth:`HarnessClient.reconnect` (after an ``info``) opens new sockets under the
same client id with the session tokens seen so far, as a real client that lost its connection
would, so the session checkers judge every op of the worker together. Only a ``session_lost``
refusal (the token names a truncated entry: the session's writes may be lost) ends a session:
the worker goes on under a new client id, with no token. Request sequence numbers
stay increasing across the new client: the client starts them from its clock in microseconds-ish
units (``Client``'s seq), far above the few calls per millisecond a worker makes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exapyte.client import Client
from exapyte.data.router import Router
from exapyte.errors import RequestFailed, RequestTimeout, SessionLost
from exapyte.security import Credentials
from exapyte.wire import ClientReply, GetOp, ReplyCode
from harness.generator import Op

__all__ = ["HarnessClient", "Outcome", "RecordingClient", "SET_PREFIX"]

SET_PREFIX = "set/"
SET_END = "set0"  # "/" + 1: the end of the set's key range
SCAN_PAGE = 500


@dataclass(frozen=True)
class Outcome:
    type: str  # ok | fail | info
    value: Any = None
    error: str | None = None
    node: str | None = None
    group: str | None = None  # the key's shard group (keyed ops only)
    index: tuple[int, int] | None = None  # the last definite reply's (term, applied index)
    replica: str | None = None  # the node whose state that reply came from


class RecordingClient(Client):
    """An exapyte client that keeps the last definite reply (its index and node go into the
    history)."""

    last_reply: ClientReply | None = None

    def request(self, op: Any, **kwargs: Any) -> ClientReply:  # type: ignore[override]
        reply = super().request(op, **kwargs)
        self.last_reply = reply
        return reply


class _Mismatch(Exception):
    """A cas inside a multi-step op did not match: try again."""


class HarnessClient:
    """Runs ops on the cluster. Not thread-safe: one per worker thread."""

    def __init__(
        self,
        endpoints: dict[str, str],
        *,
        consistency: str = "strong",
        timeout_s: float = 2.0,
        home: str | None = None,
        client_factory: Callable[..., Client] = RecordingClient,
        credentials: Credentials | None = None,
        router_factory: Callable[[], Router | None] | None = None,
    ) -> None:
        if home is not None and home not in endpoints:
            raise ValueError(f"home node {home!r} is not one of {sorted(endpoints)}")
        self.endpoints = endpoints
        self.home = home
        self.consistency = consistency
        self.timeout_s = timeout_s
        self._factory = client_factory
        self.credentials = credentials
        self.router_factory = router_factory
        self.client = self._new_client()

    def _new_client(self, client_id: str | None = None, session_tokens: dict[str, Any] | None = None) -> Client:
        order = list(self.endpoints.values())
        if self.home is not None:
            first = self.endpoints[self.home]
            order = [first] + [e for e in order if e != first]
        extra: dict[str, Any] = {"credentials": self.credentials} if self.credentials is not None else {}
        router = self.router_factory() if self.router_factory is not None else None
        if router is not None:
            extra["router"] = router
        if client_id is not None:
            extra["client_id"] = client_id
        if session_tokens:
            extra["session_tokens"] = dict(session_tokens)
        return self._factory(
            order, node_endpoints=self.endpoints, timeout_s=self.timeout_s, consistency=self.consistency,
            **extra,
        )

    @property
    def session(self) -> str:
        return self.client.client_id

    @property
    def session_tokens(self) -> dict[str, Any]:
        return dict(self.client.session_tokens)

    def reconnect(self) -> None:
        """New sockets and routing cache, e.g. after an op of unknown outcome; the session (client
        id and session tokens) carries on."""
        client_id, tokens = self.client.client_id, dict(self.client.session_tokens)
        self.close()
        self.client = self._new_client(client_id, tokens)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a broken client must not stop the worker
            pass

    # -- dispatch -------------------------------------------------------------------------------

    def group_of(self, key: str) -> str:
        """The replica group that holds ``key`` (``default`` without shards)."""
        group_of = getattr(self.client, "group_of", None)
        return "default" if group_of is None else str(group_of(key))

    def invoke(self, op: Op) -> Outcome:
        handler = getattr(self, "_op_" + op.f.replace("-", "_"), None)
        if handler is None:
            return Outcome("fail", error=f"unknown op {op.f!r}")
        if isinstance(self.client, RecordingClient):
            self.client.last_reply = None
        try:
            value = handler(op)
        except RequestTimeout:
            return self._outcome(op, "info", error="timeout")
        except SessionLost as exc:
            # The node says the session's token names a truncated entry: the session is over
            # (its writes may be lost), and the worker goes on in a new one, under a new id.
            outcome = self._outcome(op, "fail", error=str(exc.code))
            self.close()
            self.client = self._new_client()
            return outcome
        except RequestFailed as exc:
            return self._outcome(op, "fail", error=str(exc.code))
        except _Mismatch:
            return self._outcome(op, "fail", error="cas-mismatch")
        except _Failed as exc:
            return self._outcome(op, "fail", error=exc.reason)
        except Exception as exc:  # noqa: BLE001 - unknown outcome, recorded, never dropped
            return self._outcome(op, "info", error=f"{type(exc).__name__}: {exc}")
        return self._outcome(op, "ok", value)

    def _outcome(self, op: Op, type: str, value: Any = None, *, error: str | None = None) -> Outcome:
        """The outcome with the op's group and, for a definite outcome, the index and replica of
        the op's last definite reply (a cas loop's last cas, a mismatch's refusal)."""
        group = self.group_of(op.key) if op.key is not None else None
        reply = getattr(self.client, "last_reply", None)
        index = replica = None
        if reply is not None and op.key is not None and type in ("ok", "fail"):
            index, replica = (reply.term, reply.index), reply.node or None
        return Outcome(type, value, error=error, node=self.client.last_node, group=group, index=index,
                       replica=replica)

    # -- single-key register ops (values are ints or strings) -----------------------------------

    def _get(self, key: str, consistency: str | None = None, node: str | None = None) -> str | None:
        """A read sent to ``node``, else this worker's home node, first (as Jepsen binds a client
        to a node): a correct node redirects a strong read to the leader, a buggy one may answer
        it; a weaker read is answered there when that node can keep the level's promise."""
        first = node or self.home
        endpoint = self.endpoints[first] if first is not None else None
        reply = self.client.request(GetOp(key), consistency=consistency or self.consistency, endpoint=endpoint,
                                    group=self.group_of(key))
        if reply.code == ReplyCode.NOT_FOUND:
            return None
        assert reply.value is not None
        return reply.value.decode()

    def _op_read(self, op: Op) -> Any:
        assert op.key is not None
        return _decode(self._get(op.key, op.consistency, op.node))

    def _op_write(self, op: Op) -> Any:
        assert op.key is not None
        self.client.put(op.key, _encode(op.value))
        return op.value

    def _op_delete(self, op: Op) -> Any:
        assert op.key is not None
        self.client.delete(op.key)
        return None

    def _op_cas(self, op: Op) -> Any:
        assert op.key is not None
        expected, new = op.value
        swapped = self.client.cas(
            op.key, None if expected is None else _encode(expected), None if new is None else _encode(new)
        )
        if not swapped:
            raise _Mismatch()
        return op.value

    # -- set ------------------------------------------------------------------------------------

    def _op_add(self, op: Op) -> Any:
        """Set workload: add element ``value`` (its own key); counter: add ``value`` via cas."""
        if op.key is None:
            self.client.put(f"{SET_PREFIX}{int(op.value):09d}", "1")
            return op.value
        self._cas_loop(op.key, lambda text: str(int(text or "0") + int(op.value)))
        return op.value

    def _op_read_set(self, op: Op) -> Any:
        elements: list[int] = []
        start = SET_PREFIX
        while True:
            page = self.client.scan(start, SET_END, SCAN_PAGE, consistency=self.consistency)
            elements.extend(int(k[len(SET_PREFIX):]) for k, _ in page)
            if len(page) < SCAN_PAGE:
                return sorted(elements)
            start = page[-1][0] + "\0"

    # -- counter and bank: read-then-cas loops --------------------------------------------------

    def _cas_loop(self, key: str, change: Callable[[str | None], str]) -> None:
        """Read ``key``, cas it to ``change(old)``; again on a mismatch until the deadline."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            old = self._get(key)
            new = change(old)
            if self.client.cas(key, old, new):
                return
            if time.monotonic() >= deadline:
                raise _Mismatch()

    def _op_read_counter(self, op: Op) -> Any:
        assert op.key is not None
        text = self._get(op.key)
        return 0 if text is None else int(text)

    def _op_init(self, op: Op) -> Any:
        """Bank: create the accounts (a no-op if they exist)."""
        assert op.key is not None
        text = json.dumps(op.value, sort_keys=True)
        if not self.client.cas(op.key, None, text):
            current = self._get(op.key)
            if current is None:
                raise _Mismatch()
            return json.loads(current)
        return op.value

    def _op_transfer(self, op: Op) -> Any:
        assert op.key is not None
        source, target, amount = op.value["from"], op.value["to"], int(op.value["amount"])

        def change(text: str | None) -> str:
            if text is None:
                raise _Failed("no-accounts")
            accounts = json.loads(text)
            if accounts[source] < amount:
                raise _Failed("insufficient-funds")
            accounts[source] -= amount
            accounts[target] += amount
            return json.dumps(accounts, sort_keys=True)

        self._cas_loop(op.key, change)
        return op.value

    def _op_read_bank(self, op: Op) -> Any:
        assert op.key is not None
        text = self._get(op.key)
        return None if text is None else json.loads(text)


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _decode(text: str | None) -> Any:
    """Stored text back to a value: ints stay ints, other text stays text."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int) and not isinstance(value, bool) else text
