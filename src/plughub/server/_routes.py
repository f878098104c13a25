"""Health, metrics and the ``/v1`` API: plugins, tools, invoke and invoke-stream."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..errors import StoreError
from ..host import Bound, PluginInfo
from ._auth import ROLE_SCOPES, Principal
from ._deps import requires, state_of
from ._errors import ApiError, JSONBody, error_response, store_unavailable
from ._metrics import CONTENT_TYPE_LATEST
from ._models import (
    AUTH_ERRORS,
    ErrorBody,
    Health,
    InvokeRequest,
    InvokeResult,
    PluginDetail,
    PluginSummary,
    Readiness,
    ToolsOut,
    WhoAmI,
)
from ._state import ServerState
from ._streaming import (
    NDJSON,
    SSE,
    StreamResponse,
    event_dict,
    ndjson_line,
    negotiate_stream,
    sse_frame,
)

__all__ = ["FastInvoke", "health_router", "metrics_router", "v1_router"]

log = logging.getLogger("plughub.server")

_SEGMENT = r"^[A-Za-z0-9_.-]{1,128}$"
Author = Annotated[str, Path(pattern=_SEGMENT, description="The plugin id's author part.")]
Name = Annotated[str, Path(pattern=_SEGMENT, description="The plugin id's name part.")]
Tool = Annotated[str, Path(pattern=_SEGMENT, description="The tool's name.")]

_ERRORS = AUTH_ERRORS
_PLUGIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": ErrorBody, "description": "Unknown plugin or tool."},
}
_INVOKE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_PLUGIN_ERRORS,
    429: {"model": ErrorBody, "description": "Rate or concurrency limit (see Retry-After)."},
    400: {"model": ErrorBody, "description": "Malformed JSON body."},
    409: {"model": ErrorBody, "description": "The plugin is denied, disabled or failed to load."},
    413: {"model": ErrorBody, "description": "Request body, or the arguments, too large."},
    415: {"model": ErrorBody, "description": "The body is not application/json."},
    422: {"model": ErrorBody, "description": "The body does not match InvokeRequest."},
    504: {"model": ErrorBody, "description": "The request exceeded the server's time limit."},
}

health_router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])
v1_router = APIRouter(prefix="/v1", tags=["v1"])


@health_router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Response:
    """200 as long as the process serves HTTP (no authentication)."""
    return JSONBody({"status": "ok"})


@health_router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: {"model": Readiness, "description": "Starting or shutting down."}},
)
async def readyz(request: Request) -> Response:
    """200 once the plugin host is up, 503 while starting or shutting down (no authentication)."""
    state = state_of(request)
    if state.host is None or not state.ready:
        return JSONBody({"status": "not_ready"}, status_code=503, headers={"Retry-After": "1"})
    return JSONBody(
        {
            "status": "ready",
            "plugins": len(state.host.plugins()),
            "calls_in_flight": state.calls_in_flight,
        }
    )


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text format (no authentication): requests, latency, tool calls, in flight."""
    return Response(state_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


# -- /v1 ---------------------------------------------------------------------------------------


def _summary(info: PluginInfo, principal: Principal) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": info.id,
        "name": info.name,
        "version": info.version,
        "description": info.description,
        "style": info.style,
        "runtime": info.runtime,
        "status": info.status,
        "error": info.error,
        "tools": info.tools,
        "permissions": info.permissions,
        "aliases": info.aliases,
    }
    if principal.can("admin"):
        out["source"] = info.source
        out["granted"] = info.granted
    return out


@v1_router.get("/whoami", response_model=WhoAmI, responses=_ERRORS, summary="The caller")
async def whoami(principal: Annotated[Principal, Depends(requires(None))]) -> Response:
    """The tenant, key id, role and scopes of the API key used."""
    return JSONBody(
        {
            "tenant_id": principal.tenant_id,
            "key_id": principal.key_id,
            "role": principal.role,
            "scopes": sorted(ROLE_SCOPES.get(principal.role, ())),
        }
    )


