"""The nemesis: faults as data, computed from the topology graph, applied by thin effects.

Theory of operation
-------------------
Every peer link is one Toxiproxy proxy per **directed** pair: node ``a`` dials node ``b`` through
proxy ``a->b`` (see :mod:`harness.db`), and consensus messages from ``a`` to ``b`` travel only on
that proxy (a node sends to a peer through its own DEALER, never back through the ROUTER). So a
network fault is a set of directed pairs. The shapes are computed by
:mod:`exapyte.control.partitions` from the topology's nodes and regions (the simulator's faults
use the very same functions, names and meanings); this module draws the node, region or order
with a :class:`~harness.generator.Rand` and hands it over:

=================  ===========================================================================
fault              what it cuts
=================  ===========================================================================
isolate-node       every link to and from one node
isolate-region     every link between one region and the rest
majority-minority  the cluster split into a random minority (at least one node) and majority,
                   both ways
bridge             two halves that cannot talk, except through one node that sees both
ring               majorities ring: each node hears only its ring neighbours (a majority each),
                   and no two nodes see the same majority
one-way            one node hears nobody, but everyone still hears it
mute               nobody hears one node, but it still hears everyone (the mirror of one-way)
random             each pair of nodes cut both ways with probability 0.4 (at least one pair)
=================  ===========================================================================

``mute`` and ``random`` are not in the default mix (:data:`DEFAULT_PARTITION_KINDS`); the
simulator draws them by default (docs/simulator.md).

A cut is applied in one of two ways (``cut_mode``): ``down`` disables the proxy (connections
closed, connects refused; ZeroMQ queues and reconnects after the heal, like TCP after a real
partition) or ``blackhole`` adds a ``timeout`` toxic with timeout 0 (bytes silently dropped on a
live connection; removing the toxic closes it and ZeroMQ reconnects). Both really stop traffic,
which a latency toxic never does (see ../shared/TOXIPROXY.md §7). With nodes in network
namespaces (``--hosts netns``) a cut is an iptables rule in the destination's namespace instead:
``drop`` (silent, TCP retransmits after the heal) or ``reject`` (a TCP reset: connects fail at
once). Either way, the completion of a partition's start and stop carries ``applied``: what the
fault layer holds right after, read back from it (in netns mode, the kernel's rule count).

Process faults are data too: ``kill`` (a set of nodes killed with SIGKILL, restarted when the
fault stops), ``pause`` (SIGSTOP, then SIGCONT). Link faults: ``latency`` (a spike with jitter
on some links, on top of the WAN latency every inter-region link carries for the whole run),
``bandwidth`` (a rate limit), ``reset`` (a ``reset_peer`` toxic: every connection that carries
data is reset, so links flap). Clock faults: ``clock`` moves the clock of a random minority of
nodes through an ``admin.clock`` request (:meth:`exapyte.client.Client.clock_fault`; the nodes
must run with ``unsafe.enabled``, which the harness sets when ``clock`` is asked for), in one of
three modes: ``bump`` (a forward jump of CLOCK_BUMP_MS, so timers fire early), ``fast`` or
``slow`` (the clock runs at CLOCK_FAST_RATE or CLOCK_SLOW_RATE times real time, so a follower
times out before hearing its leader, or a leader's heartbeats come too late). The fault stops
with ``reset`` (offset 0, rate 1).

:class:`FaultSchedule` is the pure generator that starts and stops faults at random from the
chosen kinds; :class:`Nemesis` is the effect: it turns a fault value into proxy and process calls.
Every run ends with :meth:`Nemesis.heal`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import networkx as nx

from exapyte.control import partitions as shapes
from exapyte.control import topology as topo
from exapyte.control.partitions import Cut
from harness.generator import Context, Generator, Op, Pending, Rand

if TYPE_CHECKING:
    from harness.db import ClusterDB

__all__ = [
    "BUG_FAULTS",
    "CLOCK_MODES",
    "FAULT_KINDS",
    "DEFAULT_PARTITION_KINDS",
    "PARTITION_KINDS",
    "FaultSchedule",
    "Nemesis",
    "NemesisUnavailable",
    "bridge",
    "choose_clock_fault",
    "choose_fault",
    "cuts_between",
    "default_faults",
    "is_sharded",
    "isolate_node",
    "isolate_region",
    "majority_minority",
    "one_way",
    "parse_faults",
    "random_cut",
    "reachable",
    "ring",
]

cuts_between = shapes.cuts_between

#: Fault kinds ``--nemesis`` accepts.
FAULT_KINDS: tuple[str, ...] = (
    "partition", "kill", "pause", "latency", "bandwidth", "reset", "clock", "transfer", "rebalance",
)
#: The partitions ``partition`` chooses from: the shapes of :mod:`exapyte.control.partitions`
#: (one name and one meaning for the harness and the simulator), ``random`` asked for by name.
PARTITION_KINDS: tuple[str, ...] = shapes.PARTITION_SHAPES
DEFAULT_PARTITION_KINDS: tuple[str, ...] = tuple(k for k in PARTITION_KINDS if k not in ("mute", "random"))
RANDOM_CUT_SHARE = 0.4  # the random shape: the chance each pair of nodes is cut
#: Clock faults: a forward jump in [lo, hi] ms, or a rate in [lo, hi] (times real time).
CLOCK_MODES: tuple[str, ...] = ("bump", "fast", "slow")
CLOCK_BUMP_MS = (200, 2000)
CLOCK_FAST_RATE = (4.0, 20.0)
CLOCK_SLOW_RATE = (0.05, 0.25)
LATENCY_SPIKE_MS = 250
LATENCY_JITTER_MS = 150
BANDWIDTH_KBPS = 8
LEADER_TARGET_SHARE = 0.5  # with many groups: the share of kill/pause/clock faults aimed at a leader


class NemesisUnavailable(RuntimeError):
    """A fault was asked for that this cluster cannot take (yet)."""


def parse_faults(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"partition,kill"`` -> ``("partition", "kill")``; ``none``/empty -> (). Clear errors."""
    items = text.split(",") if isinstance(text, str) else list(text)
    kinds = tuple(dict.fromkeys(k.strip() for k in items if k.strip() and k.strip() != "none"))
    for kind in kinds:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; allowed: {', '.join(FAULT_KINDS)}")
    return kinds


