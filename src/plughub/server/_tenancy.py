"""Per-tenant plugins: which plugins a tenant sees, the ``CallScope`` of its calls, its audit log.

One ``PluginHost`` serves every tenant; what differs per tenant lives in the store and is read
here, cached in memory, and dropped when a change notification (or this replica's own write)
says it changed:

- **visibility**: plugins the operator serves from folders or entry points are visible to every
  tenant unless the tenant's installation row says ``enabled: false``; plugins installed from
  packages (source ``installed:...``) only to tenants with an enabled installation row;
- **call scope**: the tenant's settings, decrypted credentials (they replace the operator's
  entirely), grants (package-installed plugins only: the row's ``granted`` narrows the host's)
  and the plugin's storage for that tenant;
- **audit**: one row per call, written by a background thread so requests never wait on the
  database (``AuditWriter``).

Store ids are lowercase ``[a-z0-9_-]``; host plugin ids and configured tenant ids may be wider
(``local/My.Tool``, tenant ``Acme``), so both pass through ``store_part`` first: ids that are
already valid stay as they are, others get a sanitized form with a hash suffix, so two
different ids never share rows.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

from ..errors import StoreError
from ..host import CallScope, PluginHost, PluginInfo
from ..sdk import AuditEvent, ToolResult
from ..store import InstallationInfo, Store
from ._config import ALL_TENANTS

__all__ = [
    "INSTALLED_PREFIX",
    "TENANCY_TOPICS",
    "AuditEntry",
    "AuditWriter",
    "Tenancy",
    "TenantVisibility",
    "is_package_plugin",
    "store_plugin_id",
    "store_tenant_id",
]

log = logging.getLogger("plughub.server")

INSTALLED_PREFIX = "installed:"
#: Notification topics that change what a tenant sees or runs with.
TENANCY_TOPICS = frozenset(
    {"installations", "credentials", "settings", "grants", "tenants", "resync"}
)

_PART = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)
_BAD = re.compile(r"[^a-z0-9_-]", re.ASCII)
_MAX_CACHED = 10_000


@functools.lru_cache(maxsize=4096)  # pure, and asked several times per call
def store_part(value: str) -> str:
    """``value`` as a store id part: itself when valid, else a sanitized form + hash suffix."""
    if _PART.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:10]
    base = _BAD.sub("-", value.lower()).strip("-_")[:50] or "x"
    return f"{base}-{digest}"


def store_tenant_id(tenant_id: str) -> str:
    """The store's id of a tenant the server knows (a store key's, a configured key's, Dify's)."""
    return store_part(tenant_id)


def store_plugin_id(plugin_id: str) -> str:
    """The store's id of a host plugin (``author/name``, lowercase)."""
    author, _, name = plugin_id.partition("/")
    return f"{store_part(author)}/{store_part(name or author)}"


def is_package_plugin(info: PluginInfo) -> bool:
    """Installed from a package (visible per tenant) rather than served by the operator."""
    return info.source.startswith(INSTALLED_PREFIX)


def visible_to(info: PluginInfo, row: InstallationInfo | None) -> bool:
    """The visibility rule of the module docstring, for one plugin and the tenant's row."""
    return _visible(info.source, row)


def _visible(source: str, row: InstallationInfo | None) -> bool:
    if source.startswith(INSTALLED_PREFIX):
        return row is not None and row.enabled
    return row is None or row.enabled


