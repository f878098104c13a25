"""Install, upgrade, roll back and remove plugin packages under a plughub home.

An install is a task with six phases, each reported to ``on_event`` as it happens::

    verify -> unpack -> resolve -> environment -> import-check -> activate

* **verify** checks the package (structure, checksum, signature against the trust store), what
  its source promised (id, version, index checksum and key), whether this install makes sense
  (not installed yet; for an upgrade: newer and not pinned), and that every permission it
  requests is granted (stored grant, ``grant`` or ``yes``).
* **unpack** extracts it into ``plugins/<author>__<name>/.staging-<rand>/``.
* **resolve** checks its plugin dependencies against the installed plugins (missing, version
  ranges, cycles), that it does not break an installed plugin that depends on it, and its
  Python and plughub requirements.
* **environment** builds its Python environment with uv (offline from the package's bundled
  ``wheels/``); uv's output lines are streamed as progress.
* **import-check** loads the staged plugin in a worker process, through a host that sees it
  exactly as installed (same discovery, grants, environment) and lists its tools; an upgrade
  also runs the manifest's ``examples``.
* **activate** renames the staged folder to ``versions/<version>`` and flips ``current`` to it
  (the commit point), then records it in ``state.json``.

Any failure removes the staging folder and the new environment and raises
:class:`~plughub.errors.InstallError` naming the phase; the previous version stays active. A
process killed anywhere is repaired by :func:`~plughub.packages.recover` on the next start (every
``Installer`` operation runs it first). Event dicts::

    {"plugin": id, "phase": "environment", "status": "start"|"progress"|"done"|"failed",
     "message": str, "fraction": float | None}
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier

from ..errors import EnvBuildError, InstallError, PackageError, PlughubError, UsageError
from ..host import permission_tokens
from ..host._installed import CURRENT, INSTALL_RECORD, STATE, VERSIONS, folder_name
from ..manifest import MANIFEST_FILENAME, PluginManifest, load_manifest, semver_to_version
from ..runtime.worker import WorkerConfig
from ..runtime.worker._envs import EnvBuilder, EnvSpec
from ._format import PackageInfo, extract_package, read_package, verify_package
from ._keys import TrustStore
from ._keys import home as default_home
from ._lifecycle import Lifecycle, satisfies
from ._sources import LocalPackage, load_index, open_source, sha256_file
from ._store import PluginState, Store, VersionRecord, atomic_write_json, now, recover

__all__ = ["PHASES", "InstallPlan", "InstallResult", "Installer"]

PHASES = ("verify", "unpack", "resolve", "environment", "import-check", "activate")
Event = dict[str, Any]
OnEvent = Callable[[Event], None]
_LOG_TAIL = 20
_DISCOVERY_ENV = ("PLUGHUB_PLUGINS_PATH", "PLUGHUB_LOAD_PLUGINS", "PLUGHUB_DENY_PLUGINS")


@dataclass(frozen=True, slots=True)
class InstallPlan:
    """What installing a package would ask for; nothing verified or changed yet."""

    id: str
    version: str
    current: str | None
    requested: tuple[str, ...]
    granted: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """Requested permissions not granted yet: what the operator must approve."""
        return tuple(t for t in self.requested if t not in self.granted)


@dataclass(slots=True)
class InstallResult:
    """The outcome of an install or upgrade."""

    id: str
    version: str
    previous: str | None
    source: str
    changed: bool
    """False when that exact version was already active (nothing done)."""
    granted: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


class _Task:
    """One pipeline run: the current phase, events, and what to undo on failure."""

    def __init__(self, plugin_id: str, on_event: OnEvent | None) -> None:
        self.plugin_id = plugin_id
        self.on_event = on_event
        self.phase = PHASES[0]
        self.staging: Path | None = None
        self.state: PluginState | None = None
        self.committed = False  # once current points at the new version, there is no undo

    def emit(self, status: str, message: str = "", fraction: float | None = None) -> None:
        if self.on_event is not None:
            self.on_event(
                {
                    "plugin": self.plugin_id,
                    "phase": self.phase,
                    "status": status,
                    "message": message,
                    "fraction": fraction,
                }
            )

    def start(self, phase: str, message: str = "") -> None:
        self.phase = phase
        self.emit("start", message, 0.0)

    def done(self, message: str = "") -> None:
        self.emit("done", message, 1.0)

    def fail(self, message: str, log_tail: str = "", missing: tuple[str, ...] = ()) -> InstallError:
        return InstallError(self.plugin_id, self.phase, message, log_tail, missing)


def _fsync_dir(folder: str | Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (durability before the commit point)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(folder)


def _tail(path: Path, start: int) -> str:
    """The last lines written to ``path`` after byte offset ``start``."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-_LOG_TAIL:])


