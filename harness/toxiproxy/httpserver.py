"""The HTTP/1.1 transport under the Toxiproxy API: asyncio streams around an h11 connection.

Theory of operation
-------------------
h11 is the HTTP: it parses requests out of the bytes it is fed, frames the responses it is
given, and tracks each connection's request/response cycle and whether it may be kept alive.
This module is the IO around it. One task serves each TCP connection as a :class:`_Session`:

1. read what the socket offers (up to ``HTTP_READ_CHUNK_BYTES``), feed it to h11, and collect
   one request's events (``Request``, ``Data``..., ``EndOfMessage``) into a :class:`Request`;
2. await the handler and send its :class:`Response` through h11;
3. when both sides are ``DONE``, ``start_next_cycle`` and go back to 1. Bytes a client has
   pipelined are already in h11's buffer and are parsed then; a client that asked for
   ``Connection: close`` (or speaks HTTP/1.0) leaves h11 in ``MUST_CLOSE`` and is closed.

Responses carry ``Content-Length`` (except 204), ``Date`` and a fresh request id header; h11
adds ``Connection: close`` when the connection will close.

Limits, all in :mod:`harness.toxiproxy.limits`: the request line and headers may take
``HTTP_HEADER_BYTES_MAX`` (h11's ``max_incomplete_event_size``; past it, 431). h11 measures a
head only while it is incomplete, so one that ends within the read crossing the limit, at most
``HTTP_READ_CHUNK_BYTES`` later, still passes (Go's server allows 4 KiB beyond its own). A body
may take ``HTTP_BODY_BYTES_MAX`` (checked against ``Content-Length`` before any of the body is
read, and against the bytes received when it is chunked; past it, 413). A request must begin within
``HTTP_IDLE_TIMEOUT_S`` and arrive whole within ``HTTP_READ_TIMEOUT_S``, or the connection is
closed without a reply.

Input h11 rejects (:class:`h11.RemoteProtocolError`) gets the status h11 suggests: 400, 431 for
an oversized head, 501 for a transfer coding other than chunked. An HTTP version other than 1.x
gets 505. These refusals are written as Go's ``net/http`` server writes its own: ``text/plain``,
the status and a short reason as the body, ``Connection: close``; then the connection closes.

Every close after a reply is graceful: half-close, discard what the client still sends for up
to ``HTTP_CLOSE_LINGER_S``, then close. Closing a socket with unread input makes the kernel send
a reset, which can destroy the reply before the client has read it.

h11 refuses blank lines before a request line, which RFC 9112 §2.2 asks servers to skip; the
session skips them before h11 sees them. h11 never keeps an HTTP/1.0 connection alive, so an
HTTP/1.0 client that asks for keep-alive is answered with ``Connection: close``.

The handler is a plain ``async (Request) -> Response`` function; routing lives in
:mod:`harness.toxiproxy.server`.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import h11

from .limits import (
    HTTP_BODY_BYTES_MAX,
    HTTP_CLOSE_LINGER_S,
    HTTP_ERROR_DETAIL_CHARS_MAX,
    HTTP_HEADER_BYTES_MAX,
    HTTP_IDLE_TIMEOUT_S,
    HTTP_READ_CHUNK_BYTES,
    HTTP_READ_TIMEOUT_S,
)
from .proxy import format_address, open_listener

__all__ = ["HttpServer", "Request", "Response", "new_request_id"]

log = logging.getLogger("harness.toxiproxy")

REQUEST_ID_HEADER: Final = "X-Toxiproxy-Request-Id"
REFUSAL_TYPE: Final = "text/plain; charset=utf-8"
_BLANK_LINE_CHARS: Final = b"\r\n"  # stripped, in any order, from the start of a request
# h11 refuses a header value holding NUL or any whitespace but inner spaces and tabs. Go's server
# turns CR and LF in a header value into spaces; the others are treated the same way here.
_UNSENDABLE_IN_HEADER: Final = re.compile(rb"[\x00\n\r\x0b\x0c]")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str  # "HTTP/1.1"
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class _Refusal(Exception):
    """A request h11 accepted but this server will not serve: answer ``status`` and close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = int(status)
        self.detail = detail


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
            self._server = await asyncio.start_server(self._serve, sock=sock)
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
            await _Session(reader, writer).serve(self._handler)
        except (OSError, TimeoutError):
            pass  # the client went away, or was too slow: nobody is left to answer
        except asyncio.CancelledError:
            # Only stop() cancels these tasks, and it owns them: end quietly, because asyncio's
            # stream callback would report a cancelled task as an error.
            pass
        finally:
            self._connections.discard(task)
            self._writers.discard(writer)
            writer.close()


