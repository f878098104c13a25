"""The ``Context`` a tool receives: everything a plugin may touch, and nothing else.

A parameter annotated ``Context`` is injected by the host and hidden from the tool's schema.
Secrets arrive here (``ctx.credentials``), never through arguments, so they stay out of
prompts, schemas and the audit log.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._results import LogEntry, Progress, ToolError

if TYPE_CHECKING:
    from ._http import PermissionedHttp

__all__ = ["Context", "FileAccess", "MemoryStorage", "Storage", "StorageQuotaExceeded"]

Emit = Callable[[Progress | LogEntry], None]


class StorageQuotaExceeded(ToolError):
    """A write would take the plugin's storage past its quota."""


class Storage(Protocol):
    """A plugin's private key-value store (JSON values); backends enforce the quota."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...
    def delete(self, key: str) -> bool: ...
    def keys(self, prefix: str = "") -> list[str]: ...


class MemoryStorage:
    """In-memory ``Storage``, for tests and hosts without a data directory."""

    def __init__(self, quota: int | None = None) -> None:
        self._data: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self.quota = quota

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        import json

        size = len(key.encode()) + len(json.dumps(value).encode())
        used = sum(self._sizes.values()) - self._sizes.get(key, 0)
        if self.quota is not None and used + size > self.quota:
            raise StorageQuotaExceeded(
                f"storage quota of {self.quota} bytes exceeded ({used + size} needed)"
            )
        self._data[key] = json.loads(json.dumps(value))
        self._sizes[key] = size

    def delete(self, key: str) -> bool:
        self._sizes.pop(key, None)
        return self._data.pop(key, None) is not None

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self._data if k.startswith(prefix))


class FileAccess:
    """Filesystem access limited to the paths a plugin was granted.

    In-process this is a courtesy check (trusted code can call ``open`` directly); in a worker
    the sandbox enforces the same grants.
    """

    def __init__(self, read: list[str], write: list[str], data_dir: Path | None) -> None:
        self._read = [*read, *write]
        self._write = list(write)
        self.data_dir = data_dir
        if data_dir is not None:
            self._read.append(str(data_dir))
            self._write.append(str(data_dir))

    @staticmethod
    def _allowed(path: Path, grants: list[str]) -> bool:
        real = os.path.realpath(path)
        for g in grants:
            root = os.path.realpath(os.path.expanduser(g))
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                return True
            if any(ch in g for ch in "*?[") and fnmatch.fnmatch(real, root):
                return True
        return False

    def _check(self, path: str | os.PathLike[str], write: bool) -> Path:
        p = Path(path)
        if not p.is_absolute() and self.data_dir is not None:
            p = self.data_dir / p
        if not self._allowed(p, self._write if write else self._read):
            mode = "write" if write else "read"
            raise ToolError(f"permission denied: no {mode} grant covers {str(p)!r}")
        return p

    def read_text(self, path: str | os.PathLike[str]) -> str:
        return self._check(path, False).read_text()

    def read_bytes(self, path: str | os.PathLike[str]) -> bytes:
        return self._check(path, False).read_bytes()

    def write_text(self, path: str | os.PathLike[str], text: str) -> None:
        p = self._check(path, True)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def write_bytes(self, path: str | os.PathLike[str], data: bytes) -> None:
        p = self._check(path, True)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def list(self, path: str | os.PathLike[str]) -> Iterator[Path]:
        return self._check(path, False).iterdir()


class Context:
    """Per-call view of the host for one plugin.

    Cheap to build (slots, lazy helpers) because the host makes one per call of a tool that
    asks for it.
    """

    __slots__ = (
        "_emit",
        "_files",
        "_http",
        "_network",
        "call_id",
        "credentials",
        "deadline",
        "extras",
        "logger",
        "plugin_id",
        "settings",
        "storage",
    )

    def __init__(
        self,
        plugin_id: str,
        *,
        settings: Mapping[str, Any] | None = None,
        credentials: Mapping[str, Any] | None = None,
        storage: Storage | None = None,
        logger: logging.Logger | None = None,
        emit: Emit | None = None,
        call_id: str = "",
        deadline: float | None = None,
        network: list[str] | None = None,
        files: FileAccess | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.settings: Mapping[str, Any] = settings or {}
        self.credentials: Mapping[str, Any] = credentials or {}
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.logger = logger or logging.getLogger(f"plughub.plugin.{plugin_id}")
        self._emit = emit
        self.call_id = call_id
        self.deadline = deadline
        self._network = network
        self._files = files
        self._http: PermissionedHttp | None = None
        self.extras: Mapping[str, Any] = extras or {}

    def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Report progress; streamed to the caller when it listens, dropped otherwise."""
        if self._emit is not None:
            self._emit(Progress(progress, total, message))

    def log(self, message: str, level: str = "info") -> None:
        """Log to the plugin's logger and to the caller's stream (never into the result)."""
        self.logger.log(logging.getLevelName(level.upper()), message)
        if self._emit is not None:
            self._emit(LogEntry(level, message))

    def remaining(self) -> float | None:
        """Seconds left before the call's deadline, or None when it has none."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @property
    def http(self) -> PermissionedHttp:
        """An HTTP client that only reaches the hosts the plugin was granted."""
        if self._http is None:
            from ._http import PermissionedHttp

            self._http = PermissionedHttp(self._network or [], self.remaining)
        return self._http

    @property
    def files(self) -> FileAccess:
        """File access limited to granted paths and the plugin's private data dir."""
        if self._files is None:
            self._files = FileAccess([], [], None)
        return self._files

    @property
    def llm(self) -> Any:
        """Calls back into the host's model; only where the host provides one and grants it."""
        llm = self.extras.get("llm")
        if llm is None:
            raise ToolError(
                "this host offers no LLM to plugins (or the llm permission was not granted)"
            )
        return llm
