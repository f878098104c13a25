"""Error responses in the shape each family of endpoints promises.

- ``/v1`` and everything else: ``{"detail": message, "code": slug}`` (422s also ``errors``);
- AI-Dialer (``/api/...``): ``{"error": message}``;
- Dify (``/plugin/...``): ``{"code": -status, "message": message, "data": null}``.

Every refusal the daemon makes goes through ``error_response``, including the ones middleware
sends before routing (413, 504), so a client sees one shape per endpoint family.
"""

from __future__ import annotations

import email.message
import http
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from ..errors import StoreError

__all__ = [
    "ApiError",
    "BodyTooLarge",
    "JSONBody",
    "error_response",
    "install_error_handlers",
    "is_json_type",
    "style_of",
]

log = logging.getLogger("plughub.server")

DIALER_PREFIX = "/api/"
DIFY_PREFIX = "/plugin/"


class JSONBody(JSONResponse):
    """JSON rendered with orjson: NaN becomes null, non-string keys are allowed, and values it
    cannot encode are written with ``str`` rather than failing the response."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_NON_STR_KEYS)


class ApiError(Exception):
    """A refusal with an HTTP status; ``code`` is the machine-readable slug (``/v1`` shape)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _slug(status)
        self.headers = dict(headers or {})


class BodyTooLarge(StarletteHTTPException):
    """Raised while reading a request body that outgrows the limit (FastAPI re-raises it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


def _slug(status: int) -> str:
    special = {
        413: "body_too_large",
        422: "invalid_request",
        429: "rate_limited",
        500: "internal_error",
        503: "not_ready",
        504: "request_timeout",
    }
    if status in special:
        return special[status]
    try:
        return http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def style_of(path: str) -> str:
    """``dialer``, ``dify`` or ``v1``: which error shape a request path gets."""
    if path.startswith(DIALER_PREFIX):
        return "dialer"
    if path.startswith(DIFY_PREFIX):
        return "dify"
    return "v1"


def error_response(
    path: str,
    status: int,
    message: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """The error body for ``path``'s endpoint family, as a response."""
    style = style_of(path)
    body: dict[str, Any]
    if style == "dialer":
        body = {"error": message}
    elif style == "dify":
        body = {"code": -status, "message": message, "data": None}
    else:
        body = {"detail": message, "code": code or _slug(status), **(extra or {})}
    return JSONBody(body, status_code=status, headers=dict(headers or {}))


def is_json_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json`` (parameters ignored)."""
    if not content_type:
        return False
    msg = email.message.Message()
    msg["content-type"] = content_type
    if msg.get_content_maintype() != "application":
        return False
    sub = msg.get_content_subtype()
    return sub == "json" or sub.endswith("+json")


def _loc(parts: Any) -> str:
    shown = [str(p) for p in parts if p != "body"]
    return ".".join(shown) or "body"


def _validation_response(request: Request, exc: RequestValidationError) -> Response:
    errors = list(exc.errors())
    path = request.url.path
    body_errors = [e for e in errors if e.get("loc", ("",))[0] == "body"]
    content_type = request.headers.get("content-type")
    has_body = request.headers.get("content-length", "0") != "0" or bool(
        request.headers.get("transfer-encoding")
    )
    if body_errors and has_body and not is_json_type(content_type):
        got = content_type or "none"
        return error_response(
            path,
            415,
            f"the request body must be JSON: send 'Content-Type: application/json' (got {got})",
            "unsupported_media_type",
        )
    for e in body_errors:
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            loc = e.get("loc", ())
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            detail = ctx.get("error", "not valid JSON")
            return error_response(path, 400, f"malformed JSON body: {detail}{where}", "bad_json")
    problems = [f"{_loc(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors]
    message = "invalid request: " + "; ".join(problems)
    status = 422 if style_of(path) == "v1" else 400
    simple = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return error_response(path, status, message, "invalid_request", extra={"errors": simple})


def store_unavailable() -> ApiError:
    """The answer when the store cannot be reached: 503, retry in a second."""
    return ApiError(
        503, "the store is unavailable; retry later", "store_unavailable", {"Retry-After": "1"}
    )


def install_error_handlers(
    app: FastAPI, key_problem: Callable[[Request], Awaitable[ApiError | None]] | None = None
) -> None:
    """Route every error the app produces through ``error_response``.

    ``key_problem(request)``, when given, is asked before a validation error is reported: a
    request without a valid API key gets its 401 instead.
    """

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(request.url.path, exc.status, exc.message, exc.code, exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail
        message = detail if isinstance(detail, str) else http.HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and message == "Not Found":
            message = f"no endpoint {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        return error_response(request.url.path, exc.status_code, message, headers=exc.headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if key_problem is not None:
            problem = await key_problem(request)
            if problem is not None:
                return await api_error(request, problem)
        return _validation_response(request, exc)

    async def store_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreError)
        if exc.reason == "unavailable":  # an outage anywhere (tenancy, tasks...): retry later
            log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
            return await api_error(request, store_unavailable())
        return await unexpected(request, exc)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request.url.path, 500, f"internal error: {type(exc).__name__}")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(Exception, unexpected)
