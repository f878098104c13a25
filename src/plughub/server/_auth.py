"""Who is calling: ``Principal``, the ``Authenticator`` protocol and roles.

The daemon asks an ``Authenticator`` to turn a bearer token into a ``Principal`` (tenant, key,
role). ``StaticAuthenticator`` serves keys from the configuration (``PLUGHUB_API_KEYS``);
``StoreAuthenticator`` (the default) accepts those and the store's hashed keys; anything with
an ``async authenticate(token)`` method can.

Roles grant scopes (``ROLE_SCOPES``); every endpoint needs one scope:

- ``admin``: everything;
- ``member``: read, list tools, invoke, configure its own tenant;
- ``invoke``: list tools and invoke only.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..errors import StoreError
from ._config import ALL_TENANTS, ApiKeySpec, ServerConfig
from ._errors import ApiError

if TYPE_CHECKING:
    from ..store import Store

__all__ = [
    "ALL_TENANTS",
    "ROLE_SCOPES",
    "Authenticator",
    "Principal",
    "Scope",
    "StaticAuthenticator",
    "StoreAuthenticator",
]

Scope = Literal["read", "tools", "invoke", "configure", "admin"]

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset({"read", "tools", "invoke", "configure", "admin"}),
    "member": frozenset({"read", "tools", "invoke", "configure"}),
    "invoke": frozenset({"tools", "invoke"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the tenant it acts for, which key it used, and its role."""

    tenant_id: str
    key_id: str
    role: str

    def can(self, scope: str) -> bool:
        """Whether the role grants ``scope`` (unknown roles grant nothing)."""
        return scope in ROLE_SCOPES.get(self.role, frozenset())

    def acts_for(self, tenant_id: str) -> bool:
        """Whether this principal may act for ``tenant_id`` (its own, or any with ``*``)."""
        return self.tenant_id in (ALL_TENANTS, tenant_id)

    @property
    def caller(self) -> str:
        """What the host records as the call's ``caller`` (audit hooks see it)."""
        return f"tenant:{self.tenant_id}"


@runtime_checkable
class Authenticator(Protocol):
    """Turns a presented API key into a ``Principal``, or ``None`` when it is not valid."""

    async def authenticate(self, token: str) -> Principal | None: ...


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class StaticAuthenticator:
    """API keys from configuration, compared in constant time.

    Only sha256 digests are kept in memory. Every configured key is compared with the presented
    one (no early exit, ``hmac.compare_digest``), so timing does not tell which key matched.
    """

    def __init__(self, keys: Iterable[ApiKeySpec]) -> None:
        self._keys: list[tuple[bytes, Principal]] = []
        for spec in keys:
            raw = spec.key.get_secret_value()
            digest = bytes.fromhex(raw[7:]) if raw.startswith("sha256:") else _digest(raw)
            key_id = spec.id or f"k_{digest.hex()[:12]}"
            self._keys.append((digest, Principal(spec.tenant, key_id, spec.role)))

    @classmethod
    def from_string(cls, text: str) -> StaticAuthenticator:
        """Keys as in ``PLUGHUB_API_KEYS``: ``key:tenant:role,key:tenant:role``."""
        return cls(ApiKeySpec.parse(part) for part in text.split(",") if part.strip())

    @classmethod
    def from_config(cls, config: ServerConfig) -> StaticAuthenticator:
        return cls(config.api_keys)

    def __len__(self) -> int:
        return len(self._keys)

    async def authenticate(self, token: str) -> Principal | None:
        return self.match(_digest(token))

    def match(self, digest: bytes) -> Principal | None:
        """The principal of the key whose sha256 is ``digest`` (every key compared)."""
        found: Principal | None = None
        for known, principal in self._keys:
            if hmac.compare_digest(known, digest):
                found = principal
        return found


#: How store tokens start (``phk_<key id>_<secret>``): other tokens never cost a database read.
STORE_TOKEN_PREFIX = "phk_"
_MAX_TOKEN = 256
_MAX_CACHED = 10_000


