"""Test kit for plugin authors: load one plugin in isolation, call it, check its examples.

Typical use in a plugin's own ``tests/``::

    from pathlib import Path
    from plughub.testing import assert_ok, load_plugin

    def test_greets() -> None:
        with load_plugin(Path(__file__).parents[1]) as p:
            assert "Ada" in assert_ok(p.call("greet", name="Ada")).text

or with a fixture: ``plugin = plughub_plugin(Path(__file__).parents[1])`` at module level, then
``def test_x(plugin): ...``. ``plughub test`` runs the manifest ``examples`` through
:meth:`PluginHarness.run_examples`, so the CLI and pytest judge examples the same way.

The harness builds a :class:`~plughub.host.PluginHost` that holds *only* the plugin under test:
no entry points, and ``PLUGHUB_PLUGINS_PATH`` / ``PLUGHUB_LOAD_PLUGINS`` /
``PLUGHUB_DENY_PLUGINS`` are ignored, so a developer's environment cannot change a test's outcome.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import PluginLoadError, UsageError
from .host import PluginHost, PluginInfo
from .manifest import Example, PluginManifest
from .sdk import ToolResult

__all__ = [
    "ExampleOutcome",
    "PluginHarness",
    "assert_error",
    "assert_ok",
    "keyword_matches",
    "load_plugin",
    "plughub_plugin",
]

#: Environment variables the host reads at construction that would add or hide plugins.
ISOLATED_ENV = ("PLUGHUB_PLUGINS_PATH", "PLUGHUB_LOAD_PLUGINS", "PLUGHUB_DENY_PLUGINS")

Scope = Literal["session", "package", "module", "class", "function"]

# Reasons that mean an example without ``expect`` is broken rather than merely an error result.
_CRASH_REASONS = frozenset({"exception", "timeout", "invalid_arguments", "invalid_output"})


@contextmanager
def _isolated_env() -> Iterator[None]:
    """Hide the host's discovery variables while a harness host is being built."""
    saved = {name: os.environ.pop(name) for name in ISOLATED_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# --------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ExampleOutcome:
    """The verdict on one manifest example; ``problems`` says why it failed."""

    index: int
    tool: str
    args: dict[str, Any]
    passed: bool
    problems: list[str] = field(default_factory=list)
    result: ToolResult | None = None
    duration: float = 0.0

    @property
    def label(self) -> str:
        """``tool[index]``, the name ``-k`` expressions match against."""
        return f"{self.tool}[{self.index}]"

    @property
    def summary(self) -> str:
        """One line for a report or an assertion message."""
        if self.passed:
            return f"{self.label}: ok"
        return f"{self.label}: FAILED: {'; '.join(self.problems)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tool": self.tool,
            "args": self.args,
            "passed": self.passed,
            "problems": list(self.problems),
            "duration": round(self.duration, 6),
            "result": None if self.result is None else self.result.to_dict(),
        }


_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def keyword_matches(expr: str, name: str) -> bool:
    """Evaluate a pytest-style ``-k`` expression against ``name``.

    Words match as case-insensitive substrings; ``and``, ``or``, ``not`` and parentheses combine
    them. Raises :class:`~plughub.errors.UsageError` for a malformed expression.
    """
    tokens: list[str] = _TOKEN.findall(expr)
    pos = 0
    haystack = name.lower()

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise UsageError(f"invalid -k expression {expr!r}: unexpected end")
        pos += 1
        return tokens[pos - 1]

    def or_expr() -> bool:
        value = and_expr()
        while peek() == "or":
            take()
            value = and_expr() or value
        return value

    def and_expr() -> bool:
        value = not_expr()
        while peek() == "and":
            take()
            value = not_expr() and value
        return value

    def not_expr() -> bool:
        token = take()
        if token == "not":
            return not not_expr()
        if token == "(":
            value = or_expr()
            if take() != ")":
                raise UsageError(f"invalid -k expression {expr!r}: expected ')'")
            return value
        if token in (")", "and", "or"):
            raise UsageError(f"invalid -k expression {expr!r}: unexpected {token!r}")
        return token.lower() in haystack

    if not tokens:
        return True
    result = or_expr()
    if pos != len(tokens):
        raise UsageError(f"invalid -k expression {expr!r}: unexpected {tokens[pos]!r}")
    return result


