"""Installed plugins on disk: state files, version folders, the ``current`` pointer, recovery.

Everything lives under one home (``plughub.packages.home()``)::

    <home>/plugins/<author>__<name>/
        versions/<version>/             unpacked package, immutable once activated
            .plughub-install.json       this version's install record (source, checksum, grants)
        current -> versions/<version>   the active version
        state.json                      {id, current, versions, enabled, pinned, granted, history}
        .staging-<rand>/                an install in progress (removed on failure or recovery)
    <home>/envs/                        per-version Python environments (``EnvBuilder`` root)
    <home>/uv-cache/                    uv's cache, shared by every environment
    <home>/trust/                       trusted signing keys (``TrustStore``)
    <home>/.lock                        held by whoever changes anything under ``plugins/``

**Crash safety.** Every file is written to a temporary name, fsynced and renamed over the old
one; folders are renamed into place complete. The one commit point of an install, upgrade,
rollback or uninstall is the ``current`` symlink: a new symlink ``current.tmp-<rand>`` is
renamed over ``current`` (atomic on POSIX), or ``current`` is unlinked (uninstall). What was
written before it is invisible until then; what is written after it (``state.json``) can be
rebuilt from the symlink and the version's install record. :func:`recover` does exactly that,
so after a SIGKILL at any instant a plugin is either fully at its old version or fully at the
new one (or absent / present, for a fresh install or an uninstall).

POSIX only (symlinks, ``fcntl.flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..host._installed import (
    CURRENT,
    INSTALL_RECORD,
    PLUGINS,
    STATE,
    VERSIONS,
    current_version,
    folder_name,
    read_json,
)

__all__ = [
    "PluginState",
    "Store",
    "VersionRecord",
    "atomic_write_json",
    "now",
    "recover",
]

log = logging.getLogger("plughub.packages")

STAGING_PREFIX = ".staging-"
CURRENT_TMP_PREFIX = "current.tmp-"
DELETED_PREFIX = ".del-"
_HISTORY_MAX = 100
_ENV_DIR_RE = r"{version}-[0-9a-f]{{12}}"


def now() -> str:
    """UTC time, ISO 8601 to the second (what the state files record)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path``: temp file, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def remove_tree(path: Path) -> None:
    """Delete a folder so it never appears half-deleted under its own name."""
    aside = path.with_name(f"{DELETED_PREFIX}{path.name}-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


@dataclass(slots=True)
class VersionRecord:
    """How one installed version got here."""

    version: str
    source: str
    checksum: str | None = None
    key_id: str | None = None
    installed_at: str = ""
    granted: list[str] = field(default_factory=list)
    """The plugin's whole grant once this version was installed (for recovery)."""
    requirements: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "checksum": self.checksum,
            "key_id": self.key_id,
            "installed_at": self.installed_at,
            "granted": list(self.granted),
            "requirements": list(self.requirements),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], version: str) -> VersionRecord:
        granted = data.get("granted")
        reqs = data.get("requirements")
        return cls(
            version=str(data.get("version") or version),
            source=str(data.get("source") or "unknown"),
            checksum=data.get("checksum") if isinstance(data.get("checksum"), str) else None,
            key_id=data.get("key_id") if isinstance(data.get("key_id"), str) else None,
            installed_at=str(data.get("installed_at") or ""),
            granted=[str(g) for g in granted] if isinstance(granted, list) else [],
            requirements=[str(r) for r in reqs] if isinstance(reqs, list) else [],
        )


