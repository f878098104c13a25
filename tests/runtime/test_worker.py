"""Worker runtime faults, through the public host API: each is contained and explained."""

from __future__ import annotations

import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plughub import PluginHost
from plughub.runtime.worker import WorkerConfig

BAD = '''
import ctypes, os, signal, sys, time
from plughub.sdk import Context, tool

@tool
def echo(text: str) -> str:
    return text

@tool
def pid() -> int:
    return os.getpid()

@tool
def exit_now() -> str:
    os._exit(7)

@tool
def segfault() -> str:
    ctypes.string_at(0)
    return "unreachable"

@tool
def spin() -> str:
    while True:
        pass

@tool
def block() -> str:
    time.sleep(3600)  # one C call: only a kill stops it
    return "unreachable"

@tool
def hog(mib: int = 4096) -> int:
    chunks = [bytearray(1 << 20) for _ in range(mib)]
    return len(chunks)

@tool
def noisy() -> str:
    print("\\x00\\xff garbage on stdout")
    sys.stdout.write("more")
    print("to stderr", file=sys.stderr)
    return "fine"

@tool
def big(mib: int = 100) -> str:
    return "x" * (mib << 20)

@tool
def close_pipes() -> str:
    os.closerange(3, 1024)
    time.sleep(30)
    return "unreachable"

@tool
def bad_frames() -> str:
    out = int(sys.argv[2])
    os.write(out, b"\\x00\\x00\\x00\\x05{nope")
    time.sleep(30)
    return "unreachable"

@tool
def unserializable():
    return {"handle": object()}

@tool
def connect(port: int) -> str:
    socket_mod = __import__("socket")
    s = socket_mod.create_connection(("127.0.0.1", port), timeout=2)
    s.close()
    return "connected"

@tool
def read(path: str) -> str:
    with open(path) as f:
        return f.read()


@tool
def forks(n: int = 500) -> int:
    made = 0
    try:
        for _ in range(n):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            made += 1
    except OSError:
        pass
    return made

@tool
def remember(ctx: Context, key: str, value: str) -> str | None:
    old = ctx.storage.get(key)
    ctx.storage.set(key, value)
    return old
'''

MANIFEST = """
id: acme/{name}
version: 1.0.0
entrypoint: main
runtime: worker
limits: {{timeout: 5, memory: 512MiB, processes: 40}}
{extra}
"""


def write_plugin(root: Path, name: str, code: str, extra: str = "") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "plugin.yaml").write_text(MANIFEST.format(name=name, extra=extra))
    (folder / "main.py").write_text(textwrap.dedent(code))
    return folder


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginHost]:
    root = tmp_path_factory.mktemp("workers")
    plugins = root / "plugins"
    write_plugin(plugins, "bad", BAD)
    write_plugin(plugins, "good", "from plughub.sdk import tool\n@tool\ndef ping() -> str:\n    return 'pong'\n")
    (plugins / "inproc.py").write_text("from plughub.sdk import tool\n@tool\ndef hi() -> str:\n    return 'hi'\n")
    config = WorkerConfig(cancel_grace=0.5, backoff_base=0.01, circuit_threshold=50)
    h = PluginHost([plugins], entry_points=False, data_dir=root / "data", workers=config)
    yield h
    h.close()


def others_still_serve(host: PluginHost) -> None:
    assert host.invoke("good", "ping").text == "pong"
    assert host.invoke("inproc", "hi").text == "hi"


def test_tools_run_in_another_process(host: PluginHost) -> None:
    assert host.invoke("bad", "echo", {"text": "x"}).text == "x"
    assert host.invoke("bad", "pid").structured != os.getpid()
    info = host.plugin("bad")
    assert info.runtime == "worker" and info.worker is not None and info.worker["state"] == "running"
    r = host.invoke("bad", "echo", {"text": 5})
    assert r.is_error and r.reason == "invalid_arguments"


