"""Out-of-process tool calls through plughub's worker runtime, against floors from the same run.

One trivial plugin, ``bench/echo`` (``runtime: worker``, ``@tool def echo(text: str) -> str``),
written to a temporary folder, is served by ``PluginHost(..., workers=WorkerConfig(...))`` and
compared with baselines measured in the same run, interleaved in rounds:

  round trip    primary: ``await host.ainvoke("echo", "echo", {"text": "hello"})`` on a warm
                worker, with ``async with PluginHost(...) as host`` inside the benchmark's own
                loop (the host adopts that loop: no loop thread, no hop). Secondary: a host used
                without ``async with`` (its loop runs on a background thread), called with
                ``await host.ainvoke`` from the application's loop and with sync ``host.invoke``.
                The floor is a blocking JSON echo over a pair of ``os.pipe()``s to a child
                process (same 4-byte length framing, same payload size as plughub's call frame).
                Once with default scheduling and once with every thread of both processes on
                one CPU.
  MCP           the same tool through the official MCP SDK (stdio client + ``MCPServer``)
  throughput    32 concurrent ``ainvoke`` on one worker, adopted loop (and 32 concurrent MCP calls)
  start-up      a warm worker (forked from the zygote: the default for a plugin with no
                requirements of its own) and a cold one (spawned: the path of plugins with their
                own environment) against ``python -c pass`` and ``python -c "import plughub.sdk"``
  memory        RSS / PSS / USS of an idle worker after one call (``/proc/PID/smaps_rollup``)
  --codecs      encode+decode of a 226-byte tools/call message: json, orjson, msgpack
  --breakdown   where the round trip goes: the floor with an asyncio parent and/or a
                leader/follower child (the thread that reads a call answers it, as in the worker
                today): plughub's shape without plughub's code; the old shape's reader-thread ->
                pool-thread child as a reference; and the CPU cost of plughub's host and worker
                code paths without I/O

Latencies are per call: p50 is the median of the per-round medians, p99 is taken over every
call of the run. Ratios are paired (same round, same scheduling) and the median over rounds is
printed. Absolute numbers move a lot on shared VMs; read the ratios.

Usage: ``python bench/worker.py [--quick] [--json] [--budget S] [--rounds N] [--codecs]
[--breakdown] [--no-mcp]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

import plughub
from plughub.host import PluginHost
from plughub.runtime.worker import WorkerConfig, memory_of

PLUGIN_ID = "bench/echo"
ARGS: dict[str, Any] = {"text": "hello"}
GOAL_RT = 2.0  # plughub round trip / floor, same scheduling (pinned)
GOAL_MCP = 5.0  # MCP round trip / plughub round trip
GOAL_WARM = 0.25  # warm start / cold start
GOAL_USS = 12 << 20  # idle worker, no extra requirements
CONCURRENCY = 32
HEADER = struct.Struct(">I")
MIB = 1 << 20

MANIFEST = """\
id: bench/echo
version: 1.0.0
entrypoint: main
runtime: worker
"""
PLUGIN_CODE = '''\
from plughub.sdk import tool


@tool
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text
'''
MCP_SERVER = '''\
import os
import sys

from mcp.server.mcpserver import MCPServer

app = MCPServer("bench")


@app.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        f.write(str(os.getpid()))
    app.run()
'''
# The floor's child: read frames from the host's pipe, answer each with the same JSON.
#   sync  one thread reads, decodes, encodes and writes.
#   lf    leader/follower, like plughub's worker today: the thread that read a call answers it,
#         after making sure another thread is reading (starting one when none is free).
#   pool  the old shape: a reader thread decodes, a pool thread encodes and writes.
FLOOR_CHILD = r"""
import collections, json, os, struct, sys, threading
mode, rfd, wfd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
H = struct.Struct(">I")
loads, encode, write, read = json.loads, json.JSONEncoder(separators=(",", ":")).encode, os.write, os.read
lock = threading.Lock()

def answer(msg):
    body = encode(msg).encode()
    write(wfd, H.pack(len(body)) + body)

def locked(msg):
    body = encode(msg).encode()
    frame = H.pack(len(body)) + body
    with lock:
        write(wfd, frame)

pending, state = collections.deque(), {"buf": b"", "readers": 1}

def next_msg():
    while not pending:
        data = read(rfd, 65536)
        if not data:
            os._exit(0)
        buf = state["buf"] + data
        while len(buf) >= 4:
            (n,) = H.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            pending.append(loads(buf[4 : 4 + n]))
            buf = buf[4 + n :]
        state["buf"] = buf
    return pending.popleft()

if mode == "lf":
    read_lock, count_lock = threading.Lock(), threading.Lock()

    def follower():
        while True:
            with read_lock:
                msg = next_msg()
            with count_lock:
                state["readers"] -= 1
                spare = state["readers"] > 0
                if not spare:
                    state["readers"] += 1
            if not spare:
                threading.Thread(target=follower, daemon=True).start()
            try:
                locked(msg)
            finally:
                with count_lock:
                    state["readers"] += 1

    follower()
elif mode == "pool":
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(32)
    while True:
        pool.submit(locked, next_msg())
else:
    while True:
        answer(next_msg())
"""
_compact = json.JSONEncoder(separators=(",", ":")).encode  # built once: no per-call kwargs


# --------------------------------------------------------------------------------------------
# Scheduling
# --------------------------------------------------------------------------------------------

ALL_CPUS = frozenset(os.sched_getaffinity(0))
PIN_CPU = 0 if 0 in ALL_CPUS else min(ALL_CPUS)


def set_affinity(pids: list[int], cpus: frozenset[int]) -> None:
    """Every thread of every process in ``pids`` may run on ``cpus`` only."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)


# --------------------------------------------------------------------------------------------
# Peers: the floor's child processes and the MCP session
# --------------------------------------------------------------------------------------------


