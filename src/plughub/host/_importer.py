"""Import plugin code from a folder under a private package name.

Each plugins folder (or native plugin folder) becomes a synthetic package
``plughub_plugins.<key>`` whose ``__init__.py`` is *not* executed: the AutoGPT seed's
``plugins/__init__.py`` imports every plugin, denied ones included, so it is read with ``ast``
instead (see ``_discovery``). Two plugins may then both have a ``utils.py`` without clashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import re
import shutil
import sys
import threading
import types
from pathlib import Path

__all__ = ["forget_modules", "import_from", "package_key"]

ROOT = "plughub_plugins"
_lock = threading.RLock()


def package_key(root: Path) -> str:
    stem = re.sub(r"\W", "_", root.name) or "root"
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    return f"{stem}_{digest}"


def _ensure_package(name: str, path: list[str]) -> None:
    if name in sys.modules:
        return
    mod = types.ModuleType(name)
    mod.__path__ = path
    mod.__package__ = name
    sys.modules[name] = mod


def import_from(root: Path, module: str) -> types.ModuleType:
    """Import ``module`` (dotted, relative to ``root``) as part of ``root``'s private package.

    ``root`` is also on ``sys.path`` while importing, so plugin code written with absolute
    sibling imports (``import helpers``) works as it would when run directly.
    """
    with _lock:
        _ensure_package(ROOT, [])
        pkg = f"{ROOT}.{package_key(root)}"
        _ensure_package(pkg, [str(root)])
        sys.path.insert(0, str(root))
        try:
            return importlib.import_module(f"{pkg}.{module}")
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(root))


def forget_modules(path: Path) -> None:
    """Drop a plugin's modules from ``sys.modules`` so the next import reads the files again.

    ``path`` is a plugin folder (its own package) or a single-file plugin (a module inside its
    folder's package, whose siblings are left alone).
    """
    path = path.resolve()
    if path.is_dir():
        prefix = f"{ROOT}.{package_key(path)}"
    else:
        prefix = f"{ROOT}.{package_key(path.parent)}.{path.stem}"
    with _lock:
        for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
            del sys.modules[name]
    # Bytecode caches are validated by whole-second mtime and size: an edit within the same
    # second that keeps the size would be served stale. They are only caches: drop them.
    root = path if path.is_dir() else path.parent
    for cache in root.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    importlib.invalidate_caches()
