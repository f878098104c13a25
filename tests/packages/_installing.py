"""Plugin folders, packages and installers for the install/lifecycle/crash tests (no network)."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from _wheels import make_wheel
from plughub.host._installed import read_installed
from plughub.packages import Installer, SigningKey, build_package

PID = "acme/weather"


def write_plugin(
    root: Path,
    version: str = "1.0.0",
    *,
    pid: str = PID,
    requirements: Iterable[str] = (),
    wheels: Iterable[str] = (),
    network: Iterable[str] = ("api.example.com",),
    dependencies: Mapping[str, str] | None = None,
    examples: bool = True,
    prelude: str = "",
    answer: str | None = None,
    runtime: str | None = "worker",
) -> Path:
    """A native plugin folder ``root/<name>-<version>`` with one tool ``forecast(city)``.

    ``forecast`` answers ``answer`` (default ``"sunny in {city} (v<version>)"``); its example
    expects the city in the text. ``wheels`` are written into ``wheels/`` (pure Python, each
    module holding ``X = 42``); ``prelude`` is code run at import (``raise ...`` breaks it).
    """
    name = pid.split("/", 1)[1]
    folder = root / f"{name}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "id": pid,
        "version": version,
        "description": f"{name} plugin for tests",
        "entrypoint": "main",
        "python": {"requirements": list(requirements)},
        "permissions": {"network": list(network)},
        "dependencies": dict(dependencies or {}),
    }
    if runtime is not None:
        manifest["runtime"] = runtime
    if examples:
        manifest["examples"] = [
            {"tool": "forecast", "args": {"city": "Paris"}, "expect": {"text_contains": "Paris"}}
        ]
    (folder / "plugin.yaml").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    imports = "".join(f"import {w}\n" for w in wheels)
    text = answer if answer is not None else f"sunny in {{city}} (v{version})"
    code = f'''\
        {prelude}
        from plughub.sdk import tool
        {imports}

        @tool
        def forecast(city: str) -> str:
            """Tomorrow's weather."""
            return f"{text}"
        '''
    (folder / "main.py").write_text(textwrap.dedent(code), encoding="utf-8")
    for w in wheels:
        make_wheel(folder / "wheels", w)
    return folder


def package(folder: Path, out_dir: Path, key: SigningKey | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    return build_package(folder, out_dir / f"{folder.name}.plughub", key=key)


def installer(home: Path, cache: Path, **kw: Any) -> Installer:
    kw.setdefault("allow_unsigned", True)
    return Installer(home, cache_dir=cache, **kw)


def layout(home: Path, pid: str = PID) -> dict[str, Any]:
    """What is on disk for one plugin: versions, current, state, envs, leftovers."""
    folder = home / "plugins" / pid.replace("/", "__")
    envs = home / "envs" / pid.replace("/", "__")
    state_file = folder / "state.json"
    return {
        "exists": folder.exists(),
        "current": os.readlink(folder / "current") if (folder / "current").is_symlink() else None,
        "versions": sorted(p.name for p in (folder / "versions").iterdir())
        if (folder / "versions").is_dir()
        else [],
        "state": json.loads(state_file.read_text()) if state_file.exists() else None,
        "envs": sorted(p.name for p in envs.iterdir() if p.is_dir() and not p.name.startswith("."))
        if envs.is_dir()
        else [],
        "leftovers": sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
        if folder.is_dir()
        else [],
    }


def active(home: Path) -> dict[str, str]:
    """``{id: version}`` as a host would read it."""
    return {p.id: p.version for p in read_installed(home)}