class _FrameProto(asyncio.Protocol):
    """Minimal asyncio reader for the floor's frames: one call in flight, one future."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.fut: asyncio.Future[Any] | None = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 4:
            (n,) = HEADER.unpack_from(buf)
            if len(buf) < 4 + n:
                return
            msg = json.loads(bytes(buf[4 : 4 + n]))
            del buf[: 4 + n]
            fut, self.fut = self.fut, None
            if fut is not None and not fut.done():
                fut.set_result(msg)


class PipePeer:
    """A child answering JSON frames over two pipes; driven blocking or from an asyncio loop."""

    def __init__(self, child_mode: str) -> None:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FLOOR_CHILD, child_mode, str(to_r), str(from_w)],
            pass_fds=(to_r, from_w),
            stdin=subprocess.DEVNULL,
        )
        os.close(to_r)
        os.close(from_w)
        self.w, self.r = to_w, from_r
        self.pid = self.proc.pid
        self._out: asyncio.WriteTransport | None = None
        self._in: asyncio.BaseTransport | None = None
        self._proto: _FrameProto | None = None

    def block(self, msg: dict[str, Any], n: int, out: list[int]) -> Any:
        """``n`` blocking round trips; appends ns per call to ``out``."""
        enc, loads, write, read, pack = _compact, json.loads, os.write, os.read, HEADER.pack
        unpack, w, r, ns = HEADER.unpack_from, self.w, self.r, time.perf_counter_ns
        reply = None
        for _ in range(n):
            t0 = ns()
            body = enc(msg).encode()
            write(w, pack(len(body)) + body)
            buf = read(r, 65536)
            while len(buf) < 4 or len(buf) < 4 + unpack(buf)[0]:
                buf += read(r, 65536)
            reply = loads(buf[4:])
            out.append(ns() - t0)
        return reply

    async def connect(self) -> None:
        """Switch to asyncio: the pipes become transports of the running loop."""
        loop = asyncio.get_running_loop()
        proto = self._proto = _FrameProto()
        self._in, _ = await loop.connect_read_pipe(
            lambda: proto, os.fdopen(self.r, "rb", buffering=0)
        )
        self._out, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(self.w, "wb", buffering=0)
        )

    async def ablock(self, msg: dict[str, Any], n: int, out: list[int]) -> Any:
        assert self._out is not None and self._proto is not None
        loop = asyncio.get_running_loop()
        enc, pack, write, proto = _compact, HEADER.pack, self._out.write, self._proto
        ns = time.perf_counter_ns
        reply = None
        for _ in range(n):
            t0 = ns()
            body = enc(msg).encode()
            fut = proto.fut = loop.create_future()
            write(pack(len(body)) + body)
            reply = await fut
            out.append(ns() - t0)
        return reply

    async def aclose(self) -> None:
        if self._out is not None:
            self._out.close()
            assert self._in is not None
            self._in.close()
            await asyncio.sleep(0)  # transports close their pipes on the next loop iteration
        else:
            os.close(self.w)
            os.close(self.r)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class McpPeer:
    """An official MCP SDK stdio session with a one-tool ``MCPServer``."""

    def __init__(self, tmp: Path) -> None:
        self.script = tmp / "mcp_server.py"
        self.script.write_text(MCP_SERVER)
        self.pidfile = tmp / "mcp_server.pid"
        self.stack = contextlib.AsyncExitStack()
        self.session: Any = None
        self.pid = 0
        self.version = ""
        self.start_ms = 0.0
        self.errlog = open(os.devnull, "w")  # noqa: SIM115 - closed in aclose

    async def start(self) -> None:
        import importlib.metadata

        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        self.version = importlib.metadata.version("mcp")
        params = StdioServerParameters(
            command=sys.executable, args=[str(self.script), str(self.pidfile)]
        )
        t0 = time.perf_counter()
        read, write = await self.stack.enter_async_context(stdio_client(params, self.errlog))
        self.session = await self.stack.enter_async_context(ClientSession(read, write))
        await self.session.initialize()
        check_mcp(await self.session.call_tool("echo", ARGS))
        self.start_ms = (time.perf_counter() - t0) * 1e3
        self.pid = int(self.pidfile.read_text())

    async def block(self, n: int, out: list[int]) -> None:
        call, ns = self.session.call_tool, time.perf_counter_ns
        res = None
        for _ in range(n):
            t0 = ns()
            res = await call("echo", ARGS)
            out.append(ns() - t0)
        check_mcp(res)

    async def gather(self, n: int) -> float:
        call = self.session.call_tool
        t0 = time.perf_counter()
        for _ in range(n):
            results = await asyncio.gather(*(call("echo", ARGS) for _ in range(CONCURRENCY)))
        check_mcp(results[-1])
        return time.perf_counter() - t0

    async def aclose(self) -> float:
        t0 = time.perf_counter()
        await self.stack.aclose()
        self.errlog.close()
        return (time.perf_counter() - t0) * 1e3


def check_mcp(res: Any) -> None:
    if res is None or res.is_error or res.content[0].text != "hello":
        raise RuntimeError(f"unexpected MCP result: {res!r}")


def check(res: Any) -> None:
    if res is None or res.is_error or res.text != "hello":
        raise RuntimeError(f"unexpected plughub result: {res!r}")


# --------------------------------------------------------------------------------------------
# plughub hosts
# --------------------------------------------------------------------------------------------


def has_warm_start() -> bool:
    return "warm_start" in {f.name for f in fields(WorkerConfig)}


def make_plugin(tmp: Path) -> Path:
    plugins = tmp / "plugins"
    folder = plugins / "echo"
    folder.mkdir(parents=True)
    (folder / "plugin.yaml").write_text(MANIFEST)
    (folder / "main.py").write_text(PLUGIN_CODE)
    return plugins


def new_host(plugins: Path, warm: bool | None) -> PluginHost:
    # ``warm_start`` is passed by name only when this build has it (see has_warm_start).
    cfg = WorkerConfig() if warm is None else WorkerConfig(**{"warm_start": warm})
    return PluginHost([plugins], entry_points=False, workers=cfg)


def worker_mem_label(kind: str, default: str) -> str:
    """The memory table's row for a worker: the default one, or the other (informational)."""
    return f"plughub worker, {kind} " + ("(default)" if kind == default else "(informational)")


def worker_pid(host: PluginHost) -> int:
    info = host.plugin(PLUGIN_ID).worker or {}
    return int(info.get("pid") or 0)


