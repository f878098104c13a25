"""Limits the daemon enforces, shared across replicas, and change notifications between them.

- Rates (:class:`RateLimiter`): GCRA per key, in memory (:class:`MemoryRateLimiter`) or in
  Redis (:class:`RedisRateLimiter`, atomic Lua on Redis's clock); :func:`limit_keys` names the
  tenant, API key and plugin scopes and :func:`check_all` charges all of them or none.
- Concurrency (:class:`ConcurrencyLimiter`): calls in flight per tenant, held under leases that
  expire, so a crashed replica's slots come back on their own.
- Notifications (:class:`Notifier`): "installations/credentials/settings changed" messages
  between replicas (Redis pub/sub), so a change made through one replica is live on all.
- :class:`LimitsConfig`: defaults, operator overrides and precedence; ``from_env()``;
  :func:`create_backends` builds the three services for a replica.

See ``docs/operators/limits.md``.
"""

from ._concurrency import (
    ConcurrencyLimiter,
    Lease,
    MemoryConcurrencyLimiter,
    RedisConcurrencyLimiter,
)
from ._config import LimitsBackends, LimitsConfig, TenantLimits, create_backends
from ._notify import (
    RESYNC,
    TOPICS,
    Callback,
    MemoryBus,
    MemoryNotifier,
    Notifier,
    RedisNotifier,
    default_replica_id,
)
from ._rate import (
    UNLIMITED,
    Decision,
    LimiterBucket,
    LimitKeys,
    MemoryRateLimiter,
    OnBackendError,
    Rate,
    RateLimiter,
    RedisRateLimiter,
    check_all,
    check_all_sync,
    limit_keys,
)
from ._redis import LimitsBackendError

__all__ = [
    "RESYNC",
    "TOPICS",
    "UNLIMITED",
    "Callback",
    "ConcurrencyLimiter",
    "Decision",
    "Lease",
    "LimitKeys",
    "LimiterBucket",
    "LimitsBackendError",
    "LimitsBackends",
    "LimitsConfig",
    "MemoryBus",
    "MemoryConcurrencyLimiter",
    "MemoryNotifier",
    "MemoryRateLimiter",
    "Notifier",
    "OnBackendError",
    "Rate",
    "RateLimiter",
    "RedisConcurrencyLimiter",
    "RedisNotifier",
    "RedisRateLimiter",
    "TenantLimits",
    "check_all",
    "check_all_sync",
    "create_backends",
    "default_replica_id",
    "limit_keys",
]
