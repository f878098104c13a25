"""The worker process: confine itself, load one plugin, serve calls over the framed pipes.

Threads: a reader thread blocks on the host's pipe and dispatches each message; sync tools run
on a thread pool (through the same ``Pipeline`` as in-process calls, so validation, deadlines
and result shapes are identical), async and streaming tools on the worker's event loop. Any
thread writes a finished frame under one lock; a blocking write is the backpressure.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import itertools
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import orjson

from ...host._pipeline import Bound, Pipeline
from ...sdk import Blob, Context, FileAccess, Image, LogEntry, Progress, Text, ToolResult
from ...sdk._results import ToolError
from .._code import VALIDATE_CREDENTIALS
from .._watchdog import watchdog
from ._protocol import FrameDecoder, ProtocolError, encode

__all__ = ["main"]

#: Sync calls averaging less than this (seconds) run without handing reading to another thread.
QUICK_CALL = 0.001
#: Blob contents larger than this stream as several ``blob_chunk`` events.
BLOB_CHUNK = 1 << 20


class _Channel:
    """Frames out (any thread, one lock) and host replies to worker requests."""

    def __init__(self, out_fd: int, max_output: int) -> None:
        self._fd = out_fd
        self._lock = threading.Lock()
        self.max_output = max_output
        self._ids = itertools.count(1)
        self._replies: dict[int, concurrent.futures.Future[Any]] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.write(encode(message))

    def write(self, frame: bytes) -> None:
        with self._lock:
            n = os.write(self._fd, frame)
            if n < len(frame):  # a full pipe (large frame): the rest blocks, as backpressure
                view = memoryview(frame)[n:]
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]

    def request(self, kind: str, payload: dict[str, Any], timeout: float | None) -> Any:
        """Ask the host for something (storage, http) and wait for its reply."""
        rid = next(self._ids)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._replies[rid] = fut
        try:
            self.send({"t": "request", "id": rid, "kind": kind, **payload})
            reply = fut.result(timeout)
        finally:
            self._replies.pop(rid, None)
        if "error" in reply:
            raise ToolError(str(reply["error"]))
        return reply.get("value")

    def deliver(self, message: dict[str, Any]) -> None:
        fut = self._replies.get(int(message.get("id", 0)))
        if fut is not None and not fut.done():
            fut.set_result(message)


class RemoteStorage:
    """``ctx.storage`` inside a worker: every operation is answered by the host's store."""

    def __init__(self, channel: _Channel, call: int | None = None) -> None:
        self._ch = channel
        # Requests name the call when it brought its own storage (a tenant's): the host
        # answers them from that storage.
        self._base: dict[str, Any] = {} if call is None else {"call": call}

    def _ask(self, op: str, key: str, **more: Any) -> Any:
        return self._ch.request("storage", {**self._base, "op": op, "key": key, **more}, 30)

    def get(self, key: str, default: Any = None) -> Any:
        value = self._ask("get", key)
        return default if value is None else value

    def set(self, key: str, value: Any) -> None:
        self._ask("set", key, value=value)

    def delete(self, key: str) -> bool:
        return bool(self._ask("delete", key))

    def keys(self, prefix: str = "") -> list[str]:
        return list(self._ask("keys", prefix) or [])


