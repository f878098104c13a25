"""Package tasks: the runner every replica starts, and the package jobs it runs.

A request that changes installed packages (install, upgrade, rollback, uninstall) only queues a
task row in the store and answers 202; a :class:`TaskRunner` on some replica claims it with
``Store.claim_task`` (a conditional update, so two replicas never both get it), keeps the
lease while it works, and runs the blocking package lifecycle in a thread of its own. The
installer's phase events are written to the task row as they come (batched every
``flush_interval``), which is what ``GET /v1/tasks/{id}/events`` streams from any replica.

A replica that dies leaves its lease to expire: another replica claims the task again
(``attempts`` counts claims) and runs it from the start, which is safe because every
installer operation is crash-safe and idempotent (recovery first, the same version twice is a
no-op). A runner that loses its lease (stalled past ``lease_seconds``) stops writing to the
row; installs on a shared home also serialise on the home's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InstallError, PackageError, PlughubError, StoreError, UsageError
from ..store import Store, TaskInfo
from ._tenancy import store_plugin_id

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..packages import Installer, LocalPackage
    from ._config import ServerConfig
    from ._services import Services
    from ._state import ServerState

__all__ = [
    "PACKAGE_KINDS",
    "UPLOADS",
    "Done",
    "Emit",
    "Handler",
    "PackageJobs",
    "TaskFailed",
    "TaskRunner",
    "requested_permissions",
    "start_package_runner",
]

log = logging.getLogger("plughub.server")

PACKAGE_KINDS = ("install", "upgrade", "rollback", "uninstall")
UPLOADS = "uploads"
"""Folder of the home where uploaded packages wait for their task (the home is shared by the
replicas, so whichever claims the task can read it)."""
INPROCESS = "runtime:inprocess"

Emit = Callable[[Mapping[str, Any]], None]


@dataclass(slots=True)
class Done:
    """What a job returns: the task's ``result`` and the plugins whose installed files or
    installation rows changed (published, and refreshed in the host)."""

    result: dict[str, Any]
    changed: list[str] = field(default_factory=list)


class TaskFailed(Exception):
    """A job's expected failure: ``error`` becomes ``"<phase>: <message>"``, ``details`` the
    task's ``result``."""

    def __init__(self, phase: str, message: str, **details: Any) -> None:
        super().__init__(f"{phase}: {message}")
        self.phase = phase
        self.message = message
        self.details = {"phase": phase, **details}


Handler = Callable[[TaskInfo, Emit], Done]
"""A job: runs in a thread of its own, reports with ``emit``; raises ``TaskFailed``."""
OnSuccess = Callable[[TaskInfo, Done], Awaitable[None]]


def _run_in_thread(fn: Callable[[], Done], name: str) -> asyncio.Future[Done]:
    """``fn()`` in a daemon thread: unlike the default executor's threads, one still running
    at shutdown does not hold the process (its lease expires and another replica retries)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Done] = loop.create_future()

    def settle(value: Done | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert value is not None
            future.set_result(value)

    def target() -> None:
        try:
            value, error = fn(), None
        except BaseException as e:
            value, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _coalesce(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep every phase transition, but of a run of ``progress`` events of one phase only the
    last: uv can print hundreds of lines a second, and each event is a write."""
    out: list[dict[str, Any]] = []
    for event in batch:
        if (
            out
            and event.get("status") == "progress"
            and out[-1].get("status") == "progress"
            and out[-1].get("phase") == event.get("phase")
        ):
            out[-1] = event
        else:
            out.append(event)
    return out