#: The faults ``--bugs`` runs with when no ``--nemesis`` is given: the mix that exposes each bug.
#: ``stale-reads``: a partitioned follower keeps answering strong reads from its old state.
#: ``ack-before-fsync``: writes acknowledged at append are lost when the leader is cut off or
#: killed before they commit. ``no-term-check``: elections while a leader is alive (isolated
#: followers bump their terms, fast or slow clocks make nodes time out, restarts) give two
#: leaders in one term, since every vote of the current term is granted. ``session-ahead``: a
#: follower cut off or lagging answers a session read behind the session's token.
#: ``bounded-unchecked`` and ``bounded-follower-view``: a partitioned or paused follower serves
#: bounded reads from state older than the bound (its own view of the commit index is as old).
#: ``bounded-send-time``: a leader paused (or cut off) while the others elect and commit resumes
#: and stamps before its check-quorum fires; a follower paused or cut off with it believes it.
#: ``stop-applying``: the stopped replica is found at the final reads on every node (no fault
#: needed; partitions move the leader, so the stopped node may come to lead).
#: ``apply-out-of-order``: a follower cut off catches up in long batches, each applied backwards;
#: partitions also move the leader, so more replicas take a turn as the wrong-order follower.
#: ``token-after-truncate``: a leader cut off keeps acknowledging writes it cannot commit; the
#: majority's new leader reuses their indexes, and the session's next read finds a replica "at"
#: its token's index without its write.
BUG_FAULTS: dict[str, tuple[str, ...]] = {
    "stale-reads": ("partition",),
    "ack-before-fsync": ("partition", "kill"),
    "no-term-check": ("partition", "clock", "kill"),
    "session-ahead": ("partition",),
    "bounded-unchecked": ("partition", "pause"),
    "bounded-follower-view": ("partition", "pause"),
    "bounded-send-time": ("partition", "pause"),
    "stop-applying": ("partition",),
    "apply-out-of-order": ("partition",),
    "token-after-truncate": ("partition", "kill"),
}


