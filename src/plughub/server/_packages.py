"""``/v1`` package management: install by upload or from an index or git, upgrade, rollback,
uninstall, enable/disable, and the tasks that carry the long operations.

Everything that runs the installer answers **202** with a task (``Location: /v1/tasks/{id}``)
that some replica's :class:`~plughub.server._tasks.TaskRunner` runs; ``GET /v1/tasks/{id}`` and
its ``/events`` stream follow it from any replica, through the store. Enable and disable only
change the tenant's installation row, so they answer at once.

What a client may name is limited to what the operator allowed: an uploaded package (its own
size limit, streamed to the shared home, checked as hostile before it is queued), a configured
index, an ``https`` repository on a configured git host. A path on the server's disk is never a
client's to name.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response
from starlette.types import Scope

from ..errors import PackageError, StoreError, UsageError
from ..store import TaskInfo, TenantStore
from ._auth import ALL_TENANTS, Principal
from ._deps import requires, state_of
from ._errors import ApiError, JSONBody, is_json_type
from ._models import AUTH_ERRORS, ErrorBody
from ._routes import Author, Name
from ._services import Services
from ._streaming import NDJSON, SSE, StreamResponse, ndjson_line, negotiate_stream, sse_frame
from ._tasks import INPROCESS, UPLOADS, TaskRunner
from ._tenancy import store_tenant_id

__all__ = ["check_git_source", "is_package_upload", "packages_router", "task_view"]

packages_router = APIRouter(prefix="/v1", tags=["packages"])

UPLOAD_TYPES = ("application/octet-stream", "application/zip", "application/vnd.plughub")
_UPLOAD_PATH = re.compile(r"^/v1/(?:packages|plugins/[^/]+/[^/]+/upgrade)/?$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}/[a-z0-9][a-z0-9_-]{0,63}$")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,127}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9.,<>=!~*+ -]{1,64}$")
_WRITE_CHUNK = 1 << 20
POLL_INTERVAL = 0.15
KEEPALIVE = 15.0
MAX_GRANTS = 1000
UNFINISHED = ("queued", "running")
#: Tasks one tenant may have queued or running at once.
MAX_UNFINISHED = 16

_ERRORS = AUTH_ERRORS
_TASK_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": ErrorBody, "description": "No such task for this tenant."},
}
_QUEUE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"model": ErrorBody, "description": "A bad package, source or grant."},
    404: {"model": ErrorBody, "description": "The plugin is not installed for this tenant."},
    409: {"model": ErrorBody, "description": "A task for this plugin is queued or running."},
    413: {"model": ErrorBody, "description": "The package is larger than max_package_bytes."},
    415: {"model": ErrorBody, "description": "Wrong Content-Type."},
    422: {"model": ErrorBody, "description": "The body does not match the request model."},
}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES},
    }
}


# -- models ------------------------------------------------------------------------------------


class InstallRequest(BaseModel):
    """Install from a source the operator enabled."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["index", "git"]
    ref: str = Field(max_length=512)
    """index: the plugin id (``acme/weather``); git: the ``https://`` repository URL."""
    version: str | None = Field(None, max_length=128)
    """index: an exact version or a range (``>=1,<2``); git: the tag or commit to pin."""
    index: str | None = Field(None, max_length=2048)
    """index: which configured index (default the first)."""
    grant: list[str] = Field(default_factory=list, max_length=MAX_GRANTS)
    """The requested permissions the tenant grants."""
    upgrade: bool = False
    """Upgrade when an older version is active (else that is refused)."""


