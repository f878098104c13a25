"""The management API: tenants, API keys, installations, credentials and the audit log.

Everything a tenant owns lives under ``/v1/tenants/{tenant}``. A key acts for its own tenant
(``{tenant}`` is its tenant id); an all-tenants admin key (``*``) for any tenant. Naming a
tenant a key may not act for answers 404, exactly like a tenant that does not exist, so a key
learns nothing about other tenants. Tenants themselves (create, list, delete) are managed by
all-tenants admin keys only.

Every change invalidates this replica's caches and publishes a change notification (topics
``tenants``, ``keys``, ``installations``, ``settings``, ``grants``, ``credentials``) so the
other replicas drop theirs. Credential values are write-only: no response, log line or audit
row carries one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from ..errors import CredentialsInvalid, PluginError, StoreError
from ..host import PluginInfo
from ..manifest import check_values
from ..store import InstallationInfo, TenantStore
from ._auth import ALL_TENANTS, Principal
from ._deps import requires, state_of
from ._errors import ApiError, JSONBody, store_unavailable
from ._models import AUTH_ERRORS, CredentialsIn, ErrorBody, InstallationPatch, KeyIn, TenantIn
from ._routes import Author, Name
from ._state import ServerState
from ._tenancy import is_package_plugin, store_plugin_id, store_tenant_id, visible_to

__all__ = ["admin_router"]

log = logging.getLogger("plughub.server")

T = TypeVar("T")

admin_router = APIRouter(prefix="/v1", tags=["management"])

TenantId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The tenant id.")]
KeyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The key's id.")]
CredName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="Its name.")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": ErrorBody, "description": "No such tenant, plugin, key or credential."},
    422: {"model": ErrorBody, "description": "Invalid body or values."},
}

Reader = Annotated[Principal, Depends(requires("read"))]
Configurer = Annotated[Principal, Depends(requires("configure"))]
Admin = Annotated[Principal, Depends(requires("admin"))]


# -- helpers -----------------------------------------------------------------------------------


async def _store(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Run a store call off the loop, its ``StoreError`` as the matching HTTP error."""
    try:
        return await asyncio.to_thread(fn, *args, **kw)
    except StoreError as e:
        status = {"not_found": 404, "conflict": 409, "unavailable": 503}.get(e.reason, 422)
        if status == 503:
            log.warning("store unavailable: %s", e)
            raise store_unavailable() from None
        raise ApiError(
            status, str(e), e.reason if e.reason != "invalid" else "invalid_value"
        ) from None


def _no_tenant(tenant: str) -> ApiError:
    return ApiError(404, f"no tenant {tenant!r}", "tenant_not_found")


def _all_tenants(principal: Principal) -> None:
    if principal.tenant_id != ALL_TENANTS:
        raise ApiError(403, "only an all-tenants admin key ('*') manages tenants", "forbidden")


async def _tenant(request: Request, principal: Principal, tenant: str) -> TenantStore:
    """The store view of ``tenant`` when ``principal`` may act for it; else 404 (as unknown)."""
    own = principal.tenant_id
    if own != ALL_TENANTS and tenant not in (own, store_tenant_id(own)):
        raise _no_tenant(tenant)
    sid = store_tenant_id(tenant)
    store = state_of(request).require_services().store
    if own == ALL_TENANTS and await _store(store.get_tenant, sid) is None:
        raise _no_tenant(tenant)
    return store.tenant(sid)


async def _changed(request: Request, topic: str, tenant: str, plugin: str | None = None) -> None:
    """Drop this replica's caches, then tell the others."""
    state = state_of(request)
    state.invalidate(tenant, plugin)
    extra = {"plugin": plugin} if plugin is not None else {}
    await state.publish(topic, tenant, **extra)


def _not_found(author: str, name: str) -> ApiError:
    return ApiError(404, f"no plugin '{author}/{name}'", "plugin_not_found")


