"""The store's tables as SQLAlchemy 2 typed declarative models.

Every table that holds tenant data has ``tenant_id`` as (the first column of) its primary key or
an indexed foreign key to ``tenants`` with ``ON DELETE CASCADE``: deleting a tenant deletes all
of it. The initial Alembic revision (``migrations/versions/v0001_initial.py``) creates exactly
these tables; a test compares the two.

Only ``_store`` and the migrations import this module; callers get plain dataclasses, never ORM
objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ROLES",
    "TASK_STATUSES",
    "ApiKey",
    "AuditRow",
    "Base",
    "Credential",
    "Installation",
    "KVEntry",
    "Task",
    "Tenant",
    "UTCDateTime",
]

ROLES = ("admin", "member", "invoke")
TASK_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

# Column widths; _validate enforces the same limits with readable messages before the database
# does (SQLite would not enforce them at all).
TENANT_ID_LEN = 64
PLUGIN_ID_LEN = 129  # author/name, 64 + 1 + 64
NAME_LEN = 200
CREDENTIAL_NAME_LEN = 128
KV_KEY_LEN = 256
TOOL_LEN = 128
KEY_ID_LEN = 32

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite keeps naive UTC text (which sorts and compares
    correctly). Values read back are always aware, in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), bytes: LargeBinary()}


def _tenant_fk() -> ForeignKey:
    return ForeignKey("tenants.id", ondelete="CASCADE")


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(TENANT_ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime]


class ApiKey(Base):
    """An API key. Only a digest of its secret is kept (see ``_store.hash_secret``)."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("role IN ('admin', 'member', 'invoke')", name="role"),)

    id: Mapped[str] = mapped_column(String(KEY_ID_LEN), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(TENANT_ID_LEN), _tenant_fk(), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Installation(Base):
    """A plugin installed for one tenant, with its grants and settings (never secrets)."""

    __tablename__ = "installations"

    tenant_id: Mapped[str] = mapped_column(String(TENANT_ID_LEN), _tenant_fk(), primary_key=True)
    plugin_id: Mapped[str] = mapped_column(String(PLUGIN_ID_LEN), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[str | None] = mapped_column(String(64))
    granted: Mapped[list[str]] = mapped_column(JSON)
    settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Credential(Base):
    """One secret of one plugin for one tenant: AES-256-GCM ciphertext, never plaintext."""

    __tablename__ = "credentials"

    tenant_id: Mapped[str] = mapped_column(String(TENANT_ID_LEN), _tenant_fk(), primary_key=True)
    plugin_id: Mapped[str] = mapped_column(String(PLUGIN_ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(CREDENTIAL_NAME_LEN), primary_key=True)
    ciphertext: Mapped[bytes]
    key_version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class KVEntry(Base):
    """One key of a plugin's private storage; ``size`` counts key and JSON value in bytes."""

    __tablename__ = "plugin_kv"

    tenant_id: Mapped[str] = mapped_column(String(TENANT_ID_LEN), _tenant_fk(), primary_key=True)
    plugin_id: Mapped[str] = mapped_column(String(PLUGIN_ID_LEN), primary_key=True)
    key: Mapped[str] = mapped_column(String(KV_KEY_LEN), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class Task(Base):
    """A background task (install, upgrade, ...), claimed by one replica under a lease."""

    __tablename__ = "tasks"
    __table_args__ = (Index(None, "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(KEY_ID_LEN), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(TENANT_ID_LEN), _tenant_fk(), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    plugin_id: Mapped[str | None] = mapped_column(String(PLUGIN_ID_LEN))
    params: Mapped[dict[str, Any]]
    phase: Mapped[str | None] = mapped_column(String(32))
    events: Mapped[list[Any]] = mapped_column(JSON)
    result: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(NAME_LEN))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AuditRow(Base):
    """One tool call. Arguments are kept only after redaction, and may be omitted."""

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "tenant_id", "started"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(String(TENANT_ID_LEN), _tenant_fk())
    key_id: Mapped[str | None] = mapped_column(String(KEY_ID_LEN))
    caller: Mapped[str | None] = mapped_column(String(NAME_LEN))
    plugin_id: Mapped[str] = mapped_column(String(PLUGIN_ID_LEN))
    tool: Mapped[str] = mapped_column(String(TOOL_LEN))
    call_id: Mapped[str] = mapped_column(String(64))
    started: Mapped[datetime]
    duration_ms: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(64))
    cached: Mapped[bool] = mapped_column(Boolean)
    arg_bytes: Mapped[int] = mapped_column(Integer)
    result_bytes: Mapped[int] = mapped_column(Integer)
    arguments_redacted: Mapped[dict[str, Any] | None]