class UpgradeRequest(BaseModel):
    """Upgrade from a configured index (no body: the newest from the index it came from)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["index"] = "index"
    version: str | None = Field(None, max_length=128)
    index: str | None = Field(None, max_length=2048)
    grant: list[str] = Field(default_factory=list, max_length=MAX_GRANTS)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str | None = Field(None, max_length=64)
    """The installed version to go back to (default: the previously active one)."""


class TaskOut(BaseModel):
    """A package task (``events`` only in ``GET /v1/tasks/{id}``)."""

    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    plugin_id: str | None
    phase: str | None
    params: dict[str, Any]
    result: Any = None
    error: str | None = None
    attempts: int
    created_at: str
    updated_at: str
    events: list[dict[str, Any]] | None = None


class InstallationOut(BaseModel):
    plugin_id: str
    enabled: bool
    version: str | None
    granted: list[str]


# -- the body limit --------------------------------------------------------------------------


def is_package_upload(scope: Scope) -> bool:
    """Package uploads skip the daemon's body limit: they stream their body to disk under
    their own, larger limit (``max_package_bytes``), enforced by the route."""
    path = scope.get("path", "")
    return (
        scope.get("method") == "POST"
        and path.endswith(("/packages", "/packages/", "/upgrade", "/upgrade/"))
        and _UPLOAD_PATH.match(path) is not None
        and _media_type(_first_header(scope, b"content-type")) in UPLOAD_TYPES
    )


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


# -- helpers ---------------------------------------------------------------------------------


def check_git_source(url: str, ref: str, hosts: list[str]) -> None:
    """Refuse any git source but ``https://<configured host>/...`` at a plain tag or commit.

    No ``file://``, ``ssh``, ``ext::`` or local paths (the server's disk is not the client's to
    name), no credentials in the URL, nothing that git could read as an option.
    """
    allowed = {h.strip().lower() for h in hosts if h.strip()}
    if not allowed:
        raise UsageError("installing from git is not enabled on this server (git_hosts)")
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.hostname.lower() not in allowed
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or any(c.isspace() or ord(c) < 32 for c in url)
    ):
        raise UsageError(
            f"git sources must be https:// URLs on an allowed host ({', '.join(sorted(allowed))}) "
            "without credentials, query or fragment"
        )
    if not _REF_RE.fullmatch(ref) or ".." in ref or ref.endswith((".lock", "/")):
        raise UsageError(f"invalid git ref {ref!r}: name a tag or a commit id")


def _services(request: Request) -> Services:
    return state_of(request).require_services()


def _runner(request: Request) -> TaskRunner | None:
    runner = getattr(request.app.state, "package_runner", None)
    return runner if isinstance(runner, TaskRunner) else None


def _first_header(scope: Scope, name: bytes) -> str:
    """The first header of that name, as ``request.headers`` reads it (never the last)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


async def _own_tenant(request: Request, principal: Principal) -> TenantStore:
    """The caller's own tenant in the store (created on first use for configured keys'
    tenants). Unlike the management routes (``_admin._tenant``), these paths name no tenant,
    so an all-tenants key has none to act for: 403."""
    if principal.tenant_id == ALL_TENANTS:
        raise ApiError(403, "a key for every tenant ('*') cannot manage installations", "forbidden")
    state = state_of(request)
    services = state.require_services()
    await state.ensure_tenant(principal.tenant_id)
    return services.store.tenant(store_tenant_id(principal.tenant_id))


def _grants(request: Request, grant: list[str], principal: Principal) -> list[str]:
    """The permissions granted with an install; granting any is an admin's act (as in
    ``PATCH .../installations``): a member installs only plugins that ask for none."""
    config = state_of(request).config
    if grant and not principal.can("admin"):
        raise ApiError(
            403,
            "granting permissions needs an admin key; a member may install only plugins that "
            "ask for none",
            "forbidden",
        )
    out = []
    for raw in grant:
        token = raw.strip()
        if not token or len(token) > 512:
            raise ApiError(400, "a grant must be a permission token of 1 to 512 characters")
        if token == "*":
            raise ApiError(400, "grant each permission by name ('*' is not accepted here)")
        if token == INPROCESS and not config.allow_inprocess:
            raise ApiError(
                403,
                "this server does not let plugins run in-process (allow_inprocess)",
                "inprocess_not_allowed",
            )
        out.append(token)
    return sorted(set(out))


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def task_view(task: TaskInfo, *, events: bool = True) -> dict[str, Any]:
    """A task as the API shows it (the upload's file name in the home stays internal)."""
    out: dict[str, Any] = {
        "id": task.id,
        "kind": task.kind,
        "status": task.status,
        "plugin_id": task.plugin_id,
        "phase": task.phase,
        "params": {k: v for k, v in task.params.items() if k != "upload"},
        "result": task.result,
        "error": task.error,
        "attempts": task.attempts,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
    }
    if events:
        out["events"] = list(task.events)
    return out


