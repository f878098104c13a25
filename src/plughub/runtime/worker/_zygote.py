"""Warm starts: a pre-forked process with the SDK already imported forks new workers.

A cold worker pays for the interpreter, ``import pydantic`` and the first pydantic model (about
0.2 s here); a fork of a process that already did all that answers in a few milliseconds and
shares those pages copy-on-write, so each worker's private memory stays small.

The zygote is started once per host with the workers' sanitized environment (never the host's
secrets). The host sends it a spawn request over a Unix socket with the worker's three pipe ends
attached (SCM_RIGHTS); the zygote forks, the child becomes a worker (``_child.main``), and the
zygote reports the pid, and later the exit status, back on the same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["Zygote", "serve"]


def _preload() -> None:
    """Import and warm what every worker needs, so forks inherit it."""
    import orjson  # noqa: F401
    from pydantic import BaseModel

    from ...host import _discovery, _pipeline  # noqa: F401
    from ...sdk import tool
    from ...sdk._tool import build_tool
    from . import _child, _sandbox  # noqa: F401

    class _Warm(BaseModel):
        x: int = 0

    @tool
    def _warm(x: int) -> int:
        return x

    build_tool(_warm).validate({"x": 1})
    _Warm.model_validate({"x": 1})


def serve(control_fd: int) -> None:
    """The zygote's main loop (``python -m plughub.runtime.worker.zygote FD``)."""
    _preload()
    sock = socket.socket(fileno=control_fd)
    children: set[int] = set()

    def reap(*_: Any) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                sock.sendall(json.dumps({"exit": pid, "code": code}).encode() + b"\n")

    signal.signal(signal.SIGCHLD, reap)
    buf = b""
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 65536, 3)
        except InterruptedError:
            continue
        if not data:
            break  # the host is gone: workers notice through their own pipes
        buf += data
        line, _, buf = buf.partition(b"\n")
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _become_worker(sock, request, fds)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        sock.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    os._exit(0)


def _become_worker(sock: socket.socket, request: Mapping[str, Any], fds: list[int]) -> None:
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        os.setsid()
        in_fd, out_fd, log_fd = fds
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        # The zygote's stdio objects were block-buffered; a worker's must reach its log at once.
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
        sys.argv = ["plughub-worker", str(in_fd), str(out_fd)]  # as a cold-started worker sees
        os.environ.clear()
        os.environ.update(request.get("env") or {})
        with contextlib.suppress(OSError):
            os.chdir(request.get("cwd") or "/")
        from ._child import main

        main([str(in_fd), str(out_fd)])
    finally:
        os._exit(70)


class Zygote:
    """Host side: starts the zygote lazily and asks it for workers (on the host's loop)."""

    def __init__(self, python: str, env: Mapping[str, str]) -> None:
        self.python = python
        self.env = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: asyncio.StreamReader | None = None
        self._lock = asyncio.Lock()
        self._pending: asyncio.Future[int] | None = None
        self.exits: dict[int, int] = {}
        self._exit_waiters: dict[int, asyncio.Future[int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.BaseTransport | None = None

    async def _ensure(self) -> socket.socket:
        if self._sock is not None and self.proc is not None and self.proc.poll() is None:
            return self._sock
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [self.python, "-m", "plughub.runtime.worker.zygote", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.connect_accepted_socket(
            lambda: asyncio.StreamReaderProtocol(reader), sock=ours
        )
        self._reader = reader
        self._task = asyncio.ensure_future(self._read())
        return ours

    async def _read(self) -> None:
        assert self._reader is not None
        while line := await self._reader.readline():
            msg = json.loads(line)
            if "pid" in msg and self._pending is not None and not self._pending.done():
                self._pending.set_result(int(msg["pid"]))
            elif "exit" in msg:
                pid, code = int(msg["exit"]), int(msg["code"])
                self.exits[pid] = code
                waiter = self._exit_waiters.pop(pid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(code)
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(RuntimeError("the zygote exited"))

    async def spawn(
        self, fds: tuple[int, int, int], env: Mapping[str, str], cwd: str | None
    ) -> int:
        """Fork a worker owning ``fds`` (its in, out and log pipe ends); returns its pid."""
        async with self._lock:
            sock = await self._ensure()
            self._pending = asyncio.get_running_loop().create_future()
            payload = json.dumps({"env": dict(env), "cwd": cwd}).encode() + b"\n"
            # Sent from the loop thread: the socket is non-blocking, so a thread would not make
            # this wait either, and the default executor may be full of threads waiting for
            # this very start (concurrent first calls resolving on an adopted loop): deadlock.
            socket.send_fds(sock, [payload], list(fds))
            async with asyncio.timeout(10):
                return await self._pending

    async def exit_code(self, pid: int, wait: float = 1.0) -> int | None:
        """The worker's exit status as the zygote reaped it (None if not reported in time)."""
        if pid in self.exits:
            return self.exits.pop(pid)
        fut = self._exit_waiters.setdefault(pid, asyncio.get_running_loop().create_future())
        try:
            async with asyncio.timeout(wait):
                return await fut
        except TimeoutError:
            return None

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.close()  # also closes the socket
        elif self._sock is not None:
            self._sock.close()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


if __name__ == "__main__":  # pragma: no cover - run as a module by Zygote
    serve(int(sys.argv[1]))
