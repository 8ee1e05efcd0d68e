"""Many groups per node: what idle groups cost, and what shards buy in put throughput.

    python bench/groups.py [--idle-groups 10,1000] [--idle-seconds 5] [--put-seconds 5]
                           [--clients 32] [--shards 8] [--json bench/results/groups.json]

Theory of operation
-------------------
Every cluster is three node processes on 127.0.0.1 (``LocalCluster``, free ports, ``security.mode:
off``: CURVE's cost is measured by ``bench/raft.py``), started and stopped by this script.

- **Idle groups.** For each count G of ``--idle-groups`` a cluster with the sharded strategy, G
  shards and three replicas each (every node hosts every group) and the memory backend starts;
  once every group has a leader and every replica is quiesced, the script samples each node's
  ``peer_frames_sent`` counter and its CPU time (``/proc/PID/stat``) over ``--idle-seconds``.
  Reported: peer frames per second (the whole cluster) and each node's share of a core. Targets:
  the frames of 1,000 groups are at most 1.1x those of 10 groups (idle groups quiesce and only
  node beats travel), and an idle node uses under 5% of a core.
- **Put throughput.** The same load against one group (the centralized strategy) and against
  ``--shards`` shards of three replicas, both on the sqlite backend (fsync before every ack):
  ``--clients`` closed-loop clients, each with one request outstanding, 16-byte keys and
  100-byte values, from ``bench/raft.py``'s load generator (worker processes each running one
  poll loop over hand-framed ZMTP connections, so that the generator takes little of the CPU the
  nodes share): with shards, client ``i`` is pinned to shard ``i mod S``, sends to its leader
  (found before the run) with the group's configuration version, and draws keys of that shard.
  Measured for ``--put-seconds`` after a warm-up, with the nodes' CPU per put. Target: sharded
  throughput at least that of one group. The two runs alternate (one group, shards, shards,
  one group) and their rounds are pooled, so that a drift of the machine's load weighs on both
  alike.

Results go to ``--json`` with the machine and the settings; a table is printed. This is a
benchmark, not a test: it exits 0 whether or not a target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.raft import KEY_SPACE, free_ports, key_of, run_point, workers_for  # noqa: E402
from exapyte import distribution  # noqa: E402
from exapyte.config import load  # noqa: E402
from exapyte.errors import ExapyteError  # noqa: E402
from exapyte.runtime.cluster import LocalCluster  # noqa: E402
from exapyte.wire import CONTROL_GROUP  # noqa: E402

IDLE_FRAMES_RATIO_MAX = 1.1
IDLE_CORE_SHARE_MAX = 0.05
TICK_MS = 10
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _config(dirpath: Path, *, shards: int, backend: str) -> Path:
    ports = free_ports(6)
    cfg: dict[str, Any] = {
        "cluster": {"nodes": [
            {"id": f"n{i + 1}", "port": ports[2 * i], "pub_port": ports[2 * i + 1]}
            for i in range(3)
        ]},
        "network": {"tick_ms": TICK_MS},
        "consensus": {"election_timeout_ticks": 20, "heartbeat_ticks": 2},
        "security": {"mode": "off"},
        "storage": {"backend": backend, "path": str(dirpath / "data" / "{node_id}" / "store.db")},
    }
    if shards > 1:
        cfg["distribution"] = {"strategy": "sharded", "shards": shards, "replication_factor": 3}
    path = dirpath / "cluster.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def _statuses(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    out = {}
    for node_id in cluster.node_ids:
        with cluster.node_client(node_id, timeout_s=5) as c:
            try:
                out[node_id] = c.status()
            except ExapyteError:
                pass
    return out


def _settled(cluster: LocalCluster, groups: int, quiet: bool) -> dict[str, dict[str, Any]] | None:
    st = _statuses(cluster)
    if len(st) != 3:
        return None
    leaders: dict[str, int] = {}
    for s in st.values():
        for group, g in s["groups"].items():
            if g["role"] == "leader" and group != CONTROL_GROUP:  # the shards' groups only
                leaders[group] = leaders.get(group, 0) + 1
            if quiet and not g["quiesced"]:
                return None
    if len(leaders) != groups or any(n != 1 for n in leaders.values()):
        return None
    return st


def _wait(what: str, predicate: Any, timeout_s: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def measure_idle(groups: int, seconds: float, scratch: Path) -> dict[str, Any]:
    path = _config(scratch, shards=groups, backend="memory")
    cluster = LocalCluster(path, scratch / "run")
    cluster.start()
    try:
        started = time.monotonic()
        before = _wait(f"{groups} groups to elect and quiesce",
                       lambda: _settled(cluster, groups, quiet=True))
        settle_s = time.monotonic() - started
        pids = {n: s["pid"] for n, s in before.items()}
        cpu0 = {n: _cpu_s(p) for n, p in pids.items()}
        t0 = time.monotonic()
        frames0 = {n: s["frames"].get("peer_frames_sent", 0) for n, s in before.items()}
        time.sleep(seconds)
        t1 = time.monotonic()
        cpu1 = {n: _cpu_s(p) for n, p in pids.items()}
        after = _statuses(cluster)
        frames1 = {n: s["frames"].get("peer_frames_sent", 0) for n, s in after.items()}
        elapsed = t1 - t0
        still_quiet = all(
            g["quiesced"] for s in after.values() for g in s["groups"].values()
        )
        return {
            "groups": groups,
            "settle_s": round(settle_s, 2),
            "seconds": round(elapsed, 3),
            "peer_frames_per_s": round(sum(frames1[n] - frames0[n] for n in frames1) / elapsed, 1),
            "core_share_by_node": {n: round((cpu1[n] - cpu0[n]) / elapsed, 4) for n in pids},
            "all_quiesced_at_end": still_quiet,
        }
    finally:
        cluster.stop()


def _routes(cfg_path: Path, statuses: dict[str, dict[str, Any]], endpoints: dict[str, str],
            keys_per_shard: int) -> list[dict[str, Any]]:
    """Every shard's group, configuration version and leader endpoint, with keys of that shard
    (``bench.raft.key_of`` numbers, placed by the cluster's own strategy)."""
    strategy, _ = distribution.from_config(load(str(cfg_path), node_id="n1"))
    routes: dict[str, dict[str, Any]] = {}
    for node, status in statuses.items():
        for group, g in status["groups"].items():
            if g["role"] == "leader" and group != CONTROL_GROUP:
                routes[group] = {"group": group, "config_version": g["config_version"],
                                 "leader_endpoint": endpoints[node], "keys": []}
    n = 0
    while any(len(r["keys"]) < keys_per_shard for r in routes.values()):
        key = key_of(n).decode()
        route = routes[strategy.shard_of(key)]
        if len(route["keys"]) < keys_per_shard:
            route["keys"].append(key)
        n += 1
    return [routes[g] for g in sorted(routes)]


def measure_puts(shards: int, clients: int, seconds: float, scratch: Path) -> dict[str, Any]:
    path = _config(scratch, shards=shards, backend="sqlite")
    cluster = LocalCluster(path, scratch / "run")
    cluster.start()
    try:
        statuses = _wait("every group to elect a leader",
                         lambda: _settled(cluster, shards, quiet=False))
        endpoints = cluster.endpoints()
        pids = {n: s["pid"] for n, s in statuses.items()}
        spec: dict[str, Any] = {"kind": "exapyte", "endpoints": endpoints, "pids": pids}
        if shards > 1:
            spec["routes"] = _routes(path, statuses, endpoints, KEY_SPACE // shards)
        else:
            leader = next(n for n, s in statuses.items() if s["groups"]["default"]["role"] == "leader")
            spec["leader_endpoint"] = endpoints[leader]
        point = run_point(f"{shards} group(s)", spec, "put", clients,
                          workers_for(clients, "auto"), seconds)
        nodes_share = sum(v for k, v in point.cpu.items()
                          if k in ("leader", "followers"))  # percent of one core, all nodes
        return {"shards": shards, "ops": point.ops, "ops_per_s": round(point.ops_per_s, 1),
                "p50_ms": round(point.p50_ms, 2), "p99_ms": round(point.p99_ms, 2),
                "failures": point.failures, "redirects": point.redirects,
                "nodes_cpu_ms_per_put": round(10 * nodes_share / point.ops_per_s, 3)
                if point.ops_per_s else None,
                "cpu_percent_of_a_core": point.cpu}
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-groups", default="10,1000")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--put-seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--json", default=str(REPO_ROOT / "bench" / "results" / "groups.json"))
    args = parser.parse_args(argv)
    console = Console()
    counts = [int(x) for x in args.idle_groups.split(",") if x]
    out_dir = Path(args.json).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    idle: list[dict[str, Any]] = []
    puts: list[dict[str, Any]] = []
    plan = [("one group", 1), ("shards", args.shards), ("shards", args.shards), ("one group", 1)]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmark", total=len(counts) + len(plan))
        for groups in counts:
            progress.update(task, description=f"idle: {groups} groups")
            with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                idle.append(measure_idle(groups, args.idle_seconds, Path(tmp)))
            progress.advance(task)
        for label, shards in plan:
            progress.update(task, description=f"puts: {label}")
            with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                puts.append(measure_puts(shards, args.clients, args.put_seconds, Path(tmp)))
            progress.advance(task)

    def pooled(shards: int) -> dict[str, Any]:
        runs = [p for p in puts if p["shards"] == shards]
        ops = sum(p["ops"] for p in runs)
        return {"shards": shards, "ops_per_s": round(ops / (args.put_seconds * len(runs)), 1),
                "ops_per_s_by_round": [p["ops_per_s"] for p in runs],
                "p50_ms": [p["p50_ms"] for p in runs], "p99_ms": [p["p99_ms"] for p in runs],
                "nodes_cpu_ms_per_put": [p["nodes_cpu_ms_per_put"] for p in runs],
                "cpu_percent_of_a_core": [p["cpu_percent_of_a_core"] for p in runs]}

    one, sharded = pooled(1), pooled(args.shards)
    by_groups = {r["groups"]: r for r in idle}
    lo, hi = min(by_groups), max(by_groups)
    frames_ratio = (
        by_groups[hi]["peer_frames_per_s"] / by_groups[lo]["peer_frames_per_s"]
        if by_groups[lo]["peer_frames_per_s"] else float("inf")
    )
    core_max = max(max(r["core_share_by_node"].values()) for r in idle)
    put_ratio = sharded["ops_per_s"] / one["ops_per_s"] if one["ops_per_s"] else float("inf")
    targets = {
        f"idle peer frames {hi} vs {lo} groups <= {IDLE_FRAMES_RATIO_MAX}x": frames_ratio <= IDLE_FRAMES_RATIO_MAX,
        f"idle node < {IDLE_CORE_SHARE_MAX:.0%} of a core": core_max < IDLE_CORE_SHARE_MAX,
        f"puts with {args.shards} shards >= one group": put_ratio >= 1.0,
    }
    table = Table(title="exapyte: many groups per node (3 nodes, loopback)")
    for column in ("measure", "value", "target met"):
        table.add_column(column)
    for r in idle:
        table.add_row(f"idle, {r['groups']} groups: peer frames/s (cluster)",
                      f"{r['peer_frames_per_s']:.1f}", "")
        table.add_row(f"idle, {r['groups']} groups: core share per node",
                      ", ".join(f"{n} {v:.1%}" for n, v in sorted(r["core_share_by_node"].items())), "")
    table.add_row(f"frames ratio {hi}/{lo}", f"{frames_ratio:.2f}x",
                  "yes" if frames_ratio <= IDLE_FRAMES_RATIO_MAX else "NO")
    table.add_row("puts/s, one group", f"{one['ops_per_s']:.0f}", "")
    table.add_row(f"puts/s, {args.shards} shards", f"{sharded['ops_per_s']:.0f}", "")
    table.add_row("put ratio", f"{put_ratio:.2f}x", "yes" if put_ratio >= 1.0 else "NO")
    console.print(table)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "settings": vars(args),
        "idle": idle,
        "puts": {"one_group": one, "sharded": sharded},
        "ratios": {"idle_frames": round(frames_ratio, 3), "puts": round(put_ratio, 3),
                   "idle_core_share_max": core_max},
        "targets_met": targets,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
