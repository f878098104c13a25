"""The installed-plugins layout under a plughub home, read-only.

``plughub.packages`` writes this layout (install, upgrade, rollback...); the host only reads it,
so it lives here, below both. Layout, per plugin::

    <home>/plugins/<author>__<name>/
        versions/<version>/         unpacked package (immutable once activated)
            .plughub-install.json   how this version got here (source, checksum, grants)
        current -> versions/<version>   the active version: the atomic commit point
        state.json                  installed versions, enabled, pinned, granted, history

The ``current`` symlink is the truth: a reader resolves it once and gets a complete version
folder, whatever an installer is doing at the same time. ``state.json`` may lag behind it for
an instant (an installer killed between the two writes); the reader then takes the version's
own ``.plughub-install.json`` for what ``state.json`` does not know yet.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CURRENT",
    "INSTALL_RECORD",
    "PLUGINS",
    "STATE",
    "VERSIONS",
    "InstalledPlugin",
    "current_version",
    "default_home",
    "folder_name",
    "read_installed",
    "read_json",
]

PLUGINS = "plugins"
VERSIONS = "versions"
CURRENT = "current"
STATE = "state.json"
INSTALL_RECORD = ".plughub-install.json"


@dataclass(frozen=True, slots=True)
class InstalledPlugin:
    """One installed plugin as a reader sees it: the active version and the operator's choices."""

    id: str
    version: str
    path: Path
    """The active version's folder (``versions/<version>``, the symlink resolved)."""
    enabled: bool
    granted: tuple[str, ...]
    source: str
    pinned: str | None
    runtime: str | None
    """An operator's override of where it runs; ``None``: worker unless the manifest says."""


def default_home() -> Path:
    """``PLUGHUB_HOME``, else the platform's user data dir: what ``plughub.packages.home()``
    returns, without importing ``plughub.packages`` (and ``cryptography``) to find out."""
    env = os.environ.get("PLUGHUB_HOME")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        return Path.home() / ".plughub"
    return Path(platformdirs.user_data_dir("plughub", appauthor=False))


def folder_name(plugin_id: str) -> str:
    """``author/name`` -> ``author__name`` (ids are ``[a-z0-9_-]``, so this is reversible)."""
    return plugin_id.replace("/", "__")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None if it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def current_version(folder: Path) -> str | None:
    """The version ``folder/current`` points at, if it points at an existing version folder."""
    try:
        target = os.readlink(folder / CURRENT)
    except OSError:
        return None
    version = Path(target).name
    if not version or version.startswith(".") or not (folder / VERSIONS / version).is_dir():
        return None
    return version


def read_installed(home: Path) -> list[InstalledPlugin]:
    """Every installed plugin under ``home``, sorted by folder name; never writes anything."""
    root = Path(home) / PLUGINS
    try:
        folders = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError:
        return []
    out: list[InstalledPlugin] = []
    for folder in folders:
        version = current_version(folder)
        if version is None:
            continue  # never activated, or being uninstalled
        path = (folder / VERSIONS / version).resolve()
        state = read_json(folder / STATE) or {}
        versions = state.get("versions")
        versions = versions if isinstance(versions, dict) else {}
        known = version in versions
        record = versions.get(version) if known else read_json(path / INSTALL_RECORD)
        record = record if isinstance(record, dict) else {}
        granted = state.get("granted") if known else record.get("granted")
        plugin_id = str(state.get("id") or record.get("id") or folder.name.replace("__", "/", 1))
        pinned = state.get("pinned")
        runtime = state.get("runtime")
        out.append(
            InstalledPlugin(
                id=plugin_id,
                version=version,
                path=path,
                enabled=bool(state.get("enabled", True)),
                granted=tuple(str(g) for g in granted) if isinstance(granted, list) else (),
                source=str(record.get("source") or "unknown"),
                pinned=str(pinned) if isinstance(pinned, str) else None,
                runtime=str(runtime) if isinstance(runtime, str) else None,
            )
        )
    return out