#: Faults of a run that names neither a nemesis nor a bug: a run without faults proves little.
DEFAULT_FAULTS: tuple[str, ...] = ("partition",)


def default_faults(bugs: Sequence[str]) -> tuple[str, ...]:
    """The fault mix when no nemesis was named: the union of :data:`BUG_FAULTS` for ``bugs``,
    or :data:`DEFAULT_FAULTS` without bugs."""
    if not bugs:
        return DEFAULT_FAULTS
    out: dict[str, None] = {}
    for bug in bugs:
        for kind in BUG_FAULTS.get(bug, ("partition", "kill")):
            out[kind] = None
    return tuple(out)


# --- partitions: pure functions of the graph ---------------------------------------------------


def _nodes(graph: nx.Graph) -> list[str]:
    return sorted(graph.nodes)


def isolate_node(graph: nx.Graph, node: str) -> frozenset[Cut]:
    return shapes.isolate_node(_nodes(graph), node)


def isolate_region(graph: nx.Graph, region: str) -> frozenset[Cut]:
    return shapes.isolate_region(_nodes(graph), topo.nodes_in_region(graph, region))


def majority_minority(graph: nx.Graph, rand: Rand) -> tuple[frozenset[Cut], tuple[list[str], list[str]], Rand]:
    nodes, rand = rand.shuffle(_nodes(graph))
    cuts, big, small = shapes.majority_minority(nodes)
    return cuts, (big, small), rand


def bridge(graph: nx.Graph, rand: Rand) -> tuple[frozenset[Cut], str, Rand]:
    """Two halves; one node (the bridge) talks to both. Needs at least 3 nodes."""
    nodes, rand = rand.shuffle(_nodes(graph))
    if len(nodes) < 3:
        raise NemesisUnavailable(f"a bridge partition needs at least 3 nodes, the topology has {len(nodes)}")
    cuts, middle = shapes.bridge(nodes)
    return cuts, middle, rand


def ring(graph: nx.Graph, rand: Rand) -> tuple[frozenset[Cut], tuple[str, ...], Rand]:
    """Majorities ring: nodes on a random ring; each hears only those within ring distance k,
    where 2k + 1 is a majority. With 3 nodes everyone sees everyone: nothing is cut."""
    nodes, rand = rand.shuffle(_nodes(graph))
    return shapes.ring(nodes), tuple(nodes), rand


def one_way(graph: nx.Graph, rand: Rand) -> tuple[frozenset[Cut], str, Rand]:
    """One node hears nobody, while everyone still hears it (a leader that cannot get acks)."""
    node, rand = rand.choice(_nodes(graph))
    return shapes.one_way(_nodes(graph), node), node, rand


def random_cut(graph: nx.Graph, rand: Rand, share: float = RANDOM_CUT_SHARE) -> tuple[frozenset[Cut], Rand]:
    """Each pair of nodes cut both ways with probability ``share`` (at least one pair)."""
    nodes = _nodes(graph)
    pairs = [(a, b) for a in nodes for b in nodes if a < b]
    chosen = []
    for pair in pairs:
        u, rand = rand.random()
        if u < share:
            chosen.append(pair)
    if not chosen:
        pair, rand = rand.choice(pairs)
        chosen.append(pair)
    return shapes.pairs_both_ways(chosen), rand


def reachable(graph: nx.Graph, cuts: frozenset[Cut]) -> dict[str, frozenset[str]]:
    """For each node, the nodes its messages still reach directly."""
    return shapes.reachable(_nodes(graph), cuts)


