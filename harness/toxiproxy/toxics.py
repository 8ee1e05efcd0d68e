"""The toxic types: one class per type, holding its attributes and its pipe behaviour.

Theory of operation
-------------------
A :class:`Toxic` is what the API manages: a name, a direction, a toxicity and a *kind*. The kind
is an immutable attribute record (one subclass of :class:`ToxicKind` per toxic type) whose
:meth:`ToxicKind.pipe` coroutine moves chunks from a stage's input to its output. Updating a
toxic swaps in a new kind and restarts its stages; a pipe that is already running keeps the
attributes it started with until that restart.

Every pipe follows the same contract (see :mod:`harness.toxiproxy.link`):

* take items with ``await stage.receive()``; on :data:`EOF` call ``stage.close()`` (after any
  delay the toxic adds) and return;
* pass data on with ``await stage.emit(chunk)``;
* when cancelled (an interrupt) while holding data, hand it on with ``stage.emit_now`` before
  re-raising, so an interrupt never loses or reorders bytes.

Units follow the reference server: milliseconds everywhere, except ``slicer.delay`` (microseconds)
and ``bandwidth.rate`` (KB/s, 1 KB = 1000 bytes). All attributes are integers.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .jsoncompat import as_float32
from .limits import BANDWIDTH_SLICE_S, LATENCY_BUFFER_CHUNKS, STAGE_BUFFER_CHUNKS
from .link import EOF, TIMED_OUT, Chunk, Stage

__all__ = [
    "DIRECTIONS",
    "NOOP",
    "TOXIC_KINDS",
    "BandwidthToxic",
    "LatencyToxic",
    "LimitDataToxic",
    "NoopToxic",
    "ResetPeerToxic",
    "SlicerToxic",
    "SlowCloseToxic",
    "TimeoutToxic",
    "Toxic",
    "ToxicKind",
    "parse_direction",
]

DIRECTIONS: Final = ("upstream", "downstream")


def parse_direction(stream: str) -> str | None:
    """``upstream`` or ``downstream`` for a stream name in any letter case, else ``None``."""
    lowered = stream.lower()
    return lowered if lowered in DIRECTIONS else None


@dataclass(frozen=True)
class ToxicKind(abc.ABC):
    """Attributes and behaviour of one toxic type. Subclasses declare their attributes as
    dataclass fields named exactly like the JSON attributes, in reply order."""

    TYPE: ClassVar[str] = ""
    STRUCT: ClassVar[str] = ""  # the reference server's type name, used in error messages
    GO_TYPE: ClassVar[str] = "int64"  # the declared type of every attribute
    BUFFER_CHUNKS: ClassVar[int] = STAGE_BUFFER_CHUNKS  # queue in front of this toxic's stage
    CLOSES_ON_REMOVAL: ClassVar[bool] = False  # removing the toxic closes the link
    RESETS_PEER: ClassVar[bool] = False  # connections opened while it exists close with RST

    @classmethod
    def field_types(cls) -> dict[str, str]:
        return {field.name: cls.GO_TYPE for field in dataclasses.fields(cls)}

    def attributes(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def updated(self, changes: dict[str, Any]) -> ToxicKind:
        return dataclasses.replace(self, **changes)

    def new_state(self) -> object | None:
        """Per-connection state kept across restarts of the stage; ``None`` if stateless."""
        return None

    @abc.abstractmethod
    async def pipe(self, stage: Stage) -> None:
        """Move chunks from ``stage``'s input to its output, applying this toxic."""


@dataclass(frozen=True)
class NoopToxic(ToxicKind):
    """Passes everything through unchanged."""

    TYPE: ClassVar[str] = "noop"
    STRUCT: ClassVar[str] = "NoopToxic"

    async def pipe(self, stage: Stage) -> None:
        while True:
            item = await stage.receive()
            if not isinstance(item, Chunk):
                stage.close()
                return
            await stage.emit(item)


NOOP: Final = NoopToxic()


async def _sleep_until(deadline_s: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, deadline_s - loop.time()))


