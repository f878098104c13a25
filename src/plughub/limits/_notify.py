"""Change notifications between replicas.

A replica that changes shared state (an installation, a credential, a setting) writes it to
the store, then publishes a small message; every other replica's subscribers get it and reload
what it names from the store. Messages are JSON objects::

    {"topic": "installations", "tenant": "acme", "plugin": "acme/search",
     "origin": "<replica id>", "id": "<uuid hex>", "sent_at": <unix time>}

``topic``, ``origin``, ``id`` and ``sent_at`` are set by the notifier; the rest is the payload.
A notifier never delivers its own messages to its own subscribers. Messages are hints, not
data: never put a secret in one, and treat a message as "something changed, reload it"
(anyone who can reach the Redis can publish on the channel).

:class:`RedisNotifier` uses Redis pub/sub on ``<prefix>changes``. Pub/sub delivers at most
once: messages published while a replica is disconnected are lost. So after every reconnect
the notifier delivers a local ``{"topic": "resync", "origin": <its own id>, ...}`` message:
on it, reload everything the notifications would have told you about.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import redis
import redis.asyncio as aredis

from ._redis import BACKEND_ERRORS, LimitsBackendError, RedisLink

__all__ = [
    "RESYNC",
    "TOPICS",
    "Callback",
    "MemoryBus",
    "MemoryNotifier",
    "Notifier",
    "RedisNotifier",
    "default_replica_id",
]

log = logging.getLogger("plughub.limits")

#: The topics plughub publishes; any non-empty string is accepted.
TOPICS = ("installations", "credentials", "settings", "grants", "keys", "tenants", "limits")
#: The topic of the local message delivered after a reconnect: reload everything.
RESYNC = "resync"
_RESERVED = ("topic", "origin", "id", "sent_at")

#: A subscriber: a function or a coroutine function taking the message.
Callback = Callable[[dict[str, Any]], Any] | Callable[[dict[str, Any]], Awaitable[Any]]


def default_replica_id() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@runtime_checkable
class Notifier(Protocol):
    """Publish changes to the other replicas; hear theirs."""

    replica_id: str

    def publish(self, topic: str, payload: Mapping[str, Any] | None = None) -> None:
        """Send ``{"topic": topic, **payload}`` to the other replicas."""
        ...

    async def apublish(self, topic: str, payload: Mapping[str, Any] | None = None) -> None:
        """:meth:`publish` from an event loop."""
        ...

    def subscribe(
        self, callback: Callback, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> Callable[[], None]:
        """Call ``callback(message)`` for each message from another replica; returns a
        function that unsubscribes."""
        ...

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Block until messages published from now on will be received; False on timeout."""
        ...

    def close(self) -> None:
        """Stop listening and release connections."""
        ...

    async def aclose(self) -> None:
        """:meth:`close` from an event loop."""
        ...


