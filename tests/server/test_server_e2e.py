"""``plughub serve`` as a real uvicorn process on 127.0.0.1: HTTP, SSE, disconnects, shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from _daemon import API_KEYS, KEYS, write_plugins

BOOT_TIMEOUT = 30.0
READY_RE = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
AUTH = {"Authorization": f"Bearer {KEYS['member']}"}


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def log(self) -> str:
        return "".join(self.lines)


def start_server(root: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    plugins = write_plugins(root / "plugins")
    command = [
        sys.executable,
        "-c",
        "from plughub.cli import main; main()",
        "--no-entry-points",
        "serve",
        "--plugins-dir",
        str(plugins),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *extra,
    ]
    environment = {
        **os.environ,
        "PLUGHUB_API_KEYS": API_KEYS,
        "PLUGHUB_DENY_PLUGINS": "acme/blocked",
        "PYTHONUNBUFFERED": "1",
        "PLUGHUB_LOG_LEVEL": "info",  # the test reads uvicorn's "running on" line
        **(env or {}),
    }
    proc = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    server = Server(proc)
    found = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            server.lines.append(line)
            m = READY_RE.search(line)
            if m and not found.is_set():
                server.url = f"http://127.0.0.1:{m.group(1)}"
                found.set()

    server.reader = threading.Thread(target=drain, daemon=True)
    server.reader.start()
    if not found.wait(BOOT_TIMEOUT):
        stop_server(server)
        raise AssertionError(f"the server did not start:\n{server.log()}")
    return server


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    if server.reader is not None:
        server.reader.join(timeout=5)
    if server.proc.stderr is not None:
        server.proc.stderr.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("live"))
    try:
        yield server
    finally:
        stop_server(server)


def test_end_to_end_over_http(live: Server) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["status"] == "ready"
        assert c.get("/v1/plugins").status_code == 401
        r = c.post(
            "/v1/plugins/acme/greet/tools/hello/invoke",
            json={"arguments": {"name": "Live"}},
            headers=AUTH,
        )
        assert r.status_code == 200
        assert r.json()["content"] == [{"type": "text", "text": "Hello Live!"}]
        r = c.post(
            "/api/plugins/invoke",
            json={"plugin": "NoteTaker", "context": {"text": "x"}},
            headers=AUTH,
        )
        assert r.json() == {"note": "x", "message": "Note saved"}
        r = c.post(
            "/v1/plugins/acme/greet/tools/hello/invoke",
            content=b"x" * (2 << 20),
            headers={**AUTH, "content-type": "application/json"},
        )
        assert r.status_code == 413
        tools = c.get("/v1/tools", params={"format": "mcp"}, headers=AUTH).json()["tools"]
        assert any(t["name"] == "greet__hello" for t in tools)
        metrics = c.get("/metrics").text
        assert 'plughub_tool_calls_total{outcome="ok",plugin="acme/greet"}' in metrics
        assert c.get("/openapi.json").json()["info"]["title"] == "plughub"


def test_sse_streams_events_as_they_happen(live: Server) -> None:
    with (
        httpx.Client(base_url=live.url, timeout=10) as c,
        c.stream(
            "POST",
            "/v1/plugins/acme/greet/tools/count/invoke-stream",
            json={"arguments": {"n": 3}},
            headers={**AUTH, "accept": "text/event-stream"},
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["event"] for e in events][-1] == "result"
    assert [e["text"] for e in events if e["event"] == "content"] == ["c0", "c1", "c2"]

    body = {
        "user_id": "u",
        "data": {"provider": "greet", "tool": "hello", "tool_parameters": {"name": "Dify"}},
    }
    with httpx.Client(base_url=live.url, timeout=10) as c:
        r = c.post(
            "/plugin/ws-1/dispatch/tool/invoke",
            json=body,
            headers={"X-Api-Key": KEYS["dify"], "X-Plugin-ID": "acme/greet"},
        )
    assert r.text == (
        'data: {"code":0,"message":"success","data":{"type":"text",'
        '"message":{"text":"Hello Dify!"},"meta":null}}\n\n'
    )


def test_a_client_that_disconnects_cancels_the_call(live: Server, tmp_path: Path) -> None:
    marker = tmp_path / "watch.txt"
    url = "/v1/plugins/acme/greet/tools/watch/invoke-stream"
    with (
        httpx.Client(base_url=live.url, timeout=10) as c,
        c.stream(
            "POST",
            url,
            json={"arguments": {"marker": str(marker)}},
            headers={**AUTH, "accept": "application/x-ndjson"},
        ) as r,
    ):
        lines = r.iter_lines()  # kept: dropping the iterator would close the connection
        first = json.loads(next(lines))
        assert first == {"event": "content", "type": "text", "text": "started"}
        time.sleep(0.2)
        assert not marker.exists()  # still running while the client listens
    # leaving the block closed the connection mid-stream
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "cancelled"
    with httpx.Client(base_url=live.url, timeout=10) as c:
        deadline = time.monotonic() + 5
        while c.get("/readyz").json()["calls_in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/readyz").json()["calls_in_flight"] == 0
        metrics = c.get("/metrics").text
    assert 'plughub_tool_calls_total{outcome="cancelled",plugin="acme/greet"} 1.0' in metrics


def test_sigterm_drains_calls_in_flight(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"PLUGHUB_GRACEFUL_TIMEOUT": "10"})
    marker = tmp_path / "slow.txt"
    results: list[httpx.Response] = []

    def call() -> None:
        with httpx.Client(base_url=server.url, timeout=20) as c:
            results.append(
                c.post(
                    "/v1/plugins/acme/greet/tools/slow/invoke",
                    json={"arguments": {"seconds": 1.5, "marker": str(marker)}},
                    headers=AUTH,
                )
            )

    try:
        caller = threading.Thread(target=call)
        caller.start()
        with httpx.Client(base_url=server.url, timeout=5) as c:
            deadline = time.monotonic() + 10
            while c.get("/readyz").json()["calls_in_flight"] == 0:
                assert time.monotonic() < deadline, "the call never started"
                time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        caller.join(timeout=20)
        # uvicorn re-raises the signal once it has shut down gracefully
        assert server.proc.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        stop_server(server)
    assert len(results) == 1, server.log()
    assert results[0].status_code == 200
    assert results[0].json()["content"] == [{"type": "text", "text": "slept 1.5"}]
    assert marker.read_text() == "done"
    log = server.log()
    assert "Shutting down" in log
    assert "Cancel" not in log  # nothing had to be cut short