@pytest.mark.parametrize(
    ("tool", "needle"),
    [("exit_now", "exited with code 7"), ("segfault", "SIGSEGV"), ("close_pipes", "pipe"),
     ("bad_frames", "protocol error")],
)
def test_crashes_fail_the_call_clearly_and_the_worker_restarts(host: PluginHost, tool: str, needle: str) -> None:
    before = host.invoke("bad", "pid").structured
    r = host.invoke("bad", tool)
    assert r.is_error and r.reason == "worker_crashed" and r.meta.get("retryable") is True
    assert needle in r.text
    others_still_serve(host)
    assert host.invoke("bad", "pid").structured != before  # a fresh worker answers
    assert host.plugin("bad").worker["restarts"] >= 1  # type: ignore[index]


def test_a_loop_times_out_and_a_blocked_call_costs_the_worker_its_life(host: PluginHost) -> None:
    r = host.invoke("bad", "spin", timeout=0.5)
    assert r.is_error and r.reason == "timeout"
    assert host.invoke("bad", "echo", {"text": "alive"}).text == "alive"
    before = host.invoke("bad", "pid").structured
    t0 = time.monotonic()
    r = host.invoke("bad", "block", timeout=0.5)
    assert r.reason == "timeout" and time.monotonic() - t0 < 2
    time.sleep(1.0)  # past the cancel grace: the worker was killed
    assert host.invoke("bad", "pid").structured != before
    others_still_serve(host)


def test_memory_limit_turns_runaway_allocation_into_an_error(host: PluginHost) -> None:
    r = host.invoke("bad", "hog", {"mib": 4096})
    assert r.is_error and "MemoryError" in r.text
    assert host.invoke("bad", "echo", {"text": "ok"}).text == "ok"


def test_fork_bomb_is_capped(host: PluginHost) -> None:
    info = host.plugin("bad")
    details = " ".join(info.worker["sandbox"].get("details", []))  # type: ignore[index]
    if "process cap: none" in details:
        pytest.skip(f"no process cap on this machine: {details}")
    r = host.invoke("bad", "forks", {"n": 500})
    assert not r.is_error and r.structured < 40
    others_still_serve(host)
    # The bomb used up this plugin's own quota (its children sleep on); a crash takes them all.
    assert host.invoke("bad", "exit_now").reason == "worker_crashed"
    assert host.invoke("bad", "echo", {"text": "fresh"}).text == "fresh"


def test_stdout_garbage_goes_to_logs_not_the_channel(host: PluginHost, tmp_path: Path) -> None:
    assert host.invoke("bad", "noisy").text == "fine"
    logs = list((host._data_dir / "workers").glob("*")) if host._data_dir else []  # type: ignore[attr-defined]
    log_file = host._data_dir / "logs" / "acme__bad.log"  # type: ignore[attr-defined, operator]
    deadline = time.monotonic() + 2
    while "garbage on stdout" not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = log_file.read_text()
    assert "garbage on stdout" in text and "to stderr" in text
    del logs


def test_oversized_and_unserializable_results_are_errors(host: PluginHost) -> None:
    r = host.invoke("bad", "big", {"mib": 100})
    assert r.is_error and r.reason == "output_too_large"
    r = host.invoke("bad", "unserializable")
    assert r.is_error and r.reason == "invalid_output"
    assert host.invoke("bad", "echo", {"text": "ok"}).text == "ok"


def test_no_network_without_the_permission(host: PluginHost) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        port = server.getsockname()[1]
        r = host.invoke("bad", "connect", {"port": port})
        assert r.is_error and ("unreachable" in r.text.lower() or "permission" in r.text.lower())
    finally:
        server.close()


def test_no_reading_outside_the_grants(host: PluginHost, tmp_path: Path) -> None:
    secret = tmp_path / "ssh" / "id_ed25519"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    r = host.invoke("bad", "read", {"path": str(secret)})
    assert r.is_error and "Permission" in r.text
    storage = host._data_dir / "storage.sqlite"  # type: ignore[attr-defined, operator]
    host.invoke("bad", "remember", {"key": "k", "value": "v"})
    r = host.invoke("bad", "read", {"path": str(storage)})
    assert r.is_error and "Permission" in r.text
    assert host.invoke("bad", "remember", {"key": "k", "value": "w"}).text == "v"


