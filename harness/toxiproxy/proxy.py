"""Proxies: a listener, the connections it accepted, and the toxics that apply to them.

Theory of operation
-------------------
A :class:`Proxy` listens on ``listen`` while enabled. Each accepted client connection dials
``upstream``; if that fails the client socket is closed at once. Otherwise a :class:`Connection`
runs two :class:`~harness.toxiproxy.link.Link` objects over the pair of sockets: the *upstream*
link carries client→server bytes, the *downstream* link server→client bytes.

The proxy's :class:`ToxicCollection` holds one ordered chain of toxics per direction and the set
of live links. A chain change is made to the chain first and then to every live link of that
direction, so connections opened later see the new chain and connections already open are
changed in place.

Stopping a proxy (``enabled: false``, delete, or a restart because ``listen`` or ``upstream``
changed) closes the listener, so new connects are refused, and closes both sockets of every
connection. Sockets of connections opened while a ``reset_peer`` toxic existed carry
SO_LINGER 0, so their close is an RST.

Addresses follow the reference server: ``host:port`` or ``[v6]:port``; port 0 or an empty port
picks a free port; an empty host (or an empty address) listens on all interfaces; host names are
resolved and the first IPv4 address is preferred. After binding, ``listen`` holds the resolved
address, e.g. ``127.0.0.1:42175`` or ``[::]:42175``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import socket
from typing import Final

from .limits import LISTEN_BACKLOG
from .link import Link, set_reset_on_close
from .toxics import DIRECTIONS, Toxic

__all__ = [
    "AddressError",
    "Connection",
    "ListenError",
    "Proxy",
    "ProxyAlreadyStarted",
    "ToxicCollection",
    "format_address",
    "open_listener",
    "split_host_port",
]

log = logging.getLogger("harness.toxiproxy")

PORT_MAX: Final = 65535


class ListenError(Exception):
    """The proxy could not listen. The message is what the API returns with status 500."""


class AddressError(ListenError):
    """``listen`` or ``upstream`` is not a usable ``host:port``."""


class ProxyAlreadyStarted(Exception):
    pass


def split_host_port(address: str) -> tuple[str, str]:
    """Split ``host:port`` or ``[host]:port``; raise :class:`AddressError` like the reference."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise AddressError(f"address {address}: missing ']' in address")
        host, rest = address[1:end], address[end + 1 :]
        if not rest:
            raise AddressError(f"address {address}: missing port in address")
        if not rest.startswith(":"):
            raise AddressError(f"address {address}: unexpected ']' in address")
        return host, rest[1:]
    colon = address.rfind(":")
    if colon < 0:
        raise AddressError(f"address {address}: missing port in address")
    host, port = address[:colon], address[colon + 1 :]
    if ":" in host:
        raise AddressError(f"address {address}: too many colons in address")
    return host, port


def _port_number(address: str, port: str) -> int:
    if port == "":
        return 0
    if port.isdigit():
        number = int(port)
        if number > PORT_MAX:
            raise AddressError(f"address {address}: invalid port")
        return number
    try:
        return socket.getservbyname(port, "tcp")
    except OSError:
        raise AddressError(f"lookup tcp/{port}: unknown port") from None