def stop_worker(host: PluginHost) -> None:
    """Stop the plugin's worker (the next call starts a new one)."""
    stop = host._workers.supervisor.stop(PLUGIN_ID)  # type: ignore[union-attr]
    asyncio.run_coroutine_threadsafe(stop, host._portal()).result(30)


def capture_frames(host: PluginHost) -> tuple[dict[str, Any], int, int]:
    """plughub's call message for ``echo`` and the sizes of its call and result frames."""
    from plughub.runtime.worker import _process, encode

    seen: list[dict[str, Any]] = []
    real = encode

    def spy(message: dict[str, Any]) -> bytes:
        seen.append(message)
        return real(message)

    names = vars(_process)  # WorkerProcess looks ``encode`` up in its module on every send
    names["encode"] = spy
    try:
        res = host.invoke("echo", "echo", ARGS)
    finally:
        names["encode"] = real
    check(res)
    calls = [m for m in seen if m.get("t") == "call"]
    call = calls[-1] if calls else {
        "t": "call", "id": 1, "tool": "echo", "args": ARGS, "timeout": 30.0,
        "settings": {}, "credentials": {}, "stream": False,
    }  # fmt: skip
    result = encode({"t": "result", "id": call["id"], "result": res.to_dict()})
    return call, len(encode(call)), len(result)


# --------------------------------------------------------------------------------------------
# Round-trip variants
# --------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    label: str
    run: Callable[[int, list[int]], Awaitable[None]]  # n calls, append ns per call
    calls: int
    group: str = "main"  # main | secondary | breakdown
    rounds: dict[str, list[list[int]]] = field(default_factory=dict)  # mode -> per round


def _on(loop: asyncio.AbstractEventLoop, coro: Any) -> Awaitable[Any]:
    """Await ``coro`` running on another thread's loop."""
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def plughub_variants(
    adopted: PluginHost, background: PluginHost, calls: int, app_loop_ok: bool
) -> list[Variant]:
    """The primary variant (adopted loop) and the two secondary ones (background host loop)."""
    portal = background._portal()

    def timed(call: Callable[[], Awaitable[Any]]) -> Callable[[int, list[int]], Awaitable[None]]:
        async def go(n: int, out: list[int]) -> None:
            ns, res = time.perf_counter_ns, None
            for _ in range(n):
                t0 = ns()
                res = await call()
                out.append(ns() - t0)
            check(res)

        return go

    ainvoke, bg_ainvoke, bg_invoke = adopted.ainvoke, background.ainvoke, background.invoke

    async def sync(n: int, out: list[int]) -> None:
        ns, res = time.perf_counter_ns, None
        for _ in range(n):
            t0 = ns()
            res = bg_invoke("echo", "echo", ARGS)
            out.append(ns() - t0)
        check(res)

    app = (
        Variant(
            "ainvoke_app",
            "await host.ainvoke from the app loop",
            timed(lambda: bg_ainvoke("echo", "echo", ARGS)),
            calls,
            "secondary",
        )
        if app_loop_ok
        else Variant(
            "ainvoke_app",
            "ainvoke via a manual hop to the host loop",
            timed(lambda: _on(portal, bg_ainvoke("echo", "echo", ARGS))),
            calls,
            "secondary",
        )
    )
    return [
        Variant(
            "ainvoke_adopted",
            "plughub await host.ainvoke (async with: adopted loop)",
            timed(lambda: ainvoke("echo", "echo", ARGS)),
            calls,
        ),
        app,
        Variant("invoke", "host.invoke (sync)", sync, calls, "secondary"),
    ]


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def pct(values: list[int] | list[float], q: float) -> float:
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def spread(vals: list[float]) -> dict[str, float]:
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


async def timed_block(v: Variant, mode: str, warm: int) -> None:
    """One block: ``warm`` calls not recorded, then ``v.calls`` recorded; GC off."""
    scratch: list[int] = []
    out: list[int] = []
    gc.disable()
    try:
        await v.run(warm, scratch)
        await v.run(v.calls, out)
    finally:
        gc.enable()
    v.rounds.setdefault(mode, []).append(out)


def foreign_loop_probe(host: PluginHost, timeout: float) -> dict[str, Any]:
    """``await host.ainvoke`` from a loop that is not the host's, in a thread of its own.

    Worker pipes belong to the host's loop; a caller's loop must get its answer at once, not at
    the call's deadline. A broken build answers after ``timeout`` (or with a timeout error).
    """
    out: dict[str, Any] = {}

    async def probe() -> None:
        times, texts = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            res = await host.ainvoke("echo", "echo", ARGS, timeout=timeout)
            times.append(time.perf_counter() - t0)
            texts.append(res.text if not res.is_error else f"error: {res.reason}")
        out.update(ms=[round(t * 1e3, 2) for t in times], results=texts)

    def run() -> None:
        try:
            asyncio.run(probe())
        except BaseException as e:
            out["error"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=run, name="bench-foreign-loop", daemon=True)
    t.start()
    t.join(timeout * 3 + 10)
    ok = "ms" in out and max(out["ms"]) < timeout * 1e3 * 0.5 and out["results"][-1] == "hello"
    out["ok"] = ok
    return out


def subprocess_ms(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdin=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1e3


def first_answer_ms(host: PluginHost) -> tuple[float, int]:
    """Stop the worker, then time the next call (spawn or fork, init, ready, call)."""
    stop_worker(host)
    t0 = time.perf_counter()
    res = host.invoke("echo", "echo", ARGS)
    dt = (time.perf_counter() - t0) * 1e3
    check(res)
    return dt, worker_pid(host)


def codec_message() -> dict[str, Any]:
    """A tools/call request of exactly 226 bytes as compact JSON (orjson's output)."""
    msg: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {
            "name": "search_documents",
            "arguments": {"query": "", "limit": 10, "lang": "en", "archived": False},
            "_meta": {"progressToken": "tok-42"},
        },
    }
    pad = 226 - len(orjson.dumps(msg))
    msg["params"]["arguments"]["query"] = ("latency of plugin tool calls " * 10)[:pad]
    assert len(orjson.dumps(msg)) == 226
    return msg


