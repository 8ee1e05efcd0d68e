"""One direction of one proxied connection: a reader, a chain of toxic stages, a writer.

Theory of operation
-------------------
A :class:`Link` copies bytes from a source socket to a destination socket. The reader turns every
``read()`` into a :class:`Chunk` stamped with the time it was read and feeds the first stage.
Stages are joined by bounded :class:`Channel` queues, so a slow stage holds back the reader and,
through TCP, the sender. The writer drains the last channel into the destination socket.

::

    source -> reader -> [head noop] -> [toxic 1] -> ... -> [toxic n] -> writer -> destination

The head stage is a hidden no-op that never goes away: to remove toxic *k* the stage in front of
it is paused, so the first real toxic needs someone in front of it too.

End of stream travels as :data:`EOF` through the channels, in order behind the data. A stage
*closes* by forwarding :data:`EOF` and discarding whatever still arrives at its input; when the
writer sees :data:`EOF` it closes the destination socket fully (never a half-close), which ends
the opposite link's reader and therefore the whole connection.

Changing the chain on a live link pauses ("interrupts") stages. An interrupt cancels the stage's
task; every toxic catches the cancellation at its await points and hands on any chunk it was
holding, so nothing is lost or reordered (the reference server's "never drop data on the floor"
rule). A stage that has closed, or that has committed to close (``reset_peer`` waiting out its
timeout), cannot be interrupted: :meth:`Stage.interrupt` then returns ``False``, after waiting
for the committed close.

Toxicity is drawn every time a stage (re)starts: at connection start, and whenever the chain
change touches that stage. A stage that loses the draw runs as a no-op until its next restart.

Everything here runs on one asyncio event loop; no locks are needed. Changes to the chain are
serialised by the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from .limits import READ_CHUNK_BYTES_MAX, STAGE_BUFFER_CHUNKS

if TYPE_CHECKING:
    import random

    from .toxics import Toxic, ToxicKind

__all__ = ["EOF", "TIMED_OUT", "Channel", "Chunk", "Link", "Stage"]

log = logging.getLogger("harness.toxiproxy")


@dataclass(frozen=True, slots=True)
class Chunk:
    """The bytes of one read, and when they were read (event-loop clock, seconds)."""

    data: bytes
    read_at_s: float


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


EOF: Final = _Marker("EOF")  # end of stream, queued behind the data
TIMED_OUT: Final = _Marker("TIMED_OUT")  # returned by Channel.get when its deadline passes

Item = Chunk | _Marker


class Channel:
    """A FIFO between two stages with one consumer at a time.

    ``put`` waits while the queue holds ``capacity`` items; ``put_nowait`` ignores the capacity
    (used to hand on held data during an interrupt, which must not wait). After
    :meth:`discard`, everything put is dropped and no producer ever waits again.
    """

    def __init__(self, capacity: int) -> None:
        self._items: deque[Item] = deque()
        self._capacity = max(1, capacity)
        self._getter: asyncio.Future[None] | None = None
        self._putters: list[asyncio.Future[None]] = []
        self._discarding = False

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Item) -> None:
        if self._discarding:
            return
        self._items.append(item)
        self._wake_getter()

    def unget(self, item: Item) -> None:
        """Put ``item`` back at the head, for a stage that must give back what it took."""
        if self._discarding:
            return
        self._items.appendleft(item)
        self._wake_getter()

    async def put(self, item: Item) -> None:
        loop = asyncio.get_running_loop()
        while not self._discarding and len(self._items) >= self._capacity:
            waiter: asyncio.Future[None] = loop.create_future()
            self._putters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._putters.remove(waiter)
        self.put_nowait(item)

    async def get(self, timeout_s: float | None = None) -> Item:
        """The next item, or :data:`TIMED_OUT` if none arrives within ``timeout_s``.

        Cancellation-safe: an item is taken only after the wait, never lost to a cancel.
        """
        if not self._items:
            loop = asyncio.get_running_loop()
            expired = False

            def expire(waiter: asyncio.Future[None]) -> None:
                nonlocal expired
                expired = True
                if not waiter.done():
                    waiter.set_result(None)

            deadline = None if timeout_s is None else loop.time() + timeout_s
            while not self._items:
                if expired:
                    return TIMED_OUT
                waiter: asyncio.Future[None] = loop.create_future()
                self._getter = waiter
                timer = None if deadline is None else loop.call_at(deadline, expire, waiter)
                try:
                    await waiter
                finally:
                    self._getter = None
                    if timer is not None:
                        timer.cancel()
        item = self._items.popleft()
        self._wake_putters()
        return item

    def drain(self) -> list[Item]:
        """Take everything queued, in order."""
        items = list(self._items)
        self._items.clear()
        self._wake_putters()
        return items

    def discard(self) -> None:
        self._discarding = True
        self._items.clear()
        self._wake_putters()

    def _wake_getter(self) -> None:
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)

    def _wake_putters(self) -> None:
        for waiter in self._putters:
            if not waiter.done():
                waiter.set_result(None)


class Stage:
    """One toxic's place in one link: its input and output channels, its running task, and the
    per-connection state the toxic keeps (``limit_data`` counts bytes here)."""

    def __init__(self, link: Link, toxic: Toxic | None, input_: Channel, output: Channel) -> None:
        self.link = link
        self.toxic = toxic
        self.input = input_
        self.output = output
        self.state: object | None = None if toxic is None else toxic.kind.new_state()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.doomed = False  # committed to close; interrupts wait for it instead

    @property
    def rng(self) -> random.Random:
        return self.link.rng

    def start(self) -> None:
        """Run the toxic, or a no-op if the toxicity draw says this stage is spared."""
        from .toxics import NOOP

        kind: ToxicKind = NOOP
        if self.toxic is not None and self.rng.random() < self.toxic.toxicity:
            kind = self.toxic.kind
        self.task = asyncio.get_running_loop().create_task(self._run(kind))

    async def _run(self, kind: ToxicKind) -> None:
        try:
            await kind.pipe(self)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in a toxic must end this connection, not the server
            log.exception("toxic %s failed; closing the link", kind.TYPE)
            self.close()

    async def interrupt(self) -> bool:
        """Pause the stage so the chain can be changed. ``False`` if it is closed (or closing)."""
        if self.closed or self.task is None:
            return False
        if self.doomed:
            await asyncio.wait({self.task})
            return False
        self.task.cancel()
        await asyncio.wait({self.task})
        return not self.closed

    async def receive(self, timeout_s: float | None = None) -> Item:
        return await self.input.get(timeout_s)

    async def emit(self, chunk: Chunk) -> None:
        """Send ``chunk`` on; if interrupted while waiting for room, hand it on regardless."""
        try:
            await self.output.put(chunk)
        except asyncio.CancelledError:
            self.output.put_nowait(chunk)
            raise

    def emit_now(self, chunk: Chunk) -> None:
        self.output.put_nowait(chunk)

    def close(self) -> None:
        """End this stage's stream: forward EOF and drop whatever still arrives."""
        if self.closed:
            return
        self.closed = True
        self.input.discard()
        self.output.put_nowait(EOF)


