"""The default ``RateLimit`` and the concurrency gate, over ``plughub.limits``.

Calls (the ``invoke`` action) are charged against the tenant, API-key and plugin rates that
``LimitsConfig.rates_for`` resolves, all or none (``check_all``); the plugin's manifest
``limits.rate_limit`` is the plugin scope's default and operator overrides win. Other actions
(listing, management) are not charged: the budgets are for calls.

Concurrent calls per tenant are held under leases of the ``ConcurrencyLimiter`` for the time
of a call (``CallGate``). Both use the replica's backends (``Services.limits``): memory for one
process, Redis when several replicas share the budgets. When a backend fails, the limiter's
``on_backend_error`` decides: ``deny`` (default) and ``raise`` answer 503, ``allow`` lets calls
through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..host import PluginHost
from ..limits import (
    ConcurrencyLimiter,
    Lease,
    LimitsBackendError,
    LimitsBackends,
    LimitsConfig,
    Rate,
    check_all,
)
from ..limits import limit_keys as _limit_keys
from ._auth import Principal
from ._errors import ApiError
from ._policy import ALLOWED, RateDecision

__all__ = ["CallGate", "LimitsRateLimit", "backend_unavailable"]

log = logging.getLogger("plughub.server")


def backend_unavailable(what: str) -> ApiError:
    """The 503 of a limits backend that failed while limits fail closed."""
    return ApiError(
        503,
        f"the {what} is unavailable (limits fail closed: on_backend_error=deny); retry later",
        "limits_unavailable",
        {"Retry-After": "1"},
    )


def _plugin_of(resource: str | None) -> str | None:
    """``author/name`` of ``author/name.tool`` (tool names never hold a dot: the host splits
    ``plugin.tool`` at the last one too)."""
    if not resource:
        return None
    return resource.rsplit(".", 1)[0] if "." in resource.split("/", 1)[-1] else resource


_MAX_CACHED = 10_000


class LimitsRateLimit:
    """``RateLimit`` over ``plughub.limits.check_all`` with the replica's backends.

    The resolved ``(limiter key, rate)`` list of each (tenant, key, plugin, manifest rate) is
    kept: resolving parses rate texts and builds keys, the same answer on every call of a busy
    client. The configuration is immutable while the app runs; another ``LimitsConfig``
    object (new backends) starts a fresh cache.
    """

    def __init__(
        self,
        backends: Callable[[], LimitsBackends | None],
        host: Callable[[], PluginHost | None],
    ) -> None:
        self._backends = backends
        self._host = host
        self._config: LimitsConfig | None = None
        self._checks: dict[tuple[str, str, str | None, str | None], list[tuple[str, Rate]]] = {}

    def _manifest_rate(self, plugin: str) -> str | None:
        host = self._host()
        if host is None:
            return None
        try:
            manifest = host.manifest(plugin)
        except Exception:  # unknown plugin: no manifest default
            return None
        return manifest.limits.rate_limit if manifest is not None else None

    def _resolved(
        self, config: LimitsConfig, principal: Principal, plugin: str | None
    ) -> list[tuple[str, Rate]]:
        manifest_rate = self._manifest_rate(plugin) if plugin else None
        key = (principal.tenant_id, principal.key_id, plugin, manifest_rate)
        if config is not self._config:
            self._checks = {}
            self._config = config
        checks = self._checks.get(key)
        if checks is None:
            checks = config.rates_for(
                principal.tenant_id,
                principal.key_id,
                plugin,
                manifest_rate=manifest_rate,
            )
            if len(self._checks) >= _MAX_CACHED:
                self._checks.clear()
            self._checks[key] = checks
        return checks

    async def __call__(
        self, principal: Principal, action: str, resource: str | None
    ) -> RateDecision:
        if action != "invoke":
            return ALLOWED
        backends = self._backends()
        if backends is None:
            return ALLOWED
        checks = self._resolved(backends.config, principal, _plugin_of(resource))
        if not checks:
            return ALLOWED
        try:
            decision = await check_all(backends.rate, checks)
        except LimitsBackendError as e:
            log.warning("rate limiter unavailable: %s", e)
            raise backend_unavailable("rate limiter") from None
        if decision.allowed:
            return ALLOWED
        if decision.reason == "rate_limiter_unavailable":
            log.warning("rate limiter unavailable: %s", decision.detail)
            raise backend_unavailable("rate limiter")
        return RateDecision(False, decision.retry_after)


class CallGate:
    """Calls in flight per tenant (``LimitsConfig.concurrency_for``), under expiring leases."""

    def __init__(self, backends: LimitsBackends) -> None:
        self.config = backends.config
        self.limiter: ConcurrencyLimiter = backends.concurrency
        self._keys: dict[str, tuple[str, int | None]] = {}

    def _key(self, tenant: str) -> tuple[str, int | None]:
        """The tenant's limiter key and limit (the configuration is immutable: kept)."""
        hit = self._keys.get(tenant)
        if hit is None:
            hit = ("c:" + _limit_keys(tenant).tenant, self.config.concurrency_for(tenant))
            if len(self._keys) >= _MAX_CACHED:
                self._keys.clear()
            self._keys[tenant] = hit
        return hit

    async def enter(self, tenant: str) -> Lease | None:
        """A held slot (None when the tenant has no limit); 429 when all are taken."""
        key, limit = self._key(tenant)
        if limit is None:
            return None
        try:
            lease = await self.limiter.acquire(key, limit, lease=self.config.lease_seconds)
        except LimitsBackendError as e:
            log.warning("concurrency limiter unavailable: %s", e)
            raise backend_unavailable("concurrency limiter") from None
        if lease.granted:
            return lease
        if lease.reason == "concurrency_limiter_unavailable":
            log.warning("concurrency limiter unavailable: %s", lease.detail)
            raise backend_unavailable("concurrency limiter")
        raise ApiError(
            429,
            f"too many calls in flight for this tenant (at most {limit}); retry later",
            "too_many_calls",
            lease.headers(),
        )

    async def leave(self, lease: Lease | None) -> None:
        if lease is None:
            return
        try:
            await self.limiter.release(lease)
        except LimitsBackendError as e:  # the lease expires on its own
            log.warning("could not release a concurrency lease: %s", e)