def bench_codecs(quick: bool) -> dict[str, Any]:
    msg = codec_message()
    g: dict[str, Any] = {"msg": msg, "json": json, "orjson": orjson}
    stmts = {
        "json": "json.loads(json.dumps(msg))",
        "orjson": "orjson.loads(orjson.dumps(msg))",
    }
    sizes = {"json": len(json.dumps(msg).encode()), "orjson": len(orjson.dumps(msg))}
    try:
        import msgpack  # type: ignore[import-untyped]

        g["msgpack"] = msgpack
        stmts["msgpack"] = "msgpack.unpackb(msgpack.packb(msg))"
        sizes["msgpack"] = len(msgpack.packb(msg))
        msgpack_version = ".".join(map(str, msgpack.version))
    except ImportError:
        msgpack_version = None
    for name, stmt in stmts.items():  # same value back, every codec
        assert eval(stmt, g) == msg, name
    timers = {name: timeit.Timer(stmt, globals=g) for name, stmt in stmts.items()}
    target = 0.002 if quick else 0.02
    numbers = {}
    for name, t in timers.items():
        n, dt = t.autorange()
        numbers[name] = max(1, int(n * target / dt))
    samples: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for r in range(3 if quick else 9):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            best = min(timers[name].repeat(3, numbers[name]))
            samples[name].append(best / numbers[name] * 1e6)
    us = {name: statistics.median(v) for name, v in samples.items()}
    ratios = {
        f"{name}/orjson": spread(
            [a / b for a, b in zip(samples[name], samples["orjson"], strict=True)]
        )
        for name in samples
        if name != "orjson"
    }
    return {
        "message_bytes": 226,
        "us": us,
        "ratios": ratios,
        "wire_bytes": sizes,
        "msgpack": msgpack_version,
        "orjson": orjson.__version__,
    }


# --------------------------------------------------------------------------------------------
# Breakdown: CPU cost of plughub's code paths without I/O
# --------------------------------------------------------------------------------------------


def _per_call_us(fn: Callable[[], Any], n: int, runs: int = 5) -> float:
    """Median over ``runs`` of the mean cost of ``fn()``, in us (GC off)."""
    vals = []
    gc.disable()
    try:
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                fn()
            vals.append((time.perf_counter_ns() - t0) / n / 1e3)
    finally:
        gc.enable()
    return statistics.median(vals)


async def cpu_breakdown(
    host: PluginHost, plugins: Path, call_msg: dict[str, Any], n: int
) -> dict[str, Any]:
    """Host and worker code paths, each run in this process with the I/O taken out.

    ``host`` is the adopted-loop host: its path is timed on the running loop, as it is called.
    """
    from plughub.runtime.worker import FrameDecoder, encode
    from plughub.sdk import ToolResult

    out: dict[str, Any] = {}
    res = await host.ainvoke("echo", "echo", ARGS)
    raw = res.to_dict()
    result_frame = encode({"t": "result", "id": 1, "result": raw})
    call_frame = encode(call_msg)
    dec = FrameDecoder()
    out["host: encode(call message)"] = _per_call_us(lambda: encode(call_msg), n)
    out["host: FrameDecoder.feed(result frame)"] = _per_call_us(lambda: dec.feed(result_frame), n)
    out["host: ToolResult.from_dict(result)"] = _per_call_us(lambda: ToolResult.from_dict(raw), n)

    # The whole host path with WorkerProcess.call answering at once: pipeline, proxy, Context,
    # supervisor lookup, from_dict (no frame, no pipe, no wake-up).
    w = host._workers.supervisor.workers[PLUGIN_ID]  # type: ignore[union-attr]

    async def instant(*_a: Any, **_kw: Any) -> dict[str, Any]:
        return raw

    async def stubbed(k: int) -> float:
        ainvoke = host.ainvoke
        vals = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for _ in range(k):
                r = await ainvoke("echo", "echo", ARGS)
            vals.append((time.perf_counter_ns() - t0) / k / 1e3)
        check(r)
        return statistics.median(vals)

    w.call = instant  # type: ignore[method-assign]
    gc.disable()
    try:
        key = "host: ainvoke (adopted loop) with WorkerProcess.call answering at once"
        out[key] = await stubbed(n)
    finally:
        gc.enable()
        del w.call
    check(await host.ainvoke("echo", "echo", ARGS))

    # The worker's path, in this process: decode, Bound, Pipeline.invoke, encode + write.
    from plughub.runtime.worker._child import Worker

    rfd, wfd = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    wk = Worker(rfd, null)
    try:
        wk.start({"plugin_id": PLUGIN_ID, "path": str(plugins / "echo"), "sandbox": None})
        wdec = FrameDecoder()
        msg = wdec.feed(call_frame)[0]
        b = wk._bound(msg)
        result = wk.pipeline.invoke(b, msg["args"], None, None)
        check(result)

        def inline() -> None:  # the reading thread's whole path, minus os.read and _handoff
            m = wdec.feed(call_frame)[0]
            wk._run_sync(int(m["id"]), wk._bound(m), m)

        out["worker: FrameDecoder.feed(call frame)"] = _per_call_us(
            lambda: wdec.feed(call_frame), n
        )
        out["worker: _bound (per-call Bound)"] = _per_call_us(lambda: wk._bound(msg), n)
        out["worker: Pipeline.invoke (validate, watchdog, call, normalize)"] = _per_call_us(
            lambda: wk.pipeline.invoke(b, msg["args"], None, None), n
        )
        out["worker: _send_result (to_dict, encode, write to /dev/null)"] = _per_call_us(
            lambda: wk._send_result(1, result), n
        )
        out["worker: decode + _bound + _run_sync (the reading thread's path)"] = _per_call_us(
            inline, n
        )
    finally:
        wk.pool.shutdown(wait=False)
        wk.loop.close()
        for fd in (rfd, wfd, null):
            os.close(fd)
    return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    budget: float
    rounds: int
    calls: int
    mcp_calls: int
    warm: int
    gathers: int
    mcp_gathers: int
    cold_rounds: int
    codecs: bool
    breakdown: bool
    mcp: bool