async def _queue(
    request: Request,
    tenant: TenantStore,
    kind: str,
    plugin_id: str | None,
    params: dict[str, Any],
) -> Response:
    """Queue a task (at most one unfinished per tenant and plugin, ``MAX_UNFINISHED`` per
    tenant: one tenant cannot flood every replica's runner) and answer 202."""
    runner = _runner(request)

    def create() -> TaskInfo:
        unfinished = sum(
            len(tenant.list_tasks(status=status, limit=MAX_UNFINISHED)) for status in UNFINISHED
        )
        if unfinished >= MAX_UNFINISHED:
            raise ApiError(
                429,
                f"{unfinished} tasks of this tenant are queued or running; wait for them",
                "too_many_tasks",
                {"Retry-After": "5"},
            )
        if plugin_id is not None:
            for status in UNFINISHED:
                busy = tenant.list_tasks(status=status, plugin_id=plugin_id, limit=1)
                if busy:
                    raise ApiError(
                        409,
                        f"task {busy[0].id} for {plugin_id} is {status}; wait for it to finish",
                        "task_in_progress",
                        {"Location": f"/v1/tasks/{busy[0].id}"},
                    )
        return tenant.create_task(kind, plugin_id=plugin_id, params=params)

    async with _queue_lock(request):
        try:
            task = await asyncio.to_thread(create)
        except StoreError as e:
            if e.reason == "unavailable":
                raise
            raise ApiError(400, e.message, "bad_request") from None
    if runner is not None:
        runner.wake()
    return JSONBody(
        task_view(task, events=False),
        status_code=202,
        headers={"Location": f"/v1/tasks/{task.id}"},
    )


def _queue_lock(request: Request) -> asyncio.Lock:
    """One replica checks "nothing unfinished for this plugin" and queues atomically; across
    replicas the installer's lock on the home serialises what slips through."""
    lock = getattr(request.app.state, "package_queue_lock", None)
    if not isinstance(lock, asyncio.Lock):
        lock = asyncio.Lock()
        request.app.state.package_queue_lock = lock
    return lock


