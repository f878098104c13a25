"""Plugins on disk and two ways to run the CLI: in-process (CliRunner) and the real script."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from plughub.cli import app

GREET_MANIFEST = """\
id: acme/greet
version: 1.2.0
description: Greets people.
entrypoint: plugin:Greet
examples:
  - tool: hello
    args: {name: Bob}
    expect:
      text_contains: Hello Bob
"""

GREET_CODE = '''\
from plughub.sdk import Context, Plugin, ToolError, tool


class Greet(Plugin):
    @tool
    def hello(self, name: str, times: int = 1) -> str:
        """Say hello.

        Args:
            name: Who to greet.
            times: How many times.
        """
        return " ".join([f"Hello {name}!"] * times)

    @tool
    def fail(self, msg: str) -> str:
        """Always fails with msg."""
        raise ToolError(msg)

    @tool
    def echo(self, n: int = 0, flag: bool = False, name: str = "", tags: list[str] | None = None,
             raw: str = "") -> dict:
        """Return the arguments it got, typed."""
        return {"n": n, "flag": flag, "name": name, "tags": tags, "raw": raw}

    @tool
    def count(self, n: int, ctx: Context):
        """Stream n chunks with progress."""
        for i in range(n):
            ctx.progress(i + 1, n, f"step {i + 1}")
            ctx.log(f"made chunk {i}")
            yield f"chunk{i}"
'''

SOLO_MANIFEST = """\
id: acme/solo
version: 0.1.0
entrypoint: plugin
"""

SOLO_CODE = '''\
from plughub.sdk import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
'''

BROKEN_MANIFEST = """\
id: acme/broken
version: 0.1.0
entrypoint: plugin
"""

BROKEN_CODE = "import plughub_missing_module_for_tests  # noqa\n"


def write_plugin(folder: Path, manifest: str, code: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plugin.yaml").write_text(textwrap.dedent(manifest), encoding="utf-8")
    (folder / "plugin.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return folder


@pytest.fixture
def new_plugin() -> Callable[[Path, str, str], Path]:
    """``new_plugin(folder, manifest, code)`` writes plugin.yaml and plugin.py."""
    return write_plugin


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    """A plugins folder with a multi-tool plugin, a single-tool one and one that cannot import."""
    root = tmp_path / "plugins"
    write_plugin(root / "greet", GREET_MANIFEST, GREET_CODE)
    write_plugin(root / "solo", SOLO_MANIFEST, SOLO_CODE)
    write_plugin(root / "broken", BROKEN_MANIFEST, BROKEN_CODE)
    return root


Run = Callable[..., Result]


@pytest.fixture
def cli(plugins_dir: Path) -> Run:
    """``cli("list", "--json")`` runs in-process with ``--plugins-dir`` set and no entry points."""
    runner = CliRunner()

    def run(
        *args: str, input: str | bytes | None = None, global_args: tuple[str, ...] | None = None
    ) -> Result:
        base = (
            global_args
            if global_args is not None
            else ("--plugins-dir", str(plugins_dir), "--no-entry-points")
        )
        return runner.invoke(app, [*base, *args], input=input)

    return run


SCRIPT = Path(sys.executable).parent / "plughub"

Sh = Callable[..., "subprocess.CompletedProcess[bytes]"]


@pytest.fixture
def sh(plugins_dir: Path, tmp_path: Path) -> Sh:
    """Run the installed ``plughub`` console script; returns the completed process (bytes)."""
    if not SCRIPT.exists():
        pytest.skip(f"console script not installed at {SCRIPT}")
    # PLUGHUB_HOME stays: it points at the test's own (empty) home, never the developer's.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PLUGHUB_") or k == "PLUGHUB_HOME"
    }

    def run(
        *args: str,
        input: bytes | None = None,
        plugins: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        base = ["--plugins-dir", str(plugins_dir), "--no-entry-points"] if plugins else []
        return subprocess.run(
            [str(SCRIPT), *base, *args],
            input=input,
            capture_output=True,
            cwd=tmp_path,
            env={**env, **(extra_env or {})},
            timeout=120,
            check=False,
        )

    return run
