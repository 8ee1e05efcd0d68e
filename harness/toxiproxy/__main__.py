"""``python -m harness.toxiproxy``: run the Toxiproxy-compatible server until SIGINT/SIGTERM.

Options accept both spellings, ``--port 8474`` and the reference server's ``-port 8474``, so the
module can stand in for a ``toxiproxy-server`` binary. Logs are JSON lines on stdout; the
``LOG_LEVEL`` environment variable sets the level (default ``info``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from .limits import API_HOST_DEFAULT, API_PORT_DEFAULT, API_VERSION
from .proxy import ListenError
from .server import ToxiproxyServer


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "level": record.levelname.lower(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(record.created)),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.toxiproxy",
        description="exapyte's Toxiproxy-compatible fault proxy (HTTP API of Toxiproxy 2.x).",
    )
    parser.add_argument(
        "--host", "-host", default=API_HOST_DEFAULT, help=f"API host (default {API_HOST_DEFAULT})"
    )
    parser.add_argument(
        "--port",
        "-port",
        type=int,
        default=API_PORT_DEFAULT,
        help=f"API port, 0 picks a free one (default {API_PORT_DEFAULT})",
    )
    parser.add_argument(
        "--config", "-config", metavar="FILE", help="JSON array of proxies to create at startup"
    )
    parser.add_argument(
        "--seed", "-seed", type=int, help="seed for toxicity, jitter and slicer randomness"
    )
    parser.add_argument(
        "--version", "-version", action="store_true", help="print the API version and exit"
    )
    return parser


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger("harness.toxiproxy")
    root.addHandler(handler)
    level = os.environ.get("LOG_LEVEL", "info").upper()
    root.setLevel(getattr(logging, level, logging.INFO) if level != "TRACE" else logging.DEBUG)


async def serve(args: argparse.Namespace) -> int:
    server = ToxiproxyServer(args.host, args.port, seed=args.seed)
    try:
        await server.start()
    except (ListenError, OSError) as exc:
        logging.getLogger("harness.toxiproxy").error("cannot serve the API: %s", exc)
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        if args.config:
            await server.load_config(args.config)
        await stopping.wait()
    finally:
        await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(API_VERSION)
        return 0
    configure_logging()
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
