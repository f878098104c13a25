"""One worker process as the host sees it: spawn, handshake, calls in flight, logs, exit."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._cgroup import Cgroups
from ._protocol import DEFAULT_MAX_FRAME, FrameProtocol, ProtocolError, encode
from ._zygote import Zygote

__all__ = ["LaunchSpec", "WorkerCrashed", "WorkerProcess", "memory_of"]

log = logging.getLogger("plughub.worker")
RequestHandler = Callable[[str, dict[str, Any], Any], Awaitable[Any]]
"""(kind, message, the storage of the call that asked, or None) -> the reply's value."""


class WorkerCrashed(Exception):
    """The worker died or broke the protocol while calls were in flight (retryable)."""


@dataclass(slots=True)
class LaunchSpec:
    """How to start a worker for one plugin."""

    plugin_id: str
    path: str  # plugin folder or file, as discovery found it
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None
    sandbox: dict[str, Any] | None = None
    max_output: int = 16 << 20
    log_file: Path | None = None
    processes: int | None = None  # cap on the worker's processes (cgroup), None: no cgroup
    max_args: int = 1 << 20  # largest call frame sent (the manifest's max_argument_bytes)
    init_extra: dict[str, Any] = field(default_factory=dict)  # files, settings, grants


def memory_of(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private) bytes of a process, from ``/proc/PID/smaps_rollup``."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if not parts or not parts[0].isdigit():
                    continue
                kib = int(parts[0]) * 1024
                if key == "Rss":
                    out["rss"] = kib
                elif key == "Pss":
                    out["pss"] = kib
                elif key in ("Private_Clean", "Private_Dirty"):
                    out["uss"] += kib
    except OSError:
        pass
    return out


class _Call:
    __slots__ = ("future", "on_event", "storage")

    def __init__(
        self,
        future: asyncio.Future[dict[str, Any]],
        on_event: Callable[[dict[str, Any]], None] | None,
        storage: Any = None,
    ) -> None:
        self.future = future
        self.on_event = on_event
        self.storage = storage  # answers the call's storage requests (a tenant's), if set


