"""What every request handler shares: the host, the hooks, metrics and the calls in flight.

The host is entered with ``async with`` on the server's loop, so its sync methods that may
import plugin code or start a worker (``resolve``, ``plugin``, ``catalog``) are called through
``asyncio.to_thread``: on the adopted loop itself they would refuse (``UsageError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

import orjson

from ..errors import PluginDisabled, PluginNotFound, StoreError, ToolNotFound, UsageError
from ..host import Bound, CallScope, PluginHost, PluginInfo
from ..limits import Lease
from ..sdk import AuditEvent, LogEntry, Progress, ToolResult
from ._auth import ALL_TENANTS, Authenticator, Principal
from ._config import ServerConfig
from ._errors import ApiError, store_unavailable
from ._limits import CallGate
from ._metrics import Metrics
from ._policy import PluginVisibility, RateDecision, RateLimit
from ._services import Services, server_home
from ._sync import HostSync
from ._tenancy import (
    AuditEntry,
    AuditWriter,
    Tenancy,
    TenantVisibility,
    store_plugin_id,
    store_tenant_id,
)

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


_CALL_PREFIX = uuid.uuid4().hex[:16]
_call_numbers = itertools.count(1)


def _call_id() -> str:
    """A call id unique across replicas (a random prefix per process and a counter): one
    random draw per process, not one per call."""
    return f"{_CALL_PREFIX}{next(_call_numbers):016x}"


def _json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (what the audit log records as sizes)."""
    try:
        return len(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return 0


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
        self.tenancy: Tenancy | None = None
        """Per-tenant installations and call scopes (set while the app runs)."""
        self.audit: AuditWriter | None = None
        self.gate: CallGate | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.sync: HostSync | None = None
        """Refreshes the host when installs change the home (set while the app runs)."""
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

    async def attach(self, services: Services) -> None:
        """Start serving tenants from ``services``: caches that follow change notifications,
        the audit writer, the concurrency gate; tenants of configured keys exist in the store."""
        self.services = services
        self.tenancy = Tenancy(services.store)
        self.gate = CallGate(services.limits)
        listeners = [self.tenancy.on_message]
        on_message = getattr(self.authenticator, "on_message", None)
        if callable(on_message):
            listeners.append(on_message)

        def listen(message: Mapping[str, Any]) -> None:
            for listener in listeners:
                listener(message)

        self._unsubscribe = services.limits.notifier.subscribe(listen)
        for tenant in {k.tenant for k in self.config.api_keys} - {ALL_TENANTS}:
            await self.tenancy.ensure_tenant(store_tenant_id(tenant))
        self.audit = AuditWriter(services.store, self.metrics.registry)

    async def detach(self) -> None:
        """Write the audit rows still queued and stop following notifications."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
            self.audit = None
        self.tenancy = None
        self.gate = None
        self.services = None

    async def ensure_tenant(self, tenant: str) -> None:
        """Create ``tenant`` in the store if it is not there (an all-tenants key acting for it)."""
        if self.tenancy is None:
            return
        try:
            await self.tenancy.ensure_tenant(store_tenant_id(tenant))
        except StoreError as e:
            log.warning("cannot create tenant %s: %s", tenant, e.reason)
            raise store_unavailable() from None

    def invalidate(self, tenant: str | None = None, plugin: str | None = None) -> None:
        """After this replica's own write: drop the caches a notification would drop on the
        others (a notifier does not deliver a replica's messages to itself)."""
        if self.tenancy is not None:
            self.tenancy.invalidate(tenant, plugin)

    async def publish(self, topic: str, tenant: str, **extra: Any) -> None:
        """Tell the other replicas what changed (after invalidating locally)."""
        services = self.require_services()
        try:
            await services.limits.notifier.apublish(topic, {"tenant": tenant, **extra})
        except Exception as e:  # the change is stored; other replicas catch up by ttl
            log.warning("could not publish a %s change notification: %s", topic, e)

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
        vis = self.visibility
        if isinstance(vis, TenantVisibility):  # the default: one lookup, not the whole set
            if not await vis.sees(tenant_id, ref):
                self.require_host()  # starting or stopping: 503, as below
                raise ApiError(404, f"no plugin {ref!r}", "plugin_not_found")
            return
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
            return await host.aresolve(ref, tool)
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

    async def _admit(
        self, principal: Principal, tenant: str, b: Bound, args: Mapping[str, Any]
    ) -> tuple[CallScope | None, Lease | None, int]:
        """Before a call starts: its argument size (413), its rate (429), a concurrency slot
        (429) and its scope; returns them with the arguments' size in bytes of JSON.

        ``tenant`` is whom the call is for: the principal's own tenant, or the one an
        all-tenants key names (Dify's path). An all-tenants key on a route without a tenant
        acts as the operator: no scope (the host's own settings, credentials and storage).
        """
        size = _json_size(args)
        limit = min(self.config.limits.max_argument_bytes, b.max_arg_bytes)
        if size > limit:
            raise ApiError(
                413,
                f"the arguments are {size} bytes of JSON; the limit for {b.plugin_id} is {limit}",
                "arguments_too_large",
            )
        acting = (
            principal
            if tenant == principal.tenant_id
            else Principal(tenant, principal.key_id, principal.role)
        )
        await self.check_rate(acting, "invoke", f"{b.plugin_id}.{b.name}")
        lease = await self.gate.enter(tenant) if self.gate is not None else None
        try:
            scope = None
            if tenant != ALL_TENANTS and self.tenancy is not None:
                scope = await self._scope(tenant, b)
        except BaseException:
            await self._leave_gate(lease)
            raise
        return scope, lease, size

    async def _scope(self, tenant: str, b: Bound) -> CallScope:
        assert self.tenancy is not None
        sid = store_tenant_id(tenant)
        found = self.require_host().lookup(b.plugin_id)
        if found is None or found[0] != b.plugin_id:  # an alias shadows the id: ask all
            info = next((p for p in self.require_host().plugins() if p.id == b.plugin_id), None)
            if info is None:
                raise ApiError(404, f"no plugin {b.plugin_id!r}", "plugin_not_found")
            found = (info.id, info.source)
        try:
            return await self.tenancy.scope_of(sid, *found)
        except StoreError as e:
            log.warning("cannot read tenant %s's plugin configuration: %s", sid, e.reason)
            raise store_unavailable() from None

    async def _leave_gate(self, lease: Lease | None) -> None:
        if self.gate is not None and lease is not None:
            await self.gate.leave(lease)

    def _audit(
        self,
        principal: Principal,
        tenant: str,
        b: Bound,
        args: Mapping[str, Any],
        arg_bytes: int,
        result: ToolResult | None,
        outcome: str,
        started: float,
        seconds: float,
        call_id: str,
    ) -> None:
        if self.audit is None or tenant == ALL_TENANTS:
            return
        event = AuditEvent(
            call_id=call_id,
            plugin_id=store_plugin_id(b.plugin_id),
            tool=b.name,
            caller=f"tenant:{tenant}",
            started=started,
            duration=seconds,
            outcome=outcome,
            arg_bytes=arg_bytes,
            result_bytes=0,  # measured by the audit writer, off this path
            cached=bool(result is not None and result.meta and result.meta.get("cached")),
        )
        schema = b.tool.spec.input_schema
        self.audit.submit(
            AuditEntry(store_tenant_id(tenant), principal.key_id, event, args, schema, result)
        )

    async def invoke(
        self,
        principal: Principal,
        b: Bound,
        args: Mapping[str, Any],
        timeout: float | None,
        *,
        tenant: str | None = None,
    ) -> ToolResult:
        """Run one call for ``tenant`` (default: the principal's) and audit it."""
        tenant = principal.tenant_id if tenant is None else tenant
        host = self.require_host()  # (before a lease is taken: a 503 here must not hold one)
        scope, lease, arg_bytes = await self._admit(principal, tenant, b, args)
        self._enter_call()
        call_id = _call_id()
        started, start = time.time(), time.perf_counter()
        outcome = "cancelled"
        result: ToolResult | None = None
        try:
            result = await host.ainvoke(
                b.plugin_id,
                b.name,
                args,
                caller=f"tenant:{tenant}",
                timeout=timeout,
                scope=scope,
            )
            outcome = outcome_of(result)
            return result
        finally:
            seconds = time.perf_counter() - start
            self._leave_call()
            self.metrics.observe_call(b.plugin_id, outcome, seconds)
            self._audit(
                principal, tenant, b, args, arg_bytes, result, outcome, started, seconds, call_id
            )
            await self._leave_gate(lease)

    async def stream(
        self,
        principal: Principal,
        b: Bound,
        args: Mapping[str, Any],
        timeout: float | None,
        *,
        tenant: str | None = None,
    ) -> AsyncIterator[Any]:
        """Admit the call now (so a refusal is an HTTP error, not a broken stream), then its
        events, ending with its ``ToolResult``; closing the iterator cancels the call.

        A streaming (generator) tool's chunks pass as they come. For any other tool the host
        emits the result's content just before the result; it is held back here and sent only
        when the call succeeded, so an error's text never shows up as ordinary content.
        """
        tenant = principal.tenant_id if tenant is None else tenant
        scope, lease, arg_bytes = await self._admit(principal, tenant, b, args)
        return _Released(
            self._events(principal, tenant, b, args, arg_bytes, timeout, scope),
            lambda: self._leave_gate(lease),
        )

    async def _events(
        self,
        principal: Principal,
        tenant: str,
        b: Bound,
        args: Mapping[str, Any],
        arg_bytes: int,
        timeout: float | None,
        scope: CallScope | None,
    ) -> AsyncIterator[Any]:
        host = self.require_host()
        streaming = b.kind in ("gen", "agen")
        self._enter_call()
        call_id = _call_id()
        started, start = time.time(), time.perf_counter()
        outcome = "cancelled"
        final: ToolResult | None = None
        try:
            events = host.astream(
                b.plugin_id, b.name, args, caller=f"tenant:{tenant}", timeout=timeout, scope=scope
            )
            async with contextlib.aclosing(events) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, ToolResult):
                        final = event
                        outcome = outcome_of(event)
                        if not streaming and not event.is_error:
                            for item in event.content:
                                yield item
                    elif not streaming and not isinstance(event, Progress | LogEntry):
                        continue
                    yield event
        finally:
            seconds = time.perf_counter() - start
            self._leave_call()
            self.metrics.observe_call(b.plugin_id, outcome, seconds)
            self._audit(
                principal, tenant, b, args, arg_bytes, final, outcome, started, seconds, call_id
            )


class _Released:
    """An async iterator that runs ``release`` once when closed or exhausted, even if it was
    never iterated (a client gone before the first event must not keep its slot)."""

    def __init__(self, inner: AsyncIterator[Any], release: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._release: Callable[[], Awaitable[None]] | None = release

    def __aiter__(self) -> _Released:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            await self._done()
            raise

    async def _done(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            await release()

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            await self._done()
