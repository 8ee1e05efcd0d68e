"""``latency.png`` and ``rate.png`` of a run, with fault intervals shaded (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
from matplotlib.patches import Patch  # noqa: E402

from harness.history import Op, nemesis_intervals, pair_ops, read_events  # noqa: E402

__all__ = ["FAULT_COLOURS", "TYPE_COLOURS", "write_plots"]

TYPE_COLOURS = {"ok": "#2ca02c", "fail": "#ff7f0e", "info": "#d62728"}
FAULT_COLOURS = {
    "partition": "#9467bd", "kill": "#d62728", "pause": "#8c564b", "latency": "#17becf",
    "bandwidth": "#bcbd22", "reset": "#e377c2", "clock": "#1f77b4", "transfer": "#7f7f7f", "rebalance": "#8c564b",
}
RATE_BUCKET_S = 1.0


def _shade(ax: Any, intervals: Sequence[dict[str, Any]]) -> list[Patch]:
    seen: dict[str, Patch] = {}
    for interval in intervals:
        fault = interval["fault"]
        colour = FAULT_COLOURS.get(fault, "#7f7f7f")
        ax.axvspan(interval["start_ns"] / 1e9, interval["end_ns"] / 1e9, color=colour, alpha=0.15, lw=0)
        seen.setdefault(fault, Patch(color=colour, alpha=0.3, label=fault))
    return list(seen.values())


def latency_plot(ops: Sequence[Op], intervals: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(11, 5), dpi=100)
    try:
        fs = sorted({op.f for op in ops})
        markers = dict(zip(fs, "o^sDvP*X"))
        handles = _shade(ax, intervals)
        for f in fs:
            for kind in ("ok", "fail", "info"):
                chosen = [op for op in ops if op.f == f and op.type == kind and op.end_ns is not None]
                if not chosen:
                    continue
                xs = [op.call_ns / 1e9 for op in chosen]
                ys = [max(0.01, (op.end_ns - op.call_ns) / 1e6) for op in chosen]  # type: ignore[operator]
                ax.scatter(xs, ys, s=9, marker=markers.get(f, "o"), color=TYPE_COLOURS[kind], alpha=0.6,
                           label=f"{f} {kind}", linewidths=0)
        ax.set_yscale("log")
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.25)
        scatter_handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=scatter_handles + handles, fontsize=8, loc="upper left", ncol=2, framealpha=0.85)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def rate_plot(ops: Sequence[Op], intervals: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(11, 4), dpi=100)
    try:
        end_s = max(((op.end_ns or op.call_ns) / 1e9 for op in ops), default=1.0)
        buckets = int(end_s / RATE_BUCKET_S) + 1
        handles = _shade(ax, intervals)
        xs = [i * RATE_BUCKET_S for i in range(buckets)]
        for kind in ("ok", "fail", "info"):
            counts = [0] * buckets
            for op in ops:
                if op.type == kind and op.end_ns is not None:
                    counts[min(buckets - 1, int(op.end_ns / 1e9 / RATE_BUCKET_S))] += 1
            ax.step(xs, [c / RATE_BUCKET_S for c in counts], where="post", color=TYPE_COLOURS[kind], label=kind, lw=1.4)
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("completions per second")
        ax.set_title(title)
        ax.grid(True, alpha=0.25)
        line_handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=line_handles + handles, fontsize=8, loc="upper left", ncol=2, framealpha=0.85)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def write_plots(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    events = read_events(run_dir / "history.jsonl")
    ops = pair_ops(events)
    intervals = nemesis_intervals(events, results.get("end_ns"))
    name = results.get("test", run_dir.name)
    latency_plot(ops, intervals, run_dir / "latency.png", f"{name}: latency of each op")
    rate_plot(ops, intervals, run_dir / "rate.png", f"{name}: throughput")
    return [run_dir / "latency.png", run_dir / "rate.png"]
