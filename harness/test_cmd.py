"""``python -m harness test``: run one Jepsen-style test against real node processes.

Example::

    python -m harness test --topology three-region --workload register \\
        --nemesis partition,kill,pause --time 60 --seed 7

Results go to ``STORE/<test-name>/<timestamp>/`` (``STORE/latest`` points at the newest run).
Exit status: 0 valid, 1 invalid, 2 unknown (or the cluster could not be set up).

With ``--bugs`` and no ``--nemesis``, each bug brings the fault mix that exposes it
(:data:`harness.nemesis.BUG_FAULTS`): stale-reads -> partition; ack-before-fsync ->
partition,kill; no-term-check -> partition,clock,kill; session-ahead -> partition;
bounded-unchecked, bounded-follower-view, bounded-send-time -> partition,pause; stop-applying ->
partition;
apply-out-of-order, token-after-truncate -> partition.
``--nemesis none`` runs a bug without faults. Without ``--workload``, a bug that breaks a weaker
level brings a workload asking for it (:data:`harness.workloads.BUG_WORKLOADS`: session-ahead ->
session, bounded-* -> bounded, stop-applying -> eventual, apply-out-of-order -> prefix,
token-after-truncate -> session); else the workload is ``register``.

``--staleness-versions K`` and ``--staleness-ms T`` set the cluster's ``bounded_staleness``
bounds (``data_plane.staleness_versions_max``, ``staleness_ms_max``); the level checker judges
the run against the bounds the nodes were given.

``--protocol`` (any registered consensus protocol), ``--distribution centralized|sharded|
hierarchical``, ``--shards`` and ``--replication-factor`` go into every node's config; clients
then route each key to its shard's group.

``--db sim`` runs the same spec in the deterministic simulator instead of on node processes
(:mod:`harness.simdb`: the same product code on a simulated network and clock, the same history,
checkers and report, plus the ``python -m exapyte.sim`` command that replays the run exactly);
options it cannot honour (faults latency, bandwidth, reset, transfer; workloads kv, set,
counter, bank; distribution hierarchical; ``--hosts netns``) are refused by name.

``--hosts netns`` runs every node in a network namespace of its own, with partitions as iptables
rules in the kernel (needs root, ``ip`` and ``iptables``; it fails at once, saying what is
missing, where they are not available).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import threading
from collections.abc import Iterator

from rich.console import Console

from exapyte.config import KNOWN_BUGS
from harness.cli import Subcommand
from harness.db import CUT_MODES, HOST_MODES, HostsUnavailable
from harness.nemesis import (
    BUG_FAULTS,
    FAULT_KINDS,
    NemesisUnavailable,
    default_faults,
    parse_faults,
)
from harness.runner import (
    DBS,
    DEFAULT_SHARDS,
    DISTRIBUTIONS,
    REPLICATIONS,
    TestSpec,
    run_test,
)
from harness.workloads import WORKLOADS, default_workload

__all__ = ["SUBCOMMAND"]


def _bugs(text: str) -> tuple[str, ...]:
    bugs = tuple(b.strip() for b in text.split(",") if b.strip() and b.strip() != "none")
    for bug in bugs:
        if bug not in KNOWN_BUGS:
            raise argparse.ArgumentTypeError(f"unknown bug {bug!r}; allowed: {', '.join(KNOWN_BUGS)}")
    return bugs


def _faults(text: str) -> tuple[str, ...]:
    try:
        return parse_faults(text)
    except (ValueError, NemesisUnavailable) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _protocols() -> tuple[str, ...]:
    from exapyte.protocol import registry

    return tuple(registry.names())


def _protocol(text: str) -> str:
    if text not in _protocols():
        raise argparse.ArgumentTypeError(f"unknown protocol {text!r}; allowed: {', '.join(_protocols())}")
    return text


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topology", required=True, help="a name in topologies/ (single-region, three-region, five-region) or a .json path")
    p.add_argument("--workload", default=None, choices=sorted(WORKLOADS),
                   help="what the clients do (default: register; with --bugs, a workload at the level the bug breaks)")
    p.add_argument("--staleness-versions", type=_positive(int), default=None, metavar="K",
                   help="data_plane.staleness_versions_max of every node (default: the topology's, else 100)")
    p.add_argument("--staleness-ms", type=_positive(int), default=None, metavar="T",
                   help="data_plane.staleness_ms_max of every node (default: the topology's, else 5000)")
    p.add_argument("--nemesis", type=_faults, default=None, metavar="FAULTS",
                   help=f"comma-separated faults: {', '.join(FAULT_KINDS)}, or none (default: partition; with "
                        "--bugs, the mix that exposes them: "
                        + "; ".join(f"{b} -> {','.join(k)}" for b, k in BUG_FAULTS.items()) + "). "
                        "clock sets unsafe.enabled in the node configs")
    p.add_argument("--time", type=_positive(float), default=60.0, metavar="S", help="length of the main phase in seconds (default 60)")
    p.add_argument("--rate", type=_positive(float), default=100.0, metavar="R", help="client ops per second in all (default 100)")
    p.add_argument("--concurrency", type=_positive(int), default=5, metavar="N", help="client worker threads (default 5)")
    p.add_argument("--seed", type=int, default=None, help="seed of every random choice (default: random, printed)")
    p.add_argument("--bugs", type=_bugs, default=(), metavar="BUGS",
                   help=f"comma-separated known bugs to enable in the nodes (unsafe.bugs): {', '.join(KNOWN_BUGS)}; "
                        "without --nemesis, the run uses the faults that expose them (see --nemesis)")
    p.add_argument("--store", default="store", metavar="DIR", help="where runs are kept (default: store)")
    p.add_argument("--nemesis-interval", type=_positive(float), default=5.0, metavar="S",
                   help="mean seconds between fault transitions (default 5)")
    p.add_argument("--quiet", type=float, default=5.0, metavar="S", help="quiet period after the heal (default 5)")
    p.add_argument("--op-timeout", type=_positive(float), default=2.0, metavar="S", help="client timeout per op (default 2)")
    p.add_argument("--ops-per-key", type=_positive(int), default=None, metavar="N",
                   help="register: ops per key (default 200; with shards fewer, so that every shard gets keys)")
    p.add_argument("--protocol", type=_protocol, default="raft", metavar="P",
                   help=f"consensus.protocol of every node: {', '.join(_protocols())} (default raft)")
    p.add_argument("--distribution", choices=DISTRIBUTIONS, default="centralized",
                   help="distribution.strategy of every node (default centralized: one group holds every key)")
    p.add_argument("--shards", type=_positive(int), default=None, metavar="N",
                   help=f"distribution.shards (per region with hierarchical; default {DEFAULT_SHARDS} when not centralized)")
    p.add_argument("--replication-factor", type=_positive(int), default=3, metavar="R",
                   help="distribution.replication_factor of each shard (default 3; capped at the nodes, per region "
                        "with hierarchical)")
    p.add_argument("--replication", choices=REPLICATIONS, default=None,
                   help="replication.strategy of every node (default: the topology's; unset there: async "
                        "for hierarchical, sync otherwise; docs/replication.md)")
    p.add_argument("--db", choices=DBS, default="real",
                   help="what runs the spec: real (node processes, the default) or sim (the deterministic simulator: "
                        "the same checkers and report, and a replay command)")
    p.add_argument("--hosts", choices=HOST_MODES, default="local",
                   help="where the nodes run: local (all on 127.0.0.1, every peer link through a proxy) or "
                        "netns (a network namespace each, partitions as iptables rules; needs root) (default local)")
    p.add_argument("--cut", choices=sorted({m for modes in CUT_MODES.values() for m in modes}), default=None,
                   help="how a partition cuts a link: with --hosts local, down (disable the proxy, the default) or "
                        "blackhole (a timeout toxic); with --hosts netns, drop (the default) or reject (TCP reset)")
    p.add_argument("--checker-timeout", type=_positive(float), default=60.0, metavar="S",
                   help="budget of the linearizability checker (default 60)")
    p.add_argument("--no-wan-latency", action="store_true", help="do not add the topology's WAN latency to the links")
    p.add_argument("--name", default=None, help="test name (default: from workload, topology, faults, bugs)")


def _run(args: argparse.Namespace) -> int:
    console = Console()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    nemesis = tuple(args.nemesis) if args.nemesis is not None else default_faults(args.bugs)
    if args.nemesis is None and nemesis:
        console.print(f"no --nemesis given: faults {','.join(nemesis)}")
    workload = args.workload or default_workload(args.bugs)
    if args.workload is None and workload != "register":
        console.print(f"no --workload given: workload {workload}")
    spec = TestSpec(
        topology=args.topology, workload=workload, nemesis=nemesis, time_s=args.time,
        rate=args.rate, concurrency=args.concurrency, seed=seed, bugs=tuple(args.bugs), store=args.store,
        nemesis_interval_s=args.nemesis_interval, quiet_s=args.quiet, op_timeout_s=args.op_timeout,
        ops_per_key=args.ops_per_key, cut_mode=args.cut, checker_timeout_s=args.checker_timeout,
        wan_latency=not args.no_wan_latency, name=args.name, hosts=args.hosts,
        protocol=args.protocol, distribution=args.distribution, shards=args.shards,
        replication_factor=args.replication_factor, replication=args.replication,
        staleness_versions_max=args.staleness_versions, staleness_ms_max=args.staleness_ms, db=args.db,
    )
    try:
        with _sigterm_as_interrupt():
            outcome = run_test(spec, console)
    except (ValueError, HostsUnavailable) as exc:
        console.print(f"[red]error[/]: {exc}")
        return 2
    return outcome.exit_code


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does: the run heals, tears down (processes, namespaces) and
    reports, instead of dying with everything left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


SUBCOMMAND = Subcommand(
    name="test",
    help="run a Jepsen-style test against real node processes (or, with --db sim, in the simulator)",
    description=__doc__ or "",
    add_arguments=_add_arguments,
    run=_run,
)
