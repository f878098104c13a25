"""Concurrent-call limits (per tenant), in memory or shared through Redis, with leases.

A slot is held under a *lease*: a holder id with an expiry. Acquiring first drops expired
leases, then counts the rest against the limit, then adds a lease — atomically (one Lua
script in Redis, on Redis's clock). Releasing removes the lease. A replica that crashes
without releasing costs its slots only until their leases expire, so make the lease longer
than the longest call (the request timeout plus a margin) or :meth:`extend` it while a long
call runs. Acquiring never waits: a full key is refused at once (reason
``concurrency_limited``), which the daemon answers with HTTP 429.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import redis
import redis.asyncio as aredis

from ._rate import UNAVAILABLE_RETRY_AFTER, OnBackendError, redis_key, storage_key
from ._redis import BACKEND_ERRORS, LimitsBackendError, RedisLink, Script

__all__ = [
    "ConcurrencyLimiter",
    "Lease",
    "MemoryConcurrencyLimiter",
    "RedisConcurrencyLimiter",
]

log = logging.getLogger("plughub.limits")

#: ``retry_after`` suggested to a caller refused for concurrency (calls end at any moment).
BUSY_RETRY_AFTER = 1.0
_seq = itertools.count(1)
_process: tuple[int, str] = (0, "")


def _holder_id() -> str:
    """Unique across replicas and calls: pid, a random tag drawn once per process (again after
    a fork), a counter. Drawing randomness per call cost a syscall on the hot path."""
    global _process
    pid = os.getpid()
    if _process[0] != pid:
        _process = (pid, f"{pid}-{uuid.uuid4().hex[:12]}-")
    return f"{_process[1]}{next(_seq)}"


@dataclass(frozen=True, slots=True)
class Lease:
    """The outcome of an acquire: a held slot (``granted``) or a refusal.

    ``active`` is the number of slots in use after this attempt, out of ``limit``. A refusal
    has ``reason`` ``concurrency_limited`` or ``concurrency_limiter_unavailable`` (then
    ``detail`` says why) and a ``retry_after`` hint in seconds. Releasing a refusal is a no-op.
    """

    key: str
    holder: str
    granted: bool
    active: int
    limit: int
    expires_in: float = 0.0
    retry_after: float = 0.0
    reason: str | None = None
    detail: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """``Retry-After`` for a refusal; nothing for a granted slot."""
        return {} if self.granted else {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


def _check(key: str, limit: int, lease: float) -> str:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"a concurrency limit must be a whole number >= 1, got {limit!r}")
    if not lease > 0:
        raise ValueError(f"a lease must last > 0 seconds, got {lease!r}")
    return storage_key(key)


@runtime_checkable
class ConcurrencyLimiter(Protocol):
    """Slots per key, each held under a lease. Safe to call from many threads."""

    lease: float

    async def acquire(self, key: str, limit: int, *, lease: float | None = None) -> Lease:
        """Take one of ``limit`` slots of ``key`` for ``lease`` seconds, or be refused."""
        ...

    def acquire_sync(self, key: str, limit: int, *, lease: float | None = None) -> Lease:
        """:meth:`acquire` for sync code."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give the slot back (a refused or already expired lease: no-op)."""
        ...

    def release_sync(self, lease: Lease) -> None:
        """:meth:`release` for sync code."""
        ...

    async def extend(self, lease: Lease, seconds: float | None = None) -> bool:
        """Push the lease's expiry to ``seconds`` from now; False if it already expired."""
        ...

    def extend_sync(self, lease: Lease, seconds: float | None = None) -> bool:
        """:meth:`extend` for sync code."""
        ...

    async def active(self, key: str) -> int:
        """Slots of ``key`` held by unexpired leases."""
        ...

    def active_sync(self, key: str) -> int:
        """:meth:`active` for sync code."""
        ...

    def hold(
        self, key: str, limit: int, *, lease: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[Lease]:
        """``async with limiter.hold(key, limit) as lease:`` — acquire, and release at exit."""
        ...

    def hold_sync(
        self, key: str, limit: int, *, lease: float | None = None
    ) -> contextlib.AbstractContextManager[Lease]:
        """:meth:`hold` for sync code."""
        ...

    def close(self) -> None:
        """Release connections (a no-op in memory)."""
        ...

    async def aclose(self) -> None:
        """:meth:`close` from an event loop."""
        ...


class _Holding:
    """``hold`` and ``hold_sync`` on top of acquire/release, for both backends."""

    async def acquire(self, key: str, limit: int, *, lease: float | None = None) -> Lease:
        raise NotImplementedError

    def acquire_sync(self, key: str, limit: int, *, lease: float | None = None) -> Lease:
        raise NotImplementedError

    async def release(self, lease: Lease) -> None:
        raise NotImplementedError

    def release_sync(self, lease: Lease) -> None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def hold(
        self, key: str, limit: int, *, lease: float | None = None
    ) -> AsyncIterator[Lease]:
        """``async with limiter.hold(key, limit) as lease:`` — check ``lease.granted``; the
        slot is released when the block ends, however it ends."""
        got = await self.acquire(key, limit, lease=lease)
        try:
            yield got
        finally:
            await self.release(got)

    @contextlib.contextmanager
    def hold_sync(self, key: str, limit: int, *, lease: float | None = None) -> Iterator[Lease]:
        """:meth:`hold` for sync code."""
        got = self.acquire_sync(key, limit, lease=lease)
        try:
            yield got
        finally:
            self.release_sync(got)


class MemoryConcurrencyLimiter(_Holding):
    """Leases in this process. ``lease`` is the default lease length in seconds."""

    def __init__(
        self, *, lease: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lease = lease
        self._clock = clock
        self._held: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def _live(self, k: str, now: float) -> dict[str, float]:
        holders = self._held.get(k)
        if holders is None:
            return {}
        for h in [h for h, exp in holders.items() if exp <= now]:
            del holders[h]
        if not holders:
            del self._held[k]
        return holders

    def acquire_sync(self, key: str, limit: int, *, lease: float | None = None) -> Lease:
        seconds = self.lease if lease is None else lease
        k = _check(key, limit, seconds)
        with self._lock:
            now = self._clock()
            holders = self._live(k, now)
            n = len(holders)
            if n >= limit:
                return Lease(key, "", False, n, limit, 0.0, BUSY_RETRY_AFTER, "concurrency_limited")
            holder = _holder_id()
            self._held.setdefault(k, holders)[holder] = now + seconds
            return Lease(key, holder, True, n + 1, limit, seconds)

    def release_sync(self, lease: Lease) -> None:
        if not lease.granted:
            return
        k = storage_key(lease.key)
        with self._lock:
            holders = self._held.get(k)
            if holders is not None:
                holders.pop(lease.holder, None)
                if not holders:
                    del self._held[k]

    def extend_sync(self, lease: Lease, seconds: float | None = None) -> bool:
        if not lease.granted:
            return False
        k = storage_key(lease.key)
        with self._lock:
            now = self._clock()
            holders = self._live(k, now)
            if lease.holder not in holders:
                return False
            holders[lease.holder] = now + (self.lease if seconds is None else seconds)
            return True

    def active_sync(self, key: str) -> int:
        with self._lock:
            return len(self._live(storage_key(key), self._clock()))

    async def acquire(self, key: str, limit: int, *, lease: float | None = None) -> Lease:
        return self.acquire_sync(key, limit, lease=lease)

    async def release(self, lease: Lease) -> None:
        self.release_sync(lease)

    async def extend(self, lease: Lease, seconds: float | None = None) -> bool:
        return self.extend_sync(lease, seconds)

    async def active(self, key: str) -> int:
        return self.active_sync(key)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


# KEYS[1]: the sorted set of holder -> expiry (us). ARGV: holder, limit, lease us.
# Returns {granted, active}.
_ACQUIRE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then
  return {0, n}
end
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), ARGV[1])
local want = math.ceil(lease / 1000) + 1000
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], string.format('%d', want))
end
return {1, n + 1}
"""
)

# KEYS[1]: the sorted set. ARGV: holder, lease us. Returns 1 if extended, 0 if gone.
_EXTEND = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local exp = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if exp == nil or exp <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + lease), ARGV[1])
local want = math.ceil(lease / 1000) + 1000
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], string.format('%d', want))
end
return 1
"""
)