class Tenancy:
    """Cached per-tenant installation rows and call scopes, read from the store.

    Thread-safe: notifications arrive on the notifier's thread. A load that raced with an
    invalidation is not cached (a generation counter), so a change is never hidden by a read
    that started before it. Entries also expire after ``ttl`` seconds, a bound on staleness
    should a notification be lost.
    """

    def __init__(self, store: Store, *, ttl: float = 30.0) -> None:
        self.store = store
        self.ttl = ttl
        self._lock = threading.Lock()
        self._gen = 0
        self._rows: dict[str, tuple[float, dict[str, InstallationInfo]]] = {}
        self._scopes: dict[tuple[str, str], tuple[float, CallScope]] = {}
        self._tenants: set[str] = set()

    # -- invalidation ------------------------------------------------------------------------

    def invalidate(self, tenant: str | None = None, plugin: str | None = None) -> None:
        """Forget what is cached for ``tenant`` (store id; None: every tenant), or for one of
        its plugins (store id)."""
        with self._lock:
            self._gen += 1
            if tenant is None:
                self._rows.clear()
                self._scopes.clear()
                self._tenants.clear()
                return
            self._rows.pop(tenant, None)
            self._tenants.discard(tenant)
            for key in [k for k in self._scopes if k[0] == tenant]:
                if plugin is None or key[1] == plugin:
                    del self._scopes[key]

    def on_message(self, message: Mapping[str, Any]) -> None:
        """A change notification (any replica's): drop what it makes stale."""
        topic = message.get("topic")
        if topic not in TENANCY_TOPICS:
            return
        tenant = message.get("tenant")
        plugin = message.get("plugin")
        if topic == "resync" or not isinstance(tenant, str):
            self.invalidate()
        else:
            self.invalidate(tenant, plugin if isinstance(plugin, str) else None)

    # -- reads -------------------------------------------------------------------------------

    def _fresh(self, at: float) -> bool:
        return time.monotonic() - at < self.ttl

    async def installations(self, tenant: str) -> dict[str, InstallationInfo]:
        """The tenant's installation rows by store plugin id (cached)."""
        with self._lock:
            hit = self._rows.get(tenant)
            gen = self._gen
        if hit is not None and self._fresh(hit[0]):
            return hit[1]
        rows = await asyncio.to_thread(self.store.tenant(tenant).list_installations)
        found = {r.plugin_id: r for r in rows}
        with self._lock:
            if gen == self._gen:
                if len(self._rows) >= _MAX_CACHED:
                    self._rows.clear()
                self._rows[tenant] = (time.monotonic(), found)
        return found

    async def visible(self, tenant: str, infos: Iterable[PluginInfo]) -> set[str]:
        """Ids of the host plugins ``tenant`` (store id) may see and call."""
        rows = await self.installations(tenant)
        return {i.id for i in infos if visible_to(i, rows.get(store_plugin_id(i.id)))}

    async def scope_of(self, tenant: str, plugin_id: str, source: str) -> CallScope:
        """The ``CallScope`` of ``tenant``'s calls to the plugin, by its host id and source
        (``PluginHost.lookup``); cached."""
        pid = store_plugin_id(plugin_id)
        key = (tenant, pid)
        with self._lock:
            hit = self._scopes.get(key)
            gen = self._gen
        if hit is not None and self._fresh(hit[0]):
            return hit[1]
        rows = await self.installations(tenant)
        row = rows.get(pid)
        view = self.store.tenant(tenant)
        credentials = await asyncio.to_thread(view.get_credentials, pid)
        scope = CallScope(
            tenant=tenant,
            settings=dict(row.settings) if row is not None and row.settings else None,
            credentials=credentials,
            grants=(list(row.granted) if row is not None else [])
            if source.startswith(INSTALLED_PREFIX)
            else None,
            storage=view.storage(pid),
        )
        with self._lock:
            if gen == self._gen:
                if len(self._scopes) >= _MAX_CACHED:
                    self._scopes.clear()
                self._scopes[key] = (time.monotonic(), scope)
        return scope

    async def ensure_tenant(self, tenant: str) -> None:
        """Create ``tenant`` (store id) if the store has no such tenant yet.

        For tenants named outside the store: configured API keys and the Dify path of an
        all-tenants key. Their calls need a row to hang storage and audit on."""
        with self._lock:
            if tenant in self._tenants:
                return

        def make() -> None:
            if self.store.get_tenant(tenant) is None:
                try:
                    self.store.create_tenant(tenant, "created for a configured key or Dify")
                except StoreError as e:
                    if e.reason != "conflict":  # another replica made it first
                        raise

        await asyncio.to_thread(make)
        with self._lock:
            self._tenants.add(tenant)


