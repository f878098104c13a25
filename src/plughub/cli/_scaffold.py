"""``new``: write a native plugin that already passes its own ``plughub test``.

The templates show the conventions a plugin author should copy: metadata in ``plugin.yaml``,
a typed, documented ``@tool`` (the docstring becomes the schema's descriptions), failures as
``ToolError``, manifest ``examples`` that double as tests, and pytest tests on
``plughub.testing``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from ._common import CliError, guarded, out_console

__all__ = ["NAME_RE", "class_name", "new_command", "scaffold"]

#: A plugin name or author: one part of a plugin id (see the manifest's ``id``).
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)

_MANIFEST = """\
# plughub plugin manifest. Run `plughub test .` to check the examples and the tests.
id: {author}/{name}
version: 0.1.0
description: {description_yaml}
entrypoint: plugin:{cls}
# Ask only for what the code needs; the host enforces it (ctx.http, ctx.files...):
# permissions:
#   network: [api.example.com]
examples:
  - tool: greet
    args: {{name: Ada}}
    expect:
      text_contains: "Hello, Ada."
  - tool: greet
    args: {{name: Ada, excited: true}}
    expect:
      text_contains: "Hello, Ada!"
  - tool: greet
    args: {{name: "  "}}
    expect:
      is_error: true
      text_contains: "name must not be empty"
"""

_PLUGIN = '''\
"""{description}"""

from plughub.sdk import Plugin, ToolError, tool


class {cls}(Plugin):
    """{description}"""

    @tool(read_only=True, idempotent=True)
    def greet(self, name: str, excited: bool = False) -> str:
        """Greet someone by name.

        Args:
            name: Who to greet.
            excited: End with an exclamation mark instead of a full stop.
        """
        if not name.strip():
            # A ToolError is a result the model can read (is_error), not a crash.
            raise ToolError("name must not be empty")
        return f"Hello, {{name.strip()}}{{'!' if excited else '.'}}"
'''

_README = """\
# {name}

{description}

## Try it

```sh
plughub --plugins-dir . invoke {name} greet name=Ada
plughub --plugins-dir . tools --format anthropic
```

## Test it

```sh
plughub test .        # the examples in plugin.yaml, then pytest tests/
```
"""

_TEST = '''\
"""Tests for the {name} plugin; `plughub test .` runs them after the manifest examples."""

from pathlib import Path

from plughub.testing import PluginHarness, assert_error, assert_ok, plughub_plugin

plugin = plughub_plugin(Path(__file__).resolve().parents[1])


def test_greets_by_name(plugin: PluginHarness) -> None:
    assert assert_ok(plugin.call("greet", name="Ada")).text == "Hello, Ada."


def test_refuses_an_empty_name(plugin: PluginHarness) -> None:
    assert_error(plugin.call("greet", name=""), reason="tool_error", contains="empty")


def test_rejects_arguments_of_the_wrong_type(plugin: PluginHarness) -> None:
    assert_error(plugin.call("greet", name="Ada", excited="very"), reason="invalid_arguments")


def test_examples_pass(plugin: PluginHarness) -> None:
    for outcome in plugin.run_examples():
        assert outcome.passed, outcome.summary
'''


def class_name(name: str) -> str:
    """``my-plugin`` -> ``MyPluginPlugin``... minus the stutter: ``MyPlugin``."""
    words = [w for w in re.split(r"[-_]+", name) if w]
    base = "".join(w[:1].upper() + w[1:] for w in words)
    if not base.endswith("Plugin"):
        base += "Plugin"
    return base if base[0].isalpha() else f"P{base}"


def scaffold(name: str, dest: Path, author: str = "local") -> list[Path]:
    """Write the plugin ``author/name`` into ``dest`` (absent or empty); returns the files."""
    for label, value in (("name", name), ("author", author)):
        if not NAME_RE.fullmatch(value):
            raise CliError(
                f"invalid plugin {label} {value!r}: use 1-64 lowercase letters, digits, '_' or "
                "'-', starting with a letter or digit"
            )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CliError(f"{dest} already exists and is not an empty directory; not overwriting")
    values = {
        "name": name,
        "author": author,
        "cls": class_name(name),
        "description": f"Greets people (replace this with what {name} does).",
    }
    values["description_yaml"] = json.dumps(values["description"])  # a valid YAML scalar
    files = {
        "plugin.yaml": _MANIFEST,
        "plugin.py": _PLUGIN,
        "README.md": _README,
        "tests/test_plugin.py": _TEST,
    }
    written: list[Path] = []
    for rel, template in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
        written.append(path)
    return written


@guarded
def new_command(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Plugin name: lowercase letters, digits, _ and -.")
    ],
    directory: Annotated[
        Path, typer.Option("--dir", "-d", metavar="DIR", help="Where to create the NAME/ folder.")
    ] = Path(),
    author: Annotated[
        str, typer.Option("--author", metavar="AUTHOR", help="First part of the plugin id.")
    ] = "local",
) -> None:
    """Create a native plugin folder NAME/ (manifest, code, README, tests) ready for `test`.

    Refuses (exit 2) an invalid NAME or AUTHOR and an existing non-empty NAME/ folder.
    """
    dest = directory / name
    written = scaffold(name, dest, author)
    console = out_console()
    console.print(f"created {author}/{name} in {dest}", markup=False)
    for path in written:
        console.print(f"  {path.relative_to(dest)}", markup=False)
    console.print(f"next: plughub test {dest}", markup=False)
