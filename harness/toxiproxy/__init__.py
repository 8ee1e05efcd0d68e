"""A Toxiproxy-compatible fault proxy for the exapyte harness.

The harness injects network faults (latency, bandwidth limits, blackholes, resets, refused
connects) through the Toxiproxy 2.x HTTP API. No Toxiproxy server can be installed from the
package registries here, so this package implements that API and its data plane on asyncio:

* :class:`ToxiproxyServer`: the server, usable in-process (``await start()/stop()``, or
  ``with server.run_in_thread() as port``) or as ``python -m harness.toxiproxy``;
* :func:`find_or_start`: a running server for the harness: a real ``toxiproxy-server`` binary
  when one is on ``PATH``, otherwise ours on a background thread.

Either kind is driven through the same HTTP API, e.g. with the ``toxiproxy-python`` client.
See ``docs/toxiproxy.md``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Literal

from .limits import (
    API_HOST_DEFAULT,
    API_PORT_DEFAULT,
    API_VERSION,
    SERVER_BINARY_NAME,
    SERVER_START_TIMEOUT_S,
    SERVER_STOP_TIMEOUT_S,
)
from .server import ApiError, ToxiproxyServer

__all__ = [
    "API_HOST_DEFAULT",
    "API_PORT_DEFAULT",
    "API_VERSION",
    "ApiError",
    "ServerKind",
    "ToxiproxyHandle",
    "ToxiproxyServer",
    "find_or_start",
]

ServerKind = Literal["real", "exapyte"]


@dataclass
class ToxiproxyHandle:
    """A running server found or started by :func:`find_or_start`. Close it when done (or use
    it as a context manager)."""

    kind: ServerKind
    host: str
    port: int
    version: str
    _stack: contextlib.ExitStack = field(repr=False)

    @property
    def api_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> ToxiproxyHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def fetch_version(host: str, port: int, timeout_s: float = 1.0) -> str | None:
    """The ``version`` a Toxiproxy API reports at ``host:port``, or ``None`` if none answers."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", "/version")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    try:
        return str(json.loads(body)["version"])
    except (ValueError, KeyError, TypeError):  # before 2.7 the body was not valid JSON
        return body.decode("utf-8", "replace").strip()


def _spawn_binary(binary: str, host: str, port: int, stack: contextlib.ExitStack) -> tuple[int, str]:
    chosen = port or _free_port(host)
    process = subprocess.Popen(
        [binary, "-host", host, "-port", str(chosen)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()

    stack.callback(stop)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{binary} exited with status {process.returncode} on port {chosen}")
        version = fetch_version(host, chosen)
        if version is not None:
            return chosen, version
        time.sleep(0.05)
    raise TimeoutError(f"{binary} did not answer GET /version within {SERVER_START_TIMEOUT_S} s")


def find_or_start(
    host: str = API_HOST_DEFAULT,
    port: int = 0,
    *,
    prefer: Literal["auto", "real", "exapyte"] = "auto",
    seed: int | None = None,
) -> ToxiproxyHandle:
    """Start a Toxiproxy API on ``host:port`` (0 picks a free port) and return its handle.

    With ``prefer="auto"`` a ``toxiproxy-server`` on ``PATH`` is spawned (``kind == "real"``);
    without one, :class:`ToxiproxyServer` runs on a background thread (``kind == "exapyte"``).
    ``prefer="real"`` fails without the binary; ``prefer="exapyte"`` never looks for it.
    ``seed`` applies to our server only (the reference server ignores its seed).
    """
    stack = contextlib.ExitStack()
    try:
        binary = shutil.which(SERVER_BINARY_NAME) if prefer != "exapyte" else None
        if prefer == "real" and binary is None:
            raise FileNotFoundError(f"{SERVER_BINARY_NAME} is not on PATH")
        if binary is not None:
            bound, version = _spawn_binary(binary, host, port, stack)
            return ToxiproxyHandle("real", host, bound, version, stack)
        server = ToxiproxyServer(host, port, seed=seed)
        bound = stack.enter_context(server.run_in_thread())
        return ToxiproxyHandle("exapyte", host, bound, API_VERSION, stack)
    except BaseException:
        stack.close()
        raise
