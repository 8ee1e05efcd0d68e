"""Partition shapes: the directed links a network partition cuts, computed from the topology.

Theory of operation
-------------------
A partition is a set of **cuts**, directed pairs ``(src, dst)``: ``src``'s messages do not reach
``dst``. The harness's nemesis (Toxiproxy proxies or iptables rules, one per directed pair) and
the simulator's faults (its network drops or holds a message whose link is cut) both apply such
a set, and both compute it here, from the topology's nodes (and regions), so a shape has one
name and one meaning everywhere:

=================  ===========================================================================
shape              what it cuts
=================  ===========================================================================
isolate-node       every link to and from one node
isolate-region     every link between one region and the rest
majority-minority  the cluster split into a minority (at least one node) and the majority,
                   both ways
bridge             two halves that cannot talk, except through one node that sees both
ring               majorities ring: each node hears only its ring neighbours (a majority each),
                   and no two nodes see the same majority (nothing is cut with 3 nodes)
one-way            one node **hears nobody**, while everyone still hears it: every link *into*
                   it is cut (a leader that cannot get acks; a follower that keeps campaigning
                   with requests everyone receives, and never hears the answers)
mute               the mirror of one-way: nobody hears one node, while it still hears everyone:
                   every link *out of* it is cut (a leader whose heartbeats and answers are
                   lost, a candidate whose requests never arrive)
random             each pair of nodes cut both ways with some probability (at least one pair)
=================  ===========================================================================

The functions are pure and draw nothing: randomness stays with the caller (the harness's
splitmix ``Rand``, the simulator's seeded ``random.Random``), which chooses the node, the region
or the order of the nodes, and passes it in. Every function that takes an ``order`` uses it the
same way: its first node is the one a shape singles out (the bridge) and its first nodes are
the minority. Cut sets are returned as frozensets; :func:`sorted_cuts` gives the sorted tuple
the simulator stores.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

__all__ = [
    "Cut",
    "PARTITION_SHAPES",
    "bridge",
    "cuts_between",
    "isolate_node",
    "isolate_region",
    "majority_minority",
    "minority_size",
    "mute",
    "one_way",
    "pairs_both_ways",
    "reachable",
    "ring",
    "sorted_cuts",
]

Cut = tuple[str, str]  # (src, dst): src's messages do not reach dst

#: Every shape, by the one name both the harness and the simulator use.
PARTITION_SHAPES: tuple[str, ...] = (
    "isolate-node", "isolate-region", "majority-minority", "bridge", "ring", "one-way", "mute", "random",
)


def cuts_between(groups: Iterable[Iterable[str]]) -> frozenset[Cut]:
    """Both directions of every link between nodes of different groups."""
    sets = [frozenset(g) for g in groups]
    cuts: set[Cut] = set()
    for i, j in itertools.permutations(range(len(sets)), 2):
        for a in sets[i]:
            for b in sets[j]:
                if a != b:
                    cuts.add((a, b))
    return frozenset(cuts)


def _others(nodes: Sequence[str], node: str) -> list[str]:
    if node not in nodes:
        raise ValueError(f"{node!r} is not a node of the topology ({', '.join(sorted(nodes))})")
    return [n for n in sorted(nodes) if n != node]


def isolate_node(nodes: Sequence[str], node: str) -> frozenset[Cut]:
    """Every link to and from ``node``."""
    return cuts_between([[node], _others(nodes, node)])


def isolate_region(nodes: Sequence[str], inside: Iterable[str]) -> frozenset[Cut]:
    """Every link between the nodes ``inside`` (a region) and the rest."""
    inner = set(inside)
    return cuts_between([sorted(inner), [n for n in sorted(nodes) if n not in inner]])


def minority_size(n: int) -> int:
    """The minority of a majority-minority split of ``n`` nodes: ``(n - 1) // 2``, at least 1."""
    return (n - 1) // 2 or 1


def majority_minority(order: Sequence[str]) -> tuple[frozenset[Cut], list[str], list[str]]:
    """The first :func:`minority_size` nodes of ``order`` against the rest, both ways; returns
    the cuts, the majority and the minority (each sorted)."""
    small = sorted(order[: minority_size(len(order))])
    big = sorted(order[minority_size(len(order)):])
    return cuts_between([big, small]), big, small


def bridge(order: Sequence[str]) -> tuple[frozenset[Cut], str]:
    """Two halves of ``order[1:]`` that cannot talk, and ``order[0]``, the bridge, that talks to
    both (Jepsen's bridge). Needs at least 3 nodes."""
    if len(order) < 3:
        raise ValueError(f"a bridge partition needs at least 3 nodes, got {len(order)}")
    middle, rest = order[0], list(order[1:])
    half = len(rest) // 2
    return cuts_between([rest[:half], rest[half:]]), middle


def ring(order: Sequence[str]) -> frozenset[Cut]:
    """Majorities ring: the nodes on a ring in ``order``; each hears only those within ring
    distance k, where 2k + 1 is a majority."""
    n = len(order)
    majority = n // 2 + 1
    k = max(1, -(-(majority - 1) // 2))  # ceil((majority - 1) / 2): 2k + 1 >= majority
    cuts: set[Cut] = set()
    for i, j in itertools.permutations(range(n), 2):
        if min((i - j) % n, (j - i) % n) > k:
            cuts.add((order[i], order[j]))
    return frozenset(cuts)


def one_way(nodes: Sequence[str], node: str) -> frozenset[Cut]:
    """``node`` hears nobody, while everyone still hears it: every link into it is cut."""
    return frozenset((other, node) for other in _others(nodes, node))


def mute(nodes: Sequence[str], node: str) -> frozenset[Cut]:
    """Nobody hears ``node``, while it still hears everyone: every link out of it is cut."""
    return frozenset((node, other) for other in _others(nodes, node))


def pairs_both_ways(pairs: Iterable[tuple[str, str]]) -> frozenset[Cut]:
    """Both directions of each pair (the ``random`` shape, once the caller drew its pairs)."""
    return frozenset(cut for a, b in pairs for cut in ((a, b), (b, a)))


def reachable(nodes: Sequence[str], cuts: Iterable[Cut]) -> dict[str, frozenset[str]]:
    """For each node, the nodes its messages still reach directly."""
    cut = frozenset(cuts)
    ordered = sorted(nodes)
    return {a: frozenset(b for b in ordered if b != a and (a, b) not in cut) for a in ordered}


def sorted_cuts(cuts: Iterable[Cut]) -> tuple[Cut, ...]:
    return tuple(sorted(cuts))
