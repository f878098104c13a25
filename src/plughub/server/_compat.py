"""Endpoints that speak other systems' protocols: the AI-Dialer backend and the Dify daemon.

AI-Dialer (seed 001): ``POST /api/plugins/invoke`` with ``{"plugin": "ClassName", "context":
{...}}`` answers what the plugin's ``execute`` returned, or ``{"error": message}`` with the
status a Flask backend around the seed's registry gives (``DIALER_STATUS``).

Dify (the plugin daemon's dispatch API): ``POST /plugin/{tenant_id}/dispatch/tool/invoke`` with
``X-Api-Key`` and ``X-Plugin-ID`` streams ``data: {"code": 0, "message": "success", "data":
<ToolInvokeMessage>}`` events; a failed call ends with ``{"code": -500, "message": <the
double-encoded PluginInvokeError>}``. See docs/compat-endpoints.md for the mapping.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from starlette.responses import Response

from ..sdk import Blob, Image, Json, Link, LogEntry, Progress, Text, ToolResult
from ._auth import Principal
from ._deps import requires, requires_dify, state_of
from ._errors import ApiError, JSONBody
from ._models import DialerInvokeRequest, DifyInvokeRequest
from ._streaming import SSE, StreamResponse, sse_frame

__all__ = [
    "DIALER_STATUS",
    "DIFY_CHUNK",
    "DIFY_ERROR_TYPES",
    "dialer_router",
    "dify_error_message",
    "dify_messages",
    "dify_router",
]

log = logging.getLogger("plughub.server")

dialer_router = APIRouter(tags=["compat: AI-Dialer"])
dify_router = APIRouter(tags=["compat: Dify"])

#: Result reason -> HTTP status of the AI-Dialer endpoint (anything else: 500).
DIALER_STATUS: dict[str, int] = {
    "tool_error": 400,  # the plugin raised ValueError/TypeError or a context key was missing
    "invalid_arguments": 400,
    "permission_denied": 403,
    "missing_credentials": 403,
    "denied_by_policy": 403,
    "rate_limited": 429,
    "busy": 503,
    "circuit_open": 503,
    "timeout": 504,
}

_DIALER_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "What the plugin's execute(context) returned."},
    400: {"description": 'Bad request or the plugin\'s input error: {"error": message}.'},
    401: {"description": 'Missing or invalid API key: {"error": message}.'},
    403: {"description": 'Role or permission refused: {"error": message}.'},
    404: {"description": 'No such plugin: {"error": message}.'},
    429: {"description": 'Rate limited: {"error": message}.'},
    500: {"description": 'The plugin failed: {"error": message}.'},
    504: {"description": 'The plugin timed out: {"error": message}.'},
}


@dialer_router.post(
    "/api/plugins/invoke",
    responses=_DIALER_DOC,
    summary="AI-Dialer: invoke a plugin by class name",
)
async def dialer_invoke(
    request: Request,
    body: DialerInvokeRequest,
    principal: Annotated[Principal, Depends(requires("invoke"))],
) -> Response:
    """Runs ``plugin`` (an AI-Dialer class name, or any single-tool plugin's id or name) with
    ``context`` as its arguments; answers the plugin's return value as JSON. Authenticate with
    ``Authorization: Bearer <key>`` (the seed's backend had no authentication)."""
    state = state_of(request)
    name = body.plugin
    try:
        b = await state.resolve(principal.tenant_id, name, name)
    except ApiError as e:
        if e.code != "tool_not_found":
            raise
        try:  # a plughub plugin with a single tool, named by id or name
            b = await state.resolve(principal.tenant_id, name, None)
        except ApiError as again:
            if again.code == "bad_request":
                raise ApiError(
                    404,
                    f"plugin {name!r} has several tools; this endpoint runs single-tool plugins",
                    "tool_not_found",
                ) from None
            raise
    result = await state.invoke(principal, b, body.context, None)
    if not result.is_error:
        value = result.structured
        if value is None and result.content:
            value = result.text
        return JSONBody(value)
    status = DIALER_STATUS.get(result.reason or "", 500)
    headers = {}
    if result.reason == "rate_limited" and result.meta.get("retry_after") is not None:
        headers["Retry-After"] = str(max(1, int(float(result.meta["retry_after"]) + 0.999)))
    return JSONBody({"error": result.text}, status_code=status, headers=headers)


# -- Dify ----------------------------------------------------------------------------------------

DIFY_CHUNK = 8192
"""Blobs larger than this go out as ``blob_chunk`` messages of this size (the SDK's size)."""

#: Result reason -> the inner ``error_type`` Dify's API maps to its own exceptions.
DIFY_ERROR_TYPES: dict[str, str] = {
    "rate_limited": "InvokeRateLimitError",
    "permission_denied": "InvokeAuthorizationError",
    "denied_by_policy": "InvokeAuthorizationError",
    "missing_credentials": "ToolProviderCredentialValidationError",
    "invalid_arguments": "ToolParameterValidationError",
}


def _msg(
    kind: str, message: dict[str, Any] | None, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"type": kind, "message": message, "meta": meta}


def _blob(data: bytes, meta: dict[str, Any]) -> list[dict[str, Any]]:
    if len(data) <= DIFY_CHUNK:
        return [_msg("blob", {"blob": base64.b64encode(data).decode("ascii")}, meta)]
    blob_id = uuid.uuid4().hex
    chunks = [data[i : i + DIFY_CHUNK] for i in range(0, len(data), DIFY_CHUNK)]
    out = [
        _msg(
            "blob_chunk",
            {
                "id": blob_id,
                "sequence": seq,
                "total_length": len(data),
                "blob": base64.b64encode(chunk).decode("ascii"),
                "end": False,
            },
            meta,
        )
        for seq, chunk in enumerate(chunks)
    ]
    end = {
        "id": blob_id,
        "sequence": len(chunks),
        "total_length": len(data),
        "blob": "",
        "end": True,
    }
    out.append(_msg("blob_chunk", end, meta))
    return out


def _log(
    label: str, status: str, data: dict[str, Any], log_id: str, error: str | None = None
) -> dict[str, Any]:
    return _msg(
        "log",
        {
            "id": log_id,
            "label": label,
            "parent_id": None,
            "error": error,
            "status": status,
            "data": data,
            "metadata": None,
        },
    )


def dify_messages(event: Any, progress_id: str) -> list[dict[str, Any]]:
    """The ``ToolInvokeMessage`` dicts (``{type, message, meta}``) for one stream event.

    ``Text`` -> ``text``; ``Json`` of an object or array -> ``json`` (other values -> ``text``);
    ``Link`` -> ``link`` (URL in ``text``); ``Image``/``Blob`` -> ``blob`` with ``meta``
    ``mime_type`` (and ``filename``), as ``blob_chunk``s past 8 KiB; ``Progress`` and
    ``LogEntry`` -> ``log`` (progress shares one log id per call: ``start``, then ``success``).
    """
    if isinstance(event, Text):
        return [_msg("text", {"text": event.text})]
    if isinstance(event, Json):
        if isinstance(event.data, dict | list):
            return [_msg("json", {"json_object": event.data})]
        return [_msg("text", {"text": event.as_text()})]
    if isinstance(event, Link):
        return [_msg("link", {"text": event.url})]
    if isinstance(event, Image):
        return _blob(event.data, {"mime_type": event.mime_type})
    if isinstance(event, Blob):
        meta: dict[str, Any] = {"mime_type": event.mime_type}
        if event.filename is not None:
            meta["filename"] = event.filename
        return _blob(event.data, meta)
    if isinstance(event, Progress):
        done = event.total is not None and event.progress >= event.total
        label = event.message or (
            f"{event.progress:g}/{event.total:g}"
            if event.total is not None
            else f"{event.progress:g}"
        )
        data = {"progress": event.progress, "total": event.total, "message": event.message}
        return [_log(label, "success" if done else "start", data, progress_id)]
    if isinstance(event, LogEntry):
        failed = event.level.lower() in ("error", "critical")
        return [
            _log(
                event.message,
                "error" if failed else "success",
                {"level": event.level, "message": event.message},
                uuid.uuid4().hex,
                event.message if failed else None,
            )
        ]
    return [_msg("text", {"text": str(event)})]


def dify_variables(result: ToolResult) -> list[dict[str, Any]]:
    """An object ``structured`` value becomes one ``variable`` message per key (Dify fills a
    tool's declared output variables from these)."""
    if not isinstance(result.structured, dict):
        return []
    return [
        _msg("variable", {"variable_name": str(k), "variable_value": v, "stream": False})
        for k, v in result.structured.items()
    ]


def dify_error_message(message: str, error_type: str, args: dict[str, Any] | None = None) -> str:
    """The daemon's double encoding: ``{"message": <JSON of {message, error_type, args}>,
    "error_type": "PluginInvokeError", "args": null}``, as a JSON string."""
    inner = json.dumps({"message": message, "error_type": error_type, "args": args})
    return json.dumps({"message": inner, "error_type": "PluginInvokeError", "args": None})


def _ok(message: dict[str, Any]) -> bytes:
    return sse_frame({"code": 0, "message": "success", "data": message})


def _failed(message: str) -> bytes:
    return sse_frame({"code": -500, "message": message, "data": None})


async def _dify_stream(events: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    progress_id = uuid.uuid4().hex
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        try:
            async for event in events:
                if isinstance(event, ToolResult):
                    if event.is_error:
                        reason = event.reason or "tool_error"
                        args = {"reason": reason, **event.meta}
                        error_type = (
                            DIFY_ERROR_TYPES.get(reason)
                            or event.meta.get("error_type")  # the exception's class, like the SDK
                            or "ToolInvokeError"
                        )
                        yield _failed(dify_error_message(event.text, error_type, args))
                    else:
                        for m in dify_variables(event):
                            yield _ok(m)
                    continue
                for m in dify_messages(event, progress_id):
                    yield _ok(m)
        except Exception as e:
            log.exception("dify stream failed")
            text = f"{type(e).__name__}: {e}"
            yield _failed(dify_error_message(text, "PluginDaemonInternalServerError"))


_DIFY_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'SSE: `data: {"code": 0, "message": "success", "data": '
        '<ToolInvokeMessage>}` per message; a failure is `{"code": -500, ...}`.',
        "content": {SSE: {"schema": {"type": "string"}}},
    },
    400: {"description": 'Bad request: {"code": -400, "message": ...}.'},
    401: {"description": 'Missing or invalid X-Api-Key: {"code": -401, ...}.'},
    403: {"description": 'The key\'s tenant or role does not allow this: {"code": -403, ...}.'},
    404: {"description": 'No such plugin, provider or tool: {"code": -404, ...}.'},
    409: {"description": 'The plugin is disabled: {"code": -409, ...}.'},
}


@dify_router.post(
    "/plugin/{tenant_id}/dispatch/tool/invoke",
    response_class=StreamResponse,
    responses=_DIFY_DOC,
    summary="Dify: invoke a tool (plugin-daemon dispatch API)",
)
async def dify_tool_invoke(
    request: Request,
    tenant_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")],
    body: DifyInvokeRequest,
    principal: Annotated[Principal, Depends(requires_dify("invoke"))],
    x_plugin_id: Annotated[
        str | None,
        Header(alias="X-Plugin-ID", description="The plugin id, author/name."),
    ] = None,
) -> Response:
    """What the Dify API calls to run a plugin tool. ``data.provider`` must be the plugin's
    name; ``data.tool_parameters`` are the arguments; ``data.credentials`` are ignored (the
    tenant's stored credentials apply). The key's tenant must be ``tenant_id``, or ``*`` (the
    tenant is then created in the store on its first call)."""
    if not principal.acts_for(tenant_id):
        raise ApiError(403, f"this API key may not act for tenant {tenant_id!r}", "forbidden")
    if not x_plugin_id:
        raise ApiError(400, "missing header X-Plugin-ID (author/name)", "bad_request")
    plugin_id = x_plugin_id.split(":", 1)[0].strip()  # tolerate author/name:version@checksum
    state = state_of(request)
    if principal.tenant_id != tenant_id:  # an all-tenants key: Dify workspaces come and go
        await state.ensure_tenant(tenant_id)
    b = await state.resolve(tenant_id, plugin_id, body.data.tool)
    pname = b.plugin_id.rsplit("/", 1)[-1]
    provider = body.data.provider
    if provider.lower() not in (pname.lower(), b.plugin_id.lower()):
        raise ApiError(
            404, f"tool provider {provider!r} not found in plugin {b.plugin_id!r}", "not_found"
        )
    events = await state.stream(principal, b, body.data.tool_parameters, None, tenant=tenant_id)
    return StreamResponse(_dify_stream(events), media_type=SSE, source=events)
