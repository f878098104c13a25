"""Streaming a call: event encodings (SSE, NDJSON) and a response that notices a client leaving.

``StreamResponse`` runs the body iterator next to a task that waits for ``http.disconnect``;
whichever ends first cancels the other, so a client that goes away mid-stream cancels the
call at once (not at the next chunk the server tries to send), and the iterator is always
closed, which closes the host's stream and cancels the tool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..sdk import LogEntry, Progress, ToolResult

__all__ = [
    "NDJSON",
    "SSE",
    "StreamResponse",
    "event_dict",
    "ndjson_line",
    "negotiate_stream",
    "sse_frame",
]

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
_NDJSON_ALIASES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


def dumps(value: Any) -> bytes:
    """Compact one-line JSON (orjson never emits a raw newline, which SSE framing needs)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


def event_dict(event: Any) -> dict[str, Any]:
    """One ``astream`` event as the ``/v1`` stream sends it (an ``event`` key names its kind).

    ``progress``: ``progress``, ``total``, ``message``; ``log``: ``level``, ``message``;
    ``content``: one content block (``type`` plus its fields); ``result``: the final result
    (``is_error``, ``content``, ``structured``, ``reason``/``meta`` when set).
    """
    if isinstance(event, ToolResult):
        return {"event": "result", **event.to_dict()}
    if isinstance(event, Progress):
        return {
            "event": "progress",
            "progress": event.progress,
            "total": event.total,
            "message": event.message,
        }
    if isinstance(event, LogEntry):
        return {"event": "log", "level": event.level, "message": event.message}
    to_dict = getattr(event, "to_dict", None)
    if callable(to_dict):
        return {"event": "content", **to_dict()}
    return {"event": "content", "type": "text", "text": str(event)}


def sse_frame(data: dict[str, Any], event: str | None = None) -> bytes:
    """``event: <kind>`` (when given) and one ``data:`` line, then the blank line."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + dumps(data) + b"\n\n"


def ndjson_line(data: dict[str, Any]) -> bytes:
    return dumps(data) + b"\n"


def negotiate_stream(accept: str | None) -> str | None:
    """``SSE`` or ``NDJSON`` for an ``Accept`` header; None when it allows neither.

    No header, ``*/*`` and ``text/*`` mean SSE; NDJSON wins when it is listed at least as
    preferred as SSE.
    """
    if not accept:
        return SSE
    candidates: list[tuple[float, int, int, str]] = []
    for order, part in enumerate(accept.split(",")):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            if f.lower().startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if not q > 0:
            continue
        if media in _NDJSON_ALIASES:
            candidates.append((q, 1, -order, NDJSON))
        elif media == SSE:
            candidates.append((q, 1, -order, SSE))
        elif media in ("*/*", "text/*"):
            candidates.append((q, 0, -order, SSE))
    # Highest q first; then an explicit type over a wildcard; then the one listed first.
    return max(candidates)[3] if candidates else None


class StreamResponse(Response):
    """A streamed body that is cancelled the moment the client disconnects."""

    media_type = SSE

    def __init__(
        self,
        content: AsyncIterator[bytes],
        media_type: str = SSE,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
        status_code: int = 200,
        source: Any = None,
    ) -> None:
        self.body_iterator = content
        # What ``content`` encodes (a call's events): closed at the end in every case, also
        # when ``content`` never started (a generator that never ran ignores ``aclose``), so a
        # call's concurrency slot is given back even if the client left before the first byte.
        self.source = source
        self.status_code = status_code
        self.media_type = media_type
        self.background = background
        self.init_headers(
            {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        )

    async def _stream(self, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    @staticmethod
    async def _wait_disconnect(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self._stream(send))
        watching = asyncio.ensure_future(self._wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, watching):
                if not task.done():
                    task.cancel()
            await asyncio.gather(streaming, watching, return_exceptions=True)
        aclose = getattr(self.source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        if streaming in done and not streaming.cancelled():
            exc = streaming.exception()
            if exc is not None and not isinstance(exc, OSError):
                raise exc
        if self.background is not None and streaming in done:
            await self.background()