def choose_partition(graph: nx.Graph, rand: Rand, kinds: Sequence[str] = DEFAULT_PARTITION_KINDS) -> tuple[dict[str, Any], Rand]:
    """A random partition of a random kind, as a JSON-ready fault value."""
    usable = [k for k in kinds if not (k == "isolate-region" and len(topo.regions(graph)) < 2)]
    if len(graph.nodes) < 3:
        usable = [k for k in usable if k != "bridge"]
    if len(graph.nodes) < 4:
        usable = [k for k in usable if k != "ring"]  # with 3 nodes everyone is in every majority
    kind, rand = rand.choice(usable)
    if kind == "isolate-node":
        node, rand = rand.choice(_nodes(graph))
        cuts, text = isolate_node(graph, node), f"{node} isolated"
    elif kind == "isolate-region":
        region, rand = rand.choice(topo.regions(graph))
        cuts, text = isolate_region(graph, region), f"region {region} isolated"
    elif kind == "majority-minority":
        cuts, (big, small), rand = majority_minority(graph, rand)
        text = f"{','.join(big)} | {','.join(small)}"
    elif kind == "bridge":
        cuts, middle, rand = bridge(graph, rand)
        text = f"bridge through {middle}"
    elif kind == "ring":
        cuts, order, rand = ring(graph, rand)
        text = f"majorities ring {'-'.join(order)}"
    elif kind == "mute":
        node, rand = rand.choice(_nodes(graph))
        cuts, text = shapes.mute(_nodes(graph), node), f"nobody hears {node} (mute)"
    elif kind == "random":
        cuts, rand = random_cut(graph, rand)
        text = f"random cut ({len(cuts) // 2} pairs)"
    else:
        cuts, node, rand = one_way(graph, rand)
        text = f"{node} hears nobody (one-way)"
    return {"kind": kind, "description": text, "cuts": sorted([list(c) for c in cuts])}, rand


def _random_links(graph: nx.Graph, rand: Rand) -> tuple[list[list[str]], str, Rand]:
    """Links to disturb: every link to and from one random node."""
    node, rand = rand.choice(_nodes(graph))
    links = sorted([list(c) for c in isolate_node(graph, node)])
    return links, node, rand