async def _receive_package(request: Request, limit: int, folder: Path) -> tuple[Path, str]:
    """Stream the body into ``folder`` (never all in memory); returns (file, sha256:<hex>).

    Over ``limit`` is 413 (at once when ``Content-Length`` says so); nothing is left behind on
    any failure, a client that goes away included.
    """
    if _media_type(request.headers.get("content-type")) not in UPLOAD_TYPES:
        raise ApiError(
            415,
            "send the .plughub file as the body with 'Content-Type: application/octet-stream' "
            f"(got {request.headers.get('content-type') or 'none'})",
            "unsupported_media_type",
        )
    too_large = ApiError(
        413, f"the package is larger than {limit} bytes", "body_too_large", {"Connection": "close"}
    )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    part = folder / f".{name}.part"
    digest = hashlib.sha256()
    size = 0
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            buffer = bytearray()
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                digest.update(chunk)
                buffer += chunk
                if len(buffer) >= _WRITE_CHUNK:
                    await asyncio.to_thread(f.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await asyncio.to_thread(f.write, bytes(buffer))
        if size == 0:
            raise ApiError(400, "the body is empty: send the .plughub file", "empty_body")
        final = folder / f"{name}.plughub"
        os.replace(part, final)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return final, f"sha256:{digest.hexdigest()}"


async def _read_upload(request: Request, services: Services) -> tuple[Path, str, Any]:
    """Receive an uploaded package and check it as hostile input (structure, sizes, bombs,
    checksum, signature) before anything is queued; returns (file, sha256, PackageInfo)."""
    from ..packages import TrustStore, check_signature, read_package

    config = state_of(request).config
    path, sha = await _receive_package(request, config.max_package_bytes, services.home / UPLOADS)

    def check() -> Any:
        info = read_package(path)
        check_signature(
            info, TrustStore(services.home / "trust"), allow_unsigned=config.allow_unsigned
        )
        return info

    try:
        info = await asyncio.to_thread(check)
    except PackageError as e:
        path.unlink(missing_ok=True)
        raise ApiError(400, f"not an acceptable package: {e.message}", e.reason) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, sha, info


async def _installation_or_404(tenant: TenantStore, plugin_id: str) -> Any:
    if not _ID_RE.fullmatch(plugin_id):  # package ids are lowercase; nothing else has a row
        raise ApiError(404, f"{plugin_id} is not installed for this tenant", "not_installed")
    row = await asyncio.to_thread(tenant.get_installation, plugin_id)
    if row is None:
        raise ApiError(404, f"{plugin_id} is not installed for this tenant", "not_installed")
    return row


def _index_of(request: Request, wanted: str | None) -> str:
    indexes = state_of(request).config.package_indexes
    if not indexes:
        raise ApiError(400, "installing from an index is not enabled on this server", "no_index")
    if wanted is None:
        return indexes[0]
    if wanted not in indexes:
        raise ApiError(400, f"the index {wanted!r} is not one this server offers", "unknown_index")
    return wanted


def _check_version(version: str | None) -> None:
    if version is not None and not _VERSION_RE.fullmatch(version):
        raise ApiError(400, f"invalid version or range {version!r}", "bad_request")


# -- routes ----------------------------------------------------------------------------------

Configure = Annotated[Principal, Depends(requires("configure"))]
TaskId = Annotated[
    str, PathParam(pattern=r"^[0-9a-f]{1,64}$", description="The task id (from its 202).")
]
Grant = Annotated[
    list[str] | None, Query(description="A requested permission the tenant grants (repeatable).")
]


@packages_router.post(
    "/packages",
    status_code=202,
    response_model=TaskOut,
    responses=_QUEUE_ERRORS,
    openapi_extra=_UPLOAD_BODY,
    summary="Install an uploaded package",
)
async def upload_package(
    request: Request,
    principal: Configure,
    grant: Grant = None,
    upgrade: Annotated[bool, Query(description="Upgrade when an older version is active.")] = False,
) -> Response:
    """The body is the ``.plughub`` file (``application/octet-stream``, at most
    ``max_package_bytes``). It is checked before anything is queued (400 with the refusal's
    reason as ``code``: ``not_a_zip``, ``zip_bomb``, ``bad_path``, ``unsigned``...); then an
    ``install`` task (``upgrade`` with ``upgrade=true``) is queued: 202 and ``Location``."""
    services = _services(request)
    tenant = await _own_tenant(request, principal)
    grants = _grants(request, grant or [], principal)
    path, sha, info = await _read_upload(request, services)
    params: dict[str, Any] = {"source": "upload", "upload": path.name, "sha256": sha}
    params.update(grant=grants, version=info.version)
    if upgrade:
        params["upgrade"] = True
    try:
        return await _queue(request, tenant, "install", info.id, params)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@packages_router.post(
    "/installs",
    status_code=202,
    response_model=TaskOut,
    responses=_QUEUE_ERRORS,
    summary="Install from an index or git",
)
async def install_from_source(
    request: Request, principal: Configure, body: InstallRequest
) -> Response:
    """``{"source": "index", "ref": "acme/weather", "version": ">=1,<2"}`` installs from a
    configured index (``package_indexes``); ``{"source": "git", "ref": "https://...",
    "version": "v1.0.0"}`` from an ``https`` repository on a configured host (``git_hosts``),
    pinned to a tag or commit (git sources are unsigned: they need ``allow_unsigned``)."""
    tenant = await _own_tenant(request, principal)
    grants = _grants(request, body.grant, principal)
    _check_version(body.version)
    params: dict[str, Any] = {"source": body.source, "grant": grants}
    if body.upgrade:
        params["upgrade"] = True
    plugin_id: str | None = None
    if body.source == "index":
        if not _ID_RE.fullmatch(body.ref):
            raise ApiError(400, f"{body.ref!r} is not a plugin id (author/name)", "bad_request")
        params.update(ref=body.ref, version=body.version, index=_index_of(request, body.index))
        plugin_id = body.ref
    else:
        if body.version is None:
            raise ApiError(400, "pin the git source: give the tag or commit as version")
        try:
            check_git_source(body.ref, body.version, state_of(request).config.git_hosts)
        except UsageError as e:
            raise ApiError(400, str(e), "bad_source") from None
        params.update(url=body.ref, ref=body.version)
    return await _queue(request, tenant, "install", plugin_id, params)


@packages_router.get(
    "/tasks", response_model=list[TaskOut], responses=_ERRORS, summary="The tenant's tasks"
)
async def list_tasks(
    request: Request,
    principal: Configure,
    status: Annotated[
        Literal["queued", "running", "succeeded", "failed", "cancelled"] | None,
        Query(description="Only tasks in this status."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
) -> Response:
    """The tenant's package tasks, newest first, without their events."""
    tenant = await _own_tenant(request, principal)
    tasks = await asyncio.to_thread(tenant.list_tasks, status=status, limit=limit)
    return JSONBody([task_view(t, events=False) for t in tasks])


async def _task_or_404(tenant: TenantStore, task_id: str) -> TaskInfo:
    task = await asyncio.to_thread(tenant.get_task, task_id)
    if task is None:
        raise ApiError(404, f"no task {task_id!r}", "task_not_found")
    return task


@packages_router.get(
    "/tasks/{task_id}", response_model=TaskOut, responses=_TASK_ERRORS, summary="One task"
)
async def get_task(request: Request, task_id: TaskId, principal: Configure) -> Response:
    """Status, phase, every event so far, and the ``result`` or ``error`` (``"<phase>:
    <message>"``; ``result`` then holds ``phase``, ``log_tail``, ``missing_permissions``)."""
    tenant = await _own_tenant(request, principal)
    return JSONBody(task_view(await _task_or_404(tenant, task_id)))


_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The task's events as they are recorded, then the task.",
        "content": {
            SSE: {"schema": {"type": "string"}},
            NDJSON: {"schema": {"type": "string"}},
        },
    },
    406: {"model": ErrorBody, "description": "Accept allows neither SSE nor NDJSON."},
}


async def _follow(tenant: TenantStore, task: TaskInfo, kind: str) -> AsyncIterator[bytes]:
    """Poll the task row (the runner may be another replica) and send what is new."""
    loop = asyncio.get_running_loop()

    def frame(data: dict[str, Any]) -> bytes:
        return sse_frame(data, data["event"]) if kind == SSE else ndjson_line(data)

    seen = 0
    status = None
    last_sent = loop.time()
    while True:
        for event in task.events:
            seq = event.get("seq", 0) if isinstance(event, dict) else 0
            if isinstance(event, dict) and seq > seen:
                seen = seq
                yield frame({**event, "event": "phase"})
                last_sent = loop.time()
        if task.status != status:
            status = task.status
            if task.finished:
                yield frame({"event": "task", **task_view(task, events=False)})
                return
            yield frame({"event": "status", "status": status, "phase": task.phase})
            last_sent = loop.time()
        if kind == SSE and loop.time() - last_sent > KEEPALIVE:
            yield b": keepalive\n\n"
            last_sent = loop.time()
        await asyncio.sleep(POLL_INTERVAL)
        fresh = await asyncio.to_thread(tenant.get_task, task.id)
        if fresh is None:  # deleted with its tenant
            return
        task = fresh


@packages_router.get(
    "/tasks/{task_id}/events",
    response_class=StreamResponse,
    responses={**_TASK_ERRORS, **_STREAM_DOC},
    summary="Follow a task",
)
async def task_events(request: Request, task_id: TaskId, principal: Configure) -> Response:
    """Every event of the task (from the first), then new ones as the runner records them,
    ending with one ``task`` event carrying the final status. SSE (``event: phase``,
    ``status``, ``task``) or NDJSON by ``Accept``."""
    kind = negotiate_stream(request.headers.get("accept"))
    if kind is None:
        raise ApiError(
            406,
            "this endpoint streams: send 'Accept: text/event-stream' or "
            "'Accept: application/x-ndjson'",
            "not_acceptable",
        )
    tenant = await _own_tenant(request, principal)
    task = await _task_or_404(tenant, task_id)
    return StreamResponse(_follow(tenant, task, kind), media_type=kind)


_UPGRADE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/UpgradeRequest"}},
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES},
        },
    }
}