async def _manageable(
    state: ServerState, view: TenantStore, author: str, name: str
) -> tuple[PluginInfo, InstallationInfo | None]:
    """The host plugin and the tenant's row, when the tenant may configure it: every
    operator-served plugin, and package-installed ones the tenant has a row for."""
    pid = state.plugin_id_of(f"{author}/{name}")
    if pid is None:
        raise _not_found(author, name)
    info = next(p for p in state.require_host().plugins() if p.id == pid)
    row = await _store(view.get_installation, store_plugin_id(pid))
    if is_package_plugin(info) and row is None:
        raise _not_found(author, name)
    return info, row


def _installation(
    info: PluginInfo, row: InstallationInfo | None, credentials: list[str]
) -> dict[str, Any]:
    return {
        "plugin_id": info.id,
        "kind": "package" if is_package_plugin(info) else "operator",
        "status": info.status,
        "enabled": row.enabled if row is not None else True,
        "visible": visible_to(info, row),
        "version": row.version if row is not None and row.version else info.version,
        "settings": dict(row.settings) if row is not None else {},
        "granted": list(row.granted) if row is not None else None,
        "credentials": credentials,
        "updated_at": row.updated_at.isoformat() if row is not None else None,
    }


def _key(info: Any) -> dict[str, Any]:
    out: dict[str, Any] = info.to_dict()
    out["hint"] = info.hint
    out["active"] = info.active
    return out


# -- tenants -----------------------------------------------------------------------------------


@admin_router.post(
    "/tenants",
    status_code=201,
    responses={**_ERRORS, 409: {"model": ErrorBody}},
    summary="Create a tenant",
)
async def create_tenant(request: Request, body: TenantIn, principal: Admin) -> Response:
    """A new tenant (all-tenants admin keys only). 409 when the id is taken."""
    _all_tenants(principal)
    store = state_of(request).require_services().store
    info = await _store(store.create_tenant, body.id, body.name)
    await _changed(request, "tenants", info.id)
    return JSONBody(info.to_dict(), status_code=201)


@admin_router.get("/tenants", responses=_ERRORS, summary="List tenants")
async def list_tenants(request: Request, principal: Admin) -> Response:
    """Every tenant (all-tenants admin keys only)."""
    _all_tenants(principal)
    store = state_of(request).require_services().store
    return JSONBody([t.to_dict() for t in await _store(store.list_tenants)])


@admin_router.get("/tenants/{tenant}", responses=_ERRORS, summary="One tenant")
async def get_tenant(request: Request, tenant: TenantId, principal: Reader) -> Response:
    """The tenant's record: its own for a tenant key, any for an all-tenants key."""
    view = await _tenant(request, principal, tenant)
    info = await _store(view.info)
    if info is None:
        raise _no_tenant(tenant)
    return JSONBody(info.to_dict())


@admin_router.delete(
    "/tenants/{tenant}", status_code=204, responses=_ERRORS, summary="Delete a tenant"
)
async def delete_tenant(request: Request, tenant: TenantId, principal: Admin) -> Response:
    """Delete the tenant and everything it owns: keys (refused at once), installations,
    credentials, storage, tasks, audit rows (all-tenants admin keys only)."""
    _all_tenants(principal)
    store = state_of(request).require_services().store
    sid = store_tenant_id(tenant)
    if not await _store(store.delete_tenant, sid):
        raise _no_tenant(tenant)
    auth = state_of(request).authenticator
    invalidate = getattr(auth, "invalidate", None)
    if callable(invalidate):
        invalidate(tenant=sid)
    await _changed(request, "tenants", sid)
    return Response(status_code=204)


# -- API keys ----------------------------------------------------------------------------------


@admin_router.get("/tenants/{tenant}/keys", responses=_ERRORS, summary="List API keys")
async def list_keys(request: Request, tenant: TenantId, principal: Configurer) -> Response:
    """The tenant's keys (revoked ones too), never their tokens: ``hint`` shows how one starts."""
    view = await _tenant(request, principal, tenant)
    return JSONBody([_key(k) for k in await _store(view.list_keys)])


