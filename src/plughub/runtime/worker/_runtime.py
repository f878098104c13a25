"""Worker-backed plugins for the host: proxy tools that run each call in the plugin's worker."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ...sdk import Blob, Context, LogEntry, Progress, ToolError, ToolResult, ToolSpec
from ...sdk._results import content_from_dict
from ...sdk._tool import ArgumentsInvalid, ToolDef
from .._code import LoadedCode
from ._envs import EnvBuilder, EnvSpec
from ._process import LaunchSpec, RequestHandler, WorkerCrashed, WorkerProcess
from ._supervisor import CircuitOpen, Supervisor, WorkerConfig

__all__ = ["WorkerPlugin", "WorkerRuntime"]

log = logging.getLogger("plughub.worker")

CTX = "_plughub_ctx"
_NO_SETTINGS: Mapping[str, Any] = {}


@dataclass(slots=True)
class WorkerPlugin:
    """What the host tells the runtime about one plugin it wants run in a worker."""

    plugin_id: str
    path: str
    code_dir: str
    network: list[str]  # granted hosts; empty: no network at all
    read_paths: list[str]
    write_paths: list[str]
    limits: Any  # manifest Limits or None
    storage: Callable[[], Any]  # the plugin's Storage (host side)
    credentials: Callable[[], Mapping[str, Any]] = dict  # sent with every call, never at init
    version: str = "0.0.0"
    requirements: tuple[str, ...] = ()
    wheels_dir: str | None = None  # bundled wheels: the environment is built offline from them
    python: str = sys.executable
    settings: dict[str, Any] = field(default_factory=dict)  # for setup() and seed-style config
    grants: list[str] | None = None  # the host's grants (None: what the manifest requests)
    env: dict[str, str] = field(default_factory=dict)  # granted environment variables


def _as_mapping(args: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(args, Mapping):
        raise ArgumentsInvalid("arguments must be a JSON object")
    return dict(args)


def _event_of(raw: dict[str, Any]) -> Any:
    kind = raw.get("type")
    if kind == "progress":
        return Progress(raw.get("progress", 0), raw.get("total"), raw.get("message"))
    if kind == "log":
        return LogEntry(str(raw.get("level", "info")), str(raw.get("message", "")))
    return content_from_dict(raw)


class WorkerRuntime:
    """Builds worker-backed ``LoadedCode`` and answers workers' storage/http requests."""

    def __init__(
        self,
        config: WorkerConfig,
        run_coro: Callable[[Awaitable[Any]], Any],
        data_dir: Path | None,
        loop: Callable[[], asyncio.AbstractEventLoop],
        on_error: Callable[[dict[str, Any]], None] = lambda data: None,
        invoke: Callable[[str, dict[str, Any], str], Awaitable[ToolResult]] | None = None,
    ) -> None:
        self.config = config
        self.supervisor = Supervisor(config)
        self._run_coro = run_coro
        self._loop = loop
        self._on_error = on_error
        self._invoke_cb = invoke
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="plughub-workers-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self._http: Any = None
        self._envs: EnvBuilder | None = None

    # -- launching ---------------------------------------------------------------------------

    def _launch(self, p: WorkerPlugin) -> LaunchSpec:
        from ._sandbox import child_environment

        cfg = self.config
        name = p.plugin_id.replace("/", "__")
        data = self.data_dir / "workers" / name
        (data / "tmp").mkdir(parents=True, exist_ok=True)
        lim = p.limits

        def cap(value: int | None, ceiling: int) -> int:
            return min(value, ceiling) if value else ceiling

        sandbox = None
        if cfg.sandbox:
            sandbox = {
                "network": bool(p.network),
                "read_paths": tuple(p.read_paths),
                "write_paths": tuple(p.write_paths),
                "code_dir": p.code_dir,
                "data_dir": str(data),
                "memory_bytes": cap(getattr(lim, "memory", None), cfg.max_memory),
                "cpu_seconds": cap(getattr(lim, "cpu_seconds", None), cfg.max_cpu_seconds),
                "open_files": cap(getattr(lim, "open_files", None), cfg.max_open_files),
                "processes": cap(getattr(lim, "processes", None), cfg.max_processes),
            }
        env = child_environment(
            os.environ,
            extra={
                **p.env,
                "HOME": str(data),
                "TMPDIR": str(data / "tmp"),
                "PYTHONUNBUFFERED": "1",
                # glibc reserves 64 MiB of address space per thread arena: under RLIMIT_AS that
                # alone would stop threads from starting.
                "MALLOC_ARENA_MAX": "2",
            },
        )
        max_output = cap(getattr(lim, "max_output_bytes", None), cfg.max_output)
        return LaunchSpec(
            plugin_id=p.plugin_id,
            path=p.path,
            python=p.python,
            env=env,
            data_dir=str(data),
            sandbox=sandbox,
            max_output=max_output,
            log_file=self.data_dir / "logs" / f"{name}.log",
            processes=cap(getattr(lim, "processes", None), cfg.max_processes)
            if cfg.sandbox
            else None,
            # the frame also carries settings and credentials: allow for them
            max_args=(getattr(lim, "max_argument_bytes", None) or (1 << 20)) + (64 << 10),
            init_extra={
                "files": {"read": p.read_paths, "write": p.write_paths},
                "settings": p.settings,
                "grants": p.grants,
            },
        )

    async def _worker(self, p: WorkerPlugin, deadline: float | None = None) -> WorkerProcess:
        return await self.supervisor.acquire(
            lambda: self._launch(p), p.plugin_id, self._requests(p), deadline
        )

    def load(self, p: WorkerPlugin) -> LoadedCode:
        """Start the plugin's worker (lazy start happens here, at first use) and build proxies.

        A plugin with Python requirements first gets its own environment (built once per
        version with uv, sharing the SDK with the host), and its worker runs that interpreter.
        """
        if p.requirements:
            if self._envs is None:
                self._envs = EnvBuilder(self.data_dir / "envs")
            env = self._envs.ensure(EnvSpec(p.plugin_id, p.version, p.requirements, p.wheels_dir))
            p.python = str(env.python)
        worker: WorkerProcess = self._run_coro(self._worker(p))
        ready = worker.ready
        options = ready.get("options") or {}
        tools = []
        for spec in ready.get("tools", []):
            td = self._proxy(p, ToolSpec(**spec))
            extra = options.get(td.spec.name)
            if extra:  # the tool's own @tool(timeout=, cacheable=)
                td = replace(td, **extra)
            tools.append(td)
        validator = ready.get("validator")
        return LoadedCode(
            tools=tools,
            aliases=list(ready.get("aliases") or []),
            version=ready.get("version"),
            description=ready.get("description"),
            validate_credentials=self._proxy(p, ToolSpec(**validator)) if validator else None,
        )

    # -- proxies -----------------------------------------------------------------------------

    def _proxy(self, p: WorkerPlugin, spec: ToolSpec) -> ToolDef:
        # The worker validates against the tool's own (pydantic) model and answers
        # invalid_arguments; checking the same JSON Schema here too would cost ~10 us a call.
        validate = _as_mapping
        name = spec.name
        workers = self.supervisor.workers
        plugin_id = p.plugin_id

        async def call(
            kwargs: dict[str, Any],
            deadline: float | None,
            credentials: Mapping[str, Any],
            call_id: object,
            on_event: Callable[[dict[str, Any]], None] | None,
            stream: bool,
            settings: Mapping[str, Any] | None = None,
            storage: Any = None,
        ) -> ToolResult:
            worker = workers.get(plugin_id)
            if worker is None or not worker.alive:  # (re)start it, or say why not
                try:
                    worker = await self._worker(p, deadline)
                except CircuitOpen as e:
                    return ToolResult.error(
                        str(e), "circuit_open", retry_after=round(e.retry_after, 3)
                    )
                except WorkerCrashed as e:
                    return ToolResult.error(str(e), "worker_crashed", retryable=True)
            timeout = 30.0 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                raw = await worker.call(
                    name,
                    kwargs,
                    timeout=timeout,
                    # The worker has the host's settings since init: send only a call's own.
                    settings=settings or _NO_SETTINGS,
                    credentials=credentials,
                    stream=stream,
                    on_event=on_event,
                    storage=storage,
                )
            except TimeoutError:  # the backstop: the worker did not answer past its deadline
                return ToolResult.error(
                    f"tool {p.plugin_id}.{name} did not finish within {timeout:g}s", "timeout"
                )
            except WorkerCrashed as e:
                self.supervisor.crashed(p.plugin_id, worker)
                return ToolResult.error(str(e), "worker_crashed", retryable=True)
            except (ValueError, TypeError) as e:  # arguments the channel cannot carry
                return ToolResult.error(
                    f"arguments cannot be sent to the worker: {e}", "invalid_arguments"
                )
            result = ToolResult.from_dict(raw)
            if result.reason == "exception":  # the worker's tool raised: tell the host's hooks
                error_type = str(result.meta.get("error_type") or "Exception")
                data = {
                    "plugin_id": p.plugin_id,
                    "tool": name,
                    "call_id": str(call_id),
                    "error": result.text.removeprefix(f"{error_type}: "),
                    "error_type": error_type,
                }
                # Off this loop: hook implementations may block or be async (run via the loop).
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self._safe_on_error, data)
            return result

        if not spec.streaming:

            async def run(c: Any) -> ToolResult:
                # Called by the pipeline with its per-call state: no Context to build, and the
                # deadline is enforced by the worker (the call has a backstop timer).
                emit = c.emit
                on_event = None
                if emit is not None:  # someone listens (astream): pass progress and logs on

                    def on_event(raw: dict[str, Any]) -> None:
                        if raw.get("type") in ("progress", "log"):
                            emit(_event_of(raw))

                scope = c.scope
                if scope is None:
                    coro = call(c.kwargs, c.deadline, p.credentials(), c.id, on_event, False)
                else:  # a tenant's call: its credentials, settings and storage, not the host's
                    coro = call(
                        c.kwargs,
                        c.deadline,
                        p.credentials() if scope.credentials is None else scope.credentials,
                        c.id,
                        on_event,
                        False,
                        {**p.settings, **scope.settings} if scope.settings else None,
                        scope.storage,
                    )
                w = workers.get(plugin_id)
                if w is not None and w.loop is asyncio.get_running_loop():
                    return await coro  # on the loop that owns the worker's pipes: no hop
                return await self._on_host_loop(coro)

            return ToolDef(spec, run, "remote", validate)

        async def run_stream(**kwargs: Any) -> AsyncIterator[Any]:
            ctx: Context = kwargs.pop(CTX)
            queue: asyncio.Queue[Any] = asyncio.Queue()
            blob: list[bytes] = []
            loop = asyncio.get_running_loop()

            def put(item: Any) -> None:  # events arrive on the host's loop thread
                loop.call_soon_threadsafe(queue.put_nowait, item)

            def on_event(raw: dict[str, Any]) -> None:
                if raw.get("type") == "blob_chunk":
                    blob.append(base64.b64decode(raw.get("data") or ""))
                    if raw.get("end"):
                        put(
                            Blob(
                                b"".join(blob),
                                raw.get("mime_type") or "application/octet-stream",
                                raw.get("filename"),
                            )
                        )
                        blob.clear()
                else:  # progress and log too, so they keep their place among the chunks
                    put(_event_of(raw))

            coro = call(
                kwargs,
                ctx.deadline,
                ctx.credentials,
                ctx.call_id,
                on_event,
                True,
                dict(ctx.settings),
                ctx.storage,
            )
            task = asyncio.ensure_future(self._on_host_loop(coro))
            task.add_done_callback(put)
            try:
                while (item := await queue.get()) is not task:
                    yield item
                result = task.result()
            finally:
                task.cancel()
            if result.is_error:  # keep the worker's reason (crash, limit...) for the caller
                raise ToolError(result.text, reason=result.reason or "tool_error")

        return ToolDef(spec, run_stream, "agen", validate, CTX)

    def _safe_on_error(self, data: dict[str, Any]) -> None:
        try:
            self._on_error(data)
        except Exception:
            log.exception("an error_occurred hook failed")

    async def _invoke(self, name: str, args: dict[str, Any], caller: str) -> ToolResult:
        if self._invoke_cb is None:
            raise ValueError("this host does not route plugin-to-plugin calls")
        return await self._invoke_cb(name, args, caller)

    async def _on_host_loop(self, coro: Coroutine[Any, Any, ToolResult]) -> ToolResult:
        """Run ``coro`` on the host's loop, which owns every worker's pipes and futures.

        A caller's own loop (``await host.ainvoke`` in an application) must not touch them;
        cancelling the caller cancels the call on the host's loop too.
        """
        host_loop = self._loop()
        if asyncio.get_running_loop() is host_loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, host_loop))

    # -- requests from workers ---------------------------------------------------------------

    def _requests(self, p: WorkerPlugin) -> RequestHandler:
        async def handle(kind: str, msg: dict[str, Any], call_storage: Any = None) -> Any:
            if kind == "storage":  # the call's own storage (a tenant's), else the plugin's
                storage = call_storage if call_storage is not None else p.storage()
                op, key = msg.get("op"), str(msg.get("key", ""))
                loop = asyncio.get_running_loop()
                if op == "get":
                    return await loop.run_in_executor(None, storage.get, key)
                if op == "set":
                    return await loop.run_in_executor(None, storage.set, key, msg.get("value"))
                if op == "delete":
                    return await loop.run_in_executor(None, storage.delete, key)
                if op == "keys":
                    return await loop.run_in_executor(None, storage.keys, key)
                raise ValueError(f"unknown storage operation {op!r}")
            if kind == "http":
                return await self._http_request(p, msg)
            if kind == "invoke":  # plugin-to-plugin (AI-Dialer registry): through the host
                result = await self._invoke(
                    str(msg.get("plugin")), msg.get("args") or {}, p.plugin_id
                )
                return result.to_dict()
            raise ValueError(f"unknown request {kind!r}")

        return handle

    async def _http_request(self, p: WorkerPlugin, msg: dict[str, Any]) -> dict[str, Any]:
        from ...sdk._http import host_allowed

        url = str(msg.get("url"))
        if not host_allowed(url, p.network):
            raise PermissionError(f"network access to {url!r} is not granted to {p.plugin_id}")
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        body = msg.get("body")
        resp = await self._http.request(
            str(msg.get("method", "GET")),
            url,
            params=msg.get("params"),
            headers=msg.get("headers"),
            content=base64.b64decode(body) if body else None,
            timeout=msg.get("timeout") or 30.0,
        )
        return {
            "status": resp.status_code,
            "headers": dict(resp.headers),
            "body": base64.b64encode(resp.content).decode(),
        }

    async def aclose(self) -> None:
        await self.supervisor.stop_all()
        if self._http is not None:
            await self._http.aclose()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