async def run(plan: Plan, tmp: Path, t_start: float) -> dict[str, Any]:
    res: dict[str, Any] = {"notes": []}
    notes: list[str] = res["notes"]
    plugins = make_plugin(tmp)
    warm_available = has_warm_start()
    default_warm = bool(getattr(WorkerConfig(), "warm_start", False))
    hosts: dict[str, PluginHost] = {}
    peers: list[PipePeer] = []
    mcp: McpPeer | None = None
    adopting = contextlib.AsyncExitStack()
    try:
        # The primary host: ``async with`` on this loop, the default WorkerConfig. Entered before
        # any other use, so the host adopts this loop instead of starting a loop thread.
        adopted = await adopting.enter_async_context(new_host(plugins, None))
        loop = asyncio.get_running_loop()
        if adopted._loop is not loop:
            notes.append("async with PluginHost(...) did not adopt the running loop")
        check(await adopted.ainvoke("echo", "echo", ARGS))  # lazy start (and the zygote's boot)
        # Hosts with a background loop thread (no ``async with``): the default config serves the
        # secondary round trips; cold and warm serve start-up and memory.
        hosts["cold"] = new_host(plugins, False if warm_available else None)
        if warm_available:
            hosts["warm"] = new_host(plugins, True)
        main_kind = "warm" if warm_available and default_warm else "cold"
        host = hosts[main_kind]
        res["worker_config"] = {"warm_start_available": warm_available, "default": main_kind}
        for h in hosts.values():
            check(h.invoke("echo", "echo", ARGS))  # lazy start (and the zygote's boot)
        call_msg, call_bytes, result_bytes = capture_frames(host)
        floor_msg = dict(call_msg)
        res["frames"] = {
            "call_bytes": call_bytes,
            "result_bytes": result_bytes,
            "floor_bytes": 4 + len(_compact(floor_msg).encode()),
        }

        probe_timeout = 0.5 if plan.quick else 1.0
        probe = foreign_loop_probe(host, probe_timeout)
        res["app_loop_probe"] = probe
        if not probe["ok"]:
            notes.append(
                "await host.ainvoke from an application's loop is BROKEN for worker tools "
                f"(3 calls took {probe.get('ms')} ms with timeout={probe_timeout:g}s: answers arrive at "
                "the deadline); measured with a manual hop to the host's loop instead"
            )

        floor = PipePeer("sync")
        peers.append(floor)
        floor_pids = [floor.pid]

        async def floor_run(n: int, out: list[int]) -> None:
            floor.block(floor_msg, n, out)

        variants = [
            Variant("floor", "floor: JSON echo over os.pipe (sync)", floor_run, plan.calls),
            *plughub_variants(adopted, host, plan.calls, probe["ok"]),
        ]
        if plan.breakdown:
            shapes = {
                "floor_async": ("sync", True, "floor, asyncio parent (like the host)"),
                "floor_lf": ("lf", False, "floor, leader/follower child (like the worker)"),
                "floor_shape": ("lf", True, "floor, asyncio parent + l/f child (the shape)"),
                "floor_pool": ("pool", False, "old shape: child reader thread -> pool thread"),
            }
            for name, (child, is_async, label) in shapes.items():
                peer = PipePeer(child)
                peers.append(peer)
                floor_pids.append(peer.pid)

                def runner(p: PipePeer, a: bool) -> Callable[[int, list[int]], Awaitable[None]]:
                    async def go(n: int, out: list[int]) -> None:
                        if a:
                            await p.ablock(floor_msg, n, out)
                        else:
                            p.block(floor_msg, n, out)

                    return go

                if is_async:
                    await peer.connect()
                variants.append(
                    Variant(name, label, runner(peer, is_async), plan.calls, "breakdown")
                )

        if plan.mcp:
            try:
                mcp = McpPeer(tmp)
                await mcp.start()
            except Exception as e:  # the SDK is optional: report and go on
                notes.append(f"MCP comparison skipped: {type(e).__name__}: {e}")
                mcp = None
        if mcp is not None:
            variants.append(
                Variant("mcp", f"MCP SDK {mcp.version} stdio call_tool", mcp.block, plan.mcp_calls)
            )
            res["mcp"] = {"version": mcp.version, "session_start_ms": mcp.start_ms}

        def pids() -> list[int]:
            workers = [worker_pid(adopted), worker_pid(host)]
            return [os.getpid(), *workers, *floor_pids, *([mcp.pid] if mcp else [])]

        # -- round trips and throughput, interleaved ------------------------------------------
        tput: dict[str, list[float]] = {"plughub": [], "mcp": []}

        async def gather_block(g: int) -> float:
            ainvoke = adopted.ainvoke
            t0 = time.perf_counter()
            for _ in range(g):
                results = await asyncio.gather(
                    *(ainvoke("echo", "echo", ARGS) for _ in range(CONCURRENCY))
                )
            check(results[-1])
            return time.perf_counter() - t0

        modes = {"unpinned": ALL_CPUS, "pinned": frozenset({PIN_CPU})}
        rt_deadline = t_start + plan.budget * (0.55 if plan.breakdown else 0.6)
        done = 0
        for r in range(plan.rounds):
            t_round = time.perf_counter()
            order = list(modes) if r % 2 == 0 else list(reversed(modes))
            for mode in order:
                set_affinity(pids(), modes[mode])
                shift = r % len(variants)
                for v in variants[shift:] + variants[:shift]:
                    await timed_block(v, mode, plan.warm)
            set_affinity(pids(), ALL_CPUS)
            tput["plughub"].append(CONCURRENCY * plan.gathers / await gather_block(plan.gathers))
            if mcp is not None:
                tput["mcp"].append(
                    CONCURRENCY * plan.mcp_gathers / await mcp.gather(plan.mcp_gathers)
                )
            done = r + 1
            now = time.perf_counter()
            if done >= 3 and now + (now - t_round) > rt_deadline:
                break
        res["rounds"] = done
        res["roundtrip"] = analyse_rt(variants)
        res["throughput"] = {k: spread(v) for k, v in tput.items() if v}
        if tput["mcp"]:
            res["throughput"]["plughub/mcp"] = spread(
                [a / b for a, b in zip(tput["plughub"], tput["mcp"], strict=True)]
            )

        if plan.breakdown:
            res["cpu_us"] = await cpu_breakdown(
                adopted, plugins, call_msg, 300 if plan.quick else 3000
            )

        mem: dict[str, Any] = {}
        mem["floor child (python, json only)"] = memory_of(floor.pid)
        if mcp is not None:
            mem[f"MCP SDK {mcp.version} stdio server (1 tool)"] = memory_of(mcp.pid)
            res["mcp"]["teardown_ms"] = await mcp.aclose()
            mcp = None
        for p in peers:
            await p.aclose()
        peers.clear()

        # -- start-up, interleaved ------------------------------------------------------------
        starts: dict[str, list[float]] = {"pass": [], "import_sdk": [], "cold": []}
        if "warm" in hosts:
            starts["warm"] = []
        uss: dict[str, list[dict[str, int]]] = {"cold": [], "warm": []}
        cold_deadline = t_start + plan.budget * 0.92
        jobs: dict[str, Callable[[], float]] = {
            "pass": lambda: subprocess_ms("pass"),
            "import_sdk": lambda: subprocess_ms("import plughub.sdk"),
        }

        def worker_job(kind: str) -> Callable[[], float]:
            def go() -> float:
                ms, pid = first_answer_ms(hosts[kind])
                time.sleep(0.02)  # let the answer's buffers settle
                uss[kind].append(memory_of(pid))
                return ms

            return go

        for kind in ("cold", "warm"):
            if kind in hosts:
                jobs[kind] = worker_job(kind)
        names = list(jobs)
        for r in range(plan.cold_rounds):
            t_round = time.perf_counter()
            for name in names[r % len(names) :] + names[: r % len(names)]:
                starts[name].append(jobs[name]())
            now = time.perf_counter()
            if r >= 1 and now + (now - t_round) > cold_deadline:
                break
        res["startup_ms"] = {k: spread(v) for k, v in starts.items() if v}
        res["startup_samples"] = len(starts["pass"])
        ratios: dict[str, Any] = {}
        for name, vals in starts.items():
            if name != "pass" and vals:
                ratios[f"{name}/pass"] = spread(
                    [a / b for a, b in zip(vals, starts["pass"], strict=True)]
                )
        for kind in ("cold", "warm"):
            if starts.get(kind) and starts["import_sdk"]:
                ratios[f"{kind}/import_sdk"] = spread(
                    [a / b for a, b in zip(starts[kind], starts["import_sdk"], strict=True)]
                )
        if starts.get("warm"):
            ratios["warm/cold"] = spread(
                [a / b for a, b in zip(starts["warm"], starts["cold"], strict=True)]
            )
        res["startup_ratios"] = ratios
        for kind in sorted(uss, key=lambda k: k != main_kind):  # the default worker first
            if uss[kind]:
                mem[worker_mem_label(kind, main_kind)] = {
                    k: int(statistics.median(m[k] for m in uss[kind]))
                    for k in ("rss", "pss", "uss")
                }
        res["memory"] = mem
        if plan.codecs:
            res["codecs"] = bench_codecs(plan.quick)
        return res
    finally:
        if mcp is not None:
            with contextlib.suppress(Exception):
                await mcp.aclose()
        for p in peers:
            with contextlib.suppress(Exception):
                await p.aclose()
        for h in hosts.values():
            h.close()
        await adopting.aclose()


