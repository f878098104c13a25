"""One Redis connection for the shared backends: a sync client, an async client per event loop.

The limits must answer fast or not at all, so clients built from a URL use short socket timeouts
and one immediate retry (enough to replace a pooled connection that Redis closed), instead of
redis-py's default of ten retries with backoff. Scripts run with ``EVALSHA`` and fall back to
``EVAL`` (which also caches the script on the server) when the server does not know them, e.g.
after a restart or ``SCRIPT FLUSH``.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from ..errors import LimitsBackendError

__all__ = ["LimitsBackendError", "RedisLink", "Script", "redact_url"]

#: What a failing Redis raises: connection refused or reset, timeouts, READONLY/OOM replies.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class Script:
    """A Lua script and its SHA1, run with ``EVALSHA`` falling back to ``EVAL``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisLink:
    """The clients the shared backends use for one Redis.

    Give a URL (clients are built and owned here) or ready clients (``client`` for the sync
    API, ``aclient`` for the async one; they are used as given and never closed here). With a
    URL, the async API gets one client per event loop, because redis-py's asyncio connections
    belong to the loop that opened them; :meth:`aclose` closes the current loop's client.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        aclient: aredis.Redis | None = None,
        timeout: float = 1.0,
        health_check_interval: int = 0,
    ) -> None:
        if url is None and client is None and aclient is None:
            raise ValueError("give a Redis URL or a client")
        self.url = url
        self.timeout = timeout
        self.health_check_interval = health_check_interval
        self._client = client
        self._own_client = client is None
        self._aclient = aclient
        self._aclients: dict[asyncio.AbstractEventLoop, aredis.Redis] = {}
        self._lock = threading.Lock()

    @property
    def has_sync(self) -> bool:
        """Whether :meth:`sync` can give a client (a URL or a sync client was given)."""
        return self.url is not None or self._client is not None

    @property
    def where(self) -> str:
        """A password-free description of the server, for error messages."""
        if self.url is not None:
            return redact_url(self.url)
        client: Any = self._client if self._client is not None else self._aclient
        try:
            kw = client.connection_pool.connection_kwargs
            return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
        except AttributeError:
            return "the configured Redis client"

    def _options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "health_check_interval": self.health_check_interval,
            "socket_keepalive": True,
        }

    def sync(self) -> redis.Redis:
        """The sync client (thread-safe: it has a connection pool)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    if self.url is None:
                        raise ValueError("this Redis link was given only an asyncio client")
                    self._client = redis.Redis.from_url(
                        self.url, retry=Retry(NoBackoff(), 1), **self._options()
                    )
                client = self._client
        return client

    def aio(self) -> aredis.Redis:
        """The asyncio client for the running loop."""
        if self._aclient is not None:
            return self._aclient
        if self.url is None:
            raise ValueError("this Redis link was given only a sync client; pass aclient too")
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._aclients.get(loop)
            if client is None:
                for old in [lp for lp in self._aclients if lp.is_closed()]:
                    del self._aclients[old]
                client = aredis.Redis.from_url(
                    self.url, retry=AsyncRetry(NoBackoff(), 1), **self._options()
                )
                self._aclients[loop] = client
        return client

    def run(self, script: Script, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        client = self.sync()
        try:
            return client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(script.source, len(keys), *keys, *args)

    async def arun(self, script: Script, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        client = self.aio()
        try:
            return await client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(script.source, len(keys), *keys, *args)

    def close(self) -> None:
        """Close the sync client if it was built here; forget the per-loop async clients."""
        with self._lock:
            client, self._client = self._client, (None if self._own_client else self._client)
            self._aclients.clear()
        if client is not None and self._own_client:
            client.close()

    async def aclose(self) -> None:
        """Close the running loop's async client (if built here), then the sync client."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._aclients.pop(loop, None)
        if client is not None:
            await client.aclose()
        self.close()
