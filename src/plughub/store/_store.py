"""``Store``: the engine, migrations, tenants, API-key authentication, task claims, key rotation.

Everything that concerns one tenant's data goes through ``store.tenant(tenant_id)`` (a
``TenantStore``), whose every query is filtered by that tenant. The only methods here that
touch tenant data without such a view are tenant management (``create_tenant``,
``get_tenant``, ``list_tenants``, ``delete_tenant``), ``authenticate`` (the token names its
key), ``claim_task`` (a replica takes the oldest queued task of any tenant), ``rotate`` and
``prune_audit`` (operator maintenance).

Each operation runs in its own short session and transaction, so one ``Store`` may be shared
by any number of threads. On SQLite, writes begin with ``BEGIN IMMEDIATE`` (one writer at a
time, waiting up to 30 s for the lock) and reads with a plain ``BEGIN``, in WAL mode, with
foreign keys on. On PostgreSQL the default READ COMMITTED level is used; the few
read-modify-write operations take row locks or an advisory lock.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import CursorResult, Result, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoreError
from . import _models as m
from . import _validate as v
from ._crypto import Keyring, credential_aad
from ._types import KeyInfo, TaskInfo, TenantInfo

if TYPE_CHECKING:
    from ..sdk import AuditEvent
    from ._tenant import TenantStore

#: One row for ``Store.append_audit_many``: (tenant id, event, key id, arguments, input schema).
AuditInput = tuple[
    str, "AuditEvent", str | None, Mapping[str, Any] | None, Mapping[str, Any] | None
]

__all__ = ["DEFAULT_KV_QUOTA", "Store", "default_url"]

log = logging.getLogger("plughub.store")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "plughub_store_version"
DEFAULT_KV_QUOTA = 10 * 1024 * 1024
TOKEN_PREFIX = "phk_"
_LAST_USED_EVERY = timedelta(seconds=60)
_MIGRATE_LOCK = 0x706C7567687562  # pg advisory lock id ("plughub")
_MAX_TOKEN = 256
_ROTATE_BATCH = 200


def now() -> datetime:
    return datetime.now(UTC)


def default_url() -> str:
    """``$PLUGHUB_STORE_URL``, else a SQLite file ``store.db`` in the plughub home."""
    url = os.environ.get("PLUGHUB_STORE_URL", "").strip()
    if url:
        return url
    env = os.environ.get("PLUGHUB_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        import platformdirs

        home = Path(platformdirs.user_data_dir("plughub", appauthor=False))
    return f"sqlite:///{home / 'store.db'}"


def hash_secret(key_id: str, secret: str) -> str:
    """The digest kept for an API key: SHA-256 over a domain tag, the key id and the secret.

    A slow password hash (scrypt, PBKDF2) defends low-entropy secrets against guessing; these
    secrets are 256 random bits, which nobody can guess however fast the hash, and every request
    pays for the hash. A pepper would tie API keys to the credential key file. The key id acts
    as a per-key salt. Comparison is constant-time (``hmac.compare_digest``).
    """
    data = b"plughub-api-key:v1\0" + key_id.encode() + b"\0" + secret.encode()
    return hashlib.sha256(data).hexdigest()


_DUMMY_HASH = hash_secret("0" * 16, "")


def parse_token(token: object) -> tuple[str, str] | None:
    """``phk_<key_id>_<secret>`` → ``(key_id, secret)``; None when it cannot be a token."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN or not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not secret or v.check_key_id(key_id) is None:
        return None
    return key_id, secret


