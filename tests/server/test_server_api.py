"""The /v1 API, health and metrics, in-process over ASGI (httpx + the app's lifespan)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _daemon import KEYS, auth, serving
from fastapi import FastAPI

from plughub.host import PluginHost
from plughub.sdk import AuditEvent, hookimpl
from plughub.server import Principal, RateDecision, ServerConfig

pytestmark = pytest.mark.anyio

INVOKE = "/v1/plugins/acme/greet/tools/{}/invoke"
STREAM = "/v1/plugins/acme/greet/tools/{}/invoke-stream"


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# -- health, readiness, metrics -----------------------------------------------------------------


async def test_health_and_readiness_need_no_key(make_app: Callable[..., FastAPI]) -> None:
    app = make_app()
    async with serving(app) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "plugins": 3, "calls_in_flight": 0}
    # After shutdown the app is not ready any more (and answers 503, not an exception).
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json() == {"status": "not_ready"}
        r = await c.get("/v1/plugins", headers=auth())
        assert r.status_code == 503 and r.json()["code"] == "not_ready"


async def test_metrics_count_requests_by_route_and_tool_calls_by_outcome(
    make_app: Callable[..., FastAPI],
) -> None:
    async with serving(make_app()) as c:
        await c.post(INVOKE.format("hello"), json={"arguments": {"name": "A"}}, headers=auth())
        await c.post(INVOKE.format("fail"), json={"arguments": {"msg": "no"}}, headers=auth())
        await c.post(INVOKE.format("hello"), json={"arguments": {}}, headers=auth())
        await c.get("/nowhere/at/all")
        text = (await c.get("/metrics")).text
    route = "/v1/plugins/{author}/{name}/tools/{tool}/invoke"
    assert f'plughub_http_requests_total{{method="POST",route="{route}",status="200"}} 3.0' in text
    assert 'plughub_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'plughub_tool_calls_total{outcome="ok",plugin="acme/greet"} 1.0' in text
    assert 'plughub_tool_calls_total{outcome="tool_error",plugin="acme/greet"} 1.0' in text
    assert 'plughub_tool_calls_total{outcome="invalid_arguments",plugin="acme/greet"} 1.0' in text
    assert "plughub_tool_calls_in_flight 0.0" in text
    assert "plughub_http_requests_in_flight 1.0" in text  # the /metrics request itself
    assert "plughub_http_request_duration_seconds_bucket" in text


async def test_metrics_and_docs_can_be_turned_off(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app(metrics=False, docs=False)) as c:
        assert (await c.get("/metrics")).status_code == 404
        assert (await c.get("/docs")).status_code == 404
        assert (await c.get("/openapi.json")).status_code == 200


# -- authentication and roles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/plugins"),
        ("GET", "/v1/plugins/acme/greet"),
        ("GET", "/v1/tools"),
        ("GET", "/v1/whoami"),
        ("POST", INVOKE.format("hello")),
        ("POST", STREAM.format("hello")),
    ],
)
async def test_v1_needs_a_valid_bearer_key(
    make_app: Callable[..., FastAPI], method: str, path: str
) -> None:
    async with serving(make_app()) as c:
        missing = await c.request(method, path)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {
            "detail": "missing API key: send 'Authorization: Bearer <key>'",
            "code": "unauthorized",
        }
        wrong = await c.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
        basic = await c.request(method, path, headers={"Authorization": "Basic YTpi"})
        assert basic.status_code == 401


async def test_no_key_is_a_401_before_the_request_is_judged(
    make_app: Callable[..., FastAPI],
) -> None:
    """FastAPI validates bodies before dependencies run; a caller without a key still gets 401."""
    json_type = {"content-type": "application/json"}
    async with serving(make_app()) as c:
        r = await c.post(INVOKE.format("hello"), content=b"{bad", headers=json_type)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        r = await c.post(
            INVOKE.format("hello"),
            content=b"{bad",
            headers={**json_type, "Authorization": "Bearer wrong"},
        )
        assert r.status_code == 401 and r.json()["detail"] == "invalid API key"
        r = await c.get("/v1/tools", params={"format": "xml"})
        assert r.status_code == 401
        r = await c.post("/api/plugins/invoke", content=b"[", headers=json_type)
        assert r.status_code == 401 and "error" in r.json()
        r = await c.post("/plugin/t/dispatch/tool/invoke", json={"nope": 1})
        assert r.status_code == 401 and r.json()["code"] == -401
        # with a valid key the same requests are judged on their content
        r = await c.post(
            INVOKE.format("hello"), content=b"{bad", headers={**json_type, **auth("invoke")}
        )
        assert r.status_code == 400


async def test_roles_limit_what_a_key_may_do(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app()) as c:
        # invoke keys list tools and call them, but may not read plugin details
        r = await c.get("/v1/plugins", headers=auth("invoke"))
        assert r.status_code == 403
        assert r.json() == {
            "detail": "an API key with role 'invoke' may not read plugins "
            "(roles allowed: admin, member)",
            "code": "forbidden",
        }
        assert (await c.get("/v1/plugins/acme/greet", headers=auth("invoke"))).status_code == 403
        assert (await c.get("/v1/tools", headers=auth("invoke"))).status_code == 200
        r = await c.post(
            INVOKE.format("hello"), json={"arguments": {"name": "i"}}, headers=auth("invoke")
        )
        assert r.status_code == 200
        # members read; admins also see where plugins come from
        member = (await c.get("/v1/plugins", headers=auth("member"))).json()
        admin = (await c.get("/v1/plugins", headers=auth("admin"))).json()
        assert "source" not in member[0]
        assert admin[0]["source"].startswith("dir:")


async def test_whoami_describes_the_key(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app()) as c:
        me = (await c.get("/v1/whoami", headers=auth("invoke"))).json()
    assert me["tenant_id"] == "acme" and me["role"] == "invoke"
    assert me["key_id"].startswith("k_") and KEYS["invoke"] not in json.dumps(me)
    assert me["scopes"] == ["invoke", "tools"]


async def test_rate_limit_hook_refuses_with_retry_after(make_app: Callable[..., FastAPI]) -> None:
    seen: list[tuple[str, str, str | None]] = []

    def limit(principal: Principal, action: str, resource: str | None) -> RateDecision:
        seen.append((principal.tenant_id, action, resource))
        return RateDecision(action != "invoke", retry_after=2.5)

    async with serving(make_app(rate_limit=limit)) as c:
        assert (await c.get("/v1/tools", headers=auth())).status_code == 200
        r = await c.post(INVOKE.format("hello"), json={}, headers=auth())
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.json()["code"] == "rate_limited"
    assert seen == [("acme", "tools", None), ("acme", "invoke", "acme/greet.hello")]


async def test_visibility_hook_hides_plugins_from_a_tenant(
    make_app: Callable[..., FastAPI],
) -> None:
    class OnlyNotes:
        async def visible_plugins(self, tenant_id: str) -> list[str] | None:
            return None if tenant_id == "acme" else ["local/notes"]

    async with serving(make_app(visibility=OnlyNotes())) as c:
        other = {"Authorization": f"Bearer {KEYS['other']}"}
        ids = [p["id"] for p in (await c.get("/v1/plugins", headers=other)).json()]
        assert ids == ["local/notes"]
        assert (await c.get("/v1/plugins/acme/greet", headers=other)).status_code == 404
        r = await c.post(INVOKE.format("hello"), json={"arguments": {"name": "x"}}, headers=other)
        assert r.status_code == 404 and r.json()["code"] == "plugin_not_found"
        tools = (await c.get("/v1/tools", headers=other)).json()["tools"]
        assert {t["function"]["name"] for t in tools} == {"notes__NoteTaker", "notes__Crasher"}
        r = await c.get("/v1/tools", params={"plugin": "acme/greet"}, headers=other)
        assert r.status_code == 404
        # the tenant that sees everything is unaffected
        assert len((await c.get("/v1/plugins", headers=auth())).json()) == 3


async def test_calls_record_the_tenant_as_caller(
    make_app: Callable[..., FastAPI],
) -> None:
    events: list[AuditEvent] = []

    class Audit:
        @hookimpl
        def audit(self, event: AuditEvent) -> None:
            events.append(event)

    def host(config: ServerConfig) -> PluginHost:
        return PluginHost(config.plugins_dirs, entry_points=False, hooks=[Audit()])

    async with serving(make_app(host_factory=host)) as c:
        other = {"Authorization": f"Bearer {KEYS['other']}"}
        await c.post(INVOKE.format("hello"), json={"arguments": {"name": "a"}}, headers=auth())
        await c.post(INVOKE.format("hello"), json={"arguments": {"name": "b"}}, headers=other)
        await c.post(STREAM.format("count"), json={"arguments": {"n": 1}}, headers=other)
    assert [(e.tool, e.caller) for e in events] == [
        ("hello", "tenant:acme"),
        ("hello", "tenant:globex"),
        ("count", "tenant:globex"),
    ]


# -- plugins and tools ---------------------------------------------------------------------------


async def test_list_plugins_imports_nothing_and_detail_loads(
    make_app: Callable[..., FastAPI],
) -> None:
    async with serving(make_app()) as c:
        listing = (await c.get("/v1/plugins", headers=auth())).json()
        by_id = {p["id"]: p for p in listing}
        assert set(by_id) == {"acme/greet", "acme/blocked", "local/notes"}
        assert by_id["acme/greet"]["status"] == "available" and by_id["acme/greet"]["tools"] is None
        assert by_id["acme/blocked"]["status"] == "denied"
        assert by_id["local/notes"]["style"] == "dialer"

        detail = (await c.get("/v1/plugins/acme/greet", headers=auth())).json()
        assert detail["status"] == "loaded"
        assert "hello" in detail["tools"]
        hello = next(t for t in detail["tool_specs"] if t["name"] == "hello")
        assert hello["llm_name"] == "greet__hello"
        assert hello["input_schema"]["required"] == ["name"]
        count = next(t for t in detail["tool_specs"] if t["name"] == "count")
        assert count["streaming"] is True

        blocked = (await c.get("/v1/plugins/acme/blocked", headers=auth())).json()
        assert blocked["status"] == "denied" and blocked["tool_specs"] == []
        r = await c.get("/v1/plugins/acme/nope", headers=auth())
        assert r.status_code == 404
        assert r.json() == {"detail": "no plugin 'acme/nope'", "code": "plugin_not_found"}


@pytest.mark.parametrize(
    ("fmt", "name_of"),
    [
        ("openai", lambda t: t["function"]["name"]),
        ("responses", lambda t: t["name"]),
        ("anthropic", lambda t: t["name"]),
        ("mcp", lambda t: t["name"]),
    ],
)
async def test_tools_in_every_format(
    make_app: Callable[..., FastAPI], fmt: str, name_of: Callable[[dict[str, Any]], str]
) -> None:
    async with serving(make_app()) as c:
        r = await c.get("/v1/tools", params={"format": fmt}, headers=auth("invoke"))
        body = r.json()
        assert r.status_code == 200 and body["format"] == fmt
        names = {name_of(t) for t in body["tools"]}
        assert {"greet__hello", "notes__NoteTaker"} <= names
        assert not any(n.startswith("blocked__") for n in names)
        only = await c.get(
            "/v1/tools", params={"format": fmt, "plugin": "local/notes"}, headers=auth()
        )
        assert {name_of(t) for t in only.json()["tools"]} == {"notes__NoteTaker", "notes__Crasher"}


async def test_tools_rejects_an_unknown_format(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app()) as c:
        r = await c.get("/v1/tools", params={"format": "xml"}, headers=auth())
    assert r.status_code == 422
    assert r.json()["detail"].startswith("invalid request: query.format: Input should be")


# -- invoke --------------------------------------------------------------------------------------


async def test_invoke_returns_the_result(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app()) as c:
        r = await c.post(
            INVOKE.format("hello"), json={"arguments": {"name": "Bob"}}, headers=auth()
        )
        assert r.status_code == 200
        assert r.json() == {
            "is_error": False,
            "content": [{"type": "text", "text": "Hello Bob!"}],
            "structured": None,
        }
        data = (
            await c.post(INVOKE.format("data"), json={"arguments": {"n": 3}}, headers=auth())
        ).json()
        assert data["structured"] == {"n": 3, "items": [0, 1, 2]}
        assert data["content"] == [{"type": "json", "data": {"n": 3, "items": [0, 1, 2]}}]
        # no body at all: no arguments
        r = await c.post(INVOKE.format("data"), headers=auth())
        assert r.json()["structured"] == {"n": 2, "items": [0, 1]}
        pic = (await c.post(INVOKE.format("picture"), json={}, headers=auth())).json()
        assert pic["content"][0]["type"] == "image"
        assert pic["content"][0]["mime_type"] == "image/png"


async def test_tool_failures_are_results_not_http_errors(
    make_app: Callable[..., FastAPI],
) -> None:
    async with serving(make_app()) as c:
        fail = await c.post(
            INVOKE.format("fail"), json={"arguments": {"msg": "nope"}}, headers=auth()
        )
        assert fail.status_code == 200
        assert fail.json() == {
            "is_error": True,
            "content": [{"type": "text", "text": "nope"}],
            "structured": None,
            "reason": "tool_error",
        }
        boom = (await c.post(INVOKE.format("boom"), json={}, headers=auth())).json()
        assert boom["is_error"] and boom["reason"] == "exception"
        assert boom["content"][0]["text"] == "RuntimeError: kaboom"
        # arguments that violate the tool's schema
        bad = await c.post(
            INVOKE.format("hello"), json={"arguments": {"name": 5, "x": 1}}, headers=auth()
        )
        assert bad.status_code == 200
        assert bad.json()["reason"] == "invalid_arguments"
        assert "x: unknown argument" in bad.json()["content"][0]["text"]
        # the caller's timeout shortens the tool's deadline
        slow = await c.post(
            INVOKE.format("slow"),
            json={"arguments": {"seconds": 5}, "timeout": 0.05},
            headers=auth(),
        )
        assert slow.json()["is_error"] and slow.json()["reason"] == "timeout"


async def test_unknown_and_disabled_plugins_and_tools(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app()) as c:
        r = await c.post("/v1/plugins/acme/nope/tools/x/invoke", json={}, headers=auth())
        assert r.status_code == 404 and r.json()["code"] == "plugin_not_found"
        r = await c.post(INVOKE.format("nope"), json={}, headers=auth())
        assert r.status_code == 404
        assert r.json()["code"] == "tool_not_found"
        assert "has no tool 'nope'; its tools: blob, boom" in r.json()["detail"]
        r = await c.post("/v1/plugins/acme/blocked/tools/hello/invoke", json={}, headers=auth())
        assert r.status_code == 409
        assert r.json()["code"] == "plugin_disabled"
        r = await c.post("/v1/plugins/acme/gr%20eet/tools/x/invoke", json={}, headers=auth())
        assert r.status_code == 422


async def test_bad_request_bodies_get_clear_errors(make_app: Callable[..., FastAPI]) -> None:
    url = INVOKE.format("hello")
    async with serving(make_app()) as c:
        r = await c.post(
            url, content=b'{"arguments": {', headers={**auth(), "content-type": "application/json"}
        )
        assert r.status_code == 400
        assert r.json()["code"] == "bad_json"
        assert r.json()["detail"].startswith("malformed JSON body: ")

        r = await c.post(
            url,
            content=b"name=Bob",
            headers={**auth(), "content-type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 415
        assert r.json()["detail"] == (
            "the request body must be JSON: send 'Content-Type: application/json' "
            "(got application/x-www-form-urlencoded)"
        )
        r = await c.post(url, content=b'{"arguments": {}}', headers=auth())
        assert r.status_code == 415  # no content type at all

        r = await c.post(url, json={"arguments": [1, 2]}, headers=auth())
        assert r.status_code == 422
        assert r.json()["detail"] == (
            "invalid request: arguments: Input should be a valid dictionary"
        )
        r = await c.post(url, json={"arguments": {}, "timeout": -1}, headers=auth())
        assert r.status_code == 422 and "timeout" in r.json()["detail"]
        r = await c.post(url, json={"args": {}}, headers=auth())
        assert r.status_code == 422
        assert r.json()["errors"][0]["loc"] == ["body", "args"]
        # a JSON content type with extra parameters or a +json suffix is fine
        r = await c.post(
            url,
            content=b'{"arguments": {"name": "x"}}',
            headers={**auth(), "content-type": "application/json; charset=utf-8"},
        )
        assert r.status_code == 200


async def test_oversized_bodies_are_refused_before_they_are_read(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(max_body_bytes=1000)
    big = {"arguments": {"name": "x" * 2000}}
    async with serving(app) as c:
        r = await c.post(INVOKE.format("hello"), json=big, headers=auth())
        assert r.status_code == 413
        assert r.json() == {
            "detail": "request body larger than 1000 bytes",
            "code": "body_too_large",
        }
        assert r.headers["connection"] == "close"

        async def chunks() -> Any:  # no Content-Length: counted as it arrives
            for _ in range(50):
                yield b" " * 100

        r = await c.post(
            INVOKE.format("hello"),
            content=chunks(),
            headers={**auth(), "content-type": "application/json"},
        )
        assert r.status_code == 413
        ok = await c.post(INVOKE.format("hello"), json={"arguments": {"name": "x"}}, headers=auth())
        assert ok.status_code == 200

    # At the ASGI level: with a Content-Length over the limit, no body message is consumed.
    received: list[str] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append("body")
        return {"type": "http.request", "body": b"x" * 5000, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": INVOKE.format("hello"),
        "raw_path": b"",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", b"5000"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    await app(scope, receive, send)
    assert received == []
    assert sent[0]["status"] == 413


async def test_requests_over_the_time_limit_get_504(
    make_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    async with serving(make_app(request_timeout=0.3)) as c:
        r = await c.post(
            INVOKE.format("slow"),
            json={"arguments": {"seconds": 5, "marker": str(marker)}},
            headers=auth(),
        )
        assert r.status_code == 504
        assert r.json() == {
            "detail": "the request took longer than the server's limit of 0.3 s",
            "code": "request_timeout",
        }
        # the call was cancelled with the request
        assert marker.read_text() == "cancelled"
        ready = (await c.get("/readyz")).json()
        assert ready["calls_in_flight"] == 0


async def test_unknown_routes_and_methods(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app()) as c:
        r = await c.get("/v2/things")
        assert r.status_code == 404 and r.json()["detail"] == "no endpoint GET /v2/things"
        r = await c.delete("/v1/plugins", headers=auth())
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


# -- invoke-stream -------------------------------------------------------------------------------


async def test_stream_sse_sends_events_then_the_result(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app()) as c:
        r = await c.post(
            STREAM.format("count"),
            json={"arguments": {"n": 2}},
            headers={**auth(), "accept": "text/event-stream"},
        )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    events = sse_events(r.text)
    assert [name for name, _ in events] == [
        "progress",
        "log",
        "content",
        "progress",
        "log",
        "content",
        "result",
    ]
    assert events[0][1] == {"event": "progress", "progress": 1, "total": 2, "message": "step 1"}
    assert events[1][1] == {"event": "log", "level": "info", "message": "made chunk 0"}
    assert events[2][1] == {"event": "content", "type": "text", "text": "c0"}
    final = events[-1][1]
    assert final["is_error"] is False
    assert final["content"] == [{"type": "text", "text": "c0"}, {"type": "text", "text": "c1"}]


async def test_stream_ndjson_and_accept_negotiation(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app()) as c:
        r = await c.post(
            STREAM.format("hello"),
            json={"arguments": {"name": "N"}},
            headers={**auth(), "accept": "application/x-ndjson"},
        )
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert lines == [
            {"event": "content", "type": "text", "text": "Hello N!"},
            {
                "event": "result",
                "is_error": False,
                "content": [{"type": "text", "text": "Hello N!"}],
                "structured": None,
            },
        ]
        # no Accept, or */*: SSE
        r = await c.post(
            STREAM.format("hello"),
            json={"arguments": {"name": "N"}},
            headers={**auth(), "accept": "*/*"},
        )
        assert r.headers["content-type"].startswith("text/event-stream")
        pref = "text/event-stream;q=0.5, application/x-ndjson"
        r = await c.post(
            STREAM.format("hello"),
            json={"arguments": {"name": "N"}},
            headers={**auth(), "accept": pref},
        )
        assert r.headers["content-type"].startswith("application/x-ndjson")
        r = await c.post(STREAM.format("hello"), json={}, headers={**auth(), "accept": "text/html"})
        assert r.status_code == 406 and r.json()["code"] == "not_acceptable"


async def test_stream_of_a_failing_tool_sends_its_text_only_in_the_result(
    make_app: Callable[..., FastAPI],
) -> None:
    async with serving(make_app()) as c:
        r = await c.post(STREAM.format("fail"), json={"arguments": {"msg": "bad"}}, headers=auth())
        events = sse_events(r.text)
        assert [n for n, _ in events] == ["result"]
        assert events[0][1]["reason"] == "tool_error"
        r = await c.post(STREAM.format("nope"), json={}, headers=auth())
        assert r.status_code == 404  # resolved before the stream starts


async def test_client_disconnect_cancels_the_call(
    make_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    """Driven at the ASGI level: the client disconnects after the first event."""
    marker = tmp_path / "marker"
    app = make_app()
    body = json.dumps({"arguments": {"marker": str(marker)}}).encode()
    first_chunk = asyncio.Event()
    sent: list[dict[str, Any]] = []
    state = {"body_sent": False}

    async def receive() -> dict[str, Any]:
        if not state["body_sent"]:
            state["body_sent"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await first_chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_chunk.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": STREAM.format("watch"),
        "raw_path": b"",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {KEYS['member']}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app(scope, receive, send), timeout=5)
        assert app.state.plughub.calls_in_flight == 0
    assert sent[0]["status"] == 200
    assert b'"text":"started"' in sent[1]["body"]
    assert marker.read_text() == "cancelled"
    assert not any(m.get("more_body") is False for m in sent)  # the stream never completed
