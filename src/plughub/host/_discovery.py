"""Find plugins and read what they declare, without importing any plugin code.

Sources: folders (native ``plugin.yaml`` plugins, AutoGPT-style subfolders with ``plugin.py``,
AI-Dialer-style single files, single-file ``@tool`` modules), the ``plughub.plugins`` entry-point
group, and objects passed in by the caller. Seed-style plugins have no manifest; one is made up
from their ``config.yaml`` and file names, read with ``yaml``/``ast`` only.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ManifestError
from ..manifest import MANIFEST_FILENAME, PluginManifest, load_manifest
from ..runtime._code import LoadedCode, code_from_object
from ._importer import import_from

__all__ = ["Candidate", "discover_dir", "discover_entry_points", "discover_object", "slug"]

ENTRY_POINT_GROUP = "plughub.plugins"
_SLUG_RE = re.compile(r"[^a-z0-9_-]+")


def slug(name: str) -> str:
    """A plugin name from a folder, file or class name: lowercase ``[a-z0-9_-]``."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    s = _SLUG_RE.sub("_", s).strip("_-") or "plugin"
    return s[:64]


@dataclass(slots=True)
class Candidate:
    """A plugin found but not imported. ``load`` imports its code when first needed."""

    manifest: PluginManifest | None
    style: str  # native | autogpt | dialer | module | entrypoint | object
    source: str
    path: Path | None
    load: Callable[[], LoadedCode]
    aliases: list[str] = field(default_factory=list)
    error: str | None = None
    fallback_id: str = ""
    runtime: str | None = None  # where it must run, whatever the manifest says (installed plugins)

    @property
    def id(self) -> str:
        return self.manifest.id if self.manifest is not None else self.fallback_id


def _broken(fallback_id: str, style: str, path: Path, error: str) -> Candidate:
    def fail() -> LoadedCode:
        raise RuntimeError(error)

    return Candidate(None, style, f"dir:{path}", path, fail, error=error, fallback_id=fallback_id)


def _native(folder: Path) -> Candidate:
    fallback = f"local/{slug(folder.name)}"
    try:
        manifest = load_manifest(folder / MANIFEST_FILENAME)
    except ManifestError as e:
        return _broken(fallback, "native", folder, str(e))
    if manifest.runtime not in ("inprocess", "worker") or not manifest.entrypoint:

        def unsupported() -> LoadedCode:
            raise RuntimeError(f"runtime {manifest.runtime!r} is not available in this host")

        return Candidate(manifest, "native", f"dir:{folder}", folder, unsupported)
    module, _, attr = manifest.entrypoint.partition(":")

    def load() -> LoadedCode:
        mod = import_from(folder, module)
        return code_from_object(_resolve_attr(mod, attr) if attr else mod)

    return Candidate(manifest, "native", f"dir:{folder}", folder, load)


def _resolve_attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _seed_config(folder: Path) -> dict[str, Any]:
    cfg = folder / "config.yaml"
    if not cfg.is_file():
        return {}
    data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{cfg}: expected a mapping at the top level")
    return data


def _synth(
    plugin_id: str, version: Any, description: str, requirements: Iterable[str], entrypoint: str
) -> PluginManifest:
    """A manifest for a plugin that has none (seed styles, objects, entry points)."""
    v = str(version or "0.0.0")
    if not re.fullmatch(r"\d+\.\d+\.\d+([-+].*)?", v):
        v = "0.0.0"
    return PluginManifest.model_validate(
        {
            "id": plugin_id,
            "version": v,
            "description": description,
            "entrypoint": entrypoint,
            "runtime": "inprocess",
            "python": {"requirements": [r for r in requirements if r.strip()]},
        }
    )


def _requirements(folder: Path, cfg: dict[str, Any]) -> list[str]:
    reqs = [str(r) for r in cfg.get("dependencies") or [] if isinstance(r, str)]
    req_file = folder / "requirements.txt"
    if req_file.is_file():
        for raw in req_file.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                reqs.append(line)
    return reqs


def _available_plugins(init: Path) -> dict[str, list[str]] | None:
    """Read ``AVAILABLE_PLUGINS`` from a plugins folder's ``__init__.py`` with ``ast``.

    Returns folder name → class names, or None when the file has no such list.
    """
    try:
        tree = ast.parse(init.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    origin: dict[str, str] = {}
    listed: list[str] | None = None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                origin[alias.asname or alias.name] = node.module.split(".")[0]
        elif (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "AVAILABLE_PLUGINS" for t in node.targets)
            and isinstance(node.value, (ast.List, ast.Tuple))
        ):
            listed = [e.id for e in node.value.elts if isinstance(e, ast.Name)]
    if listed is None:
        return None
    out: dict[str, list[str]] = {}
    for name in listed:
        if name in origin:
            out.setdefault(origin[name], []).append(name)
    return out


