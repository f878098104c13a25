"""``TenantStore``: one tenant's keys, installations, credentials, storage, tasks and audit log.

Obtained with ``store.tenant(tenant_id)``. Every statement below filters by ``self.tenant_id``
(rows are fetched by their full primary key, which starts with the tenant, or with an explicit
``WHERE tenant_id = ...``); there is no way to reach another tenant's rows from a view.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, select, update

from ..errors import StoreError
from ..sdk import AuditEvent
from . import _models as m
from . import _validate as v
from ._crypto import credential_aad
from ._kv import PluginStorage
from ._redact import redact
from ._store import TOKEN_PREFIX, hash_secret, key_info, now, rowcount, task_info
from ._types import (
    AuditRecord,
    CredentialInfo,
    InstallationInfo,
    KeyInfo,
    NewKey,
    TaskInfo,
    TenantInfo,
)

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["TenantStore"]

MAX_CREDENTIAL_BYTES = 64 * 1024
MAX_SETTINGS_BYTES = 256 * 1024
MAX_GRANTS = 1000
MAX_TASK_PARAMS_BYTES = 64 * 1024
MAX_TASK_EVENT_BYTES = 16 * 1024
MAX_TASK_EVENTS = 1000
MAX_TASK_RESULT_BYTES = 256 * 1024
MAX_TASK_ERROR_CHARS = 64 * 1024
MAX_AUDIT_ARGS_BYTES = 64 * 1024
MAX_QUERY_LIMIT = 1000
FINISHED = ("succeeded", "failed", "cancelled")


def _time(value: datetime | float | None, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    raise StoreError(f"{what} must be a datetime or a Unix timestamp")


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_QUERY_LIMIT:
        raise StoreError(f"limit must be an integer from 1 to {MAX_QUERY_LIMIT}")
    return limit


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def audit_values(
    tenant_id: str,
    event: AuditEvent,
    key_id: str | None,
    arguments: Mapping[str, Any] | None,
    input_schema: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The columns of one audit row: checked, clipped, arguments redacted."""
    if not isinstance(event, AuditEvent):
        raise StoreError("append_audit takes a plughub.sdk.AuditEvent")
    v.check_plugin_id(event.plugin_id)
    stored: dict[str, Any] | None = None
    if arguments is not None:
        cleaned = redact(arguments, input_schema)
        size = len(v.dumps(cleaned, "arguments").encode())  # refuses what JSON cannot carry
        stored = {"_truncated": True, "bytes": size} if size > MAX_AUDIT_ARGS_BYTES else cleaned
    return {
        "tenant_id": tenant_id,
        "key_id": key_id if key_id is None else _clip(str(key_id), m.KEY_ID_LEN),
        "caller": None if event.caller is None else _clip(str(event.caller), m.NAME_LEN),
        "plugin_id": event.plugin_id,
        "tool": _clip(str(event.tool), m.TOOL_LEN),
        "call_id": _clip(str(event.call_id), 64),
        "started": _time(event.started, "started") or now(),
        "duration_ms": float(event.duration) * 1000.0,
        "outcome": _clip(str(event.outcome), 64),
        "cached": bool(event.cached),
        "arg_bytes": int(event.arg_bytes),
        "result_bytes": int(event.result_bytes),
        "arguments_redacted": stored,
    }


