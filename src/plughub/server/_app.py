"""``create_app``: the FastAPI daemon; ``run``: serve it with uvicorn.

One ``PluginHost`` per process, built and entered (``async with``) by the app's lifespan on the
server's own event loop. On shutdown uvicorn stops accepting connections and waits up to
``graceful_timeout`` for the requests in flight; the lifespan then waits for calls still
running (same bound) and closes the host (plugin teardown, workers stopped).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ._admin import admin_router
from ._auth import Authenticator, StaticAuthenticator, StoreAuthenticator
from ._compat import dialer_router, dify_router
from ._config import ServerConfig, load_config
from ._deps import key_problem
from ._errors import JSONBody, install_error_handlers
from ._limits import LimitsRateLimit
from ._metrics import Metrics
from ._middleware import RequestGuard
from ._packages import is_package_upload, packages_router
from ._policy import PluginVisibility, RateLimit
from ._routes import FastInvoke, health_router, metrics_router, v1_router
from ._services import Services, build_services
from ._state import HostFactory, ServerState, build_host
from ._sync import HostSync
from ._tasks import start_package_runner
from ._tenancy import TenantVisibility

__all__ = ["create_app", "run"]

log = logging.getLogger("plughub.server")

_DESCRIPTION = """\
The plughub daemon: list plugins and tools, call tools (JSON or streamed), plus endpoints
compatible with the AI-Dialer backend and the Dify plugin daemon.

Authenticate with `Authorization: Bearer <key>` (Dify endpoints: `X-Api-Key`). A tool failure
is a **result** with `is_error: true`, never an HTTP error. See docs/api.md.
"""


def create_app(
    config: ServerConfig | None = None,
    *,
    authenticator: Authenticator | None = None,
    rate_limit: RateLimit | None = None,
    visibility: PluginVisibility | None = None,
    host_factory: HostFactory | None = None,
    services: Services | None = None,
) -> FastAPI:
    """The daemon as an ASGI app.

    Args:
        config: server settings; default ``load_config()`` (``PLUGHUB_*`` variables).
        authenticator: turns API keys into principals; default the configured ``api_keys``
            and the store's keys (``StoreAuthenticator``).
        rate_limit: asked per authenticated request and per call; default the rates of
            ``config.limits`` (``LimitsRateLimit``).
        visibility: which plugins each tenant sees; default the store's installations
            (``TenantVisibility``).
        host_factory: builds the ``PluginHost`` from the config (at startup, on the server's
            loop); default ``build_host``.
        services: the store and limits backends to use (the caller closes them); default
            ``build_services(config)`` at startup, closed at shutdown.
    """
    config = config if config is not None else load_config()
    metrics = Metrics()

    def services_now() -> Services | None:
        return state.services

    state = ServerState(
        config,
        authenticator
        or StoreAuthenticator(
            StaticAuthenticator.from_config(config),
            lambda: s.store if (s := services_now()) else None,
        ),
        rate_limit
        or LimitsRateLimit(lambda: s.limits if (s := services_now()) else None, lambda: state.host),
        visibility or TenantVisibility(lambda: state.host, lambda: state.tenancy),
        metrics,
        host_factory or build_host,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        svc: Services = (
            await asyncio.to_thread(build_services, config) if services is None else services
        )
        await state.attach(svc)
        try:
            await asyncio.to_thread(svc.bootstrap_admin, config)
            host = state.host_factory(config)
            async with host:  # adopts this loop: worker calls skip a thread hop
                state.host = host
                state.sync = HostSync(host, svc.limits.notifier)
                await state.sync.start()
                runner = await start_package_runner(app, state)
                state.ready = True
                log.info("plughub server ready: %d plugin(s)", len(host.plugins()))
                try:
                    yield
                finally:
                    state.ready = False
                    await runner.stop(config.graceful_timeout)
                    await state.drain(config.graceful_timeout)
                    await state.sync.stop()
            state.host = None
        finally:
            await state.detach()  # writes the audit rows still queued
            if own:
                await svc.aclose()
            state.services = None

    app = FastAPI(
        title="plughub",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONBody,
        docs_url="/docs" if config.docs else None,
        redoc_url="/redoc" if config.docs else None,
    )
    app.state.plughub = state
    install_error_handlers(app, key_problem)
    app.include_router(health_router)
    if config.metrics:
        app.include_router(metrics_router)
    app.include_router(v1_router)
    app.include_router(admin_router)
    app.include_router(packages_router)
    if config.compat_dialer:
        app.include_router(dialer_router)
    if config.compat_dify:
        app.include_router(dify_router)
    # One middleware: metrics see every response (413s and 504s included), uploads have
    # their own body limit.
    app.add_middleware(
        RequestGuard,
        metrics=metrics,
        max_body=config.max_body_bytes,
        time_limit=config.request_timeout,
        exempt=is_package_upload,
        fast=FastInvoke(state),
    )
    return app


def run(config: ServerConfig, app: FastAPI | None = None) -> bool:
    """Serve with uvicorn until SIGINT/SIGTERM, then shut down gracefully.

    Returns False when the app failed to start (e.g. a plugins folder is missing).
    """
    import uvicorn

    uv = uvicorn.Config(
        app if app is not None else create_app(config),
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(config.graceful_timeout),
        server_header=False,
    )
    server = uvicorn.Server(uv)
    server.run()
    return bool(server.started)