def format_address(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _candidates(host: str) -> list[tuple[socket.AddressFamily, str]]:
    if host == "":
        return [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [(family, ip.compressed)]
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        raise ListenError(f"listen tcp: lookup {host}: no such host") from None
    infos.sort(key=lambda info: 0 if info[0] == socket.AF_INET else 1)
    family, _type, _proto, _name, sockaddr = infos[0]
    return [(socket.AddressFamily(family), str(sockaddr[0]))]


def open_listener(address: str) -> tuple[socket.socket, str]:
    """Bind and listen on ``address``; return the socket and the resolved address text."""
    if address == "":
        host, port_text = "", ""
    else:
        host, port_text = split_host_port(address)
    port = _port_number(address, port_text)
    last_error: ListenError | None = None
    for family, ip in _candidates(host):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host == "":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((ip, port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            reason = (exc.strerror or str(exc)).lower()
            last_error = ListenError(f"listen tcp {format_address(ip, port)}: bind: {reason}")
            if host == "" and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                continue
            raise last_error from None
        bound_ip, bound_port = sock.getsockname()[:2]
        return sock, format_address(ipaddress.ip_address(bound_ip).compressed, bound_port)
    assert last_error is not None
    raise last_error


def parse_upstream(address: str) -> tuple[str, int]:
    host, port_text = split_host_port(address)
    return host or "localhost", _port_number(address, port_text)


class ToxicCollection:
    """The toxic chains of one proxy, and the live links they apply to."""

    def __init__(self) -> None:
        self.chains: dict[str, list[Toxic]] = {direction: [] for direction in DIRECTIONS}
        self.links: set[Link] = set()

    def all(self) -> list[Toxic]:
        """Upstream toxics in insertion order, then downstream (the API's list order)."""
        return [toxic for direction in DIRECTIONS for toxic in self.chains[direction]]

    def find(self, name: str) -> Toxic | None:
        for toxic in self.all():
            if toxic.name == name:
                return toxic
        return None

    def _links_of(self, direction: str) -> list[Link]:
        return [link for link in self.links if link.direction == direction]

    async def add(self, toxic: Toxic) -> None:
        self.chains[toxic.direction].append(toxic)
        links = self._links_of(toxic.direction)
        await asyncio.gather(*(link.add_toxic(toxic) for link in links))

    async def restart(self, toxic: Toxic) -> None:
        """Apply an update already made to ``toxic`` to the live links."""
        links = self._links_of(toxic.direction)
        await asyncio.gather(*(link.update_toxic(toxic) for link in links))

    async def remove(self, toxic: Toxic) -> None:
        self.chains[toxic.direction].remove(toxic)
        links = self._links_of(toxic.direction)
        await asyncio.gather(*(link.remove_toxic(toxic) for link in links))

    async def reset(self) -> None:
        for direction in DIRECTIONS:
            while self.chains[direction]:
                await self.remove(self.chains[direction][0])


class Connection:
    """A client socket, its upstream socket, and the two links between them."""

    def __init__(
        self,
        proxy: Proxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.rng = proxy.rng
        self.closed = False
        self.client_writer = client[1]
        self.upstream_writer = upstream[1]
        chains = proxy.toxics.chains
        if any(toxic.kind.RESETS_PEER for direction in DIRECTIONS for toxic in chains[direction]):
            set_reset_on_close(self.client_writer)
            set_reset_on_close(self.upstream_writer)
        self.links = (
            Link(self, "upstream", list(chains["upstream"]), client[0], upstream[1]),
            Link(self, "downstream", list(chains["downstream"]), upstream[0], client[1]),
        )
        self._links_done = 0

    def start(self) -> None:
        for link in self.links:
            self.proxy.toxics.links.add(link)
            link.start()

    def on_link_done(self, link: Link) -> None:
        self._links_done += 1
        if self._links_done == len(self.links):
            self.close()

    def close(self) -> list[asyncio.Task[None]]:
        """Close both sockets and stop every task; return the tasks still finishing."""
        if self.closed:
            return []
        self.closed = True
        self.client_writer.close()
        self.upstream_writer.close()
        current = asyncio.current_task()
        pending: list[asyncio.Task[None]] = []
        for link in self.links:
            self.proxy.toxics.links.discard(link)
            for task in link.tasks():
                if task is not current and not task.done():
                    task.cancel()
                    pending.append(task)
        self.proxy.connections.discard(self)
        return pending


class Proxy:
    """One named proxy. All methods run on the server's event loop."""

    def __init__(self, name: str, listen: str, upstream: str, rng: random.Random) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.rng = rng
        self.toxics = ToxicCollection()
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._dialing: set[asyncio.Task[object]] = set()
        self._generation = 0

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "Logger": {},
            "toxics": [toxic.to_json() for toxic in self.toxics.all()],
        }

    async def start(self) -> None:
        """Listen on ``listen``. Raises :class:`ListenError`, or :class:`ProxyAlreadyStarted`."""
        if self.enabled:
            raise ProxyAlreadyStarted(self.name)
        sock, resolved = open_listener(self.listen)
        try:
            self._server = await asyncio.start_server(self._on_accept, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._generation += 1
        self.listen = resolved
        self.enabled = True
        log.info("started proxy %s on %s to %s", self.name, self.listen, self.upstream)

    async def stop(self) -> None:
        """Stop listening and close every connection (both sockets)."""
        if not self.enabled:
            return
        self.enabled = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        pending: list[asyncio.Task[object]] = []
        for task in list(self._dialing):
            task.cancel()
            pending.append(task)
        for connection in list(self.connections):
            pending.extend(connection.close())
        if pending:
            await asyncio.wait(pending)
        if server is not None:
            await server.wait_closed()
        log.info("stopped proxy %s on %s", self.name, self.listen)

    async def update(self, *, listen: str, upstream: str, enabled: bool) -> None:
        """Apply new settings; a new listen or upstream restarts the proxy."""
        if listen != self.listen or upstream != self.upstream:
            await self.stop()
            self.listen = listen
            self.upstream = upstream
        if enabled != self.enabled:
            if enabled:
                await self.start()
            else:
                await self.stop()

    async def _on_accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        generation = self._generation
        self._dialing.add(task)
        try:
            try:
                host, port = parse_upstream(self.upstream)
                upstream = await asyncio.open_connection(host, port)
            except asyncio.CancelledError:
                # Only stop() cancels a dial, and it owns this task: end quietly, because
                # asyncio's stream callback would report a cancelled task as an error.
                client_writer.close()
                return
            except (OSError, ListenError) as exc:
                log.warning("proxy %s: cannot reach upstream %s: %s", self.name, self.upstream, exc)
                client_writer.close()
                return
            if not self.enabled or generation != self._generation:
                client_writer.close()
                upstream[1].close()
                return
            connection = Connection(self, (client_reader, client_writer), upstream)
            self.connections.add(connection)
            connection.start()
        finally:
            self._dialing.discard(task)
