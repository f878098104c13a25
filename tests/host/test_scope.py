"""``CallScope``: one host serving several tenants, each with its own settings, credentials,
grants and storage per call; and ``avalidate_credentials``, the plugin's own check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from plughub import PluginHost
from plughub.errors import CredentialsInvalid
from plughub.host import CallScope
from plughub.sdk import Invocation, MemoryStorage, hookimpl

MANIFEST = """
    id: acme/scoped
    version: 1.0.0
    entrypoint: main:Scoped
    runtime: {runtime}
    permissions: {{network: [api.example.com]}}
    settings:
      units: {{default: metric}}
      greeting: {{default: hello}}
    credentials:
      token: {{required: true}}
      region: {{enum: [eu, us]}}
"""
CODE = """
    import hashlib, itertools
    from plughub.sdk import Context, Plugin, ToolError, tool

    counter = itertools.count()

    class Scoped(Plugin):
        @tool
        def whoami(self, ctx: Context) -> dict:
            '''What this call sees.'''
            ctx.storage.set("calls", (ctx.storage.get("calls") or 0) + 1)
            return {
                "token": hashlib.sha256(ctx.credentials.get("token", "").encode()).hexdigest()[:8],
                "units": ctx.settings.get("units"),
                "greeting": ctx.settings.get("greeting"),
                "calls": ctx.storage.get("calls"),
            }

        @tool(cacheable=True)
        def count(self, x: int) -> int:
            '''A cacheable counter.'''
            return next(counter)

        def validate_credentials(self, credentials):
            if credentials["token"].startswith("leaky"):  # an error quoting what it was given
                raise ValueError(f"GET https://api.example.com/?key={credentials['token']}: 401")
            if credentials["token"] != "good-token":
                raise ToolError("the service refused this token")
"""


def digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


@pytest.fixture(params=["inprocess", "worker"])
def host(request: pytest.FixtureRequest, tmp_path: Path, make_plugin: Callable[..., Path]) -> PluginHost:
    make_plugin("scoped", MANIFEST.format(runtime=request.param), CODE)
    h = PluginHost(
        [tmp_path / "plugins"],
        entry_points=False,
        credentials={"acme/scoped": {"token": "operator-token"}},
        settings={"acme/scoped": {"units": "imperial"}},
        data_dir=tmp_path / "data",
    )
    request.addfinalizer(h.close)
    return h


def test_each_scope_sees_its_own_values(host: PluginHost) -> None:
    a = CallScope("a", settings={"greeting": "hi A"}, credentials={"token": "tok-a"}, storage=MemoryStorage())
    b = CallScope("b", credentials={"token": "tok-b"}, storage=MemoryStorage())
    for _ in range(2):
        host.invoke("scoped", "whoami", {}, scope=a)
    ra = host.invoke("scoped", "whoami", {}, scope=a).structured
    rb = host.invoke("scoped", "whoami", {}, scope=b).structured
    own = host.invoke("scoped", "whoami", {}).structured
    # settings: manifest defaults < host settings < the scope's
    assert ra == {"token": digest("tok-a"), "units": "imperial", "greeting": "hi A", "calls": 3}
    assert rb == {"token": digest("tok-b"), "units": "imperial", "greeting": "hello", "calls": 1}
    assert own["token"] == digest("operator-token") and own["calls"] == 1


def test_a_scope_never_falls_back_to_the_hosts_credentials(host: PluginHost) -> None:
    r = host.invoke("scoped", "whoami", {}, scope=CallScope("c", credentials={}))
    assert r.is_error and r.reason == "missing_credentials" and "token" in r.text


def test_scope_grants_narrow_but_never_widen(host: PluginHost, tmp_path: Path) -> None:
    r = host.invoke("scoped", "whoami", {}, scope=CallScope("a", credentials={"token": "t"}, grants=[]))
    assert r.is_error and r.reason == "permission_denied" and "network:api.example.com" in r.text
    ok = host.invoke(
        "scoped", "whoami", {}, scope=CallScope("a", credentials={"token": "t"}, grants=["network:api.example.com"])
    )
    assert not ok.is_error
    with PluginHost([tmp_path / "plugins"], entry_points=False, grants={"scoped": []}) as strict:
        r = strict.invoke("scoped", "whoami", {}, scope=CallScope("a", credentials={"token": "t"}, grants=["*"]))
        assert r.is_error and r.reason == "permission_denied"


def test_cached_results_do_not_cross_tenants(host: PluginHost) -> None:
    creds = {"token": "t"}
    a1 = host.invoke("scoped", "count", {"x": 1}, scope=CallScope("a", credentials=creds)).structured
    a2 = host.invoke("scoped", "count", {"x": 1}, scope=CallScope("a", credentials=creds)).structured
    b1 = host.invoke("scoped", "count", {"x": 1}, scope=CallScope("b", credentials=creds)).structured
    assert a1 == a2 and b1 != a1


def test_async_and_streaming_calls_carry_the_scope(host: PluginHost) -> None:
    scope = CallScope("a", credentials={"token": "tok-a"}, storage=MemoryStorage())

    async def go() -> tuple[object, object]:
        r = await host.ainvoke("scoped", "whoami", {}, scope=scope)
        final = None
        async for event in host.astream("scoped", "whoami", {}, scope=scope):
            final = event
        return r.structured, final.structured  # type: ignore[union-attr]

    first, second = asyncio.run(go())
    assert first["token"] == digest("tok-a") and first["calls"] == 1  # type: ignore[index]
    assert second["calls"] == 2  # type: ignore[index]


def test_credentials_are_validated_by_the_manifest_then_the_plugin(host: PluginHost) -> None:
    seen: list[Invocation] = []

    class Spy:
        @hookimpl
        def before_invoke(self, invocation: Invocation) -> None:
            seen.append(invocation)

    host.pm.register(Spy())
    host._compile_hooks()

    async def check(values: dict[str, object]) -> list[str]:
        try:
            await host.avalidate_credentials("scoped", values)
        except CredentialsInvalid as e:
            assert "good-token" not in str(e) and "bad-token" not in str(e)
            return e.problems
        return []

    assert asyncio.run(check({"token": "good-token", "region": "eu"})) == []
    assert asyncio.run(check({"token": "bad-token"})) == ["the service refused this token"]
    assert asyncio.run(check({})) == ["'token' is required"]
    problems = asyncio.run(check({"token": "good-token", "region": "mars", "extra": "x", }))
    assert any("region" in p for p in problems) and any("unknown field 'extra'" in p for p in problems)
    assert asyncio.run(check({"token": 42})) == ["'token' must be of type 'string'"]
    assert seen == []  # policy hooks never saw the credentials
    assert "good-token" not in json.dumps(host.export_tools("openai"))


def test_a_failing_credential_check_never_repeats_the_values(
    host: PluginHost, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[dict[str, object]] = []

    class Spy:
        @hookimpl
        def error_occurred(self, event_data: dict[str, object]) -> None:
            errors.append(event_data)

    host.pm.register(Spy())
    host._compile_hooks()

    async def check() -> list[str]:
        try:
            await host.avalidate_credentials("scoped", {"token": "leaky-s3cr3t"})
        except CredentialsInvalid as e:
            return e.problems
        return []

    assert asyncio.run(check()) == ["the credential check failed (ValueError)"]
    assert "leaky-s3cr3t" not in caplog.text
    assert "leaky-s3cr3t" not in json.dumps(errors, default=str)
