"""The one invoke pipeline every call goes through.

validate args → permission → policy (``before_invoke`` hooks) → rate limit → cache → run with a
deadline → validate output → ``after_invoke`` hooks → audit. Each refusal is a ``ToolResult`` with
``is_error`` and a stable ``reason``. Only unknown plugins/tools and misuse raise.

The sync path runs sync tools inline (see ``runtime._watchdog`` for why and how deadlines hold);
everything that needs an event loop goes through ``ainvoke``/``astream``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..runtime._normalize import chunk_items, normalize
from ..runtime._watchdog import DeadlineExceeded, watchdog
from ..sdk import (
    AuditEvent,
    Context,
    Deny,
    Invocation,
    LogEntry,
    ModifyArgs,
    Progress,
    ToolError,
    ToolResult,
)
from ..sdk._tool import ArgumentsInvalid, ToolDef

if TYPE_CHECKING:
    from ._limits import TokenBucket, TTLCache

__all__ = ["Bound", "Pipeline"]

log = logging.getLogger("plughub.host")
_ids = itertools.count(1)
#: Extra seconds the async side waits for a sync tool's thread after its deadline fired.
GRACE = 0.5
_FINAL = object()


class Bound:
    """A tool compiled for the pipeline: everything per-call code needs, precomputed."""

    __slots__ = (
        "cache",
        "ctx_factory",
        "denied",
        "func",
        "kind",
        "limiter",
        "max_arg_bytes",
        "missing_credentials",
        "name",
        "plugin_id",
        "slots",
        "timeout",
        "tool",
        "validate",
    )

    def __init__(
        self,
        plugin_id: str,
        tool: ToolDef,
        *,
        timeout: float,
        ctx_factory: Callable[[str, float | None, Any], Context] | None,
        denied: str | None = None,
        missing_credentials: list[str] | None = None,
        limiter: TokenBucket | None = None,
        cache: TTLCache | None = None,
        concurrency: int | None = None,
        max_arg_bytes: int = 1 << 20,
    ) -> None:
        self.plugin_id = plugin_id
        self.tool = tool
        self.name = tool.spec.name
        self.kind = tool.kind
        self.validate = tool.validate
        self.func = tool.func
        self.timeout = timeout
        self.ctx_factory = ctx_factory if tool.ctx_param else None
        self.denied = denied
        self.missing_credentials = missing_credentials or []
        self.limiter = limiter
        self.cache = cache
        self.slots = threading.BoundedSemaphore(concurrency) if concurrency else None
        self.max_arg_bytes = max_arg_bytes


def _error(message: str, reason: str, **meta: Any) -> ToolResult:
    return ToolResult.error(message, reason, **meta)


class Pipeline:
    """Per-host invoke machinery; ``set_hooks`` recompiles the per-call hook lists."""

    def __init__(
        self, run_coro: Callable[[Any], Any], error_hook: Callable[[dict[str, Any]], None]
    ) -> None:
        self._before: list[Callable[..., Any]] = []
        self._after: list[Callable[..., Any]] = []
        self._audit: list[Callable[..., Any]] = []
        self._run_coro = run_coro
        self._error_hook = error_hook
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="plughub-tool")

    def set_hooks(
        self,
        before: list[Callable[..., Any]],
        after: list[Callable[..., Any]],
        audit: list[Callable[..., Any]],
    ) -> None:
        self._before, self._after, self._audit = before, after, audit

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- shared steps ------------------------------------------------------------------------

    def _prepare(
        self, b: Bound, args: Mapping[str, Any] | str | bytes | None, caller: str | None
    ) -> tuple[dict[str, Any], Invocation | None] | ToolResult:
        """Validate, check permission and policy, rate-limit. Returns kwargs or a refusal."""
        if args is None:
            args = {}
        elif isinstance(args, (str, bytes)):
            if len(args) > b.max_arg_bytes:
                return _error(
                    f"arguments are {len(args)} bytes; the limit for {b.plugin_id} is "
                    f"{b.max_arg_bytes}",
                    "invalid_arguments",
                )
            try:
                args = json.loads(args)
            except ValueError as e:
                return _error(f"arguments are not valid JSON: {e}", "invalid_arguments")
        if not isinstance(args, Mapping):
            return _error("arguments must be a JSON object", "invalid_arguments")
        try:
            kwargs = b.validate(args)
        except ArgumentsInvalid as e:
            return _error(str(e), "invalid_arguments")
        if b.denied is not None:
            return _error(b.denied, "permission_denied")
        if b.missing_credentials:
            return _error(
                f"plugin {b.plugin_id} needs credentials that are not set: "
                + ", ".join(b.missing_credentials),
                "missing_credentials",
            )
        inv: Invocation | None = None
        if self._before:
            inv = Invocation(b.plugin_id, b.name, dict(kwargs), str(next(_ids)), caller)
            for hook in self._before:
                decision = self._maybe_sync(hook(inv))
                if isinstance(decision, Deny):
                    return _error(decision.message, decision.reason)
                if isinstance(decision, ModifyArgs):
                    try:
                        kwargs = b.validate(decision.args)
                    except ArgumentsInvalid as e:
                        return _error(
                            f"a policy rewrote the arguments badly: {e}", "invalid_arguments"
                        )
                    inv.args = dict(kwargs)
        if b.limiter is not None:
            wait = b.limiter.acquire()
            if wait:
                return _error(
                    f"rate limit for {b.plugin_id} exceeded; retry in {wait:.2f}s",
                    "rate_limited",
                    retry_after=round(wait, 3),
                )
        return kwargs, inv

    def _maybe_sync(self, value: Any) -> Any:
        return self._run_coro(value) if inspect.isawaitable(value) else value

    def _cache_key(self, b: Bound, kwargs: dict[str, Any]) -> str | None:
        try:
            return json.dumps(kwargs, sort_keys=True, default=str)
        except (TypeError, ValueError):
            return None

    def _failed(self, b: Bound, exc: BaseException, call_id: str) -> ToolResult:
        if isinstance(exc, ToolError):
            res = _error(exc.message, "tool_error")
            if exc.data is not None:
                res.structured = exc.data
            return res
        log.warning("tool %s.%s raised %s", b.plugin_id, b.name, type(exc).__name__, exc_info=exc)
        try:
            self._error_hook(
                {
                    "plugin_id": b.plugin_id,
                    "tool": b.name,
                    "call_id": call_id,
                    "error": str(exc),
                    "error_type": type(exc).__name__,
                }
            )
        except Exception:
            log.exception("an error_occurred hook failed")
        return _error(f"{type(exc).__name__}: {exc}", "exception")

    def _timed_out(self, b: Bound, timeout: float) -> ToolResult:
        return _error(f"tool {b.plugin_id}.{b.name} did not finish within {timeout:g}s", "timeout")

    def _finish(
        self,
        b: Bound,
        inv: Invocation | None,
        result: ToolResult,
        started: float,
        args: Any,
        caller: str | None,
        cached: bool = False,
    ) -> ToolResult:
        if self._after:
            if inv is None:
                inv = Invocation(b.plugin_id, b.name, dict(args), str(next(_ids)), caller)
            for hook in self._after:
                replaced = self._maybe_sync(hook(inv, result))
                if isinstance(replaced, ToolResult):
                    result = replaced
        if self._audit:
            event = AuditEvent(
                call_id=inv.call_id if inv else str(next(_ids)),
                plugin_id=b.plugin_id,
                tool=b.name,
                caller=caller,
                started=time.time(),
                duration=time.monotonic() - started,
                outcome=result.reason or "error" if result.is_error else "ok",
                arg_bytes=len(json.dumps(args, default=str)),
                result_bytes=len(json.dumps(result.to_dict(), default=str)),
                cached=cached,
            )
            for hook in self._audit:
                try:
                    self._maybe_sync(hook(event))
                except Exception:
                    log.exception("an audit hook failed")
        return result

    def _context(self, b: Bound, deadline: float | None, emit: Any) -> dict[str, Any]:
        assert b.ctx_factory is not None and b.tool.ctx_param is not None
        return {b.tool.ctx_param: b.ctx_factory(str(next(_ids)), deadline, emit)}

    # -- sync --------------------------------------------------------------------------------

    def invoke(
        self, b: Bound, args: Any, caller: str | None = None, timeout: float | None = None
    ) -> ToolResult:
        started = time.monotonic()
        if b.kind != "sync":
            return self._run_coro(self.ainvoke(b, args, caller, timeout))  # type: ignore[no-any-return]
        prepared = self._prepare(b, args, caller)
        if type(prepared) is ToolResult:
            return self._finish(b, None, prepared, started, {}, caller)
        kwargs, inv = prepared  # type: ignore[misc]
        key = None
        if b.cache is not None:
            key = self._cache_key(b, kwargs)
            hit = b.cache.get(key) if key is not None else None
            if hit is not None:
                return self._finish(b, inv, hit, started, kwargs, caller, cached=True)
        limit = b.timeout if timeout is None else min(timeout, b.timeout)
        result = self._run_inline(b, kwargs, started + limit, limit, None)
        if key is not None and not result.is_error:
            b.cache.put(key, result)  # type: ignore[union-attr]
        return self._finish(b, inv, result, started, kwargs, caller)

    def _run_inline(
        self, b: Bound, kwargs: dict[str, Any], deadline: float, limit: float, emit: Any
    ) -> ToolResult:
        call = kwargs if b.ctx_factory is None else {**kwargs, **self._context(b, deadline, emit)}
        if b.slots is not None and not b.slots.acquire(
            timeout=max(0.0, deadline - time.monotonic())
        ):
            return _error(f"{b.plugin_id} is at its concurrency limit", "busy")
        try:
            token = watchdog.arm(deadline)
            try:
                value = b.func(**call)
            finally:
                fired = watchdog.disarm(token)
            return self._timed_out(b, limit) if fired else normalize(value, b.tool)
        except DeadlineExceeded:
            return self._timed_out(b, limit)
        except Exception as exc:
            return self._failed(b, exc, "")
        finally:
            if b.slots is not None:
                b.slots.release()

    # -- async -------------------------------------------------------------------------------

    async def ainvoke(
        self, b: Bound, args: Any, caller: str | None = None, timeout: float | None = None
    ) -> ToolResult:
        if b.kind in ("gen", "agen"):
            final: ToolResult | None = None
            async for event in self.astream(b, args, caller, timeout):
                if isinstance(event, ToolResult):
                    final = event
            assert final is not None
            return final
        started = time.monotonic()
        prepared = await self._aprepare(b, args, caller)
        if isinstance(prepared, ToolResult):
            return await self._afinish(b, None, prepared, started, {}, caller)
        kwargs, inv = prepared
        key = None
        if b.cache is not None:
            key = self._cache_key(b, kwargs)
            hit = b.cache.get(key) if key is not None else None
            if hit is not None:
                return await self._afinish(b, inv, hit, started, kwargs, caller, cached=True)
        limit = b.timeout if timeout is None else min(timeout, b.timeout)
        result = await self._arun(b, kwargs, started + limit, limit, None)
        if key is not None and not result.is_error:
            b.cache.put(key, result)  # type: ignore[union-attr]
        return await self._afinish(b, inv, result, started, kwargs, caller)

    async def _aprepare(
        self, b: Bound, args: Any, caller: str | None
    ) -> tuple[dict[str, Any], Invocation | None] | ToolResult:
        if not any(inspect.iscoroutinefunction(h) for h in self._before):
            return self._prepare(b, args, caller)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._prepare, b, args, caller)

    async def _afinish(self, *a: Any, **kw: Any) -> ToolResult:
        if not self._after and not self._audit:
            return a[2]  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._finish(*a, **kw))

    async def _arun(
        self, b: Bound, kwargs: dict[str, Any], deadline: float, limit: float, emit: Any
    ) -> ToolResult:
        if b.kind == "sync":
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(
                self._executor, self._run_inline, b, kwargs, deadline, limit, emit
            )
            try:
                async with asyncio.timeout(limit + GRACE):
                    return await fut
            except TimeoutError:
                return self._timed_out(b, limit)
        call = kwargs if b.ctx_factory is None else {**kwargs, **self._context(b, deadline, emit)}
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                value = await b.func(**call)
            return normalize(value, b.tool)
        except TimeoutError:
            return self._timed_out(b, limit)
        except Exception as exc:
            return self._failed(b, exc, "")

    # -- streaming ---------------------------------------------------------------------------

    async def astream(
        self, b: Bound, args: Any, caller: str | None = None, timeout: float | None = None
    ) -> AsyncIterator[Any]:
        """Yield progress, log entries and content chunks as they come, then the ``ToolResult``.

        If the consumer stops early (closes the iterator or is cancelled), the tool is cancelled.
        """
        started = time.monotonic()
        prepared = await self._aprepare(b, args, caller)
        if isinstance(prepared, ToolResult):
            yield await self._afinish(b, None, prepared, started, {}, caller)
            return
        kwargs, inv = prepared
        limit = b.timeout if timeout is None else min(timeout, b.timeout)
        deadline = started + limit
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        loop_thread = threading.get_ident()

        def emit(event: Progress | LogEntry) -> None:
            # Keep order with chunks the loop enqueues directly; hop only from tool threads.
            if threading.get_ident() == loop_thread:
                queue.put_nowait(event)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, event)

        task = asyncio.ensure_future(self._produce(b, kwargs, deadline, limit, emit, queue))
        collected: list[Any] = []
        result: ToolResult | None = None
        try:
            while True:
                event = await queue.get()
                if event is _FINAL:
                    break
                if isinstance(event, ToolResult):
                    result = event
                    continue
                if not isinstance(event, (Progress, LogEntry)):
                    collected.append(event)
                yield event
        finally:
            if not task.done():
                task.cancel()
        assert result is not None
        if b.kind in ("gen", "agen"):
            result.content[:0] = collected
        yield await self._afinish(b, inv, result, started, kwargs, caller)

    async def _produce(
        self,
        b: Bound,
        kwargs: dict[str, Any],
        deadline: float,
        limit: float,
        emit: Callable[[Any], None],
        queue: asyncio.Queue[Any],
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            if b.kind == "agen":
                result = await self._pump_agen(b, kwargs, deadline, limit, emit, queue)
            elif b.kind == "gen":
                fut = loop.run_in_executor(
                    self._executor, self._pump_gen, b, kwargs, deadline, limit, emit
                )
                try:
                    async with asyncio.timeout(limit + GRACE):
                        result = await fut
                except TimeoutError:
                    result = self._timed_out(b, limit)
            else:
                result = await self._arun(b, kwargs, deadline, limit, emit)
                for item in result.content:
                    queue.put_nowait(item)
        except Exception as exc:
            result = self._failed(b, exc, "")
        # Let chunks scheduled with call_soon_threadsafe land before the final event.
        await asyncio.sleep(0)
        queue.put_nowait(result)
        queue.put_nowait(_FINAL)

    async def _pump_agen(
        self,
        b: Bound,
        kwargs: dict[str, Any],
        deadline: float,
        limit: float,
        emit: Callable[[Any], None],
        queue: asyncio.Queue[Any],
    ) -> ToolResult:
        call = kwargs if b.ctx_factory is None else {**kwargs, **self._context(b, deadline, emit)}
        agen = b.func(**call)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                async for item in agen:
                    for piece in chunk_items(item):
                        queue.put_nowait(piece)
            return ToolResult()
        except TimeoutError:
            return self._timed_out(b, limit)
        finally:
            await agen.aclose()

    def _pump_gen(
        self,
        b: Bound,
        kwargs: dict[str, Any],
        deadline: float,
        limit: float,
        emit: Callable[[Any], None],
    ) -> ToolResult:
        call = kwargs if b.ctx_factory is None else {**kwargs, **self._context(b, deadline, emit)}
        try:
            token = watchdog.arm(deadline)
            try:
                for item in b.func(**call):
                    for piece in chunk_items(item):
                        emit(piece)
            finally:
                fired = watchdog.disarm(token)
            return self._timed_out(b, limit) if fired else ToolResult()
        except DeadlineExceeded:
            return self._timed_out(b, limit)
        except Exception as exc:
            return self._failed(b, exc, "")
