"""FastAPI dependencies: the app's state and the authorization of each request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from ._auth import Principal
from ._errors import ApiError, style_of
from ._state import ServerState

__all__ = ["key_problem", "requires", "requires_dify", "state_of"]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key: `Authorization: Bearer <key>`.",
)
_dify_key = APIKeyHeader(
    name="X-Api-Key",
    auto_error=False,
    scheme_name="difyApiKey",
    description="The Dify plugin-daemon key header (`PLUGIN_DAEMON_KEY` on the Dify side).",
)

_BEARER = Security(_bearer)
_DIFY_KEY = Security(_dify_key)

_VERBS = {
    "read": "read plugins",
    "tools": "list tools",
    "invoke": "invoke tools",
    "configure": "configure the tenant",
    "admin": "administer the server",
}
_GRANTED_BY = {
    "read": "admin, member",
    "tools": "admin, member, invoke",
    "invoke": "admin, member, invoke",
    "configure": "admin, member",
    "admin": "admin",
}


def state_of(request: Request) -> ServerState:
    state = request.app.state.plughub
    assert isinstance(state, ServerState)
    return state


def _resource(request: Request) -> str | None:
    p = request.path_params
    if "author" in p and "name" in p:
        base = f"{p['author']}/{p['name']}"
        return f"{base}.{p['tool']}" if "tool" in p else base
    plugin = request.headers.get("x-plugin-id")
    return plugin or None


async def _authorize(
    request: Request, token: str | None, scope: str | None, *, how: str, bearer: bool
) -> Principal:
    state = state_of(request)
    challenge = {"WWW-Authenticate": "Bearer"} if bearer else {}
    if not token:
        raise ApiError(401, f"missing API key: send '{how}'", "unauthorized", challenge)
    principal = await state.authenticator.authenticate(token)
    if principal is None:
        raise ApiError(401, "invalid API key", "unauthorized", challenge)
    if scope is not None:
        if not principal.can(scope):
            raise ApiError(
                403,
                f"an API key with role {principal.role!r} may not {_VERBS[scope]} "
                f"(roles allowed: {_GRANTED_BY[scope]})",
                "forbidden",
            )
        if scope != "invoke":  # calls are charged when they start, for the plugin they run
            await state.check_rate(principal, scope, _resource(request))
    request.state.principal = principal
    return principal


def requires(scope: str | None) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller's ``Principal`` (from ``Authorization: Bearer``) when its role
    grants ``scope`` (None: any authenticated key); else 401/403, or 429 from the rate limit."""

    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = _BEARER,
    ) -> Principal:
        token = credentials.credentials if credentials is not None else None
        return await _authorize(
            request, token, scope, how="Authorization: Bearer <key>", bearer=True
        )

    return dependency


def requires_dify(scope: str) -> Callable[..., Awaitable[Principal]]:
    """Like ``requires``, with the key in Dify's ``X-Api-Key`` header."""

    async def dependency(request: Request, api_key: str | None = _DIFY_KEY) -> Principal:
        return await _authorize(request, api_key, scope, how="X-Api-Key: <key>", bearer=False)

    return dependency


async def key_problem(request: Request) -> ApiError | None:
    """The 401 for a request without a valid key, else None.

    FastAPI validates a request's parameters and body before it runs dependencies; the
    validation error handler asks this first, so a caller without a valid key learns nothing
    about the request's shape (401 before 400/415/422).
    """
    if style_of(request.url.path) == "dify":
        token, how, bearer = request.headers.get("x-api-key"), "X-Api-Key: <key>", False
    else:
        scheme, value = get_authorization_scheme_param(request.headers.get("authorization"))
        token = value if scheme.lower() == "bearer" else None
        how, bearer = "Authorization: Bearer <key>", True
    try:
        await _authorize(request, token, None, how=how, bearer=bearer)
    except ApiError as e:
        return e
    return None
