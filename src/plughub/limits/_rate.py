"""Rate limiting with GCRA, in memory or shared through Redis.

GCRA (the generic cell rate algorithm) is a token bucket kept as one number per key: the
*theoretical arrival time* ``tat``, the moment at which the bucket will be full again. A rate
of ``count`` per ``per`` seconds has an emission interval ``T = per / count`` and a burst of
``count``. A hit of ``cost`` at time ``now``::

    tat      = max(stored tat, now)
    new_tat  = tat + cost * T
    allow_at = new_tat - per          # allowed if now >= allow_at
    allowed  -> store new_tat (the key expires at new_tat: after that it equals a fresh key)
    denied   -> retry_after = allow_at - now, nothing stored

``remaining`` is how many more hits of cost 1 would be allowed right now. Both backends use
these formulas; the Redis one runs them in one Lua script on Redis's own clock (``TIME``), so
replicas whose clocks disagree still agree on every decision, and several keys are checked and
committed atomically: either every key is charged or none is.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import redis
import redis.asyncio as aredis

from ..manifest import RateLimit, parse_rate_limit
from ._redis import BACKEND_ERRORS, LimitsBackendError, RedisLink, Script

__all__ = [
    "UNLIMITED",
    "Decision",
    "LimitKeys",
    "LimiterBucket",
    "MemoryRateLimiter",
    "OnBackendError",
    "Rate",
    "RateLimiter",
    "RedisRateLimiter",
    "check_all",
    "check_all_sync",
    "limit_keys",
]

log = logging.getLogger("plughub.limits")

#: What a shared limiter does when its backend fails: refuse the call (``deny``, the default),
#: let it through unlimited (``allow``), or raise :class:`LimitsBackendError` (``raise``).
OnBackendError = Literal["deny", "allow", "raise"]

#: Keys longer than this many UTF-8 bytes are stored under their SHA-256.
MAX_KEY_BYTES = 200
#: ``retry_after`` of a refusal because the backend is unavailable.
UNAVAILABLE_RETRY_AFTER = 1.0
_EPS = 1e-6  # slack for floating-point division when counting remaining hits


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` hits in any ``per_seconds`` window; bursts of up to ``count``."""

    count: int
    per_seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"a rate's count must be a whole number >= 1, got {self.count!r}")
        if not (self.per_seconds > 0 and math.isfinite(self.per_seconds)):
            raise ValueError(f"a rate's period must be > 0 seconds, got {self.per_seconds!r}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"600/minute"``, ``"10/s"``, ``"10/30s"``…: the syntax of ``limits.rate_limit``."""
        r = parse_rate_limit(text)
        return cls(r.count, r.per_seconds)

    @classmethod
    def of(cls, value: Rate | RateLimit | str) -> Rate:
        """A :class:`Rate` from a rate, a manifest ``RateLimit`` or rate text."""
        if isinstance(value, Rate):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        return cls(value.count, value.per_seconds)

    @property
    def interval(self) -> float:
        """Seconds one hit adds to the bucket (the emission interval)."""
        return self.per_seconds / self.count

    def __str__(self) -> str:
        return f"{self.count}/{self.per_seconds:g}s"


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a hit.

    ``retry_after`` is 0.0 when allowed, else the seconds after which the same hit would be
    allowed. ``remaining`` counts hits of cost 1 still allowed now, under ``limit`` (the burst
    of the binding rate; None when no rate applied). ``reset_after`` is the seconds until the
    binding bucket is full again. ``key`` is the binding key: for a denial the one with the
    longest wait, else the one with the fewest remaining hits. ``reason`` is None, or
    ``rate_limited``, or ``rate_limiter_unavailable`` (the backend failed; ``detail`` says how;
    ``allowed`` then follows the limiter's ``on_backend_error``).
    """

    allowed: bool
    retry_after: float
    remaining: int
    limit: int | None = None
    reset_after: float = 0.0
    key: str | None = None
    reason: str | None = None
    detail: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """HTTP response headers: ``Retry-After`` (whole seconds, >= 1) on a denial, and
        ``RateLimit-Limit``/``-Remaining``/``-Reset`` whenever a rate applied."""
        out: dict[str, str] = {}
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.limit is not None:
            out["RateLimit-Limit"] = str(self.limit)
            out["RateLimit-Remaining"] = str(self.remaining)
            out["RateLimit-Reset"] = str(math.ceil(self.reset_after))
        return out


#: The decision for a call no rate applies to.
UNLIMITED = Decision(True, 0.0, 0, None)


@runtime_checkable
class RateLimiter(Protocol):
    """Rate limiting over named keys. Every method is safe to call from many threads."""

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Charge ``cost`` to ``key`` if its ``rate`` allows it."""
        ...

    def hit_sync(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """:meth:`hit` for sync code (the in-process pipeline)."""
        ...

    async def hit_many(self, checks: Sequence[tuple[str, Rate]], cost: int = 1) -> Decision:
        """Charge ``cost`` to every key only if every rate allows it (atomically)."""
        ...

    def hit_many_sync(self, checks: Sequence[tuple[str, Rate]], cost: int = 1) -> Decision:
        """:meth:`hit_many` for sync code."""
        ...

    async def reset(self, key: str) -> None:
        """Forget ``key``: its next hit sees a full bucket."""
        ...

    def reset_sync(self, key: str) -> None:
        """:meth:`reset` for sync code."""
        ...

    def close(self) -> None:
        """Release connections (a no-op in memory)."""
        ...

    async def aclose(self) -> None:
        """:meth:`close` from an event loop (closes that loop's async connections)."""
        ...


# -- keys ------------------------------------------------------------------------------------


class LimitKeys(NamedTuple):
    """The scope keys of one call: ``t:<tenant>``, ``k:<key id>``, ``p:<tenant>:<plugin>``."""

    tenant: str
    key: str | None
    plugin: str | None


def _part(value: str) -> str:
    # Escape the separator so that tenant "a:b" + plugin "c" and tenant "a" + plugin "b:c"
    # never share a key.
    return value.replace("%", "%25").replace(":", "%3A")


def limit_keys(tenant: str, key_id: str | None = None, plugin: str | None = None) -> LimitKeys:
    """The three scope keys; ``%`` and ``:`` inside the parts are percent-escaped."""
    if not tenant:
        raise ValueError("a tenant id is required")
    return LimitKeys(
        f"t:{_part(tenant)}",
        f"k:{_part(key_id)}" if key_id else None,
        f"p:{_part(tenant)}:{_part(plugin)}" if plugin else None,
    )


def storage_key(key: str) -> str:
    """The key as stored: itself, or ``#<sha256>`` when it is long or starts with ``#``."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"a limit key must be a non-empty string, got {key!r}")
    if len(key) <= MAX_KEY_BYTES // 4 and not key.startswith("#"):
        return key  # short enough whatever its characters
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_KEY_BYTES and not key.startswith("#"):
        return key
    return "#" + hashlib.sha256(raw).hexdigest()


def redis_key(prefix: str, kind: str, stored: str) -> bytes:
    """The Redis key of a stored key; lone surrogates pass through as their UTF-8 bytes."""
    return (prefix + kind).encode() + stored.encode("utf-8", "surrogatepass")


def _checks(checks: Iterable[tuple[str, Rate]], cost: int) -> list[tuple[str, Rate]]:
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        raise ValueError(f"cost must be a whole number >= 0, got {cost!r}")
    out = []
    for key, rate in checks:
        if not isinstance(rate, Rate):
            raise TypeError(f"expected a Rate for {key!r}, got {type(rate).__name__}")
        if cost > rate.count:
            raise ValueError(
                f"a cost of {cost} can never fit in {key!r}'s rate {rate} (burst {rate.count})"
            )
        out.append((storage_key(key), rate))
    return out


# -- the shared decision logic ---------------------------------------------------------------


def _decide(
    checks: Sequence[tuple[str, Rate]],
    tats: Sequence[float],
    now: float,
    cost: int,
    keys: Sequence[str],
) -> tuple[Decision, list[float] | None]:
    """GCRA over several keys: the decision, and the new ``tat`` of each key when allowed."""
    new_tats: list[float] = []
    deny: Decision | None = None
    best: Decision | None = None
    for (_, rate), stored, key in zip(checks, tats, keys, strict=True):
        interval, per = rate.interval, rate.per_seconds
        tat = max(stored, now)
        new_tat = tat + cost * interval
        allow_at = new_tat - per
        if now < allow_at:
            retry = allow_at - now
            if deny is None or retry > deny.retry_after:
                left = max(0, math.floor((now - (tat - per)) / interval + _EPS))
                deny = Decision(False, retry, left, rate.count, tat - now, key, "rate_limited")
        else:
            new_tats.append(new_tat)
            left = math.floor((now - allow_at) / interval + _EPS)
            if best is None or left < best.remaining:
                best = Decision(True, 0.0, left, rate.count, new_tat - now, key)
    if deny is not None:
        return deny, None
    assert best is not None
    return best, new_tats


# -- memory ----------------------------------------------------------------------------------


class MemoryRateLimiter:
    """GCRA in this process: one float per key, an LRU of at most ``max_keys`` keys.

    When full, the least recently hit key is dropped; a key whose bucket has refilled is
    dropped at no cost (it equals a fresh key), a busier one forgets its debt. ``clock`` is a
    monotonic clock in seconds (tests may pass their own).
    """

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.max_keys = max_keys
        self._clock = clock
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tats)

    def hit_many_sync(self, checks: Sequence[tuple[str, Rate]], cost: int = 1) -> Decision:
        items = _checks(checks, cost)
        if not items:
            return UNLIMITED
        keys = [k for k, _ in checks]
        with self._lock:
            now = self._clock()
            tats = [self._tats.get(k, now) for k, _ in items]
            decision, new_tats = _decide(items, tats, now, cost, keys)
            if new_tats is not None and cost:
                for (k, _), tat in zip(items, new_tats, strict=True):
                    self._tats[k] = tat
                    self._tats.move_to_end(k)
                self._evict(now)
        return decision

    def _evict(self, now: float) -> None:
        tats = self._tats
        while len(tats) > self.max_keys:
            tats.popitem(last=False)
        # Opportunistically drop a couple of refilled keys from the cold end.
        for _ in range(2):
            if not tats:
                break
            k, tat = next(iter(tats.items()))
            if tat > now:
                break
            del tats[k]

    def hit_sync(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        return self.hit_many_sync([(key, rate)], cost)

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        return self.hit_many_sync([(key, rate)], cost)

    async def hit_many(self, checks: Sequence[tuple[str, Rate]], cost: int = 1) -> Decision:
        return self.hit_many_sync(checks, cost)

    def reset_sync(self, key: str) -> None:
        with self._lock:
            self._tats.pop(storage_key(key), None)

    async def reset(self, key: str) -> None:
        self.reset_sync(key)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


# -- redis -----------------------------------------------------------------------------------

# KEYS: the rate keys. ARGV[1]: cost; then, per key, its interval and period in microseconds.
# Returns {allowed, index of the binding key, retry_after us, remaining, reset_after us}.
# Numbers go back to Redis through string.format: Lua 5.1 prints 1.7e15 as 1.7e+15.
_GCRA = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local new_tats = {}
local deny_i, deny_retry, deny_left, deny_reset = 0, -1, 0, 0
local best_i, best_left, best_reset = 0, -1, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local per = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - per
  if now < allow_at then
    local retry = allow_at - now
    if retry > deny_retry then
      deny_i = i
      deny_retry = retry
      deny_left = math.max(0, math.floor((now - (tat - per)) / interval + 1e-6))
      deny_reset = tat - now
    end
  else
    new_tats[i] = new_tat
    local left = math.floor((now - allow_at) / interval + 1e-6)
    if best_i == 0 or left < best_left then
      best_i = i
      best_left = left
      best_reset = new_tat - now
    end
  end
end
if deny_i > 0 then
  return {0, deny_i, math.ceil(deny_retry), deny_left, math.ceil(deny_reset)}
end
if cost > 0 then
  for i = 1, #KEYS do
    local ttl = math.ceil((new_tats[i] - now) / 1000)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[i], string.format('%.0f', new_tats[i]), 'PX', string.format('%d', ttl))
  end
end
return {1, best_i, 0, best_left, math.ceil(best_reset)}
"""
)

_US = 1_000_000


class RedisRateLimiter:
    """GCRA in Redis, shared by every replica that uses the same Redis and ``prefix``.

    Keys are ``<prefix>rl:<key>`` (long keys hashed) and expire once their bucket is full
    again. Give ``url`` (clients are built and owned here) or ready ``client``/``aclient``.
    ``on_backend_error`` decides what a failed Redis means: ``deny`` (default, fail closed: a
    denial with reason ``rate_limiter_unavailable``), ``allow`` (fail open: allowed, same
    reason) or ``raise`` (:class:`LimitsBackendError`). Redis Cluster is not supported: one
    call's keys must live on one server.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "plughub:",
        client: redis.Redis | None = None,
        aclient: aredis.Redis | None = None,
        link: RedisLink | None = None,
        timeout: float = 1.0,
        on_backend_error: OnBackendError = "deny",
    ) -> None:
        if on_backend_error not in ("deny", "allow", "raise"):
            raise ValueError(f"on_backend_error must be deny, allow or raise: {on_backend_error!r}")
        self.prefix = prefix
        self.on_backend_error: OnBackendError = on_backend_error
        self._link = link or RedisLink(url, client=client, aclient=aclient, timeout=timeout)
        self._own_link = link is None
        self._last_warning = 0.0

    def _args(
        self, checks: Sequence[tuple[str, Rate]], cost: int
    ) -> tuple[list[tuple[str, Rate]], list[bytes], list[str]]:
        items = _checks(checks, cost)
        keys = [self._key(k) for k, _ in items]
        args = [str(cost)]
        for _, rate in items:
            args += [repr(rate.interval * _US), repr(rate.per_seconds * _US)]
        return items, keys, args

    @staticmethod
    def _decode(raw: Any, checks: Sequence[tuple[str, Rate]]) -> Decision:
        allowed, index, retry_us, left, reset_us = (int(x) for x in raw)
        key, rate = checks[index - 1]
        return Decision(
            bool(allowed),
            retry_us / _US,
            left,
            rate.count,
            reset_us / _US,
            key,
            None if allowed else "rate_limited",
        )

    def _failed(self, exc: BaseException) -> Decision:
        detail = (
            f"the rate limiter's Redis at {self._link.where} failed: {type(exc).__name__}: {exc}"
        )
        if self.on_backend_error == "raise":
            raise LimitsBackendError(detail) from exc
        now = time.monotonic()
        if now - self._last_warning > 10.0:
            self._last_warning = now
            action = "denying" if self.on_backend_error == "deny" else "allowing"
            log.warning("%s; %s rate-limited calls until it is back", detail, action)
        if self.on_backend_error == "allow":
            return Decision(True, 0.0, 0, None, 0.0, None, "rate_limiter_unavailable", detail)
        return Decision(
            False, UNAVAILABLE_RETRY_AFTER, 0, None, 0.0, None, "rate_limiter_unavailable", detail
        )

    def hit_many_sync(self, checks: Sequence[tuple[str, Rate]], cost: int = 1) -> Decision:
        items, keys, args = self._args(checks, cost)
        if not items:
            return UNLIMITED
        try:
            raw = self._link.run(_GCRA, keys, args)
        except BACKEND_ERRORS as e:
            return self._failed(e)
        return self._decode(raw, checks)

    async def hit_many(self, checks: Sequence[tuple[str, Rate]], cost: int = 1) -> Decision:
        items, keys, args = self._args(checks, cost)
        if not items:
            return UNLIMITED
        try:
            raw = await self._link.arun(_GCRA, keys, args)
        except BACKEND_ERRORS as e:
            return self._failed(e)
        return self._decode(raw, checks)

    def hit_sync(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        return self.hit_many_sync([(key, rate)], cost)

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        return await self.hit_many([(key, rate)], cost)

    def _key(self, stored: str) -> bytes:
        return redis_key(self.prefix, "rl:", stored)

    def reset_sync(self, key: str) -> None:
        self._link.sync().delete(self._key(storage_key(key)))

    async def reset(self, key: str) -> None:
        await self._link.aio().delete(self._key(storage_key(key)))

    def close(self) -> None:
        if self._own_link:
            self._link.close()

    async def aclose(self) -> None:
        if self._own_link:
            await self._link.aclose()


# -- helpers ---------------------------------------------------------------------------------


def _present(checks: Iterable[tuple[str | None, Rate | None]]) -> list[tuple[str, Rate]]:
    return [(k, r) for k, r in checks if k is not None and r is not None]


async def check_all(
    limiter: RateLimiter, checks: Iterable[tuple[str | None, Rate | None]], cost: int = 1
) -> Decision:
    """Check every ``(key, rate)`` (pairs with a None key or rate are skipped) as one hit.

    Either all keys are charged or none is: a denial by the plugin key does not spend the
    tenant's budget. The decision is the strictest: the denial with the longest
    ``retry_after``, or, when allowed, the key with the fewest remaining hits.
    """
    return await limiter.hit_many(_present(checks), cost)


def check_all_sync(
    limiter: RateLimiter, checks: Iterable[tuple[str | None, Rate | None]], cost: int = 1
) -> Decision:
    """:func:`check_all` for sync code."""
    return limiter.hit_many_sync(_present(checks), cost)


class LimiterBucket:
    """A shared limiter behind the host pipeline's ``acquire() -> seconds to wait`` interface.

    ``PluginHost`` gives each rate-limited plugin one over an in-process ``MemoryRateLimiter``;
    over a ``RedisRateLimiter`` the same calls count against a key shared by every replica.
    """

    __slots__ = ("key", "limiter", "rate")

    def __init__(self, limiter: RateLimiter, key: str, rate: Rate) -> None:
        self.limiter = limiter
        self.key = key
        self.rate = rate

    def acquire(self) -> float:
        """0.0 when the call may go ahead, else the seconds to wait (at least 1 ms)."""
        d = self.limiter.hit_sync(self.key, self.rate)
        return 0.0 if d.allowed else max(d.retry_after, 0.001)
