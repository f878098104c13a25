"""Concurrent-call limits: the same behaviour from both backends, leases that expire after a
crash, and what Redis failing means."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from plughub.limits import (
    ConcurrencyLimiter,
    Lease,
    LimitsBackendError,
    MemoryConcurrencyLimiter,
    RedisConcurrencyLimiter,
)

Make = Callable[..., Any]


def test_both_backends_satisfy_the_protocol() -> None:
    assert isinstance(MemoryConcurrencyLimiter(), ConcurrencyLimiter)
    lim = RedisConcurrencyLimiter("redis://127.0.0.1:1/0")
    assert isinstance(lim, ConcurrencyLimiter)
    lim.close()


def test_slots_up_to_the_limit_then_refused(make_concurrency_limiter: Make) -> None:
    lim = make_concurrency_limiter()
    a = lim.acquire_sync("t:acme", 2)
    b = lim.acquire_sync("t:acme", 2)
    assert a.granted and b.granted and a.holder != b.holder
    assert (a.active, b.active) == (1, 2)
    c = lim.acquire_sync("t:acme", 2)
    assert not c.granted
    assert c.reason == "concurrency_limited"
    assert c.active == 2 and c.limit == 2
    assert c.headers() == {"Retry-After": "1"}
    assert a.headers() == {}
    assert lim.active_sync("t:acme") == 2
    lim.release_sync(a)
    lim.release_sync(a)  # twice: harmless
    lim.release_sync(c)  # a refusal: no-op
    assert lim.active_sync("t:acme") == 1
    assert lim.acquire_sync("t:acme", 2).granted


def test_tenants_are_separate_and_hostile_keys_work(make_concurrency_limiter: Make) -> None:
    lim = make_concurrency_limiter()
    keys = ["t:a", "t:b", "t:" + "x" * 5000, "t:日本🚀", "t:a:b::", "t:\ud800", "#hash"]
    for key in keys:
        assert lim.acquire_sync(key, 1).granted, key[:10]
    for key in keys:
        assert not lim.acquire_sync(key, 1).granted, key[:10]
    with pytest.raises(ValueError):
        lim.acquire_sync("", 1)
    with pytest.raises(ValueError):
        lim.acquire_sync("t:a", 0)
    with pytest.raises(ValueError):
        lim.acquire_sync("t:a", 1, lease=0)


def test_hold_releases_however_the_block_ends(make_concurrency_limiter: Make) -> None:
    lim = make_concurrency_limiter()
    with pytest.raises(RuntimeError), lim.hold_sync("t:hold", 1) as lease:
        assert lease.granted
        assert not lim.acquire_sync("t:hold", 1).granted
        raise RuntimeError("the call failed")
    assert lim.active_sync("t:hold") == 0
    with lim.hold_sync("t:hold", 1) as lease:
        assert lease.granted


def test_a_crashed_holders_slot_expires_with_its_lease(make_concurrency_limiter: Make) -> None:
    crashed = make_concurrency_limiter()
    survivor = make_concurrency_limiter()
    assert crashed.acquire_sync("t:crash", 1, lease=0.3).granted
    crashed.close()  # the replica dies without releasing
    assert not survivor.acquire_sync("t:crash", 1).granted
    time.sleep(0.5)
    assert survivor.active_sync("t:crash") == 0
    assert survivor.acquire_sync("t:crash", 1).granted


def test_extending_a_lease_keeps_a_long_call_counted(make_concurrency_limiter: Make) -> None:
    lim = make_concurrency_limiter()
    lease = lim.acquire_sync("t:long", 1, lease=0.3)
    assert lim.extend_sync(lease, 10.0)
    time.sleep(0.45)
    assert not lim.acquire_sync("t:long", 1).granted
    short = lim.acquire_sync("t:short", 1, lease=0.1)
    time.sleep(0.25)
    assert not lim.extend_sync(short, 10.0)  # expired already: too late
    assert not lim.extend_sync(Lease("t:x", "", False, 0, 1))


def test_many_threads_get_exactly_the_limit(make_concurrency_limiter: Make) -> None:
    lim = make_concurrency_limiter()
    got: list[Lease] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def worker() -> None:
        barrier.wait()
        lease = lim.acquire_sync("t:race", 3)
        with lock:
            got.append(lease)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(lease.granted for lease in got) == 3
    for lease in got:
        lim.release_sync(lease)
    assert lim.active_sync("t:race") == 0


def test_async_api(make_concurrency_limiter: Make) -> None:
    lim = make_concurrency_limiter()

    async def main() -> tuple[bool, bool, int, bool]:
        try:
            async with lim.hold("t:async", 1) as first:
                second = await lim.acquire("t:async", 1)
                extended = await lim.extend(first, 30.0)
                active = await lim.active("t:async")
            third = await lim.acquire("t:async", 1)
            await lim.release(third)
            return first.granted and extended, second.granted, active, third.granted
        finally:
            await lim.aclose()

    assert asyncio.run(main()) == (True, False, 1, True)


# -- Redis only ------------------------------------------------------------------------------


def test_two_replicas_share_the_slots(redis_url: str, redis_prefix: str) -> None:
    a = RedisConcurrencyLimiter(redis_url, prefix=redis_prefix)
    b = RedisConcurrencyLimiter(redis_url, prefix=redis_prefix)
    try:
        la = a.acquire_sync("t:acme", 2)
        lb = b.acquire_sync("t:acme", 2)
        assert la.granted and lb.granted
        assert not a.acquire_sync("t:acme", 2).granted
        assert not b.acquire_sync("t:acme", 2).granted
        b.release_sync(la)  # any replica may release a lease it knows
        assert a.acquire_sync("t:acme", 2).granted
    finally:
        a.close()
        b.close()


def test_the_sorted_set_expires_with_the_longest_lease(
    redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    lim = RedisConcurrencyLimiter(redis_url, prefix=redis_prefix)
    try:
        lim.acquire_sync("t:ttl", 5, lease=30.0)
        lim.acquire_sync("t:ttl", 5, lease=1.0)  # a shorter lease never shortens the key
        ttl = redis_client.pttl(f"{redis_prefix}cc:t:ttl")
        assert 30_000 < ttl <= 31_000
    finally:
        lim.close()


def test_redis_down_refuses_with_a_clear_reason(redis_proxy: Any, redis_prefix: str) -> None:
    deny = RedisConcurrencyLimiter(redis_proxy.url, prefix=redis_prefix, timeout=0.5)
    allow = RedisConcurrencyLimiter(redis_proxy.url, prefix=redis_prefix, on_backend_error="allow")
    fail = RedisConcurrencyLimiter(redis_proxy.url, prefix=redis_prefix, on_backend_error="raise")
    try:
        held = deny.acquire_sync("t:down", 5)
        assert held.granted
        redis_proxy.stop()
        refused = deny.acquire_sync("t:down", 5)
        assert not refused.granted
        assert refused.reason == "concurrency_limiter_unavailable"
        assert refused.detail is not None and str(redis_proxy.port) in refused.detail
        deny.release_sync(held)  # logged, not raised: the lease expires by itself
        passed = allow.acquire_sync("t:down", 5)
        assert passed.granted and passed.reason == "concurrency_limiter_unavailable"
        allow.release_sync(passed)
        with pytest.raises(LimitsBackendError):
            fail.acquire_sync("t:down", 5)
        with pytest.raises(LimitsBackendError):
            deny.active_sync("t:down")
        redis_proxy.start()
        assert deny.active_sync("t:down") == 1  # the failed release left the lease to expire
    finally:
        for lim in (deny, allow, fail):
            lim.close()