def analyse_rt(variants: list[Variant]) -> dict[str, Any]:
    by = {v.name: v for v in variants}
    out: dict[str, Any] = {}
    for mode in ("unpinned", "pinned"):
        floor_rounds = by["floor"].rounds.get(mode, [])
        rows: dict[str, Any] = {}
        for v in variants:
            rounds = v.rounds.get(mode, [])
            if not rounds:
                continue
            pooled = [x for r in rounds for x in r]
            row: dict[str, Any] = {
                "label": v.label,
                "group": v.group,
                "calls": len(pooled),
                "p50_us": statistics.median(statistics.median(r) for r in rounds) / 1e3,
                "p99_us": pct(pooled, 0.99) / 1e3,
                "min_us": min(pooled) / 1e3,
            }
            pairs = list(zip(rounds, floor_rounds, strict=True))
            row["x_floor_p50"] = spread(
                [statistics.median(a) / statistics.median(b) for a, b in pairs]
            )
            row["x_floor_p99"] = pct(pooled, 0.99) / pct([x for r in floor_rounds for x in r], 0.99)
            rows[v.name] = row
        if "mcp" in by and by["mcp"].rounds.get(mode):
            for name in ("ainvoke_adopted", "ainvoke_app", "invoke"):
                pairs = list(zip(by["mcp"].rounds[mode], by[name].rounds[mode], strict=True))
                rows[name]["mcp_over"] = spread(
                    [statistics.median(a) / statistics.median(b) for a, b in pairs]
                )
        out[mode] = rows
    return out


