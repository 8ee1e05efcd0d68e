"""Storage benchmark: durable writes per second of every backend against plain sqlite3.

    python bench/storage.py [--seconds S] [--json PATH] [--dir DIR] [--check]

Every configuration writes 16-byte keys (drawn from a fixed key space, so the run mixes creates
and overwrites) with 100-byte values in batches of 1 and of 100, each batch one
``apply(..., sync=True)``. The baseline is the standard library's ``sqlite3`` doing the same
work the exapyte sqlite backend does, with the same settings (WAL, ``synchronous=FULL``), the
same ``kv`` table and one transaction per batch: ``BEGIN``, one ``SELECT ... IN`` for the
previous records, one ``executemany`` upsert, ``COMMIT``. Its ratio to the exapyte sqlite
backend is the cost of SQLAlchemy and of the storage layer's own checks.

Configurations run in interleaved rounds so that drift of the machine (page cache, other load)
hits all of them alike. Results go to a table and to ``bench/results/storage.json`` (measured
numbers and machine info only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import sqlalchemy  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from exapyte import limits
from exapyte.storage import Put, Storage, open_storage  # noqa: E402

KEY_SPACE = 200_000  # distinct keys the workload draws from
KEY_BYTES = 16
VALUE_BYTES = 100
BATCH_SIZES = (1, 100)
ROUNDS = 5  # interleaved rounds per configuration
TIERED_HOT_KEYS = 10_000
OVERHEAD_MAX = 1.5  # --check fails when sqlite3 / exapyte-sqlite at batch 100 is above this
SEED = 20240611


@dataclass
class Measure:
    name: str
    batch: int
    ops: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def writes_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, object]:
        latencies = sorted(self.latencies)
        return {
            "backend": self.name,
            "batch": self.batch,
            "writes": self.ops,
            "seconds": round(self.seconds, 4),
            "writes_per_s": round(self.writes_per_s, 1),
            "batches_per_s": round(len(latencies) / self.seconds, 1) if self.seconds else 0.0,
            "batch_latency_p50_ms": round(percentile(latencies, 0.50) * 1e3, 4),
            "batch_latency_p99_ms": round(percentile(latencies, 0.99) * 1e3, 4),
        }


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def key_of(n: int) -> str:
    return f"k{n:0{KEY_BYTES - 1}d}"


class Workload:
    """Deterministic batches of (key, value) pairs."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._values = [self._random.randbytes(VALUE_BYTES) for _ in range(64)]

    def batch(self, size: int) -> list[tuple[str, bytes]]:
        rand = self._random.randrange
        return [(key_of(rand(KEY_SPACE)), self._values[rand(64)]) for _ in range(size)]


# --- the writers under test ------------------------------------------------------------------


def exapyte_writer(store: Storage) -> Callable[[list[tuple[str, bytes]]], None]:
    def write(pairs: list[tuple[str, bytes]]) -> None:
        store.apply([Put(key, value) for key, value in pairs], sync=True)

    return write