def test_a_worker_ignoring_sigterm_is_still_stopped(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    stubborn = "import os, signal\nfrom plughub.sdk import tool\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n@tool\ndef pid() -> int:\n    return os.getpid()\n"
    write_plugin(plugins, "stubborn", stubborn)
    host = PluginHost([plugins], entry_points=False, workers=WorkerConfig(cancel_grace=0.3))
    pid = host.invoke("stubborn", "pid").structured
    host.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker outlived host.close()")


def test_repeated_crashes_open_the_circuit(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "flaky", BAD)
    config = WorkerConfig(backoff_base=0.01, circuit_threshold=3, circuit_cooldown=60)
    with PluginHost([plugins], entry_points=False, workers=config) as host:
        reasons = [host.invoke("flaky", "exit_now").reason for _ in range(4)]
        assert reasons[:3] == ["worker_crashed"] * 3
        assert reasons[3] == "circuit_open"
        info = host.plugin("flaky")
        assert info.worker is not None and info.worker["state"] == "circuit_open"


def test_a_plugin_with_requirements_gets_its_own_environment(tmp_path: Path) -> None:
    from _wheels import make_wheel

    plugins = tmp_path / "plugins"
    code = "import tinydep\nfrom plughub.sdk import tool\n@tool\ndef dep() -> int:\n    return tinydep.X\n"
    folder = write_plugin(plugins, "needy", code, extra="python: {requirements: [tinydep>=1]}")
    make_wheel(folder / "wheels", "tinydep", code="X = 42\n")
    with PluginHost([plugins], entry_points=False, data_dir=tmp_path / "data") as host:
        assert host.invoke("needy", "dep").structured == 42
        assert list((tmp_path / "data" / "envs").glob("acme__needy/1.0.0-*"))
    # a requirement the bundled wheels cannot satisfy fails the load, naming the phase
    (folder / "plugin.yaml").write_text(MANIFEST.format(name="needy", extra="python: {requirements: [missingdep]}"))
    with PluginHost([plugins], entry_points=False, data_dir=tmp_path / "data2") as host:
        (info,) = host.load_all()
        assert info.status == "failed" and "(install)" in (info.error or "") and "missingdep" in (info.error or "")


def test_idle_workers_stop_and_hung_ones_are_killed(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    code = (
        "import os, signal, threading\nfrom plughub.sdk import tool\n"
        "@tool\ndef pid() -> int:\n    return os.getpid()\n"
        "@tool\ndef freeze_soon() -> str:\n"
        "    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGSTOP)).start()\n"
        "    return 'ok'\n"
    )
    write_plugin(plugins, "sleepy", code)
    config = WorkerConfig(idle_timeout=0.6, health_interval=0.3, health_timeout=0.3, backoff_base=0.01)
    with PluginHost([plugins], entry_points=False, workers=config) as host:
        first = host.invoke("sleepy", "pid").structured
        deadline = time.monotonic() + 5
        while host.plugin("sleepy").worker["state"] != "stopped" and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.1)
        assert host.plugin("sleepy").worker["state"] == "stopped"  # type: ignore[index]
        second = host.invoke("sleepy", "pid").structured
        assert second != first  # a new worker started on demand
        assert host.invoke("sleepy", "freeze_soon").text == "ok"
        deadline = time.monotonic() + 5
        while "health check" not in (host.plugin("sleepy").worker["last_error"] or "") and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.1)
        assert "health check" in host.plugin("sleepy").worker["last_error"]  # type: ignore[index]
        assert host.invoke("sleepy", "pid").structured not in (first, second)


def test_oversized_arguments_never_reach_the_worker(host: PluginHost) -> None:
    r = host.invoke("bad", "echo", {"text": "x" * (3 << 20)})
    assert r.is_error and r.reason == "invalid_arguments" and "bytes on the wire" in r.text
    r = host.invoke("bad", "echo", '{"text": "' + "y" * (3 << 20) + '"}')
    assert r.is_error and r.reason == "invalid_arguments"
    assert host.invoke("bad", "echo", {"text": "small"}).text == "small"


