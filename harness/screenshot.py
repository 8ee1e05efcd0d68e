"""Render a report in headless Chromium and save a PNG: ``python -m harness.screenshot REPORT [PNG]``.

Used to check that ``report.html`` opens and reads well in a real browser. Chromium is looked up
on PATH (``chromium``, ``chromium-browser``, ``google-chrome``); install it with
``apt-get install -y chromium``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["BROWSERS", "ChromiumMissing", "find_chromium", "screenshot"]

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
SCREENSHOT_TIMEOUT_S = 90.0


class ChromiumMissing(RuntimeError):
    """No headless browser on PATH."""


def find_chromium() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html_path: str | Path, png_path: str | Path, *, width: int = 1400, height: int = 2000) -> Path:
    """Write a ``width`` x ``height`` PNG of ``html_path`` as headless Chromium renders it."""
    browser = find_chromium()
    if browser is None:
        raise ChromiumMissing(f"no headless browser on PATH (tried {', '.join(BROWSERS)}); "
                              "install one with: apt-get install -y chromium")
    html_path = Path(html_path).resolve()
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    if png_path.exists():
        png_path.unlink()
    with tempfile.TemporaryDirectory(prefix="exapyte-chromium-") as profile:
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png_path}",
            f"--window-size={width},{height}", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
            html_path.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SCREENSHOT_TIMEOUT_S, check=False)
    if not png_path.exists() or png_path.stat().st_size == 0:
        raise RuntimeError(f"{browser} wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return png_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.screenshot", description=__doc__)
    parser.add_argument("report", help="an HTML file, e.g. store/latest/report.html")
    parser.add_argument("png", nargs="?", help="output PNG (default: next to the report, report.png)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)
    out = Path(args.png) if args.png else Path(args.report).with_suffix(".png")
    try:
        print(screenshot(args.report, out, width=args.width, height=args.height))
    except ChromiumMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
