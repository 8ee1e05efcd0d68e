"""Benchmark of the linearizability checker against Porcupine's published figures.

Times every etcd log and every kv log of the shared corpus (reading excluded: the figure is the
search, as in Porcupine's test), takes the best of a few rounds per file, and prints a table
next to Porcupine's reference numbers from the corpus README: 0.46 s for all 102 etcd logs and
about 150 ms for the slowest single log, on a 2-core machine. The corpus here may hold only some
of those 102 logs, so totals are compared per log (mean time per log) as well as in sum.

Writes the measurements to ``bench/results/checker.json``.

    .venv/bin/python bench/checker.py [--rounds N] [--histories DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from harness.checker import DEFAULT_MODEL_BY_FORMAT, check, get_model, read_history  # noqa: E402

PORCUPINE_ETCD_TOTAL_S = 0.46
PORCUPINE_ETCD_LOGS = 102
PORCUPINE_ETCD_SLOWEST_S = 0.150
GOAL_RATIO_MAX = 10.0


def _histories_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    env = os.environ.get("EXAPYTE_HISTORIES")
    return Path(env) if env else REPO.parent / "shared" / "data" / "histories"


def _time_files(paths: list[Path], rounds: int) -> dict[str, dict[str, object]]:
    measured: dict[str, dict[str, object]] = {}
    for path in paths:
        started = perf_counter()
        history = read_history(path)
        read_s = perf_counter() - started
        model = get_model(DEFAULT_MODEL_BY_FORMAT[history.format])
        best = float("inf")
        verdict: object = None
        for _ in range(rounds):
            started = perf_counter()
            result = check(model, history)
            best = min(best, perf_counter() - started)
            verdict = result.valid
        measured[path.name] = {"seconds": best, "read_seconds": read_s, "valid": verdict, "ops": len(history.operations)}
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="runs per file; the best is kept (default 3)")
    parser.add_argument("--histories", help="corpus directory (default: ../shared/data/histories)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "checker.json")
    args = parser.parse_args(argv)
    root = _histories_dir(args.histories)
    etcd_logs = sorted((root / "porcupine" / "jepsen").glob("etcd_*.log"))
    kv_logs = sorted((root / "porcupine" / "kv").glob("*.txt"))
    if not etcd_logs:
        print(f"no etcd logs under {root}", file=sys.stderr)
        return 2

    etcd = _time_files(etcd_logs, args.rounds)
    kv = _time_files(kv_logs, args.rounds)
    etcd_total = sum(float(m["seconds"]) for m in etcd.values())  # type: ignore[arg-type]
    slowest_name, slowest = max(etcd.items(), key=lambda item: float(item[1]["seconds"]))  # type: ignore[arg-type]
    slowest_s = float(slowest["seconds"])  # type: ignore[arg-type]
    per_log = etcd_total / len(etcd)
    porcupine_per_log = PORCUPINE_ETCD_TOTAL_S / PORCUPINE_ETCD_LOGS
    kv_total = sum(float(m["seconds"]) for m in kv.values())  # type: ignore[arg-type]
    ratio_total = per_log / porcupine_per_log
    ratio_slowest = slowest_s / PORCUPINE_ETCD_SLOWEST_S

    table = Table(title=f"Linearizability checker vs Porcupine (best of {args.rounds})")
    table.add_column("measure")
    table.add_column("exapyte", justify="right")
    table.add_column("Porcupine (Go)", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row(
        f"etcd logs, total ({len(etcd)} logs here, {PORCUPINE_ETCD_LOGS} in Porcupine's)",
        f"{etcd_total:.3f} s",
        f"{PORCUPINE_ETCD_TOTAL_S:.2f} s",
        "",
    )
    etcd_read = sum(float(m["read_seconds"]) for m in etcd.values())  # type: ignore[arg-type]
    table.add_row("etcd logs, reading the files (not compared)", f"{etcd_read:.3f} s", "", "")
    table.add_row(
        "etcd logs, mean per log",
        f"{per_log * 1000:.2f} ms",
        f"{porcupine_per_log * 1000:.2f} ms",
        f"{ratio_total:.2f}x",
    )
    table.add_row(
        f"etcd, slowest single log ({slowest_name})",
        f"{slowest_s * 1000:.1f} ms",
        f"~{PORCUPINE_ETCD_SLOWEST_S * 1000:.0f} ms",
        f"{ratio_slowest:.2f}x",
    )
    for name, m in kv.items():
        table.add_row(f"kv {name} ({m['ops']} ops)", f"{float(m['seconds']) * 1000:.1f} ms", "-", "")  # type: ignore[arg-type]
    console = Console()
    console.print(table)
    goal_met = ratio_total <= GOAL_RATIO_MAX and ratio_slowest <= GOAL_RATIO_MAX
    console.print(f"goal (within {GOAL_RATIO_MAX:g}x of Porcupine): {'met' if goal_met else 'NOT met'}")

    report = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "etcd": {
            "logs": len(etcd),
            "total_s": etcd_total,
            "read_total_s": etcd_read,
            "mean_per_log_s": per_log,
            "slowest_log": slowest_name,
            "slowest_s": slowest_s,
            "ratio_mean_per_log_vs_porcupine": ratio_total,
            "ratio_slowest_vs_porcupine": ratio_slowest,
            "per_log": etcd,
        },
        "kv": {"files": len(kv), "total_s": kv_total, "per_file": kv},
        "porcupine_reference": {
            "etcd_logs": PORCUPINE_ETCD_LOGS,
            "etcd_total_s": PORCUPINE_ETCD_TOTAL_S,
            "etcd_slowest_s": PORCUPINE_ETCD_SLOWEST_S,
        },
        "goal_ratio_max": GOAL_RATIO_MAX,
        "goal_met": goal_met,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