def _check(example: Example, result: ToolResult) -> list[str]:
    expect = example.expect
    if expect is None:
        # An example without expectations only documents a call; it must still be callable.
        if result.is_error and result.reason in _CRASH_REASONS:
            return [f"call failed ({result.reason}): {result.text}"]
        return []
    problems = expect.mismatches(
        is_error=result.is_error, text=result.text, structured=result.structured
    )
    if problems and result.is_error and not expect.is_error:
        problems.append(f"the tool said ({result.reason}): {_shorten(result.text)}")
    return problems


def _shorten(text: str, limit: int = 200) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------


class PluginHarness:
    """One plugin loaded in a private host; use as a context manager or call :meth:`close`."""

    def __init__(self, host: PluginHost, plugin_id: str, manifest: PluginManifest | None) -> None:
        self.host = host
        self.id = plugin_id
        self.manifest = manifest

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Tear the plugin down and stop the host (idempotent)."""
        self.host.close()

    def __enter__(self) -> PluginHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the plugin is ------------------------------------------------------------------

    @property
    def info(self) -> PluginInfo:
        return self.host.plugin(self.id)

    @property
    def tools(self) -> list[str]:
        """Names of the plugin's tools (sorted)."""
        return list(self.info.tools or [])

    @property
    def examples(self) -> list[Example]:
        """The manifest's examples (none for plugins without a ``plugin.yaml``)."""
        return list(self.manifest.examples) if self.manifest is not None else []

    # -- calls -------------------------------------------------------------------------------

    def _tool(self, tool: str | None) -> str:
        if tool is not None:
            return tool
        tools = self.tools
        if len(tools) != 1:
            raise UsageError(
                f"plugin {self.id} has {len(tools)} tools ({', '.join(tools)}); name one"
            )
        return tools[0]

    def call(self, tool: str | None = None, /, **args: Any) -> ToolResult:
        """Call ``tool`` (omit it when the plugin has exactly one) with keyword arguments."""
        return self.host.invoke(self.id, self._tool(tool), args)

    async def acall(self, tool: str | None = None, /, **args: Any) -> ToolResult:
        """Async ``call``: sync tools run in a worker thread, never on the running loop."""
        return await self.host.ainvoke(self.id, self._tool(tool), args)

    def stream(self, tool: str | None = None, /, **args: Any) -> list[Any]:
        """Every event of one call in order (progress, logs, chunks); the last is the result."""
        return list(self.host.stream(self.id, self._tool(tool), args))

    def run_examples(self, keyword: str | None = None) -> list[ExampleOutcome]:
        """Run the manifest's examples (those whose ``tool[i]`` label matches ``keyword``)."""
        outcomes: list[ExampleOutcome] = []
        for index, example in enumerate(self.examples):
            label = f"{example.tool}[{index}]"
            if keyword and not keyword_matches(keyword, label):
                continue
            started = time.monotonic()
            outcome = ExampleOutcome(index, example.tool, dict(example.args), passed=False)
            try:
                result = self.host.invoke(self.id, example.tool, example.args)
            except Exception as exc:  # a missing tool must fail this example, not the run
                outcome.problems = [f"{type(exc).__name__}: {exc}"]
            else:
                outcome.result = result
                outcome.problems = _check(example, result)
                outcome.passed = not outcome.problems
            outcome.duration = time.monotonic() - started
            outcomes.append(outcome)
        return outcomes


def _host_for(path_or_object: Any, is_path: bool, **kwargs: Any) -> PluginHost:
    with _isolated_env():
        return PluginHost(
            [path_or_object] if is_path else (),
            plugins=() if is_path else [path_or_object],
            entry_points=False,
            allow=None,
            **kwargs,
        )


