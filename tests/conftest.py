"""Shared fixtures: no ambient plugins leak into tests."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A plughub home for what starts before the per-test one (module-scoped servers): never
    the developer's own home, store or credential key."""
    os.environ["PLUGHUB_HOME"] = str(tmp_path_factory.mktemp("plughub-session-home"))
    for var in ("PLUGHUB_STORE_URL", "PLUGHUB_REDIS_URL", "PLUGHUB_SECRET_KEY", "PLUGHUB_SECRET_KEY_FILE"):
        os.environ.pop(var, None)


@pytest.fixture(autouse=True)
def _no_ambient_plugins(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for var in ("PLUGHUB_PLUGINS_PATH", "PLUGHUB_LOAD_PLUGINS", "PLUGHUB_DENY_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("PLUGHUB_INDEX", raising=False)
    # The CLI serves the plugins installed in the plughub home: never the developer's own.
    monkeypatch.setenv("PLUGHUB_HOME", str(tmp_path_factory.mktemp("plughub-home")))


@pytest.fixture
def make_plugin(tmp_path: Path) -> Callable[..., Path]:
    """Write a native plugin folder: ``make_plugin("name", manifest_yaml, code)``."""

    def make(name: str, manifest: str, code: str = "", *, root: Path | None = None) -> Path:
        folder = (root or tmp_path / "plugins") / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plugin.yaml").write_text(textwrap.dedent(manifest))
        if code:
            (folder / "main.py").write_text(textwrap.dedent(code))
        return folder

    return make