class _LogProtocol(asyncio.Protocol):
    """Collects a worker's stdout/stderr: to its log file, the logger, and a tail for errors."""

    def __init__(self, owner: WorkerProcess) -> None:
        self.owner = owner
        self.partial = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > 8192:  # a line without end must not grow without bound
            lines.append(self.partial)
            self.partial = b""
        for raw in lines:
            self.owner._log_line(raw.decode("utf-8", "replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partial:
            self.owner._log_line(self.partial.decode("utf-8", "replace"))
        self.owner._close_log()  # every writer (the worker and its children) has gone


def _expire(fut: asyncio.Future[dict[str, Any]]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class WorkerProcess:
    """A started worker. Owned by one event loop (the host's); not thread-safe."""

    def __init__(
        self,
        spec: LaunchSpec,
        on_request: RequestHandler,
        max_frame: int = DEFAULT_MAX_FRAME,
        cgroups: Cgroups | None = None,
        zygote: Zygote | None = None,
        max_in_flight: int = 32,
    ) -> None:
        self.spec = spec
        self.zygote = zygote
        self.cgroups = cgroups
        self.cgroup_report: str | None = None
        self.on_request = on_request
        self.max_frame = max_frame
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.ready: dict[str, Any] = {}
        self.started_at = 0.0
        self.last_used = 0.0
        self.exit_reason: str | None = None
        self.log_tail: collections.deque[str] = collections.deque(maxlen=50)
        self._calls: dict[int, _Call] = {}
        self._cancelling: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        self.cancel_grace = 2.0
        self._ids = itertools.count(1)
        self._out: asyncio.WriteTransport | None = None
        self._out_proto: FrameProtocol | None = None
        self._in: asyncio.BaseTransport | None = None
        self._ready_fut: asyncio.Future[dict[str, Any]] | None = None
        self._exited = asyncio.Event()
        self._log_fp: Any = None
        self._pidfd = -1

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.exit_reason is None and self.pid != 0

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    async def start(self, timeout: float) -> dict[str, Any]:
        """Spawn, send ``init``, wait for ``ready``; raises ``WorkerCrashed`` on failure."""
        loop = asyncio.get_running_loop()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        log_r, log_w = os.pipe()
        spec = self.spec
        if spec.log_file is not None:
            spec.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_fp = open(spec.log_file, "a", encoding="utf-8")  # noqa: SIM115 - lives with the worker
        try:
            if self.zygote is not None:
                # Warm start: a fork of the pre-loaded zygote takes these pipe ends.
                self.pid = await self.zygote.spawn(
                    (to_child_r, from_child_w, log_w), spec.env, spec.data_dir
                )
            else:
                self.proc = subprocess.Popen(
                    [
                        spec.python,
                        "-m",
                        "plughub.runtime.worker",
                        str(to_child_r),
                        str(from_child_w),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log_w,
                    stderr=log_w,
                    pass_fds=(to_child_r, from_child_w),
                    env=spec.env,
                    cwd=spec.data_dir or "/",
                    start_new_session=True,  # own process group: killing it takes forks along
                )
                self.pid = self.proc.pid
        finally:
            for fd in (to_child_r, from_child_w, log_w):
                os.close(fd)
        if self.cgroups is not None and spec.processes:
            # Before ``init``: no plugin code runs until the worker is in its group.
            self.cgroup_report = self.cgroups.attach(self._cg_name, self.pid, spec.processes)
        self.started_at = self.last_used = time.monotonic()
        self._ready_fut = loop.create_future()
        self._in, _ = await loop.connect_read_pipe(
            lambda: FrameProtocol(self._on_message, self._on_channel_closed, self.max_frame),
            os.fdopen(from_child_r, "rb", buffering=0),
        )
        self._out, proto = await loop.connect_write_pipe(
            lambda: FrameProtocol(lambda m: None, lambda e: None),
            os.fdopen(to_child_w, "wb", buffering=0),
        )
        self._out_proto = proto
        await loop.connect_read_pipe(
            lambda: _LogProtocol(self), os.fdopen(log_r, "rb", buffering=0)
        )
        try:
            self._pidfd = os.pidfd_open(self.pid)
            loop.add_reader(self._pidfd, self._on_process_exit)
        except OSError:  # pragma: no cover - kernels without pidfd: rely on the pipe closing
            self._pidfd = -1
        self._send(
            {
                "t": "init",
                "plugin_id": spec.plugin_id,
                "path": spec.path,
                "data_dir": spec.data_dir,
                "sandbox": spec.sandbox,
                "max_output": spec.max_output,
                **spec.init_extra,
            }
        )
        try:
            async with asyncio.timeout(timeout):
                self.ready = await self._ready_fut
        except TimeoutError:
            self.kill(f"did not become ready within {timeout:g}s")
            raise WorkerCrashed(self._describe("start timed out")) from None
        if self.cgroup_report is not None:
            self.ready.setdefault("sandbox", {}).setdefault("details", []).append(
                self.cgroup_report
            )
        return self.ready

    @property
    def _cg_name(self) -> str:
        return self.spec.plugin_id.replace("/", "__")

    def _send(self, message: dict[str, Any]) -> None:
        if self._out is None or self._out.is_closing():
            raise WorkerCrashed(self._describe("the worker's input pipe is closed"))
        self._out.write(encode(message))

    def kill(self, reason: str) -> None:
        """Kill the worker's whole process group now (SIGKILL); calls in flight fail."""
        if self.pid and not self._has_exited():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._release_group()
        self._fail_all(reason)

    def _has_exited(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is not None
        if self._pidfd >= 0:  # readable once the process has terminated
            return bool(select.select([self._pidfd], [], [], 0)[0])
        return self._exited.is_set()

    def _release_group(self) -> None:
        """Kill leftovers (processes that escaped the process group) and drop the cgroup."""
        if self.cgroups is not None and self.pid:
            self.cgroups.release(self._cg_name, self.pid)

    async def stop(self, grace: float = 2.0) -> None:
        """Ask the worker to exit, then kill it if it has not within ``grace`` seconds."""
        if not self.pid:
            return
        if self.exit_reason is None:
            with contextlib.suppress(WorkerCrashed):
                self._send({"t": "shutdown"})
            try:
                async with asyncio.timeout(grace):
                    await self._exited.wait()
            except TimeoutError:
                self.kill("stopped (did not exit within the grace period)")
        self._fail_all(self.exit_reason or "stopped")
        self._cleanup()

    def _cleanup(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pidfd >= 0:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        for t in (self._in, self._out):
            if t is not None:
                t.close()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_fp is not None:
            self._log_fp.close()
            self._log_fp = None

    def _on_process_exit(self) -> None:
        if self.proc is not None:
            code = self.proc.poll()
            if code is None:
                return
            self._exit_with(code)
        else:  # a zygote child: the zygote reaped it and reports the status
            loop = asyncio.get_running_loop()
            if self._pidfd >= 0:
                loop.remove_reader(self._pidfd)
            task = asyncio.ensure_future(self._zygote_exit())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _zygote_exit(self) -> None:
        assert self.zygote is not None
        self._exit_with(await self.zygote.exit_code(self.pid))

    def _exit_with(self, code: int | None) -> None:
        reason = "exited" if code is None else f"exited with code {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                reason = f"was killed by {signal.Signals(-code).name}"
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # children it left behind go with it
        self._release_group()
        self._fail_all(reason)
        self._exited.set()
        if self._pidfd >= 0:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def _on_channel_closed(self, exc: BaseException | None) -> None:
        if isinstance(exc, ProtocolError):
            self.kill(f"protocol error: {exc}")
            return
        # Usually the process is exiting: give the exit a moment to be seen, so the error says
        # "exited with code 7" or "killed by SIGSEGV" rather than just "pipe closed".
        asyncio.get_running_loop().call_later(0.05, self._after_channel_closed)

    def _after_channel_closed(self) -> None:
        if self.exit_reason is not None or not self.pid:
            return
        if not self._has_exited():
            # The worker closed its output but lives on: it can no longer answer. Kill it.
            self.kill("closed its output pipe")
        else:
            self._on_process_exit()

    def _fail_all(self, reason: str) -> None:
        if self.exit_reason is None:
            self.exit_reason = reason
            log.warning("worker for %s (pid %s) %s", self.spec.plugin_id, self.pid, reason)
        for timer in self._cancelling.values():
            timer.cancel()
        self._cancelling.clear()
        calls, self._calls = self._calls, {}
        for call in calls.values():
            if not call.future.done():
                call.future.set_exception(WorkerCrashed(self._describe(reason)))
        if self._ready_fut is not None and not self._ready_fut.done():
            self._ready_fut.set_exception(WorkerCrashed(self._describe(reason)))

    def _describe(self, reason: str) -> str:
        tail = "\n".join(list(self.log_tail)[-10:])
        msg = f"worker for {self.spec.plugin_id} (pid {self.pid}) {reason}"
        return f"{msg}; last log lines:\n{tail}" if tail else msg

    def _log_line(self, line: str) -> None:
        self.log_tail.append(line)
        if self._log_fp is not None:
            self._log_fp.write(line + "\n")
            self._log_fp.flush()
        log.info("[%s] %s", self.spec.plugin_id, line)

    # -- messages ----------------------------------------------------------------------------

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind in ("result", "event"):
            call = self._calls.get(msg.get("id"))  # type: ignore[arg-type]
            if call is None:
                if kind == "result":  # a cancelled call stopped in time: no kill needed
                    timer = self._cancelling.pop(msg.get("id"), None)  # type: ignore[arg-type]
                    if timer is not None:
                        timer.cancel()
                return
            if kind == "result":
                del self._calls[msg["id"]]
                if not call.future.done():
                    call.future.set_result(msg.get("result") or {})
            elif call.on_event is not None:
                call.on_event(msg.get("event") or {})
        elif kind == "request":
            task = asyncio.ensure_future(self._answer(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "ready":
            if self._ready_fut is not None and not self._ready_fut.done():
                self._ready_fut.set_result(msg)
        elif kind == "fatal":
            error = str(msg.get("error"))
            self.log_tail.extend(str(msg.get("traceback", "")).splitlines()[-8:])
            self._fail_all(f"could not load the plugin: {error}")
        elif kind == "pong":
            fut = self._pings.pop(msg.get("id"), None)  # type: ignore[arg-type]
            if fut is not None and not fut.done():
                fut.set_result(None)
        else:
            self.kill(f"protocol error: unexpected message type {kind!r}")

    async def _answer(self, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        try:
            # A storage request made within a call with its own storage goes to that storage;
            # only calls in flight are looked up, so a worker cannot name another's.
            call = self._calls.get(msg.get("call"))  # type: ignore[arg-type]
            storage = call.storage if call is not None else None
            value = await self.on_request(str(msg.get("kind")), msg, storage)
            reply: dict[str, Any] = {"t": "reply", "id": rid, "value": value}
        except Exception as e:
            reply = {"t": "reply", "id": rid, "error": f"{e}"}
        with contextlib.suppress(WorkerCrashed):
            self._send(reply)

    # -- calls -------------------------------------------------------------------------------

    async def call(
        self,
        tool: str,
        args: dict[str, Any],
        *,
        timeout: float,
        settings: Mapping[str, Any],
        credentials: Mapping[str, Any],
        stream: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        storage: Any = None,
    ) -> dict[str, Any]:
        """Run a tool; returns the result dict. Raises ``WorkerCrashed``, or ``CancelledError``
        (after telling the worker to cancel) when the caller gives up.

        ``storage``: the call's own storage (a tenant's); the worker's ``ctx.storage`` requests
        for this call are answered from it instead of the plugin's.
        """
        cid = next(self._ids)
        message = {
            "t": "call",
            "id": cid,
            "tool": tool,
            "args": args,
            "timeout": timeout,
            "settings": settings,
            "credentials": credentials,
            "stream": stream,
        }
        if storage is not None:
            message["scoped"] = True
        frame = encode(message)
        if len(frame) > self.spec.max_args:  # (encode raised TypeError for non-JSON values)
            raise ValueError(
                f"arguments for {self.spec.plugin_id}.{tool} are {len(frame)} bytes on the wire; "
                f"the limit is {self.spec.max_args}"
            )
        # At most max_in_flight calls on the wire; the rest wait here (within their deadline).
        async with self._slots:
            return await self._call(cid, frame, on_event, timeout, storage)

    async def _call(
        self,
        cid: int,
        frame: bytes,
        on_event: Callable[[dict[str, Any]], None] | None,
        timeout: float,
        storage: Any = None,
    ) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[cid] = _Call(fut, on_event, storage)
        self.last_used = time.monotonic()
        # Backstop: the worker enforces the call's deadline itself; if it does not answer well
        # after it (stopped, or stuck in C), give up here like a cancelled caller would.
        backstop = asyncio.get_running_loop().call_later(timeout + self.cancel_grace, _expire, fut)
        try:
            if self._out is None or self._out.is_closing():
                raise WorkerCrashed(self._describe("the worker's input pipe is closed"))
            self._out.write(frame)
            if self._out_proto is not None:
                await self._out_proto.drain()
            return await fut
        except (asyncio.CancelledError, TimeoutError):
            if self._calls.pop(cid, None) is not None and self.alive:
                with contextlib.suppress(WorkerCrashed):
                    self._send({"t": "cancel", "id": cid})
                # A call that ignores the cancel past the grace period costs the worker its life.
                self._cancelling[cid] = asyncio.get_running_loop().call_later(
                    self.cancel_grace,
                    self.kill,
                    f"call {cid} did not stop within {self.cancel_grace:g}s of being cancelled",
                )
            raise
        finally:
            backstop.cancel()
            self._calls.pop(cid, None)
            self.last_used = time.monotonic()

    async def ping(self, timeout: float) -> bool:
        """Health check: True when the worker's reader answers within ``timeout`` seconds."""
        pid = next(self._ids)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[pid] = fut
        try:
            self._send({"t": "ping", "id": pid})
            async with asyncio.timeout(timeout):
                await fut
            return True
        except (TimeoutError, WorkerCrashed):
            return False
        finally:
            self._pings.pop(pid, None)

    def memory(self) -> dict[str, int]:
        return memory_of(self.pid) if self.alive else {"rss": 0, "pss": 0, "uss": 0}