class RemoteResponse:
    """The subset of an HTTP response that plugins use, built from the host's reply."""

    def __init__(self, value: dict[str, Any]) -> None:
        self.status_code = int(value["status"])
        self.headers = dict(value.get("headers") or {})
        self.content = base64.b64decode(value.get("body") or "")

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class RemoteHttp:
    """``ctx.http`` inside a worker: requests go through the host, which checks the grant."""

    def __init__(self, channel: _Channel, remaining: Callable[[], float | None]) -> None:
        self._ch = channel
        self._remaining = remaining

    def request(self, method: str, url: str, **kw: Any) -> RemoteResponse:
        body = kw.get("content")
        if isinstance(body, str):
            body = body.encode()
        if "json" in kw:
            body = orjson.dumps(kw["json"])
        elif isinstance(kw.get("data"), dict):
            from urllib.parse import urlencode

            body = urlencode(kw["data"]).encode()
            kw.setdefault("headers", {})["content-type"] = "application/x-www-form-urlencoded"
        payload = {
            "method": method,
            "url": url,
            "params": kw.get("params"),
            "headers": kw.get("headers"),
            "body": base64.b64encode(body).decode() if isinstance(body, bytes) else None,
        }
        left = self._remaining()
        timeout = kw.get("timeout") if kw.get("timeout") is not None else left
        if left is not None and timeout is not None:
            timeout = min(float(timeout), left)
        payload["timeout"] = timeout
        return RemoteResponse(self._ch.request("http", payload, timeout))

    def get(self, url: str, **kw: Any) -> RemoteResponse:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> RemoteResponse:
        return self.request("POST", url, **kw)