class TenantVisibility:
    """The default ``PluginVisibility``: the store's installation rows (see ``Tenancy``).

    An all-tenants key (``*``) on a route without a tenant acts as the operator and sees
    every plugin the host serves.
    """

    def __init__(
        self, host: Callable[[], PluginHost | None], tenancy: Callable[[], Tenancy | None]
    ) -> None:
        self._host = host
        self._tenancy = tenancy

    async def visible_plugins(self, tenant_id: str) -> Collection[str] | None:
        tenancy, host = self._tenancy(), self._host()
        if tenant_id == ALL_TENANTS or tenancy is None or host is None:
            return None
        return await tenancy.visible(store_tenant_id(tenant_id), host.plugins())

    async def sees(self, tenant_id: str, ref: str) -> bool:
        """Whether the tenant may see and call the plugin ``ref`` names (the one the host
        resolves ``ref`` to). The per-call check: one plugin looked up, the tenant's cached
        rows read, no ``PluginInfo`` built."""
        tenancy, host = self._tenancy(), self._host()
        if tenant_id == ALL_TENANTS or tenancy is None or host is None:
            return True
        rows = await tenancy.installations(store_tenant_id(tenant_id))
        found = host.lookup(ref)
        if found is None:
            return False
        pid, source = found
        return _visible(source, rows.get(store_plugin_id(pid)))


# -- audit -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One call to record: the event, whose it was, and the arguments to redact and keep."""

    tenant: str
    key_id: str | None
    event: AuditEvent
    arguments: Mapping[str, Any] | None
    input_schema: Mapping[str, Any] | None
    result: ToolResult | None = None
    """Measured by the writer (``event.result_bytes``), off the request's path."""


def _sized(entry: AuditEntry) -> AuditEvent:
    """The entry's event with the result's size (bytes of its JSON) filled in."""
    if entry.result is None:
        return entry.event
    try:
        size = len(orjson.dumps(entry.result.to_dict(), default=str))
    except TypeError:
        size = 0
    return replace(entry.event, result_bytes=size)


class AuditWriter:
    """Writes audit rows from one background thread, off the request path.

    ``submit`` never blocks: entries go to a bounded queue; when it is full the entry is
    dropped and counted (``plughub_audit_dropped_total``), because a slow database must not
    stall calls. The thread takes what is queued in batches; ``close`` writes what is left.
    The store redacts secret argument fields itself (``append_audit``).
    """

    _STOP = object()

    def __init__(
        self,
        store: Store,
        registry: CollectorRegistry | None = None,
        *,
        max_queue: int = 10_000,
        batch: int = 500,
        linger: float = 0.02,
    ) -> None:
        self.store = store
        self.batch = batch
        self.linger = linger
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.dropped = Counter(
            "plughub_audit_dropped",
            "Audit rows dropped because the writer's queue was full.",
            registry=registry,
        )
        self.failed = Counter(
            "plughub_audit_failed",
            "Audit rows the store refused or could not write.",
            registry=registry,
        )
        self.written = Counter("plughub_audit_written", "Audit rows written.", registry=registry)
        # Rows accepted by ``submit`` and rows the thread has handled (written or failed), in
        # order: ``flush`` waits for the second to reach the first as it was when called.
        self._submitted = 0
        self._handled = 0
        self._thread = threading.Thread(target=self._run, name="plughub-audit", daemon=True)
        self._thread.start()

    def submit(self, entry: AuditEntry) -> bool:
        """Queue one row; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped.inc()
            return False
        self._submitted += 1
        return True

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is not self._STOP:
                # Let a few more rows arrive: one transaction for many rows costs this
                # process (and its GIL, which the request path shares) far less than one each.
                time.sleep(self.linger)
            items = [first]
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = [item for item in items if item is not self._STOP]
            if entries:
                self._write(entries)
            self._handled += len(entries)
            for _ in items:
                self._queue.task_done()
            if len(entries) < len(items):
                return

    def _write(self, entries: list[AuditEntry]) -> None:
        rows = [(e.tenant, _sized(e), e.key_id, e.arguments, e.input_schema) for e in entries]
        try:
            self.written.inc(self.store.append_audit_many(rows))
            return
        except Exception:  # find the bad row(s): never let one stop the others
            pass
        for entry, row in zip(entries, rows, strict=True):
            try:
                self.written.inc(self.store.append_audit_many([row]))
            except Exception as e:
                self.failed.inc()
                log.warning(
                    "could not write the audit row of %s.%s: %s",
                    entry.event.plugin_id,
                    entry.event.tool,
                    type(e).__name__,
                )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the rows queued before this call are written (at most ``timeout`` s);
        rows queued meanwhile do not keep it waiting, so it ends under steady load too."""
        deadline = time.monotonic() + timeout
        mark = self._submitted
        while self._handled < mark:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(self._STOP, timeout=timeout)
        except queue.Full:
            log.warning("audit writer: queue still full at shutdown; rows may be lost")
            return
        self._thread.join(timeout)