@packages_router.post(
    "/plugins/{author}/{name}/upgrade",
    status_code=202,
    response_model=TaskOut,
    responses=_QUEUE_ERRORS,
    openapi_extra=_UPGRADE_BODY,
    summary="Upgrade an installed plugin",
)
async def upgrade_plugin(
    request: Request, author: Author, name: Name, principal: Configure, grant: Grant = None
) -> Response:
    """A newer version from an uploaded package (``application/octet-stream`` body), from a
    configured index (JSON ``{"version": ..., "index": ...}``), or, without a body, the newest
    in the index the active version came from. If the new version fails, the previous one
    stays active."""
    plugin_id = f"{author}/{name}"
    tenant = await _own_tenant(request, principal)
    await _installation_or_404(tenant, plugin_id)
    media = _media_type(request.headers.get("content-type"))
    grants = _grants(request, grant or [], principal)
    if media in UPLOAD_TYPES:
        path, sha, info = await _read_upload(request, _services(request))
        if info.id != plugin_id:
            path.unlink(missing_ok=True)
            raise ApiError(400, f"the package is {info.id}, not {plugin_id}", "id_mismatch")
        params: dict[str, Any] = {"source": "upload", "upload": path.name, "sha256": sha}
        params.update(grant=grants, version=info.version)
        try:
            return await _queue(request, tenant, "upgrade", plugin_id, params)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    raw = await request.body()
    if not raw.strip():
        return await _queue(
            request, tenant, "upgrade", plugin_id, {"source": "latest", "grant": grants}
        )
    if not is_json_type(request.headers.get("content-type")):
        raise ApiError(
            415,
            "send a package (application/octet-stream) or JSON (application/json)",
            "unsupported_media_type",
        )
    try:
        body = UpgradeRequest.model_validate_json(raw)
    except ValidationError as e:  # the problems, never the input echoed back
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()
        )
        raise ApiError(422, f"invalid request: {problems}", "invalid_request") from None
    _check_version(body.version)
    params = {
        "source": "index",
        "ref": plugin_id,
        "version": body.version,
        "index": _index_of(request, body.index),
        "grant": sorted(set(grants) | set(_grants(request, body.grant, principal))),
    }
    return await _queue(request, tenant, "upgrade", plugin_id, params)


