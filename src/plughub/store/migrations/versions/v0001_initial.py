"""The initial schema: tenants, api_keys, installations, credentials, plugin_kv, tasks,
audit_log.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _tenant() -> sa.Column[object]:
    return sa.Column("tenant_id", sa.String(64), nullable=False)


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=f"fk_{table}_tenant_id_tenants", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        _tenant(),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        _when("created_at"),
        _when("revoked_at", nullable=True),
        _when("last_used_at", nullable=True),
        sa.CheckConstraint("role IN ('admin', 'member', 'invoke')", name="ck_api_keys_role"),
        _tenant_fk("api_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    op.create_table(
        "installations",
        _tenant(),
        sa.Column("plugin_id", sa.String(129), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("granted", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        _tenant_fk("installations"),
        sa.PrimaryKeyConstraint("tenant_id", "plugin_id", name="pk_installations"),
    )
    op.create_table(
        "credentials",
        _tenant(),
        sa.Column("plugin_id", sa.String(129), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        _when("updated_at"),
        _tenant_fk("credentials"),
        sa.PrimaryKeyConstraint("tenant_id", "plugin_id", "name", name="pk_credentials"),
    )
    op.create_table(
        "plugin_kv",
        _tenant(),
        sa.Column("plugin_id", sa.String(129), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        _when("updated_at"),
        _tenant_fk("plugin_kv"),
        sa.PrimaryKeyConstraint("tenant_id", "plugin_id", "key", name="pk_plugin_kv"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(32), nullable=False),
        _tenant(),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("plugin_id", sa.String(129), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("phase", sa.String(32), nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        _when("lease_until", nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        _tenant_fk("tasks"),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
    )
    op.create_index("ix_tasks_tenant_id", "tasks", ["tenant_id"])
    op.create_index("ix_tasks_status_created_at", "tasks", ["status", "created_at"])
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        _tenant(),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("caller", sa.String(200), nullable=True),
        sa.Column("plugin_id", sa.String(129), nullable=False),
        sa.Column("tool", sa.String(128), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        _when("started"),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("arg_bytes", sa.Integer(), nullable=False),
        sa.Column("result_bytes", sa.Integer(), nullable=False),
        sa.Column("arguments_redacted", sa.JSON(), nullable=True),
        _tenant_fk("audit_log"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_tenant_id_started", "audit_log", ["tenant_id", "started"])


def downgrade() -> None:
    for table in ("audit_log", "tasks", "plugin_kv", "credentials", "installations", "api_keys"):
        op.drop_table(table)
    op.drop_table("tenants")
