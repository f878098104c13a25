"""LimitsConfig: defaults, precedence (operator override > manifest default > config default),
the environment, files, and the backends it builds."""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from plughub.limits import (
    LimitsConfig,
    MemoryConcurrencyLimiter,
    MemoryNotifier,
    MemoryRateLimiter,
    Rate,
    RedisConcurrencyLimiter,
    RedisNotifier,
    RedisRateLimiter,
    TenantLimits,
    check_all,
    check_all_sync,
    create_backends,
)
from plughub.manifest import RateLimit


def test_defaults() -> None:
    c = LimitsConfig()
    assert c.backend == "memory" and c.on_backend_error == "deny"
    assert c.rates_for("acme", "key-1", "acme/search") == [("t:acme@60", Rate(600, 60.0))]
    assert c.concurrency_for("acme") == 64
    assert c.max_body_bytes == 1_048_576 and c.max_argument_bytes == 1_048_576
    assert c.request_timeout == 120
    assert c.lease_seconds == c.request_timeout + 30


def test_plugin_rate_precedence() -> None:
    c = LimitsConfig(
        plugin_rate="100/minute",
        plugins={"acme/search": "50/minute"},
        tenants={"globex": TenantLimits(plugins={"acme/search": "5/minute"})},
    )
    manifest = RateLimit(20, 60.0)
    # operator override for this tenant and plugin
    assert c.plugin_rates("globex", "acme/search", manifest) == [Rate(5, 60.0)]
    # operator override for the plugin
    assert c.plugin_rates("acme", "acme/search", manifest) == [Rate(50, 60.0)]
    # the manifest's default
    assert c.plugin_rates("acme", "acme/other", manifest) == [Rate(20, 60.0)]
    assert c.plugin_rates("acme", "acme/other", "30/minute") == [Rate(30, 60.0)]
    # the config default
    assert c.plugin_rates("acme", "acme/other") == [Rate(100, 60.0)]


def test_tenant_and_key_rate_precedence() -> None:
    c = LimitsConfig(
        tenant_rate="600/minute",
        key_rate="60/minute",
        tenants={"big": TenantLimits(rate=["6000/minute", "1000000/day"], key_rate="unlimited")},
    )
    assert c.tenant_rates("small") == [Rate(600, 60.0)]
    assert c.tenant_rates("big") == [Rate(6000, 60.0), Rate(1_000_000, 86400.0)]
    assert c.key_rates("small") == [Rate(60, 60.0)]
    assert c.key_rates("big") == []  # "unlimited" is an override like any other
    assert c.key_rates("small", key_rate="5/second") == [Rate(5, 1.0)]  # the key's own
    assert c.rates_for("big", "k1", "acme/search", manifest_rate="10/s") == [
        ("t:big@60", Rate(6000, 60.0)),
        ("t:big@86400", Rate(1_000_000, 86400.0)),
        ("p:big:acme/search@1", Rate(10, 1.0)),
    ]


def test_unlimited_everywhere() -> None:
    c = LimitsConfig(tenant_rate="unlimited", max_concurrent_calls=None)
    assert c.rates_for("acme", "k", "p/q") == []
    assert c.concurrency_for("acme") is None
    assert check_all_sync(MemoryRateLimiter(), c.rates_for("acme")).limit is None


