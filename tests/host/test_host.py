"""PluginHost behaviour through its public API: discovery, loading, invoke, failures."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from plughub import PluginHost, ToolNotFound, tool
from plughub.errors import PluginDisabled, PluginNotFound, UsageError
from plughub.sdk import Context, Deny, ModifyArgs, Plugin, Progress, Text, ToolError, hookimpl

GOOD = """
    id: acme/good
    version: 1.2.0
    entrypoint: main:Good
"""
GOOD_CODE = """
    from plughub.sdk import Plugin, tool

    class Good(Plugin):
        @tool
        def add(self, a: int, b: int = 1) -> int:
            '''Add two numbers.

            Args:
                a: first
                b: second
            '''
            return a + b
"""


def host_for(tmp_path: Path, **kw: object) -> PluginHost:
    return PluginHost([tmp_path / "plugins"], entry_points=False, **kw)  # type: ignore[arg-type]


def test_folder_plugin_is_listed_without_import_and_invoked(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("good", GOOD, GOOD_CODE)
    with host_for(tmp_path) as host:
        (info,) = host.plugins()
        assert (info.id, info.version, info.status, info.tools) == ("acme/good", "1.2.0", "available", None)
        assert not any(m.startswith("plughub_plugins.") and m.endswith(".main") for m in sys.modules if "good" in m)
        result = host.invoke("good", "add", {"a": 2, "b": 3})
        assert not result.is_error and result.structured == 5
        assert host.plugin("acme/good").tools == ["add"]


def test_tool_reference_forms_are_equivalent(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("good", GOOD, GOOD_CODE)
    with host_for(tmp_path) as host:
        for ref in (("good", "add"), ("acme/good", "add"), ("good.add", None), ("good__add", None)):
            assert host.invoke(ref[0], ref[1], {"a": 1}).structured == 2


def test_one_broken_plugin_does_not_take_down_others(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("good", GOOD, GOOD_CODE)
    make_plugin("bad", "id: acme/bad\nversion: 1.0.0\nentrypoint: main:Nope\n", "import does_not_exist_xyz\n")
    make_plugin("yaml", "id: acme/yaml\nversion: [1.0\n")
    make_plugin("unknown", "id: acme/unknown\nversion: 1.0.0\nentrypoint: main:X\ncolour: blue\n")
    make_plugin("noentry", "id: acme/noentry\nversion: 1.0.0\n")
    with host_for(tmp_path) as host:
        infos = {p.id: p for p in host.load_all()}
        assert infos["acme/good"].status == "loaded"
        assert infos["acme/bad"].status == "failed"
        assert "does_not_exist_xyz" in (infos["acme/bad"].error or "")
        assert infos["local/yaml"].status == "failed" and "plugin.yaml:3" in (infos["local/yaml"].error or "") and "YAML syntax error" in (infos["local/yaml"].error or "")
        assert "colour" in (infos["local/unknown"].error or "") and "unknown field" in (infos["local/unknown"].error or "")
        assert "entrypoint" in (infos["local/noentry"].error or "")
        with pytest.raises(PluginDisabled, match="does_not_exist_xyz"):
            host.invoke("bad", "x", {})
        assert host.invoke("good", "add", {"a": 1}).structured == 2
        assert len(host.catalog()) == 1


def test_plugin_calling_sys_exit_at_import_is_contained(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("quitter", "id: acme/quitter\nversion: 1.0.0\nentrypoint: main\n", "raise SystemExit(3)\n")
    with host_for(tmp_path) as host:
        (info,) = host.load_all()
        assert info.status == "failed" and "SystemExit" in (info.error or "")


def test_duplicate_tool_names_fail_the_plugin(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    code = """
        from plughub.sdk import tool

        @tool
        def a() -> str:
            return "a"

        @tool(name="a")
        def b() -> str:
            return "b"
    """
    make_plugin("dup", "id: acme/dup\nversion: 1.0.0\nentrypoint: main\n", code)
    with host_for(tmp_path) as host:
        (info,) = host.load_all()
        assert info.status == "failed" and "two tools are named 'a'" in (info.error or "")


def test_duplicate_plugin_ids_keep_the_first(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("one", GOOD, GOOD_CODE)
    make_plugin("two", GOOD, GOOD_CODE)
    with host_for(tmp_path) as host:
        statuses = sorted((p.status, p.error or "") for p in host.plugins())
        assert statuses[0][0] == "available"
        assert statuses[1][0] == "failed" and "duplicate plugin id" in statuses[1][1]


def test_dependencies_versions_and_cycles(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    code = "from plughub.sdk import tool\n@tool\ndef ping() -> str:\n    return 'pong'\n"
    make_plugin("base", "id: acme/base\nversion: 1.5.0\nentrypoint: main\n", code)
    make_plugin("ok", "id: acme/ok\nversion: 1.0.0\nentrypoint: main\ndependencies: {acme/base: '>=1.0,<2'}\n", code)
    make_plugin("old", "id: acme/old\nversion: 1.0.0\nentrypoint: main\ndependencies: {acme/base: '>=2'}\n", code)
    make_plugin("missing", "id: acme/missing\nversion: 1.0.0\nentrypoint: main\ndependencies: {acme/nope: ''}\n", code)
    make_plugin("c1", "id: acme/c1\nversion: 1.0.0\nentrypoint: main\ndependencies: {acme/c2: ''}\n", code)
    make_plugin("c2", "id: acme/c2\nversion: 1.0.0\nentrypoint: main\ndependencies: {acme/c1: ''}\n", code)
    make_plugin("onc", "id: acme/onc\nversion: 1.0.0\nentrypoint: main\ndependencies: {acme/c1: ''}\n", code)
    with host_for(tmp_path) as host:
        info = {p.id: p for p in host.plugins()}
        assert info["acme/ok"].status == "available"
        assert "but 1.5.0 is installed" in (info["acme/old"].error or "")
        assert "acme/nope" in (info["acme/missing"].error or "") and "not installed" in (info["acme/missing"].error or "")
        assert "cycle" in (info["acme/c1"].error or "") and "cycle" in (info["acme/c2"].error or "")
        assert "acme/c1" in (info["acme/onc"].error or "")
        assert host.invoke("ok", "ping").text == "pong"


def test_allow_and_deny_are_decided_before_import(tmp_path: Path, make_plugin: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'a').write('x')\nfrom plughub.sdk import tool\n@tool\ndef t() -> str:\n    return 'ok'\n"
    make_plugin("a", "id: acme/a\nversion: 1.0.0\nentrypoint: main\n", code)
    make_plugin("b", "id: acme/b\nversion: 1.0.0\nentrypoint: main\n", code)
    monkeypatch.setenv("PLUGHUB_LOAD_PLUGINS", "acme/a")
    with host_for(tmp_path, deny=["a"]) as host:
        infos = host.load_all()
        assert {p.status for p in infos} == {"denied"}
    assert not marker.exists()
    monkeypatch.setenv("PLUGHUB_LOAD_PLUGINS", "")
    with host_for(tmp_path) as host:
        assert {p.status for p in host.load_all()} == {"denied"}
    assert not marker.exists()


def test_bad_arguments_are_error_results_the_model_can_read(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("good", GOOD, GOOD_CODE)
    with host_for(tmp_path) as host:
        r = host.invoke("good", "add", {"a": "not a number"})
        assert r.is_error and r.reason == "invalid_arguments" and "a:" in r.text
        r = host.invoke("good", "add", {"a": 1, "evil": "x"})
        assert r.is_error and "evil: unknown argument" in r.text
        r = host.invoke("good", "add", "{not json")
        assert r.is_error and r.reason == "invalid_arguments" and "not valid JSON" in r.text
        r = host.invoke("good", "add", "[1, 2]")
        assert r.is_error and "must be a JSON object" in r.text
        huge = json.dumps({"a": 1, "pad": "x" * (2 << 20)})
        r = host.invoke("good", "add", huge)
        assert r.is_error and "bytes; the limit" in r.text
        assert host.invoke("good", "add", {"a": 41}).structured == 42


def test_unknown_plugin_and_tool_raise(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("good", GOOD, GOOD_CODE)
    with host_for(tmp_path) as host:
        with pytest.raises(PluginNotFound):
            host.invoke("nope", "x")
        with pytest.raises(ToolNotFound, match="its tools: add"):
            host.invoke("good", "sub")


def test_missing_plugins_dir_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        PluginHost([tmp_path / "nowhere"], entry_points=False)


class Tools(Plugin):
    id = "acme/tools"
    version = "2.0.0"

    def __init__(self) -> None:
        self.setup_called = False

    def setup(self, ctx: Context) -> None:
        self.setup_called = True

    @tool
    def boom(self) -> str:
        raise RuntimeError("kaput")

    @tool
    def refuse(self) -> str:
        raise ToolError("no can do", data={"code": 7})

    @tool(timeout=0.2)
    def hang(self) -> str:
        while True:
            time.sleep(0.005)

    @tool(timeout=0.2)
    async def ahang(self) -> str:
        await asyncio.sleep(60)
        return "never"

    @tool
    def wrong_type(self) -> int:
        return "nope"  # type: ignore[return-value]

    @tool
    async def stream(self, ctx: Context, n: int = 3):  # type: ignore[no-untyped-def]
        for i in range(n):
            ctx.progress(i + 1, n, "working")
            yield f"part {i}"

    @tool
    def gen(self, n: int = 2):  # type: ignore[no-untyped-def]
        yield from (f"g{i}" for i in range(n))

    @tool
    def sleepy(self, seconds: float = 0.2) -> str:
        time.sleep(seconds)
        return "rested"

    @tool
    def remember(self, ctx: Context, key: str, value: str) -> str | None:
        old = ctx.storage.get(key)
        ctx.storage.set(key, value)
        return old


def test_tool_failures_are_results_and_host_keeps_serving() -> None:
    seen: list[dict[str, object]] = []

    class Watch:
        @hookimpl
        def error_occurred(self, event_data: dict[str, object]) -> None:
            seen.append(event_data)

    with PluginHost(plugins=[Tools], entry_points=False, hooks=[Watch()]) as host:
        r = host.invoke("tools", "boom")
        assert r.is_error and r.reason == "exception" and "RuntimeError: kaput" in r.text
        assert seen and seen[0]["error"] == "kaput" and seen[0]["tool"] == "boom"
        r = host.invoke("tools", "refuse")
        assert r.is_error and r.reason == "tool_error" and r.text == "no can do" and r.structured == {"code": 7}
        t0 = time.monotonic()
        r = host.invoke("tools", "hang")
        assert r.is_error and r.reason == "timeout" and time.monotonic() - t0 < 5
        r = host.invoke("tools", "ahang")
        assert r.is_error and r.reason == "timeout"
        r = host.invoke("tools", "wrong_type")
        assert r.is_error and r.reason == "invalid_output"
        assert host.invoke("tools", "sleepy", {"seconds": 0}).text == "rested"


def test_async_api_runs_sync_tools_off_the_loop() -> None:
    async def main(host: PluginHost) -> tuple[float, list[str]]:
        ticks: list[str] = []

        async def ticker() -> None:
            for _ in range(5):
                await asyncio.sleep(0.02)
                ticks.append("t")

        t0 = time.monotonic()
        results = await asyncio.gather(
            host.ainvoke("tools", "sleepy", {"seconds": 0.3}),
            host.ainvoke("tools", "sleepy", {"seconds": 0.3}),
            ticker(),
        )
        assert results[0].text == results[1].text == "rested"  # type: ignore[union-attr]
        return time.monotonic() - t0, ticks

    with PluginHost(plugins=[Tools], entry_points=False) as host:
        elapsed, ticks = asyncio.run(main(host))
        assert len(ticks) == 5  # the loop kept ticking while both sync tools slept
        assert elapsed < 0.55  # the two calls overlapped instead of running back to back
        r = asyncio.run(host.ainvoke("tools", "hang"))
        assert r.reason == "timeout"


def test_streaming_yields_chunks_progress_then_result() -> None:
    with PluginHost(plugins=[Tools], entry_points=False) as host:
        events = list(host.stream("tools", "stream", {"n": 2}))
        kinds = [type(e).__name__ for e in events]
        assert kinds == ["Progress", "Text", "Progress", "Text", "ToolResult"]
        assert events[-1].text == "part 0\npart 1"
        assert [e.progress for e in events if isinstance(e, Progress)] == [1, 2]
        assert host.invoke("tools", "stream", {"n": 3}).text == "part 0\npart 1\npart 2"
        assert [e.text for e in host.stream("tools", "gen") if isinstance(e, Text)] == ["g0", "g1"]


def test_stream_closed_early_cancels_the_tool() -> None:
    cancelled = threading.Event()

    class Slow(Plugin):
        id = "acme/slow"

        @tool
        async def drip(self):  # type: ignore[no-untyped-def]
            try:
                for i in range(1000):
                    yield str(i)
                    await asyncio.sleep(0.01)
            finally:
                cancelled.set()

    with PluginHost(plugins=[Slow], entry_points=False) as host:

        async def consume() -> None:
            agen = host.astream("slow", "drip")
            async for ev in agen:
                assert ev.text == "0"
                break
            await agen.aclose()  # type: ignore[attr-defined]

        asyncio.run(consume())
        assert cancelled.wait(2)


def test_setup_runs_once_before_first_call_and_storage_persists(tmp_path: Path) -> None:
    with PluginHost(plugins=[Tools], entry_points=False, data_dir=tmp_path) as host:
        assert host.invoke("tools", "remember", {"key": "k", "value": "v1"}).structured is None
        assert host.invoke("tools", "remember", {"key": "k", "value": "v2"}).text == "v1"
    with PluginHost(plugins=[Tools], entry_points=False, data_dir=tmp_path) as host:
        assert host.invoke("tools", "remember", {"key": "k", "value": "v3"}).text == "v2"


def test_hooks_deny_modify_and_replace_results() -> None:
    audit: list[object] = []

    class Policy:
        @hookimpl
        def before_invoke(self, invocation):  # type: ignore[no-untyped-def]
            if invocation.args.get("seconds") == 9:
                return Deny("too sleepy")
            if invocation.args.get("seconds") == 1:
                return ModifyArgs({"seconds": 0})
            return None

        @hookimpl
        def after_invoke(self, result):  # type: ignore[no-untyped-def]
            if result.text == "rested":
                return type(result)([Text("rested well")])
            return None

        @hookimpl
        def audit(self, event):  # type: ignore[no-untyped-def]
            audit.append(event)

    with PluginHost(plugins=[Tools], entry_points=False, hooks=[Policy()]) as host:
        r = host.invoke("tools", "sleepy", {"seconds": 9})
        assert r.is_error and r.reason == "denied_by_policy" and r.text == "too sleepy"
        t0 = time.monotonic()
        r = host.invoke("tools", "sleepy", {"seconds": 1})
        assert time.monotonic() - t0 < 0.9 and r.text == "rested well"
        assert [getattr(e, "outcome", None) for e in audit] == ["denied_by_policy", "ok"]
        assert all(getattr(e, "plugin_id", None) == "acme/tools" for e in audit)


def test_plugin_lifecycle_hooks_fire() -> None:
    events: list[tuple[str, str]] = []

    class Lifecycle:
        @hookimpl
        def plugin_loaded(self, plugin_id: str, tools: list[str]) -> None:
            events.append(("loaded", plugin_id))

        @hookimpl
        def plugin_unloaded(self, plugin_id: str) -> None:
            events.append(("unloaded", plugin_id))

    host = PluginHost(plugins=[Tools], entry_points=False, hooks=[Lifecycle()])
    host.invoke("tools", "sleepy", {"seconds": 0})
    host.close()
    assert events == [("loaded", "acme/tools"), ("unloaded", "acme/tools")]


def test_rate_limit_cache_permissions_and_credentials(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    manifest = """
        id: acme/limited
        version: 1.0.0
        entrypoint: main
        permissions: {network: [api.example.com]}
        credentials:
          token: {required: true}
        limits: {rate_limit: 3/minute, cacheable: true, cache_ttl: 60}
    """
    code = """
        import itertools
        from plughub.sdk import Context, tool
        counter = itertools.count()

        @tool
        def count(ctx: Context, x: int) -> int:
            assert ctx.credentials["token"] == "s3cret"
            return next(counter)
    """
    make_plugin("limited", manifest, code)
    with host_for(tmp_path) as host:
        r = host.invoke("limited", "count", {"x": 1})
        assert r.is_error and r.reason == "missing_credentials" and "token" in r.text
    with host_for(tmp_path, credentials={"acme/limited": {"token": "s3cret"}}, grants={"limited": []}) as host:
        r = host.invoke("limited", "count", {"x": 1})
        assert r.is_error and r.reason == "permission_denied" and "network:api.example.com" in r.text
    with host_for(tmp_path, credentials={"limited": {"token": "s3cret"}}, grants={"limited": ["network:api.example.com"]}) as host:
        first = host.invoke("limited", "count", {"x": 1})
        assert not first.is_error
        assert host.invoke("limited", "count", {"x": 1}).structured == first.structured  # cached
        second = host.invoke("limited", "count", {"x": 2})  # a cache hit still counted: 3rd call
        assert not second.is_error and second.structured == first.structured + 1
        r = host.invoke("limited", "count", {"x": 3})
        assert r.is_error and r.reason == "rate_limited" and r.meta["retry_after"] > 0
        assert "s3cret" not in json.dumps(host.export_tools("openai"))


def test_sync_invoke_of_async_tool_from_inside_a_loop_thread_is_explained() -> None:
    with PluginHost(plugins=[Tools], entry_points=False) as host:

        async def inner() -> str:
            return host.invoke("tools", "stream", {"n": 1}).text

        assert asyncio.run(inner()) == "part 0"


def test_notify_reaches_task_event_hooks() -> None:
    got: list[str] = []

    class Events:
        @hookimpl
        def task_started(self, event_data: dict[str, str]) -> None:
            got.append("started:" + event_data["task"])

        @hookimpl
        def task_completed(self, event_data: dict[str, str]) -> None:
            got.append("completed:" + event_data["task"])

    with PluginHost(plugins=[Tools], entry_points=False, hooks=[Events()]) as host:
        host.notify("task_started", {"task": "t1"})
        host.notify("task_completed", {"task": "t1"})
        with pytest.raises(UsageError):
            host.notify("bogus")
    assert got == ["started:t1", "completed:t1"]


def test_kwargs_tools_receive_extra_arguments_and_list_outputs_get_a_schema() -> None:
    @tool
    def gather(name: str, **extra: int) -> list[str]:
        return [name, *sorted(f"{k}={v}" for k, v in extra.items())]

    with PluginHost(tools=[gather], entry_points=False) as host:
        r = host.invoke("tools", "gather", {"name": "n", "b": 2, "a": 1})
        assert r.structured == ["n", "a=1", "b=2"]
        (entry,) = host.catalog()
        assert entry.spec.output_schema == {"items": {"type": "string"}, "type": "array"}


def test_failing_hooks_deny_before_and_are_skipped_after() -> None:
    class Broken:
        @hookimpl
        def before_invoke(self, invocation):  # type: ignore[no-untyped-def]
            if invocation.tool == "boom":
                return None
            raise RuntimeError("policy bug")

        @hookimpl
        def after_invoke(self, result):  # type: ignore[no-untyped-def]
            raise RuntimeError("observer bug")

    with PluginHost(plugins=[Tools], entry_points=False, hooks=[Broken()]) as host:
        r = host.invoke("tools", "sleepy", {"seconds": 0})
        assert r.is_error and r.reason == "policy_error" and "policy bug" in r.text
        r = host.invoke("tools", "boom")  # before allowed; the failing after hook is skipped
        assert r.reason == "exception" and "kaput" in r.text


def test_async_lifecycle_hooks_are_awaited() -> None:
    got: list[str] = []

    class AsyncHooks:
        @hookimpl
        async def plugin_loaded(self, plugin_id: str) -> None:
            await asyncio.sleep(0)
            got.append(plugin_id)

    with PluginHost(plugins=[Tools], entry_points=False, hooks=[AsyncHooks()]) as host:
        host.invoke("tools", "sleepy", {"seconds": 0})
    assert got == ["acme/tools"]


def test_plugins_declaring_hooks_load_eagerly_and_police_every_call(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("good", GOOD, GOOD_CODE)
    policy = """
        from plughub.sdk import Deny, Plugin, hookimpl

        class Policy(Plugin):
            @hookimpl
            def before_invoke(self, invocation):
                if invocation.args.get("a") == 13:
                    return Deny("unlucky", reason="superstition")
    """
    make_plugin("policy", "id: acme/policy\nversion: 1.0.0\nentrypoint: main:Policy\nhooks: [before_invoke]\n", policy)
    with host_for(tmp_path) as host:
        assert {p.id: p.status for p in host.plugins()}["acme/policy"] == "loaded"
        r = host.invoke("good", "add", {"a": 13})
        assert r.is_error and r.reason == "superstition"
        assert host.invoke("good", "add", {"a": 12}).structured == 13


def test_dependency_failures_raise_dependency_error(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    from plughub import DependencyError

    make_plugin("lonely", "id: acme/lonely\nversion: 1.0.0\nentrypoint: main\ndependencies: {acme/gone: '>=1'}\n",
                "from plughub.sdk import tool\n@tool\ndef t() -> str:\n    return 'x'\n")
    with host_for(tmp_path) as host, pytest.raises(DependencyError, match="acme/gone"):
        host.invoke("lonely", "t")


def test_single_file_plugin_class_is_discovered(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "greeter.py").write_text(
        "from plughub.sdk import Plugin, tool\n\n"
        "class Greeter(Plugin):\n"
        "    @tool\n"
        "    def hello(self, name: str) -> str:\n"
        "        return f'hello {name}'\n"
    )
    with host_for(tmp_path) as host:
        assert host.invoke("greeter", "hello", {"name": "ada"}).text == "hello ada"


def test_host_settings_reach_autogpt_style_plugins(tmp_path: Path) -> None:
    folder = tmp_path / "plugins" / "configured"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("settings:\n  greeting: from-config\n")
    (folder / "plugin.py").write_text(
        "from plughub.compat.autogpt import BasePlugin\n\n"
        "class Configured(BasePlugin):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.commands = ['greet']\n"
        "    def handle(self, command):\n"
        "        return {'greeting': self.config.get('greeting')}\n"
    )
    with host_for(tmp_path) as host:
        assert host.invoke("configured", "greet", {}).structured == {"greeting": "from-config"}
    with host_for(tmp_path, settings={"configured": {"greeting": "from-host"}}) as host:
        assert host.invoke("configured", "greet", {}).structured == {"greeting": "from-host"}


def test_plugins_needing_another_python_or_plughub_are_reported(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    make_plugin("future", "id: acme/future\nversion: 1.0.0\nentrypoint: main\npython: {requires: '>=4'}\n", "x = 1\n")
    make_plugin("newer", "id: acme/newer\nversion: 1.0.0\nentrypoint: main\nmin_plughub: '>=99'\n", "x = 1\n")
    with host_for(tmp_path) as host:
        info = {p.id: p for p in host.plugins()}
        assert info["acme/future"].status == "failed" and "needs Python >=4" in (info["acme/future"].error or "")
        assert info["acme/newer"].status == "failed" and "needs plughub >=99" in (info["acme/newer"].error or "")


def test_cache_ttl_zero_caches_for_the_life_of_the_host(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    code = "import itertools\nfrom plughub.sdk import tool\nn = itertools.count()\n@tool\ndef tick() -> int:\n    return next(n)\n"
    make_plugin("ticker", "id: acme/ticker\nversion: 1.0.0\nentrypoint: main\nlimits: {cacheable: true}\n", code)
    with host_for(tmp_path) as host:
        assert host.invoke("ticker", "tick").structured == host.invoke("ticker", "tick").structured == 0


def test_a_failing_unload_hook_does_not_stop_close() -> None:
    torn: list[bool] = []

    class T(Tools):
        def teardown(self) -> None:
            torn.append(True)

    class Bad:
        @hookimpl
        def plugin_unloaded(self, plugin_id: str) -> None:
            raise RuntimeError("nope")

    host = PluginHost(plugins=[T], entry_points=False, hooks=[Bad()])
    host.invoke("tools", "sleepy", {"seconds": 0})
    host.close()
    assert torn == [True]


def test_reload_picks_up_changed_code_in_process_and_in_workers(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    def code(word: str) -> str:
        return f"from plughub.sdk import tool\n@tool\ndef say() -> str:\n    return {word!r}\n"

    inproc = make_plugin("inproc", "id: acme/inproc\nversion: 1.0.0\nentrypoint: main\n", code("one"))
    worker = make_plugin("isolated", "id: acme/isolated\nversion: 1.0.0\nentrypoint: main\nruntime: worker\n", code("one"))
    with host_for(tmp_path) as host:
        assert host.invoke("inproc", "say").text == "one"
        assert host.invoke("isolated", "say").text == "one"
        for folder in (inproc, worker):
            (folder / "main.py").write_text(code("two"))
        assert host.reload("inproc").status == "available"
        host.reload("isolated")
        assert host.invoke("inproc", "say").text == "two"
        assert host.invoke("isolated", "say").text == "two"
        # a broken edit is reported, and fixing it recovers
        (inproc / "plugin.yaml").write_text("id: acme/inproc\nversion: [\n")
        assert host.reload("inproc").status == "failed"


def test_watch_reloads_when_files_change(tmp_path: Path, make_plugin: Callable[..., Path]) -> None:
    import os as _os

    folder = make_plugin("live", "id: acme/live\nversion: 1.0.0\nentrypoint: main\n",
                         "from plughub.sdk import tool\n@tool\ndef v() -> int:\n    return 1\n")
    with host_for(tmp_path) as host:
        assert host.invoke("live", "v").structured == 1
        host.watch(interval=0.1)
        main = folder / "main.py"
        main.write_text("from plughub.sdk import tool\n@tool\ndef v() -> int:\n    return 2\n")
        st = main.stat()
        _os.utime(main, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))  # coarse clocks
        deadline = time.monotonic() + 5
        streak = 0  # a call racing the reload may fail (development mode): wait until settled
        while time.monotonic() < deadline and streak < 3:
            streak = streak + 1 if host.invoke("live", "v").structured == 2 else 0
            time.sleep(0.1)
        assert streak == 3, "the new code was not served after the files changed"
