"""The simulated network: per-link delays, loss, duplication, reordering, partitions, bounded queues.

Theory of operation
-------------------
Every directed link ``(frm, to)`` has a delay distribution drawn once per run from the seed
(:class:`Delay`: uniform or exponential, in milliseconds, capped). A message sent at ``t``
arrives at ``t + delay``; while the link is not reordering, arrivals are clamped to stay in send
order (FIFO, as on one TCP connection). Impairments are data the nemesis changes:

- ``loss`` / ``dup``: probability that a message is dropped / delivered twice;
- ``reorder``: probability that a message takes an extra random detour (up to
  ``REORDER_JITTER_MS_MAX``) and may overtake later ones;
- ``blocked``: the set of directed links that are cut. A partition of any shape is just such a
  set (see :mod:`exapyte.sim.faults` for the shapes); a message is dropped if its link is cut when
  it is sent **or** when it would arrive, so messages in flight die with the link.
- ``held``: directed links that are down but *hold* what crosses them, as a ZeroMQ socket
  queues its messages while the TCP connection under it is down and sends them once it
  reconnects. A message sent on a held link, or arriving on one (it was in flight when the link
  went down), waits in the link's queue; when the link leaves ``held`` (:meth:`Network.set_held`)
  the queue is released: each message gets a fresh link delay from the release instant and the
  link stays FIFO, except that a share ``shuffle`` (given when the link was held) of the released
  messages take a detour of up to ``HOLD_SHUFFLE_MS_MAX`` and may overtake the others. A held
  message is delivered exactly once (no loss or duplication is drawn for it: TCP) unless the link
  is also cut when it arrives, or the queue is full. It may be seconds old when it arrives, which
  is the point: the answer to a request its sender gave up on long ago.

Only links between two nodes are impaired: client <-> node traffic (``faulty=False`` endpoints)
gets its delay but no loss, duplication, reordering or cut, like clients sitting next to the nodes
in the real harness.

Each link holds at most ``queue_max`` messages in flight; more are dropped (ZeroMQ's high-water
mark). Every decision draws from the network's own ``random.Random``; every fate is counted in
:attr:`Network.counters`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exapyte.sim.scheduler import NS_PER_MS, Scheduler

REORDER_JITTER_MS_MAX = 30.0  # the largest detour a reordered message takes
DELAY_MS_CAP = 200.0  # no single hop takes longer (bounds the exponential tail)
LINK_QUEUE_MAX_DEFAULT = 1_000  # messages in flight per directed link
HOLD_SHUFFLE_MS_MAX = 30.0  # the largest detour a shuffled message takes when its hold ends


@dataclass(frozen=True, slots=True)
class Delay:
    """A one-way delay distribution in milliseconds."""

    kind: str  # "uniform" (lo..hi) or "exponential" (lo + Exp(mean))
    lo_ms: float
    hi_ms: float = 0.0
    mean_ms: float = 0.0

    def sample_ns(self, rng: random.Random) -> int:
        if self.kind == "uniform":
            ms = rng.uniform(self.lo_ms, self.hi_ms)
        elif self.kind == "exponential":
            ms = self.lo_ms + rng.expovariate(1.0 / self.mean_ms)
        else:
            raise ValueError(f"unknown delay kind {self.kind!r}; allowed: uniform, exponential")
        return int(min(ms, DELAY_MS_CAP) * NS_PER_MS)

    @staticmethod
    def random(rng: random.Random) -> Delay:
        """A plausible LAN link: uniform 0.1..~4 ms or exponential with a 0.2..2 ms mean."""
        if rng.random() < 0.5:
            lo = rng.uniform(0.1, 1.0)
            return Delay("uniform", lo, lo + rng.uniform(0.2, 3.0))
        return Delay("exponential", rng.uniform(0.05, 0.5), mean_ms=rng.uniform(0.2, 2.0))


@dataclass(slots=True)
class Link:
    delay: Delay
    in_flight: int = 0  # in flight or held: what counts against the queue bound
    last_arrival_ns: int = 0
    sent: int = 0  # messages (copies) put on the link: their send order
    held: list[tuple[int, Any]] = field(default_factory=list)  # (send order, message)


Deliver = Callable[[str, str, Any], None]


class Network:
    """Directed links between endpoints; see the module docstring."""

    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        nodes: Iterable[str],
        deliver: Deliver,
        *,
        queue_max: int = LINK_QUEUE_MAX_DEFAULT,
        client_delay: Delay = Delay("uniform", 0.05, 0.5),
        on_delivered: Callable[[str, str, Any], None] | None = None,
        on_sent: Callable[[str, str, Any], None] | None = None,
    ) -> None:
        self.sched = scheduler
        self.rng = rng
        self.nodes = tuple(sorted(nodes))
        self._node_set = frozenset(self.nodes)
        self.deliver = deliver
        self.on_delivered = on_delivered
        self.on_sent = on_sent  # sees every message handed to the network, before its fate
        self.queue_max = queue_max
        self.client_delay = client_delay
        self.links: dict[tuple[str, str], Link] = {}
        for a in self.nodes:
            for b in self.nodes:
                if a != b:
                    self.links[(a, b)] = Link(Delay.random(rng))
        self.loss = 0.0
        self.dup = 0.0
        self.reorder = 0.0
        self.blocked: frozenset[tuple[str, str]] = frozenset()
        self.held: dict[tuple[str, str], float] = {}  # held link -> share shuffled on release
        self.counters: dict[str, int] = {
            "sent": 0,
            "delivered": 0,
            "dropped_loss": 0,
            "dropped_partition": 0,
            "dropped_queue_full": 0,
            "duplicated": 0,
            "reordered": 0,
            "held": 0,
            "released": 0,
        }

    # --- impairments (set by the nemesis) ---------------------------------------------------

    def set_blocked(self, links: Iterable[tuple[str, str]]) -> None:
        self.blocked = frozenset(links)

    def set_held(self, links: Mapping[tuple[str, str], float]) -> None:
        """Hold exactly these directed links from now on (link -> the share of its messages
        shuffled when it is released); release the queue of every link no longer held."""
        released = sorted((link, share) for link, share in self.held.items() if link not in links)
        self.held = dict(links)
        for (frm, to), shuffle in released:
            self._release(frm, to, shuffle)

    def heal(self) -> None:
        self.blocked = frozenset()
        self.loss = self.dup = self.reorder = 0.0
        self.set_held({})

    def set_delay(self, frm: str, to: str, delay: Delay) -> None:
        """Give the directed link ``frm -> to`` (node or client endpoint) this delay from now on.

        Draws nothing from the network's rng, so a run that never calls it is unchanged (a
        demo places nodes and clients in a topology's regions with it)."""
        link = self.links.get((frm, to))
        if link is None:
            self.links[(frm, to)] = Link(delay)
        else:
            link.delay = delay

    def link_up(self, frm: str, to: str) -> bool:
        return (frm, to) not in self.blocked

    # --- traffic ----------------------------------------------------------------------------

    def _link(self, frm: str, to: str) -> Link:
        link = self.links.get((frm, to))
        if link is None:
            link = self.links[(frm, to)] = Link(self.client_delay)
        return link

    def send(self, frm: str, to: str, msg: Any) -> None:
        self.counters["sent"] += 1
        if self.on_sent is not None:
            self.on_sent(frm, to, msg)
        faulty = frm in self._node_set and to in self._node_set
        link = self._link(frm, to)
        if faulty:
            if (frm, to) in self.blocked:
                self.counters["dropped_partition"] += 1
                return
            if self.held and (frm, to) in self.held:
                if link.in_flight >= self.queue_max:
                    self.counters["dropped_queue_full"] += 1
                    return
                link.in_flight += 1
                link.sent += 1
                link.held.append((link.sent, msg))
                self.counters["held"] += 1
                return
            if self.loss and self.rng.random() < self.loss:
                self.counters["dropped_loss"] += 1
                return
        copies = 1
        if faulty and self.dup and self.rng.random() < self.dup:
            copies = 2
            self.counters["duplicated"] += 1
        for _ in range(copies):
            if link.in_flight >= self.queue_max:
                self.counters["dropped_queue_full"] += 1
                continue
            arrival = self.sched.now_ns + link.delay.sample_ns(self.rng)
            if faulty and self.reorder and self.rng.random() < self.reorder:
                arrival += int(self.rng.uniform(0.0, REORDER_JITTER_MS_MAX) * NS_PER_MS)
                if arrival < link.last_arrival_ns:
                    self.counters["reordered"] += 1
            elif arrival < link.last_arrival_ns:
                arrival = link.last_arrival_ns  # FIFO: a plain link never overtakes
            link.last_arrival_ns = max(link.last_arrival_ns, arrival)
            link.in_flight += 1
            link.sent += 1
            self.sched.at(arrival, self._arrive, frm, to, msg, faulty, link.sent)

    def _release(self, frm: str, to: str, shuffle: float) -> None:
        """The hold on ``frm -> to`` ended: its queue leaves in send order (a message that was
        in flight when the hold began is placed by when it was sent), each with a fresh delay;
        a share ``shuffle`` of them take a detour and may overtake the others."""
        link = self.links[(frm, to)]
        queue, link.held = sorted(link.held, key=lambda item: item[0]), []
        for order, msg in queue:
            arrival = self.sched.now_ns + link.delay.sample_ns(self.rng)
            if shuffle and self.rng.random() < shuffle:
                arrival += int(self.rng.uniform(0.0, HOLD_SHUFFLE_MS_MAX) * NS_PER_MS)
                if arrival < link.last_arrival_ns:
                    self.counters["reordered"] += 1
            elif arrival < link.last_arrival_ns:
                arrival = link.last_arrival_ns
            link.last_arrival_ns = max(link.last_arrival_ns, arrival)
            self.counters["released"] += 1
            self.sched.at(arrival, self._arrive, frm, to, msg, True, order)

    def _arrive(self, frm: str, to: str, msg: Any, faulty: bool, order: int) -> None:
        link = self.links[(frm, to)]
        if faulty and (frm, to) in self.held:
            link.held.append((order, msg))  # it was in flight when the link went down
            self.counters["held"] += 1
            return
        link.in_flight -= 1
        if faulty and (frm, to) in self.blocked:
            self.counters["dropped_partition"] += 1
            return
        self.counters["delivered"] += 1
        if self.on_delivered is not None:
            self.on_delivered(frm, to, msg)
        self.deliver(frm, to, msg)
