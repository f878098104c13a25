"""Plugin records and the small rules about them: status, listing view, grants, versions."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import SpecifierSet

from ..manifest import PluginManifest
from ..runtime._code import LoadedCode
from ..sdk import Storage
from ._discovery import Candidate
from ._pipeline import Bound

__all__ = [
    "AVAILABLE",
    "DENIED",
    "DISABLED",
    "FAILED",
    "LOADED",
    "PluginInfo",
    "Record",
    "incompatibility",
    "matches",
    "permission_tokens",
    "snapshot",
    "split_env",
]

# Status of a plugin record.
AVAILABLE, LOADED, FAILED, DENIED = "available", "loaded", "failed", "denied"
DISABLED = "disabled"  # an installed plugin the operator disabled


@dataclass(slots=True, frozen=True)
class PluginInfo:
    """A read-only view of one plugin for listings (``plughub list --json``)."""

    id: str
    name: str
    version: str
    description: str
    style: str
    source: str
    status: str
    error: str | None
    tools: list[str] | None
    permissions: list[str]
    aliases: list[str]
    runtime: str = "inprocess"
    worker: dict[str, Any] | None = None
    granted: list[str] | None = None
    """Permission tokens granted to it; ``None``: everything it requests (trusted local use)."""

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(slots=True, eq=False)
class Record:
    candidate: Candidate
    status: str
    error: str | None = None
    code: LoadedCode | None = None
    bound: dict[str, Bound] = field(default_factory=dict)
    storage: Storage | None = None
    dependency_problem: bool = False
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # settings/credentials
    ctx_parts: tuple[Any, ...] | None = None  # the per-plugin parts of every call's Context

    @property
    def id(self) -> str:
        return self.candidate.id

    @property
    def name(self) -> str:
        return self.id.split("/", 1)[-1]

    @property
    def manifest(self) -> PluginManifest | None:
        return self.candidate.manifest


def split_env(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


def matches(rec_id: str, patterns: Iterable[str]) -> bool:
    name = rec_id.split("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rec_id, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def incompatibility(manifest: PluginManifest | None) -> str | None:
    """Why this host cannot run the plugin at all (Python or plughub version), if it cannot."""
    if manifest is None:
        return None
    from .. import __version__

    python = ".".join(str(v) for v in sys.version_info[:3])
    if manifest.python.requires and python not in SpecifierSet(manifest.python.requires):
        return f"needs Python {manifest.python.requires}; this host runs {python}"
    if manifest.min_plughub and __version__ not in SpecifierSet(manifest.min_plughub):
        return f"needs plughub {manifest.min_plughub}; this host is {__version__}"
    return None


def permission_tokens(manifest: PluginManifest | None) -> list[str]:
    """A manifest's requested permissions as grantable tokens (``network:host``, ``llm``...)."""
    if manifest is None:
        return []
    p = manifest.permissions
    tokens = [f"network:{h}" for h in p.network]
    tokens += [f"fs.read:{x}" for x in p.filesystem.read]
    tokens += [f"fs.write:{x}" for x in p.filesystem.write]
    tokens += [f"env:{e}" for e in p.env]
    if p.subprocess:
        tokens.append("subprocess")
    if p.llm:
        tokens.append("llm")
    return tokens


def snapshot(c: Candidate) -> dict[str, int]:
    """Modification times of a folder plugin's files (empty for other sources)."""
    path = c.path
    if path is None or not c.source.startswith(("dir:", "file:")):
        return {}
    files = (
        [path]
        if path.is_file()
        else [
            f
            for f in path.rglob("*")
            if f.is_file() and "__pycache__" not in f.parts and not f.name.startswith(".")
        ]
    )
    out: dict[str, int] = {}
    for f in files:
        with contextlib.suppress(OSError):
            out[str(f)] = f.stat().st_mtime_ns
    return out
