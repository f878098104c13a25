"""Fixtures for the limits tests: a Redis with a per-test key prefix, backends, a TCP proxy.

Redis tests use ``PLUGHUB_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and are
skipped only when that server does not answer. Every Redis test gets a fresh prefix
``plughub-test-<uuid>:``; its keys are deleted (SCAN) when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from plughub.limits import (
    MemoryConcurrencyLimiter,
    MemoryRateLimiter,
    RedisConcurrencyLimiter,
    RedisRateLimiter,
)

REDIS_URL = os.environ.get("PLUGHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        pytest.skip(f"Redis is unreachable at {REDIS_URL} ({e}); set PLUGHUB_TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix no other test uses; every key under it is dropped afterwards."""
    prefix = f"plughub-test-{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)
    assert not list(redis_client.scan_iter(match=f"{prefix}*", count=1000))


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_rate_limiter(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Build a rate limiter of the parametrized backend (Redis ones share the test prefix)."""
    made: list[Any] = []

    def make(**kw: Any) -> Any:
        if backend == "memory":
            lim: Any = MemoryRateLimiter(**kw)
        else:
            url = request.getfixturevalue("redis_url")
            prefix = request.getfixturevalue("redis_prefix")
            lim = RedisRateLimiter(url, prefix=prefix, **kw)
        made.append(lim)
        return lim

    yield make
    for lim in made:
        lim.close()


@pytest.fixture
def make_concurrency_limiter(
    backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []
    shared = MemoryConcurrencyLimiter()

    def make(**kw: Any) -> Any:
        if backend == "memory":
            lim: Any = MemoryConcurrencyLimiter(**kw) if kw else shared
        else:
            url = request.getfixturevalue("redis_url")
            prefix = request.getfixturevalue("redis_prefix")
            lim = RedisConcurrencyLimiter(url, prefix=prefix, **kw)
        made.append(lim)
        return lim

    yield make
    for lim in made:
        lim.close()


class TcpProxy:
    """A TCP forwarder to Redis that a test can take down (dropping every connection and
    refusing new ones) and bring back up on the same port: "Redis went away"."""

    def __init__(self, redis_url: str) -> None:
        self._parts = urlsplit(redis_url)
        self.target = (self._parts.hostname or "127.0.0.1", self._parts.port or 6379)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        auth, _, _ = self._parts.netloc.rpartition("@")
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return self._parts._replace(netloc=netloc).geturl()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def stop(self) -> None:
        if self._listener is not None:
            # shutdown wakes the accept() blocked in another thread (close alone does not)
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_url)
    proxy.start()
    yield proxy
    proxy.stop()