@dataclass(slots=True)
class PluginState:
    """``state.json`` of one plugin."""

    id: str
    current: str | None = None
    versions: dict[str, VersionRecord] = field(default_factory=dict)
    enabled: bool = True
    pinned: str | None = None
    granted: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    runtime: str | None = None

    @property
    def source(self) -> str | None:
        """Where the active version came from."""
        rec = self.versions.get(self.current) if self.current else None
        return rec.source if rec is not None else None

    def note(self, action: str, **data: Any) -> None:
        """Append to the history (bounded)."""
        self.history.append({"at": now(), "action": action, **data})
        del self.history[:-_HISTORY_MAX]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": 1,
            "id": self.id,
            "current": self.current,
            "source": self.source,
            "versions": {v: r.to_dict() for v, r in self.versions.items()},
            "enabled": self.enabled,
            "pinned": self.pinned,
            "granted": sorted(self.granted),
            "history": self.history,
        }
        if self.runtime is not None:
            out["runtime"] = self.runtime
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], plugin_id: str) -> PluginState:
        versions = data.get("versions")
        granted = data.get("granted")
        history = data.get("history")
        pinned = data.get("pinned")
        runtime = data.get("runtime")
        return cls(
            id=str(data.get("id") or plugin_id),
            current=data.get("current") if isinstance(data.get("current"), str) else None,
            versions={
                str(v): VersionRecord.from_dict(r, str(v))
                for v, r in (versions.items() if isinstance(versions, dict) else [])
                if isinstance(r, dict)
            },
            enabled=bool(data.get("enabled", True)),
            pinned=pinned if isinstance(pinned, str) else None,
            granted=[str(g) for g in granted] if isinstance(granted, list) else [],
            history=[h for h in history if isinstance(h, dict)]
            if isinstance(history, list)
            else [],
            runtime=runtime if isinstance(runtime, str) else None,
        )


class Store:
    """The ``plugins/`` tree of one home: read and change it, one writer at a time."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home).absolute()
        self.plugins = self.home / PLUGINS
        self.envs = self.home / "envs"

    # -- paths -----------------------------------------------------------------------------

    def folder(self, plugin_id: str) -> Path:
        return self.plugins / folder_name(plugin_id)

    def version_dir(self, plugin_id: str, version: str) -> Path:
        return self.folder(plugin_id) / VERSIONS / version

    # -- locking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the home's writer lock (an ``flock``, released by the kernel if we die)."""
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """Ids of every plugin with an active version."""
        try:
            folders = sorted(p for p in self.plugins.iterdir() if not p.name.startswith("."))
        except OSError:
            return []
        out = []
        for folder in folders:
            if current_version(folder) is not None:
                state = read_json(folder / STATE) or {}
                out.append(str(state.get("id") or folder.name.replace("__", "/", 1)))
        return out

    def current(self, plugin_id: str) -> str | None:
        """The active version (from the ``current`` symlink), or None if not installed."""
        return current_version(self.folder(plugin_id))

    def state(self, plugin_id: str) -> PluginState:
        """The plugin's state (an empty one if it is not installed)."""
        data = read_json(self.folder(plugin_id) / STATE)
        return PluginState.from_dict(data or {}, plugin_id)

    def record(self, plugin_id: str, version: str) -> VersionRecord | None:
        """A version's own install record (inside its folder)."""
        data = read_json(self.version_dir(plugin_id, version) / INSTALL_RECORD)
        return VersionRecord.from_dict(data, version) if data is not None else None

    # -- writing ---------------------------------------------------------------------------

    def write_state(self, state: PluginState) -> None:
        folder = self.folder(state.id)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / STATE, state.to_dict())

    def new_staging(self, plugin_id: str) -> Path:
        folder = self.folder(plugin_id)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
        staging.mkdir()
        return staging

    def switch(self, plugin_id: str, version: str) -> None:
        """Point ``current`` at ``versions/<version>`` atomically (the commit point)."""
        folder = self.folder(plugin_id)
        if not (folder / VERSIONS / version).is_dir():
            raise FileNotFoundError(f"{plugin_id} has no version folder {version}")
        tmp = folder / f"{CURRENT_TMP_PREFIX}{secrets.token_hex(4)}"
        os.symlink(f"{VERSIONS}/{version}", tmp)
        try:
            os.replace(tmp, folder / CURRENT)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(folder)

    def deactivate(self, plugin_id: str) -> None:
        """Remove ``current`` (the commit point of an uninstall)."""
        folder = self.folder(plugin_id)
        with contextlib.suppress(FileNotFoundError):
            (folder / CURRENT).unlink()
            _fsync_dir(folder)

    def remove_version_dir(self, plugin_id: str, version: str) -> None:
        remove_tree(self.version_dir(plugin_id, version))

    def remove_plugin_dir(self, plugin_id: str) -> None:
        remove_tree(self.folder(plugin_id))

    def remove_envs(self, plugin_id: str, keep: set[str] | None = None) -> list[Path]:
        """Delete the plugin's environments, except those of the versions in ``keep``."""
        folder = self.envs / folder_name(plugin_id)
        if not folder.is_dir():
            return []
        keep_re = [re.compile(_ENV_DIR_RE.format(version=re.escape(v))) for v in keep or ()]
        removed = []
        for p in sorted(folder.iterdir()):
            name = p.name.removesuffix(".lock")
            if name.startswith("."):  # a build in progress or a half-deleted env: its owner's
                name = re.split(r"\.(?:tmp|del)-", name[1:], maxsplit=1)[0]
            if any(r.fullmatch(name) for r in keep_re):
                continue
            if p.is_dir():
                remove_tree(p)
                removed.append(p)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty
        return removed