@v1_router.get(
    "/plugins", response_model=list[PluginSummary], responses=_ERRORS, summary="List plugins"
)
async def list_plugins(
    request: Request, principal: Annotated[Principal, Depends(requires("read"))]
) -> Response:
    """Every plugin the tenant can see, with its status. Imports no plugin code: ``tools`` is
    null until a plugin has been loaded (by a call or by ``GET /v1/plugins/{author}/{name}``)."""
    infos = await state_of(request).listing(principal.tenant_id)
    return JSONBody([_summary(i, principal) for i in infos])


@v1_router.get(
    "/plugins/{author}/{name}",
    response_model=PluginDetail,
    responses=_PLUGIN_ERRORS,
    summary="One plugin and its tools",
)
async def get_plugin(
    request: Request,
    author: Author,
    name: Name,
    principal: Annotated[Principal, Depends(requires("read"))],
) -> Response:
    """The plugin (loaded first, so ``tools`` and ``tool_specs`` are filled when it loads; a
    plugin that fails to load is returned with status ``failed`` and its error)."""
    state = state_of(request)
    info = await state.plugin(principal.tenant_id, f"{author}/{name}")
    specs = []
    if info.status == "loaded":
        for entry in await state.catalog(info.id):
            specs.append({**entry.spec.to_dict(), "llm_name": entry.llm_name})
    return JSONBody({**_summary(info, principal), "tool_specs": specs})


@v1_router.get("/tools", response_model=ToolsOut, responses=_PLUGIN_ERRORS, summary="Tool catalog")
async def list_tools(
    request: Request,
    principal: Annotated[Principal, Depends(requires("tools"))],
    format: Annotated[
        Literal["openai", "anthropic", "responses", "mcp"],
        Query(description="The provider's tool format."),
    ] = "openai",
    plugin: Annotated[
        list[str] | None,
        Query(description="Only these plugins (id, name or alias; repeatable)."),
    ] = None,
) -> Response:
    """Tool definitions ready to hand to an LLM API: OpenAI Chat (``openai``), OpenAI
    Responses (``responses``), Anthropic (``anthropic``) or MCP (``mcp``). Loads the plugins."""
    tools = await state_of(request).export(principal.tenant_id, format, plugin or None)
    return JSONBody({"format": format, "tools": tools})


async def _resolve_call(
    request: Request, principal: Principal, author: str, name: str, tool: str
) -> Bound:
    return await state_of(request).resolve(principal.tenant_id, f"{author}/{name}", tool)


@v1_router.post(
    "/plugins/{author}/{name}/tools/{tool}/invoke",
    response_model=InvokeResult,
    responses=_INVOKE_ERRORS,
    summary="Call a tool",
)
async def invoke(
    request: Request,
    author: Author,
    name: Name,
    tool: Tool,
    principal: Annotated[Principal, Depends(requires("invoke"))],
    body: InvokeRequest | None = None,
) -> Response:
    """Run the tool and answer its result. A tool failure (bad arguments, an error the tool
    raised, a timeout, a refusal by policy) is **200** with ``is_error`` true and a ``reason``;
    HTTP errors are for requests that could not become a call. The host records the call with
    ``caller`` ``tenant:<tenant id>``."""
    state = state_of(request)
    b = await _resolve_call(request, principal, author, name, tool)
    body = body or InvokeRequest()
    result = await state.invoke(principal, b, body.arguments, body.timeout)
    return JSONBody(result.to_dict())


_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The call's events, then its result.",
        "content": {
            SSE: {
                "schema": {"type": "string"},
                "example": "event: content\n"
                'data: {"event":"content","type":"text","text":"hi"}\n\n',
            },
            NDJSON: {
                "schema": {"type": "string"},
                "example": '{"event":"result","is_error":false,"content":[],"structured":null}\n',
            },
        },
    },
    406: {"model": ErrorBody, "description": "Accept allows neither SSE nor NDJSON."},
}


async def _encode(events: AsyncIterator[Any], kind: str) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        try:
            async for event in events:
                data = event_dict(event)
                yield sse_frame(data, data["event"]) if kind == SSE else ndjson_line(data)
        except Exception as e:  # an infrastructure failure once the stream has started
            log.exception("stream failed")
            data = {"event": "error", "detail": f"{type(e).__name__}: {e}", "code": "stream_failed"}
            yield sse_frame(data, "error") if kind == SSE else ndjson_line(data)