class LinkOwner(Protocol):
    """What a link needs from its connection."""

    rng: random.Random
    closed: bool

    def on_link_done(self, link: Link) -> None: ...


def set_reset_on_close(writer: asyncio.StreamWriter) -> None:
    """SO_LINGER with a zero timeout: closing the socket sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Link:
    """One direction of a connection; see the module docstring."""

    def __init__(
        self,
        owner: LinkOwner,
        direction: str,
        chain: list[Toxic],
        source: asyncio.StreamReader,
        destination: asyncio.StreamWriter,
    ) -> None:
        self.owner = owner
        self.direction = direction
        self.source = source
        self.destination = destination
        self.output = Channel(STAGE_BUFFER_CHUNKS)  # the writer's; fixed for the link's life
        self.stages: list[Stage] = []
        toxics: list[Toxic | None] = [None, *chain]
        channel_in = Channel(STAGE_BUFFER_CHUNKS)
        for index, toxic in enumerate(toxics):
            if index + 1 < len(toxics):
                next_toxic = toxics[index + 1]
                assert next_toxic is not None
                channel_out = Channel(next_toxic.kind.BUFFER_CHUNKS)
            else:
                channel_out = self.output
            self.stages.append(Stage(self, toxic, channel_in, channel_out))
            channel_in = channel_out
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def rng(self) -> random.Random:
        return self.owner.rng

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        for stage in self.stages:
            stage.start()
        self._writer = loop.create_task(self._write())

    def tasks(self) -> list[asyncio.Task[None]]:
        found = [task for task in (self._reader, self._writer) if task is not None]
        found.extend(stage.task for stage in self.stages if stage.task is not None)
        return found

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        head = self.stages[0].input
        while True:
            try:
                data = await self.source.read(READ_CHUNK_BYTES_MAX)
            except OSError:
                data = b""
            if not data:
                break
            await head.put(Chunk(data, loop.time()))
        head.put_nowait(EOF)

    async def _write(self) -> None:
        try:
            while True:
                item = await self.output.get()
                if not isinstance(item, Chunk) or self.destination.is_closing():
                    break
                self.destination.write(item.data)
                try:
                    await self.destination.drain()
                except OSError:
                    break
        finally:
            self.output.discard()
            self.destination.close()
            self.owner.on_link_done(self)

    # --- changes to the chain on a live link -----------------------------------------------

    def _stage_of(self, toxic: Toxic) -> Stage | None:
        for stage in self.stages[1:]:
            if stage.toxic is toxic:
                return stage
        return None

    async def add_toxic(self, toxic: Toxic) -> None:
        """Append a stage; the previous last stage restarts (and redraws its toxicity)."""
        last = self.stages[-1]
        stage = Stage(self, toxic, Channel(toxic.kind.BUFFER_CHUNKS), last.output)
        self.stages.append(stage)
        if await last.interrupt() and not self.owner.closed:
            last.output = stage.input
            stage.start()
            last.start()
        else:
            stage.closed = True  # the link is ending; the new stage never runs

    async def update_toxic(self, toxic: Toxic) -> None:
        """Restart the toxic's stage so it picks up new attributes and redraws toxicity."""
        stage = self._stage_of(toxic)
        if stage is not None and await stage.interrupt() and not self.owner.closed:
            stage.start()

    async def remove_toxic(self, toxic: Toxic) -> None:
        """Take the toxic's stage out; the stage in front of it restarts."""
        stage = self._stage_of(toxic)
        if stage is None:
            return
        if not await stage.interrupt():
            self.stages.remove(stage)  # already closed: the link is ending anyway
            return
        if toxic.kind.CLOSES_ON_REMOVAL:
            stage.close()
            self.stages.remove(stage)
            return
        previous = self.stages[self.stages.index(stage) - 1]
        previous_running = await previous.interrupt()
        for item in stage.input.drain():
            stage.output.put_nowait(item)
            if item is EOF:
                break
        previous.output = stage.output
        self.stages.remove(stage)
        if previous_running and not self.owner.closed:
            previous.start()
