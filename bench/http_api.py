"""Invoking a trivial in-process tool over HTTP through the daemon, against a bare FastAPI
endpoint that validates the same body with pydantic and returns it, served the same way.

Both servers run as their own process under uvicorn (one worker, uvloop + httptools when
installed: what ``uvicorn[standard]`` gives), pinned to CPU 0; the load generator runs on CPU 1
(when the machine has two CPUs). Rounds alternate bare / plughub so drift hits both alike.

  plughub   ``plughub serve`` on its embedded defaults (a SQLite store in a fresh home, the
            first-start admin key, audit rows written in the background, the in-memory rate
            limiter charging tenant + key + plugin on every call with a rate too high to refuse)
            with one plugin folder: ``bench/echo``, ``@tool def echo(text: str) -> str``;
            ``POST /v1/plugins/bench/echo/tools/echo/invoke`` with ``{"arguments": {"text": ...}}``
  bare      ``POST /invoke`` with the same body: a pydantic model validates it; the answer has
            the same shape as plughub's result

Load: ``wrk`` (Debian package ``wrk``) with 1 and 32 connections, ``--latency`` for p50/p99;
without wrk, a Python load generator on raw keep-alive sockets (slower: it measures less of the
servers' ceiling). Figures: requests/s, p50, p99 per server and concurrency, and the ratio
plughub/bare of requests/s (median over rounds). Goal: >= 0.6x at both concurrencies.

(Not ``bench/http.py``: scripts run from ``bench/`` would import it as the standard library's
``http`` package.)

Usage: ``python bench/http_api.py [--quick] [--json] [--rounds N] [--duration S]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

GOAL = 0.6
TEXT = "hello from the benchmark"
BODY = json.dumps({"arguments": {"text": TEXT}})

ECHO_MANIFEST = """\
id: bench/echo
version: 1.0.0
description: Echo for the HTTP benchmark.
entrypoint: main
runtime: inprocess
"""
ECHO_CODE = '''\
from plughub.sdk import tool


@tool
def echo(text: str) -> str:
    """Return the text."""
    return text
'''
BARE_APP = '''\
"""The baseline: FastAPI + pydantic validating the same body and answering a result."""
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel


class Args(BaseModel):
    text: str


class Body(BaseModel):
    arguments: Args
    timeout: float | None = None


app = FastAPI()


@app.post("/invoke")
async def invoke(body: Body) -> dict[str, Any]:
    return {
        "is_error": False,
        "content": [{"type": "text", "text": body.arguments.text}],
        "structured": body.arguments.text,
    }
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready after {timeout}s")


def pinned(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu)]
    return []


class Server:
    """A server process, its URL path, and the headers a request needs."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, path: str):
        self.name, self.port, self.path = name, port, path
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        self.proc = subprocess.Popen(
            [*pinned(0), *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._err: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)
            del self._err[:-50]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def log_tail(self) -> str:
        return b"".join(self._err[-20:]).decode(errors="replace")


def start_servers(tmp: Path) -> tuple[Server, Server]:
    plugins = tmp / "plugins" / "echo"
    plugins.mkdir(parents=True)
    (plugins / "plugin.yaml").write_text(ECHO_MANIFEST)
    (plugins / "main.py").write_text(ECHO_CODE)
    (tmp / "bare_app.py").write_text(BARE_APP)
    home = tmp / "home"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHUB_")}
    env = {
        **base_env,
        "PLUGHUB_HOME": str(home),
        "PLUGHUB_LOG_LEVEL": "warning",
        "PLUGHUB_ENTRY_POINTS": "false",
        "PLUGHUB_TENANT_RATE": "1000000000/minute",
    }
    port = free_port()
    exe = str(Path(sys.executable).with_name("plughub"))
    hub = Server(
        "plughub",
        [exe, "serve", "--port", str(port), "--plugins-dir", str(tmp / "plugins")],
        env,
        port,
        "/v1/plugins/bench/echo/tools/echo/invoke",
    )
    bport = free_port()
    bare = Server(
        "bare",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(bport),
            "--log-level",
            "warning",
            "--no-access-log",
            "--app-dir",
            str(tmp),
        ],
        base_env,
        bport,
        "/invoke",
    )
    try:
        wait_ready(hub.port, "/readyz", hub.proc)
        wait_ready(bare.port, "/docs", bare.proc)
    except RuntimeError:
        print(hub.log_tail(), bare.log_tail(), file=sys.stderr)
        hub.stop()
        bare.stop()
        raise
    hub.headers["Authorization"] = "Bearer " + (home / "admin.key").read_text().strip()
    return hub, bare


