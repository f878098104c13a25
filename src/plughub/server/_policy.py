"""Hook points the store and the limits packages fill in later.

- ``RateLimit``: asked once per authenticated request, ``(principal, action, resource)`` ->
  ``RateDecision``; a refusal is a 429 with ``Retry-After``. The default allows everything.
- ``PluginVisibility``: which plugin ids a tenant may see and call; ``None`` means all of them.
  Until installations are stored per tenant, every tenant sees the same plugins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._auth import Principal

__all__ = [
    "ALLOWED",
    "AllPlugins",
    "PluginVisibility",
    "RateDecision",
    "RateLimit",
    "no_rate_limit",
]


@dataclass(frozen=True, slots=True)
class RateDecision:
    """``allowed``, or refused with ``retry_after`` seconds to wait (None: unknown)."""

    allowed: bool
    retry_after: float | None = None


ALLOWED = RateDecision(True)


class RateLimit(Protocol):
    """``limit(principal, action, resource)``; may be sync or async.

    ``action`` is the scope the endpoint needs (``read``, ``tools``, ``invoke``...);
    ``resource`` the plugin the request is about (``author/name`` or ``author/name.tool``), or
    None when the route names none.
    """

    def __call__(
        self, principal: Principal, action: str, resource: str | None
    ) -> RateDecision | Awaitable[RateDecision]: ...


async def no_rate_limit(principal: Principal, action: str, resource: str | None) -> RateDecision:
    """The default ``RateLimit``: everything is allowed."""
    return ALLOWED


@runtime_checkable
class PluginVisibility(Protocol):
    """Which plugins a tenant sees: a collection of plugin ids, or None for all of them."""

    async def visible_plugins(self, tenant_id: str) -> Collection[str] | None: ...


class AllPlugins:
    """The default ``PluginVisibility``: every tenant sees every plugin the host serves."""

    async def visible_plugins(self, tenant_id: str) -> Collection[str] | None:
        return None