class TenantStore:
    """One tenant's data. Cheap to create; holds no connection; thread-safe."""

    __slots__ = ("_store", "tenant_id")

    def __init__(self, store: Store, tenant_id: str) -> None:
        self._store = store
        self.tenant_id = tenant_id

    def __repr__(self) -> str:
        return f"TenantStore({self.tenant_id!r})"

    def _read(self) -> Any:
        return self._store._session(False, self.tenant_id)

    def _write(self) -> Any:
        return self._store._session(True, self.tenant_id)

    def info(self) -> TenantInfo | None:
        """The tenant's record, None if it does not exist (any more)."""
        return self._store.get_tenant(self.tenant_id)

    # -- API keys ---------------------------------------------------------------------------

    def create_key(self, role: str, name: str = "") -> NewKey:
        """A new API key; the returned ``token`` is shown once: only a digest is stored."""
        if role not in m.ROLES:
            raise StoreError(f"invalid role {role!r}: one of {', '.join(m.ROLES)}")
        v.check_name(name, "key name")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        row = m.ApiKey(
            id=key_id,
            tenant_id=self.tenant_id,
            prefix=secret[:8],
            hash=hash_secret(key_id, secret),
            role=role,
            name=name,
            created_at=now(),
        )
        with self._write() as s:
            s.add(row)
        return NewKey(key_id, f"{TOKEN_PREFIX}{key_id}_{secret}")

    def get_key(self, key_id: str) -> KeyInfo | None:
        if v.check_key_id(key_id) is None:
            return None
        with self._read() as s:
            row = s.scalars(
                select(m.ApiKey).where(m.ApiKey.tenant_id == self.tenant_id, m.ApiKey.id == key_id)
            ).first()
            return None if row is None else key_info(row)

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        query = select(m.ApiKey).where(m.ApiKey.tenant_id == self.tenant_id)
        if not include_revoked:
            query = query.where(m.ApiKey.revoked_at.is_(None))
        with self._read() as s:
            return [key_info(r) for r in s.scalars(query.order_by(m.ApiKey.created_at)).all()]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key at once (for every replica); False if unknown here or already revoked."""
        if v.check_key_id(key_id) is None:
            return False
        with self._write() as s:
            result = s.execute(
                update(m.ApiKey)
                .where(
                    m.ApiKey.tenant_id == self.tenant_id,
                    m.ApiKey.id == key_id,
                    m.ApiKey.revoked_at.is_(None),
                )
                .values(revoked_at=now())
            )
            return rowcount(result) > 0

    # -- installations ----------------------------------------------------------------------

    @staticmethod
    def _installation(row: m.Installation) -> InstallationInfo:
        return InstallationInfo(
            tenant_id=row.tenant_id,
            plugin_id=row.plugin_id,
            enabled=row.enabled,
            version=row.version,
            granted=tuple(row.granted or ()),
            settings=dict(row.settings or {}),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def get_installation(self, plugin_id: str) -> InstallationInfo | None:
        v.check_plugin_id(plugin_id)
        with self._read() as s:
            row = s.get(m.Installation, (self.tenant_id, plugin_id))
            return None if row is None else self._installation(row)

    def list_installations(self) -> list[InstallationInfo]:
        with self._read() as s:
            rows = s.scalars(
                select(m.Installation)
                .where(m.Installation.tenant_id == self.tenant_id)
                .order_by(m.Installation.plugin_id)
            ).all()
            return [self._installation(r) for r in rows]

    def set_installation(
        self,
        plugin_id: str,
        *,
        enabled: bool | None = None,
        version: str | None = None,
        granted: list[str] | tuple[str, ...] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> InstallationInfo:
        """Create or update the tenant's installation of a plugin; fields left None keep their
        value (a new installation is enabled, with no grants and no settings).

        ``granted`` replaces the granted permission tokens; ``settings`` replaces the settings
        (non-secret values only: secrets belong in credentials).
        """
        v.check_plugin_id(plugin_id)
        if enabled is not None and not isinstance(enabled, bool):
            raise StoreError("enabled must be true or false")
        if version is not None:
            v.check_text(version, "version", 64, empty=False)
        grants: list[str] | None = None
        if granted is not None:
            if isinstance(granted, str) or not isinstance(granted, list | tuple):
                raise StoreError("granted must be a list of permission strings")
            if len(granted) > MAX_GRANTS:
                raise StoreError(f"too many grants: {len(granted)}, at most {MAX_GRANTS}")
            grants = sorted(
                {v.check_text(g, "a granted permission", 512, empty=False) for g in granted}
            )
        values: dict[str, Any] | None = None
        if settings is not None:
            if not isinstance(settings, Mapping) or not all(isinstance(k, str) for k in settings):
                raise StoreError("settings must be an object with string keys")
            values = v.check_json(dict(settings), "settings", MAX_SETTINGS_BYTES)
        at = now()
        with self._write() as s:
            # Two first writes of one installation must not both insert (PostgreSQL).
            self._store._advisory_lock(s, "installation", self.tenant_id, plugin_id)
            row = s.get(m.Installation, (self.tenant_id, plugin_id), with_for_update=True)
            if row is None:
                row = m.Installation(
                    tenant_id=self.tenant_id,
                    plugin_id=plugin_id,
                    enabled=True,
                    version=None,
                    granted=[],
                    settings={},
                    created_at=at,
                )
                s.add(row)
            if enabled is not None:
                row.enabled = enabled
            if version is not None:
                row.version = version
            if grants is not None:
                row.granted = grants
            if values is not None:
                row.settings = values
            row.updated_at = at
            s.flush()
            return self._installation(row)

    def delete_installation(self, plugin_id: str, *, purge: bool = True) -> bool:
        """Remove the installation; with ``purge`` (the default) also the plugin's credentials
        and storage for this tenant. False when it was not installed."""
        v.check_plugin_id(plugin_id)
        with self._write() as s:
            if purge:
                for model in (m.Credential, m.KVEntry):
                    s.execute(
                        delete(model).where(
                            model.tenant_id == self.tenant_id, model.plugin_id == plugin_id
                        )
                    )
            result = s.execute(
                delete(m.Installation).where(
                    m.Installation.tenant_id == self.tenant_id,
                    m.Installation.plugin_id == plugin_id,
                )
            )
            return rowcount(result) > 0

    # -- credentials ------------------------------------------------------------------------

    def _check_credentials(self, values: Mapping[str, str]) -> None:
        if not isinstance(values, Mapping):
            raise StoreError("credentials must be an object of name -> string value")
        for name, value in values.items():
            v.check_credential_name(name)
            if not isinstance(value, str):
                raise StoreError(f"credential {name!r} must be a string")
            if len(value.encode()) > MAX_CREDENTIAL_BYTES:
                raise StoreError(
                    f"credential {name!r} is too long: at most {MAX_CREDENTIAL_BYTES} bytes"
                )

    def set_credential(self, plugin_id: str, name: str, value: str) -> CredentialInfo:
        """Store one credential, encrypted. Write-only: nothing returns the value but
        ``get_credentials`` (for the host that runs the plugin)."""
        return self.set_credentials(plugin_id, {name: value})[0]

    def set_credentials(
        self,
        plugin_id: str,
        values: Mapping[str, str],
        *,
        validate: Callable[[dict[str, str]], object] | None = None,
    ) -> list[CredentialInfo]:
        """Store several credentials of a plugin at once, encrypted with the newest key.

        ``validate``, when given, is called with the plugin's complete credentials after the
        change (the stored ones updated with ``values``) *before* anything is written; if it
        raises, its exception propagates and nothing is stored. The daemon passes the plugin's
        own credential check here. It runs outside any transaction, so it may be slow.
        """
        v.check_plugin_id(plugin_id)
        self._check_credentials(values)
        keys = self._store.keyring()
        if validate is not None:
            merged = self.get_credentials(plugin_id)
            merged.update(values)
            validate(merged)
        at = now()
        infos: list[CredentialInfo] = []
        with self._write() as s:
            self._store._advisory_lock(s, "credentials", self.tenant_id, plugin_id)
            for name, value in values.items():
                version, blob = keys.encrypt(
                    value.encode(), credential_aad(self.tenant_id, plugin_id, name)
                )
                row = s.get(m.Credential, (self.tenant_id, plugin_id, name), with_for_update=True)
                if row is None:
                    row = m.Credential(tenant_id=self.tenant_id, plugin_id=plugin_id, name=name)
                    s.add(row)
                row.ciphertext, row.key_version, row.updated_at = blob, version, at
                infos.append(CredentialInfo(plugin_id, name, version, at))
        return infos

    def get_credentials(self, plugin_id: str) -> dict[str, str]:
        """The plugin's credentials, decrypted: for the host only, never for a response."""
        v.check_plugin_id(plugin_id)
        with self._read() as s:
            rows = s.scalars(
                select(m.Credential).where(
                    m.Credential.tenant_id == self.tenant_id, m.Credential.plugin_id == plugin_id
                )
            ).all()
        if not rows:
            return {}
        return {row.name: self._store._decrypt(row) for row in rows}

    def credential_names(self, plugin_id: str) -> list[str]:
        """The names of the plugin's credentials, for responses (values are write-only)."""
        return [c.name for c in self.list_credentials(plugin_id)]

    def list_credentials(self, plugin_id: str | None = None) -> list[CredentialInfo]:
        """Metadata of the tenant's credentials (of one plugin, or all); never the values."""
        c = m.Credential
        query = select(c.plugin_id, c.name, c.key_version, c.updated_at).where(
            c.tenant_id == self.tenant_id
        )
        if plugin_id is not None:
            query = query.where(m.Credential.plugin_id == v.check_plugin_id(plugin_id))
        with self._read() as s:
            rows = s.execute(query.order_by(m.Credential.plugin_id, m.Credential.name)).all()
        return [CredentialInfo(p, n, k, u) for p, n, k, u in rows]

    def delete_credential(self, plugin_id: str, name: str) -> bool:
        v.check_plugin_id(plugin_id)
        v.check_credential_name(name)
        with self._write() as s:
            result = s.execute(
                delete(m.Credential).where(
                    m.Credential.tenant_id == self.tenant_id,
                    m.Credential.plugin_id == plugin_id,
                    m.Credential.name == name,
                )
            )
            return rowcount(result) > 0

    # -- plugin storage ---------------------------------------------------------------------

    def storage(
        self, plugin_id: str, *, quota: int | Literal["default"] | None = "default"
    ) -> PluginStorage:
        """The plugin's private key-value storage for this tenant (the SDK ``Storage``
        protocol), limited to ``quota`` bytes (the store's ``kv_quota`` by default)."""
        v.check_plugin_id(plugin_id)
        limit = self._store.kv_quota if quota == "default" else quota
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise StoreError("quota must be a number of bytes >= 0, or None")
        max_value = self._store.kv_max_value
        return PluginStorage(self._store, self.tenant_id, plugin_id, limit, max_value)

    # -- tasks ------------------------------------------------------------------------------

    def create_task(
        self, kind: str, *, plugin_id: str | None = None, params: Mapping[str, Any] | None = None
    ) -> TaskInfo:
        """Queue a task (``kind`` e.g. ``install``); a replica takes it with ``claim_task``."""
        v.check_text(kind, "task kind", 32, empty=False)
        if plugin_id is not None:
            v.check_plugin_id(plugin_id)
        data = v.check_json(dict(params or {}), "task params", MAX_TASK_PARAMS_BYTES)
        at = now()
        row = m.Task(
            id=uuid.uuid4().hex,
            tenant_id=self.tenant_id,
            kind=kind,
            status="queued",
            plugin_id=plugin_id,
            params=data,
            phase=None,
            events=[],
            result=None,
            error=None,
            owner=None,
            lease_until=None,
            attempts=0,
            created_at=at,
            updated_at=at,
        )
        with self._write() as s:
            s.add(row)
            s.flush()
            return task_info(row)

    def _task_query(self, task_id: str) -> Any:
        return select(m.Task).where(m.Task.tenant_id == self.tenant_id, m.Task.id == task_id)

    def get_task(self, task_id: str) -> TaskInfo | None:
        if not isinstance(task_id, str) or len(task_id) > m.KEY_ID_LEN:
            return None
        with self._read() as s:
            row = s.scalars(self._task_query(task_id)).first()
            return None if row is None else task_info(row)

    def list_tasks(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        plugin_id: str | None = None,
        limit: int = 100,
    ) -> list[TaskInfo]:
        """The tenant's tasks, newest first."""
        query = select(m.Task).where(m.Task.tenant_id == self.tenant_id)
        if status is not None:
            query = query.where(m.Task.status == status)
        if kind is not None:
            query = query.where(m.Task.kind == kind)
        if plugin_id is not None:
            query = query.where(m.Task.plugin_id == v.check_plugin_id(plugin_id))
        query = query.order_by(m.Task.created_at.desc(), m.Task.id.desc()).limit(_limit(limit))
        with self._read() as s:
            return [task_info(r) for r in s.scalars(query).all()]

    def claim_task(
        self, replica: str, *, lease_seconds: float = 60.0, kinds: tuple[str, ...] | None = None
    ) -> TaskInfo | None:
        """Like ``Store.claim_task`` but only among this tenant's tasks."""
        return self._store._claim(replica, lease_seconds, kinds, self.tenant_id)

    def update_task(
        self,
        task_id: str,
        *,
        status: str | None = None,
        phase: str | None = None,
        event: Mapping[str, Any] | None = None,
        result: Any = None,
        error: str | None = None,
        replica: str | None = None,
    ) -> TaskInfo:
        """Record progress of a task: a new ``status``/``phase``, one more ``event`` (a JSON
        object appended to ``events``), its ``result`` or ``error``.

        With ``replica``, the update is refused (``StoreError(reason="conflict")``) unless that
        replica still owns the task: a replica whose lease expired and was taken over cannot
        overwrite the new owner's work. A finished task (succeeded, failed, cancelled) cannot
        change any more. Setting ``queued`` releases the task for another claim.
        """
        if status is not None and status not in m.TASK_STATUSES:
            raise StoreError(f"invalid task status {status!r}: one of {', '.join(m.TASK_STATUSES)}")
        if phase is not None:
            v.check_text(phase, "task phase", 32)
        new_event = None
        if event is not None:
            if not isinstance(event, Mapping):
                raise StoreError("a task event must be a JSON object")
            new_event = v.check_json(dict(event), "task event", MAX_TASK_EVENT_BYTES)
        value = None
        if result is not None:
            value = v.check_json(result, "task result", MAX_TASK_RESULT_BYTES)
        if error is not None and not isinstance(error, str):
            raise StoreError("a task error must be a string")
        at = now()
        with self._write() as s:
            row = s.scalars(self._task_query(task_id).with_for_update()).first()
            if row is None:
                raise StoreError(f"no task {task_id!r}", "not_found")
            if row.status in FINISHED:
                raise StoreError(f"task {task_id} is {row.status} already", "conflict")
            if replica is not None and (row.owner != replica or row.status != "running"):
                raise StoreError(
                    f"task {task_id} is not owned by replica {replica!r} (lease lost)", "conflict"
                )
            changes: dict[str, Any] = {"updated_at": at}
            if status is not None:
                changes["status"] = status
                if status in FINISHED or status == "queued":
                    changes["lease_until"] = None
                if status == "queued":
                    changes["owner"] = None
            if phase is not None:
                changes["phase"] = phase
            if new_event is not None:
                changes["events"] = [*(row.events or []), new_event][-MAX_TASK_EVENTS:]
            if value is not None:
                changes["result"] = value
            if error is not None:
                changes["error"] = _clip(error, MAX_TASK_ERROR_CHARS)
            # An explicit UPDATE filtered by tenant (the ORM would write by primary key only).
            s.execute(
                update(m.Task)
                .where(m.Task.tenant_id == self.tenant_id, m.Task.id == task_id)
                .values(**changes)
                .execution_options(synchronize_session=False)
            )
            s.expunge(row)
            for name, new in changes.items():
                setattr(row, name, new)
            return task_info(row)

    def renew_lease(self, task_id: str, replica: str, *, lease_seconds: float = 60.0) -> bool:
        """Extend ``replica``'s lease on a running task; False when it no longer owns it."""
        if not 0 < lease_seconds <= 86400:
            raise StoreError("lease_seconds must be between 0 and 86400")
        at = now()
        with self._write() as s:
            result = s.execute(
                update(m.Task)
                .where(
                    m.Task.tenant_id == self.tenant_id,
                    m.Task.id == task_id,
                    m.Task.owner == replica,
                    m.Task.status == "running",
                )
                .values(lease_until=at + timedelta(seconds=lease_seconds), updated_at=at)
            )
            return rowcount(result) > 0

    # -- audit ------------------------------------------------------------------------------

    def append_audit(
        self,
        event: AuditEvent,
        *,
        key_id: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        input_schema: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one call to the audit log; returns its id.

        ``arguments``, when given, are stored only after ``redact(arguments, input_schema)``
        (secret fields become ``"***"``); arguments whose redacted JSON passes 64 KiB are replaced
        by ``{"_truncated": true, "bytes": n}``.
        """
        row = m.AuditRow(**audit_values(self.tenant_id, event, key_id, arguments, input_schema))
        with self._write() as s:
            s.add(row)
            s.flush()
            return row.id

    def query_audit(
        self,
        *,
        plugin_id: str | None = None,
        tool: str | None = None,
        outcome: str | None = None,
        key_id: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """The tenant's audit rows, newest first; ``since`` inclusive, ``until`` exclusive
        (datetimes or Unix timestamps); at most ``limit`` (1 to 1000) rows."""
        query = select(m.AuditRow).where(m.AuditRow.tenant_id == self.tenant_id)
        if plugin_id is not None:
            query = query.where(m.AuditRow.plugin_id == v.check_plugin_id(plugin_id))
        if tool is not None:
            query = query.where(m.AuditRow.tool == tool)
        if outcome is not None:
            query = query.where(m.AuditRow.outcome == outcome)
        if key_id is not None:
            query = query.where(m.AuditRow.key_id == key_id)
        start, end = _time(since, "since"), _time(until, "until")
        if start is not None:
            query = query.where(m.AuditRow.started >= start)
        if end is not None:
            query = query.where(m.AuditRow.started < end)
        query = query.order_by(m.AuditRow.started.desc(), m.AuditRow.id.desc()).limit(_limit(limit))
        with self._read() as s:
            return [
                AuditRecord(
                    id=r.id,
                    tenant_id=r.tenant_id,
                    key_id=r.key_id,
                    caller=r.caller,
                    plugin_id=r.plugin_id,
                    tool=r.tool,
                    call_id=r.call_id,
                    started=r.started,
                    duration_ms=r.duration_ms,
                    outcome=r.outcome,
                    cached=r.cached,
                    arg_bytes=r.arg_bytes,
                    result_bytes=r.result_bytes,
                    arguments=r.arguments_redacted,
                )
                for r in s.scalars(query).all()
            ]
