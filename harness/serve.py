"""``python -m harness serve``: browse past runs on 127.0.0.1 (stdlib ``http.server``).

``/`` lists every run in the store (newest first) with its verdict, ops and faults, read from
each ``results.json``; every other path is a file of the store (reports, plots, histories, logs).
"""

from __future__ import annotations

import argparse
import functools
import html
import json
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness.cli import Subcommand

__all__ = ["SUBCOMMAND", "index_html", "list_runs", "make_server"]


def list_runs(store: Path) -> list[dict[str, Any]]:
    """Every run with a results.json, newest first."""
    runs = []
    for results in store.glob("*/*/results.json"):
        try:
            data = json.loads(results.read_text())
        except (OSError, ValueError):
            continue
        run_dir = results.parent
        runs.append({
            "path": f"{run_dir.parent.name}/{run_dir.name}",
            "test": data.get("test", run_dir.parent.name),
            "started": data.get("started", ""),
            "valid": data.get("valid"),
            "ops": data.get("ops", 0),
            "faults": len(data.get("faults", [])),
            "seed": data.get("seed"),
        })
    return sorted(runs, key=lambda r: r["started"], reverse=True)


def index_html(store: Path) -> str:
    rows = []
    for run in list_runs(store):
        word = "valid" if run["valid"] is True else "INVALID" if run["valid"] is False else "unknown"
        colour = {"valid": "#1f7a3f", "INVALID": "#b42318"}.get(word, "#a15c07")
        path = html.escape(run["path"])
        rows.append(
            f'<tr><td><a href="/{path}/report.html">{html.escape(run["test"])}</a></td>'
            f'<td style="color:{colour};font-weight:600">{word}</td><td>{html.escape(run["started"])}</td>'
            f'<td>{run["ops"]}</td><td>{run["faults"]}</td><td>{html.escape(str(run["seed"]))}</td>'
            f'<td><a href="/{path}/">files</a></td></tr>'
        )
    body = "".join(rows) or '<tr><td colspan="7">no runs yet: python -m harness test --topology three-region</td></tr>'
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>exapyte runs</title><style>"
        "body{font:14px system-ui,sans-serif;margin:24px;color:#1d2330}table{border-collapse:collapse}"
        "td,th{padding:6px 12px;border-bottom:1px solid #e6e9ef;text-align:left}th{background:#f0f2f6}</style>"
        f"</head><body><h1>exapyte test runs</h1><p>store: {html.escape(str(store))}</p><table><tr><th>test</th>"
        f"<th>verdict</th><th>started</th><th>ops</th><th>faults</th><th>seed</th><th></th></tr>{body}</table>"
        "</body></html>\n"
    )


class _Handler(SimpleHTTPRequestHandler):
    store: Path

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path in ("/", "/index.html"):
            data = index_html(self.store).encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass


def make_server(store: Path, port: int = 8080, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    store = store.resolve()
    handler = type("StoreHandler", (_Handler,), {"store": store})
    return ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(store)))


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default="store", metavar="DIR", help="the store to browse (default: store)")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0 picks one)")


def _run(args: argparse.Namespace) -> int:
    store = Path(args.store)
    if not store.is_dir():
        print(f"no store at {store}: run a test first (python -m harness test --topology three-region)")
        return 2
    server = make_server(store, args.port)
    print(f"serving {store.resolve()} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


SUBCOMMAND = Subcommand(name="serve", help="browse past runs on 127.0.0.1", description=__doc__ or "",
                        add_arguments=_add_arguments, run=_run)
