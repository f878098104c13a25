"""What every request handler shares: the host, the hooks, metrics and the calls in flight.

The host is entered with ``async with`` on the server's loop, so its sync methods that may
import plugin code or start a worker (``resolve``, ``plugin``, ``catalog``) are called through
``asyncio.to_thread``: on the adopted loop itself they would refuse (``UsageError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

from ..errors import PluginDisabled, PluginNotFound, ToolNotFound, UsageError
from ..host import Bound, PluginHost, PluginInfo
from ..sdk import LogEntry, Progress, ToolResult
from ._auth import Authenticator, Principal
from ._config import ServerConfig
from ._errors import ApiError
from ._metrics import Metrics
from ._policy import PluginVisibility, RateDecision, RateLimit
from ._services import Services, server_home

__all__ = ["HostFactory", "ServerState", "build_host"]

log = logging.getLogger("plughub.server")

HostFactory = Callable[[ServerConfig], PluginHost]


def build_host(config: ServerConfig) -> PluginHost:
    """The default ``PluginHost`` for a configuration."""
    return PluginHost(
        config.plugins_dirs,
        entry_points=config.entry_points,
        allow=config.allow,
        deny=config.deny,
        settings=config.settings,
        credentials=config.credentials,
        grants=config.grants,
        data_dir=config.data_dir,
        default_timeout=config.default_timeout,
        default_runtime=config.default_runtime,
        home=server_home(config),
    )


def outcome_of(result: ToolResult) -> str:
    return (result.reason or "error") if result.is_error else "ok"


class ServerState:
    """One per app (``app.state.plughub``)."""

    def __init__(
        self,
        config: ServerConfig,
        authenticator: Authenticator,
        rate_limit: RateLimit,
        visibility: PluginVisibility,
        metrics: Metrics,
        host_factory: HostFactory,
    ) -> None:
        self.config = config
        self.authenticator = authenticator
        self.rate_limit = rate_limit
        self.visibility = visibility
        self.metrics = metrics
        self.host_factory = host_factory
        self.host: PluginHost | None = None
        self.services: Services | None = None
        """The store and limits backends (set while the app runs)."""
        self.ready = False
        self._calls = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def calls_in_flight(self) -> int:
        return self._calls

    async def drain(self, timeout: float) -> bool:
        """Wait until no call is in flight (at most ``timeout`` s); True when none is left."""
        if self._calls == 0:
            return True
        log.info("waiting up to %gs for %d call(s) in flight", timeout, self._calls)
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("%d call(s) still running at shutdown", self._calls)
            return False
        return True

    def _enter_call(self) -> None:
        self._calls += 1
        self._idle.clear()
        self.metrics.tool_calls_in_flight.inc()

    def _leave_call(self) -> None:
        self._calls -= 1
        self.metrics.tool_calls_in_flight.dec()
        if self._calls == 0:
            self._idle.set()

    def require_services(self) -> Services:
        if self.services is None:
            raise ApiError(
                503,
                "the server is not ready (starting or shutting down)",
                headers={"Retry-After": "1"},
            )
        return self.services

    def require_host(self) -> PluginHost:
        if self.host is None or not self.ready:
            raise ApiError(
                503,
                "the server is not ready (starting or shutting down)",
                headers={"Retry-After": "1"},
            )
        return self.host

    # -- auth --------------------------------------------------------------------------------

    async def check_rate(self, principal: Principal, action: str, resource: str | None) -> None:
        decision = self.rate_limit(principal, action, resource)
        if inspect.isawaitable(decision):
            decision = await decision
        assert isinstance(decision, RateDecision)
        if not decision.allowed:
            headers = {}
            if decision.retry_after is not None:
                headers["Retry-After"] = str(max(1, int(decision.retry_after + 0.999)))
            raise ApiError(429, "rate limit exceeded; retry later", headers=headers)

    # -- plugins -----------------------------------------------------------------------------

    async def visible(self, tenant_id: str) -> Collection[str] | None:
        return await self.visibility.visible_plugins(tenant_id)

    def plugin_id_of(self, ref: str) -> str | None:
        """The id of the plugin ``ref`` names (id, name or alias), without importing anything."""
        low = ref.lower()
        for info in self.require_host().plugins():
            if low in (info.id.lower(), info.name.lower(), *(a.lower() for a in info.aliases)):
                return info.id
        return None

    async def listing(self, tenant_id: str) -> list[PluginInfo]:
        allowed = await self.visible(tenant_id)
        infos = self.require_host().plugins()
        return [p for p in infos if allowed is None or p.id in allowed]

    async def check_visible(self, tenant_id: str, ref: str) -> None:
        allowed = await self.visible(tenant_id)
        if allowed is None:
            return
        pid = self.plugin_id_of(ref)
        if pid is None or pid not in allowed:
            raise ApiError(404, f"no plugin {ref!r}", "plugin_not_found")

    async def plugin(self, tenant_id: str, ref: str) -> PluginInfo:
        await self.check_visible(tenant_id, ref)
        host = self.require_host()
        try:
            return await asyncio.to_thread(host.plugin, ref)
        except PluginNotFound:
            raise ApiError(404, f"no plugin {ref!r}", "plugin_not_found") from None

    async def resolve(self, tenant_id: str, ref: str, tool: str | None) -> Bound:
        """The tool to call, or the HTTP error that explains why there is none."""
        await self.check_visible(tenant_id, ref)
        host = self.require_host()
        try:
            return await asyncio.to_thread(host.resolve, ref, tool)
        except PluginNotFound:
            raise ApiError(404, f"no plugin {ref!r}", "plugin_not_found") from None
        except ToolNotFound as e:
            raise ApiError(404, str(e), "tool_not_found") from None
        except PluginDisabled as e:
            raise ApiError(409, str(e), "plugin_disabled") from None
        except UsageError as e:
            raise ApiError(400, str(e), "bad_request") from None

    async def export(self, tenant_id: str, fmt: str, plugins: list[str] | None) -> list[Any]:
        allowed = await self.visible(tenant_id)
        host = self.require_host()
        known = {p.id for p in host.plugins()}
        if plugins is not None:
            ids = []
            for ref in plugins:
                pid = self.plugin_id_of(ref)
                if pid is None or (allowed is not None and pid not in allowed):
                    raise ApiError(404, f"no plugin {ref!r}", "plugin_not_found")
                ids.append(pid)
            selection: list[str] | None = ids
        elif allowed is not None:
            selection = [pid for pid in known if pid in allowed]
        else:
            selection = None
        try:
            return await asyncio.to_thread(host.export_tools, fmt, plugins=selection)
        except ValueError as e:  # two tools whose LLM names collide
            raise ApiError(500, f"cannot export the tools: {e}", "export_failed") from None

    async def catalog(self, plugin_id: str) -> list[Any]:
        host = self.require_host()
        return await asyncio.to_thread(host.catalog, [plugin_id])

    # -- calls -------------------------------------------------------------------------------

    async def invoke(
        self, principal_caller: str, b: Bound, args: Mapping[str, Any], timeout: float | None
    ) -> ToolResult:
        host = self.require_host()
        self._enter_call()
        start = time.perf_counter()
        outcome = "cancelled"
        try:
            result = await host.ainvoke(
                b.plugin_id, b.name, args, caller=principal_caller, timeout=timeout
            )
            outcome = outcome_of(result)
            return result
        finally:
            self._leave_call()
            self.metrics.observe_call(b.plugin_id, outcome, time.perf_counter() - start)

    async def stream(
        self, principal_caller: str, b: Bound, args: Mapping[str, Any], timeout: float | None
    ) -> AsyncIterator[Any]:
        """The call's events, ending with its ``ToolResult``; closing it cancels the call.

        A streaming (generator) tool's chunks pass as they come. For any other tool the host
        emits the result's content just before the result; it is held back here and sent only
        when the call succeeded, so an error's text never shows up as ordinary content.
        """
        host = self.require_host()
        streaming = b.kind in ("gen", "agen")
        self._enter_call()
        start = time.perf_counter()
        outcome = "cancelled"
        try:
            events = host.astream(
                b.plugin_id, b.name, args, caller=principal_caller, timeout=timeout
            )
            async with contextlib.aclosing(events) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, ToolResult):
                        outcome = outcome_of(event)
                        if not streaming and not event.is_error:
                            for item in event.content:
                                yield item
                    elif not streaming and not isinstance(event, Progress | LogEntry):
                        continue
                    yield event
        finally:
            self._leave_call()
            self.metrics.observe_call(b.plugin_id, outcome, time.perf_counter() - start)
