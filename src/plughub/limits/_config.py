"""``LimitsConfig``: the daemon's limits, where they come from, and the backends they need.

Which rate applies to a call, per scope (first match wins)::

    tenant  : tenants[t].rate              > tenant_rate
    key     : key_rate= (from the API key) > tenants[t].key_rate > key_rate
    plugin  : tenants[t].plugins[p]        > plugins[p]          > the manifest's
              limits.rate_limit            > plugin_rate

that is, operator override > manifest default > config default. Each value is a rate
(``"600/minute"``), a list of rates (``["600/minute", "100000/day"]``: all apply) or
``"unlimited"`` (no rate for that scope; an override saying so wins like any other).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from ..manifest import RateLimit, parse_byte_size
from ._concurrency import ConcurrencyLimiter, MemoryConcurrencyLimiter, RedisConcurrencyLimiter
from ._notify import MemoryNotifier, Notifier, RedisNotifier, default_replica_id
from ._rate import (
    MemoryRateLimiter,
    OnBackendError,
    Rate,
    RateLimiter,
    RedisRateLimiter,
    limit_keys,
)
from ._redis import RedisLink

__all__ = ["LimitsBackends", "LimitsConfig", "TenantLimits", "create_backends"]

#: The word that lifts a limit.
UNLIMITED_WORDS = ("unlimited", "none", "off")


def _rates_before(value: Any) -> Any:
    """Normalise a rate setting to a list of rate strings (empty: unlimited)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in UNLIMITED_WORDS or not text:
            return []
        value = [p for p in (s.strip() for s in text.split(",")) if p]
    if isinstance(value, list | tuple):
        out = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"a rate is text like '600/minute', got {item!r}")
            Rate.parse(item)  # raises ValueError with the syntax
            out.append(item.strip())
        return out
    raise ValueError(f"a rate is text like '600/minute' or a list of those, got {value!r}")


#: A rate setting: None (not set here), "unlimited", rate text or a list of rate texts; stored
#: as a list (``[]``: unlimited).
RateSetting = Annotated[str | list[str] | None, BeforeValidator(_rates_before)]
ByteCount = Annotated[int, BeforeValidator(parse_byte_size), Field(gt=0)]


def _parsed(setting: str | list[str] | None) -> list[Rate] | None:
    rates = _rates_before(setting)
    return None if rates is None else [Rate.parse(s) for s in rates]


class TenantLimits(BaseModel):
    """Operator overrides for one tenant; unset fields fall back to the config defaults."""

    model_config = ConfigDict(extra="forbid")

    rate: RateSetting = None
    """Calls by the whole tenant."""
    key_rate: RateSetting = None
    """Calls per API key of this tenant."""
    plugins: dict[str, RateSetting] = Field(default_factory=dict)
    """Calls to one plugin (by plugin id) by this tenant."""
    max_concurrent_calls: Annotated[int, Field(ge=1)] | None = None
    """Calls in flight at once for this tenant."""