def recover(home: Path) -> list[str]:
    """Bring every plugin under ``home`` to a consistent state after a crash; returns notes.

    The caller must hold the home's lock (:meth:`Store.locked`). For each plugin folder:
    staging folders and stray ``current.tmp-*`` links are removed; a folder without ``current``
    (an install that never reached its commit point, an uninstall past its commit point) is
    removed with its environments; version folders that are neither active nor recorded (an
    install that stopped before its commit point) are removed; if ``state.json`` disagrees with
    ``current``, ``state.json`` is repaired from the symlink and the version's install record.
    """
    store = Store(home)
    notes: list[str] = []
    try:
        folders = sorted(store.plugins.iterdir())
    except OSError:
        return notes
    for folder in folders:
        if folder.name.startswith(DELETED_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)
            continue
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        notes += _recover_one(store, folder)
    return notes


def _recover_one(store: Store, folder: Path) -> list[str]:
    notes: list[str] = []
    for p in folder.iterdir():
        if p.name.startswith((STAGING_PREFIX, DELETED_PREFIX)):
            shutil.rmtree(p, ignore_errors=True)
            notes.append(f"removed {p}")
        elif p.name.startswith(CURRENT_TMP_PREFIX) or (
            p.name.startswith(f".{STATE}.tmp-") and p.is_file()
        ):
            with contextlib.suppress(OSError):
                p.unlink()
    data = read_json(folder / STATE)
    plugin_id = str((data or {}).get("id") or folder.name.replace("__", "/", 1))
    version = current_version(folder)
    if version is None:
        # Not installed: nothing was ever committed, or an uninstall passed its commit point.
        remove_tree(folder)
        store.remove_envs(plugin_id)
        notes.append(f"{plugin_id}: not installed; removed its leftovers")
        return notes
    state = PluginState.from_dict(data or {}, plugin_id)
    changed = data is None
    versions_dir = folder / VERSIONS
    for p in sorted(versions_dir.iterdir()):
        if p.name.startswith(DELETED_PREFIX):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name != version and p.name not in state.versions:
            remove_tree(p)  # renamed into place, never activated
            notes.append(f"{plugin_id}: removed uncommitted version {p.name}")
    for v in list(state.versions):
        if v != version and not (versions_dir / v).is_dir():
            del state.versions[v]  # cleaned up before state.json said so
            changed = True
    if version not in state.versions:
        rec = store.record(plugin_id, version) or VersionRecord(version, "unknown")
        state.versions[version] = rec
        state.granted = sorted(set(state.granted) | set(rec.granted))
        state.note("recovered", version=version)
        notes.append(f"{plugin_id}: completed the activation of {version}")
        changed = True
    if state.current != version:
        if state.current is not None:
            notes.append(f"{plugin_id}: active version is {version}, not {state.current}")
        state.current = version
        changed = True
    if state.pinned is not None and state.pinned not in state.versions:
        state.pinned = None
        changed = True
    if changed:
        store.write_state(state)
    store.remove_envs(plugin_id, keep=set(state.versions))
    return notes
