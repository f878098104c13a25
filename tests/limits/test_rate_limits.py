"""Rate limiting: the same behaviour from the memory and the Redis backend (parametrized), then
what only a shared limiter can show (replicas, expiry, Redis failing)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from plughub.limits import (
    UNLIMITED,
    Decision,
    LimiterBucket,
    LimitsBackendError,
    MemoryRateLimiter,
    Rate,
    RateLimiter,
    RedisRateLimiter,
    check_all,
    check_all_sync,
    limit_keys,
)
from plughub.manifest import RateLimit

Make = Callable[..., Any]


# -- Rate and keys ---------------------------------------------------------------------------


def test_rate_parses_the_manifest_syntax_and_validates() -> None:
    assert Rate.parse("600/minute") == Rate(600, 60.0)
    assert Rate.parse("10/30s") == Rate(10, 30.0)
    assert Rate.of(RateLimit(5, 1.0)) == Rate(5, 1.0)
    assert Rate.of("5/s").interval == pytest.approx(0.2)
    for bad in ((0, 1.0), (1, 0.0), (1, float("inf")), (True, 1.0)):
        with pytest.raises(ValueError):
            Rate(*bad)
    with pytest.raises(ValueError, match="not a rate limit"):
        Rate.parse("fast")


def test_limit_keys_name_the_three_scopes_and_escape_separators() -> None:
    assert limit_keys("acme", "key1", "acme/search") == ("t:acme", "k:key1", "p:acme:acme/search")
    assert limit_keys("acme") == ("t:acme", None, None)
    # tenant "a:b" + plugin "c" must not collide with tenant "a" + plugin "b:c"
    assert limit_keys("a:b", None, "c").plugin != limit_keys("a", None, "b:c").plugin
    assert limit_keys("a%3Ab").tenant != limit_keys("a:b").tenant
    with pytest.raises(ValueError):
        limit_keys("")


def test_both_backends_satisfy_the_protocol() -> None:
    assert isinstance(MemoryRateLimiter(), RateLimiter)
    lim = RedisRateLimiter("redis://127.0.0.1:1/0")
    assert isinstance(lim, RateLimiter)
    lim.close()


# -- shared semantics (both backends) --------------------------------------------------------


def test_burst_is_allowed_then_denied_with_a_correct_retry_after(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    rate = Rate(5, 1.0)
    decisions = [lim.hit_sync("t:burst", rate) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.reason is None for d in decisions)
    denied = lim.hit_sync("t:burst", rate)
    assert not denied.allowed
    assert denied.reason == "rate_limited"
    assert denied.key == "t:burst"
    assert denied.remaining == 0
    # one token comes back every 0.2 s
    assert 0.05 < denied.retry_after <= 0.2 + 1e-6
    assert 0.5 < denied.reset_after <= 1.0 + 1e-6
    assert denied.headers() == {
        "Retry-After": "1",
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "1",
    }


def test_retry_after_is_honest(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    rate = Rate(2, 0.4)
    assert lim.hit_sync("t:honest", rate).allowed
    assert lim.hit_sync("t:honest", rate).allowed
    denied = lim.hit_sync("t:honest", rate)
    assert not denied.allowed
    time.sleep(denied.retry_after + 0.02)
    assert lim.hit_sync("t:honest", rate).allowed


def test_bucket_refills_over_time(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    rate = Rate(10, 1.0)  # one token every 0.1 s
    while lim.hit_sync("t:refill", rate).allowed:
        pass
    time.sleep(0.35)
    allowed = 0
    while lim.hit_sync("t:refill", rate).allowed:
        allowed += 1
    # ~3 tokens came back; generous bounds, this is not a timing benchmark
    assert 1 <= allowed <= 6


def test_cost_charges_several_tokens_and_zero_cost_only_looks(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    rate = Rate(10, 10.0)
    assert lim.hit_sync("k:cost", rate, cost=4).remaining == 6
    peek = lim.hit_sync("k:cost", rate, cost=0)
    assert peek.allowed and peek.remaining == 6
    assert lim.hit_sync("k:cost", rate, cost=0).remaining == 6
    denied = lim.hit_sync("k:cost", rate, cost=7)
    assert not denied.allowed
    assert denied.remaining == 6  # what is left is not enough for 7
    assert 0.5 < denied.retry_after <= 1.0 + 1e-6  # one more token takes 1 s
    assert lim.hit_sync("k:cost", rate, cost=6).allowed
    with pytest.raises(ValueError, match="can never fit"):
        lim.hit_sync("k:cost", rate, cost=11)
    with pytest.raises(ValueError):
        lim.hit_sync("k:cost", rate, cost=-1)


def test_tenant_key_and_plugin_scopes_are_separate(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    rate = Rate(1, 60.0)
    a = limit_keys("acme", "key-1", "acme/search")
    b = limit_keys("globex", "key-2", "acme/search")
    keys = [*a, *b, limit_keys("acme", None, "acme/other").plugin]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert lim.hit_sync(key, rate).allowed, key
    for key in keys:
        assert not lim.hit_sync(key, rate).allowed, key


def test_check_all_denial_charges_no_key(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    keys = limit_keys("acme", "key-1", "acme/search")
    tenant, plugin = Rate(100, 60.0), Rate(2, 60.0)
    checks = [(keys.tenant, tenant), (keys.key, None), (keys.plugin, plugin)]
    assert check_all_sync(lim, checks).allowed
    assert check_all_sync(lim, checks).allowed
    for _ in range(5):
        denied = check_all_sync(lim, checks)
        assert not denied.allowed
        assert denied.key == keys.plugin
        assert denied.limit == 2
    # the five denials spent nothing of the tenant's budget
    assert lim.hit_sync(keys.tenant, tenant, cost=0).remaining == 98


def test_check_all_returns_the_strictest_decision(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    short, long = Rate(1, 1.0), Rate(1, 30.0)
    assert lim.hit_sync("t:s", short).allowed
    assert lim.hit_sync("p:s:x", long).allowed
    denied = check_all_sync(lim, [("t:s", short), ("k:free", Rate(50, 1.0)), ("p:s:x", long)])
    assert not denied.allowed
    assert denied.key == "p:s:x"  # the longest wait wins
    assert 20 < denied.retry_after <= 30 + 1e-6
    allowed = check_all_sync(lim, [("t:a", Rate(100, 1.0)), ("k:a", Rate(3, 1.0))])
    assert allowed.allowed and allowed.key == "k:a" and allowed.remaining == 2


def test_no_checks_means_unlimited(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    d = check_all_sync(lim, [("t:x", None), (None, Rate(1, 1.0))])
    assert d is UNLIMITED
    assert d.allowed and d.limit is None and d.headers() == {}


def test_async_api_matches_the_sync_one(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    rate = Rate(3, 60.0)

    async def main() -> list[Decision]:
        try:
            out = [await lim.hit("t:async", rate) for _ in range(2)]
            out.append(await check_all(lim, [("t:async", rate), ("k:async", rate)]))
            out.append(await lim.hit_many([("t:async", rate)]))
            await lim.reset("t:async")
            out.append(await lim.hit("t:async", rate))
            return out
        finally:
            await lim.aclose()

    d = asyncio.run(main())
    assert [x.allowed for x in d] == [True, True, True, False, True]
    assert d[-1].remaining == 2
    lim.reset_sync("k:async")
    assert lim.hit_sync("k:async", rate).remaining == 2


def test_hostile_keys_are_handled(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    rate = Rate(1, 60.0)
    long_a, long_b = "t:" + "a" * 10_000, "t:" + "a" * 9_999 + "b"
    keys = [
        long_a,
        long_b,
        "t:日本語テナント🚀",
        "t:a:b:c::",
        "p:" + ":" * 300,
        "t:\x00nul\r\n*?[",
        "t:\ud800lone-surrogate",
        "#" + "0" * 64,
        "t:" + "é" * 150,  # short in characters, long in bytes
    ]
    for key in keys:
        assert lim.hit_sync(key, rate).allowed, key[:20]
    for key in keys:
        denied = lim.hit_sync(key, rate)
        assert not denied.allowed and denied.key == key
    with pytest.raises(ValueError):
        lim.hit_sync("", rate)


def test_many_threads_never_overspend(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    rate = Rate(100, 60.0)
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(40):
            ok = check_all_sync(lim, [("t:threads", rate), ("k:threads", Rate(1000, 3600.0))])
            with lock:
                allowed.append(ok.allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100
    # the denied calls did not charge the wider key
    assert lim.hit_sync("k:threads", Rate(1000, 3600.0), cost=0).remaining == 900


def test_a_changed_rate_takes_over_the_debt_in_time(make_rate_limiter: Make) -> None:
    lim = make_rate_limiter()
    for _ in range(5):
        assert lim.hit_sync("t:change", Rate(5, 60.0)).allowed
    assert not lim.hit_sync("t:change", Rate(5, 60.0)).allowed
    # The operator doubles the limit. The bucket holds 60 s of debt, which at the new rate
    # is 10 calls: the next call waits one new interval (6 s), not a full old one (12 s).
    d = lim.hit_sync("t:change", Rate(10, 60.0))
    assert not d.allowed and 5 < d.retry_after <= 6 + 1e-6
    # Lowering a limit never forgives calls already made.
    assert not lim.hit_sync("t:change", Rate(1, 60.0)).allowed


def test_limiter_bucket_adapts_to_the_host_pipeline(make_rate_limiter: Make) -> None:
    bucket = LimiterBucket(make_rate_limiter(), "p:acme:x", Rate(2, 60.0))
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == 0.0
    assert 20 < bucket.acquire() <= 30 + 1e-6


# -- memory only -----------------------------------------------------------------------------


def test_memory_gcra_is_exact_with_a_fake_clock() -> None:
    now = [1000.0]
    lim = MemoryRateLimiter(clock=lambda: now[0])
    rate = Rate(3, 3.0)
    assert [lim.hit_sync("k", rate).allowed for _ in range(4)] == [True, True, True, False]
    assert lim.hit_sync("k", rate).retry_after == pytest.approx(1.0)
    now[0] += 0.999
    assert not lim.hit_sync("k", rate).allowed
    now[0] += 0.002
    d = lim.hit_sync("k", rate)
    assert d.allowed and d.remaining == 0
    now[0] += 100
    assert lim.hit_sync("k", rate).remaining == 2


def test_memory_limiter_memory_is_bounded() -> None:
    now = [0.0]
    lim = MemoryRateLimiter(max_keys=3, clock=lambda: now[0])
    rate = Rate(1, 60.0)
    for i in range(50):
        lim.hit_sync(f"t:{i}", rate)
        assert len(lim) <= 3
    # the most recently used keys are the ones kept
    assert not lim.hit_sync("t:49", rate).allowed
    assert lim.hit_sync("t:0", rate).allowed  # evicted: forgotten
    # refilled keys are dropped at no cost
    now[0] += 120
    lim.hit_sync("t:new", rate)
    assert len(lim) <= 2


# -- Redis only ------------------------------------------------------------------------------


def test_two_replicas_share_one_budget(redis_url: str, redis_prefix: str) -> None:
    a = RedisRateLimiter(redis_url, prefix=redis_prefix)
    b = RedisRateLimiter(redis_url, prefix=redis_prefix)
    other = RedisRateLimiter(redis_url, prefix=redis_prefix + "other:")
    try:
        rate = Rate(6, 60.0)
        results = [(a if i % 2 else b).hit_sync("t:shared", rate).allowed for i in range(10)]
        assert results == [True] * 6 + [False] * 4
        # a different prefix is a different deployment
        assert other.hit_sync("t:shared", rate).allowed
    finally:
        for lim in (a, b, other):
            lim.close()


def test_replicas_with_skewed_clocks_agree(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lim = RedisRateLimiter(redis_url, prefix=redis_prefix)
    try:
        assert lim.hit_sync("t:skew", Rate(1, 60.0)).allowed
        # this replica's clock is an hour off: Redis's TIME decides, not ours
        monkeypatch.setattr(time, "time", lambda: 1e9)
        monkeypatch.setattr(time, "monotonic", lambda: 1e9)
        assert not lim.hit_sync("t:skew", Rate(1, 60.0)).allowed
    finally:
        monkeypatch.undo()
        lim.close()


def test_keys_live_under_the_prefix_and_expire_when_full_again(
    redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    lim = RedisRateLimiter(redis_url, prefix=redis_prefix)
    try:
        lim.hit_sync("t:ttl", Rate(10, 2.0), cost=3)
        lim.hit_sync("t:" + "x" * 5000, Rate(10, 2.0))
        keys = sorted(redis_client.scan_iter(match=f"{redis_prefix}*"))
        assert len(keys) == 2
        assert all(len(k) < len(redis_prefix) + 100 for k in keys)  # the long key is hashed
        ttl = redis_client.pttl(f"{redis_prefix}rl:t:ttl")
        assert 0 < ttl <= 600 + 5  # 3 tokens * 0.2 s
    finally:
        lim.close()


def test_script_cache_flush_falls_back_to_eval(
    redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    lim = RedisRateLimiter(redis_url, prefix=redis_prefix)
    try:
        assert lim.hit_sync("t:flush", Rate(2, 60.0)).allowed
        redis_client.script_flush()
        assert lim.hit_sync("t:flush", Rate(2, 60.0)).allowed
        redis_client.script_flush()

        async def main() -> Decision:
            try:
                return await lim.hit("t:flush", Rate(2, 60.0))
            finally:
                await lim.aclose()

        assert not asyncio.run(main()).allowed
    finally:
        lim.close()


def test_shared_clients_are_used_and_not_closed(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    lim = RedisRateLimiter(client=client, prefix=redis_prefix)
    try:
        assert lim.hit_sync("t:client", Rate(1, 60.0)).allowed
        lim.close()
        assert client.ping()
    finally:
        client.close()


def test_redis_down_mid_run_denies_with_a_clear_reason(redis_proxy: Any, redis_prefix: str) -> None:
    deny = RedisRateLimiter(redis_proxy.url, prefix=redis_prefix, timeout=0.5)
    allow = RedisRateLimiter(redis_proxy.url, prefix=redis_prefix, on_backend_error="allow")
    fail = RedisRateLimiter(redis_proxy.url, prefix=redis_prefix, on_backend_error="raise")
    rate = Rate(100, 60.0)
    try:
        for lim in (deny, allow, fail):
            assert lim.hit_sync("t:down", rate).allowed
        redis_proxy.stop()
        started = time.monotonic()
        d = deny.hit_sync("t:down", rate)
        assert time.monotonic() - started < 3.0  # no long retry loop
        assert not d.allowed
        assert d.reason == "rate_limiter_unavailable"
        assert d.retry_after > 0 and d.headers()["Retry-After"] == "1"
        assert d.detail is not None and f"127.0.0.1:{redis_proxy.port}" in d.detail
        d = allow.hit_sync("t:down", rate)
        assert d.allowed and d.reason == "rate_limiter_unavailable"
        with pytest.raises(
            LimitsBackendError, match=f"Redis at redis://127.0.0.1:{redis_proxy.port}"
        ):
            fail.hit_sync("t:down", rate)

        async def down() -> Decision:
            try:
                return await deny.hit("t:down", rate)
            finally:
                await deny.aclose()

        assert asyncio.run(down()).reason == "rate_limiter_unavailable"
        # Redis is back: the limiter recovers by itself, and the budget survived
        redis_proxy.start()
        back = deny.hit_sync("t:down", rate)
        assert back.allowed and back.remaining == 96
    finally:
        for lim in (deny, allow, fail):
            lim.close()


def test_password_is_not_shown_in_errors(redis_prefix: str) -> None:
    lim = RedisRateLimiter("redis://user:s3cret@127.0.0.1:1/0", prefix=redis_prefix, timeout=0.2)
    try:
        d = lim.hit_sync("t:pw", Rate(1, 1.0))
        assert d.reason == "rate_limiter_unavailable"
        assert d.detail is not None and "s3cret" not in d.detail and "***" in d.detail
    finally:
        lim.close()
