"""Who is calling: ``Principal``, the ``Authenticator`` protocol and roles.

The daemon asks an ``Authenticator`` to turn a bearer token into a ``Principal`` (tenant, key,
role). ``StaticAuthenticator`` serves keys from the configuration (``PLUGHUB_API_KEYS``) until
the store's hashed keys replace it; anything with an ``async authenticate(token)`` method can.

Roles grant scopes (``ROLE_SCOPES``); every endpoint needs one scope:

- ``admin``: everything;
- ``member``: read, list tools, invoke, configure its own tenant;
- ``invoke``: list tools and invoke only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ._config import ALL_TENANTS, ApiKeySpec, ServerConfig

__all__ = [
    "ALL_TENANTS",
    "ROLE_SCOPES",
    "Authenticator",
    "Principal",
    "Scope",
    "StaticAuthenticator",
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
        digest = _digest(token)
        found: Principal | None = None
        for known, principal in self._keys:
            if hmac.compare_digest(known, digest):
                found = principal
        return found