def _new_protocol() -> h11.Connection:
    return h11.Connection(h11.SERVER, max_incomplete_event_size=HTTP_HEADER_BYTES_MAX)


class _Session:
    """One TCP connection: its h11 state machine and the streams that state is fed from."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = _new_protocol()
        self.method = b""  # of the request being served, once h11 has parsed its line
        self.request_begun = False  # some byte of the current request has been fed to h11
        self.deadline = 0.0  # loop time by which the current request must have arrived

    async def serve(self, handler: Handler) -> None:
        while True:
            try:
                request = await self.receive_request()
            except h11.RemoteProtocolError as exc:
                await self.refuse(exc.error_status_hint, str(exc))
                return
            except _Refusal as exc:
                await self.refuse(exc.status, exc.detail)
                return
            if request is None:
                return  # the client closed between requests
            response = await handler(request)
            self.writer.write(self.render(request, response))
            await self.writer.drain()
            if self.protocol.states != {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
                await self.close_gracefully()
                return
            self.start_next_cycle()

    # --- receiving ---------------------------------------------------------------------------

    async def receive_request(self) -> Request | None:
        """The next whole request, or ``None`` if the client closed before starting one.

        Raises :class:`h11.RemoteProtocolError` or :class:`_Refusal`; :class:`TimeoutError` if
        the request does not begin or arrive in time.
        """
        loop = asyncio.get_running_loop()
        wait_s = HTTP_READ_TIMEOUT_S if self.request_begun else HTTP_IDLE_TIMEOUT_S
        self.deadline = loop.time() + wait_s
        event = await self.next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request), event
        self.method = event.method
        if not event.http_version.startswith(b"1."):
            status = http.HTTPStatus.HTTP_VERSION_NOT_SUPPORTED
            raise _Refusal(status, "unsupported protocol version")
        headers = _header_dict(event.headers)
        # Without Transfer-Encoding, h11 frames the body by Content-Length (digits, checked).
        declared_bytes = int(headers.get("content-length", "0"))
        if "transfer-encoding" not in headers and declared_bytes > HTTP_BODY_BYTES_MAX:
            raise _Refusal(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        if self.protocol.they_are_waiting_for_100_continue:
            interim = h11.InformationalResponse(status_code=100, reason="Continue", headers=[])
            self.writer.write(self.protocol.send(interim))
            await self.writer.drain()
        body = bytearray()
        while True:
            part = await self.next_event()
            if isinstance(part, h11.EndOfMessage):
                break
            assert isinstance(part, h11.Data), part
            if len(body) + len(part.data) > HTTP_BODY_BYTES_MAX:
                raise _Refusal(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
            body += part.data
        return Request(
            method=event.method.decode("ascii"),
            target=event.target.decode("latin-1"),
            version="HTTP/" + event.http_version.decode("ascii"),
            headers=headers,
            body=bytes(body),
        )

    async def next_event(self) -> h11.Event:
        """h11's next event, reading from the socket for as long as h11 needs more data."""
        while True:
            event = self.protocol.next_event()
            if event is not h11.NEED_DATA:
                assert event is not h11.PAUSED, "a request is read only at the start of a cycle"
                assert isinstance(event, h11.Event)
                return event
            async with asyncio.timeout_at(self.deadline):
                data = await self.reader.read(HTTP_READ_CHUNK_BYTES)
            if data and not self.request_begun:
                data = data.lstrip(_BLANK_LINE_CHARS)
                if not data:
                    continue  # only blank lines so far
                self.begin_request()
            self.protocol.receive_data(data)  # b"" tells h11 the client has closed

    def begin_request(self) -> None:
        """The first byte of a request is here: from now on the whole of it must arrive in
        ``HTTP_READ_TIMEOUT_S``."""
        self.request_begun = True
        self.deadline = asyncio.get_running_loop().time() + HTTP_READ_TIMEOUT_S

    def start_next_cycle(self) -> None:
        self.protocol.start_next_cycle()
        self.method = b""
        leftover, closed = self.protocol.trailing_data
        if leftover.startswith((b"\r", b"\n")):
            # Pipelined blank lines are already in h11's buffer, where they cannot be skipped:
            # hand what follows them to a fresh state machine (nothing carries over between
            # cycles but the buffer).
            leftover = leftover.lstrip(_BLANK_LINE_CHARS)
            self.protocol = _new_protocol()
            if leftover:
                self.protocol.receive_data(leftover)
            if closed:
                self.protocol.receive_data(b"")
        self.request_begun = bool(leftover)

    # --- sending -----------------------------------------------------------------------------

    def render(self, request: Request, response: Response) -> bytes:
        headers: list[tuple[str, bytes]] = []
        if response.content_type is not None:
            headers.append(("Content-Type", _header_value(response.content_type)))
        headers.extend((name, _header_value(value)) for name, value in response.headers)
        headers.append((REQUEST_ID_HEADER, new_request_id().encode("ascii")))
        headers.append(("Date", email.utils.formatdate(usegmt=True).encode("ascii")))
        if response.status != http.HTTPStatus.NO_CONTENT:
            headers.append(("Content-Length", str(len(response.body)).encode("ascii")))
        reason = _reason(response.status)
        events: list[h11.Event] = [
            h11.Response(status_code=response.status, headers=headers, reason=reason)
        ]
        has_body = request.method != "HEAD" and response.status != http.HTTPStatus.NO_CONTENT
        if response.body and has_body:
            events.append(h11.Data(data=response.body))
        events.append(h11.EndOfMessage())
        return b"".join(self.protocol.send(event) for event in events)

    async def refuse(self, status: int, detail: str) -> None:
        """Answer a request that cannot be served with ``status``, then close."""
        if self.protocol.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            reason = _reason(status)
            if len(detail) > HTTP_ERROR_DETAIL_CHARS_MAX:
                detail = detail[: HTTP_ERROR_DETAIL_CHARS_MAX - 3] + "..."
            body = f"{status} {reason}: {detail}".encode()
            headers = [
                ("Content-Type", REFUSAL_TYPE),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ]
            events: list[h11.Event] = [
                h11.Response(status_code=status, headers=headers, reason=reason)
            ]
            if self.method != b"HEAD":
                events.append(h11.Data(data=body))
            events.append(h11.EndOfMessage())
            self.writer.write(b"".join(self.protocol.send(event) for event in events))
            await self.writer.drain()
        await self.close_gracefully()

    async def close_gracefully(self) -> None:
        """Half-close, then discard input until the client closes or the linger time is up."""
        if self.writer.can_write_eof():
            self.writer.write_eof()
        try:
            async with asyncio.timeout(HTTP_CLOSE_LINGER_S):
                while await self.reader.read(HTTP_READ_CHUNK_BYTES):
                    pass
        except TimeoutError:
            pass


def _header_dict(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in pairs:  # h11 gives names in lower case
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _header_value(text: str) -> bytes:
    return _UNSENDABLE_IN_HEADER.sub(b" ", text.encode()).strip(b" \t")


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
