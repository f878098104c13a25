"""Pure ASGI middleware: request metrics, the body size limit and the per-request time limit.

One middleware does all three, with one ``send`` wrapper per request: each layer of ASGI
middleware costs a coroutine frame and a wrapped ``send``/``receive`` on every request, which
showed up as a large share of a trivial call's CPU time. Pure ASGI (not
``BaseHTTPMiddleware``) so that streamed responses pass through untouched and a client
disconnect still reaches the endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import BodyTooLarge, error_response
from ._metrics import Metrics

__all__ = ["RequestGuard"]


class _Call:
    """One request's state, shared by the middleware and its ``send`` wrapper."""

    __slots__ = ("fired", "started", "status", "task", "timer")

    def __init__(self) -> None:
        self.status = 500
        self.started = False
        self.fired = False
        self.task: asyncio.Task[object] | None = None
        self.timer: asyncio.TimerHandle | None = None


def _expire(call: _Call) -> None:
    """The time limit passed before the response started: cancel the request's task."""
    call.timer = None
    if not call.started and call.task is not None:
        call.fired = True
        call.task.cancel()


class RequestGuard:
    """Metrics, body size limit and time limit for every HTTP request.

    - **metrics**: every request is counted by method, route template and status, and timed
      (the 413s and 504s answered here included);
    - **body limit**: a ``Content-Length`` over ``max_body`` is refused with 413 before a byte
      of the body is read; a body without one (chunked) is counted as it arrives and refused as
      soon as it passes the limit. ``exempt(scope)`` names requests that enforce their own
      limit (package uploads);
    - **time limit**: a request whose response has not started within ``time_limit`` seconds
      is cancelled (an async tool it awaited with it) and answered 504. Once a response has
      started (a stream) the limit no longer applies: the tool's own deadline bounds it. The
      deadline is one timer handle, armed per request and disarmed when the response starts.

    ``fast(scope, receive, send)``, when given, may answer a request itself (it returns None)
    or hand it on to the app with the ``receive`` it returns.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body: int,
        time_limit: float,
        exempt: Callable[[Scope], bool] | None = None,
        fast: Callable[[Scope, Receive, Send], Awaitable[Receive | None]] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.time_limit = time_limit
        self.exempt = exempt
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        call = _Call()

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
                if not call.started:
                    call.started = True
                    if call.timer is not None:
                        call.timer.cancel()
                        call.timer = None
            await send(message)

        in_flight = self.metrics.requests_in_flight
        in_flight.inc()
        try:
            await self._guarded(scope, receive, tracked_send, call)
        finally:
            in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(
                scope["method"], route, call.status, time.perf_counter() - start
            )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, call: _Call) -> None:
        limit = self.max_body
        checked = self.exempt is None or not self.exempt(scope)
        if checked:
            length = _content_length(scope)
            if length is not None and length > limit:
                await self._too_large(scope, receive, send)
                return
            if length is None:  # chunked: count what arrives (a Content-Length bounds it)
                receive = _counting(receive, limit)
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        call.task = task
        call.timer = asyncio.get_running_loop().call_later(self.time_limit, _expire, call)
        try:
            if self.fast is not None:
                rest = await self.fast(scope, receive, send)
                if rest is not None:
                    await self.app(scope, rest, send)
            else:
                await self.app(scope, receive, send)
        except BodyTooLarge:
            if call.started or not checked:
                raise
            await self._too_large(scope, receive, send)
        except asyncio.CancelledError:
            # Ours only when the timer fired and no one else cancelled the task as well (a
            # shutdown): the same bookkeeping as ``asyncio.timeout``.
            if not call.fired or call.started or task is None or task.uncancel() > cancelling:
                raise
            response = error_response(
                scope.get("path", ""),
                504,
                f"the request took longer than the server's limit of {self.time_limit:g} s",
            )
            await response(scope, receive, send)
        else:
            if call.fired and task is not None:  # the app swallowed our cancellation
                task.uncancel()
        finally:
            if call.timer is not None:
                call.timer.cancel()
                call.timer = None
            call.task = None

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            scope.get("path", ""), 413, f"request body larger than {self.max_body} bytes"
        )
        response.headers["connection"] = "close"
        await response(scope, receive, send)


def _counting(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``BodyTooLarge`` once the body passes ``limit`` bytes."""
    seen = 0

    async def counting_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counting_receive


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
