"""Pure ASGI middleware: request metrics, the body size limit and the per-request time limit.

Pure ASGI (not ``BaseHTTPMiddleware``) so that streamed responses pass through untouched and a
client disconnect still reaches the endpoint.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import BodyTooLarge, error_response
from ._metrics import Metrics

__all__ = ["BodyLimitMiddleware", "MetricsMiddleware", "TimeLimitMiddleware"]


class MetricsMiddleware:
    """Counts every HTTP request by method, route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.requests_in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests_in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(
                scope["method"], route, status, time.perf_counter() - start
            )


class BodyLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes with 413.

    A ``Content-Length`` over the limit is refused before a byte of the body is read; a body
    without one (chunked) is counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        path = scope.get("path", "")
        if length is not None and length > self.limit:
            response = error_response(path, 413, f"request body larger than {self.limit} bytes")
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def send_started(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, send_started)
        except BodyTooLarge:
            if started:
                raise
            response = error_response(path, 413, f"request body larger than {self.limit} bytes")
            response.headers["connection"] = "close"
            await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class TimeLimitMiddleware:
    """A request whose response has not started within ``limit`` seconds gets 504.

    The endpoint is cancelled (an async tool it was awaiting is cancelled with it). Once a
    response has started — a stream — the limit no longer applies: the tool's own deadline
    bounds the stream.
    """

    def __init__(self, app: ASGIApp, limit: float) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        deadline = asyncio.timeout(self.limit)

        async def send_started(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, send_started)
        except TimeoutError:
            if not deadline.expired() or started:
                raise
            response = error_response(
                scope.get("path", ""),
                504,
                f"the request took longer than the server's limit of {self.limit:g} s",
            )
            await response(scope, receive, send)