def test_memory_budget_evicts_the_least_recently_used_idle_worker(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    code = "import os\nfrom plughub.sdk import tool\n@tool\ndef pid() -> int:\n    return os.getpid()\n"
    write_plugin(plugins, "first", code)
    write_plugin(plugins, "second", code)
    with PluginHost([plugins], entry_points=False, workers=WorkerConfig(memory_budget=1)) as host:
        host.invoke("first", "pid")
        host.invoke("second", "pid")  # over budget: the idle, least recently used one goes
        assert host.plugin("first").worker["state"] == "stopped"  # type: ignore[index]
        assert host.plugin("second").worker["state"] == "running"  # type: ignore[index]
        assert isinstance(host.invoke("first", "pid").structured, int)  # and comes back on demand


STREAMS = '''
import asyncio, time
from plughub.sdk import Blob, Context, tool

@tool
async def file(ctx: Context, mib: int = 3):
    ctx.progress(0, 1, "making")
    yield "header"
    yield Blob(bytes(range(256)) * (mib << 12), "application/octet-stream", "data.bin")
    ctx.progress(1, 1, "done")

@tool
def endless():
    while True:
        yield "z" * 65536

@tool
async def nap(seconds: float = 0.3) -> str:
    await asyncio.sleep(seconds)
    return "rested"

@tool
def snooze(seconds: float = 0.3) -> str:
    time.sleep(seconds)
    return "rested"
'''


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginHost]:
    plugins = tmp_path_factory.mktemp("streams") / "plugins"
    write_plugin(plugins, "streams", STREAMS, extra="")
    (plugins / "streams" / "plugin.yaml").write_text(
        MANIFEST.format(name="streams", extra="").replace("processes: 40}", "processes: 40, max_output_bytes: 8MiB}")
    )
    with PluginHost([plugins], entry_points=False, workers=WorkerConfig(max_in_flight=4)) as h:
        yield h


def test_streamed_blobs_arrive_in_order_and_whole(streams: PluginHost) -> None:
    events = list(streams.stream("streams", "file", {"mib": 3}))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Progress", "Text", "Blob", "Progress", "ToolResult"]
    blob = events[2]
    assert blob.filename == "data.bin" and len(blob.data) == 3 << 20 and blob.data[:3] == b"\x00\x01\x02"


def test_an_endless_stream_is_cut_at_the_output_limit(streams: PluginHost) -> None:
    *_, final = list(streams.stream("streams", "endless"))
    assert final.is_error and final.reason in ("output_too_large", "tool_error") and "output limit" in final.text
    assert streams.invoke("streams", "nap", {"seconds": 0}).text == "rested"


def test_many_calls_in_flight_on_one_worker_with_a_cap(streams: PluginHost) -> None:
    import asyncio

    async def burst(tool: str, n: int) -> float:
        t0 = time.monotonic()
        results = await asyncio.gather(*(streams.ainvoke("streams", tool, {"seconds": 0.3}) for _ in range(n)))
        assert all(r.text == "rested" for r in results)
        return time.monotonic() - t0

    # 8 calls, 4 in flight at a time: two waves of ~0.3 s, not eight, not one
    for tool in ("nap", "snooze"):
        elapsed = asyncio.run(burst(tool, 8))
        assert 0.55 < elapsed < 2.0, (tool, elapsed)


def test_host_secrets_do_not_reach_workers_but_credentials_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db/x")
    plugins = tmp_path / "plugins"
    code = (
        "import os\nfrom plughub.sdk import Context, tool\n"
        "@tool\ndef env(ctx: Context) -> dict:\n"
        "    return {'environ': sorted(os.environ), 'token': ctx.credentials.get('token')}\n"
    )
    write_plugin(plugins, "envy", code, extra="credentials: {token: {required: true}}")
    with PluginHost([plugins], entry_points=False, credentials={"envy": {"token": "granted"}}) as host:
        out = host.invoke("envy", "env").structured
        assert "OPENAI_API_KEY" not in out["environ"] and "DATABASE_URL" not in out["environ"]
        assert out["token"] == "granted"  # credentials travel per call, not in the environment


FULL = '''
import json, os
from plughub.sdk import Context, Plugin, ToolError, tool

class Full(Plugin):
    def setup(self, ctx: Context) -> None:
        self.greeting = ctx.settings.get("greeting")
        ctx.storage.set("setup_ran", True)

    def teardown(self) -> None:
        with open(os.environ["HOME"] + "/teardown.txt", "w") as f:
            f.write("done")

    @tool
    def hello(self, ctx: Context) -> dict:
        return {"greeting": self.greeting, "setup_ran": ctx.storage.get("setup_ran")}

    @tool
    def note(self, ctx: Context, text: str) -> str:
        ctx.files.write_text("notes/n.txt", text)
        return ctx.files.read_text("notes/n.txt")

    @tool
    def boom(self) -> str:
        raise KeyError("missing")

    @tool
    def failing_stream(self):
        yield "first"
        raise ToolError("stopped", reason="not_found")
'''


