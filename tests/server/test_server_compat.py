"""The AI-Dialer and Dify compatible endpoints."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Literal

import pytest
from _daemon import KEYS, auth, serving
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from plughub.host import PluginHost
from plughub.sdk import AuditEvent, hookimpl
from plughub.server import ServerConfig

pytestmark = pytest.mark.anyio

DIALER = "/api/plugins/invoke"


# -- AI-Dialer -----------------------------------------------------------------------------------


async def test_dialer_invoke_answers_what_the_plugin_returned(
    make_app: Callable[..., FastAPI],
) -> None:
    async with serving(make_app()) as c:
        r = await c.post(
            DIALER,
            json={"plugin": "NoteTaker", "context": {"text": "call Bob"}},
            headers=auth("invoke"),
        )
    assert r.status_code == 200
    assert r.json() == {"note": "call Bob", "message": "Note saved"}


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"plugin": "NoteTaker", "context": {"text": "  "}}, 400, "text must not be empty"),
        (
            {"plugin": "NoteTaker", "context": {}},
            400,
            "invalid arguments: <arguments>: 'text' is a required property",
        ),
        ({"plugin": "Crasher", "context": {}}, 500, "RuntimeError: database unavailable"),
        ({"plugin": "Nope", "context": {}}, 404, "no plugin 'Nope'"),
        ({"context": {}}, 400, "invalid request: plugin: Field required"),
        (
            {"plugin": "NoteTaker", "context": "text"},
            400,
            "invalid request: context: Input should be a valid dictionary",
        ),
        (
            {"plugin": "acme/greet", "context": {}},
            404,
            "plugin 'acme/greet' has several tools; this endpoint runs single-tool plugins",
        ),
        (
            {"plugin": "acme/blocked", "context": {}},
            409,
            "plugin 'acme/blocked': not available: not allowed by PLUGHUB_LOAD_PLUGINS / deny list",
        ),
    ],
)
async def test_dialer_errors_are_error_objects(
    make_app: Callable[..., FastAPI], body: dict[str, Any], status: int, error: str
) -> None:
    async with serving(make_app()) as c:
        r = await c.post(DIALER, json=body, headers=auth())
    assert r.status_code == status
    assert r.json() == {"error": error}


async def test_dialer_refusals_before_the_call(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app()) as c:
        r = await c.post(DIALER, json={"plugin": "NoteTaker", "context": {"text": "x"}})
        assert r.status_code == 401
        assert r.json() == {"error": "missing API key: send 'Authorization: Bearer <key>'"}
        r = await c.post(
            DIALER, content=b"{oops", headers={**auth(), "content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"].startswith("malformed JSON body")
        r = await c.post(
            DIALER, content=b"plugin=NoteTaker", headers={**auth(), "content-type": "text/plain"}
        )
        assert r.status_code == 415 and list(r.json()) == ["error"]


async def test_dialer_runs_single_tool_plugins_by_id(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app(deny=[])) as c:
        r = await c.post(DIALER, json={"plugin": "acme/blocked"}, headers=auth())
    assert r.status_code == 200 and r.json() == "hi"


async def test_compat_endpoints_can_be_turned_off(make_app: Callable[..., FastAPI]) -> None:
    async with serving(make_app(compat_dialer=False, compat_dify=False)) as c:
        r = await c.post(DIALER, json={"plugin": "NoteTaker"}, headers=auth())
        assert r.status_code == 404
        r = await c.post(
            "/plugin/acme/dispatch/tool/invoke", json={}, headers={"X-Api-Key": KEYS["dify"]}
        )
        assert r.status_code == 404


# -- Dify ----------------------------------------------------------------------------------------


class _Text(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class _Json(BaseModel):
    model_config = ConfigDict(extra="forbid")
    json_object: dict[str, Any] | list[Any]


class _Blob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blob: str


class _BlobChunk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    sequence: int
    total_length: int
    blob: str
    end: bool


class _Variable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variable_name: str
    variable_value: Any
    stream: bool = False


class _Log(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    label: str
    parent_id: str | None = None
    error: str | None = None
    status: Literal["start", "error", "success"]
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None


_SHAPES: dict[str, type[BaseModel]] = {
    "text": _Text,
    "link": _Text,
    "image": _Text,
    "json": _Json,
    "blob": _Blob,
    "blob_chunk": _BlobChunk,
    "variable": _Variable,
    "log": _Log,
}


class _Message(BaseModel):
    """Dify's ToolInvokeMessage as it travels: ``{type, message, meta}``."""

    model_config = ConfigDict(extra="forbid")
    type: str
    message: dict[str, Any]
    meta: dict[str, Any] | None


def dify_chunks(text: str) -> list[dict[str, Any]]:
    """Parse the stream the way Dify's client does: lines, ``data:`` stripped, one JSON each."""
    assert text.endswith("\n\n")
    out = []
    for line in text.splitlines():
        if not line:
            continue
        assert line.startswith("data: ")
        chunk = json.loads(line[len("data: ") :])
        assert set(chunk) == {"code", "message", "data"}
        if chunk["code"] == 0:
            assert chunk["message"] == "success"
            msg = _Message.model_validate(chunk["data"])
            _SHAPES[msg.type].model_validate(msg.message)
        out.append(chunk)
    return out


