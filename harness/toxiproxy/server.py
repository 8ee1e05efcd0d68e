"""The Toxiproxy 2.x HTTP API, served by :class:`ToxiproxyServer`.

Theory of operation
-------------------
:class:`ToxiproxyServer` owns the proxies of one server and an :class:`HttpServer` for the API.
A request is routed by path first and method second: an unknown path is a 404
(``404 page not found``), a known path with another method a 405 with an empty body. A matched
route then refuses browsers (``Mozilla/`` user agents get 403) and runs its handler; a handler
that takes longer than 25 s gets a 503 while it carries on in the background.

Handlers raise :class:`ApiError` for the documented failures. The error reply is the JSON
``{"error": msg, "status": code}`` plus a newline, sent as ``text/plain`` (as the reference
server does). ``/populate`` is the exception: its error reply is ``application/json`` and also
lists the proxies created before the failure.

Every change to proxies or toxics holds one lock, so changes apply in the order they arrive and
a chain change finishes on every live link before the next begins. Reads take no lock.

Everything runs on one event loop. :meth:`ToxiproxyServer.run_in_thread` gives that loop a
thread of its own for synchronous callers such as tests and the harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import random
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

from .httpserver import HttpServer, Request, Response
from .jsoncompat import (
    BodyError,
    assign_fields,
    decode_body,
    encode,
    find_key,
    float32,
    kind_of,
)
from .limits import API_HOST_DEFAULT, API_PORT_DEFAULT, API_VERSION, HANDLER_TIMEOUT_S
from .proxy import ListenError, Proxy, ProxyAlreadyStarted, format_address
from .toxics import TOXIC_KINDS, Toxic, parse_direction

__all__ = ["ApiError", "ToxiproxyServer"]

log = logging.getLogger("harness.toxiproxy")

JSON_TYPE: Final = "application/json"
TEXT_TYPE: Final = "text/plain; charset=utf-8"
TIMEOUT_BODY: Final = b"<html><head><title>Timeout</title></head><body><h1>Timeout</h1></body></html>"
PROXY_FIELDS: Final = {"name": "string", "listen": "string", "upstream": "string", "enabled": "bool"}
TOXIC_FIELDS: Final = {"name": "string", "type": "string", "stream": "string", "toxicity": "float32"}


class ApiError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _bad_body(error: BodyError) -> ApiError:
    return ApiError(f"bad request body: {error}", 400)


PROXY_NOT_FOUND: Final = ("proxy not found", 404)
TOXIC_NOT_FOUND: Final = ("toxic not found", 404)


def _error_response(error: ApiError) -> Response:
    body = encode({"error": error.message, "status": error.status}) + b"\n"
    return Response(error.status, body, TEXT_TYPE, [("X-Content-Type-Options", "nosniff")])


def _json_response(value: Any, status: int = 200) -> Response:
    return Response(status, encode(value), JSON_TYPE)


def _plain_response(status: int, text: str) -> Response:
    return Response(status, text.encode() + b"\n", TEXT_TYPE, [("X-Content-Type-Options", "nosniff")])


RouteHandler = Callable[[Request, list[str]], Awaitable[Response]]
VAR: Final = None  # a path segment that is a name


def _clean_path(path: str) -> str:
    cleaned = posixpath.normpath(path) if path else "/"
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


class ToxiproxyServer:
    """A Toxiproxy-compatible server: the HTTP API plus the proxies it manages.

    ``seed`` makes toxicity draws, jitter and slicer sizes reproducible (given the same order of
    events); ``None`` seeds from the OS.
    """

    def __init__(
        self, host: str = API_HOST_DEFAULT, port: int = API_PORT_DEFAULT, *, seed: int | None = None
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.rng = random.Random(seed)
        self.proxies: dict[str, Proxy] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._http = HttpServer(self._dispatch)
        self._background: set[asyncio.Task[Response]] = set()
        self._routes: list[tuple[tuple[str | None, ...], dict[str, RouteHandler]]] = [
            (("reset",), {"POST": self._reset}),
            (("proxies",), {"GET": self._proxy_index, "POST": self._proxy_create}),
            (("populate",), {"POST": self._populate}),
            (
                ("proxies", VAR),
                {
                    "GET": self._proxy_show,
                    "POST": self._proxy_update,
                    "PATCH": self._proxy_update,
                    "DELETE": self._proxy_delete,
                },
            ),
            (("proxies", VAR, "toxics"), {"GET": self._toxic_index, "POST": self._toxic_create}),
            (
                ("proxies", VAR, "toxics", VAR),
                {
                    "GET": self._toxic_show,
                    "POST": self._toxic_update,
                    "PATCH": self._toxic_update,
                    "DELETE": self._toxic_delete,
                },
            ),
            (("version",), {"GET": self._version}),
        ]

    @property
    def api_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not running")
        return f"http://{format_address(self.host or '127.0.0.1', self.port)}"

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> int:
        """Serve the API; return the bound port. Raises :class:`ListenError`."""
        self.loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()  # bound to this loop; a server may be restarted on another
        self.port = await self._http.start(self.host, self.requested_port)
        log.info("API listening on %s", format_address(self.host, self.port))
        return self.port

    async def stop(self) -> None:
        """Stop the API and every proxy (closing all their connections)."""
        await self._http.stop()
        async with self._lock:
            for proxy in list(self.proxies.values()):
                await proxy.stop()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(self._background)

    async def load_config(self, path: str | Path) -> list[Proxy]:
        """Create proxies from a populate-format JSON file. Errors are logged, not raised, as
        the reference server does with ``-config``."""
        try:
            body = Path(path).read_bytes()
        except OSError as exc:
            log.error("cannot read config %s: %s", path, exc)
            return []
        try:
            async with self._lock:
                return await self.populate(body)
        except ApiError as exc:
            log.error("failed to populate proxies from %s: %s", path, exc.message)
            return []

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[int]:
        """Run the server on an event loop in a background thread; yield the bound API port.

        On exit the server stops and the thread is joined.
        """
        ready = threading.Event()
        outcome: dict[str, Any] = {}

        async def main() -> None:
            stopping = asyncio.Event()
            outcome["stop"] = (asyncio.get_running_loop(), stopping)
            try:
                await self.start()
            except BaseException as exc:
                outcome["error"] = exc
                ready.set()
                return
            ready.set()
            try:
                await stopping.wait()
            finally:
                await self.stop()

        thread = threading.Thread(target=asyncio.run, args=(main(),), name="exapyte-toxiproxy")
        thread.daemon = True
        thread.start()
        ready.wait()
        if "error" in outcome:
            thread.join()
            raise outcome["error"]
        loop, stopping = outcome["stop"]
        try:
            assert self.port is not None
            yield self.port
        finally:
            loop.call_soon_threadsafe(stopping.set)
            thread.join()

    # --- dispatch ----------------------------------------------------------------------------

    async def _dispatch(self, request: Request) -> Response:
        target = request.target
        if target.startswith("/"):
            raw_path = target.split("?", 1)[0].split("#", 1)[0]
        else:  # absolute form: http://host/path
            raw_path = urllib.parse.urlsplit(target).path or "/"
        path = urllib.parse.unquote(raw_path)
        cleaned = _clean_path(path)
        if cleaned != path:
            return Response(301, headers=[("Location", cleaned)])
        segments = path[1:].split("/") if path.startswith("/") else [""]
        for pattern, methods in self._routes:
            if len(pattern) != len(segments):
                continue
            names: list[str] = []
            for expected, segment in zip(pattern, segments, strict=True):
                if expected is VAR and segment:
                    names.append(segment)
                elif expected != segment:
                    break
            else:
                handler = methods.get(request.method)
                if handler is None:
                    return Response(405)
                return await self._run_handler(handler, request, names)
        return _plain_response(404, "404 page not found")

    async def _run_handler(self, handler: RouteHandler, request: Request, names: list[str]) -> Response:
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            return _plain_response(403, "User agent not allowed")
        task = asyncio.get_running_loop().create_task(self._guarded(handler, request, names))
        done, _pending = await asyncio.wait({task}, timeout=HANDLER_TIMEOUT_S)
        if task in done:
            return task.result()
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return Response(503, TIMEOUT_BODY, "text/html; charset=utf-8")

    async def _guarded(self, handler: RouteHandler, request: Request, names: list[str]) -> Response:
        try:
            return await handler(request, names)
        except ApiError as exc:
            return _error_response(exc)
        except Exception as exc:
            log.exception("handler for %s %s failed", request.method, request.target)
            return _error_response(ApiError(str(exc), 500))

    # --- proxies -----------------------------------------------------------------------------

    def _proxy(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError(*PROXY_NOT_FOUND)
        return proxy

    async def _proxy_index(self, request: Request, names: list[str]) -> Response:
        return _json_response({name: self.proxies[name].to_json() for name in sorted(self.proxies)})

    async def _proxy_create(self, request: Request, names: list[str]) -> Response:
        fields: dict[str, Any] = {"name": "", "listen": "", "upstream": "", "enabled": True}
        _read_proxy_fields(request, fields)
        if not fields["name"]:
            raise ApiError("missing required field: name", 400)
        if not fields["upstream"]:
            raise ApiError("missing required field: upstream", 400)
        async with self._lock:
            if fields["name"] in self.proxies:
                raise ApiError("proxy already exists", 409)
            proxy = Proxy(fields["name"], fields["listen"], fields["upstream"], self.rng)
            if fields["enabled"]:
                await self._start(proxy)
            self.proxies[proxy.name] = proxy
            return _json_response(proxy.to_json(), 201)

    async def _start(self, proxy: Proxy) -> None:
        try:
            await proxy.start()
        except ListenError as exc:
            raise ApiError(str(exc), 500) from None

    async def _populate(self, request: Request, names: list[str]) -> Response:
        async with self._lock:
            created: list[Proxy] = []
            try:
                await self.populate(request.body, created)
            except ApiError as exc:
                body = {
                    "error": exc.message,
                    "status": exc.status,
                    "proxies": [proxy.to_json() for proxy in created] or None,
                }
                return _json_response(body, exc.status)
            return _json_response({"proxies": [proxy.to_json() for proxy in created] or None}, 201)

    async def populate(self, body: bytes, created: list[Proxy] | None = None) -> list[Proxy]:
        """Apply a populate request (the caller holds the lock). Entries that exist with the
        same listen and upstream are kept; others are replaced. Stops at the first error,
        keeping what was done; ``created`` collects the proxies handled so far."""
        created = [] if created is None else created
        try:
            entries = decode_body(body)
            if not isinstance(entries, list):
                raise BodyError(
                    f"json: cannot unmarshal {kind_of(entries)} into Go value of type []toxiproxy.Proxy"
                )
            wanted: list[dict[str, Any]] = []
            for entry in entries:
                fields: dict[str, Any] = {"name": "", "listen": "", "upstream": "", "enabled": True}
                _assign_proxy_fields(entry, fields)
                wanted.append(fields)
        except BodyError as exc:
            raise _bad_body(exc) from None
        for position, fields in enumerate(wanted, start=1):
            if not fields["name"]:
                raise ApiError(f"missing required field: name at proxy {position}", 400)
            if not fields["upstream"]:
                raise ApiError(f"missing required field: upstream at proxy {position}", 400)
            existing = self.proxies.get(fields["name"])
            if existing is not None:
                if existing.listen == fields["listen"] and existing.upstream == fields["upstream"]:
                    created.append(existing)
                    continue
                await existing.stop()
            proxy = Proxy(fields["name"], fields["listen"], fields["upstream"], self.rng)
            if fields["enabled"]:
                await self._start(proxy)
            self.proxies[proxy.name] = proxy
            created.append(proxy)
        return created

    async def _proxy_show(self, request: Request, names: list[str]) -> Response:
        return _json_response(self._proxy(names[0]).to_json())

    async def _proxy_update(self, request: Request, names: list[str]) -> Response:
        async with self._lock:
            proxy = self._proxy(names[0])
            fields: dict[str, Any] = {
                "name": proxy.name,
                "listen": proxy.listen,
                "upstream": proxy.upstream,
                "enabled": proxy.enabled,
            }
            _read_proxy_fields(request, fields)
            try:
                await proxy.update(
                    listen=fields["listen"], upstream=fields["upstream"], enabled=fields["enabled"]
                )
            except ListenError as exc:
                raise ApiError(str(exc), 500) from None
            return _json_response(proxy.to_json())

    async def _proxy_delete(self, request: Request, names: list[str]) -> Response:
        async with self._lock:
            proxy = self._proxy(names[0])
            await proxy.stop()
            del self.proxies[proxy.name]
            return Response(204)

    async def _reset(self, request: Request, names: list[str]) -> Response:
        async with self._lock:
            for name in sorted(self.proxies):
                proxy = self.proxies[name]
                try:
                    await proxy.start()
                except ProxyAlreadyStarted:
                    pass
                except ListenError as exc:
                    raise ApiError(str(exc), 500) from None
                await proxy.toxics.reset()
            return Response(204)

    async def _version(self, request: Request, names: list[str]) -> Response:
        body = f'{{"version": "{API_VERSION}"}}\n'.encode()
        return Response(200, body, "application/json;charset=utf-8")

    # --- toxics ------------------------------------------------------------------------------

    def _toxic(self, proxy: Proxy, name: str) -> Toxic:
        toxic = proxy.toxics.find(name)
        if toxic is None:
            raise ApiError(*TOXIC_NOT_FOUND)
        return toxic

    async def _toxic_index(self, request: Request, names: list[str]) -> Response:
        proxy = self._proxy(names[0])
        return _json_response([toxic.to_json() for toxic in proxy.toxics.all()])

    async def _toxic_show(self, request: Request, names: list[str]) -> Response:
        proxy = self._proxy(names[0])
        return _json_response(self._toxic(proxy, names[1]).to_json())

    async def _toxic_create(self, request: Request, names: list[str]) -> Response:
        async with self._lock:
            proxy = self._proxy(names[0])
            fields: dict[str, Any] = {"name": "", "type": "", "stream": "downstream", "toxicity": 1.0}
            try:
                body = decode_body(request.body)
                assign_fields(
                    body,
                    TOXIC_FIELDS,
                    fields,
                    struct_name="ToxicWrapper",
                    value_type="toxics.ToxicWrapper",
                )
                raw_attributes = find_key(body, "attributes") if isinstance(body, dict) else None
                assign_fields(
                    raw_attributes,
                    {},
                    {},
                    struct_name="ToxicWrapper",
                    path="attributes",
                    value_type="toxics.NoopToxic",
                )
            except BodyError as exc:
                raise _bad_body(exc) from None
            direction = parse_direction(fields["stream"])
            if direction is None:
                raise ApiError("stream was invalid, can be either upstream or downstream", 400)
            name = fields["name"] or f"{fields['type']}_{fields['stream']}"
            kind_class = TOXIC_KINDS.get(fields["type"])
            if kind_class is None:
                raise ApiError("invalid toxic type", 400)
            if proxy.toxics.find(name) is not None:
                raise ApiError("toxic already exists", 409)
            attributes: dict[str, Any] = {}
            try:
                assign_fields(
                    raw_attributes,
                    kind_class.field_types(),
                    attributes,
                    struct_name=kind_class.STRUCT,
                    path="attributes",
                    value_type=f"toxics.{kind_class.STRUCT}",
                )
            except BodyError as exc:
                raise _bad_body(exc) from None
            toxic = Toxic(
                name=name,
                type_=fields["type"],
                stream=fields["stream"],
                toxicity=float32(fields["toxicity"]),
                kind=kind_class(**attributes),
            )
            await proxy.toxics.add(toxic)
            return _json_response(toxic.to_json())

    async def _toxic_update(self, request: Request, names: list[str]) -> Response:
        async with self._lock:
            proxy = self._proxy(names[0])
            toxic = self._toxic(proxy, names[1])
            kind_class = type(toxic.kind)
            attributes = toxic.kind.attributes()
            fields: dict[str, Any] = {"toxicity": toxic.toxicity}
            try:
                body = decode_body(request.body)
                assign_fields(
                    body,
                    {"toxicity": "float32"},
                    fields,
                    struct_name="",
                    value_type="struct { Attributes interface {}; Toxicity float32 }",
                )
                raw_attributes = find_key(body, "attributes") if isinstance(body, dict) else None
                assign_fields(
                    raw_attributes,
                    kind_class.field_types(),
                    attributes,
                    struct_name=kind_class.STRUCT,
                    path="attributes",
                    value_type=f"toxics.{kind_class.STRUCT}",
                )
            except BodyError as exc:
                raise _bad_body(exc) from None
            toxic.kind = toxic.kind.updated(attributes)
            toxic.toxicity = float32(fields["toxicity"])
            await proxy.toxics.restart(toxic)
            return _json_response(toxic.to_json())

    async def _toxic_delete(self, request: Request, names: list[str]) -> Response:
        async with self._lock:
            proxy = self._proxy(names[0])
            toxic = self._toxic(proxy, names[1])
            await proxy.toxics.remove(toxic)
            return Response(204)


def _assign_proxy_fields(body: Any, fields: dict[str, Any]) -> None:
    """Merge a proxy's JSON object into ``fields`` the way the real server decodes it."""
    assign_fields(body, PROXY_FIELDS, fields, struct_name="Proxy", value_type="toxiproxy.Proxy")


def _read_proxy_fields(request: Request, fields: dict[str, Any]) -> None:
    """Merge a request's proxy body into ``fields``; a bad body is a 400 with Go's wording."""
    try:
        _assign_proxy_fields(decode_body(request.body), fields)
    except BodyError as exc:
        raise _bad_body(exc) from None