class TaskRunner:
    """Claims and runs tasks of the ``handlers``' kinds for one replica.

    Args:
        store: the shared store.
        replica_id: this replica's id (the owner written on claimed tasks).
        handlers: task kind -> job.
        lease_seconds: the lease taken and renewed (every third of it) while a task runs.
        poll_interval: how often the store is asked for tasks queued on other replicas
            (:meth:`wake` makes a local queueing immediate).
        flush_interval: the longest an event waits before it is written to the task row.
        concurrency: tasks run at once by this replica.
        max_attempts: a task claimed more often than this (its replicas kept dying) fails.
        on_success: awaited after a job succeeds and before the task is marked succeeded
            (publish the change, refresh the host).
    """

    def __init__(
        self,
        store: Store,
        replica_id: str,
        handlers: Mapping[str, Handler],
        *,
        lease_seconds: float = 60.0,
        poll_interval: float = 1.0,
        flush_interval: float = 0.1,
        concurrency: int = 1,
        max_attempts: int = 3,
        on_success: OnSuccess | None = None,
    ) -> None:
        self.store = store
        self.replica_id = replica_id
        self.handlers = dict(handlers)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.flush_interval = flush_interval
        self.concurrency = max(1, concurrency)
        self.max_attempts = max_attempts
        self.on_success = on_success
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cleanups: list[Callable[[], None]] = []

    @property
    def running(self) -> list[str]:
        """Ids of the tasks this replica is running."""
        return list(self._running)

    def on_stop(self, cleanup: Callable[[], None]) -> None:
        """Call ``cleanup`` when the runner stops (e.g. a notifier's unsubscribe)."""
        self._cleanups.append(cleanup)

    def wake(self) -> None:
        """A task was queued: look for it now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        if self._loop_task is None:
            self._stopping = False
            self._loop_task = asyncio.create_task(self._loop(), name="plughub-task-runner")

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; wait up to ``timeout`` for running tasks, then abandon them (their
        leases expire and another replica takes them over)."""
        self._stopping = True
        self._wake.set()
        for cleanup in self._cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        self._cleanups.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        running = list(self._running.values())
        if running:
            _done, pending = await asyncio.wait(running, timeout=timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _loop(self) -> None:
        kinds = tuple(self.handlers)
        while not self._stopping:
            self._wake.clear()
            claimed = None
            if len(self._running) < self.concurrency:
                try:
                    claimed = await asyncio.to_thread(
                        self.store.claim_task,
                        self.replica_id,
                        lease_seconds=self.lease_seconds,
                        kinds=kinds,
                    )
                except Exception:
                    log.exception("claiming a task failed")
            if claimed is not None:
                task = asyncio.create_task(self._run(claimed), name=f"plughub-task-{claimed.id}")
                self._running[claimed.id] = task
                task.add_done_callback(functools.partial(self._finished, claimed.id))
                continue  # maybe more are waiting
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()

    def _finished(self, task_id: str, _task: object = None) -> None:
        self._running.pop(task_id, None)
        self._wake.set()  # a slot is free

    # -- one task --------------------------------------------------------------------------

    async def _run(self, task: TaskInfo) -> None:
        tenant = self.store.tenant(task.tenant_id)
        rid = self.replica_id
        lock = threading.Lock()
        pending: list[dict[str, Any]] = []
        seq = max((int(e.get("seq", 0)) for e in task.events if isinstance(e, dict)), default=0)
        lost = False

        def emit(event: Mapping[str, Any]) -> None:  # from the job's thread
            nonlocal seq
            with lock:
                seq += 1
                pending.append({**event, "seq": seq, "at": time.time()})

        def write(batch: list[dict[str, Any]]) -> None:
            nonlocal lost
            for event in _coalesce(batch):
                if lost:
                    return
                try:
                    tenant.update_task(task.id, phase=event.get("phase"), event=event, replica=rid)
                except StoreError as e:
                    if e.reason == "conflict":
                        lost = True
                        log.warning("task %s: lease lost, not reporting any more", task.id)
                    else:
                        log.warning("task %s: could not record an event: %s", task.id, e)

        async def flush() -> None:
            with lock:
                batch = pending[:]
                pending.clear()
            if batch:
                await asyncio.to_thread(write, batch)

        async def flusher() -> None:
            while True:
                await asyncio.sleep(self.flush_interval)
                await flush()

        async def renewer() -> None:
            nonlocal lost
            while not lost:
                await asyncio.sleep(self.lease_seconds / 3)
                try:
                    ok = await asyncio.to_thread(
                        tenant.renew_lease, task.id, rid, lease_seconds=self.lease_seconds
                    )
                except StoreError as e:
                    log.warning("task %s: renewing the lease failed: %s", task.id, e)
                    continue
                if not ok:
                    lost = True
                    log.warning("task %s: lease lost to another replica", task.id)

        helpers = [asyncio.create_task(flusher()), asyncio.create_task(renewer())]
        outcome: Done | BaseException
        try:
            handler = self.handlers.get(task.kind)
            if task.attempts > self.max_attempts:
                outcome = TaskFailed(
                    task.phase or "start",
                    f"given up after {task.attempts - 1} attempts: the replicas running it "
                    "stopped before it finished",
                )
            elif handler is None:
                outcome = TaskFailed("start", f"no handler for tasks of kind {task.kind!r}")
            else:
                try:
                    outcome = await _run_in_thread(
                        functools.partial(handler, task, emit), f"plughub-task-{task.id[:8]}"
                    )
                except Exception as e:
                    outcome = e
        finally:
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        await flush()
        if lost:
            return
        await self._finish(task, outcome)

    async def _finish(self, task: TaskInfo, outcome: Done | BaseException) -> None:
        tenant = self.store.tenant(task.tenant_id)
        if isinstance(outcome, Done):
            if self.on_success is not None:
                try:
                    await self.on_success(task, outcome)
                except Exception:
                    log.exception("task %s: after-success step failed", task.id)
            changes: dict[str, Any] = {"status": "succeeded", "result": outcome.result}
        else:
            if isinstance(outcome, TaskFailed):
                error, details = str(outcome), outcome.details
            else:
                log.error("task %s failed unexpectedly", task.id, exc_info=outcome)
                error = f"{task.phase or 'start'}: {type(outcome).__name__}: {outcome}"
                details = {"phase": task.phase or "start"}
            changes = {"status": "failed", "error": error, "result": details}
        try:
            await asyncio.to_thread(
                lambda: tenant.update_task(task.id, replica=self.replica_id, **changes)
            )
        except StoreError as e:
            log.warning("task %s: could not record its end: %s", task.id, e)


# ------------------------------------------------------------------------------------------
# Package jobs
# ------------------------------------------------------------------------------------------


def requested_permissions(manifest: Any) -> list[str]:
    """What installing a package asks the tenant to grant: its permission tokens, plus
    ``runtime:inprocess`` when the manifest asks to run unisolated (as the installer does)."""
    from ..host import permission_tokens

    tokens = permission_tokens(manifest)
    if "runtime" in manifest.model_fields_set and manifest.runtime == "inprocess":
        tokens.append(INPROCESS)
    return tokens


def _event(
    plugin: str | None, phase: str, status: str, message: str, fraction: float | None
) -> dict[str, Any]:
    """An event shaped like the installer's own."""
    return {
        "plugin": plugin,
        "phase": phase,
        "status": status,
        "message": message,
        "fraction": fraction,
    }


class PackageJobs:
    """The package lifecycle as task handlers, over the replica's home and store."""

    def __init__(self, config: ServerConfig, services: Services) -> None:
        self.config = config
        self.services = services

    @property
    def home(self) -> Path:
        return self.services.home

    def handlers(self) -> dict[str, Handler]:
        return {
            "install": self.install,
            "upgrade": self.install,
            "rollback": self.rollback,
            "uninstall": self.uninstall,
        }

    def installer(self) -> Installer:
        from ..packages import Installer

        return Installer(self.home, allow_unsigned=self.config.allow_unsigned)

    # -- sources ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _source(self, task: TaskInfo, inst: Installer) -> Iterator[LocalPackage | None]:
        """The package a task names, as a local file; None for an upgrade with nothing newer.

        Only what the operator allows: an upload into the home's ``uploads`` folder, a
        configured index, an ``https`` repository on a configured git host.
        """
        from ..packages import open_source

        p = task.params
        kind = p.get("source")
        if kind == "upload":
            from ..packages import LocalPackage

            name = str(p.get("upload", ""))
            path = self.home / UPLOADS / name
            if "/" in name or not name.endswith(".plughub") or not path.is_file():
                raise TaskFailed("verify", "the uploaded package is gone (was the task retried?)")
            try:
                yield LocalPackage(path, f"upload:{p.get('sha256', name)}")
            finally:
                path.unlink(missing_ok=True)
        elif kind == "index":
            location = str(p.get("index", ""))
            if location not in self.config.package_indexes:
                raise TaskFailed("verify", f"the index {location!r} is not configured here")
            with self._from_index(location, str(p["ref"]), p.get("version")) as pkg:
                yield pkg
        elif kind == "git":
            from ._packages import check_git_source

            url, ref = str(p.get("url", "")), str(p.get("ref", ""))
            check_git_source(url, ref, self.config.git_hosts)
            with open_source(f"git+{url}#{ref}") as pkg:
                yield pkg
        elif kind == "latest":  # an upgrade from the index the active version came from
            assert task.plugin_id is not None
            found = inst.newer_from_index(task.plugin_id)
            if found is None:
                yield None
                return
            spec, location = found
            pid, _, version = spec.partition("@")
            with self._from_index(location, pid, version) as pkg:
                yield pkg
        else:
            raise TaskFailed("verify", f"unknown package source {kind!r}")

    @contextlib.contextmanager
    def _from_index(self, location: str, pid: str, version: Any) -> Iterator[LocalPackage]:
        """Download the index's best match for ``pid``/``version`` (no local-path guessing:
        ``open_source`` would take an existing file or folder of that name first)."""
        import tempfile

        from ..packages import LocalPackage, load_index
        from ..packages._sources import _download

        entry = load_index(location).get(pid)
        found = entry.pick(str(version) if version else None)
        if found is None:
            raise TaskFailed("verify", f"the index has no version of {pid} matching {version!r}")
        with tempfile.TemporaryDirectory(prefix="plughub-index-") as tmp:
            dest = Path(tmp) / f"{pid.replace('/', '__')}-{found.version}.plughub"
            _download(found.url, dest, 60.0)
            yield LocalPackage(
                dest,
                f"index:{location}",
                expected_id=pid,
                expected_version=found.version,
                expected_checksum=found.checksum,
                expected_key_id=found.key_id,
            )

    # -- jobs ------------------------------------------------------------------------------

    def install(self, task: TaskInfo, emit: Emit) -> Done:
        """Install (``install``) or upgrade (``upgrade``, or an upload with ``upgrade``) a
        package for the task's tenant, then record the tenant's installation."""
        from ..packages import read_package

        tenant = self.services.store.tenant(task.tenant_id)
        inst = self.installer()
        grant = set(task.params.get("grant") or ())
        row = tenant.get_installation(task.plugin_id) if task.plugin_id else None  # store id
        if row is not None:
            grant |= set(row.granted)  # what the tenant granted before stays granted
        try:
            with self._source(task, inst) as pkg:
                if pkg is None:
                    assert task.plugin_id is not None
                    current = inst.store.current(task.plugin_id)
                    message = "nothing newer in the index"
                    emit(_event(task.plugin_id, "verify", "done", message, 1.0))
                    return Done({"id": task.plugin_id, "version": current, "changed": False})
                info = read_package(pkg.path)
                requested = requested_permissions(info.manifest)
                self._check_grants(info.id, requested, grant, emit)
                upgrade = task.kind == "upgrade" or bool(task.params.get("upgrade"))
                current = inst.store.current(info.id)
                if current is not None and current != info.version:
                    self._refuse_if_shared(task, info.id, emit)
                if upgrade and current is not None:
                    result = inst.upgrade(info.id, pkg, grant=grant, on_event=emit)
                else:
                    result = inst.install(pkg, grant=grant, on_event=emit)
        except InstallError as e:
            raise TaskFailed(
                e.phase,
                e.message,
                log_tail=e.log_tail,
                missing_permissions=list(e.missing_permissions),
            ) from None
        except PackageError as e:
            emit(_event(task.plugin_id, "verify", "failed", e.message, None))
            raise TaskFailed("verify", e.message, reason=e.reason) from None
        except (UsageError, OSError) as e:
            raise TaskFailed("verify", str(e)) from None
        tenant.set_installation(
            store_plugin_id(result.id),
            enabled=True if row is None else None,
            version=result.version,
            granted=sorted(t for t in requested if t in grant),
        )
        return Done(result.to_dict(), [result.id])

    def _refuse_if_shared(self, task: TaskInfo, pid: str, emit: Emit) -> None:
        """One version of a plugin is active for every tenant that installed it: a tenant may
        not change it under the others (their calls would run code they did not choose, with
        their credentials). Only the operator does (``plughub upgrade``/``rollback``)."""
        if store_plugin_id(pid) in self.services.store.installed_elsewhere(task.tenant_id):
            problem = (
                f"other tenants use {pid}, whose active version they share; only the operator "
                "changes it (plughub upgrade / plughub rollback on the server)"
            )
            emit(_event(pid, "verify", "failed", problem, None))
            raise TaskFailed("verify", problem, reason="plugin_shared")

    def _check_grants(self, pid: str, requested: list[str], grant: set[str], emit: Emit) -> None:
        """The tenant itself must grant every permission the package requests: the version may
        already be in the shared home, granted by another tenant."""
        problem = None
        missing = [t for t in requested if t not in grant]
        if INPROCESS in requested and not self.config.allow_inprocess:
            problem = (
                "the plugin asks to run in-process (runtime: inprocess), which this server does "
                "not allow (allow_inprocess)"
            )
            missing = [INPROCESS]
        elif missing:
            problem = "needs permissions that are not granted: " + ", ".join(missing)
        if problem is not None:
            emit(_event(pid, "verify", "failed", problem, None))
            raise TaskFailed("verify", problem, missing_permissions=missing)

    def rollback(self, task: TaskInfo, emit: Emit) -> Done:
        assert task.plugin_id is not None
        pid = task.plugin_id
        inst = self.installer()
        before = inst.store.current(pid)
        self._refuse_if_shared(task, pid, emit)
        emit(_event(pid, "rollback", "start", "", 0.0))
        try:
            version = inst.rollback(pid, task.params.get("to") or None)
        except (PlughubError, OSError) as e:
            emit(_event(pid, "rollback", "failed", str(e), None))
            raise TaskFailed("rollback", str(e)) from None
        self.services.store.tenant(task.tenant_id).set_installation(pid, version=version)
        emit(_event(pid, "rollback", "done", f"{pid} {version} is active", 1.0))
        return Done({"id": pid, "version": version, "previous": before}, [pid])

    def uninstall(self, task: TaskInfo, emit: Emit) -> Done:
        """Remove the tenant's installation (and its credentials and storage); remove the
        package from the shared home only when no tenant has it any more."""
        assert task.plugin_id is not None
        pid = task.plugin_id
        store = self.services.store
        tenant = store.tenant(task.tenant_id)
        force = bool(task.params.get("force"))
        inst = self.installer()
        emit(_event(pid, "uninstall", "start", "", 0.0))
        mine = {i.plugin_id for i in tenant.list_installations()}
        users = [d for d in inst.dependents(pid) if d in mine]
        if users and not force:
            message = (
                f"{', '.join(users)} depend(s) on {pid}; uninstall them first, or force it "
                "(they will fail to load)"
            )
            emit(_event(pid, "uninstall", "failed", message, None))
            raise TaskFailed("uninstall", message, dependents=users)
        removed_row = tenant.delete_installation(pid, purge=True)
        elsewhere = self.services.store.installed_elsewhere(task.tenant_id)
        files = "kept: other tenants have it installed"
        removed: list[str] = []
        if pid not in elsewhere and inst.store.current(pid) is not None:
            blocking = [d for d in inst.dependents(pid) if d in elsewhere]
            if blocking:
                files = f"kept: {', '.join(blocking)} (installed by other tenants) depend on it"
            else:
                try:
                    removed = inst.uninstall(pid, force=True)
                    files = "removed"
                except (PlughubError, OSError) as e:
                    files = f"kept: {e}"
        elif pid not in elsewhere:
            files = "not installed"
        emit(_event(pid, "uninstall", "done", f"package files {files}", 1.0))
        return Done(
            {"id": pid, "installation_removed": removed_row, "files": files, "versions": removed},
            [pid],
        )



async def start_package_runner(app: FastAPI, state: ServerState) -> TaskRunner:
    """Start this replica's runner of package tasks (``app.state.package_runner``).

    After a task succeeds, this replica's caches are dropped and its host refreshed *before*
    the task is marked succeeded (a client that sees ``succeeded`` can call the plugin here at
    once); then ``installations`` is published, on which the other replicas refresh theirs
    (``HostSync``).
    """
    services = state.require_services()
    config = state.config

    async def on_success(task: TaskInfo, done: Done) -> None:
        host = state.host
        for pid in done.changed:
            state.invalidate(task.tenant_id, pid)
        if host is not None:
            try:
                await asyncio.to_thread(host.refresh)
            except Exception:
                log.exception("refreshing the installed plugins failed")
        for pid in done.changed:
            await state.publish("installations", task.tenant_id, plugin=pid)

    runner = TaskRunner(
        services.store,
        services.replica_id,
        PackageJobs(config, services).handlers(),
        lease_seconds=config.task_lease_seconds,
        on_success=on_success,
    )
    await runner.start()
    app.state.package_runner = runner
    return runner
