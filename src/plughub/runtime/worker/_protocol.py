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

import struct
from typing import Any

import orjson

__all__ = ["DEFAULT_MAX_FRAME", "FrameDecoder", "ProtocolError", "encode"]

HEADER = struct.Struct(">I")
_unpack = HEADER.unpack_from
_loads = orjson.loads
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
        if not buf and len(data) >= 4:
            # Most reads hold exactly one whole frame: decode it in place, no buffer copy.
            (size,) = _unpack(data)
            if len(data) == 4 + size and size <= self.max_frame:
                return [self._message(memoryview(data)[4:])]
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
            out.append(self._message(memoryview(buf)[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out

    @staticmethod
    def _message(body: memoryview) -> dict[str, Any]:
        try:
            msg = _loads(body)
        except orjson.JSONDecodeError as e:
            raise ProtocolError(f"frame is not valid JSON: {e}") from None
        if type(msg) is not dict or type(msg.get("t")) is not str:
            raise ProtocolError("frame is not a message object with a type")
        return msg