def merge_blobs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the Dify API's merge_blob_chunks does: blob_chunks by id -> one blob, meta of the end."""
    files: dict[str, bytearray] = {}
    out = []
    for m in messages:
        if m["type"] != "blob_chunk":
            out.append(m)
            continue
        chunk = m["message"]
        data = base64.b64decode(chunk["blob"])
        assert len(data) <= 8192
        files.setdefault(chunk["id"], bytearray()).extend(data)
        if chunk["end"]:
            blob = bytes(files.pop(chunk["id"]))
            assert len(blob) == chunk["total_length"]
            out.append({"type": "blob", "message": {"blob": blob}, "meta": m["meta"]})
    assert not files
    return out


def dify_headers(key: str = "dify", plugin: str | None = "acme/greet") -> dict[str, str]:
    headers = {"X-Api-Key": KEYS[key]}
    if plugin is not None:
        headers["X-Plugin-ID"] = plugin
    return headers


def dify_body(tool: str, params: dict[str, Any] | None = None, provider: str = "greet") -> dict:
    return {
        "user_id": "user-1",
        "app_id": "app-1",
        "data": {
            "provider": provider,
            "tool": tool,
            "credentials": {"api_key": "ignored"},
            "credential_type": "api-key",
            "tool_parameters": params or {},
        },
    }