def test_size_timeout_and_concurrency_helpers() -> None:
    c = LimitsConfig.model_validate(
        {
            "max_body_bytes": "2MB",
            "max_argument_bytes": "512KiB",
            "request_timeout": 30,
            "concurrency_lease": 5,
            "tenants": {"acme": {"max_concurrent_calls": 2}},
        }
    )
    assert c.max_body_bytes == 2_000_000 and c.max_argument_bytes == 524_288
    assert c.argument_limit(1_048_576) == 524_288  # the manifest may only lower it
    assert c.argument_limit(1000) == 1000 and c.argument_limit() == 524_288
    assert c.timeout_for(120) == 30 and c.timeout_for(5) == 5 and c.timeout_for() == 30
    assert c.concurrency_for("acme") == 2 and c.concurrency_for("other") == 64
    assert c.lease_seconds == 5


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tenant_rate", "lots", "not a rate limit"),
        ("plugins", {"a/b": "0/minute"}, "greater than 0"),
        ("max_body_bytes", "10 parsecs", "not a size"),
        ("max_concurrent_calls", 0, "greater than or equal to 1"),
        ("backend", "redis", "needs redis_url"),
        ("backend", "etcd", "'memory' or 'redis'"),
        ("surprise", 1, "Extra inputs"),
    ],
)
def test_invalid_settings_are_refused(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LimitsConfig.model_validate({field: value})


def test_from_env() -> None:
    c = LimitsConfig.from_env(
        {
            "PLUGHUB_REDIS_URL": "redis://cache:6379/2",
            "PLUGHUB_REDIS_PREFIX": "prod:",
            "PLUGHUB_TENANT_RATE": "100/minute, 10000/day",
            "PLUGHUB_KEY_RATE": "10/second",
            "PLUGHUB_PLUGIN_RATE": "unlimited",
            "PLUGHUB_MAX_BODY_BYTES": "1MiB",
            "PLUGHUB_MAX_CONCURRENT_CALLS": "unlimited",
            "PLUGHUB_REQUEST_TIMEOUT": "15",
            "PLUGHUB_LIMITS_ON_BACKEND_ERROR": "allow",
            "PLUGHUB_MAX_ARGUMENT_BYTES": "",  # empty: not set
        }
    )
    assert c.backend == "redis"  # a Redis URL alone selects Redis
    assert c.redis_url == "redis://cache:6379/2" and c.prefix == "prod:"
    assert c.tenant_rates("x") == [Rate(100, 60.0), Rate(10000, 86400.0)]
    assert c.key_rates("x") == [Rate(10, 1.0)]
    assert c.plugin_rates("x", "a/b") == []
    assert c.max_body_bytes == 1_048_576 and c.max_argument_bytes == 1_048_576
    assert c.max_concurrent_calls is None and c.request_timeout == 15
    assert c.on_backend_error == "allow"
    assert LimitsConfig.from_env({}) == LimitsConfig()
    forced = LimitsConfig.from_env(
        {"PLUGHUB_REDIS_URL": "redis://x", "PLUGHUB_LIMITS_BACKEND": "memory"}
    )
    assert forced.backend == "memory"


def test_from_env_errors_name_the_variable() -> None:
    with pytest.raises(ValueError, match=r"PLUGHUB_TENANT_RATE: .*not a rate limit"):
        LimitsConfig.from_env({"PLUGHUB_TENANT_RATE": "many"})
    with pytest.raises(ValueError, match="PLUGHUB_REQUEST_TIMEOUT"):
        LimitsConfig.from_env({"PLUGHUB_REQUEST_TIMEOUT": "-1"})


def test_file_then_environment(tmp_path: Path) -> None:
    file = tmp_path / "limits.yaml"
    file.write_text(
        "tenant_rate: 1000/minute\n"
        "plugins:\n  acme/search: 10/second\n"
        "tenants:\n  globex:\n    max_concurrent_calls: 4\n"
    )
    c = LimitsConfig.from_env(
        {"PLUGHUB_LIMITS_FILE": str(file), "PLUGHUB_TENANT_RATE": "50/minute"}
    )
    assert c.tenant_rates("x") == [Rate(50, 60.0)]  # the variable wins over the file
    assert c.plugin_rates("x", "acme/search") == [Rate(10, 1.0)]
    assert c.concurrency_for("globex") == 4
    assert LimitsConfig.from_file(file).tenant_rates("x") == [Rate(1000, 60.0)]
    (tmp_path / "bad.json").write_text('{"tenant_rate": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        LimitsConfig.from_file(tmp_path / "bad.json")
    (tmp_path / "bad.yaml").write_text("tenants: {globex: {speed: 1}}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: tenants"):
        LimitsConfig.from_env({"PLUGHUB_LIMITS_FILE": str(tmp_path / "bad.yaml")})
    with pytest.raises(ValueError, match="cannot read"):
        LimitsConfig.from_file(tmp_path / "missing.yaml")


def test_memory_backends() -> None:
    c = LimitsConfig(tenant_rate="2/minute", max_concurrent_calls=1)
    b = create_backends(c, replica_id="r1")
    try:
        assert isinstance(b.rate, MemoryRateLimiter)
        assert isinstance(b.concurrency, MemoryConcurrencyLimiter)
        assert isinstance(b.notifier, MemoryNotifier) and b.notifier.replica_id == "r1"
        checks = c.rates_for("acme", "k", "acme/search")
        assert [check_all_sync(b.rate, checks).allowed for _ in range(3)] == [True, True, False]
        assert b.concurrency.acquire_sync("t:acme", c.concurrency_for("acme") or 0).granted
    finally:
        b.close()


def test_redis_backends_serve_two_replicas(redis_url: str, redis_prefix: str) -> None:
    c = LimitsConfig(
        backend="redis", redis_url=redis_url, prefix=redis_prefix, tenant_rate="3/minute"
    )
    one, two = create_backends(c), create_backends(c)
    try:
        assert isinstance(one.rate, RedisRateLimiter)
        assert isinstance(one.concurrency, RedisConcurrencyLimiter)
        assert isinstance(one.notifier, RedisNotifier)
        assert one.replica_id != two.replica_id
        heard: queue.Queue[dict[str, Any]] = queue.Queue()
        two.notifier.subscribe(heard.put)
        assert two.notifier.wait_ready(2.0)
        one.notifier.publish("installations", {"tenant": "acme", "plugin": "acme/search"})
        assert heard.get(timeout=2.0)["origin"] == one.replica_id
        checks = c.rates_for("acme", "k1", "acme/search")

        async def calls() -> list[bool]:
            try:
                out = [(await check_all(one.rate, checks)).allowed for _ in range(2)]
                out.append((await check_all(two.rate, checks)).allowed)
                out.append((await check_all(two.rate, checks)).allowed)
                return out
            finally:
                await one.aclose()
                await two.aclose()

        assert asyncio.run(calls()) == [True, True, True, False]
    finally:
        one.close()
        two.close()