class LimitsConfig(BaseModel):
    """The daemon's limits and the backend that enforces them across replicas."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["memory", "redis"] = "memory"
    """``memory``: one process (limits are per replica); ``redis``: shared by all replicas."""
    redis_url: str | None = None
    """``redis://[:password@]host:port/db`` (or ``rediss://``); required for ``redis``."""
    prefix: str = "plughub:"
    """Prefix of every Redis key and of the notification channel (``<prefix>changes``)."""
    on_backend_error: OnBackendError = "deny"
    """When Redis fails: ``deny`` calls (fail closed), ``allow`` them, or ``raise``."""
    redis_timeout: Annotated[float, Field(gt=0)] = 1.0
    """Seconds to connect to or wait for Redis before counting it as failed."""

    tenant_rate: RateSetting = Field(default_factory=lambda: ["600/minute"])
    """Default calls per tenant."""
    key_rate: RateSetting = None
    """Default calls per API key (None: keys share their tenant's budget)."""
    plugin_rate: RateSetting = None
    """Default calls per tenant per plugin when the manifest sets no ``limits.rate_limit``."""
    plugins: dict[str, RateSetting] = Field(default_factory=dict)
    """Operator overrides per plugin id, for every tenant."""
    tenants: dict[str, TenantLimits] = Field(default_factory=dict)
    """Operator overrides per tenant id."""

    max_body_bytes: ByteCount = 1_048_576
    """Largest request body the daemon reads (``"1MiB"`` style accepted): 413 beyond."""
    max_argument_bytes: ByteCount = 1_048_576
    """Largest tool arguments (JSON text); a manifest's ``limits.max_argument_bytes`` may
    only lower it."""
    max_concurrent_calls: Annotated[int, Field(ge=1)] | None = 64
    """Default calls in flight at once per tenant (None: no limit)."""
    request_timeout: Annotated[float, Field(gt=0)] = 120.0
    """Seconds a request may take, end to end; a tool's own deadline may only be shorter."""
    concurrency_lease: Annotated[float, Field(gt=0)] | None = None
    """Seconds a concurrency slot is held before it expires on its own (a crashed replica's
    slots come back after this); default ``request_timeout + 30``."""
    memory_max_keys: Annotated[int, Field(ge=1)] = 100_000
    """Keys the memory rate limiter keeps (least recently used ones are dropped)."""

    @model_validator(mode="after")
    def _needs_url(self) -> LimitsConfig:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("backend 'redis' needs redis_url (PLUGHUB_REDIS_URL)")
        return self

    # -- resolution --------------------------------------------------------------------------

    @property
    def lease_seconds(self) -> float:
        """The concurrency lease in effect."""
        return self.concurrency_lease or self.request_timeout + 30.0

    def tenant_rates(self, tenant: str) -> list[Rate]:
        """The rates of the tenant scope."""
        t = self.tenants.get(tenant)
        return _parsed(t.rate if t and t.rate is not None else self.tenant_rate) or []

    def key_rates(self, tenant: str, key_rate: str | list[str] | None = None) -> list[Rate]:
        """The rates of an API key scope; ``key_rate`` is the key's own override, if any."""
        if key_rate is not None:
            return _parsed(key_rate) or []
        t = self.tenants.get(tenant)
        return _parsed(t.key_rate if t and t.key_rate is not None else self.key_rate) or []

    def plugin_rates(
        self, tenant: str, plugin: str, manifest_rate: str | RateLimit | Rate | None = None
    ) -> list[Rate]:
        """The rates of one tenant's calls to one plugin."""
        t = self.tenants.get(tenant)
        if t is not None and plugin in t.plugins and t.plugins[plugin] is not None:
            return _parsed(t.plugins[plugin]) or []
        if self.plugins.get(plugin) is not None:
            return _parsed(self.plugins[plugin]) or []
        if manifest_rate is not None:
            return [Rate.of(manifest_rate)]
        return _parsed(self.plugin_rate) or []

    def rates_for(
        self,
        tenant: str,
        key_id: str | None = None,
        plugin: str | None = None,
        *,
        manifest_rate: str | RateLimit | Rate | None = None,
        key_rate: str | list[str] | None = None,
    ) -> list[tuple[str, Rate]]:
        """Every ``(limiter key, rate)`` that applies to one call, tenant first.

        The limiter key is the scope key (:func:`limit_keys`) followed by ``@<period>``
        (``t:acme@60``), so that a scope may carry several rates (a per-minute limit and a
        daily quota) and a changed count keeps the calls already made (see
        ``docs/operators/limits.md``: the debt carries over in time).
        Pass the result to :func:`check_all`.
        """
        keys = limit_keys(tenant, key_id, plugin)
        out = [(f"{keys.tenant}@{r.per_seconds:g}", r) for r in self.tenant_rates(tenant)]
        if keys.key is not None:
            out += [(f"{keys.key}@{r.per_seconds:g}", r) for r in self.key_rates(tenant, key_rate)]
        if keys.plugin is not None and plugin is not None:
            out += [
                (f"{keys.plugin}@{r.per_seconds:g}", r)
                for r in self.plugin_rates(tenant, plugin, manifest_rate)
            ]
        return out

    def concurrency_for(self, tenant: str) -> int | None:
        """Calls in flight allowed at once for ``tenant`` (None: no limit)."""
        t = self.tenants.get(tenant)
        if t is not None and t.max_concurrent_calls is not None:
            return t.max_concurrent_calls
        return self.max_concurrent_calls

    def argument_limit(self, manifest_max: int | None = None) -> int:
        """The argument size limit for a plugin: the smaller of the operator's and its own."""
        if manifest_max is None:
            return self.max_argument_bytes
        return min(self.max_argument_bytes, manifest_max)

    def timeout_for(self, tool_timeout: float | None = None) -> float:
        """A call's deadline: the tool's own, capped by the request timeout."""
        if tool_timeout is None:
            return self.request_timeout
        return min(self.request_timeout, tool_timeout)

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LimitsConfig:
        """Read a YAML or JSON file holding the fields of this model."""
        return cls.model_validate(_read_file(Path(path)))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, base: Mapping[str, Any] | None = None
    ) -> LimitsConfig:
        """The configuration from ``PLUGHUB_*`` environment variables.

        ``base`` (e.g. the ``limits`` table of the server's config file), or else
        ``PLUGHUB_LIMITS_FILE`` (YAML or JSON), is read first; each variable below replaces
        its field. ``PLUGHUB_REDIS_URL`` alone selects the Redis backend. Raises
        ``ValueError`` naming the variable for a bad value.
        """
        env = os.environ if environ is None else environ
        data: dict[str, Any] = dict(base or {})
        file = None if base is not None else env.get("PLUGHUB_LIMITS_FILE")
        if file:
            data = _read_file(Path(file))
        names: dict[str, str] = {}
        for var, name in ENV_VARS.items():
            value = env.get(var)
            if value is None or not value.strip():
                continue
            data[name] = value
            names[name] = var
        if "redis_url" in names and "backend" not in names:
            data["backend"] = "redis"
        for name in ("max_concurrent_calls", "concurrency_lease"):
            if isinstance(data.get(name), str) and data[name].strip().lower() in UNLIMITED_WORDS:
                data[name] = None
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = []
            for err in e.errors():
                loc = str(err["loc"][0]) if err["loc"] else ""
                where = names.get(loc) or (f"{file}: {loc}" if file else loc or "<config>")
                problems.append(f"{where}: {err['msg']}")
            raise ValueError("invalid limits configuration: " + "; ".join(problems)) from None