class PlainSqlite:
    """The baseline: stdlib sqlite3, the same schema, settings and work per batch."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        # The file settings exapyte's sqlite backend uses (exapyte/storage/sqlite.py), so that
        # the ratio measures the storage layer, not a difference in SQLite's configuration.
        self.conn.execute(f"PRAGMA page_size={limits.SQLITE_PAGE_BYTES}")
        self.conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        self.conn.execute(f"PRAGMA cache_size=-{limits.SQLITE_CACHE_KIB}")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(f"PRAGMA wal_autocheckpoint={limits.SQLITE_WAL_CHECKPOINT_PAGES}")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS kv ("
            "key TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL)"
        )
        self._selects: dict[int, str] = {}

    def write(self, pairs: list[tuple[str, bytes]]) -> None:
        conn = self.conn
        keys = list(dict.fromkeys(key for key, _ in pairs))
        select = self._selects.get(len(keys))
        if select is None:
            marks = ",".join("?" * len(keys))
            select = f"SELECT key, value, version FROM kv WHERE key IN ({marks})"
            self._selects[len(keys)] = select
        conn.execute("BEGIN")
        try:
            versions = {key: version for key, _, version in conn.execute(select, keys)}
            final: dict[str, tuple[str, bytes, int]] = {}
            for key, value in pairs:
                version = versions.get(key, 0) + 1
                versions[key] = version
                final[key] = (key, value, version)
            conn.executemany(
                "INSERT INTO kv (key, value, version) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "version = excluded.version",
                list(final.values()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


# --- the run ---------------------------------------------------------------------------------


def machine_info(scratch: str) -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "scratch_dir": scratch,
    }
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            best = ""
            for line in mounts:
                device, mount_point, fs_type, *_ = line.split()
                if scratch.startswith(mount_point) and len(mount_point) >= len(best):
                    best, info["filesystem"] = mount_point, fs_type
    except OSError:
        pass
    return info


def run(seconds: float, scratch: str, console: Console) -> list[Measure]:
    configs: list[tuple[str, int, Callable[[list[tuple[str, bytes]]], None], Callable[[], None]]]
    configs = []
    for batch in BATCH_SIZES:
        memory = open_storage("memory", None)
        sqlite_store = open_storage("sqlite", f"{scratch}/exapyte-sqlite-{batch}.db")
        tiered = open_storage(
            "tiered", f"{scratch}/exapyte-tiered-{batch}.db", hot_keys=TIERED_HOT_KEYS
        )
        plain = PlainSqlite(f"{scratch}/sqlite3-{batch}.db")
        configs += [
            ("memory", batch, exapyte_writer(memory), memory.close),
            ("sqlite", batch, exapyte_writer(sqlite_store), sqlite_store.close),
            ("tiered", batch, exapyte_writer(tiered), tiered.close),
            ("sqlite3 (baseline)", batch, plain.write, plain.close),
        ]
    measures = {(name, batch): Measure(name, batch) for name, batch, _, _ in configs}
    slice_s = seconds / ROUNDS
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("storage benchmark", total=ROUNDS * len(configs))
            for round_number in range(ROUNDS):
                for name, batch, write, _ in configs:
                    progress.update(
                        task, description=f"round {round_number + 1}: {name}, batch {batch}"
                    )
                    workload = Workload(SEED + round_number * 1000 + batch)
                    write(workload.batch(batch))  # warm up statements and caches
                    measure = measures[(name, batch)]
                    start = time.perf_counter()
                    deadline = start + slice_s
                    now = start
                    while now < deadline:
                        pairs = workload.batch(batch)
                        before = time.perf_counter()
                        write(pairs)
                        now = time.perf_counter()
                        measure.latencies.append(now - before)
                        measure.ops += batch
                    measure.seconds += now - start
                    progress.advance(task)
    finally:
        for *_, close in configs:
            close()
    return list(measures.values())


def report(measures: list[Measure], console: Console) -> dict[str, float]:
    by_key = {(m.name, m.batch): m for m in measures}
    table = Table(title="durable writes (sync=True), 16-byte keys, 100-byte values")
    table.add_column("backend")
    table.add_column("batch", justify="right")
    table.add_column("writes/s", justify="right")
    table.add_column("batch p50 ms", justify="right")
    table.add_column("batch p99 ms", justify="right")
    for measure in measures:
        row = measure.as_json()
        table.add_row(
            measure.name,
            str(measure.batch),
            f"{measure.writes_per_s:,.0f}",
            f"{row['batch_latency_p50_ms']:.3f}",
            f"{row['batch_latency_p99_ms']:.3f}",
        )
    console.print(table)
    overhead: dict[str, float] = {}
    for batch in BATCH_SIZES:
        baseline = by_key[("sqlite3 (baseline)", batch)].writes_per_s
        ours = by_key[("sqlite", batch)].writes_per_s
        overhead[str(batch)] = round(baseline / ours, 3) if ours else float("inf")
        console.print(
            f"batch {batch:>3}: sqlite3 / exapyte-sqlite = [bold]{overhead[str(batch)]:.2f}x[/]"
            f"  (SQLAlchemy and storage-layer overhead; target at batch 100: <= {OVERHEAD_MAX}x)"
        )
    return overhead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per configuration")
    parser.add_argument(
        "--json", default=os.path.join(REPO_ROOT, "bench", "results", "storage.json")
    )
    parser.add_argument(
        "--dir",
        default=None,
        help="where the database files go (default: a temporary directory beside --json; "
        "avoid tmpfs, where fsync costs nothing)",
    )
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if the batch-100 overhead > {OVERHEAD_MAX}x"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    console = Console()
    results_dir = os.path.dirname(os.path.abspath(args.json))
    os.makedirs(results_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir or results_dir)
    try:
        console.print(
            f"storage benchmark: {len(BATCH_SIZES) * 4} configurations x {args.seconds:g} s, "
            f"files in {scratch}"
        )
        info = machine_info(scratch)
        measures = run(args.seconds, scratch, console)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    overhead = report(measures, console)
    document = {
        "benchmark": "storage",
        "workload": {
            "key_bytes": KEY_BYTES,
            "value_bytes": VALUE_BYTES,
            "key_space": KEY_SPACE,
            "batch_sizes": list(BATCH_SIZES),
            "seconds_per_configuration": args.seconds,
            "rounds": ROUNDS,
            "tiered_hot_keys": TIERED_HOT_KEYS,
            "sync": True,
        },
        "machine": info,
        "results": [m.as_json() for m in measures],
        "sqlite3_over_exapyte_sqlite": overhead,
        "median_batch_latency_ms": {
            f"{m.name}/{m.batch}": round(statistics.median(m.latencies) * 1e3, 4)
            for m in measures
            if m.latencies
        },
    }
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    console.print(f"wrote {args.json}")
    if args.check and overhead[str(BATCH_SIZES[-1])] > OVERHEAD_MAX:
        console.print(f"[red]overhead above {OVERHEAD_MAX}x at batch {BATCH_SIZES[-1]}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