def attribution(res: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The round trip split into steps, each the difference of two measured p50s."""
    steps = {
        "floor: blocking parent, one-thread child": ("floor", None),
        "+ asyncio parent instead of a blocking one": ("floor_async", "floor"),
        "+ leader/follower child instead of one thread": ("floor_lf", "floor"),
        "= both: plughub's shape without its code": ("floor_shape", None),
        "+ plughub's code, both sides (ainvoke adopted - shape)": (
            "ainvoke_adopted",
            "floor_shape",
        ),
        "= plughub await host.ainvoke, adopted loop": ("ainvoke_adopted", None),
        "2nd: + hop app loop -> host loop thread -> back": ("ainvoke_app", "ainvoke_adopted"),
        "2nd: + hop sync caller -> host loop thread -> back": ("invoke", "ainvoke_adopted"),
        "old shape, reference: + reader thread -> pool thread hop": ("floor_pool", "floor"),
    }
    out: dict[str, dict[str, float]] = {}
    for label, (a, b) in steps.items():
        vals = {}
        for mode in ("unpinned", "pinned"):
            rows = res["roundtrip"][mode]
            if a not in rows or (b is not None and b not in rows):
                break
            vals[mode] = rows[a]["p50_us"] - (rows[b]["p50_us"] if b else 0.0)
        else:
            out[label] = vals
    return out


def goals(res: dict[str, Any]) -> dict[str, Any]:
    rt = res["roundtrip"]
    g: dict[str, Any] = {}
    v = rt["pinned"]["ainvoke_adopted"]["x_floor_p50"]["median"]
    g["rt"] = {
        "metric": "plughub ainvoke (async with: adopted loop) p50 / floor p50, both pinned",
        "target": f"<= {GOAL_RT}x",
        "value": v,
        "unpinned": rt["unpinned"]["ainvoke_adopted"]["x_floor_p50"]["median"],
        "pass": v <= GOAL_RT,
    }
    if "mcp_over" in rt["unpinned"]["ainvoke_adopted"]:
        v = rt["unpinned"]["ainvoke_adopted"]["mcp_over"]["median"]
        g["mcp"] = {
            "metric": "MCP SDK p50 / plughub ainvoke (async with: adopted loop) p50, default "
            "scheduling",
            "target": f">= {GOAL_MCP}x",
            "value": v,
            "pinned": rt["pinned"]["ainvoke_adopted"]["mcp_over"]["median"],
            "pass": v >= GOAL_MCP,
        }
    ratio = res["startup_ratios"].get("warm/cold")
    g["warm"] = {
        "metric": "warm start / cold start (spawn to first answer)",
        "target": f"<= {GOAL_WARM:.0%}",
        "value": ratio["median"] if ratio else None,
        "pass": ratio["median"] <= GOAL_WARM if ratio else None,
    }
    kind = res["worker_config"]["default"]
    m = res["memory"].get(worker_mem_label(kind, kind))
    g["uss"] = {
        "metric": f"idle USS of the default ({kind}) worker after one call, for a plugin with "
        "no requirements of its own",
        "worker": kind,
        "target": f"<= {GOAL_USS / MIB:g} MiB",
        "value": m["uss"] / MIB if m else None,
        "pass": m["uss"] <= GOAL_USS if m else None,
    }
    return g


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _us(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def print_report(res: dict[str, Any]) -> None:
    mcp_v = res.get("mcp", {}).get("version", "-")
    print(
        f"plughub worker benchmark  (python {res['python']}, plughub {res['plughub']}, "
        f"mcp {mcp_v}, {res['machine']}, {res['cpus']} CPUs, pinned runs use CPU {PIN_CPU}, "
        f"load avg {res['loadavg_start']:.2f} -> {res['loadavg_end']:.2f})"
    )
    fr = res["frames"]
    wc = res["worker_config"]
    print(
        f"frames: plughub call {fr['call_bytes']} B, result {fr['result_bytes']} B; floor "
        f"{fr['floor_bytes']} B each way (stdlib json, same 4-byte framing). Round trips use the "
        f"default WorkerConfig ({wc['default']} worker)."
    )
    print(
        f"{res['rounds']} interleaved rounds. us per call: p50 = median of round medians, p99 over "
        "all calls; x floor = paired per round, same scheduling, median over rounds"
    )
    print()
    rt = res["roundtrip"]
    names = list(rt["unpinned"])
    width = max(len(rt["unpinned"][n]["label"]) for n in names) + 4
    print(
        f"{'round trip, trivial tool call':<{width}} {'unpinned (default scheduling)':^34}  "
        f"{'pinned (all threads on CPU ' + str(PIN_CPU) + ')':^34}"
    )
    print(
        f"{'':<{width}} {'p50':>7} {'p99':>7} {'x floor':>8} {'x p99':>7}   "
        f"{'p50':>7} {'p99':>7} {'x floor':>8} {'x p99':>7}"
    )
    headings = {
        "secondary": "  secondary: PluginHost(...) without async with, its loop on a thread:",
        "breakdown": "  breakdown (what-if floors):",
    }
    for group in ("main", "secondary", "breakdown"):
        shown = [n for n in names if rt["unpinned"][n]["group"] == group]
        if group in headings and shown:
            print(headings[group])
        indent = "    " if group != "main" else ""
        for n in shown:
            cells = []
            for mode in ("unpinned", "pinned"):
                row = rt[mode].get(n)
                if row is None:
                    cells.append(f"{'-':>33}")
                    continue
                cells.append(
                    f"{_us(row['p50_us']):>7} {_us(row['p99_us']):>7} "
                    f"{row['x_floor_p50']['median']:>7.2f}x {row['x_floor_p99']:>6.2f}x"
                )
            label = indent + rt["unpinned"][n]["label"]
            print(f"{label:<{width}} {cells[0]}   {cells[1]}")
    print()
    for note in res["notes"]:
        print(f"NOTE: {note}")
    probe = res["app_loop_probe"]
    print(
        f"ainvoke from a loop other than the host's (background host loop), probe (3 calls): "
        f"{probe.get('ms')} ms: {'ok' if probe['ok'] else 'BROKEN'}"
    )
    if "mcp" in res:
        m = res["mcp"]
        order = ("ainvoke_adopted", "ainvoke_app", "invoke")
        u = " / ".join(f"{rt['unpinned'][k]['mcp_over']['median']:.1f}x" for k in order)
        pn = " / ".join(f"{rt['pinned'][k]['mcp_over']['median']:.1f}x" for k in order)
        print(
            f"MCP / plughub p50, ainvoke adopted loop / ainvoke app loop -> host loop thread / "
            f"sync invoke: unpinned {u}; pinned {pn}"
        )
    t = res["throughput"]
    line = (
        f"throughput, {CONCURRENCY} concurrent ainvoke on one worker (adopted loop, unpinned): plughub "
        f"{t['plughub']['median']:,.0f} calls/s ({t['plughub']['min']:,.0f}..{t['plughub']['max']:,.0f})"
    )
    if "mcp" in t:
        line += (
            f"; MCP {t['mcp']['median']:,.0f} calls/s; plughub/MCP "
            f"{t['plughub/mcp']['median']:.1f}x"
        )
    print(line)
    print()

    s, sr = res["startup_ms"], res["startup_ratios"]
    n = res["startup_samples"]
    print(
        f"{'start-up (median of ' + str(n) + ', unpinned)':<44} {'ms':>8} {'x pass':>8} "
        f"{'x import sdk':>13}"
    )
    labels = {
        "pass": "python -c pass",
        "import_sdk": 'python -c "import plughub.sdk"',
        "cold": "cold worker: spawn to first answer",
        "warm": "warm worker (zygote fork) to first answer",
    }
    for k, label in labels.items():
        if k not in s:
            if k == "warm":
                print(f"{label:<44} warm start: not available")
            continue
        ratio = sr.get(f"{k}/pass", {}).get("median", 1.0)
        sdk = sr.get(f"{k}/import_sdk")
        sdk_cell = f"{sdk['median']:>12.2f}x" if sdk else ""
        print(f"{label:<44} {s[k]['median']:>8.1f} {ratio:>7.1f}x {sdk_cell}")
    if "mcp" in res:
        m = res["mcp"]
        print(
            f"{'MCP stdio: spawn + initialize + 1st call':<44} {m['session_start_ms']:>8.1f} "
            f"{m['session_start_ms'] / s['pass']['median']:>7.1f}x   (1 sample; teardown "
            f"{m.get('teardown_ms', float('nan')):.0f} ms)"
        )
    print()
    print(f"{'idle memory after one call (MiB)':<44} {'RSS':>7} {'PSS':>7} {'USS':>7}")
    for label, m in res["memory"].items():
        print(f"{label:<44} {m['rss'] / MIB:>7.2f} {m['pss'] / MIB:>7.2f} {m['uss'] / MIB:>7.2f}")
    default = res["worker_config"]["default"]
    if not res["worker_config"]["warm_start_available"]:
        print(f"{'plughub worker, warm':<44} warm start: not available")
    elif default == "warm" and worker_mem_label("cold", default) in res["memory"]:
        print(
            "  informational: the cold path, used for plugins with their own environment; a "
            "plugin with no\n  extra requirements is forked from the zygote (warm) by default"
        )
    print()
    if "codecs" in res:
        c = res["codecs"]
        timings = ", ".join(f"{k} {v:.2f} us" for k, v in c["us"].items())
        rats = ", ".join(f"{k} {v['median']:.1f}x" for k, v in c["ratios"].items())
        sizes = ", ".join(f"{k} {v} B" for k, v in c["wire_bytes"].items())
        print(f"codecs, encode+decode of a 226-byte tools/call: {timings}")
        print(f"  ratios {rats}; wire size {sizes}")
        if c["msgpack"] is None:
            print("  msgpack: not installed")
        print()
    if "cpu_us" in res:
        print("CPU cost of plughub's code paths, in this process, no I/O (us per call, unpinned):")
        for k, v in res["cpu_us"].items():
            print(f"  {k:<72} {v:>7.2f}")
        print()
    if "attribution" in res:
        print(
            f"{'where the round trip goes (differences of p50s, us)':<60} {'unpinned':>9} {'pinned':>8}"
        )
        for label, vals in res["attribution"].items():
            print(f"  {label:<58} {vals['unpinned']:>9.1f} {vals['pinned']:>8.1f}")
        print()
    g = res["goals"]
    r = g["rt"]
    print(
        f"GOAL plughub RT / floor (ainvoke, adopted loop; pinned, p50) = {r['value']:.2f}x  "
        f"(goal {r['target']}; unpinned {r['unpinned']:.2f}x): {_verdict(r['pass'])}"
    )
    if "mcp" in g:
        r = g["mcp"]
        print(
            f"GOAL MCP / plughub (ainvoke, adopted loop; unpinned, p50) = {r['value']:.1f}x  "
            f"(goal {r['target']}; pinned {r['pinned']:.1f}x): {_verdict(r['pass'])}"
        )
    r = g["warm"]
    if r["value"] is None:
        print(f"GOAL warm / cold start = n/a  (goal {r['target']}): warm start: not available")
    else:
        print(
            f"GOAL warm / cold start = {r['value']:.0%}  (goal {r['target']}): {_verdict(r['pass'])}"
        )
    r = g["uss"]
    if r["value"] is not None:
        print(
            f"GOAL idle USS, default ({r['worker']}) worker = {r['value']:.2f} MiB  "
            f"(goal {r['target']}): {_verdict(r['pass'])}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few, short rounds (smoke test, < 20 s)")
    ap.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    ap.add_argument("--rounds", type=int, default=None, help="round-trip rounds (default 15)")
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds (default 60, quick 20); no new round starts if it would end later",
    )
    ap.add_argument("--codecs", action="store_true", help="also compare json/orjson/msgpack")
    ap.add_argument("--breakdown", action="store_true", help="also show where the time goes")
    ap.add_argument("--no-mcp", action="store_true", help="skip the MCP SDK comparison")
    opts = ap.parse_args(argv)
    q = opts.quick
    plan = Plan(
        quick=q,
        budget=opts.budget or (20.0 if q else 60.0),
        rounds=opts.rounds or (3 if q else 15),
        calls=60 if q else 400,
        mcp_calls=20 if q else 120,
        warm=10 if q else 40,
        gathers=3 if q else 15,
        mcp_gathers=1 if q else 3,
        cold_rounds=2 if q else 9,
        codecs=opts.codecs,
        breakdown=opts.breakdown,
        mcp=not opts.no_mcp,
    )
    t_start = time.perf_counter()
    load0 = _loadavg()
    with tempfile.TemporaryDirectory(prefix="plughub-bench-worker-") as d:
        res = asyncio.run(run(plan, Path(d), t_start))
    res.update(
        python=platform.python_version(),
        plughub=plughub.__version__,
        machine=platform.machine(),
        cpus=os.cpu_count(),
        pin_cpu=PIN_CPU,
        loadavg_start=load0,
        loadavg_end=_loadavg(),
        quick=q,
        seconds=round(time.perf_counter() - t_start, 1),
    )
    res["goals"] = goals(res)
    if plan.breakdown:
        res["attribution"] = attribution(res)
    if opts.json:
        json.dump(res, sys.stdout, indent=2, default=str)
        print()
    else:
        print_report(res)
        print(f"({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
