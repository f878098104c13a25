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
from ._protocol import DEFAULT_MAX_FRAME, FrameDecoder, ProtocolError, encode
from ._zygote import Zygote

__all__ = ["LaunchSpec", "WorkerCrashed", "WorkerProcess", "memory_of"]

log = logging.getLogger("plughub.worker")
RequestHandler = Callable[[str, dict[str, Any], Any], Awaitable[Any]]
"""(kind, message, the storage of the call that asked, or None) -> the reply's value."""
#: Bytes read per wake-up: small enough that the buffer comes from the heap (a 256 KiB read,
#: asyncio's pipe default, costs an mmap, a page fault and an munmap on every reply).
READ_SIZE = 1 << 16
#: Unsent bytes above which a caller waits (``drain``), and below which waiting callers resume.
HIGH_WATER = 64 << 10
LOW_WATER = 16 << 10
_INF = float("inf")


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
        # Calls on the wire: id -> (future, backstop time on the loop's clock).
        self._calls: dict[int, tuple[asyncio.Future[dict[str, Any]], float]] = {}
        self._listeners: dict[int, Callable[[dict[str, Any]], None]] = {}  # on_event per call
        self._storages: dict[int, Any] = {}  # a call's own storage (a tenant's), if it has one
        self._cancelling: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pings: dict[int, asyncio.Future[None]] = {}
        # In-flight cap: a counter, and a queue only when it is full (no Semaphore per call).
        self._max_in_flight = max_in_flight
        self._on_wire = 0
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # One backstop timer for all calls, due at the earliest call's backstop time.
        self._backstop: asyncio.TimerHandle | None = None
        self._backstop_at = _INF
        self.cancel_grace = 2.0
        self._ids = itertools.count(1)
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop that owns the pipes
        # The protocol pipes, driven with add_reader/add_writer and os.read/os.write.
        self._rfd = -1
        self._wfd = -1
        self._decoder = FrameDecoder(max_frame)
        self._wbuf = bytearray()  # bytes the pipe would not take yet
        self._wclosed = True
        self._drained: asyncio.Future[None] | None = None
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
        self.loop = loop
        os.set_blocking(from_child_r, False)
        os.set_blocking(to_child_w, False)
        self._rfd, self._wfd, self._wclosed = from_child_r, to_child_w, False
        loop.add_reader(from_child_r, self._on_readable)
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
        self._write(encode(message))

    # -- the pipes ---------------------------------------------------------------------------

    def _write(self, frame: bytes) -> None:
        """Write now if the pipe takes it (the common case: no buffer, no callback), else queue
        the rest behind ``add_writer``. Raises ``WorkerCrashed`` once the pipe is closed."""
        if self._wclosed:
            raise WorkerCrashed(self._describe("the worker's input pipe is closed"))
        if self._wbuf:  # keep frames in order behind what is already queued
            self._wbuf += frame
            return
        try:
            n = os.write(self._wfd, frame)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:  # the worker is gone; its exit (or the read side closing) fails calls
            self._close_writer()
            return
        if n < len(frame):
            self._wbuf += memoryview(frame)[n:]
            assert self.loop is not None
            self.loop.add_writer(self._wfd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            n = os.write(self._wfd, self._wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_writer()
            return
        del self._wbuf[:n]
        if not self._wbuf:
            assert self.loop is not None
            self.loop.remove_writer(self._wfd)
        if len(self._wbuf) <= LOW_WATER:
            self._wake_drained()

    async def _drain(self) -> None:
        """Backpressure: wait while more than ``HIGH_WATER`` bytes are queued for the worker."""
        while len(self._wbuf) > HIGH_WATER and not self._wclosed:
            if self._drained is None:
                assert self.loop is not None
                self._drained = self.loop.create_future()
            await asyncio.shield(self._drained)

    def _wake_drained(self) -> None:
        fut, self._drained = self._drained, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _close_writer(self) -> None:
        if self._wfd >= 0:
            if self._wbuf and self.loop is not None:
                self.loop.remove_writer(self._wfd)
            os.close(self._wfd)
            self._wfd = -1
        self._wclosed = True
        self._wbuf.clear()
        self._wake_drained()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._rfd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close_reader(e)
            return
        if not data:
            self._close_reader(None)
            return
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as e:
            self._close_reader(e)
            return
        for msg in messages:
            self._on_message(msg)

    def _close_reader(self, exc: BaseException | None) -> None:
        """The worker's output ended (or broke): no more messages; decide what it means."""
        if self._rfd < 0:
            return
        if self.loop is not None:
            self.loop.remove_reader(self._rfd)
        os.close(self._rfd)
        self._rfd = -1
        self._on_channel_closed(exc)

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
        if self._rfd >= 0:
            loop.remove_reader(self._rfd)
            os.close(self._rfd)
            self._rfd = -1
        self._close_writer()
        if self._backstop is not None:
            self._backstop.cancel()
            self._backstop, self._backstop_at = None, _INF
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
        self._listeners.clear()
        self._storages.clear()
        for fut, _ in calls.values():
            if not fut.done():
                fut.set_exception(WorkerCrashed(self._describe(reason)))
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
        if kind == "result":
            entry = self._calls.pop(msg.get("id"), None)  # type: ignore[arg-type]
            if entry is None:  # a cancelled call stopped in time: no kill needed
                timer = self._cancelling.pop(msg.get("id"), None)  # type: ignore[arg-type]
                if timer is not None:
                    timer.cancel()
            elif not entry[0].done():
                entry[0].set_result(msg.get("result") or {})
        elif kind == "event":
            listener = self._listeners.get(msg.get("id"))  # type: ignore[arg-type]
            if listener is not None:
                listener(msg.get("event") or {})
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
            # A storage request made within a call that brought its own storage is answered
            # from it; only calls in flight are looked up, so a worker cannot name another's.
            storage = self._storages.get(msg.get("call"))  # type: ignore[arg-type]
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
        """Run a tool; returns the result dict. Raises ``WorkerCrashed``, ``TimeoutError`` (the
        backstop, or no free slot in time), or ``CancelledError`` (after telling the worker to
        cancel) when the caller gives up.

        ``storage``: the call's own storage (a tenant's): the worker's ``ctx.storage`` requests
        for this call are answered from it instead of the plugin's.

        One coroutine and no timer, task or thread per call in the common case: the frame goes
        straight to the pipe and the reply's reader resolves the future.
        """
        cid = next(self._ids)
        # Empty settings/credentials and stream=False are the worker's defaults: not sent.
        message = {"t": "call", "id": cid, "tool": tool, "args": args, "timeout": timeout}
        if settings:
            message["settings"] = settings
        if credentials:
            message["credentials"] = credentials
        if stream:
            message["stream"] = True
        if storage is not None:
            message["scoped"] = True
        frame = encode(message)  # (raises TypeError for non-JSON values)
        if len(frame) > self.spec.max_args:
            raise ValueError(
                f"arguments for {self.spec.plugin_id}.{tool} are {len(frame)} bytes on the wire; "
                f"the limit is {self.spec.max_args}"
            )
        loop = self.loop
        if loop is None or self._wclosed:
            raise WorkerCrashed(self._describe("the worker's input pipe is closed"))
        # At most max_in_flight calls on the wire; the rest wait here (within their deadline).
        if self._on_wire < self._max_in_flight and not self._slot_waiters:
            self._on_wire += 1
        else:
            await self._wait_for_slot(loop, timeout)
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        # Backstop: the worker enforces the call's deadline itself; if it does not answer well
        # after it (stopped, or stuck in C), give up here like a cancelled caller would.
        at = loop.time() + timeout + self.cancel_grace
        self._calls[cid] = (fut, at)
        if on_event is not None:
            self._listeners[cid] = on_event
        if storage is not None:
            self._storages[cid] = storage
        if at < self._backstop_at:
            self._arm_backstop(loop, at)
        try:
            self._write(frame)
            if len(self._wbuf) > HIGH_WATER:
                await self._drain()
            return await fut
        except (asyncio.CancelledError, TimeoutError):
            if self._calls.pop(cid, None) is not None and self.alive:
                with contextlib.suppress(WorkerCrashed):
                    self._send({"t": "cancel", "id": cid})
                # A call that ignores the cancel past the grace period costs the worker its life.
                self._cancelling[cid] = loop.call_later(
                    self.cancel_grace,
                    self.kill,
                    f"call {cid} did not stop within {self.cancel_grace:g}s of being cancelled",
                )
            raise
        finally:
            self._calls.pop(cid, None)
            if on_event is not None:
                self._listeners.pop(cid, None)
            if storage is not None:
                self._storages.pop(cid, None)
            self._release_slot()
            self.last_used = time.monotonic()

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        """Queue (FIFO) for a free slot; ``TimeoutError`` if none frees up within ``timeout``."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._slot_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed a slot just as it gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            raise

    def _release_slot(self) -> None:
        """Hand the slot to the next waiter (it stays counted) or free it."""
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._on_wire -= 1

    def _arm_backstop(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._backstop is not None:
            self._backstop.cancel()
        self._backstop_at = at
        self._backstop = loop.call_at(at, self._on_backstop)

    def _on_backstop(self) -> None:
        """Fail the calls past their backstop time; re-arm for the earliest remaining one.

        Calls usually share one timeout, so later calls are due later: a call that finishes in
        time costs no timer work at all, and the timer fires about once per timeout period.
        """
        self._backstop, self._backstop_at = None, _INF
        assert self.loop is not None
        now = self.loop.time()
        nearest = _INF
        for fut, at in list(self._calls.values()):
            if at <= now + 0.001:
                if not fut.done():
                    fut.set_exception(TimeoutError())
            elif at < nearest:
                nearest = at
        if nearest < _INF:
            self._arm_backstop(self.loop, nearest)

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