async def dify_call(c: Any, tool: str, params: dict[str, Any] | None = None) -> list[dict]:
    r = await c.post(
        "/plugin/t-1/dispatch/tool/invoke", json=dify_body(tool, params), headers=dify_headers()
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    return dify_chunks(r.text)


async def test_dify_stream_shapes_for_each_kind_of_content(
    make_app: Callable[..., FastAPI],
) -> None:
    async with serving(make_app()) as c:
        text = await dify_call(c, "hello", {"name": "Dify"})
        assert text == [
            {
                "code": 0,
                "message": "success",
                "data": {"type": "text", "message": {"text": "Hello Dify!"}, "meta": None},
            }
        ]

        data = [x["data"] for x in await dify_call(c, "data", {"n": 2})]
        assert data == [
            {"type": "json", "message": {"json_object": {"n": 2, "items": [0, 1]}}, "meta": None},
            {
                "type": "variable",
                "message": {"variable_name": "n", "variable_value": 2, "stream": False},
                "meta": None,
            },
            {
                "type": "variable",
                "message": {"variable_name": "items", "variable_value": [0, 1], "stream": False},
                "meta": None,
            },
        ]

        link = [x["data"] for x in await dify_call(c, "link")]
        assert link == [
            {"type": "link", "message": {"text": "https://example.com/doc"}, "meta": None}
        ]

        picture = [x["data"] for x in await dify_call(c, "picture")]
        assert len(picture) == 1 and picture[0]["type"] == "blob"
        assert picture[0]["meta"] == {"mime_type": "image/png"}
        assert base64.b64decode(picture[0]["message"]["blob"]).startswith(b"\x89PNG")


async def test_dify_large_blobs_travel_as_8k_chunks(make_app: Callable[..., FastAPI]) -> None:
    size = 20000
    async with serving(make_app()) as c:
        messages = [x["data"] for x in await dify_call(c, "blob", {"size": size})]
    assert [m["type"] for m in messages] == ["blob_chunk"] * 4
    chunks = [m["message"] for m in messages]
    assert len({ch["id"] for ch in chunks}) == 1
    assert [ch["sequence"] for ch in chunks] == [0, 1, 2, 3]
    assert [ch["end"] for ch in chunks] == [False, False, False, True]
    assert {ch["total_length"] for ch in chunks} == {size}
    assert chunks[-1]["blob"] == ""
    assert messages[-1]["meta"] == {"mime_type": "application/octet-stream", "filename": "data.bin"}
    merged = merge_blobs(messages)
    assert len(merged) == 1
    assert merged[0]["message"]["blob"] == bytes(i % 251 for i in range(size))
    assert merged[0]["meta"]["filename"] == "data.bin"


async def test_dify_progress_and_logs_become_log_messages(
    make_app: Callable[..., FastAPI],
) -> None:
    async with serving(make_app()) as c:
        messages = [x["data"] for x in await dify_call(c, "count", {"n": 2})]
    assert [m["type"] for m in messages] == ["log", "log", "text", "log", "log", "text"]
    progress = [
        m["message"] for m in messages if m["type"] == "log" and "progress" in m["message"]["data"]
    ]
    assert [p["status"] for p in progress] == ["start", "success"]
    assert [p["label"] for p in progress] == ["step 1", "step 2"]
    assert progress[0]["id"] == progress[1]["id"]  # one log entry, updated
    logs = [
        m["message"] for m in messages if m["type"] == "log" and "level" in m["message"]["data"]
    ]
    assert logs[0]["label"] == "made chunk 0" and logs[0]["status"] == "success"
    assert logs[0]["id"] != logs[1]["id"]
    assert [m["message"]["text"] for m in messages if m["type"] == "text"] == ["c0", "c1"]


@pytest.mark.parametrize(
    ("tool", "params", "message", "error_type", "args"),
    [
        ("fail", {"msg": "nope"}, "nope", "ToolInvokeError", {"reason": "tool_error"}),
        (
            "boom",
            {},
            "RuntimeError: kaboom",
            "RuntimeError",
            {"reason": "exception", "error_type": "RuntimeError"},
        ),
        (
            "hello",
            {},
            "invalid arguments: name: Field required",
            "ToolParameterValidationError",
            {"reason": "invalid_arguments"},
        ),
    ],
)
async def test_dify_failures_end_the_stream_with_a_double_encoded_error(
    make_app: Callable[..., FastAPI],
    tool: str,
    params: dict[str, Any],
    message: str,
    error_type: str,
    args: dict[str, str],
) -> None:
    async with serving(make_app()) as c:
        chunks = await dify_call(c, tool, params)
    assert len(chunks) == 1  # the error text is not also sent as content
    assert chunks[0]["code"] == -500 and chunks[0]["data"] is None
    outer = json.loads(chunks[0]["message"])
    assert outer["error_type"] == "PluginInvokeError" and outer["args"] is None
    inner = json.loads(outer["message"])
    assert inner == {"message": message, "error_type": error_type, "args": args}


async def test_dify_refusals(make_app: Callable[..., FastAPI]) -> None:
    url = "/plugin/{}/dispatch/tool/invoke"
    async with serving(make_app()) as c:
        r = await c.post(url.format("t-1"), json=dify_body("hello"))
        assert r.status_code == 401
        assert r.json() == {
            "code": -401,
            "message": "missing API key: send 'X-Api-Key: <key>'",
            "data": None,
        }
        assert "www-authenticate" not in r.headers
        r = await c.post(url.format("t-1"), json=dify_body("hello"), headers=auth("admin"))
        assert r.status_code == 401  # the Dify endpoint reads X-Api-Key, not a bearer token
        r = await c.post(
            url.format("t-1"),
            json=dify_body("hello"),
            headers={"X-Api-Key": "wrong", "X-Plugin-ID": "acme/greet"},
        )
        assert r.status_code == 401 and r.json()["code"] == -401

        # the key's tenant must be the path's (a '*' key serves every tenant)
        r = await c.post(
            url.format("globex"),
            json=dify_body("hello", {"name": "x"}),
            headers=dify_headers("member"),
        )
        assert r.status_code == 403
        assert r.json() == {
            "code": -403,
            "data": None,
            "message": "this API key may not act for tenant 'globex'",
        }
        r = await c.post(
            url.format("acme"),
            json=dify_body("hello", {"name": "x"}),
            headers=dify_headers("member"),
        )
        assert r.status_code == 200

        r = await c.post(
            url.format("t-1"), json=dify_body("hello"), headers=dify_headers(plugin=None)
        )
        assert r.status_code == 400 and r.json()["code"] == -400
        r = await c.post(
            url.format("t-1"), json=dify_body("hello"), headers=dify_headers(plugin="acme/nope")
        )
        assert r.status_code == 404 and r.json()["message"] == "no plugin 'acme/nope'"
        r = await c.post(url.format("t-1"), json=dify_body("nope"), headers=dify_headers())
        assert r.status_code == 404 and r.json()["code"] == -404
        r = await c.post(
            url.format("t-1"), json=dify_body("hello", provider="other"), headers=dify_headers()
        )
        assert r.status_code == 404
        assert r.json()["message"] == "tool provider 'other' not found in plugin 'acme/greet'"
        r = await c.post(url.format("t-1"), json={"user_id": "u"}, headers=dify_headers())
        assert r.status_code == 400
        assert r.json()["message"] == "invalid request: data: Field required"
        r = await c.post(
            url.format("t-1"), json=dify_body("hello"), headers=dify_headers(plugin="acme/blocked")
        )
        assert r.status_code == 409 and r.json()["code"] == -409  # denied by the config


async def test_dify_calls_record_the_path_tenant(make_app: Callable[..., FastAPI]) -> None:
    events: list[AuditEvent] = []

    class Audit:
        @hookimpl
        def audit(self, event: AuditEvent) -> None:
            events.append(event)

    def host(config: ServerConfig) -> PluginHost:
        return PluginHost(config.plugins_dirs, entry_points=False, hooks=[Audit()])

    async with serving(make_app(host_factory=host)) as c:
        await c.post(
            "/plugin/ws-42/dispatch/tool/invoke",
            json=dify_body("hello", {"name": "x"}),
            headers={**dify_headers(), "X-Plugin-ID": "acme/greet:1.0.0@abc"},
        )
    assert [(e.tool, e.caller) for e in events] == [("hello", "tenant:ws-42")]
