"""The replication demo's plots (matplotlib, no display): write latency CDFs per client region,
replica lag over time, writes lost with a region, reads served per region and level. Each
function reads ``results.json``'s content only, so plots can be redrawn from a saved run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first

from exapyte.demos.plots import cdf  # noqa: E402 - one empirical CDF for every demo's plots

COLORS = {"sync": "tab:blue", "async": "tab:orange", "optimized": "tab:green"}
REGION_STYLES = ("-", "--", ":", "-.")


def latency_cdfs(results: dict[str, Any], path: Path) -> Path:
    regions = results["topology"]["regions"]
    fig, axes = plt.subplots(1, len(regions), figsize=(5 * len(regions), 4), squeeze=False)
    for ax, region in zip(axes[0], regions, strict=True):
        for strategy, entry in results["strategies"].items():
            lat = entry["latency"].get(region, {}).get("latencies_ms", [])
            if lat:
                xs, ys = cdf(lat)
                ax.step(xs, ys, where="post", label=strategy, color=COLORS.get(strategy))
        share = results["write_mix"].get(region, 0.0)
        ax.set_title(f"write latency, clients in {region} ({share:.0%} of writes)")
        ax.set_xlabel("ms (simulated)")
        ax.set_ylabel("fraction of acknowledged writes")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def lag_over_time(results: dict[str, Any], path: Path) -> Path:
    strategies = list(results["strategies"])
    regions = results["topology"]["regions"]
    fig, axes = plt.subplots(len(strategies), 1, figsize=(10, 3 * len(strategies)), squeeze=False,
                             sharex=True)
    for ax, strategy in zip(axes[:, 0], strategies, strict=True):
        series = results["strategies"][strategy]["lag"]["series"]
        ts = series["t_s"]
        for style, region in zip(REGION_STYLES, regions, strict=False):
            ys = [float("nan") if y is None else y for y in series["mean_by_region"][region]]
            ax.plot(ts, ys, style, label=f"replicas in {region}")
        ax.set_title(f"{strategy}: entries behind the group leader's commit (mean over replicas)")
        ax.set_ylabel("entries")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("simulated seconds into the measured window")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def lost_writes(results: dict[str, Any], path: Path) -> Path:
    strategies = list(results["strategies"])
    before = [results["strategies"][s]["loss"]["lost_before_cut"] for s in strategies]
    after = [results["strategies"][s]["loss"]["lost_after_cut"] for s in strategies]
    available = [results["strategies"][s]["loss"]["shards_available"] for s in strategies]
    shards = [len(results["strategies"][s]["loss"]["shards"]) for s in strategies]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(strategies))
    ax.bar(xs, before, color=[COLORS.get(s) for s in strategies], label="acknowledged before the cut")
    ax.bar(xs, after, bottom=before, color=[COLORS.get(s) for s in strategies], alpha=0.5,
           hatch="//", label="acknowledged between the cut and the crash")
    for x, b, a, av, n in zip(xs, before, after, available, shards, strict=True):
        ax.annotate(f"{b + a} lost\n{av}/{n} shards writable", (x, b + a), ha="center",
                    va="bottom", fontsize="small")
    ax.set_xticks(list(xs), strategies)
    ax.set_ylabel("acknowledged writes no survivor holds")
    ax.set_title(f"losing {results['loss_region']}: cut off, then its nodes crashed")
    ax.margins(y=0.25)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def reads_served(results: dict[str, Any], path: Path, levels: tuple[str, ...]) -> Path:
    strategies = list(results["strategies"])
    regions = results["topology"]["regions"]
    fig, axes = plt.subplots(len(strategies), len(regions), figsize=(4.5 * len(regions),
                             3 * len(strategies)), squeeze=False, sharey=True)
    for row, strategy in enumerate(strategies):
        reads = results["strategies"][strategy]["reads"]
        for col, client_region in enumerate(regions):
            ax = axes[row, col]
            bottom = [0] * len(levels)
            for style_i, served_in in enumerate(regions):
                counts = [reads[client_region][lv]["served_by_region"].get(served_in, 0) for lv in levels]
                ax.bar(range(len(levels)), counts, bottom=bottom, label=f"served in {served_in}",
                       color=f"C{style_i}")
                bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
            ax.set_xticks(range(len(levels)), [lv.replace("_", "\n") for lv in levels], fontsize="x-small")
            ax.set_title(f"{strategy}: clients in {client_region}", fontsize="small")
            if col == 0:
                ax.set_ylabel("reads")
    axes[0, -1].legend(fontsize="x-small", loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_all(results: dict[str, Any], out_dir: Path) -> list[Path]:
    from exapyte.demos.replication import LEVELS

    return [
        latency_cdfs(results, out_dir / "write_latency_cdf.png"),
        lag_over_time(results, out_dir / "replica_lag.png"),
        lost_writes(results, out_dir / "lost_writes.png"),
        reads_served(results, out_dir / "reads_by_region.png", LEVELS),
    ]