@packages_router.post(
    "/plugins/{author}/{name}/rollback",
    status_code=202,
    response_model=TaskOut,
    responses=_QUEUE_ERRORS,
    summary="Roll back to an installed version",
)
async def rollback_plugin(
    request: Request,
    author: Author,
    name: Name,
    principal: Configure,
    body: RollbackRequest | None = None,
) -> Response:
    """Switch back to the previously active version (or ``to``), whose files and environment
    are still installed: a task, since it waits for the home's lock."""
    plugin_id = f"{author}/{name}"
    tenant = await _own_tenant(request, principal)
    await _installation_or_404(tenant, plugin_id)
    to = body.to if body is not None else None
    _check_version(to)
    return await _queue(request, tenant, "rollback", plugin_id, {"to": to})


@packages_router.delete(
    "/plugins/{author}/{name}",
    status_code=202,
    response_model=TaskOut,
    responses=_QUEUE_ERRORS,
    summary="Uninstall a plugin",
)
async def uninstall_plugin(
    request: Request,
    author: Author,
    name: Name,
    principal: Configure,
    force: Annotated[
        bool, Query(description="Even if the tenant's other plugins depend on it.")
    ] = False,
) -> Response:
    """Remove the tenant's installation, with its credentials and storage; the package's files
    leave the shared home when no tenant has it installed any more."""
    plugin_id = f"{author}/{name}"
    tenant = await _own_tenant(request, principal)
    await _installation_or_404(tenant, plugin_id)
    return await _queue(request, tenant, "uninstall", plugin_id, {"force": force})


async def _set_enabled(
    request: Request, principal: Principal, plugin_id: str, enabled: bool
) -> Response:
    state = state_of(request)
    tenant = await _own_tenant(request, principal)
    await _installation_or_404(tenant, plugin_id)
    row = await asyncio.to_thread(tenant.set_installation, plugin_id, enabled=enabled)
    state.invalidate(tenant.tenant_id, plugin_id)
    await state.publish("installations", tenant.tenant_id, plugin=plugin_id)
    return JSONBody(
        {
            "plugin_id": row.plugin_id,
            "enabled": row.enabled,
            "version": row.version,
            "granted": list(row.granted),
        }
    )


_ROW_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": ErrorBody, "description": "The plugin is not installed for this tenant."},
}


@packages_router.post(
    "/plugins/{author}/{name}/enable",
    response_model=InstallationOut,
    responses=_ROW_ERRORS,
    summary="Enable a plugin for the tenant",
)
async def enable_plugin(
    request: Request, author: Author, name: Name, principal: Configure
) -> Response:
    """The tenant sees and can call the plugin again."""
    return await _set_enabled(request, principal, f"{author}/{name}", True)


@packages_router.post(
    "/plugins/{author}/{name}/disable",
    response_model=InstallationOut,
    responses=_ROW_ERRORS,
    summary="Disable a plugin for the tenant",
)
async def disable_plugin(
    request: Request, author: Author, name: Name, principal: Configure
) -> Response:
    """The plugin stays installed (its grants, credentials and storage kept) but the tenant no
    longer sees it; other tenants are not affected."""
    return await _set_enabled(request, principal, f"{author}/{name}", False)