def _pick(path_or_object: Any, is_path: bool, plugin: str | None) -> str:
    """The id of the one plugin to load; discovery only, no plugin code is imported."""
    host = _host_for(path_or_object, is_path)
    try:
        found = host.plugins()
    finally:
        host.close()
    if plugin is not None:
        want = plugin.lower()
        found = [p for p in found if want in (p.id, p.name, *(a.lower() for a in p.aliases))]
    where = os.fspath(path_or_object) if is_path else repr(path_or_object)
    if not found:
        raise UsageError(f"no plugin found in {where}" + (f" named {plugin!r}" if plugin else ""))
    if len(found) > 1:
        ids = ", ".join(p.id for p in found)
        raise UsageError(f"{where} holds {len(found)} plugins ({ids}); pass plugin=... to pick one")
    return found[0].id


def load_plugin(
    path_or_object: str | os.PathLike[str] | Any,
    *,
    plugin: str | None = None,
    settings: Mapping[str, Any] | None = None,
    credentials: Mapping[str, Any] | None = None,
    grants: Sequence[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> PluginHarness:
    """Load one plugin (a folder, a ``.py`` file, or a Plugin class/instance/module/function).

    ``settings``, ``credentials`` and ``grants`` apply to that plugin; ``grants=None`` grants
    what its manifest requests. ``plugin`` picks one when a folder holds several. Raises
    :class:`~plughub.errors.PluginLoadError` with the host's reason when it cannot load, and
    :class:`~plughub.errors.UsageError` when there is no plugin (or no single one) to load.
    """
    is_path = isinstance(path_or_object, str | os.PathLike)
    if is_path and not Path(path_or_object).exists():
        raise UsageError(f"{os.fspath(path_or_object)!r} does not exist")
    plugin_id = _pick(path_or_object, is_path, plugin)
    host = _host_for(
        path_or_object,
        is_path,
        settings={plugin_id: dict(settings)} if settings is not None else None,
        credentials={plugin_id: dict(credentials)} if credentials is not None else None,
        grants={plugin_id: list(grants)} if grants is not None else None,
        data_dir=data_dir,
    )
    try:
        info = host.plugin(plugin_id)
        if info.status != "loaded":
            raise PluginLoadError(info.id, info.error or info.status)
        return PluginHarness(host, info.id, host.manifest(info.id))
    except BaseException:
        host.close()
        raise


# --------------------------------------------------------------------------------------------
# Assertions and pytest glue
# --------------------------------------------------------------------------------------------


def assert_ok(result: ToolResult) -> ToolResult:
    """Fail unless ``result`` succeeded; returns it so calls can be chained."""
    if result.is_error:
        raise AssertionError(
            f"expected a successful result, got an error ({result.reason}): {result.text}"
        )
    return result


def assert_error(
    result: ToolResult, reason: str | None = None, contains: str | None = None
) -> ToolResult:
    """Fail unless ``result`` is an error, with ``reason`` and ``contains`` when given."""
    if not result.is_error:
        raise AssertionError(f"expected an error result, got success: {result.text}")
    if reason is not None and result.reason != reason:
        raise AssertionError(
            f"expected an error with reason {reason!r}, got {result.reason!r}: {result.text}"
        )
    if contains is not None and contains not in result.text:
        raise AssertionError(f"expected the error text to contain {contains!r}: {result.text}")
    return result


def plughub_plugin(path_or_object: Any, *, scope: Scope = "module", **kwargs: Any) -> Any:
    """A pytest fixture yielding a :class:`PluginHarness`; assign it to the fixture's name.

    ``plugin = plughub_plugin(Path(__file__).parents[1])`` makes ``plugin`` available to the
    module's tests. ``kwargs`` go to :func:`load_plugin`.
    """
    import pytest

    def fixture() -> Iterator[PluginHarness]:
        with load_plugin(path_or_object, **kwargs) as harness:
            yield harness

    return pytest.fixture(scope=scope)(fixture)
