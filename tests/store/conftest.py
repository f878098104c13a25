"""Store fixtures: every ``store`` test runs twice, on a SQLite file and on the real PostgreSQL.

PostgreSQL: ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres`` (``PLUGHUB_TEST_PG_URL``
overrides it). The session creates uniquely named databases and drops them at the end; the
PostgreSQL tests are skipped only when that server cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from plughub.store import Keyring, Store

PG_ADMIN_URL = os.environ.get(
    "PLUGHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TABLES = ("audit_log", "tasks", "plugin_kv", "credentials", "installations", "api_keys", "tenants")


class PgDatabases:
    """Creates databases named ``plughub_test_<random>`` and drops them all on ``close``."""

    def __init__(self, admin_url: str) -> None:
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.base = make_url(admin_url)
        self.created: list[str] = []

    def create(self) -> str:
        name = f"plughub_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases | str]:
    """The database factory, or the reason PostgreSQL is unreachable (a string)."""
    dbs = PgDatabases(PG_ADMIN_URL)
    try:
        with dbs.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as e:
        dbs.admin.dispose()
        first = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        yield f"PostgreSQL is not reachable at {dbs.base.render_as_string()}: {first}"
        return
    try:
        yield dbs
    finally:
        dbs.close()


@pytest.fixture
def pg(pg_databases: PgDatabases | str) -> PgDatabases:
    if isinstance(pg_databases, str):
        pytest.skip(pg_databases)
    return pg_databases


@pytest.fixture(scope="session")
def _pg_shared(pg_databases: PgDatabases | str) -> str | None:
    """One migrated database shared by the PostgreSQL runs (emptied before each test)."""
    if isinstance(pg_databases, str):
        return None
    url = pg_databases.create()
    with Store(url) as store:
        store.migrate()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
        with Store(url) as store:
            store.migrate()
        return url
    shared = request.getfixturevalue("_pg_shared")
    if shared is None:
        pytest.skip(request.getfixturevalue("pg_databases"))
    engine = create_engine(shared, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return str(shared)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({1: os.urandom(32)})


@pytest.fixture
def make_store(store_url: str, keyring: Keyring) -> Iterator[Callable[..., Store]]:
    """More ``Store``s on the same database (as other replicas would open it)."""
    opened: list[Store] = []

    def make(**kw: object) -> Store:
        kw.setdefault("keyring", keyring)
        store = Store(store_url, **kw)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


@pytest.fixture
def backend(store_url: str) -> str:
    return "sqlite" if store_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def dump_db() -> Callable[[Store], str]:
    return _dump_all


def _dump_all(store: Store) -> str:
    """Every column of every row of every table, as text (a pg_dump-free database dump)."""
    parts: list[str] = []
    with store.engine.connect() as conn:
        for table in TABLES:
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        parts.append(bytes(value).hex())
                        parts.append(bytes(value).decode("latin-1"))
                    else:
                        parts.append(str(value))
    return "\n".join(parts)