def key_info(row: m.ApiKey) -> KeyInfo:
    return KeyInfo(
        key_id=row.id,
        tenant_id=row.tenant_id,
        role=row.role,  # type: ignore[arg-type]  # the CHECK constraint keeps it a Role
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def task_info(row: m.Task) -> TaskInfo:
    return TaskInfo(
        id=row.id,
        tenant_id=row.tenant_id,
        kind=row.kind,
        status=row.status,
        plugin_id=row.plugin_id,
        params=dict(row.params or {}),
        phase=row.phase,
        events=tuple(row.events or ()),
        result=row.result,
        error=row.error,
        owner=row.owner,
        lease_until=row.lease_until,
        attempts=row.attempts,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def claimable(at: datetime) -> ColumnElement[bool]:
    """Queued tasks, and running tasks whose owner let the lease expire."""
    return or_(
        m.Task.status == "queued",
        and_(m.Task.status == "running", m.Task.lease_until < at),
    )


def rowcount(result: Result[Any]) -> int:
    """Rows matched by an UPDATE or DELETE."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def _integrity_reason(e: IntegrityError) -> str:
    code = getattr(e.orig, "sqlstate", None)
    message = str(e.orig)
    if code == "23503" or "FOREIGN KEY" in message:
        return "not_found"
    return "conflict"


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # SQLAlchemy, not the sqlite3 module, emits BEGIN (see _sqlite_begin): transactions then
    # cover reads and DDL too, as on PostgreSQL.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        for pragma in (
            "PRAGMA busy_timeout = 30000",
            "PRAGMA foreign_keys = ON",
            "PRAGMA synchronous = NORMAL",
        ):
            cur.execute(pragma)
        # WAL is a property of the file: set once. Switching needs a lock that the busy
        # handler does not wait for, so a replica opening a new file at the same moment as
        # another one retries here.
        deadline = time.monotonic() + 30
        mode = str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        while mode != "wal":
            try:
                mode = str(cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
                if mode != "wal":
                    log.warning("SQLite refused WAL mode (journal_mode stays %s)", mode)
                    break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        cur.close()


def _sqlite_begin(conn: Any) -> None:
    write = conn.get_execution_options().get("plughub_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _normalize_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise StoreError("the store URL is empty")
    url = url.strip()
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


class Store:
    """The daemon's database: ``Store("sqlite:////var/lib/plughub/store.db")`` or
    ``Store("postgresql+psycopg://user@host/db")`` (``postgresql://`` is taken as psycopg).

    ``keyring`` encrypts credentials; by default it is read from ``PLUGHUB_SECRET_KEY_FILE``
    or ``PLUGHUB_SECRET_KEY`` the first time a credential is written or read (a missing key is
    an error then, not at start-up). ``kv_quota`` is the default byte quota of each plugin's
    storage per tenant (None: unlimited). Call ``migrate()`` once before use.
    """

    def __init__(
        self,
        url: str,
        *,
        keyring: Keyring | None = None,
        kv_quota: int | None = DEFAULT_KV_QUOTA,
        kv_max_value: int = 1024 * 1024,
        pool_size: int = 5,
        echo: bool = False,
    ) -> None:
        raw = _normalize_url(url)
        try:
            sa_url = make_url(raw)
        except ArgumentError:
            raise StoreError(f"not a database URL: {raw.split('@')[-1]!r}") from None
        self.dialect = sa_url.get_backend_name()
        common: dict[str, Any] = {"hide_parameters": True, "echo": echo}
        if self.dialect == "sqlite":
            database = sa_url.database or ""
            if database in ("", ":memory:") or database.startswith("file:"):
                raise StoreError(
                    "the store needs a SQLite *file* (sqlite:///path/to/store.db), not an"
                    " in-memory database: every connection would see its own empty database"
                )
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                sa_url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=pool_size,
                **common,
            )
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        elif self.dialect == "postgresql":
            if sa_url.get_driver_name() != "psycopg":
                raise StoreError("PostgreSQL URLs must use psycopg 3: postgresql+psycopg://...")
            engine = create_engine(sa_url, pool_pre_ping=True, pool_size=pool_size, **common)
        else:
            raise StoreError(
                f"unsupported database {self.dialect!r}: the store runs on sqlite or postgresql"
            )
        self.url = sa_url.render_as_string(hide_password=True)
        self.engine: Engine = engine
        self._reader = sessionmaker(bind=engine, expire_on_commit=False)
        self._writer = sessionmaker(
            bind=engine.execution_options(plughub_write=True), expire_on_commit=False
        )
        self._keyring = keyring
        self._keyring_from_env = keyring is None
        self.kv_quota = kv_quota
        self.kv_max_value = kv_max_value

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # -- sessions ---------------------------------------------------------------------------

    @contextmanager
    def _session(self, write: bool, tenant_id: str | None = None) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception."""
        try:
            with (self._writer if write else self._reader).begin() as session:
                yield session
        except IntegrityError as e:
            reason = _integrity_reason(e)
            if reason == "not_found" and tenant_id is not None:
                raise StoreError(f"no tenant {tenant_id!r}", "not_found") from None
            raise StoreError(f"the store refused the write: {e.orig}", reason) from None
        except DBAPIError as e:
            if e.connection_invalidated or isinstance(e, OperationalError):
                raise StoreError(f"database unavailable: {e.orig}", "unavailable") from e
            raise StoreError(f"database error: {e.orig}", "invalid") from e

    def _advisory_lock(self, session: Session, *parts: str) -> None:
        """Serialise writers of one resource on PostgreSQL (SQLite writers are serial anyway)."""
        if self.dialect == "postgresql":
            digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
            session.execute(
                text("SELECT pg_advisory_xact_lock(:k)"),
                {"k": int.from_bytes(digest, "big", signed=True)},
            )

    # -- migrations -------------------------------------------------------------------------

    def _alembic_config(self) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
        cfg.set_main_option("path_separator", "os")
        cfg.attributes["version_table"] = VERSION_TABLE
        return cfg

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision; a no-op when it is current.

        Safe to run from several replicas at once: on PostgreSQL an advisory lock, on SQLite the
        write lock, lets one migrate while the others wait and then find nothing to do.
        """
        from alembic import command

        cfg = self._alembic_config()
        with self.engine.execution_options(plughub_write=True).begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def schema_revision(self) -> str | None:
        """The database's current revision (None for an empty database)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()

    def head_revision(self) -> str | None:
        """The newest revision this version of plughub knows."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def is_current(self) -> bool:
        """True when ``migrate()`` has nothing left to do."""
        return self.schema_revision() == self.head_revision()

    # -- keys for credentials ---------------------------------------------------------------

    def keyring(self, *, reload: bool = False) -> Keyring:
        """The credential keys; loaded from the environment on first use.

        Raises ``StoreError("...", "no_key")`` when none is configured.
        """
        if self._keyring_from_env and (self._keyring is None or reload):
            self._keyring = Keyring.from_env()
        if self._keyring is None:
            raise StoreError(
                "no credential encryption key: set PLUGHUB_SECRET_KEY_FILE to a key file (or"
                " PLUGHUB_SECRET_KEY to a base64 key); create one with"
                " 'python -m plughub.store add-key FILE'",
                "no_key",
            )
        return self._keyring

    def _decrypt(self, row: m.Credential) -> str:
        keys = self.keyring()
        if not keys.has(row.key_version) and self._keyring_from_env:
            keys = self.keyring(reload=True)  # a key added to the file after start-up
        what = f"credential {row.name!r} of plugin {row.plugin_id!r}"
        aad = credential_aad(row.tenant_id, row.plugin_id, row.name)
        return keys.decrypt(row.key_version, row.ciphertext, aad, what).decode()

    def rotate(self) -> int:
        """Re-encrypt every credential not under the newest key version; returns how many.

        Works in batches of short transactions, each row re-written only if unchanged since it
        was read, so it can run while the daemon serves. Run it again after an interruption.
        """
        keys = self.keyring(reload=True)
        with self._session(False) as s:
            pending = s.execute(
                select(m.Credential.tenant_id, m.Credential.plugin_id, m.Credential.name).where(
                    m.Credential.key_version != keys.newest
                )
            ).all()
        done = 0
        for start in range(0, len(pending), _ROTATE_BATCH):
            batch = pending[start : start + _ROTATE_BATCH]
            with self._session(True) as s:
                for tenant_id, plugin_id, name in batch:
                    row = s.scalars(
                        select(m.Credential)
                        .where(
                            m.Credential.tenant_id == tenant_id,
                            m.Credential.plugin_id == plugin_id,
                            m.Credential.name == name,
                        )
                        .with_for_update()
                    ).first()
                    if row is None or row.key_version == keys.newest:
                        continue
                    plain = self._decrypt(row).encode()
                    row.key_version, row.ciphertext = keys.encrypt(
                        plain, credential_aad(tenant_id, plugin_id, name)
                    )
                    del plain
                    done += 1
        log.info("rotated %d credential(s) to key version %d", done, keys.newest)
        return done

    def credential_key_versions(self) -> dict[int, int]:
        """How many credentials each key version encrypts (to tell when an old key can go)."""
        from sqlalchemy import func

        with self._session(False) as s:
            rows = s.execute(
                select(m.Credential.key_version, func.count()).group_by(m.Credential.key_version)
            ).all()
        return {int(version): int(count) for version, count in rows}

    # -- tenants ----------------------------------------------------------------------------

    def create_tenant(self, tenant_id: str, name: str = "") -> TenantInfo:
        """A new tenant; ``StoreError(reason="conflict")`` when the id is taken."""
        v.check_tenant_id(tenant_id)
        v.check_name(name, "tenant name")
        row = m.Tenant(id=tenant_id, name=name or tenant_id, created_at=now())
        try:
            with self._session(True) as s:
                s.add(row)
        except StoreError as e:
            if e.reason == "conflict":
                raise StoreError(f"tenant {tenant_id!r} exists already", "conflict") from None
            raise
        return TenantInfo(row.id, row.name, row.created_at)

    def get_tenant(self, tenant_id: str) -> TenantInfo | None:
        v.check_tenant_id(tenant_id)
        with self._session(False) as s:
            row = s.get(m.Tenant, tenant_id)
            return None if row is None else TenantInfo(row.id, row.name, row.created_at)

    def list_tenants(self) -> list[TenantInfo]:
        with self._session(False) as s:
            rows = s.scalars(select(m.Tenant).order_by(m.Tenant.id)).all()
            return [TenantInfo(r.id, r.name, r.created_at) for r in rows]

    def installed_elsewhere(self, tenant_id: str) -> set[str]:
        """Plugin ids some tenant other than ``tenant_id`` has an installation of (one query:
        the daemon asks before it changes or removes a package every tenant shares)."""
        v.check_tenant_id(tenant_id)
        query = select(m.Installation.plugin_id).where(m.Installation.tenant_id != tenant_id)
        with self._session(False) as s:
            return set(s.scalars(query.distinct()).all())

    def delete_tenant(self, tenant_id: str) -> bool:
        """Delete a tenant and everything it owns (keys, installations, credentials, storage,
        tasks, audit rows). False when there was no such tenant."""
        v.check_tenant_id(tenant_id)
        with self._session(True) as s:
            # Explicit deletes: correct even where the database would not cascade.
            for model in (m.ApiKey, m.Installation, m.Credential, m.KVEntry, m.Task, m.AuditRow):
                s.execute(delete(model).where(model.tenant_id == tenant_id))
            result = s.execute(delete(m.Tenant).where(m.Tenant.id == tenant_id))
            return rowcount(result) > 0

    def tenant(self, tenant_id: str) -> TenantStore:
        """The view of one tenant's data; every query it makes is filtered by ``tenant_id``.

        No query is made here: on a tenant that does not exist, reads find nothing and writes
        raise ``StoreError(reason="not_found")``.
        """
        from ._tenant import TenantStore

        return TenantStore(self, v.check_tenant_id(tenant_id))

    # -- authentication ---------------------------------------------------------------------

    def authenticate(self, token: str) -> KeyInfo | None:
        """The active key a token belongs to, or None (malformed, unknown, revoked, or wrong
        secret: the caller cannot tell which). Records ``last_used_at`` (at most once a minute).
        """
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        digest = hash_secret(key_id, secret)
        with self._session(False) as s:
            row = s.get(m.ApiKey, key_id)
            stored = _DUMMY_HASH if row is None else row.hash
            match = hmac.compare_digest(stored.encode(), digest.encode())
            if row is None or not match or row.revoked_at is not None:
                return None
            info = key_info(row)
        at = now()
        if info.last_used_at is None or at - info.last_used_at > _LAST_USED_EVERY:
            try:
                with self._session(True) as s:
                    s.execute(update(m.ApiKey).where(m.ApiKey.id == key_id).values(last_used_at=at))
            except StoreError as e:  # bookkeeping must not fail a request
                log.warning("could not record the use of key %s: %s", key_id, e)
        return info

    # -- tasks ------------------------------------------------------------------------------

    def claim_task(
        self,
        replica: str,
        *,
        lease_seconds: float = 60.0,
        kinds: tuple[str, ...] | None = None,
    ) -> TaskInfo | None:
        """Take the oldest claimable task of any tenant for ``replica``; None when there is none.

        Claimable: queued, or running under an expired lease (its replica died). The claim is a
        conditional ``UPDATE ... WHERE status = 'queued' OR lease expired``, so two replicas never
        both get a task. The owner keeps it with ``renew_lease`` and reports with
        ``update_task(..., replica=...)`` through ``store.tenant(task.tenant_id)``.
        """
        return self._claim(replica, lease_seconds, kinds, None)

    def _claim(
        self,
        replica: str,
        lease_seconds: float,
        kinds: tuple[str, ...] | None,
        tenant_id: str | None,
    ) -> TaskInfo | None:
        v.check_text(replica, "replica id", m.NAME_LEN, empty=False)
        if not 0 < lease_seconds <= 86400:
            raise StoreError("lease_seconds must be between 0 and 86400")
        at = now()
        with self._session(True, tenant_id) as s:
            query = select(m.Task.id).where(claimable(at))
            if tenant_id is not None:
                query = query.where(m.Task.tenant_id == tenant_id)
            if kinds:
                query = query.where(m.Task.kind.in_(kinds))
            query = query.order_by(m.Task.created_at, m.Task.id).limit(4)
            for task_id in s.scalars(query.with_for_update(skip_locked=True)).all():
                where = [m.Task.id == task_id, claimable(at)]
                if tenant_id is not None:
                    where.append(m.Task.tenant_id == tenant_id)
                claimed = s.execute(
                    update(m.Task)
                    .where(*where)
                    .values(
                        status="running",
                        owner=replica,
                        lease_until=at + timedelta(seconds=lease_seconds),
                        attempts=m.Task.attempts + 1,
                        updated_at=at,
                    )
                    .execution_options(synchronize_session=False)
                )
                if rowcount(claimed) == 1:
                    row = s.scalars(
                        select(m.Task)
                        .where(*where[:1], *where[2:])
                        .execution_options(populate_existing=True)
                    ).one()
                    return task_info(row)
        return None

    # -- audit retention --------------------------------------------------------------------

    def append_audit_many(self, rows: Sequence[AuditInput]) -> int:
        """Append many calls to the audit log in one transaction (a daemon's audit writer);
        each row as ``append_audit`` would store it. One invalid row refuses the batch
        (``StoreError``) before anything is written; returns the number of rows written."""
        from ._tenant import audit_values

        values = [audit_values(v.check_tenant_id(t), e, k, a, sch) for t, e, k, a, sch in rows]
        if not values:
            return 0
        with self._session(write=True) as s:  # a Core insert: no ORM bookkeeping per row
            s.execute(insert(m.Base.metadata.tables[m.AuditRow.__tablename__]), values)
        return len(values)

    def prune_audit(self, before: datetime) -> int:
        """Delete audit rows of every tenant that started before ``before``; returns how many."""
        with self._session(True) as s:
            result = s.execute(delete(m.AuditRow).where(m.AuditRow.started < before))
            return rowcount(result)
