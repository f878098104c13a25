"""Helpers: write seed-style plugin files and import them the way a plugin author would."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path

import pytest

_counter = itertools.count()

LoadPlugin = Callable[[Path, str], types.ModuleType]


@pytest.fixture
def load_plugin(monkeypatch: pytest.MonkeyPatch) -> LoadPlugin:
    """Write ``source`` to ``path`` and import it under a unique module name.

    The module goes into ``sys.modules`` (``inspect.getfile`` needs it there to find the
    plugin's folder and its ``config.yaml``) and is removed after the test.
    """

    def load(path: Path, source: str) -> types.ModuleType:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
        name = f"compat_seed_{next(_counter)}_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load