#: Environment variable -> ``LimitsConfig`` field.
ENV_VARS = {
    "PLUGHUB_LIMITS_BACKEND": "backend",
    "PLUGHUB_REDIS_URL": "redis_url",
    "PLUGHUB_REDIS_PREFIX": "prefix",
    "PLUGHUB_LIMITS_ON_BACKEND_ERROR": "on_backend_error",
    "PLUGHUB_REDIS_TIMEOUT": "redis_timeout",
    "PLUGHUB_TENANT_RATE": "tenant_rate",
    "PLUGHUB_KEY_RATE": "key_rate",
    "PLUGHUB_PLUGIN_RATE": "plugin_rate",
    "PLUGHUB_MAX_BODY_BYTES": "max_body_bytes",
    "PLUGHUB_MAX_ARGUMENT_BYTES": "max_argument_bytes",
    "PLUGHUB_MAX_CONCURRENT_CALLS": "max_concurrent_calls",
    "PLUGHUB_REQUEST_TIMEOUT": "request_timeout",
    "PLUGHUB_CONCURRENCY_LEASE": "concurrency_lease",
}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the limits file {path}: {e}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ValueError(f"{path}: not valid {kind}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of limits settings")
    return data


@dataclass
class LimitsBackends:
    """The three shared services a replica needs, built from one :class:`LimitsConfig`."""

    config: LimitsConfig
    rate: RateLimiter
    concurrency: ConcurrencyLimiter
    notifier: Notifier
    replica_id: str
    _link: RedisLink | None = field(default=None, repr=False)

    def close(self) -> None:
        """Stop the notifier and close connections (sync code)."""
        self.notifier.close()
        if self._link is not None:
            self._link.close()

    async def aclose(self) -> None:
        """Stop the notifier and close connections, including this loop's async ones."""
        await self.notifier.aclose()
        if self._link is not None:
            await self._link.aclose()


def create_backends(config: LimitsConfig, *, replica_id: str | None = None) -> LimitsBackends:
    """Rate limiter, concurrency limiter and notifier for ``config.backend``.

    With ``redis`` they share one connection pool; the notifier's listener starts with its
    first subscriber. With ``memory`` they are private to this process.
    """
    rid = replica_id or default_replica_id()
    if config.backend == "memory":
        return LimitsBackends(
            config,
            MemoryRateLimiter(max_keys=config.memory_max_keys),
            MemoryConcurrencyLimiter(lease=config.lease_seconds),
            MemoryNotifier(replica_id=rid),
            rid,
        )
    link = RedisLink(config.redis_url, timeout=config.redis_timeout)
    return LimitsBackends(
        config,
        RedisRateLimiter(prefix=config.prefix, link=link, on_backend_error=config.on_backend_error),
        RedisConcurrencyLimiter(
            prefix=config.prefix,
            link=link,
            lease=config.lease_seconds,
            on_backend_error=config.on_backend_error,
        ),
        RedisNotifier(prefix=config.prefix, link=link, replica_id=rid),
        rid,
        link,
    )
