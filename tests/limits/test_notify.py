"""Change notifications between replicas: in memory, and over Redis pub/sub with a unique
prefix per test, including a Redis that goes away and comes back."""

from __future__ import annotations

import asyncio
import json
import queue
import statistics
import threading
import time
from typing import Any

import pytest
import redis

from plughub.limits import (
    RESYNC,
    LimitsBackendError,
    MemoryBus,
    MemoryNotifier,
    Notifier,
    RedisNotifier,
)

#: The issue's bound: a change through one replica is live on every other within 2 s.
BOUND = 2.0


class Inbox:
    """A subscriber that records messages with their arrival time."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()

    def __call__(self, message: dict[str, Any]) -> None:
        self.q.put((time.perf_counter(), message))

    def get(self, timeout: float = BOUND) -> dict[str, Any]:
        return self.q.get(timeout=timeout)[1]

    def get_timed(self, timeout: float = BOUND) -> tuple[float, dict[str, Any]]:
        return self.q.get(timeout=timeout)

    def empty_after(self, seconds: float) -> bool:
        time.sleep(seconds)
        return self.q.empty()


# -- memory ----------------------------------------------------------------------------------


def test_memory_replicas_on_one_bus_hear_each_other_not_themselves() -> None:
    bus = MemoryBus()
    a, b = MemoryNotifier(bus, replica_id="a"), MemoryNotifier(bus, replica_id="b")
    lonely = MemoryNotifier(replica_id="c")
    heard_a, heard_b, heard_c = Inbox(), Inbox(), Inbox()
    a.subscribe(heard_a)
    b.subscribe(heard_b)
    lonely.subscribe(heard_c)
    assert isinstance(a, Notifier) and a.wait_ready()
    a.publish("installations", {"tenant": "acme", "plugin": "acme/search", "topic": "x"})
    message = heard_b.get(timeout=0.1)
    assert message["topic"] == "installations"  # the payload cannot override the topic
    assert message["tenant"] == "acme" and message["plugin"] == "acme/search"
    assert message["origin"] == "a" and message["id"] and message["sent_at"] > 0
    assert heard_a.q.empty() and heard_c.q.empty()
    b.close()
    a.publish("credentials", {"tenant": "acme"})
    assert heard_b.q.empty()


def test_publish_validates_topic_and_payload() -> None:
    n = MemoryNotifier()
    with pytest.raises(ValueError):
        n.publish("", {})
    with pytest.raises(TypeError):
        n.publish("settings", {"when": object()})
    with pytest.raises(ValueError):
        n.publish("settings", {"x": float("nan")})


def test_unsubscribe_and_a_failing_callback(caplog: pytest.LogCaptureFixture) -> None:
    bus = MemoryBus()
    a, b = MemoryNotifier(bus), MemoryNotifier(bus)
    inbox = Inbox()

    def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    b.subscribe(broken)
    stop = b.subscribe(inbox)
    a.publish("settings", {"tenant": "t"})
    assert inbox.get(timeout=0.1)["topic"] == "settings"
    assert "subscriber failed" in caplog.text
    stop()
    a.publish("settings", {"tenant": "t"})
    assert inbox.q.empty()


def test_async_callbacks_run_on_their_loop() -> None:
    bus = MemoryBus()
    a, b = MemoryNotifier(bus), MemoryNotifier(bus)

    async def main() -> tuple[dict[str, Any], bool]:
        got: asyncio.Queue[tuple[dict[str, Any], bool]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def on_change(message: dict[str, Any]) -> None:
            await got.put((message, asyncio.get_running_loop() is loop))

        b.subscribe(on_change)
        await asyncio.to_thread(a.publish, "grants", {"tenant": "acme"})
        return await asyncio.wait_for(got.get(), BOUND)

    message, on_loop = asyncio.run(main())
    assert message["topic"] == "grants" and on_loop

    async def no_loop_given(message: dict[str, Any]) -> None:
        pass

    with pytest.raises(ValueError, match="running event loop"):
        b.subscribe(no_loop_given)


# -- Redis -----------------------------------------------------------------------------------


@pytest.fixture
def replicas(redis_url: str, redis_prefix: str) -> Any:
    made: list[RedisNotifier] = []

    def make(**kw: Any) -> RedisNotifier:
        n = RedisNotifier(redis_url, prefix=kw.pop("prefix", redis_prefix), **kw)
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()


def test_a_change_on_one_replica_reaches_another_within_the_bound(replicas: Any) -> None:
    a, b = replicas(replica_id="replica-a"), replicas(replica_id="replica-b")
    heard_a, heard_b = Inbox(), Inbox()
    a.subscribe(heard_a)
    b.subscribe(heard_b)
    assert a.wait_ready(BOUND) and b.wait_ready(BOUND)
    latencies = []
    for i in range(20):
        sent = time.perf_counter()
        a.publish("installations", {"tenant": "acme", "plugin": "acme/search", "n": i})
        arrived, message = heard_b.get_timed()
        latencies.append(arrived - sent)
        assert message["n"] == i and message["origin"] == "replica-a"
    assert max(latencies) < BOUND
    print(
        f"\nnotification latency over Redis: median {statistics.median(latencies) * 1000:.2f} ms, "
        f"max {max(latencies) * 1000:.2f} ms"
    )
    # and the other way round; nobody hears itself
    b.publish("credentials", {"tenant": "acme", "plugin": "acme/search"})
    assert heard_a.get()["topic"] == "credentials"
    assert heard_a.empty_after(0.1) and heard_b.q.empty()


def test_async_publish_and_async_subscriber(replicas: Any) -> None:
    a, b = replicas(), replicas()

    async def main() -> dict[str, Any]:
        got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def on_change(message: dict[str, Any]) -> None:
            await got.put(message)

        b.subscribe(on_change)
        assert await asyncio.to_thread(b.wait_ready, BOUND)
        try:
            await a.apublish("settings", {"tenant": "acme", "plugin": "acme/search"})
            return await asyncio.wait_for(got.get(), BOUND)
        finally:
            await a.aclose()
            await b.aclose()

    assert asyncio.run(main())["topic"] == "settings"


def test_another_prefix_is_another_deployment(replicas: Any, redis_prefix: str) -> None:
    a, b = replicas(), replicas(prefix=redis_prefix + "other:")
    inbox = Inbox()
    b.subscribe(inbox)
    assert b.wait_ready(BOUND)
    a.publish("installations", {"tenant": "acme"})
    assert inbox.empty_after(0.2)


def test_garbage_on_the_channel_is_ignored(
    replicas: Any, redis_client: redis.Redis, redis_prefix: str
) -> None:
    a, b = replicas(), replicas()
    inbox = Inbox()
    b.subscribe(inbox)
    assert b.wait_ready(BOUND)
    channel = f"{redis_prefix}changes"
    redis_client.publish(channel, b"\xff not json")
    redis_client.publish(channel, json.dumps([1, 2]))
    redis_client.publish(channel, json.dumps({"no": "topic"}))
    a.publish("keys", {"tenant": "acme"})
    assert inbox.get()["topic"] == "keys"  # the listener survived


def test_listener_reconnects_after_redis_goes_away(redis_proxy: Any, redis_prefix: str) -> None:
    a = RedisNotifier(redis_proxy.url, prefix=redis_prefix, max_backoff=0.2)
    b = RedisNotifier(redis_proxy.url, prefix=redis_prefix, max_backoff=0.2)
    inbox = Inbox()
    try:
        b.subscribe(inbox)
        assert b.wait_ready(BOUND)
        redis_proxy.stop()
        with pytest.raises(LimitsBackendError, match="could not publish a change notification"):
            a.publish("installations", {"tenant": "acme"})
        deadline = time.monotonic() + BOUND
        while b.ready and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not b.ready
        time.sleep(0.3)  # a few failed reconnects
        redis_proxy.start()
        assert b.wait_ready(5.0)
        # what was missed cannot be replayed: subscribers are told to reload everything
        resync = inbox.get()
        assert resync["topic"] == RESYNC and resync["origin"] == b.replica_id
        assert b.reconnects >= 1
        a.publish("installations", {"tenant": "acme"})
        assert inbox.get()["topic"] == "installations"
    finally:
        a.close()
        b.close()


def test_close_stops_the_listener(replicas: Any) -> None:
    n = replicas()
    n.subscribe(Inbox())
    assert n.wait_ready(BOUND)
    names = {t.name for t in threading.enumerate()}
    assert f"plughub-notify-{n.channel}" in names
    n.close()
    assert f"plughub-notify-{n.channel}" not in {t.name for t in threading.enumerate()}