class _Dispatch:
    """Subscribers and delivery, shared by both notifiers."""

    def __init__(self, replica_id: str | None) -> None:
        self.replica_id = replica_id or default_replica_id()
        self._subscribers: list[tuple[Callback, asyncio.AbstractEventLoop | None]] = []
        self._sub_lock = threading.Lock()

    def _encode(self, topic: str, payload: Mapping[str, Any] | None) -> str:
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"a topic must be a non-empty string, got {topic!r}")
        message = {k: v for k, v in (payload or {}).items() if k not in _RESERVED}
        message.update(
            topic=topic, origin=self.replica_id, id=uuid.uuid4().hex, sent_at=time.time()
        )
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def subscribe(
        self, callback: Callback, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> Callable[[], None]:
        """Sync callbacks run in the notifier's thread (keep them short; they must be
        thread-safe) unless ``loop`` is given; coroutine functions run on ``loop``, by default
        the loop running when ``subscribe`` is called. A callback that raises is logged."""
        if loop is None and inspect.iscoroutinefunction(callback):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise ValueError(
                    "subscribe an async callback from a running event loop, or pass loop="
                ) from None
        entry = (callback, loop)
        with self._sub_lock:
            self._subscribers.append(entry)
        self._on_subscribe()

        def unsubscribe() -> None:
            with self._sub_lock:
                if entry in self._subscribers:
                    self._subscribers.remove(entry)

        return unsubscribe

    def _on_subscribe(self) -> None:
        pass

    def _deliver(self, raw: str | bytes, *, own: bool = False) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("ignored a change notification that is not JSON: %.200r", raw)
            return
        if not isinstance(message, dict) or not isinstance(message.get("topic"), str):
            log.warning("ignored a change notification without a topic: %.200r", raw)
            return
        if message.get("origin") == self.replica_id and not own:
            return
        with self._sub_lock:
            subscribers = list(self._subscribers)
        for callback, loop in subscribers:
            copy = json.loads(raw) if len(subscribers) > 1 else message
            try:
                if loop is None:
                    callback(copy)
                elif inspect.iscoroutinefunction(callback):
                    asyncio.run_coroutine_threadsafe(callback(copy), loop)
                else:
                    loop.call_soon_threadsafe(callback, copy)
            except Exception:
                log.exception("a change-notification subscriber failed on %s", message["topic"])

    def _resync(self, reason: str) -> None:
        raw = json.dumps(
            {
                "topic": RESYNC,
                "reason": reason,
                "origin": self.replica_id,
                "id": uuid.uuid4().hex,
                "sent_at": time.time(),
            }
        )
        self._deliver(raw, own=True)


class MemoryBus:
    """Connects the :class:`MemoryNotifier` objects of one process (replicas in a test)."""

    def __init__(self) -> None:
        self._members: list[MemoryNotifier] = []
        self._lock = threading.Lock()

    def _join(self, member: MemoryNotifier) -> None:
        with self._lock:
            self._members.append(member)

    def _leave(self, member: MemoryNotifier) -> None:
        with self._lock:
            if member in self._members:
                self._members.remove(member)

    def _send(self, raw: str) -> None:
        with self._lock:
            members = list(self._members)
        for member in members:
            member._deliver(raw)


class MemoryNotifier(_Dispatch):
    """Notifications inside one process, delivered synchronously in :meth:`publish`.

    Notifiers built on the same ``bus`` hear each other; each one gets a private bus by
    default (a single replica needs nothing more: it never hears itself).
    """

    def __init__(self, bus: MemoryBus | None = None, *, replica_id: str | None = None) -> None:
        super().__init__(replica_id)
        self.bus = bus or MemoryBus()
        self.bus._join(self)

    def publish(self, topic: str, payload: Mapping[str, Any] | None = None) -> None:
        self.bus._send(self._encode(topic, payload))

    async def apublish(self, topic: str, payload: Mapping[str, Any] | None = None) -> None:
        self.publish(topic, payload)

    def wait_ready(self, timeout: float = 5.0) -> bool:
        return True

    def close(self) -> None:
        self.bus._leave(self)

    async def aclose(self) -> None:
        self.close()


class RedisNotifier(_Dispatch):
    """Notifications over Redis pub/sub on ``<prefix>changes``.

    A background thread (started by the first :meth:`subscribe`, or :meth:`start`) listens,
    reconnects with exponential backoff (``max_backoff`` seconds at most) when the connection
    fails, pings an idle connection every ``ping_interval`` seconds to notice a silent network
    failure, and delivers a :data:`RESYNC` message after each reconnect. Publishing when Redis
    is unreachable raises :class:`LimitsBackendError`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "plughub:",
        replica_id: str | None = None,
        client: redis.Redis | None = None,
        aclient: aredis.Redis | None = None,
        link: RedisLink | None = None,
        timeout: float = 1.0,
        max_backoff: float = 5.0,
        ping_interval: float = 5.0,
    ) -> None:
        if url is None and client is None and (link is None or not link.has_sync):
            raise ValueError("RedisNotifier listens in a thread: give it a URL or a sync client")
        super().__init__(replica_id)
        self.channel = f"{prefix}changes"
        self.max_backoff = max_backoff
        self.ping_interval = ping_interval
        self._link = link or RedisLink(url, client=client, aclient=aclient, timeout=timeout)
        self._own_link = link is None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.reconnects = 0
        self._last_warning = 0.0

    # -- publishing --------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> LimitsBackendError:
        return LimitsBackendError(
            f"could not publish a change notification to Redis at {self._link.where}: "
            f"{type(exc).__name__}: {exc}"
        )

    def publish(self, topic: str, payload: Mapping[str, Any] | None = None) -> None:
        raw = self._encode(topic, payload)
        try:
            self._link.sync().publish(self.channel, raw)
        except BACKEND_ERRORS as e:
            raise self._error(e) from e

    async def apublish(self, topic: str, payload: Mapping[str, Any] | None = None) -> None:
        raw = self._encode(topic, payload)
        try:
            await self._link.aio().publish(self.channel, raw)
        except BACKEND_ERRORS as e:
            raise self._error(e) from e

    # -- listening ---------------------------------------------------------------------------

    def _on_subscribe(self) -> None:
        self.start()

    def start(self) -> None:
        """Start the listener thread (idempotent)."""
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"plughub-notify-{self.channel}", daemon=True
                )
                self._thread.start()

    def wait_ready(self, timeout: float = 5.0) -> bool:
        self.start()
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        """True while subscribed."""
        return self._ready.is_set()

    def _run(self) -> None:
        backoff = 0.05
        subscribed_before = False
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._link.sync().pubsub()  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.channel)
                last = time.monotonic()
                pinged = False
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    now = time.monotonic()
                    if msg is None:
                        if not pinged and now - last > self.ping_interval:
                            pubsub.ping()
                            pinged = True
                        elif pinged and now - last > self.ping_interval + 2 * self._link.timeout:
                            raise redis.ConnectionError("the connection did not answer a PING")
                        continue
                    last, pinged = now, False
                    kind = msg.get("type")
                    if kind == "message":
                        self._deliver(msg["data"])
                    elif kind == "subscribe":
                        self._ready.set()
                        backoff = 0.05
                        if subscribed_before:  # redis-py reconnected under us
                            self.reconnects += 1
                            self._resync("reconnected")
                        subscribed_before = True
            except BACKEND_ERRORS as e:
                self._ready.clear()
                now = time.monotonic()
                if now - self._last_warning > 10.0:
                    self._last_warning = now
                    log.warning(
                        "change notifications from Redis at %s interrupted (%s: %s); reconnecting",
                        self._link.where,
                        type(e).__name__,
                        e,
                    )
            except Exception:
                self._ready.clear()
                log.exception("the change-notification listener failed; restarting it")
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # the connection may be broken
                        pubsub.close()
            if self._stop.wait(backoff * (0.5 + random.random())):
                break
            backoff = min(backoff * 2, self.max_backoff)
        self._ready.clear()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        if self._own_link:
            self._link.close()

    async def aclose(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
        if self._own_link:
            await self._link.aclose()