@admin_router.post(
    "/tenants/{tenant}/keys", status_code=201, responses=_ERRORS, summary="Create an API key"
)
async def create_key(
    request: Request, tenant: TenantId, body: KeyIn, principal: Configurer
) -> Response:
    """A new key; its ``token`` is in this response only (the store keeps a digest). A member
    may create member and invoke keys; admin keys need an admin key."""
    view = await _tenant(request, principal, tenant)
    if body.role == "admin" and not principal.can("admin"):
        raise ApiError(403, "only an admin key may create admin keys", "forbidden")
    new = await _store(view.create_key, body.role, body.name)
    info = await _store(view.get_key, new.key_id)
    await _changed(request, "keys", view.tenant_id)
    return JSONBody({**(_key(info) if info else {}), "token": new.token}, status_code=201)


@admin_router.delete(
    "/tenants/{tenant}/keys/{key_id}",
    status_code=204,
    responses=_ERRORS,
    summary="Revoke an API key",
)
async def revoke_key(
    request: Request, tenant: TenantId, key_id: KeyId, principal: Configurer
) -> Response:
    """Revoke a key: refused by every replica within a second. Members may not revoke admin
    keys. 404 for unknown or already revoked keys."""
    view = await _tenant(request, principal, tenant)
    info = await _store(view.get_key, key_id)
    if info is None or not info.active:
        raise ApiError(404, f"no active key {key_id!r}", "key_not_found")
    if info.role == "admin" and not principal.can("admin"):
        raise ApiError(403, "only an admin key may revoke admin keys", "forbidden")
    await _store(view.revoke_key, key_id)
    auth = state_of(request).authenticator
    invalidate = getattr(auth, "invalidate", None)
    if callable(invalidate):
        invalidate(key_id=key_id)
    await state_of(request).publish("keys", view.tenant_id, key_id=key_id)
    return Response(status_code=204)


# -- installations -----------------------------------------------------------------------------


@admin_router.get(
    "/tenants/{tenant}/installations", responses=_ERRORS, summary="List installations"
)
async def list_installations(request: Request, tenant: TenantId, principal: Reader) -> Response:
    """Every plugin the tenant may configure, with its state for the tenant: operator-served
    plugins (enabled unless the tenant disabled them) and the tenant's package installs."""
    state = state_of(request)
    view = await _tenant(request, principal, tenant)
    rows = {r.plugin_id: r for r in await _store(view.list_installations)}
    creds: dict[str, list[str]] = {}
    for c in await _store(view.list_credentials):
        creds.setdefault(c.plugin_id, []).append(c.name)
    out = []
    for info in state.require_host().plugins():
        sid = store_plugin_id(info.id)
        row = rows.get(sid)
        if is_package_plugin(info) and row is None:
            continue
        out.append(_installation(info, row, creds.get(sid, [])))
    return JSONBody(out)


@admin_router.get(
    "/tenants/{tenant}/installations/{author}/{name}",
    responses=_ERRORS,
    summary="One installation",
)
async def get_installation(
    request: Request, tenant: TenantId, author: Author, name: Name, principal: Reader
) -> Response:
    """The plugin's state for the tenant: enabled, visible, settings, grants, credential names."""
    state = state_of(request)
    view = await _tenant(request, principal, tenant)
    info, row = await _manageable(state, view, author, name)
    names = await _store(view.credential_names, store_plugin_id(info.id))
    return JSONBody(_installation(info, row, names))


def _check_settings(state: ServerState, info: PluginInfo, settings: dict[str, Any]) -> None:
    manifest = state.require_host().manifest(info.id)
    fields = manifest.settings if manifest is not None else {}
    if not fields:
        return  # nothing declared: seed-style plugins take any settings
    secret = sorted(n for n in settings if n in fields and fields[n].secret)
    if secret:
        raise ApiError(
            422, f"secret settings belong in credentials: {', '.join(secret)}", "invalid_value"
        )
    problems = check_values(fields, settings, partial=True)
    if problems:
        raise ApiError(422, "invalid settings: " + "; ".join(problems), "invalid_value")