class Worker:
    """Serves one plugin's tools to the host."""

    def __init__(self, in_fd: int, out_fd: int) -> None:
        self.in_fd = in_fd
        self.channel = _Channel(out_fd, 16 << 20)
        self.loop = asyncio.new_event_loop()
        self.pool = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="plughub-call")
        self.tools: dict[str, Any] = {}
        self.report: dict[str, Any] = {}
        self.init: dict[str, Any] = {}
        self.files = FileAccess([], [], None)
        self.plugin_id = ""
        self.data_dir: str | None = None
        self.running: dict[int, Any] = {}  # call id -> thread id (sync) or asyncio future
        self.storage = RemoteStorage(self.channel)
        self.pipeline = Pipeline(self._run_coro, lambda data: None)
        self._read_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._readers = 0
        self._decoder = FrameDecoder()
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._cost: dict[str, float] = {}  # tool name -> average seconds per sync call
        self._plain: dict[str, Bound] = {}  # cached Bound of tools without a Context

    def _run_coro(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    # -- start-up ----------------------------------------------------------------------------

    def start(self, init: dict[str, Any]) -> None:
        """Confine the process, then import the plugin (in that order)."""
        self.plugin_id = str(init["plugin_id"])
        self.channel.max_output = int(init.get("max_output", 16 << 20))
        self.data_dir = init.get("data_dir")
        self.init = init
        files = init.get("files") or {}
        self.files = FileAccess(
            list(files.get("read") or []),
            list(files.get("write") or []),
            Path(self.data_dir) if self.data_dir else None,
        )
        if init.get("sandbox") is not None:
            from ._sandbox import SandboxPolicy, apply

            self.report = apply(SandboxPolicy(**init["sandbox"])).to_dict()
        from ...host._discovery import discover_dir

        candidates = [c for c in discover_dir(Path(init["path"])) if c.id == self.plugin_id]
        if not candidates:
            raise RuntimeError(f"no plugin {self.plugin_id} at {init['path']}")
        candidate = candidates[0]
        if candidate.style == "autogpt":  # the same host wiring as in-process
            from ...compat import autogpt

            grants = init.get("grants")
            with autogpt.override_settings(init.get("settings")), autogpt.override_grants(grants):
                self.code = candidate.load()
        else:
            self.code = candidate.load()
        if candidate.style == "dialer":
            from ...compat import dialer

            def invoke(name: str, context: dict[str, Any]) -> ToolResult:
                value = self.channel.request("invoke", {"plugin": name, "args": context}, 60)
                return ToolResult.from_dict(value)

            dialer.set_invoker(invoke)
        self.tools = {td.spec.name: td for td in self.code.tools}
        if self.code.validate_credentials is not None:  # called by name, never listed
            self.tools[VALIDATE_CREDENTIALS] = self.code.validate_credentials

    def finish_start(self) -> None:
        """Run the plugin's ``setup`` (serving replies already), then announce the tools."""
        code = self.code
        try:
            if code.setup is not None:
                value = code.setup(self._context(self.init, None, None))
                if asyncio.iscoroutine(value):
                    asyncio.run_coroutine_threadsafe(value, self.loop).result()
        except BaseException as e:
            self.channel.send(
                {
                    "t": "fatal",
                    "error": f"setup failed: {type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(limit=20),
                }
            )
            os._exit(1)
        self.channel.send(
            {
                "t": "ready",
                "pid": os.getpid(),
                "tools": [td.spec.to_dict() for td in code.tools],
                # What the host's pipeline applies to the proxies (not part of the spec).
                "options": {
                    td.spec.name: {"timeout": td.timeout, "cacheable": td.cacheable}
                    for td in code.tools
                    if td.timeout is not None or td.cacheable is not None
                },
                "sandbox": self.report,
                "version": code.version,
                "description": code.description,
                "aliases": code.aliases,
                "validator": code.validate_credentials.spec.to_dict()
                if code.validate_credentials is not None
                else None,
            }
        )

    def teardown(self) -> None:
        """The plugin's ``teardown`` on an orderly shutdown (best effort, bounded)."""
        code = getattr(self, "code", None)
        if code is None or code.teardown is None:
            return
        try:
            value = code.teardown()
            if asyncio.iscoroutine(value):
                asyncio.run_coroutine_threadsafe(value, self.loop).result(5)
        except BaseException:
            traceback.print_exc()

    def _context(self, msg: dict[str, Any], deadline: float | None, emit: Any) -> Context:
        ctx = Context(
            self.plugin_id,
            settings=msg.get("settings") or self.init.get("settings") or {},
            credentials=msg.get("credentials") or {},
            storage=RemoteStorage(self.channel, int(msg["id"]))
            if msg.get("scoped")
            else self.storage,
            emit=emit,
            call_id=str(msg.get("id", "")),
            deadline=deadline,
            files=self.files,
        )
        ctx._http = RemoteHttp(self.channel, ctx.remaining)  # type: ignore[assignment]
        return ctx

    # -- calls -------------------------------------------------------------------------------

    def _bound(self, msg: dict[str, Any]) -> Any:
        td = self.tools.get(msg["tool"])
        if td is None:
            return None
        if td.ctx_param is None:  # nothing per call in it: build once (the call's deadline
            b = self._plain.get(td.spec.name)  # travels as the timeout argument instead)
            if b is None:
                b = self._plain[td.spec.name] = Bound(
                    self.plugin_id, td, timeout=3600.0, ctx_factory=None
                )
            return b
        cid = int(msg["id"])

        def emit(event: Progress | LogEntry) -> None:
            self._event(cid, event)

        return Bound(
            self.plugin_id,
            td,
            timeout=float(msg.get("timeout") or 30.0),
            ctx_factory=lambda _cid, deadline, em, _scope: self._context(msg, deadline, em or emit),
        )

    @staticmethod
    def _timeout(msg: dict[str, Any]) -> float:
        return float(msg.get("timeout") or 30.0)

    def _send_result(self, cid: int, result: ToolResult) -> None:
        """Send a result, or an error when it is too large or cannot be encoded as JSON."""
        limit = self.channel.max_output
        error: ToolResult | None = None
        # Cheap estimate first: encoding a 100 MB text only to refuse it could exhaust memory.
        estimate = 0
        for c in result.content:
            if isinstance(c, Text):
                estimate += len(c.text)
            elif isinstance(c, (Blob, Image)):
                estimate += len(c.data) * 4 // 3
        frame = b""
        if estimate > limit:
            error = ToolResult.error(
                f"the result is at least {estimate} bytes; the limit is {limit}", "output_too_large"
            )
        else:
            try:
                frame = encode({"t": "result", "id": cid, "result": result.to_dict()})
            except TypeError as e:
                error = ToolResult.error(
                    f"the tool returned a value that cannot be sent as JSON: {e}", "invalid_output"
                )
            else:
                if len(frame) > limit:
                    error = ToolResult.error(
                        f"the result is {len(frame)} bytes; the limit is {limit}",
                        "output_too_large",
                    )
        if error is not None:
            frame = encode({"t": "result", "id": cid, "result": error.to_dict()})
        self.channel.write(frame)

    def _event(self, cid: int, event: Any) -> int:
        """Send one streamed event (large blobs in chunks); returns the bytes sent."""
        if isinstance(event, Blob) and len(event.data) > BLOB_CHUNK:
            data = event.data
            sent = 0
            for start in range(0, len(data), BLOB_CHUNK):
                part = data[start : start + BLOB_CHUNK]
                frame = encode(
                    {
                        "t": "event",
                        "id": cid,
                        "event": {
                            "type": "blob_chunk",
                            "data": base64.b64encode(part).decode(),
                            "mime_type": event.mime_type,
                            "filename": event.filename,
                            "end": start + BLOB_CHUNK >= len(data),
                        },
                    }
                )
                self.channel.write(frame)  # blocks while the host is behind: backpressure
                sent += len(frame)
            return sent
        frame = encode({"t": "event", "id": cid, "event": event.to_dict()})
        self.channel.write(frame)
        return len(frame)

    def call(self, msg: dict[str, Any], b: Any) -> None:
        """Dispatch a call that does not run on the reading thread (async, streaming, unknown)."""
        cid = int(msg["id"])
        stream = bool(msg.get("stream"))
        if b is None:
            self._send_result(
                cid, ToolResult.error(f"no tool {msg['tool']!r} in this worker", "unknown_tool")
            )
            return
        try:
            coro = self._run_async(cid, b, msg, stream)
            self.running[cid] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError as e:  # no thread could be started: memory or process limits
            self._send_result(cid, ToolResult.error(f"the worker is out of resources: {e}", "busy"))

    def _run_sync(self, cid: int, b: Any, msg: dict[str, Any], inline: bool = False) -> None:
        """Run a sync call in this thread. ``inline``: on the reading thread, which reads no
        cancel until the call is over, so it is not registered for one."""
        if not inline:
            self.running[cid] = threading.get_ident()
        started = time.perf_counter()
        try:
            result = self.pipeline.invoke(b, msg.get("args") or {}, None, self._timeout(msg))
        except BaseException as e:  # nothing may kill the serving thread
            result = ToolResult.error(f"{type(e).__name__}: {e}", "exception")
        finally:
            if not inline:
                self.running.pop(cid, None)
            spent = time.perf_counter() - started
            last = self._cost.get(b.name)  # a moving average decides who may run inline
            self._cost[b.name] = spent if last is None else 0.8 * last + 0.2 * spent
        self._send_result(cid, result)

    async def _run_async(self, cid: int, b: Any, msg: dict[str, Any], stream: bool) -> None:
        try:
            if stream or b.kind in ("gen", "agen"):
                result: ToolResult | None = None
                sent = 0
                events = self.pipeline.astream(b, msg.get("args") or {}, None, self._timeout(msg))
                async for event in events:
                    if isinstance(event, ToolResult):
                        result = event
                    elif stream:
                        sent += self._event(cid, event)
                        if sent > self.channel.max_output:  # a stream is bounded like a result
                            result = ToolResult.error(
                                f"the stream passed the output limit of "
                                f"{self.channel.max_output} bytes",
                                "output_too_large",
                            )
                            await events.aclose()
                            break
                assert result is not None
                if stream and not result.is_error:
                    result.content = []  # already streamed as events
            else:
                result = await self.pipeline.ainvoke(
                    b, msg.get("args") or {}, None, self._timeout(msg)
                )
        except asyncio.CancelledError:
            result = ToolResult.error("cancelled by the host", "cancelled")
        finally:
            self.running.pop(cid, None)
        self._send_result(cid, result)

    def cancel(self, cid: int) -> None:
        job = self.running.get(cid)
        if isinstance(job, int):
            watchdog.interrupt(job)
        elif job is not None:
            job.cancel()

    # -- main loop ---------------------------------------------------------------------------

    # -- reading: leader/follower ------------------------------------------------------------

    def _next(self) -> dict[str, Any] | None:
        """The next message from the host (caller holds ``_read_lock``); None at end of input."""
        while not self._pending:
            try:
                data = os.read(self.in_fd, 1 << 16)
            except OSError as e:  # plugin code closed or broke the host's pipe
                print(
                    f"plughub worker: the protocol pipe from the host failed: {e}", file=sys.stderr
                )
                self._exit(4)
            if not data:
                return None  # the host closed the pipe: leave quietly
            try:
                self._pending.extend(self._decoder.feed(data))
            except ProtocolError as e:
                print(f"plughub worker: protocol error from host: {e}", file=sys.stderr)
                self._exit(3)
        return self._pending.popleft()

    def _exit(self, code: int) -> NoReturn:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skip interpreter teardown: plugin threads must not keep us alive

    def serve(self) -> int:
        """Handle ``init`` single-threaded (the sandbox needs that), then serve calls."""
        msg = self._next()
        if msg is None or msg["t"] != "init":
            return 0 if msg is None else 3
        try:
            # Single-threaded until here: the sandbox confines only the calling thread (and
            # threads it starts later), so every other thread starts afterwards.
            self.start(msg)
        except BaseException as e:  # report, then exit
            self.channel.send(
                {
                    "t": "fatal",
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(limit=20),
                }
            )
            return 1
        threading.Thread(
            target=self.loop.run_forever, name="plughub-worker-loop", daemon=True
        ).start()
        self.pool.submit(self.finish_start)  # setup may need replies that a reader must read
        self._readers = 1
        self._reader_loop()
        return 0

    def _reader_loop(self) -> None:
        """Read and dispatch; a sync call runs right here, in the thread that read it.

        A call that has always been quick (under ``QUICK_CALL`` seconds on average) and takes no
        ``Context`` runs while this thread keeps the reading role: nobody else is woken, which
        is what makes a trivial call cheap. Any other sync call first hands reading over to
        another thread (starting one if none is free), so replies, cancels and other calls keep
        flowing while it runs; ``Context`` calls need that, since their storage and http
        replies must be read by someone else.
        """
        while True:
            slow: tuple[dict[str, Any], Any] | None = None
            with self._read_lock:
                while slow is None:
                    msg = self._next()
                    if msg is None:
                        self._exit(0)
                    if msg["t"] != "call":
                        self._control(msg)
                        continue
                    b = self._bound(msg)
                    if b is None or b.kind != "sync":
                        self.call(msg, b)
                    elif b.ctx_factory is None and self._cost.get(b.name, 1.0) < QUICK_CALL:
                        self._run_sync(int(msg["id"]), b, msg, True)
                    else:
                        slow = (msg, b)
            msg, b = slow  # the read lock is free now: a follower takes over reading
            self._handoff()
            try:
                self._run_sync(int(msg["id"]), b, msg)
            finally:
                with self._count_lock:
                    self._readers += 1

    def _control(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "reply":
            self.channel.deliver(msg)
        elif kind == "cancel":
            self.cancel(int(msg.get("id", 0)))
        elif kind == "ping":
            self.channel.send({"t": "pong", "id": msg.get("id")})
        elif kind == "shutdown":
            self.teardown()
            self._exit(0)

    def _handoff(self) -> None:
        with self._count_lock:
            self._readers -= 1
            spare = self._readers > 0
            if not spare:
                self._readers += 1  # counted for the thread about to start
        if not spare:
            try:
                threading.Thread(target=self._reader_loop, daemon=True).start()
            except RuntimeError:  # out of threads: calls queue until one finishes
                with self._count_lock:
                    self._readers -= 1


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m plughub.runtime.worker IN_FD OUT_FD``."""
    args = sys.argv[1:] if argv is None else argv
    in_fd, out_fd = int(args[0]), int(args[1])
    # Small stacks: under an address-space limit, 8 MiB per thread would use it up quickly.
    threading.stack_size(1 << 20)
    # Warnings (a tool's traceback among them) go to stderr, which the host keeps as the log.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.set_inheritable(in_fd, False)
    os.set_inheritable(out_fd, False)
    worker = Worker(in_fd, out_fd)
    worker._exit(worker.serve())
