"""``CallScope``: whose call this is, and the values that are theirs.

A daemon serves many tenants from one ``PluginHost``: the plugin's code, worker and catalog are
shared, while each tenant has its own settings, credentials, permission grants and storage. The
daemon hands those to the host per call; nothing of one tenant's is kept on the shared plugin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..sdk import Storage

__all__ = ["CallScope"]


@dataclass(frozen=True, slots=True)
class CallScope:
    """Per-call values that replace the host's own for one call.

    Attributes:
        tenant: who the call is for; results of cacheable tools are cached per tenant.
        settings: merged over the manifest's defaults and the host's ``settings`` for the plugin.
        credentials: the plugin's credentials for this call. They replace the host's entirely
            (neither the host's ``credentials`` nor a manifest ``env`` fallback is consulted), so
            one tenant never runs on another's or the operator's secrets.
        grants: the permission tokens granted for this call (``None``: the host's grants).
        storage: ``ctx.storage`` for this call (``None``: the plugin's storage in the host).
    """

    tenant: str | None = None
    settings: Mapping[str, Any] | None = None
    credentials: Mapping[str, Any] | None = None
    grants: Sequence[str] | None = None
    storage: Storage | None = None