@contextlib.contextmanager
def _isolated_discovery() -> Iterator[None]:
    """Hide the variables that add or hide plugins while a check host is built."""
    saved = {n: os.environ.pop(n) for n in _DISCOVERY_ENV if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class Installer(Lifecycle):
    """Installs and manages plugin packages under one plughub home.

    Args:
        home: the data folder (default ``plughub.packages.home()``: ``PLUGHUB_HOME`` or the
            platform's user data dir).
        trust: the keys whose signatures are accepted (default ``TrustStore(home / "trust")``).
        allow_unsigned: accept unsigned packages (needed for folder and git sources).
        allow_untrusted: accept packages signed by keys not in the trust store (unverified).
        offline: never let uv reach an index (packages with bundled wheels are always offline).
        uv: the uv binary (default: found like the worker runtime finds it).
        cache_dir: uv's cache (default ``home / "uv-cache"``).
        workers: worker settings for the import check (default ``WorkerConfig()``).
        index: default index for sources given as ``author/name[@version]``.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        trust: TrustStore | None = None,
        *,
        allow_unsigned: bool = False,
        allow_untrusted: bool = False,
        offline: bool = False,
        uv: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        workers: WorkerConfig | None = None,
        index: str | None = None,
    ) -> None:
        self.home = Path(home).absolute() if home is not None else default_home().absolute()
        self.trust = trust if trust is not None else TrustStore(self.home / "trust")
        self.allow_unsigned = allow_unsigned
        self.allow_untrusted = allow_untrusted
        self.store = Store(self.home)
        self.envs = EnvBuilder(
            self.home / "envs",
            uv=uv,
            cache_dir=Path(cache_dir) if cache_dir is not None else None,
            offline=offline,
        )
        self.workers = workers
        self.index = index

    # -- reading ---------------------------------------------------------------------------

    def state(self, plugin_id: str) -> PluginState:
        """The plugin's ``state.json`` (an empty state if it is not installed)."""
        return self.store.state(plugin_id)

    def installed(self) -> list[PluginState]:
        """The state of every installed plugin (as on disk; run :meth:`recover` for repairs)."""
        return [self.store.state(pid) for pid in self.store.ids()]

    def plan(self, package: LocalPackage | str | os.PathLike[str]) -> InstallPlan:
        """What installing ``package`` would request (read, not verified; nothing changes)."""
        path = package.path if isinstance(package, LocalPackage) else Path(package)
        info = read_package(path)
        state = self.store.state(info.id)
        return InstallPlan(
            info.id,
            info.version,
            self.store.current(info.id),
            tuple(permission_tokens(info.manifest)),
            tuple(state.granted),
        )

    def recover(self) -> list[str]:
        """Repair what a killed install left behind (see :func:`plughub.packages.recover`)."""
        with self.store.locked():
            return recover(self.home)

    # -- install / upgrade -----------------------------------------------------------------

    def install(
        self,
        source: LocalPackage | str | os.PathLike[str],
        *,
        grant: set[str] | frozenset[str] | None = None,
        yes: bool = False,
        on_event: OnEvent | None = None,
        run_examples: bool = False,
    ) -> InstallResult:
        """Install a plugin that is not installed yet (a no-op if that version is active).

        ``source`` is a :class:`LocalPackage` or a source spec (package file, plugin folder,
        ``git+URL#REF``, ``author/name[@version]`` with an index). ``grant`` approves requested
        permission tokens; ``yes`` approves all. ``run_examples`` also runs the manifest's
        examples in the import check.
        """
        return self._with_source(
            source, "install", None, grant, yes, on_event, run_examples=run_examples
        )

    def upgrade(
        self,
        plugin_id: str,
        source: LocalPackage | str | os.PathLike[str] | None = None,
        *,
        grant: set[str] | frozenset[str] | None = None,
        yes: bool = False,
        on_event: OnEvent | None = None,
        run_examples: bool = True,
    ) -> InstallResult:
        """Replace the active version with a newer one; the old one stays installed.

        Without ``source``, the newest version from the index the active version came from.
        If the new version fails its import check or its examples, the previous version stays
        active (nothing was switched). Pinned plugins are refused. A no-op (``changed`` False)
        when the index has nothing newer.
        """
        state = self.store.state(plugin_id)
        current = self.store.current(plugin_id)
        task = _Task(plugin_id, on_event)
        refusal = None
        if current is None:
            refusal = f"{plugin_id} is not installed (plughub install)"
        elif state.pinned is not None:
            refusal = f"{plugin_id} is pinned at {state.pinned}; unpin it to upgrade"
        if refusal is not None:
            task.emit("failed", refusal)
            raise task.fail(refusal)
        assert current is not None
        if source is None:
            found = self.newer_from_index(plugin_id)
            if found is None:
                return InstallResult(plugin_id, current, current, state.source or "", False)
            spec, location = found
            with open_source(spec, index=location) as pkg:
                return self._run(pkg, "upgrade", plugin_id, grant, yes, on_event, run_examples)
        return self._with_source(source, "upgrade", plugin_id, grant, yes, on_event, run_examples)

    def newer_from_index(self, plugin_id: str) -> tuple[str, str] | None:
        """``("author/name@VERSION", index)`` for the newest version above the active one in
        the index the active version came from; None if there is none.

        Raises :class:`~plughub.errors.UsageError` if the plugin is not installed or its active
        version did not come from an index.
        """
        state = self.store.state(plugin_id)
        current = self.store.current(plugin_id)
        if current is None:
            raise UsageError(f"{plugin_id} is not installed")
        origin = state.versions.get(current)
        where = origin.source if origin is not None else ""
        if not where.startswith("index:"):
            raise UsageError(
                f"{plugin_id} {current} came from {where or 'an unknown source'}, not an index; "
                "give the package, folder or git source to upgrade from"
            )
        location = where.removeprefix("index:")
        newer = load_index(location).get(plugin_id).pick(f">{current}")
        return None if newer is None else (f"{plugin_id}@{newer.version}", location)

    def _with_source(
        self,
        source: LocalPackage | str | os.PathLike[str],
        mode: str,
        plugin_id: str | None,
        grant: set[str] | frozenset[str] | None,
        yes: bool,
        on_event: OnEvent | None,
        run_examples: bool,
    ) -> InstallResult:
        if isinstance(source, LocalPackage):
            return self._run(source, mode, plugin_id, grant, yes, on_event, run_examples)
        with open_source(source, index=self.index) as pkg:
            return self._run(pkg, mode, plugin_id, grant, yes, on_event, run_examples)

    def _run(
        self,
        pkg: LocalPackage,
        mode: str,
        plugin_id: str | None,
        grant: set[str] | frozenset[str] | None,
        yes: bool,
        on_event: OnEvent | None,
        run_examples: bool,
    ) -> InstallResult:
        task = _Task(plugin_id or pkg.expected_id or str(pkg.path), on_event)
        with self.store.locked():  # held until the undo of a failure is done too
            try:
                recover(self.home)
                return self._pipeline(task, pkg, mode, plugin_id, grant, yes, run_examples)
            except BaseException as exc:
                if not task.committed:
                    self._undo(task)
                if isinstance(exc, InstallError):
                    task.emit("failed", exc.message)
                    raise
                if isinstance(exc, Exception):
                    error = task.fail(f"{type(exc).__name__}: {exc}")
                    task.emit("failed", error.message)
                    raise error from exc
                raise

    def _pipeline(
        self,
        task: _Task,
        pkg: LocalPackage,
        mode: str,
        plugin_id: str | None,
        grant: set[str] | frozenset[str] | None,
        yes: bool,
        run_examples: bool,
    ) -> InstallResult:
        started = time.monotonic()
        task.start("verify", f"checking {pkg.source}")
        info = self._verify(task, pkg, mode, plugin_id)
        task.plugin_id = info.id
        state = task.state = self.store.state(info.id)
        previous = self.store.current(info.id)
        if previous == info.version:
            task.done(f"{info.id} {info.version} is already installed")
            return InstallResult(
                info.id,
                info.version,
                previous,
                pkg.source,
                changed=False,
                granted=sorted(state.granted),
                duration=time.monotonic() - started,
            )
        granted = self._check_grants(task, info, state, grant, yes)
        task.done(self._verified_message(info, pkg))

        task.start("unpack")
        staging = task.staging = self.store.new_staging(info.id)
        code = staging / "code"
        try:
            extract_package(pkg.path, code, expected_checksum=info.checksum)
        except PackageError as e:
            raise task.fail(e.message) from None
        task.done(f"{len(info.files)} files")

        task.start("resolve")
        self._resolve(task, info.manifest)
        task.done(
            ", ".join(f"{d} {s}".strip() for d, s in info.manifest.dependencies.items())
            or "no plugin dependencies"
        )

        task.start("environment")
        self._environment(task, info, code)

        task.start("import-check")
        tools = self._import_check(task, info, code, staging, granted, run_examples)
        task.done(f"{len(tools)} tool(s): {', '.join(tools)}")

        task.start("activate")
        record = VersionRecord(
            version=info.version,
            source=pkg.source,
            checksum=info.checksum,
            key_id=info.key_id,
            installed_at=now(),
            granted=sorted(granted),
            requirements=list(info.manifest.python.requirements),
        )
        self._activate(task, info, code, record, state, previous, mode)
        shutil.rmtree(staging, ignore_errors=True)
        task.staging = None
        task.done(
            f"{info.id} {info.version} is active" + (f" (was {previous})" if previous else "")
        )
        return InstallResult(
            info.id,
            info.version,
            previous,
            pkg.source,
            changed=True,
            granted=sorted(granted),
            tools=tools,
            duration=time.monotonic() - started,
        )

    def _undo(self, task: _Task) -> None:
        """Remove what a failed install wrote (the caller holds the lock); the active version,
        if any, is untouched."""
        if task.staging is not None:
            shutil.rmtree(task.staging, ignore_errors=True)
        plugin_id = task.plugin_id
        if "/" not in plugin_id:  # failed before the package was read: nothing written
            return
        if self.store.current(plugin_id) is None:
            self.store.remove_plugin_dir(plugin_id)
            self.store.remove_envs(plugin_id)
        elif task.state is not None:
            self.store.remove_envs(plugin_id, keep=set(task.state.versions))

    # -- phases ----------------------------------------------------------------------------

    def _verify(
        self, task: _Task, pkg: LocalPackage, mode: str, plugin_id: str | None
    ) -> PackageInfo:
        try:
            info = verify_package(
                pkg.path,
                self.trust,
                allow_unsigned=self.allow_unsigned,
                allow_untrusted=self.allow_untrusted,
            )
        except PackageError as e:
            hint = ""
            if e.reason == "unsigned" and pkg.built_locally:
                hint = (
                    " (folder and git sources are packaged here, unsigned: allow unsigned "
                    "packages, e.g. --allow-unsigned)"
                )
            elif e.reason == "unsigned":
                hint = " (allow unsigned packages, e.g. --allow-unsigned, to install it anyway)"
            elif e.reason == "untrusted_key":
                hint = " (trust the publisher's key: plughub keys trust)"
            raise task.fail(f"{e.message}{hint}") from None
        except (PlughubError, OSError) as e:
            raise task.fail(str(e)) from None
        task.plugin_id = info.id
        if "__" in info.id.split("/", 1)[0]:
            raise task.fail("an author containing '__' cannot name its folder unambiguously")
        recorded = self.store.state(info.id).id
        if recorded != info.id:  # another id maps to the same folder
            raise task.fail(f"its folder already belongs to {recorded}")
        for what, want, got in (
            ("id", plugin_id, info.id),
            ("id", pkg.expected_id, info.id),
            ("version", pkg.expected_version, info.version),
        ):
            if want is not None and want != got:
                raise task.fail(f"the package is {got}, expected {what} {want}")
        if pkg.expected_checksum is not None and pkg.expected_checksum not in (
            info.checksum,
            sha256_file(pkg.path),
        ):
            raise task.fail(
                f"checksum {info.checksum} does not match the index's {pkg.expected_checksum}"
            )
        if pkg.expected_key_id is not None and info.key_id != pkg.expected_key_id:
            raise task.fail(
                f"signed by key {info.key_id or 'none'}, the index says {pkg.expected_key_id}"
            )
        current = self.store.current(info.id)
        if mode == "install" and current is not None and current != info.version:
            raise task.fail(
                f"{info.id} {current} is installed; use upgrade (or rollback) to change versions"
            )
        state = self.store.state(info.id)
        if mode == "upgrade" and current is None:
            raise task.fail(f"{info.id} is not installed (plughub install)")
        if mode == "upgrade" and state.pinned is not None:
            raise task.fail(f"{info.id} is pinned at {state.pinned}; unpin it to upgrade")
        if (
            mode == "upgrade"
            and current is not None
            and semver_to_version(info.version) < semver_to_version(current)
        ):
            raise task.fail(f"{info.version} is not newer than the active {current} (use rollback)")
        rec = state.versions.get(info.version)
        if rec is not None and rec.checksum not in (None, info.checksum):
            raise task.fail(
                f"{info.id} {info.version} is already installed with other contents "
                f"({rec.checksum}); versions are immutable: bump the version"
            )
        return info

    @staticmethod
    def _verified_message(info: PackageInfo, pkg: LocalPackage) -> str:
        signer = f"signed by {info.key_id}" if info.key_id else "unsigned"
        perms = ", ".join(permission_tokens(info.manifest)) or "none"
        return f"{info.id} {info.version}, {signer}; permissions: {perms}"

    def _check_grants(
        self,
        task: _Task,
        info: PackageInfo,
        state: PluginState,
        grant: set[str] | frozenset[str] | None,
        yes: bool,
    ) -> list[str]:
        requested = permission_tokens(info.manifest)
        m = info.manifest
        if "runtime" in m.model_fields_set and m.runtime == "inprocess":
            # Running inside the host, unisolated, is itself a permission the operator grants.
            requested.append("runtime:inprocess")
        stored = set(state.granted)
        approved = set(grant or ())
        missing = [t for t in requested if t not in stored]
        if not yes:
            missing_now = [t for t in missing if t not in approved and "*" not in approved]
            if missing_now:
                raise task.fail(
                    "needs permissions that are not granted: "
                    + ", ".join(missing_now)
                    + " (grant them, or approve all the package requests)",
                    missing=tuple(missing_now),
                )
        return sorted(stored | set(missing))

    def _resolve(self, task: _Task, manifest: PluginManifest) -> None:
        from ..host._records import incompatibility

        problem = incompatibility(manifest)
        if problem is not None:
            raise task.fail(problem)
        installed = self._installed_manifests()
        for dep_id, spec in manifest.dependencies.items():
            have = installed.get(dep_id)
            if have is None:
                raise task.fail(
                    f"depends on {dep_id} {spec or ''}".rstrip() + ", which is not installed"
                )
            try:
                ok = satisfies(have[0], spec or "")
            except (InvalidSpecifier, ValueError) as e:
                raise task.fail(f"bad dependency {dep_id} {spec!r}: {e}") from None
            if not ok:
                raise task.fail(f"depends on {dep_id} {spec}, but {have[0]} is installed")
        for other, (_v, m) in installed.items():
            needs = m.dependencies.get(manifest.id)
            if other != manifest.id and needs and not satisfies(manifest.version, needs):
                raise task.fail(
                    f"{other} needs {manifest.id} {needs}; {manifest.version} would break it"
                )
        # cycles: does any dependency lead back here?
        graph = {pid: list(m.dependencies) for pid, (_v, m) in installed.items()}
        graph[manifest.id] = list(manifest.dependencies)
        path = [manifest.id]

        def walk(node: str, seen: set[str]) -> None:
            for nxt in graph.get(node, []):
                if nxt == manifest.id:
                    raise task.fail("dependency cycle: " + " -> ".join([*path, nxt]))
                if nxt not in seen:
                    seen.add(nxt)
                    path.append(nxt)
                    walk(nxt, seen)
                    path.pop()

        walk(manifest.id, set())

    def _environment(self, task: _Task, info: PackageInfo, code: Path) -> None:
        reqs = tuple(info.manifest.python.requirements)
        if not reqs:
            task.done("no Python requirements: the host's environment")
            return
        wheels = code / "wheels"
        spec = EnvSpec(info.id, info.version, reqs, str(wheels) if wheels.is_dir() else None)
        lines = 0

        def output(line: str) -> None:
            nonlocal lines
            lines += 1
            if line.strip():
                task.emit("progress", line.strip(), None)

        try:
            env = self.envs.ensure(spec, on_output=output)
        except EnvBuildError as e:
            raise task.fail(f"{e.message} [{e.phase}]", e.log_tail) from None
        what = "built" if env.created else "reused"
        where = "bundled wheels, offline" if spec.wheels_dir else "an index"
        task.done(f"{what} {env.path.name} ({len(reqs)} requirement(s) from {where})")

    def _check_home(self, info: PackageInfo, code: Path, staging: Path, granted: list[str]) -> Path:
        """A home that holds the staged version and its installed dependencies, as installed."""
        check = staging / "check-home"
        todo = list(info.manifest.dependencies)
        seen: set[str] = set()
        entries: list[tuple[str, str, Path, dict[str, Any]]] = [
            (
                info.id,
                info.version,
                code,
                {"id": info.id, "enabled": True, "granted": granted, "runtime": "worker"},
            )
        ]
        while todo:
            dep = todo.pop()
            version = self.store.current(dep)
            if dep in seen or version is None:
                continue
            seen.add(dep)
            folder = self.store.version_dir(dep, version)
            entries.append((dep, version, folder, self.store.state(dep).to_dict()))
            with contextlib.suppress(PlughubError, OSError):
                todo.extend(load_manifest(folder / MANIFEST_FILENAME).dependencies)
        for pid, version, path, state_data in entries:
            folder = check / "plugins" / folder_name(pid)
            (folder / VERSIONS).mkdir(parents=True)
            os.symlink(path, folder / VERSIONS / version)
            os.symlink(f"{VERSIONS}/{version}", folder / CURRENT)
            atomic_write_json(
                folder / STATE, {**state_data, "versions": {version: {"source": "staging"}}}
            )
        return check

    def _import_check(
        self,
        task: _Task,
        info: PackageInfo,
        code: Path,
        staging: Path,
        granted: list[str],
        run_examples: bool,
    ) -> list[str]:
        from ..host import PluginHost

        check_home = self._check_home(info, code, staging, granted)
        log_file = self.home / "logs" / f"{folder_name(info.id)}.log"
        try:
            log_start = log_file.stat().st_size
        except OSError:
            log_start = 0
        task.emit("progress", "starting the plugin in a worker", 0.1)
        with _isolated_discovery():
            host = PluginHost(
                entry_points=False,
                allow=["*"],
                home=check_home,
                data_dir=self.home,
                workers=self.workers,
            )
        problem, extra, tools = None, "", []
        try:
            plugin = host.plugin(info.id)
            if plugin.status != "loaded":
                # the worker's crash message ends with its last log lines: keep them apart
                error, _, extra = (plugin.error or plugin.status).partition("; last log lines:")
                problem = f"the plugin does not load: {error}"
            else:
                tools = list(plugin.tools or [])
            if problem is None and run_examples and info.manifest.examples:
                from ..testing import PluginHarness

                task.emit("progress", f"running {len(info.manifest.examples)} example(s)", 0.5)
                outcomes = PluginHarness(host, info.id, info.manifest).run_examples()
                failed = [o.summary for o in outcomes if not o.passed]
                if failed:
                    problem = f"{len(failed)} of {len(outcomes)} example(s) failed: " + "; ".join(
                        failed
                    )
        finally:
            host.close()  # also flushes the worker's log
        if problem is not None:
            raise task.fail(problem, _tail(log_file, log_start) or extra.strip("\n"))
        return tools

    def _activate(
        self,
        task: _Task,
        info: PackageInfo,
        code: Path,
        record: VersionRecord,
        state: PluginState,
        previous: str | None,
        mode: str,
    ) -> None:
        atomic_write_json(code / INSTALL_RECORD, record.to_dict())
        _fsync_tree(code)
        final = self.store.version_dir(info.id, info.version)
        final.parent.mkdir(exist_ok=True)
        if final.exists():  # that version is installed (inactive) with the same contents
            task.emit("progress", f"reusing versions/{info.version}", 0.33)
        else:
            os.rename(code, final)
            _fsync_dir(final.parent)
            task.emit("progress", f"unpacked into versions/{info.version}", 0.33)
        self.store.switch(info.id, info.version)  # the commit point
        task.committed = True
        task.emit("progress", f"current -> versions/{info.version}", 0.66)
        state.id = info.id
        state.versions[info.version] = state.versions.get(info.version) or record
        state.current = info.version
        state.granted = list(record.granted)
        state.note(mode, version=info.version, previous=previous, source=record.source)
        try:
            self.store.write_state(state)
        except BaseException:
            # Keep "a failure leaves the previous version active": undo the commit.
            with contextlib.suppress(OSError):
                if previous is not None:
                    self.store.switch(info.id, previous)
                else:
                    self.store.deactivate(info.id)
                task.committed = False  # versions/<new> is now garbage: the next recover drops it
            raise