@dataclass(frozen=True)
class LatencyToxic(ToxicKind):
    """Releases each chunk ``latency`` ± ``jitter`` ms after it was read (or after an earlier
    latency stage released it). First in, first out: chunks are never reordered, so a short
    delay may wait behind a long one."""

    TYPE: ClassVar[str] = "latency"
    STRUCT: ClassVar[str] = "LatencyToxic"
    BUFFER_CHUNKS: ClassVar[int] = LATENCY_BUFFER_CHUNKS
    latency: int = 0
    jitter: int = 0

    def _delay_s(self, stage: Stage) -> float:
        delay_ms = self.latency
        if self.jitter > 0:
            delay_ms += stage.rng.randrange(self.jitter * 2) - self.jitter
        return delay_ms / 1000.0

    async def pipe(self, stage: Stage) -> None:
        while True:
            item = await stage.receive()
            if not isinstance(item, Chunk):
                stage.close()
                return
            release_at_s = item.read_at_s + self._delay_s(stage)
            try:
                await _sleep_until(release_at_s)
            except asyncio.CancelledError:
                stage.emit_now(item)
                raise
            # Later stages measure from the release, so stacked latency toxics add up.
            await stage.emit(Chunk(item.data, max(item.read_at_s, release_at_s)))


@dataclass(frozen=True)
class BandwidthToxic(ToxicKind):
    """Limits throughput to ``rate`` KB/s by sleeping off the time each chunk "costs". A chunk
    larger than ``rate`` × 100 bytes leaves in ``rate`` × 100-byte pieces, one every 100 ms.
    ``rate`` 0 means unlimited."""

    TYPE: ClassVar[str] = "bandwidth"
    STRUCT: ClassVar[str] = "BandwidthToxic"
    rate: int = 0

    async def pipe(self, stage: Stage) -> None:
        loop = asyncio.get_running_loop()
        debt_s = 0.0
        piece_bytes = self.rate * 100
        while True:
            item = await stage.receive()
            if not isinstance(item, Chunk):
                stage.close()
                return
            if self.rate <= 0:
                debt_s = 0.0
            else:
                debt_s += len(item.data) / (self.rate * 1000.0)
            data = item.data
            try:
                while self.rate > 0 and len(data) > piece_bytes:
                    await asyncio.sleep(BANDWIDTH_SLICE_S)
                    await stage.output.put(Chunk(data[:piece_bytes], item.read_at_s))
                    data = data[piece_bytes:]
                    debt_s -= BANDWIDTH_SLICE_S
                started_s = loop.time()
                await asyncio.sleep(max(0.0, debt_s))
                debt_s -= loop.time() - started_s
                await stage.output.put(Chunk(data, item.read_at_s))
            except asyncio.CancelledError:
                stage.emit_now(Chunk(data, item.read_at_s))
                raise


@dataclass(frozen=True)
class SlowCloseToxic(ToxicKind):
    """Data passes untouched; the close is passed on ``delay`` ms late."""

    TYPE: ClassVar[str] = "slow_close"
    STRUCT: ClassVar[str] = "SlowCloseToxic"
    delay: int = 0

    async def pipe(self, stage: Stage) -> None:
        while True:
            item = await stage.receive()
            if isinstance(item, Chunk):
                await stage.emit(item)
                continue
            try:
                await asyncio.sleep(self.delay / 1000.0)
            except asyncio.CancelledError:
                stage.input.unget(item)  # the restarted stage must still see the end
                raise
            stage.close()
            return


@dataclass(frozen=True)
class TimeoutToxic(ToxicKind):
    """Swallows all data. With ``timeout`` > 0 the link closes once that many ms pass without
    a chunk arriving (each swallowed chunk restarts the clock); with 0 it never closes.
    Removing the toxic closes the link."""

    TYPE: ClassVar[str] = "timeout"
    STRUCT: ClassVar[str] = "TimeoutToxic"
    CLOSES_ON_REMOVAL: ClassVar[bool] = True
    timeout: int = 0

    async def pipe(self, stage: Stage) -> None:
        idle_s = self.timeout / 1000.0 if self.timeout > 0 else None
        while True:
            item = await stage.receive(idle_s)
            if item is EOF or item is TIMED_OUT:
                stage.close()
                return