@admin_router.patch(
    "/tenants/{tenant}/installations/{author}/{name}",
    responses=_ERRORS,
    summary="Enable, disable or configure a plugin for the tenant",
)
async def patch_installation(
    request: Request,
    tenant: TenantId,
    author: Author,
    name: Name,
    body: InstallationPatch,
    principal: Configurer,
) -> Response:
    """``enabled`` turns the plugin on or off for the tenant; ``settings`` replaces its settings
    (checked against the manifest's ``settings``); ``granted`` replaces the permissions granted
    to a package-installed plugin (admin keys only; the operator's grants stay the ceiling)."""
    state = state_of(request)
    view = await _tenant(request, principal, tenant)
    info, row = await _manageable(state, view, author, name)
    if body.enabled is None and body.settings is None and body.granted is None:
        raise ApiError(422, "nothing to change: send enabled, settings or granted", "invalid_value")
    if body.granted is not None:
        if not principal.can("admin"):
            raise ApiError(403, "only an admin key may change granted permissions", "forbidden")
        if not is_package_plugin(info):
            raise ApiError(
                422,
                "grants apply to plugins installed from packages; operator-served plugins run "
                "with the operator's grants",
                "invalid_value",
            )
    if body.settings is not None:
        _check_settings(state, info, body.settings)
    pid = store_plugin_id(info.id)
    row = await _store(
        view.set_installation,
        pid,
        enabled=body.enabled,
        granted=body.granted,
        settings=body.settings,
    )
    for topic, value in (
        ("installations", body.enabled),
        ("settings", body.settings),
        ("grants", body.granted),
    ):
        if value is not None:
            await _changed(request, topic, view.tenant_id, pid)
    names = await _store(view.credential_names, pid)
    return JSONBody(_installation(info, row, names))


# -- credentials -------------------------------------------------------------------------------


def _credential_list(infos: list[Any]) -> list[dict[str, Any]]:
    return [{"name": c.name, "updated_at": c.updated_at.isoformat()} for c in infos]


@admin_router.get(
    "/tenants/{tenant}/installations/{author}/{name}/credentials",
    responses=_ERRORS,
    summary="Credential names",
)
async def list_credentials(
    request: Request, tenant: TenantId, author: Author, name: Name, principal: Configurer
) -> Response:
    """Names and update times of the plugin's credentials; values are write-only."""
    view = await _tenant(request, principal, tenant)
    info, _ = await _manageable(state_of(request), view, author, name)
    infos = await _store(view.list_credentials, store_plugin_id(info.id))
    return JSONBody(_credential_list(infos))


@admin_router.put(
    "/tenants/{tenant}/installations/{author}/{name}/credentials",
    responses=_ERRORS,
    summary="Set credentials",
)
async def put_credentials(
    request: Request,
    tenant: TenantId,
    author: Author,
    name: Name,
    body: CredentialsIn,
    principal: Configurer,
) -> Response:
    """Set the named credentials (others are kept), encrypted at rest. The plugin checks the
    complete set first (its manifest's rules, then its own ``validate_credentials``); a refusal
    is a 422 with the plugin's message and nothing is stored."""
    state = state_of(request)
    view = await _tenant(request, principal, tenant)
    info, _ = await _manageable(state, view, author, name)
    pid = store_plugin_id(info.id)
    merged = await _store(view.get_credentials, pid)
    merged.update(body.credentials)
    try:
        await state.require_host().avalidate_credentials(info.id, merged)
    except CredentialsInvalid as e:
        raise ApiError(422, str(e), "credentials_invalid") from None
    except PluginError as e:
        raise ApiError(409, f"cannot check the credentials: {e}", "plugin_unusable") from None
    finally:
        merged.clear()
    infos = await _store(view.set_credentials, pid, body.credentials)
    await _changed(request, "credentials", view.tenant_id, pid)
    return JSONBody(_credential_list(infos))