def _random_minority(graph: nx.Graph, rand: Rand) -> tuple[list[str], Rand]:
    nodes, rand = rand.shuffle(_nodes(graph))
    count, rand = rand.randint(1, max(1, (len(nodes) - 1) // 2))
    return sorted(nodes[:count]), rand


def is_sharded(groups: Mapping[str, Sequence[str]] | None) -> bool:
    """Whether ``groups`` (group -> voters) is more than the one centralized group."""
    return groups is not None and len(groups) > 1


def _leader_target(groups: Mapping[str, Sequence[str]], rand: Rand) -> tuple[str | None, Rand]:
    """With many groups, half the process faults hit a leader: the group whose leader it is
    (chosen here, seeded; the leader itself is looked up when the fault starts), else None
    (a random minority, as without shards)."""
    u, rand = rand.random()
    if u >= LEADER_TARGET_SHARE:
        return None, rand
    group, rand = rand.choice(sorted(groups))
    return group, rand


def choose_fault(graph: nx.Graph, kind: str, rand: Rand,
                 groups: Mapping[str, Sequence[str]] | None = None) -> tuple[dict[str, Any], Rand]:
    """A random fault of ``kind`` as data (what :meth:`Nemesis.start` applies). ``groups``
    (group -> voters, the cluster's placement) makes faults that name a leader pick a group:
    ``transfer`` hands a random group's leadership to one of its voters; ``kill``, ``pause`` and
    ``clock`` hit, half the time, a random group's leader (``"target": "leader"``, resolved
    by :meth:`Nemesis.resolve` when the fault starts). Without groups, or with the one group
    ``default``, the choices (and the random draws) are those of a centralized run."""
    if kind == "partition":
        return choose_partition(graph, rand)
    if is_sharded(groups) and kind in ("kill", "pause", "clock"):
        assert groups is not None
        group, rand = _leader_target(groups, rand)
        if group is not None:
            if kind == "clock":
                fault, rand = choose_clock_fault(graph, rand)
                fault = fault | {"nodes": [], "description": fault["description"].replace(
                    f"clock of {','.join(fault['nodes'])}", f"clock of {group}'s leader")}
            else:
                fault = {"kind": kind, "nodes": [], "description": f"{kind} {group}'s leader"}
            return fault | {"target": "leader", "group": group}, rand
    if kind in ("kill", "pause"):
        nodes, rand = _random_minority(graph, rand)
        return {"kind": kind, "nodes": nodes, "description": f"{kind} {','.join(nodes)}"}, rand
    if kind == "latency":
        links, node, rand = _random_links(graph, rand)
        return {
            "kind": kind, "links": links, "latency_ms": LATENCY_SPIKE_MS, "jitter_ms": LATENCY_JITTER_MS,
            "description": f"+{LATENCY_SPIKE_MS}±{LATENCY_JITTER_MS} ms around {node}",
        }, rand
    if kind == "bandwidth":
        links, node, rand = _random_links(graph, rand)
        return {"kind": kind, "links": links, "rate_kbps": BANDWIDTH_KBPS,
                "description": f"{BANDWIDTH_KBPS} KB/s around {node}"}, rand
    if kind == "reset":
        links, node, rand = _random_links(graph, rand)
        return {"kind": kind, "links": links, "description": f"connection resets around {node}"}, rand
    if kind == "clock":
        return choose_clock_fault(graph, rand)
    if kind == "transfer":
        # A forced leader change (thesis §3.10) through the admin key: the leader hands over to
        # ``to``. Nothing to undo; ``stop-transfer`` only closes the interval.
        if is_sharded(groups):
            assert groups is not None
            group, rand = rand.choice(sorted(groups))
            to, rand = rand.choice(sorted(groups[group]))
            return {"kind": kind, "to": to, "group": group, "description": f"leadership of {group} to {to}"}, rand
        to, rand = rand.choice(_nodes(graph))
        return {"kind": kind, "to": to, "description": f"leadership to {to}"}, rand
    if kind == "rebalance":
        # Moves replicas, not keys: ``node remove`` moves every replica off ``node`` (learner,
        # catch-up, promotion, removal in each group's log) and the stop adds it back.
        node, rand = rand.choice(_nodes(graph))
        return {"kind": kind, "node": node, "description": f"move replicas off {node} and back"}, rand
    raise ValueError(f"unknown fault {kind!r}; allowed: {', '.join(FAULT_KINDS)}")


def choose_clock_fault(graph: nx.Graph, rand: Rand, modes: Sequence[str] = CLOCK_MODES) -> tuple[dict[str, Any], Rand]:
    """A clock fault on a random minority: a forward ``bump`` of ``shift_ms``, or a ``fast`` or
    ``slow`` ``rate``. Bounds: :data:`CLOCK_BUMP_MS`, :data:`CLOCK_FAST_RATE`, :data:`CLOCK_SLOW_RATE`."""
    nodes, rand = _random_minority(graph, rand)
    mode, rand = rand.choice(list(modes))
    u, rand = rand.random()
    where = ",".join(nodes)
    if mode == "bump":
        lo, hi = CLOCK_BUMP_MS
        shift_ms = int(lo + u * (hi - lo))
        return {"kind": "clock", "mode": mode, "nodes": nodes, "shift_ms": shift_ms, "rate": 1.0,
                "description": f"clock of {where} jumps +{shift_ms} ms"}, rand
    if mode not in ("fast", "slow"):
        raise ValueError(f"unknown clock mode {mode!r}; allowed: {', '.join(CLOCK_MODES)}")
    lo_r, hi_r = CLOCK_FAST_RATE if mode == "fast" else CLOCK_SLOW_RATE
    rate = round(lo_r + u * (hi_r - lo_r), 3)
    return {"kind": "clock", "mode": mode, "nodes": nodes, "shift_ms": 0, "rate": rate,
            "description": f"clock of {where} runs {mode} (x{rate:g})"}, rand


# --- the schedule: a pure generator ------------------------------------------------------------


@dataclass(frozen=True)
class FaultSchedule(Generator):
    """Alternate quiet and faulty intervals: wait ``interval``, start a random fault of one of
    ``kinds``, wait ``interval``, stop it; again until the generator is cut off. Intervals vary
    uniformly in [interval/2, 3·interval/2). Ops go to the nemesis process."""

    graph: nx.Graph
    kinds: tuple[str, ...]
    interval_ns: int
    rand: Rand
    next_ns: int | None = None
    active: dict[str, Any] | None = None
    groups: Mapping[str, Sequence[str]] | None = None  # group -> voters (see choose_fault)

    def _gap(self, rand: Rand) -> tuple[int, Rand]:
        u, rand = rand.random()
        return int(self.interval_ns * (0.5 + u)), rand

    def op(self, ctx: Context) -> tuple[Any, Generator]:
        if not self.kinds:
            return None, self
        if self.next_ns is None:
            gap, rand = self._gap(self.rand)
            return Pending(ctx.time_ns + gap), replace(self, next_ns=ctx.time_ns + gap, rand=rand)
        if ctx.time_ns < self.next_ns:
            return Pending(self.next_ns), self
        process = ctx.some_free()
        if process is None:
            return Pending(), self
        gap, rand = self._gap(self.rand)
        if self.active is None:
            kind, rand = rand.choice(self.kinds)
            fault, rand = choose_fault(self.graph, kind, rand, self.groups)
            op = Op(f=f"start-{kind}", value=fault, process=process)
            return op, replace(self, rand=rand, next_ns=ctx.time_ns + gap, active=fault)
        op = Op(f=f"stop-{self.active['kind'] if self.active['kind'] not in PARTITION_KINDS else 'partition'}",
                value=self.active, process=process)
        return op, replace(self, rand=rand, next_ns=ctx.time_ns + gap, active=None)


def fault_family(fault: dict[str, Any]) -> str:
    """The ``--nemesis`` kind a fault value belongs to (partition kinds are all ``partition``)."""
    kind = str(fault["kind"])
    return "partition" if kind in PARTITION_KINDS else kind


# --- the effect --------------------------------------------------------------------------------


class Nemesis:
    """Applies fault values to a running :class:`~harness.db.ClusterDB`. Thread-safe."""

    def __init__(self, db: ClusterDB, *, cut_mode: str | None = None, log: Callable[[str], None] | None = None) -> None:
        from harness.db import CUT_MODES

        known = sorted({mode for modes in CUT_MODES.values() for mode in modes})
        if cut_mode is not None and cut_mode not in known:
            raise ValueError(f"cut_mode must be one of {', '.join(known)}, got {cut_mode!r}")
        self.db = db
        self.cut_mode = cut_mode
        self.active: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._log = log or (lambda text: None)

    def describe_active(self) -> list[str]:
        with self._lock:
            return [str(f.get("description", family)) for family, f in self.active.items()]

    def invoke(self, op: Op) -> tuple[str, Any]:
        """Run one nemesis op: ``start-X``/``stop-X``. Returns (completion type, value); a
        partition's value gains ``applied`` (:meth:`~harness.db.ClusterDB.applied_cuts`)."""
        if op.f.startswith("start-"):
            fault = self.resolve(op.value)
            return "info", self._with_applied(fault, self.start(fault))
        if op.f.startswith("stop-"):
            return "info", self._with_applied(op.value, self.stop(op.f[len("stop-"):]))
        raise ValueError(f"nemesis: unknown op {op.f!r}")

    def resolve(self, fault: Any) -> Any:
        """A fault aimed at a group's leader (``"target": "leader"``) with ``nodes`` set to the
        leader the nodes report now (:meth:`~harness.db.ClusterDB.leaders`); when the group has
        no known leader (an election is running), its first voter is hit instead, and the value
        says so (``leader_known: false``). Any other fault is returned as it is."""
        if not isinstance(fault, dict) or fault.get("target") != "leader":
            return fault
        group = str(fault["group"])
        leader = self.db.leaders().get(group)
        known = leader is not None
        if leader is None:
            leader = self.db.groups()[group][0]
        description = str(fault.get("description", "")).replace(f"{group}'s leader", f"{group}'s leader {leader}")
        if not known:
            description += " (no leader known: its first voter)"
        return fault | {"nodes": [leader], "leader_known": known, "description": description}

    @staticmethod
    def _with_applied(value: Any, applied: dict[str, Any] | None) -> Any:
        if applied is None or not isinstance(value, dict):
            return value
        return value | {"applied": applied}

    def start(self, fault: dict[str, Any]) -> dict[str, Any] | None:
        """Apply ``fault``; for a partition, returns what the fault layer then holds."""
        family = fault_family(fault)
        with self._lock:
            if family in self.active:
                raise RuntimeError(f"nemesis: a {family} fault is already active")
            self.active[family] = fault
        kind = fault["kind"]
        if family == "partition":
            for src, dst in fault["cuts"]:
                self.db.cut(src, dst, mode=self.cut_mode)
        elif kind == "kill":
            for node in fault["nodes"]:
                self.db.kill(node)
        elif kind == "pause":
            for node in fault["nodes"]:
                self.db.pause(node)
        elif kind == "latency":
            for src, dst in fault["links"]:
                self.db.add_toxic(src, dst, "spike", "latency",
                                  {"latency": int(fault["latency_ms"]), "jitter": int(fault["jitter_ms"])})
        elif kind == "bandwidth":
            for src, dst in fault["links"]:
                self.db.add_toxic(src, dst, "bandwidth", "bandwidth", {"rate": int(fault["rate_kbps"])})
        elif kind == "reset":
            for src, dst in fault["links"]:
                self.db.add_toxic(src, dst, "reset", "reset_peer", {"timeout": 0}, streams=("upstream",))
        elif kind == "clock":
            for node in fault["nodes"]:
                self.db.clock_fault(node, shift_ms=float(fault["shift_ms"]), rate=float(fault["rate"]))
        elif kind == "transfer":
            if "group" in fault:
                applied = self.db.transfer_leader(str(fault["to"]), str(fault["group"]))
            else:
                applied = self.db.transfer_leader(str(fault["to"]))
            self._log(f"fault started: {fault.get('description', kind)}: {applied['result']}")
            return applied
        elif kind == "rebalance":
            applied = self.db.rebalance("remove", str(fault["node"]))
            self._log(f"fault started: {fault.get('description', kind)}: {applied['result']}")
            return applied
        else:
            raise ValueError(f"nemesis: cannot start {kind!r}")
        self._log(f"fault started: {fault.get('description', kind)}")
        return self.db.applied_cuts() if family == "partition" else None

    def stop(self, family: str) -> dict[str, Any] | None:
        """Undo the active fault of ``family``; for a partition, returns what the fault layer
        then holds (nothing of this partition)."""
        with self._lock:
            fault = self.active.pop(family, None)
        if fault is None:
            return None
        kind = fault["kind"]
        if family == "partition":
            for src, dst in fault["cuts"]:
                self.db.uncut(src, dst)
        elif kind == "kill":
            for node in fault["nodes"]:
                self.db.start_node(node)
        elif kind == "pause":
            for node in fault["nodes"]:
                self.db.resume(node)
        elif kind == "latency":
            for src, dst in fault["links"]:
                self.db.remove_toxic(src, dst, "spike")
        elif kind == "bandwidth":
            for src, dst in fault["links"]:
                self.db.remove_toxic(src, dst, "bandwidth")
        elif kind == "reset":
            for src, dst in fault["links"]:
                self.db.remove_toxic(src, dst, "reset", streams=("upstream",))
        elif kind == "clock":
            for node in fault["nodes"]:
                self.db.reset_clock(node)
        elif kind == "rebalance":
            applied = self.db.rebalance("add", str(fault["node"]))
            self._log(f"fault stopped: {fault.get('description', kind)}: {applied['result']}")
            return applied
        # transfer: nothing to undo (the new leader stays)
        self._log(f"fault stopped: {fault.get('description', kind)}")
        return self.db.applied_cuts() if family == "partition" else None

    def heal(self) -> list[str]:
        """Stop every active fault, then make sure every node runs and every link is whole
        (WAN latency stays). Returns the families that were still active."""
        with self._lock:
            families = list(self.active)
        # A rebalance is undone last, on a whole cluster: adding the node back needs its groups'
        # leaders reachable.
        for family in families:
            if family != "rebalance":
                self.stop(family)
        self.db.heal_all()
        if "rebalance" in families:
            self.stop("rebalance")
        return families