@dataclass(frozen=True)
class ResetPeerToxic(ToxicKind):
    """Waits for the first chunk (or the end), drops it, waits ``timeout`` ms, then closes.
    Connections opened while the toxic exists have SO_LINGER 0, so that close is an RST."""

    TYPE: ClassVar[str] = "reset_peer"
    STRUCT: ClassVar[str] = "ResetToxic"
    RESETS_PEER: ClassVar[bool] = True
    timeout: int = 0

    async def pipe(self, stage: Stage) -> None:
        await stage.receive()
        stage.doomed = True
        await asyncio.sleep(self.timeout / 1000.0)
        stage.close()


@dataclass(frozen=True)
class SlicerToxic(ToxicKind):
    """Cuts each chunk into pieces of about ``average_size`` ± ``size_variation`` bytes, with
    ``delay`` microseconds between pieces."""

    TYPE: ClassVar[str] = "slicer"
    STRUCT: ClassVar[str] = "SlicerToxic"
    GO_TYPE: ClassVar[str] = "int"
    average_size: int = 0
    size_variation: int = 0
    delay: int = 0

    def cut_points(self, stage: Stage, size: int) -> list[int]:
        """Offsets where pieces end, found by splitting in about half until pieces are small
        enough. Every piece has at least one byte."""
        points: list[int] = []
        pending = [(0, size)]
        while pending:
            start, end = pending.pop()
            if end - start <= 1 or (end - start) - self.average_size <= self.size_variation:
                points.append(end)
                continue
            middle = start + (end - start) // 2
            if self.size_variation > 0:
                middle += stage.rng.randrange(self.size_variation * 2) - self.size_variation
            middle = min(max(middle, start + 1), end - 1)
            pending.append((middle, end))
            pending.append((start, middle))
        return points

    async def pipe(self, stage: Stage) -> None:
        while True:
            item = await stage.receive()
            if not isinstance(item, Chunk):
                stage.close()
                return
            offset = 0
            try:
                for end in self.cut_points(stage, len(item.data)):
                    await stage.output.put(Chunk(item.data[offset:end], item.read_at_s))
                    offset = end
                    await asyncio.sleep(self.delay / 1_000_000.0)
            except asyncio.CancelledError:
                if offset < len(item.data):
                    stage.emit_now(Chunk(item.data[offset:], item.read_at_s))
                raise


@dataclass
class _LimitState:
    sent_bytes: int = 0


@dataclass(frozen=True)
class LimitDataToxic(ToxicKind):
    """Passes ``bytes`` bytes (counted per connection from when the toxic was attached),
    cutting the last chunk short, then closes the link."""

    TYPE: ClassVar[str] = "limit_data"
    STRUCT: ClassVar[str] = "LimitDataToxic"
    bytes: int = 0

    def new_state(self) -> object | None:
        return _LimitState()

    async def pipe(self, stage: Stage) -> None:
        state = stage.state
        assert isinstance(state, _LimitState)
        while True:
            item = await stage.receive()
            if not isinstance(item, Chunk):
                stage.close()
                return
            remaining = max(0, self.bytes - state.sent_bytes)
            data = item.data[:remaining]
            if data:
                state.sent_bytes += len(data)
                await stage.emit(Chunk(data, item.read_at_s))
            if self.bytes - state.sent_bytes <= 0:
                stage.close()
                return


TOXIC_KINDS: Final[dict[str, type[ToxicKind]]] = {
    kind.TYPE: kind
    for kind in (
        LatencyToxic,
        BandwidthToxic,
        SlowCloseToxic,
        TimeoutToxic,
        ResetPeerToxic,
        SlicerToxic,
        LimitDataToxic,
        NoopToxic,
    )
}


class Toxic:
    """A toxic as the API sees it. ``stream`` keeps the text the client sent; ``direction`` is
    its normalised form."""

    __slots__ = ("direction", "kind", "name", "stream", "toxicity", "type")

    def __init__(
        self, *, name: str, type_: str, stream: str, toxicity: float, kind: ToxicKind
    ) -> None:
        direction = parse_direction(stream)
        if direction is None:
            raise ValueError(f"stream {stream!r} is neither upstream nor downstream")
        self.name = name
        self.type = type_
        self.stream = stream
        self.direction = direction
        self.toxicity = toxicity
        self.kind = kind

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": self.kind.attributes(),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": as_float32(self.toxicity),
        }