class StoreAuthenticator:
    """Configured keys first (``static``), then the store's hashed keys.

    A store key that authenticated is remembered for ``ttl`` seconds (at most 1), under the
    sha256 of the token, never the token, so a busy client does not cost a database read per
    request. Revocation is seen by every replica within ``ttl``: the cache is also dropped on a
    ``keys``/``tenants`` notification and on this replica's own revocations (``invalidate``).
    ``store`` is called per lookup: the store exists only while the app runs.
    """

    def __init__(
        self,
        static: StaticAuthenticator | None,
        store: Callable[[], Store | None],
        *,
        ttl: float = 1.0,
    ) -> None:
        if not 0 <= ttl <= 1.0:
            raise ValueError("the key cache ttl must be between 0 and 1 second")
        self.static = static
        self._store = store
        self.ttl = ttl
        # digest -> (expiry, principal); None: a token the store does not know (a client
        # guessing tokens costs one store read per token per ``ttl``, not one per request)
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()
        self._gen = 0
        self._pending: dict[bytes, tuple[int, asyncio.Task[Principal | None]]] = {}

    def __len__(self) -> int:
        return len(self.static) if self.static is not None else 0

    async def authenticate(self, token: str) -> Principal | None:
        digest = _digest(token)
        if self.static is not None:
            found = self.static.match(digest)
            if found is not None:
                return found
        if not token.startswith(STORE_TOKEN_PREFIX) or len(token) > _MAX_TOKEN:
            return None
        hit = self._cache.get(digest)  # a dict read is atomic: no lock on the hot path
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        # One store read per key at a time: when the entry expires under load, every request
        # of a busy client would miss at once and each would read the store. A read started
        # before an invalidation (a revocation) is not joined.
        loop = asyncio.get_running_loop()
        gen = self._gen
        pending = self._pending.get(digest)
        if (
            pending is None
            or pending[0] != gen
            or pending[1].get_loop() is not loop
            or pending[1].done()
        ):
            task = loop.create_task(self._load(token, digest, gen))
            pending = self._pending[digest] = (gen, task)
            task.add_done_callback(functools.partial(self._loaded, digest))
        return await asyncio.shield(pending[1])

    def _loaded(self, digest: bytes, task: asyncio.Task[Principal | None]) -> None:
        pending = self._pending.get(digest)
        if pending is not None and pending[1] is task:
            del self._pending[digest]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def _load(self, token: str, digest: bytes, gen: int) -> Principal | None:
        store = self._store()
        if store is None:
            return None
        try:
            info = await asyncio.to_thread(store.authenticate, token)
        except StoreError:
            raise ApiError(
                503,
                "cannot check the API key: the store is unavailable",
                "store_unavailable",
                {"Retry-After": "1"},
            ) from None
        principal = None if info is None else Principal(info.tenant_id, info.key_id, info.role)
        with self._lock:
            if gen == self._gen and self.ttl > 0:
                if len(self._cache) >= _MAX_CACHED:
                    self._cache.clear()
                self._cache[digest] = (time.monotonic() + self.ttl, principal)
        return principal

    def invalidate(self, *, tenant: str | None = None, key_id: str | None = None) -> None:
        """Forget cached keys: one key, a tenant's, or (neither given) all of them."""
        with self._lock:
            self._gen += 1
            if tenant is None and key_id is None:
                self._cache.clear()
                return
            for digest, (_, p) in list(self._cache.items()):
                if p is not None and (
                    p.key_id == key_id or (key_id is None and p.tenant_id == tenant)
                ):
                    del self._cache[digest]

    def on_message(self, message: Mapping[str, Any]) -> None:
        """A change notification: revoked keys and deleted tenants stop working at once."""
        topic = message.get("topic")
        if topic not in ("keys", "tenants", "resync"):
            return
        key_id, tenant = message.get("key_id"), message.get("tenant")
        if topic == "keys" and isinstance(key_id, str):
            self.invalidate(key_id=key_id)
        elif topic == "tenants" and isinstance(tenant, str):
            self.invalidate(tenant=tenant)
        else:
            self.invalidate()