@v1_router.post(
    "/plugins/{author}/{name}/tools/{tool}/invoke-stream",
    response_class=StreamResponse,
    responses={**_INVOKE_ERRORS, **_STREAM_DOC},
    summary="Call a tool, streaming its events",
)
async def invoke_stream(
    request: Request,
    author: Author,
    name: Name,
    tool: Tool,
    principal: Annotated[Principal, Depends(requires("invoke"))],
    body: InvokeRequest | None = None,
) -> Response:
    """Stream ``progress``, ``log`` and ``content`` events as they happen, then one ``result``
    event. ``Accept: text/event-stream`` (default) sends SSE (``event:`` + ``data:`` lines);
    ``Accept: application/x-ndjson`` one JSON object per line. A client that disconnects
    cancels the call."""
    kind = negotiate_stream(request.headers.get("accept"))
    if kind is None:
        raise ApiError(
            406,
            "this endpoint streams: send 'Accept: text/event-stream' or "
            "'Accept: application/x-ndjson'",
            "not_acceptable",
        )
    state = state_of(request)
    b = await _resolve_call(request, principal, author, name, tool)
    body = body or InvokeRequest()
    events = await state.stream(principal, b, body.arguments, body.timeout)
    return StreamResponse(_encode(events, kind), media_type=kind, source=events)


# -- the invoke fast path ----------------------------------------------------------------------

_INVOKE_PATH = re.compile(
    r"/v1/plugins/([A-Za-z0-9_.-]{1,128})/([A-Za-z0-9_.-]{1,128})"
    r"/tools/([A-Za-z0-9_.-]{1,128})/invoke"
)
_INVOKE_ROUTE = next(r for r in v1_router.routes if getattr(r, "name", None) == "invoke")


class FastInvoke:
    """``POST .../tools/{tool}/invoke`` without FastAPI's routing and dependency machinery.

    Routing, parameter and dependency solving cost more CPU than a trivial call itself. The
    common request (a bearer key allowed to invoke, a JSON body that is a valid
    ``InvokeRequest``) is answered here exactly as ``invoke`` answers it: same checks, same
    result, the same error bodies for ``ApiError``. Anything else (no or bad key, another
    content type, a body that does not parse or validate, a client gone) returns a ``receive``
    that replays what was read, and the request goes through FastAPI as usual, which gives
    its 401/403/400/415/422 in the usual order. The route stays declared for the OpenAPI
    document and as that fallback.
    """

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """None when answered, else the ``receive`` to continue with."""
        if scope["method"] != "POST":
            return receive
        m = _INVOKE_PATH.fullmatch(scope["path"])
        if m is None or scope.get("root_path"):
            return receive
        token = content_type = None
        for name, value in scope["headers"]:  # the first of each, as ``request.headers``
            if name == b"authorization":
                token = value if token is None else token
            elif name == b"content-type":
                content_type = value if content_type is None else content_type
        if token is None or content_type is None or not _is_plain_json(content_type):
            return receive
        scheme, _, key = token.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return receive
        state = self.state
        try:
            principal = await state.authenticator.authenticate(key)
        except ApiError:
            return receive  # FastAPI answers it, in its order
        if principal is None or not principal.can("invoke"):
            return receive
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return _replay(messages, receive)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = InvokeRequest.model_validate_json(raw) if raw else None
        except Exception:  # FastAPI tells what is wrong (400, 422)
            return _replay(messages, receive)
        if body is None:
            return _replay(messages, receive)
        scope["route"] = _INVOKE_ROUTE
        scope.setdefault("state", {})["principal"] = principal
        author, name, tool = m.groups()
        try:
            b = await state.resolve(principal.tenant_id, f"{author}/{name}", tool)
            result = await state.invoke(principal, b, body.arguments, body.timeout)
            response: Response = JSONBody(result.to_dict())
        except ApiError as e:
            response = error_response(scope["path"], e.status, e.message, e.code, e.headers)
        except StoreError as e:  # (outside FastAPI's handlers here: answer as they would)
            if e.reason != "unavailable":
                raise
            down = store_unavailable()
            response = error_response(
                scope["path"], down.status, down.message, down.code, down.headers
            )
        await response(scope, _replay(messages, receive), send)
        return None


def _is_plain_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that gives ``messages`` again, then the live ones."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
