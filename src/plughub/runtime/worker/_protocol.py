"""The framed protocol between the host and a worker process.

Each frame is a 4-byte big-endian length followed by one orjson-encoded JSON object. It runs on
pipes of its own, never on the worker's stdout/stderr (those are captured as logs), so a stray
``print`` cannot corrupt the channel. orjson was chosen by measurement: encode+decode of a
226-byte call takes 0.8 us against 5.9 us for ``json`` and 1.7 us for msgpack, keeps JSON on the
wire (debuggable) and msgpack saves only 7-20% of the bytes (see ``bench/worker.py --codecs``).

Messages are dicts with a type key ``t``:

host → worker   ``init`` (once), ``call``, ``cancel``, ``ping``, ``reply`` (to a worker
                request), ``shutdown``
worker → host   ``ready`` or ``fatal`` (once), ``result``, ``event`` (progress, log or a content
                chunk of a streaming call), ``pong``, ``request`` (ctx.http / ctx.storage, answered
                by the host with ``reply``)
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["DEFAULT_MAX_FRAME", "FrameDecoder", "FrameProtocol", "ProtocolError", "encode"]

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame: the channel cannot be trusted."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame. Raises ``TypeError`` for values JSON cannot carry."""
    body = orjson.dumps(message)
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole messages."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buf
        buf += data
        out: list[dict[str, Any]] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > self.max_frame:
                raise ProtocolError(f"frame of {size} bytes exceeds the limit of {self.max_frame}")
            if n - pos - 4 < size:
                break
            try:
                msg = orjson.loads(memoryview(buf)[pos + 4 : pos + 4 + size])
            except orjson.JSONDecodeError as e:
                raise ProtocolError(f"frame is not valid JSON: {e}") from None
            if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
                raise ProtocolError("frame is not a message object with a type")
            out.append(msg)
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out


class FrameProtocol(asyncio.Protocol):
    """Reads frames from a pipe; also the writer's flow control (``drain``)."""

    def __init__(
        self,
        on_message: Callable[[dict[str, Any]], None],
        on_close: Callable[[BaseException | None], None],
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._decoder = FrameDecoder(max_frame)
        self._on_message = on_message
        self._on_close = on_close
        self._closed = False
        self.transport: asyncio.BaseTransport | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as e:
            self._close(e)
            return
        for msg in messages:
            self._on_message(msg)

    def eof_received(self) -> bool | None:
        self._close(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._can_write.set()
        self._close(exc)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    async def drain(self) -> None:
        await self._can_write.wait()

    def _close(self, exc: BaseException | None) -> None:
        if not self._closed:
            self._closed = True
            if self.transport is not None:
                self.transport.close()
            self._on_close(exc)