# KEYS[1]: the sorted set. Returns the number of unexpired leases.
_ACTIVE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now), '+inf')
"""
)

_US = 1_000_000


class RedisConcurrencyLimiter(_Holding):
    """Leases in a Redis sorted set ``<prefix>cc:<key>`` (holder -> expiry on Redis's clock),
    shared by every replica. ``on_backend_error`` as for :class:`RedisRateLimiter`; a refusal
    because Redis failed has reason ``concurrency_limiter_unavailable``. A release that fails
    is logged, and the lease expires on its own."""

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "plughub:",
        lease: float = 300.0,
        client: redis.Redis | None = None,
        aclient: aredis.Redis | None = None,
        link: RedisLink | None = None,
        timeout: float = 1.0,
        on_backend_error: OnBackendError = "deny",
    ) -> None:
        if on_backend_error not in ("deny", "allow", "raise"):
            raise ValueError(f"on_backend_error must be deny, allow or raise: {on_backend_error!r}")
        self.prefix = prefix
        self.lease = lease
        self.on_backend_error: OnBackendError = on_backend_error
        self._link = link or RedisLink(url, client=client, aclient=aclient, timeout=timeout)
        self._own_link = link is None
        self._last_warning = 0.0

    def _zkey(self, key: str) -> bytes:
        return redis_key(self.prefix, "cc:", storage_key(key))

    def _detail(self, exc: BaseException) -> str:
        return (
            f"the concurrency limiter's Redis at {self._link.where} failed: "
            f"{type(exc).__name__}: {exc}"
        )

    def _failed(self, exc: BaseException, key: str, limit: int) -> Lease:
        detail = self._detail(exc)
        if self.on_backend_error == "raise":
            raise LimitsBackendError(detail) from exc
        now = time.monotonic()
        if now - self._last_warning > 10.0:
            self._last_warning = now
            log.warning("%s; %s calls", detail, self.on_backend_error)
        if self.on_backend_error == "allow":
            # Granted without a lease in Redis: releasing it removes nothing.
            return Lease(
                key, "", True, 0, limit, 0.0, 0.0, "concurrency_limiter_unavailable", detail
            )
        return Lease(
            key,
            "",
            False,
            0,
            limit,
            0.0,
            UNAVAILABLE_RETRY_AFTER,
            "concurrency_limiter_unavailable",
            detail,
        )

    def _lease(self, raw: Any, key: str, holder: str, limit: int, seconds: float) -> Lease:
        granted, n = (int(x) for x in raw)
        if granted:
            return Lease(key, holder, True, n, limit, seconds)
        return Lease(key, "", False, n, limit, 0.0, BUSY_RETRY_AFTER, "concurrency_limited")

    def acquire_sync(self, key: str, limit: int, *, lease: float | None = None) -> Lease:
        seconds = self.lease if lease is None else lease
        _check(key, limit, seconds)
        holder = _holder_id()
        args = [holder, str(limit), repr(seconds * _US)]
        try:
            raw = self._link.run(_ACQUIRE, [self._zkey(key)], args)
        except BACKEND_ERRORS as e:
            return self._failed(e, key, limit)
        return self._lease(raw, key, holder, limit, seconds)

    async def acquire(self, key: str, limit: int, *, lease: float | None = None) -> Lease:
        seconds = self.lease if lease is None else lease
        _check(key, limit, seconds)
        holder = _holder_id()
        args = [holder, str(limit), repr(seconds * _US)]
        try:
            raw = await self._link.arun(_ACQUIRE, [self._zkey(key)], args)
        except BACKEND_ERRORS as e:
            return self._failed(e, key, limit)
        return self._lease(raw, key, holder, limit, seconds)

    def release_sync(self, lease: Lease) -> None:
        if not lease.holder:
            return
        try:
            self._link.sync().zrem(self._zkey(lease.key), lease.holder)
        except BACKEND_ERRORS as e:
            log.warning("%s; the slot frees itself when its lease expires", self._detail(e))

    async def release(self, lease: Lease) -> None:
        if not lease.holder:
            return
        try:
            await self._link.aio().zrem(self._zkey(lease.key), lease.holder)
        except BACKEND_ERRORS as e:
            log.warning("%s; the slot frees itself when its lease expires", self._detail(e))

    def extend_sync(self, lease: Lease, seconds: float | None = None) -> bool:
        if not lease.holder:
            return False
        s = self.lease if seconds is None else seconds
        try:
            raw = self._link.run(_EXTEND, [self._zkey(lease.key)], [lease.holder, repr(s * _US)])
        except BACKEND_ERRORS as e:
            if self.on_backend_error == "raise":
                raise LimitsBackendError(self._detail(e)) from e
            return False
        return bool(int(raw))

    async def extend(self, lease: Lease, seconds: float | None = None) -> bool:
        if not lease.holder:
            return False
        s = self.lease if seconds is None else seconds
        try:
            raw = await self._link.arun(
                _EXTEND, [self._zkey(lease.key)], [lease.holder, repr(s * _US)]
            )
        except BACKEND_ERRORS as e:
            if self.on_backend_error == "raise":
                raise LimitsBackendError(self._detail(e)) from e
            return False
        return bool(int(raw))

    def active_sync(self, key: str) -> int:
        try:
            return int(self._link.run(_ACTIVE, [self._zkey(key)], []))
        except BACKEND_ERRORS as e:
            raise LimitsBackendError(self._detail(e)) from e

    async def active(self, key: str) -> int:
        try:
            return int(await self._link.arun(_ACTIVE, [self._zkey(key)], []))
        except BACKEND_ERRORS as e:
            raise LimitsBackendError(self._detail(e)) from e

    def close(self) -> None:
        if self._own_link:
            self._link.close()

    async def aclose(self) -> None:
        if self._own_link:
            await self._link.aclose()