@admin_router.delete(
    "/tenants/{tenant}/installations/{author}/{name}/credentials/{credential}",
    status_code=204,
    responses=_ERRORS,
    summary="Delete a credential",
)
async def delete_credential(
    request: Request,
    tenant: TenantId,
    author: Author,
    name: Name,
    credential: CredName,
    principal: Configurer,
) -> Response:
    """Remove one credential of the plugin; 404 when it is not set."""
    view = await _tenant(request, principal, tenant)
    info, _ = await _manageable(state_of(request), view, author, name)
    pid = store_plugin_id(info.id)
    if not await _store(view.delete_credential, pid, credential):
        raise ApiError(404, f"no credential {credential!r}", "credential_not_found")
    await _changed(request, "credentials", view.tenant_id, pid)
    return Response(status_code=204)


# -- audit -------------------------------------------------------------------------------------


_Plugin = Annotated[str | None, Query(max_length=200, description="Plugin id.")]
_Tool = Annotated[str | None, Query(max_length=200)]
_Outcome = Annotated[str | None, Query(max_length=64, description="ok, or a failure reason.")]
_KeyQ = Annotated[str | None, Query(max_length=64)]
_Since = Annotated[datetime | None, Query(description="ISO 8601 time or Unix seconds, inclusive.")]
_Until = Annotated[datetime | None, Query(description="ISO 8601 time or Unix seconds, exclusive.")]
_Limit = Annotated[int, Query(ge=1, le=1000)]


class AuditFilters:
    """The audit query's parameters (one dependency for both audit routes)."""

    def __init__(
        self,
        plugin: _Plugin = None,
        tool: _Tool = None,
        outcome: _Outcome = None,
        key_id: _KeyQ = None,
        since: _Since = None,
        until: _Until = None,
        limit: _Limit = 100,
    ) -> None:
        self.plugin, self.tool, self.outcome, self.key_id = plugin, tool, outcome, key_id
        self.since, self.until, self.limit = since, until, limit


Filters = Annotated[AuditFilters, Depends()]


async def _audit(request: Request, view: TenantStore, f: AuditFilters) -> Response:
    state = state_of(request)
    pid = None
    if f.plugin is not None:
        found = state.plugin_id_of(f.plugin)
        pid = store_plugin_id(found or f.plugin.lower())
    if state.audit is not None:  # rows still queued count as written for the reader
        await asyncio.to_thread(state.audit.flush, 2.0)
    rows = await _store(
        view.query_audit,
        plugin_id=pid,
        tool=f.tool,
        outcome=f.outcome,
        key_id=f.key_id,
        since=f.since,
        until=f.until,
        limit=f.limit,
    )
    return JSONBody([r.to_dict() for r in rows])


@admin_router.get("/audit", responses=_ERRORS, summary="The caller's tenant's audit log")
async def audit(request: Request, principal: Configurer, filters: Filters) -> Response:
    """One row per call (newest first): who, which tool, when, how long, the outcome, sizes
    and the arguments with secret fields redacted. All-tenants keys use
    ``/v1/tenants/{tenant}/audit``."""
    if principal.tenant_id == ALL_TENANTS:
        raise ApiError(
            400,
            "an all-tenants key names the tenant: GET /v1/tenants/{tenant}/audit",
            "tenant_required",
        )
    view = await _tenant(request, principal, principal.tenant_id)
    return await _audit(request, view, filters)


@admin_router.get("/tenants/{tenant}/audit", responses=_ERRORS, summary="A tenant's audit log")
async def tenant_audit(
    request: Request, tenant: TenantId, principal: Configurer, filters: Filters
) -> Response:
    """Like ``GET /v1/audit``, for a named tenant."""
    view = await _tenant(request, principal, tenant)
    return await _audit(request, view, filters)
