"""Rate limits and concurrency of calls, from config.limits, answered as 429/503."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from _daemon import auth, serving
from fastapi import FastAPI

from plughub.limits import LimitsConfig

pytestmark = pytest.mark.anyio

HELLO = "/v1/plugins/acme/greet/tools/hello/invoke"
SLOW = "/v1/plugins/acme/greet/tools/slow/invoke"


async def test_tenant_rate_refuses_calls_with_retry_after_but_not_reads(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(limits=LimitsConfig(tenant_rate="2/minute"))
    async with serving(app) as c:
        codes = [
            (await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())
        assert r.json()["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        assert (await c.get("/v1/plugins", headers=auth())).status_code == 200
        # Another tenant has its own budget; the AI-Dialer path is charged too.
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth("other"))
        assert r.status_code == 200
        r = await c.post(
            "/api/plugins/invoke",
            json={"plugin": "NoteTaker", "context": {"text": "t"}},
            headers=auth(),
        )
        assert r.status_code == 429 and "error" in r.json()


async def test_operator_plugin_override_wins_over_defaults(
    make_app: Callable[..., FastAPI],
) -> None:
    limits = LimitsConfig(tenant_rate="unlimited", plugins={"acme/greet": "1/minute"})
    async with serving(make_app(limits=limits)) as c:
        assert (
            await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())
        ).status_code == 200
        assert (
            await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())
        ).status_code == 429
        r = await c.post(
            "/api/plugins/invoke",
            json={"plugin": "NoteTaker", "context": {"text": "t"}},
            headers=auth(),
        )
        assert r.status_code == 200  # another plugin, not limited


async def test_concurrent_calls_per_tenant_are_capped(
    make_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    app = make_app(limits=LimitsConfig(max_concurrent_calls=1))
    async with serving(app) as c:
        slow = asyncio.create_task(
            c.post(SLOW, json={"arguments": {"seconds": 1.0}}, headers=auth())
        )
        for _ in range(100):
            if app.state.plughub.calls_in_flight:
                break
            await asyncio.sleep(0.01)
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())
        assert r.status_code == 429 and r.json()["code"] == "too_many_calls"
        assert "retry-after" in r.headers
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth("other"))
        assert r.status_code == 200  # another tenant
        assert (await slow).status_code == 200
        # The slot is back once the call ended (streams too).
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())
        assert r.status_code == 200
        r = await c.post(
            "/v1/plugins/acme/greet/tools/count/invoke-stream",
            json={"arguments": {"n": 1}},
            headers=auth(),
        )
        assert r.status_code == 200
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())
        assert r.status_code == 200


async def test_a_failed_backend_fails_closed_with_503(make_app: Callable[..., FastAPI]) -> None:
    limits = LimitsConfig(backend="redis", redis_url="redis://127.0.0.1:1/0", redis_timeout=0.2)
    async with serving(make_app(limits=limits)) as c:
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())
        assert r.status_code == 503
        assert "unavailable" in r.json()["detail"] and r.json()["code"] == "limits_unavailable"
        assert (await c.get("/v1/plugins", headers=auth())).status_code == 200


async def test_a_failed_backend_can_be_told_to_allow(make_app: Callable[..., FastAPI]) -> None:
    limits = LimitsConfig(
        backend="redis",
        redis_url="redis://127.0.0.1:1/0",
        redis_timeout=0.2,
        on_backend_error="allow",
    )
    async with serving(make_app(limits=limits)) as c:
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())
        assert r.status_code == 200


async def test_arguments_over_the_limit_are_refused_before_the_call(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(limits=LimitsConfig(tenant_rate="2/minute", max_argument_bytes=200))
    async with serving(app) as c:
        big = {"arguments": {"name": "x" * 300}}
        for path in (HELLO, HELLO.replace("/invoke", "/invoke-stream")):
            r = await c.post(path, json=big, headers=auth())
            assert r.status_code == 413 and r.json()["code"] == "arguments_too_large"
            assert "200" in r.json()["detail"]
        r = await c.post(
            "/api/plugins/invoke",
            json={"plugin": "NoteTaker", "context": {"text": "y" * 300}},
            headers=auth(),
        )
        assert r.status_code == 413 and "error" in r.json()
        # Refused calls are not charged: the two allowed by the rate still go through.
        for _ in range(2):
            ok = await c.post(HELLO, json={"arguments": {"name": "x" * 100}}, headers=auth())
            assert ok.status_code == 200 and ok.json()["content"][0]["text"] == f"Hello {'x' * 100}!"


async def test_a_stream_the_client_left_before_it_started_gives_its_slot_back(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(limits=LimitsConfig(tenant_rate="unlimited", max_concurrent_calls=1))
    async with serving(app) as c:
        body = b'{"arguments": {"seconds": 5}}'
        sent = False

        async def receive() -> dict[str, object]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}  # gone at once

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":  # a slow client: the disconnect
                await asyncio.sleep(1)  # is seen before the body is ever started

        path = SLOW.replace("/invoke", "/invoke-stream")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", auth()["Authorization"].encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"accept", b"text/event-stream"),
            ],
            "client": ("127.0.0.1", 1234),
            "server": ("plughub.test", 80),
        }
        await asyncio.wait_for(app(scope, receive, send), 10)
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=auth())
        assert r.status_code == 200, r.text  # the slot came back
