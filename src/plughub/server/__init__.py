"""The plughub daemon: a FastAPI app serving one ``PluginHost`` over HTTP.

``create_app(config)`` builds the ASGI app; ``run(config)`` serves it with uvicorn (what
``plughub serve`` does). ``Authenticator``, ``RateLimit`` and ``PluginVisibility`` are the
points where the store (API keys, installations per tenant) and shared rate limits plug in.
See docs/api.md and docs/compat-endpoints.md.
"""

from ._app import create_app, run
from ._auth import ROLE_SCOPES, Authenticator, Principal, StaticAuthenticator
from ._config import ENV_VARS, ROLES, ApiKeySpec, ServerConfig, load_config
from ._errors import ApiError
from ._policy import (
    ALLOWED,
    AllPlugins,
    PluginVisibility,
    RateDecision,
    RateLimit,
    no_rate_limit,
)
from ._reference import api_reference
from ._state import HostFactory, build_host

__all__ = [
    "ALLOWED",
    "ENV_VARS",
    "ROLES",
    "ROLE_SCOPES",
    "AllPlugins",
    "ApiError",
    "ApiKeySpec",
    "Authenticator",
    "HostFactory",
    "PluginVisibility",
    "Principal",
    "RateDecision",
    "RateLimit",
    "ServerConfig",
    "StaticAuthenticator",
    "api_reference",
    "build_host",
    "create_app",
    "load_config",
    "no_rate_limit",
    "run",
]