def check_answer(server: Server) -> None:
    """One request with a real HTTP client: the answer must be the tool's result."""
    import httpx

    r = httpx.post(
        f"http://127.0.0.1:{server.port}{server.path}",
        content=BODY,
        headers=server.headers,
        timeout=10,
    )
    if r.status_code != 200 or r.json().get("content", [{}])[0].get("text") != TEXT:
        raise SystemExit(f"{server.name} answered {r.status_code}: {r.text[:300]}")


# -- load ----------------------------------------------------------------------------------------

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = {body}
{headers}
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _to_us(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not m:
        raise ValueError(value)
    factor = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}[m.group(2)]
    return float(m.group(1)) * factor


def run_wrk(server: Server, conns: int, duration: float, tmp: Path) -> dict[str, float]:
    script = tmp / f"{server.name}.lua"
    headers = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in server.headers.items()
    )
    script.write_text(_WRK_SCRIPT.format(body=_lua_string(BODY), headers=headers))
    out = subprocess.run(
        [
            *pinned(1),
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{server.port}{server.path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"{server.name}: errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _to_us(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _to_us(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_us": p50, "p99_us": p99}


def run_python_load(server: Server, conns: int, duration: float) -> dict[str, float]:
    """Keep-alive HTTP/1.1 clients on raw sockets, one thread each (when wrk is missing)."""
    head = f"POST {server.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(BODY)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    request = (head + "\r\n" + BODY).encode()
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def client() -> None:
        mine: list[float] = []
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                s.sendall(request)
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        m = re.search(rb"content-length: (\d+)", buf[:end].lower())
                        total = end + 4 + int(m.group(1)) if m else end + 4
                        if len(buf) >= total:
                            if not buf.startswith(b"HTTP/1.1 200"):
                                raise SystemExit(f"{server.name}: {buf[:200]!r}")
                            buf = buf[total:]
                            break
                    buf += s.recv(65536)
                mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(conns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    args = ap.parse_args()
    rounds, duration = (2, 2.0) if args.quick else (args.rounds, args.duration)
    use_wrk = shutil.which("wrk") is not None
    results: dict[str, dict[int, list[dict[str, float]]]] = {
        "plughub": {1: [], 32: []},
        "bare": {1: [], 32: []},
    }
    with tempfile.TemporaryDirectory(prefix="plughub-bench-http-") as d:
        tmp = Path(d)
        hub, bare = start_servers(tmp)
        try:
            for server in (hub, bare):
                check_answer(server)
                # warm-up: imports, first-call caches, the key cache
                if use_wrk:
                    run_wrk(server, 4, 1, tmp)
                else:
                    run_python_load(server, 4, 1)
            for r in range(rounds):
                order = (bare, hub) if r % 2 == 0 else (hub, bare)
                for conns in (1, 32):
                    for server in order:
                        if use_wrk:
                            fig = run_wrk(server, conns, duration, tmp)
                        else:
                            fig = run_python_load(server, conns, duration)
                        results[server.name][conns].append(fig)
        finally:
            hub.stop()
            bare.stop()

    summary: dict[str, Any] = {
        "python": platform.python_version(),
        "load": "wrk" if use_wrk else "python sockets",
        "rounds": rounds,
        "duration_s": duration,
        "goal": GOAL,
    }
    lines = [
        f"HTTP invoke of a trivial in-process tool (Python {summary['python']}, "
        f"load: {summary['load']}, {rounds} rounds x {duration:g} s, servers on CPU 0)",
    ]
    ok = True
    for conns in (1, 32):
        row: dict[str, Any] = {}
        for name in ("bare", "plughub"):
            figs = results[name][conns]
            row[name] = {
                k: statistics.median(f[k] for f in figs) for k in ("rps", "p50_us", "p99_us")
            }
        ratios = [
            h["rps"] / b["rps"]
            for h, b in zip(results["plughub"][conns], results["bare"][conns], strict=True)
        ]
        row["ratio"] = statistics.median(ratios)
        summary[f"c{conns}"] = row
        passed = row["ratio"] >= GOAL
        ok = ok and passed
        for name in ("bare", "plughub"):
            f = row[name]
            lines.append(
                f"  c={conns:<3} {name:8} {f['rps']:9.0f} req/s   p50 {f['p50_us'] / 1000:6.2f} ms"
                f"   p99 {f['p99_us'] / 1000:6.2f} ms"
            )
        lines.append(
            f"  c={conns:<3} plughub/bare throughput {row['ratio']:.2f}x "
            f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)}; goal >= {GOAL}x: "
            f"{'PASS' if passed else 'FAIL'})"
        )
    summary["pass"] = ok
    print(json.dumps(summary, indent=2) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