def _autogpt(root: Path, folder: Path, classes: list[str] | None) -> Candidate:
    plugin_id = f"local/{slug(folder.name)}"
    try:
        cfg = _seed_config(folder)
        manifest = _synth(
            plugin_id,
            cfg.get("version"),
            str(cfg.get("description") or ""),
            _requirements(folder, cfg),
            f"{folder.name}.plugin",
        )
    except (ValueError, yaml.YAMLError, ManifestError) as e:
        return _broken(plugin_id, "autogpt", folder, f"config.yaml: {e}")

    def load() -> LoadedCode:
        from ..compat import autogpt

        # The folder is its own package: relative imports work, siblings stay out of reach.
        mod = import_from(folder, "plugin")
        return autogpt.adapt(autogpt.plugin_classes(mod, classes))

    name = cfg.get("name")
    aliases = [str(name)] if name else []
    return Candidate(manifest, "autogpt", f"dir:{folder}", folder, load, aliases)


def _scan_py(file: Path) -> tuple[list[str], bool]:
    """Class names that subclass a ``BasePlugin``, and whether any function is ``@tool``."""
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return [], False
    classes: list[str] = []
    has_tool = False
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for base in node.bases:
                bname = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                if bname.endswith("BasePlugin") and bname != node.name:
                    classes.append(node.name)
                    break
        functions = [node] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
        if isinstance(node, ast.ClassDef):  # a Plugin subclass with @tool methods
            functions = [
                n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            ]
        for fn in functions:
            for dec in fn.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                dname = (
                    target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                )
                has_tool = has_tool or dname == "tool"
    return classes, has_tool


def _single_file(root: Path, file: Path) -> Candidate | None:
    classes, has_tool = _scan_py(file)
    plugin_id = f"local/{slug(file.stem)}"
    if classes:
        manifest = _synth(plugin_id, None, "", [], file.stem)

        def load_dialer() -> LoadedCode:
            from ..compat import dialer

            mod = import_from(root, file.stem)
            return dialer.adapt(dialer.plugin_classes(mod))

        return Candidate(manifest, "dialer", f"file:{file}", file, load_dialer, list(classes))
    if has_tool:
        manifest = _synth(plugin_id, None, "", [], file.stem)
        return Candidate(
            manifest,
            "module",
            f"file:{file}",
            file,
            lambda: code_from_object(import_from(root, file.stem)),
        )
    return None


def discover_dir(root: Path) -> list[Candidate]:
    """Every plugin in a plugins folder (or the folder itself, if it is one plugin)."""
    root = root.resolve()
    if (root / MANIFEST_FILENAME).is_file():
        return [_native(root)]
    if (root / "plugin.py").is_file():
        return [_autogpt(root.parent, root, None)]
    if root.is_file() and root.suffix == ".py":
        found = _single_file(root.parent, root)
        return [found] if found else []
    listed = _available_plugins(root / "__init__.py") if (root / "__init__.py").is_file() else None
    out: list[Candidate] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_dir():
            if (entry / MANIFEST_FILENAME).is_file():
                out.append(_native(entry))
            elif (entry / "plugin.py").is_file() and (listed is None or entry.name in listed):
                out.append(_autogpt(root, entry, None if listed is None else listed[entry.name]))
        elif entry.suffix == ".py":
            found = _single_file(root, entry)
            if found is not None:
                out.append(found)
    return out


def discover_entry_points() -> list[Candidate]:
    """Plugins that installed distributions expose in the ``plughub.plugins`` group."""
    out: list[Candidate] = []
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        manifest: PluginManifest | None = None
        error: str | None = None
        top = ep.value.split(":")[0].split(".")[0]
        if dist is not None:
            for f in dist.files or []:
                if f.name == MANIFEST_FILENAME and f.parts[0] == top:
                    try:
                        manifest = load_manifest(Path(str(dist.locate_file(f))))
                    except ManifestError as e:
                        error = str(e)
                    break
        fallback = f"{slug(dist.name if dist else 'entrypoint')}/{slug(ep.name)}"
        if manifest is None and error is None:
            try:
                manifest = _synth(
                    fallback,
                    dist.version if dist else None,
                    (dist.metadata["Summary"] or "") if dist else "",
                    [],
                    ep.value,
                )
            except ManifestError as e:
                error = str(e)

        def load(ep: md.EntryPoint = ep) -> LoadedCode:
            return code_from_object(ep.load())

        out.append(
            Candidate(
                manifest,
                "entrypoint",
                f"entrypoint:{ep.value}",
                None,
                load,
                [ep.name],
                error,
                fallback,
            )
        )
    return out


def discover_object(obj: Any) -> Candidate:
    """A plugin handed over as a Python object (already imported by the caller)."""
    items = obj if isinstance(obj, (list, tuple)) else None
    first = items[0] if items else obj
    pid = getattr(first, "id", None)
    if not isinstance(pid, str) or "/" not in pid:
        raw = getattr(first, "name", None)
        if not isinstance(raw, str) or not raw:
            raw = getattr(first, "__name__", None) or type(first).__name__
        pid = f"local/{slug(raw)}"
    version = getattr(first, "version", None)
    description = getattr(first, "description", "") or ""
    module = getattr(first, "__module__", None) or getattr(first, "__name__", None) or "__main__"
    manifest = _synth(
        pid,
        version if isinstance(version, str) else None,
        description if isinstance(description, str) else "",
        [],
        module,
    )
    return Candidate(manifest, "object", f"object:{pid}", None, lambda: code_from_object(obj))