def test_setup_teardown_files_and_hooks_work_in_a_worker(tmp_path: Path) -> None:
    from plughub.sdk import hookimpl

    errors: list[dict[str, object]] = []

    class Watch:
        @hookimpl
        def error_occurred(self, event_data: dict[str, object]) -> None:
            errors.append(event_data)

    plugins = tmp_path / "plugins"
    write_plugin(plugins, "full", "from main_impl import Full\n")
    (plugins / "full" / "main_impl.py").write_text(FULL)
    (plugins / "full" / "plugin.yaml").write_text(
        MANIFEST.format(name="full", extra="").replace("entrypoint: main", "entrypoint: main:Full")
    )
    data = tmp_path / "data"
    with PluginHost([plugins], entry_points=False, data_dir=data, hooks=[Watch()],
                    settings={"full": {"greeting": "hi"}}) as host:
        assert host.invoke("full", "hello").structured == {"greeting": "hi", "setup_ran": True}
        assert host.invoke("full", "note", {"text": "kept"}).text == "kept"
        r = host.invoke("full", "boom")
        assert r.reason == "exception" and "KeyError" in r.text
        assert errors and errors[0]["tool"] == "boom" and errors[0]["error_type"] == "KeyError"
        r = host.invoke("full", "failing_stream")
        assert r.is_error and r.reason == "not_found" and "stopped" in r.text
    assert (data / "workers" / "acme__full" / "teardown.txt").read_text() == "done"
    assert (data / "workers" / "acme__full" / "notes" / "n.txt").read_text() == "kept"


def test_seed_style_plugins_can_run_in_workers(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    (plugins / "greeter").mkdir(parents=True)
    (plugins / "greeter" / "config.yaml").write_text("settings:\n  greeting: from-config\n")
    (plugins / "greeter" / "plugin.py").write_text(
        "import os\nfrom plughub.compat.autogpt import BasePlugin\n\n"
        "class Greeter(BasePlugin):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.commands = ['greet']\n"
        "    def handle(self, command):\n"
        "        return {'greeting': self.config.get('greeting'), 'pid': os.getpid()}\n"
    )
    (plugins / "caller.py").write_text(
        "from plughub.compat.dialer import BasePlugin, get_registry\n\n"
        "class Echo(BasePlugin):\n"
        "    def execute(self, context):\n"
        "        return {'echo': context.get('v')}\n\n"
        "class Caller(BasePlugin):\n"
        "    def execute(self, context):\n"
        "        return {'via_host': get_registry().get_plugin('Echo').execute({'v': 1})}\n"
    )
    seen: list[tuple[str, str | None]] = []
    from plughub.sdk import AuditEvent, hookimpl

    class Audit:
        @hookimpl
        def audit(self, event: AuditEvent) -> None:
            seen.append((event.tool, event.caller))

    with PluginHost([plugins], entry_points=False, default_runtime="worker", hooks=[Audit()],
                    settings={"greeter": {"greeting": "from-host"}}) as host:
        out = host.invoke("greeter", "greet").structured
        assert out["greeting"] == "from-host" and out["pid"] != os.getpid()
        assert host.invoke("Caller", "Caller").structured == {"via_host": {"echo": 1}}
        assert ("Echo", "local/caller") in seen  # the nested call went through the host
        assert host.runtime_of("caller") == "worker"


def test_async_with_host_adopts_the_running_loop(tmp_path: Path) -> None:
    import asyncio

    plugins = tmp_path / "plugins"
    write_plugin(plugins, "adopt", BAD)

    async def main() -> tuple[str, int]:
        async with PluginHost([plugins], entry_points=False) as host:
            r = await host.ainvoke("adopt", "echo", {"text": "on my loop"})
            events = [e async for e in host.astream("adopt", "echo", {"text": "s"})]
            with pytest.raises(Exception, match="use ainvoke"):
                host.invoke("adopt", "echo", {"text": "sync on the loop"})
            return r.text, len(events)

    assert asyncio.run(main()) == ("on my loop", 2)
