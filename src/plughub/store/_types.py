"""What the store hands back: plain frozen dataclasses, never ORM objects, never secrets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

__all__ = [
    "AuditRecord",
    "CredentialInfo",
    "InstallationInfo",
    "KeyInfo",
    "NewKey",
    "Role",
    "TaskInfo",
    "TenantInfo",
]

Role = Literal["admin", "member", "invoke"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


class _ToDict:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (datetimes as ISO 8601 text)."""
        assert dataclasses.is_dataclass(self)
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class TenantInfo(_ToDict):
    id: str
    name: str
    created_at: datetime


class NewKey(NamedTuple):
    """A key just created: ``token`` is shown once and cannot be recovered later."""

    key_id: str
    token: str


@dataclass(frozen=True, slots=True)
class KeyInfo(_ToDict):
    """An API key as listings show it: never the secret, only its first characters."""

    key_id: str
    tenant_id: str
    role: Role
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def hint(self) -> str:
        """How the token starts, for recognising a key: ``phk_<key_id>_<prefix>...``."""
        return f"phk_{self.key_id}_{self.prefix}..."


@dataclass(frozen=True, slots=True)
class InstallationInfo(_ToDict):
    tenant_id: str
    plugin_id: str
    enabled: bool
    version: str | None
    granted: tuple[str, ...]
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CredentialInfo(_ToDict):
    """A credential's metadata. The value is never part of it."""

    plugin_id: str
    name: str
    key_version: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TaskInfo(_ToDict):
    id: str
    tenant_id: str
    kind: str
    status: str
    plugin_id: str | None
    params: dict[str, Any]
    phase: str | None
    events: tuple[Any, ...]
    result: Any
    error: str | None
    owner: str | None
    lease_until: datetime | None
    attempts: int
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class AuditRecord(_ToDict):
    id: int
    tenant_id: str
    key_id: str | None
    caller: str | None
    plugin_id: str
    tool: str
    call_id: str
    started: datetime
    duration_ms: float
    outcome: str
    cached: bool
    arg_bytes: int
    result_bytes: int
    arguments: dict[str, Any] | None
