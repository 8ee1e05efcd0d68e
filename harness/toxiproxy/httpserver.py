"""A small HTTP/1.1 server on asyncio streams, enough for the Toxiproxy API.

Theory of operation
-------------------
Each TCP connection is served by one task that reads a request (request line, headers, and a
body sized by ``Content-Length`` or sent chunked), awaits the handler, writes the response and
loops while the connection is kept alive: HTTP/1.1 keeps it unless the client says
``Connection: close``; HTTP/1.0 closes it unless the client asks for keep-alive. Malformed
requests get ``400 Bad Request`` and the connection is closed, as Go's server does. Responses
always carry ``Content-Length`` (except 204), ``Date`` and a fresh request id header.

The handler is a plain ``async (Request) -> Response`` function; routing lives in
:mod:`harness.toxiproxy.server`.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from .limits import (
    HTTP_BODY_BYTES_MAX,
    HTTP_HEADER_BYTES_MAX,
    HTTP_IDLE_TIMEOUT_S,
    HTTP_READ_TIMEOUT_S,
)
from .proxy import format_address, open_listener

__all__ = ["HttpServer", "Request", "Response", "new_request_id"]

log = logging.getLogger("harness.toxiproxy")

REQUEST_ID_HEADER: Final = "X-Toxiproxy-Request-Id"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    pass


_BASE32HEX: Final = "0123456789abcdefghijklmnopqrstuv"
_id_lock = threading.Lock()
_id_counter = int.from_bytes(os.urandom(3), "big")
_id_machine = os.urandom(3)


def new_request_id() -> str:
    """A 20-character, time-ordered, unique id (12 bytes in base32hex)."""
    global _id_counter
    with _id_lock:
        _id_counter = (_id_counter + 1) & 0xFFFFFF
        counter = _id_counter
    raw = (
        int(time.time()).to_bytes(4, "big")
        + _id_machine
        + (os.getpid() & 0xFFFF).to_bytes(2, "big")
        + counter.to_bytes(3, "big")
    )
    number = int.from_bytes(raw, "big") << 4  # 96 bits padded to 100 = 20 digits of 5 bits
    return "".join(_BASE32HEX[(number >> shift) & 31] for shift in range(95, -1, -5))


class HttpServer:
    """Serves ``handler`` on one listening socket until :meth:`stop`."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (port 0 picks one); return the bound port."""
        sock, _resolved = open_listener(format_address(host, port))
        try:
            self._server = await asyncio.start_server(
                self._serve, sock=sock, limit=HTTP_HEADER_BYTES_MAX
            )
        except BaseException:
            sock.close()
            raise
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [task for task in self._connections if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        try:
            await self._serve_requests(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels these tasks, and it owns them: end quietly, because asyncio's
            # stream callback would report a cancelled task as an error.
            pass
        finally:
            self._connections.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            first_line = await asyncio.wait_for(reader.readline(), HTTP_IDLE_TIMEOUT_S)
            if not first_line:
                return
            if first_line in (b"\r\n", b"\n"):  # tolerated between requests
                continue
            try:
                request = await asyncio.wait_for(
                    self._read_request(first_line, reader, writer), HTTP_READ_TIMEOUT_S
                )
            except _BadRequest as exc:
                writer.write(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Connection: close\r\n\r\n400 Bad Request" + (f": {exc}".encode() if str(exc) else b"")
                )
                await writer.drain()
                return
            response = await self._handler(request)
            keep_alive = _wants_keep_alive(request)
            writer.write(_render(request, response, keep_alive))
            await writer.drain()
            if not keep_alive:
                return

    async def _read_request(
        self, first_line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Request:
        try:
            method, target, version = first_line.decode("latin-1").strip().split(" ")
        except ValueError:
            raise _BadRequest("malformed request line") from None
        if not version.startswith("HTTP/1.") or not method.isalpha():
            raise _BadRequest("unsupported protocol")
        headers: dict[str, str] = {}
        size = len(first_line)
        while True:
            line = await reader.readline()
            size += len(line)
            if size > HTTP_HEADER_BYTES_MAX:
                raise _BadRequest("headers too large")
            if not line:
                raise _BadRequest("unexpected end of headers")
            text = line.decode("latin-1").rstrip("\r\n")
            if not text:
                break
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                raise _BadRequest("malformed header line")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            length_text = headers["content-length"]
            if not length_text.isdigit():
                raise _BadRequest("bad Content-Length")
            length = int(length_text)
            if length > HTTP_BODY_BYTES_MAX:
                raise _BadRequest("body too large")
            body = await reader.readexactly(length)
        else:
            body = b""
        return Request(method, target, version, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = (await reader.readline()).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _BadRequest("bad chunk size") from None
        if size == 0:
            break
        total += size
        if total > HTTP_BODY_BYTES_MAX:
            raise _BadRequest("body too large")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
    while (await reader.readline()).strip():  # trailers
        pass
    return b"".join(parts)


def _wants_keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _render(request: Request, response: Response, keep_alive: bool) -> bytes:
    try:
        reason = http.HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    if response.content_type is not None:
        lines.append(f"Content-Type: {response.content_type}")
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    lines.append(f"{REQUEST_ID_HEADER}: {new_request_id()}")
    lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    if response.status != http.HTTPStatus.NO_CONTENT:
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    elif request.version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if request.method == "HEAD" or response.status == http.HTTPStatus.NO_CONTENT:
        return head
    return head + response.body

