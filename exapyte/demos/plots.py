"""The consensus demo's plots (matplotlib, no display): latency CDFs per region, throughput
around the leader kill, the election time distribution. Each function reads ``results.json``'s
content only, so plots can be redrawn from a saved run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first

COLORS = {"raft": "tab:blue", "multipaxos": "tab:orange", "zab": "tab:green"}


def cdf(values: list[float]) -> tuple[list[float], list[float]]:
    ordered = sorted(values)
    n = len(ordered)
    return ordered, [(i + 1) / n for i in range(n)]


def latency_cdfs(results: dict[str, Any], path: Path) -> Path:
    regions = results["topology"]["regions"]
    fig, axes = plt.subplots(1, len(regions), figsize=(5 * len(regions), 4), squeeze=False)
    for ax, region in zip(axes[0], regions, strict=True):
        for protocol, entry in results["protocols"].items():
            lat = entry["main"]["per_region"].get(region, {}).get("latencies_ms", [])
            if lat:
                xs, ys = cdf(lat)
                ax.step(xs, ys, where="post", label=protocol, color=COLORS.get(protocol))
        ax.set_title(f"write latency, clients in {region}")
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of writes")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def throughput_around_kill(results: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    for protocol, entry in results["protocols"].items():
        timeline = entry["main"]["timeline"]
        width = timeline["bin_ms"] / 1000
        counts = timeline["writes_per_bin"]
        per = max(1, round(1.0 / width))  # a one-second rate, ending at each bin
        rates = [sum(counts[max(0, i - per + 1) : i + 1]) / (min(per, i + 1) * width)
                 for i in range(len(counts))]
        xs = [timeline["start_s"] + (i + 1) * width for i in range(len(counts))]
        ax.plot(xs, rates, label=protocol, color=COLORS.get(protocol))
        gap = entry["main"]["gap_s"]
        if gap is not None:
            ax.axvline(gap, color=COLORS.get(protocol), linestyle=":", alpha=0.7)
    ax.axvline(0, color="red", linestyle="--", label="leader killed")
    clock = "seconds" if results.get("mode") == "real" else "simulated seconds"
    ax.set_xlabel(f"{clock} from the leader kill")
    ax.set_ylabel("committed writes/s (over the last second)")
    ax.set_title("throughput around the leader kill (dotted: first 1-s window back at 90%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def election_times(results: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for protocol, entry in results["protocols"].items():
        times = entry["elections"]["times_s"]
        if times:
            xs, ys = cdf(times)
            ax.step(xs, ys, where="post", color=COLORS.get(protocol),
                    label=f"{protocol} ({len(times)} failures)")
    ax.set_xlabel("simulated seconds from the leader's failure to a new serving leader")
    ax.set_ylabel("fraction of failures")
    ax.set_title("election time distribution")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_all(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every plot; the election times only when they were measured (not with --real)."""
    paths = [
        latency_cdfs(results, out_dir / "latency_cdf.png"),
        throughput_around_kill(results, out_dir / "throughput_leader_kill.png"),
    ]
    if any("times_s" in entry.get("elections", {}) for entry in results["protocols"].values()):
        paths.append(election_times(results, out_dir / "election_times.png"))
    return paths
