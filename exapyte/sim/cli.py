"""``python -m exapyte.sim``: run seeds, print verdicts and trace hashes, replay and shrink failures.

Each seed prints ``seed=S trace_hash=H verdict=V``; a failing seed also prints what failed, the
one command that replays it, and (unless ``--no-shrink``) the shrunk case with its own replay
command. A rich table sums up: seeds run, failures, simulated time, wall time and the speed
ratio (simulated seconds per wall second). The exit status is 1 when any seed failed.

The linearizability checker lives in the harness; it is imported lazily by
:mod:`exapyte.sim.judge` when a history is judged, never at import time of this module.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from exapyte.config import KNOWN_BUGS
from exapyte.control.partitions import PARTITION_SHAPES
from exapyte.protocol import registry
from exapyte.sim.faults import (
    ALL_FAULT_KINDS,
    FAULT_KINDS,
    REBALANCE,
    SHARDED_FAULT_KINDS,
)
from exapyte.sim.runner import SimResult, run_seed, run_seeds, shrink
from exapyte.sim.scheduler import NS_PER_S
from exapyte.sim.workload import LEVELS, READ_LEVEL_WEIGHTS
from exapyte.sim.world import SimSpec


def _faults(text: str) -> tuple[str, ...]:
    if text in ("", "none"):
        return ()
    if text == "all":
        return ALL_FAULT_KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind(s) {', '.join(unknown)}; allowed: {', '.join(ALL_FAULT_KINDS)}, "
            "all, none"
        )
    return kinds


def _bugs(text: str) -> tuple[str, ...]:
    bugs = tuple(b.strip() for b in text.split(",") if b.strip() and b.strip() != "none")
    unknown = [b for b in bugs if b not in KNOWN_BUGS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown bug(s) {', '.join(unknown)}; allowed: {', '.join(KNOWN_BUGS)}")
    return bugs


def _placement(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in (x.strip() for x in text.split(",")):
        node, sep, region = item.partition("=")
        if not sep or not node.strip() or not region.strip():
            raise argparse.ArgumentTypeError(f"--placement wants NODE=REGION,..., got {item!r}")
        pairs.append((node.strip(), region.strip()))
    return tuple(pairs)


def _read_weights(text: str) -> tuple[float, ...]:
    weights = dict.fromkeys(LEVELS, 0.0)
    for item in (x.strip() for x in text.split(",") if x.strip()):
        level, sep, weight = item.partition("=")
        if not sep or level.strip() not in weights:
            raise argparse.ArgumentTypeError(
                f"--read-weights wants LEVEL=WEIGHT,... with levels {', '.join(LEVELS)}; got {item!r}")
        try:
            weights[level.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--read-weights: {weight!r} is not a number") from None
    return tuple(weights.values())


def _shapes(text: str) -> tuple[str, ...]:
    shapes = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [x for x in shapes if x not in PARTITION_SHAPES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown partition shape(s) {', '.join(unknown)}; allowed: {', '.join(PARTITION_SHAPES)}")
    return shapes


def default_faults(shards: int) -> tuple[str, ...]:
    """The default fault mix: the standard kinds, and ``rebalance`` with shards to move."""
    return SHARDED_FAULT_KINDS if shards > 1 else FAULT_KINDS


def _indexes(text: str) -> tuple[int, ...]:
    if text in ("", "none"):
        return ()
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep-faults wants comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exapyte.sim",
        description="Deterministic simulation of an exapyte cluster: many seeds, replayable, shrunk.",
    )
    p.add_argument("--protocol", choices=registry.names(), default="raft",
                   help="consensus protocol")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds to run")
    p.add_argument("--nodes", type=int, choices=[3, 5], default=None, help="nodes n1..nN (default 3)")
    p.add_argument("--placement", type=_placement, default=(), metavar="NODE=REGION,...",
                   help="the nodes by name, each in its region (a topology's), instead of --nodes")
    p.add_argument("--shards", type=int, default=1,
                   help="replica groups (the sharded distribution, 3 replicas each; default 1: "
                        "one centralized group)")
    p.add_argument("--regions", type=int, default=1,
                   help="deal the nodes over this many regions (default 1)")
    p.add_argument("--replication", choices=("sync", "async", "optimized"), default=None,
                   help="replication strategy (default: the config's, sync here); async and "
                        "optimized differ from sync only with --regions > 1")
    p.add_argument("--faults", type=_faults, default=None,
                   help=f"comma-separated: {','.join(ALL_FAULT_KINDS)} (or all, none); default all "
                        f"({REBALANCE} only with --shards > 1)")
    p.add_argument("--ops", type=int, default=SimSpec(seed=0).ops, help="operation budget per seed")
    p.add_argument("--clients", type=int, default=SimSpec(seed=0).clients)
    p.add_argument("--keys", type=int, default=None,
                   help=f"keys of the workload (default {SimSpec(seed=0).keys}, or two per shard)")
    p.add_argument("--fault-seconds", type=float, default=SimSpec(seed=0).fault_s,
                   help="simulated seconds of the fault phase")
    p.add_argument("--quiet-seconds", type=float, default=SimSpec(seed=0).quiet_s,
                   help="simulated seconds of quiet after the heal, before the final reads")
    p.add_argument("--read-weights", type=_read_weights, default=None, metavar="LEVEL=W,...",
                   help="how often a read asks for each level (levels not named: 0; default "
                        + ",".join(f"{lv}={w:g}" for lv, w in zip(LEVELS, READ_LEVEL_WEIGHTS, strict=True))
                        + ")")
    p.add_argument("--shapes", type=_shapes, default=(), metavar="SHAPES",
                   help=f"partition shapes drawn, comma-separated: {','.join(PARTITION_SHAPES)} "
                        "(default: isolate-node,majority-minority,bridge,one-way,random,mute)")
    p.add_argument("--keep-faults", type=_indexes, default=None,
                   help="replay only these planned faults (indexes, as printed by a shrink)")
    p.add_argument("--keep-unsynced", action="store_true",
                   help="crashes keep unsynced writes (default: they are lost)")
    p.add_argument("--strong-only", action="store_true",
                   help="every op strong (default: reads at mixed consistency levels, judged by "
                        "the per-level checkers)")
    p.add_argument("--bugs", type=_bugs, default=(),
                   help=f"known product bugs to switch on, comma-separated: {','.join(KNOWN_BUGS)}")
    p.add_argument("--workers", type=int, default=1, help="worker processes for many seeds")
    p.add_argument("--no-shrink", action="store_true", help="do not shrink failing seeds")
    p.add_argument("--json", action="store_true", help="one JSON object per seed, then a summary")
    p.add_argument("--history", type=Path, default=None,
                   help="write the JSONL history here (with many seeds: the failing ones, "
                        "as NAME-SEED.jsonl)")
    return p


def _history_path(base: Path, seed: int, many: bool) -> Path:
    if not many:
        return base
    return base.with_name(f"{base.stem}-{seed}{base.suffix or '.jsonl'}")


def spec_from_args(args: argparse.Namespace) -> SimSpec:
    """The first seed's spec from the parsed arguments, with the defaults ``main`` applies
    (nodes: the placement's, else 3; keys: 4, or two per shard); SimSpec refuses what does not
    fit. Parsing a printed replay command with it gives back the spec that printed it."""
    keys = args.keys
    if keys is None:
        keys = SimSpec(seed=0).keys if args.shards == 1 else 2 * args.shards
    return SimSpec(
        seed=args.seed,
        nodes=len(args.placement) if args.placement else (args.nodes or 3),
        protocol=args.protocol,
        shards=args.shards,
        regions=args.regions,
        replication=args.replication,
        faults=args.faults,
        ops=args.ops,
        clients=args.clients,
        keys=keys,
        fault_s=args.fault_seconds,
        keep_faults=args.keep_faults,
        lose_unsynced=not args.keep_unsynced,
        mixed_levels=not args.strong_only,
        bugs=args.bugs,
        placement=args.placement,
        read_weights=args.read_weights,
        shapes=args.shapes,
        quiet_s=args.quiet_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.faults is None:
        args.faults = default_faults(args.shards)
    elif args.shards == 1 and REBALANCE in args.faults:
        if args.faults != ALL_FAULT_KINDS:
            print(f"--faults {REBALANCE} needs --shards > 1 (replicas of shards to move)",
                  file=sys.stderr)
            return 2
        args.faults = tuple(k for k in args.faults if k != REBALANCE)
    if args.keys is None:
        args.keys = SimSpec(seed=0).keys if args.shards == 1 else 2 * args.shards
    if args.seeds < 1 or args.ops < 1 or args.clients < 1 or args.keys < 1 or args.shards < 1:
        print("--seeds, --ops, --clients, --keys and --shards must be >= 1", file=sys.stderr)
        return 2
    if args.placement:
        if args.nodes is not None and args.nodes != len(args.placement):
            print(f"--nodes {args.nodes} and a --placement of {len(args.placement)} nodes disagree",
                  file=sys.stderr)
            return 2
        if args.regions != 1:
            print("--placement gives the nodes' regions; --regions does not go with it", file=sys.stderr)
            return 2
        args.nodes = len(args.placement)
    elif args.nodes is None:
        args.nodes = 3
    if not 1 <= args.regions <= args.nodes:
        print(f"--regions must be in 1..{args.nodes} (each region holds a node)", file=sys.stderr)
        return 2
    console = Console(highlight=False, soft_wrap=True)
    try:
        base = spec_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    specs = [replace(base, seed=args.seed + i) for i in range(args.seeds)]
    many = args.seeds > 1
    started = time.perf_counter()
    failures: list[SimResult] = []
    sim_ns = 0
    events = 0
    for result in run_seeds(specs, workers=args.workers):
        sim_ns += result.sim_ns
        events += result.counters.get("events", 0)
        if args.json:
            print(json.dumps(result.to_json(), sort_keys=True), flush=True)
        else:
            print(result.summary_line(), flush=True)
        if result.ok:
            continue
        failures.append(result)
        if args.history is not None:
            _write_history(result, _history_path(args.history, result.seed, many))
        if not args.json:
            console.print(f"  [red]{result.check}[/red]: {result.detail}")
            if result.check != "levels" and result.levels is False:
                console.print(f"  also levels: {_level_summary(result)}")
            console.print(f"  replay: {result.spec.replay_command()}")
    if args.history is not None and not many and not failures:
        _write_history(run_seed(specs[0], keep_history=True), args.history)
    wall = time.perf_counter() - started
    shrunk_lines = []
    if failures and not args.no_shrink:
        first = failures[0]
        shrunk = shrink(first)
        spec = shrunk.shrunk.spec
        kept = shrunk.shrunk_faults()
        shrunk_lines = [
            shrunk.describe(),
            (
                f"shrunk parameters: ops={spec.ops} faults={len(kept)} keep_faults="
                f"{','.join(map(str, spec.keep_faults)) if spec.keep_faults is not None else 'all'}"
            ),
            *[f"  fault {f.describe()}" for f in kept],
            f"replay shrunk: {spec.replay_command()}",
        ]
        if args.json:
            print(json.dumps({"shrunk": shrunk.shrunk.to_json(), "original_seed": first.seed,
                              "reruns": shrunk.runs}, sort_keys=True))
        else:
            for line in shrunk_lines:
                print(line)
    ratio = (sim_ns / NS_PER_S) / wall if wall > 0 else 0.0
    summary = {
        "seeds": len(specs),
        "failures": len(failures),
        "failing_seeds": [f.seed for f in failures],
        "sim_s": round(sim_ns / NS_PER_S, 3),
        "wall_s": round(wall, 3),
        "speed_ratio": round(ratio, 1),
        "seeds_per_s": round(len(specs) / wall, 2) if wall > 0 else 0.0,
        "events": events,
    }
    if args.json:
        print(json.dumps({"summary": summary}, sort_keys=True))
    else:
        shards = f", {args.shards} shards" if args.shards > 1 else ""
        table = Table(title=f"exapyte simulator: {args.protocol}, {args.nodes} nodes{shards}, faults "
                            f"{','.join(args.faults) or 'none'}")
        for column in ("seeds run", "failures", "sim time", "wall time", "speed ratio", "seeds/s"):
            table.add_column(column, justify="right")
        table.add_row(
            str(summary["seeds"]),
            str(summary["failures"]),
            f"{summary['sim_s']:.1f} s",
            f"{summary['wall_s']:.1f} s",
            f"{summary['speed_ratio']:.0f}x",
            f"{summary['seeds_per_s']:.1f}",
        )
        console.print(table)
        if failures:
            console.print(f"failing seeds: {' '.join(str(f.seed) for f in failures)}")
    return 1 if failures else 0


#: The session guarantees among the level checkers' checks (shown first in a summary).
SESSION_CHECKS = ("read-your-writes", "monotonic-reads", "monotonic-writes", "writes-follow-reads")


def _level_summary(result: SimResult) -> str:
    """The level checkers' findings of a run whose verdict is another check: how many of each
    check, and one cause (a session guarantee's first, when one is broken)."""
    counts = Counter(name for name, _ in result.level_violations)
    found = ", ".join(f"{name} x{n}" for name, n in counts.items()) or result.levels_detail
    example = next((v for v in result.level_violations if v[0] in SESSION_CHECKS),
                   result.level_violations[0] if result.level_violations else None)
    return found + (f"; e.g. {example[0]}: {example[1]}" if example else "")


def _write_history(result: SimResult, path: Path) -> None:
    if not result.history_jsonl:
        result = run_seed(result.spec, keep_history=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.history_jsonl)
    print(f"history: {path}")
