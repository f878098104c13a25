"""Migrations: a fresh database migrates to head, again is a no-op, concurrently is safe, and
the hand-written revision matches the models."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from plughub.errors import StoreError
from plughub.store import Store
from plughub.store._models import Base

EXPECTED_TABLES = {
    "tenants",
    "api_keys",
    "installations",
    "credentials",
    "plugin_kv",
    "tasks",
    "audit_log",
    "plughub_store_version",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no tables at all) of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'store.db'}"
    pg = request.getfixturevalue("pg")
    return str(pg.create())


def test_fresh_database_migrates_to_head_and_again_is_a_no_op(fresh_url: str) -> None:
    with Store(fresh_url) as store:
        assert store.schema_revision() is None and not store.is_current()
        store.migrate()
        assert store.schema_revision() == store.head_revision() == "0001"
        assert set(inspect(store.engine).get_table_names()) == EXPECTED_TABLES
        store.create_tenant("acme")
        store.migrate()  # no-op: data kept, revision unchanged
        assert store.is_current() and [t.id for t in store.list_tenants()] == ["acme"]


def test_migration_matches_the_models(fresh_url: str) -> None:
    with Store(fresh_url) as store:
        store.migrate()
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": "plughub_store_version"}
            )
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []


def test_concurrent_migrations_from_several_replicas(fresh_url: str) -> None:
    stores = [Store(fresh_url) for _ in range(3)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def run(store: Store) -> None:
        try:
            start.wait()
            store.migrate()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert all(s.is_current() for s in stores)
    finally:
        for s in stores:
            s.close()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'deep' / 'dir' / 'store.db'}") as store:  # folders created
        store.migrate()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("sqlite://", "SQLite \\*file\\*"),
        ("sqlite:///:memory:", "SQLite \\*file\\*"),
        ("mysql://root@localhost/db", "unsupported database 'mysql'"),
        ("postgresql+asyncpg://u@h/db", "psycopg 3"),
        ("not a url", "not a database URL"),
    ],
)
def test_unusable_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Store(url)


def test_plain_postgresql_urls_use_psycopg_and_hide_passwords() -> None:
    store = Store("postgresql://user:hunter2@127.0.0.1:5432/x")
    try:
        assert store.engine.url.drivername == "postgresql+psycopg"
        assert "hunter2" not in repr(store) and "hunter2" not in store.url
    finally:
        store.close()


def test_unreachable_database_is_a_store_error() -> None:
    store = Store("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    try:
        with pytest.raises(StoreError) as err:
            store.list_tenants()
        assert err.value.reason == "unavailable"
    finally:
        store.close()
