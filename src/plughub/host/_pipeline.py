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
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

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
    from ._limits import TTLCache
    from ._scope import CallScope


class Limiter(Protocol):
    """What the pipeline needs of a rate limiter: 0.0 to go ahead, else seconds to wait."""

    def acquire(self) -> float: ...


__all__ = ["Bound", "Pipeline"]

log = logging.getLogger("plughub.host")
_ids = itertools.count(1)
#: Extra seconds the async side waits for a sync tool's thread after its deadline fired.
GRACE = 0.5
#: A sync tool whose calls average under this many seconds (over at least ``QUICK_SAMPLES``
#: calls; each sample counts as at most ``SLOW_CALL``) runs inline on the calling loop: handing
#: it to a thread costs the loop more than running it. An inline call over ``SLOW_CALL`` sends
#: it back to the pool, to qualify again over twice as many calls each time (never again after
#: ``MAX_STRIKES``): a tool that can block stalls a loop a few times at most.
QUICK_CALL = 100e-6
QUICK_SAMPLES = 8
SLOW_CALL = 0.001
MAX_STRIKES = 8
_FINAL = object()


class Bound:
    """A tool compiled for the pipeline: everything per-call code needs, precomputed."""

    __slots__ = (
        "cache",
        "cost",
        "ctx_factory",
        "denied",
        "func",
        "kind",
        "limiter",
        "max_arg_bytes",
        "missing_credentials",
        "name",
        "plugin_id",
        "quick",
        "requested",
        "required_credentials",
        "samples",
        "slots",
        "strikes",
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
        ctx_factory: Callable[[str, float | None, Any, CallScope | None], Context] | None,
        denied: str | None = None,
        missing_credentials: list[str] | None = None,
        requested: Sequence[str] = (),
        required_credentials: Sequence[str] = (),
        limiter: Limiter | None = None,
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
        # What a CallScope's grants and credentials are checked against, per call.
        self.requested = tuple(requested)
        self.required_credentials = tuple(required_credentials)
        self.limiter = limiter
        self.cache = cache
        self.slots = threading.BoundedSemaphore(concurrency) if concurrency else None
        self.max_arg_bytes = max_arg_bytes
        # Sync tools: average seconds per call, calls measured since the last strike, slow
        # inline calls so far, and whether async callers run it inline (see QUICK_CALL).
        self.cost = 0.0
        self.samples = 0
        self.strikes = 0
        self.quick = False


def _error(message: str, reason: str, **meta: Any) -> ToolResult:
    return ToolResult.error(message, reason, **meta)


def _measured(b: Bound, seconds: float) -> None:
    """Keep a sync tool's average cost, and decide whether async callers run it inline.

    Wall time, since blocking is what must stay off a loop; a sample is capped at SLOW_CALL so
    that a thread that merely waited for the GIL once does not dominate the average.
    """
    if b.strikes > MAX_STRIKES:
        return
    if b.quick and seconds > SLOW_CALL:  # it blocked the loop: back to the pool
        b.quick, b.samples, b.strikes = False, 0, b.strikes + 1
        return
    sample = min(seconds, SLOW_CALL)
    b.cost = sample if b.samples == 0 else 0.8 * b.cost + 0.2 * sample
    b.samples += 1
    b.quick = (
        b.samples >= QUICK_SAMPLES << b.strikes
        and b.cost < QUICK_CALL
        and b.slots is None
        and b.strikes <= MAX_STRIKES
    )


def _refusal(b: Bound, denied: str | None, missing: list[str]) -> ToolResult | None:
    if denied is not None:
        return _error(denied, "permission_denied")
    if missing:
        return _error(
            f"plugin {b.plugin_id} needs credentials that are not set: " + ", ".join(missing),
            "missing_credentials",
        )
    return None


def _scoped_refusal(b: Bound, scope: CallScope) -> ToolResult | None:
    """Permission and credential checks against a call's own grants and credentials.

    The host's grants stay the ceiling (a worker's sandbox is built from them): a scope's
    grants can only narrow what a call may do.
    """
    denied = b.denied
    if denied is None and scope.grants is not None:
        granted = scope.grants
        lacking = [t for t in b.requested if t not in granted and "*" not in granted]
        denied = (
            f"plugin {b.plugin_id} lacks granted permissions: {', '.join(lacking)}"
            if lacking
            else None
        )
    missing = b.missing_credentials
    if scope.credentials is not None:
        creds = scope.credentials
        missing = [k for k in b.required_credentials if creds.get(k) in (None, "")]
    return _refusal(b, denied, missing)


class _Call:
    """State of one call as it moves through the pipeline (one small object per call)."""

    __slots__ = (
        "b",
        "caller",
        "deadline",
        "emit",
        "id",
        "inv",
        "kwargs",
        "limit",
        "scope",
        "started",
    )

    def __init__(
        self, b: Bound, caller: str | None, timeout: float | None, scope: CallScope | None = None
    ) -> None:
        self.b = b
        self.caller = caller
        self.scope = scope
        self.id = next(_ids)
        self.started = time.monotonic()
        self.limit = b.timeout if timeout is None else min(timeout, b.timeout)
        self.deadline = self.started + self.limit
        self.inv: Invocation | None = None
        self.kwargs: dict[str, Any] = {}
        self.emit: Callable[[Any], None] | None = None

    def invocation(self) -> Invocation:
        if self.inv is None:
            b = self.b
            self.inv = Invocation(b.plugin_id, b.name, dict(self.kwargs), str(self.id), self.caller)
        return self.inv

    def call_kwargs(self) -> dict[str, Any]:
        """The tool's keyword arguments, plus its ``Context`` when it asks for one."""
        b = self.b
        if b.ctx_factory is None:
            return self.kwargs
        ctx = b.ctx_factory(str(self.id), self.deadline, self.emit, self.scope)
        return {**self.kwargs, b.tool.ctx_param: ctx}  # type: ignore[dict-item]


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

    def _prepare(self, c: _Call, args: Mapping[str, Any] | str | bytes | None) -> ToolResult | None:
        """Validate, check permission and policy, rate-limit; a refusal, or None to go on."""
        b = c.b
        if type(args) is dict:  # the common case first, with no extra call on its path
            try:
                c.kwargs = b.validate(args)
            except ArgumentsInvalid as e:
                return _error(str(e), "invalid_arguments")
        else:
            refusal = self._parse(c, args)
            if refusal is not None:
                return refusal
        if c.scope is not None:
            refusal = _scoped_refusal(b, c.scope)
            if refusal is not None:
                return refusal
        elif b.denied is not None or b.missing_credentials:  # (computed once, at bind time)
            return _refusal(b, b.denied, b.missing_credentials)
        if self._before:
            refusal = self._policy(c)
            if refusal is not None:
                return refusal
        # A scoped call's rate is the daemon's to count (per tenant, shared by replicas): one
        # budget in this host would let one tenant use up every other's.
        if b.limiter is not None and c.scope is None:
            wait = b.limiter.acquire()
            if wait:
                return _error(
                    f"rate limit for {b.plugin_id} exceeded; retry in {wait:.2f}s",
                    "rate_limited",
                    retry_after=round(wait, 3),
                )
        return None

    @staticmethod
    def _parse(c: _Call, args: Mapping[str, Any] | str | bytes | None) -> ToolResult | None:
        """Validate arguments that are not a plain dict: None, JSON text, other mappings."""
        b = c.b
        if args is None:
            args = {}
        elif isinstance(args, (str, bytes)):
            # The size limit is for arguments that arrive as wire text (CLI, HTTP, workers);
            # in-process callers pass objects they already hold in memory.
            size = len(args.encode()) if isinstance(args, str) else len(args)
            if size > b.max_arg_bytes:
                return _error(
                    f"arguments are {size} bytes; the limit for {b.plugin_id} is {b.max_arg_bytes}",
                    "invalid_arguments",
                )
            if b.tool.validate_json is not None:
                try:
                    c.kwargs = b.tool.validate_json(args)
                except ArgumentsInvalid as e:
                    return _error(str(e), "invalid_arguments")
                return None
            try:
                args = json.loads(args)
            except ValueError as e:
                return _error(f"arguments are not valid JSON: {e}", "invalid_arguments")
        if not isinstance(args, Mapping):
            return _error("arguments must be a JSON object", "invalid_arguments")
        try:
            c.kwargs = b.validate(args)
        except ArgumentsInvalid as e:
            return _error(str(e), "invalid_arguments")
        return None

    def _policy(self, c: _Call) -> ToolResult | None:
        """Apply ``before_invoke`` decisions. A hook that raises denies (fail closed)."""
        inv = c.invocation()
        for hook in self._before:
            try:
                decision = self._maybe_sync(hook(inv))
            except Exception as e:
                log.exception("a before_invoke hook failed; denying the call")
                return _error(f"a policy hook failed: {type(e).__name__}: {e}", "policy_error")
            if isinstance(decision, Deny):
                return _error(decision.message, decision.reason)
            if isinstance(decision, ModifyArgs):
                try:
                    c.kwargs = c.b.validate(decision.args)
                except ArgumentsInvalid as e:
                    return _error(f"a policy rewrote the arguments badly: {e}", "invalid_arguments")
                inv.args = dict(c.kwargs)
        return None

    def _maybe_sync(self, value: Any) -> Any:
        return self._run_coro(value) if inspect.isawaitable(value) else value

    @staticmethod
    def _cache_key(c: _Call) -> str | None:
        """The arguments as text, prefixed with the tenant: results never cross tenants."""
        try:
            text = json.dumps(c.kwargs, sort_keys=True, default=str)
        except (TypeError, ValueError):
            return None
        tenant = c.scope.tenant if c.scope is not None else None
        return text if tenant is None else f"{tenant}\x00{text}"

    def _failed(self, c: _Call, exc: BaseException) -> ToolResult:
        b = c.b
        if isinstance(exc, ToolError):
            res = _error(exc.message, exc.reason)
            if exc.data is not None:
                res.structured = exc.data
            return res
        log.warning("tool %s.%s raised %s", b.plugin_id, b.name, type(exc).__name__, exc_info=exc)
        try:
            self._error_hook(
                {
                    "plugin_id": b.plugin_id,
                    "tool": b.name,
                    "call_id": str(c.id),
                    "error": str(exc),
                    "error_type": type(exc).__name__,
                }
            )
        except Exception:
            log.exception("an error_occurred hook failed")
        return _error(f"{type(exc).__name__}: {exc}", "exception", error_type=type(exc).__name__)

    @staticmethod
    def _timed_out(c: _Call) -> ToolResult:
        return _error(
            f"tool {c.b.plugin_id}.{c.b.name} did not finish within {c.limit:g}s", "timeout"
        )

    def _finish(self, c: _Call, result: ToolResult, cached: bool = False) -> ToolResult:
        """``after_invoke`` hooks (a failing one is logged and skipped), then audit."""
        if self._after:
            inv = c.invocation()
            for hook in self._after:
                try:
                    replaced = self._maybe_sync(hook(inv, result))
                except Exception:
                    log.exception("an after_invoke hook failed; keeping the result")
                    continue
                if isinstance(replaced, ToolResult):
                    result = replaced
        if self._audit:
            duration = time.monotonic() - c.started
            event = AuditEvent(
                call_id=str(c.id),
                plugin_id=c.b.plugin_id,
                tool=c.b.name,
                caller=c.caller,
                started=time.time() - duration,
                duration=duration,
                outcome=(result.reason or "error") if result.is_error else "ok",
                arg_bytes=len(json.dumps(c.kwargs, default=str)),
                result_bytes=len(json.dumps(result.to_dict(), default=str)),
                cached=cached,
            )
            for hook in self._audit:
                try:
                    self._maybe_sync(hook(event))
                except Exception:
                    log.exception("an audit hook failed")
        return result

    # -- sync --------------------------------------------------------------------------------

    def invoke(
        self,
        b: Bound,
        args: Any,
        caller: str | None = None,
        timeout: float | None = None,
        scope: CallScope | None = None,
    ) -> ToolResult:
        if b.kind != "sync":
            return self._run_coro(self.ainvoke(b, args, caller, timeout, scope))  # type: ignore[no-any-return]
        c = _Call(b, caller, timeout, scope)
        refusal = self._prepare(c, args)
        if refusal is not None:
            return self._finish(c, refusal)
        key = None
        if b.cache is not None:
            key = self._cache_key(c)
            hit = b.cache.get(key) if key is not None else None
            if hit is not None:
                return self._finish(c, hit, cached=True)
        result = self._run_inline(c)
        if key is not None and not result.is_error:
            b.cache.put(key, result)  # type: ignore[union-attr]
        if self._after or self._audit:
            return self._finish(c, result)
        return result

    def _run_inline(self, c: _Call) -> ToolResult:
        b = c.b
        if b.slots is not None and not b.slots.acquire(
            timeout=max(0.0, c.deadline - time.monotonic())
        ):
            return _error(f"{b.plugin_id} is at its concurrency limit", "busy")
        try:
            kwargs = c.kwargs if b.ctx_factory is None else c.call_kwargs()
            token = watchdog.arm(c.deadline)
            try:
                value = b.func(**kwargs)
            finally:
                fired = watchdog.disarm(token)
            return self._timed_out(c) if fired else normalize(value, b.tool)
        except DeadlineExceeded:
            return self._timed_out(c)
        except Exception as exc:
            return self._failed(c, exc)
        finally:
            if b.slots is not None:
                b.slots.release()

    def _run_measured(self, c: _Call) -> ToolResult:
        """``_run_inline`` for async callers, timed: it decides whether they run it inline."""
        t0 = time.perf_counter()
        try:
            return self._run_inline(c)
        finally:
            _measured(c.b, time.perf_counter() - t0)

    # -- async -------------------------------------------------------------------------------

    async def ainvoke(
        self,
        b: Bound,
        args: Any,
        caller: str | None = None,
        timeout: float | None = None,
        scope: CallScope | None = None,
    ) -> ToolResult:
        if b.kind in ("gen", "agen"):
            final: ToolResult | None = None
            async for event in self.astream(b, args, caller, timeout, scope):
                if isinstance(event, ToolResult):
                    final = event
            assert final is not None
            return final
        c = _Call(b, caller, timeout, scope)
        # Without hooks, no coroutine is created for the steps that would not await anything.
        refusal = await self._aprepare(c, args) if self._before else self._prepare(c, args)
        if refusal is not None:
            return await self._afinish(c, refusal)
        key = None
        if b.cache is not None:
            key = self._cache_key(c)
            hit = b.cache.get(key) if key is not None else None
            if hit is not None:
                return await self._afinish(c, hit, cached=True)
        result: ToolResult
        if b.kind == "remote" and b.slots is None:  # a worker proxy (it enforces the deadline)
            try:
                result = await b.func(c)
            except TimeoutError:
                result = self._timed_out(c)
            except Exception as exc:
                result = self._failed(c, exc)
        else:
            result = await self._arun(c)
        if key is not None and not result.is_error:
            b.cache.put(key, result)  # type: ignore[union-attr]
        if not self._after and not self._audit:
            return result
        return await self._afinish(c, result)

    async def arun_unhooked(
        self, b: Bound, kwargs: dict[str, Any], scope: CallScope | None = None
    ) -> ToolResult:
        """Run a host-internal call (a credential check) with its deadline, but without
        validation, policy, cache, hooks or audit: its arguments are secrets that hooks must
        never see."""
        c = _Call(b, None, None, scope)
        c.kwargs = kwargs
        return await self._arun(c)

    async def _aprepare(self, c: _Call, args: Any) -> ToolResult | None:
        if not self._before:
            return self._prepare(c, args)
        # Hooks may block or be async (bridged with the portal): keep them off this loop.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._prepare, c, args)

    async def _afinish(self, c: _Call, result: ToolResult, cached: bool = False) -> ToolResult:
        if not self._after and not self._audit:
            return result
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._finish, c, result, cached)

    async def _arun(self, c: _Call) -> ToolResult:
        b = c.b
        if b.kind == "sync":
            if b.quick:  # cheaper than the hop to a thread (see QUICK_CALL)
                return self._run_measured(c)
            fut = asyncio.get_running_loop().run_in_executor(self._executor, self._run_measured, c)
            try:
                async with asyncio.timeout(c.limit + GRACE):
                    return await fut
            except TimeoutError:
                return self._timed_out(c)
        if b.slots is not None and not b.slots.acquire(blocking=False):
            acquired = await asyncio.get_running_loop().run_in_executor(
                self._executor, b.slots.acquire, True, max(0.0, c.deadline - time.monotonic())
            )
            if not acquired:
                return _error(f"{b.plugin_id} is at its concurrency limit", "busy")
        try:
            if b.kind == "remote":  # a worker proxy: it enforces the deadline (with a backstop)
                return await b.func(c)  # type: ignore[no-any-return]
            async with asyncio.timeout(max(0.0, c.deadline - time.monotonic())):
                value = await b.func(**c.call_kwargs())
            return normalize(value, b.tool)
        except TimeoutError:
            return self._timed_out(c)
        except Exception as exc:
            return self._failed(c, exc)
        finally:
            if b.slots is not None:
                b.slots.release()

    # -- streaming ---------------------------------------------------------------------------

    async def astream(
        self,
        b: Bound,
        args: Any,
        caller: str | None = None,
        timeout: float | None = None,
        scope: CallScope | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Yield progress, log entries and content chunks as they come, then the ``ToolResult``.

        If the consumer stops early (closes the iterator or is cancelled), the tool is cancelled.
        """
        c = _Call(b, caller, timeout, scope)
        refusal = await self._aprepare(c, args)
        if refusal is not None:
            yield await self._afinish(c, refusal)
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        loop_thread = threading.get_ident()

        def emit(event: Any) -> None:
            # Keep order with chunks the loop enqueues directly; hop only from tool threads.
            if threading.get_ident() == loop_thread:
                queue.put_nowait(event)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, event)

        c.emit = emit
        task = asyncio.ensure_future(self._produce(c, queue))
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
        yield await self._afinish(c, result)

    async def _produce(self, c: _Call, queue: asyncio.Queue[Any]) -> None:
        b = c.b
        loop = asyncio.get_running_loop()
        try:
            if b.kind == "agen":
                result = await self._pump_agen(c, queue)
            elif b.kind == "gen":
                fut = loop.run_in_executor(self._executor, self._pump_gen, c)
                try:
                    async with asyncio.timeout(c.limit + GRACE):
                        result = await fut
                except TimeoutError:
                    result = self._timed_out(c)
            else:
                result = await self._arun(c)
                for item in result.content:
                    queue.put_nowait(item)
        except Exception as exc:
            result = self._failed(c, exc)
        # Let chunks scheduled with call_soon_threadsafe land before the final event.
        await asyncio.sleep(0)
        queue.put_nowait(result)
        queue.put_nowait(_FINAL)

    async def _pump_agen(self, c: _Call, queue: asyncio.Queue[Any]) -> ToolResult:
        agen = c.b.func(**c.call_kwargs())
        try:
            async with asyncio.timeout(max(0.0, c.deadline - time.monotonic())):
                async for item in agen:
                    for piece in chunk_items(item):
                        queue.put_nowait(piece)
            return ToolResult()
        except TimeoutError:
            return self._timed_out(c)
        finally:
            await agen.aclose()

    def _pump_gen(self, c: _Call) -> ToolResult:
        emit = c.emit
        assert emit is not None
        try:
            token = watchdog.arm(c.deadline)
            try:
                for item in c.b.func(**c.call_kwargs()):
                    for piece in chunk_items(item):
                        emit(piece)
            finally:
                fired = watchdog.disarm(token)
            return self._timed_out(c) if fired else ToolResult()
        except DeadlineExceeded:
            return self._timed_out(c)
        except Exception as exc:
            return self._failed(c, exc)
