"""``plughub.testing``: the harness plugin authors use in their own test suites."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from plughub.errors import PluginLoadError, ToolNotFound, UsageError
from plughub.sdk import Context, Plugin, Progress, ToolError, ToolResult, tool
from plughub.testing import (
    PluginHarness,
    assert_error,
    assert_ok,
    keyword_matches,
    load_plugin,
    plughub_plugin,
)

MANIFEST = """\
id: acme/greeter
version: 0.3.0
entrypoint: main:Greeter
settings:
  greeting: {type: string, default: Hello}
examples:
  - tool: greet
    args: {name: Ada}
    expect:
      text_contains: [Hello, Ada]
  - tool: greet
    args: {name: ""}
    expect:
      is_error: true
  - tool: shout
    args: {name: ada}
    expect:
      structured_subset: {name: ADA}
  - tool: greet
    args: {name: Ada}
    expect:
      text_contains: Goodbye
"""

CODE = '''\
from plughub.sdk import Context, Plugin, ToolError, tool


class Greeter(Plugin):
    @tool
    def greet(self, name: str, ctx: Context) -> str:
        """Greet someone."""
        if not name:
            raise ToolError("who?")
        return f"{ctx.settings['greeting']}, {name}"

    @tool
    def shout(self, name: str) -> dict:
        """Upper-case a name."""
        return {"name": name.upper(), "length": len(name)}

    @tool
    def secret(self, ctx: Context) -> str:
        """Reveal the api key credential."""
        return str(ctx.credentials.get("api_key"))
'''


@pytest.fixture
def greeter_dir(make_plugin: Callable[..., Path]) -> Path:
    return make_plugin("greeter", MANIFEST, CODE)


class Counter(Plugin):
    """An explicit object plugin with a streaming tool."""

    torn_down: ClassVar[list[bool]] = []

    def teardown(self) -> None:
        self.torn_down.append(True)

    @tool
    def count(self, n: int, ctx: Context) -> Iterator[str]:
        """Yield n chunks."""
        for i in range(n):
            ctx.progress(i + 1, n)
            yield f"c{i}"


def double(x: int) -> int:
    """Double x."""
    return 2 * x


tool(double)

counter = plughub_plugin(Counter)


# -- a folder plugin --------------------------------------------------------------------------


def test_harness_calls_a_folder_plugin(greeter_dir: Path) -> None:
    with load_plugin(greeter_dir) as p:
        assert p.id == "acme/greeter"
        assert p.tools == ["greet", "secret", "shout"]
        assert p.info.status == "loaded" and p.info.version == "0.3.0"
        assert assert_ok(p.call("greet", name="Ada")).text == "Hello, Ada"
        assert p.call("shout", name="x").structured == {"name": "X", "length": 1}
        assert_error(p.call("greet", name=""), reason="tool_error", contains="who?")
        assert_error(p.call("greet"), reason="invalid_arguments")
        with pytest.raises(ToolNotFound):
            p.call("nope")
        with pytest.raises(UsageError, match="3 tools"):
            p.call(name="Ada")


def test_settings_and_credentials_reach_the_plugin(greeter_dir: Path) -> None:
    with load_plugin(greeter_dir, settings={"greeting": "Hi"}, credentials={"api_key": "k"}) as p:
        assert p.call("greet", name="Bo").text == "Hi, Bo"
        assert p.call("secret").text == "k"


def test_run_examples_reports_each_verdict(greeter_dir: Path) -> None:
    with load_plugin(greeter_dir) as p:
        outcomes = p.run_examples()
        assert [o.passed for o in outcomes] == [True, True, True, False]
        assert [o.label for o in outcomes] == ["greet[0]", "greet[1]", "shout[2]", "greet[3]"]
        assert outcomes[3].problems == ["text does not contain 'Goodbye'"]
        assert "FAILED" in outcomes[3].summary and outcomes[0].summary == "greet[0]: ok"
        assert (
            outcomes[0].result is not None and outcomes[0].to_dict()["result"]["is_error"] is False
        )
        assert [o.label for o in p.run_examples("shout or greet[1]")] == ["greet[1]", "shout[2]"]


def test_example_naming_an_unknown_tool_fails_only_that_example(make_plugin) -> None:
    folder = make_plugin(
        "ex",
        """\
        id: acme/ex
        version: 0.1.0
        entrypoint: main
        examples:
          - tool: missing
          - tool: boom
          - tool: ok
        """,
        """\
        from plughub.sdk import tool

        @tool
        def ok() -> str:
            return "fine"

        @tool
        def boom() -> str:
            raise RuntimeError("kaput")
        """,
    )
    with load_plugin(folder) as p:
        missing, boom, ok = p.run_examples()
    assert not missing.passed and "ToolNotFound" in missing.problems[0]
    # an example without `expect` still fails when the tool crashes
    assert not boom.passed and "kaput" in boom.problems[0]
    assert ok.passed


def test_load_errors_are_raised_clearly(make_plugin, tmp_path: Path) -> None:
    broken = make_plugin(
        "broken", "id: acme/broken\nversion: 0.1.0\nentrypoint: main\n", "import no_such_mod_xyz\n"
    )
    with pytest.raises(PluginLoadError, match="no_such_mod_xyz") as info:
        load_plugin(broken)
    assert info.value.plugin == "acme/broken"
    with pytest.raises(UsageError, match="does not exist"):
        load_plugin(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no plugin found"):
        load_plugin(tmp_path / "empty")


def test_a_folder_with_several_plugins_needs_a_choice(make_plugin, greeter_dir: Path) -> None:
    make_plugin("other", "id: acme/other\nversion: 0.1.0\nentrypoint: main\n", "")
    with pytest.raises(UsageError, match="2 plugins"):
        load_plugin(greeter_dir.parent)
    with load_plugin(greeter_dir.parent, plugin="greeter") as p:
        assert p.id == "acme/greeter"


def test_ambient_env_cannot_change_the_harness(
    greeter_dir: Path, make_plugin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = make_plugin(
        "x", "id: acme/x\nversion: 0.1.0\nentrypoint: main\n", "", root=tmp_path / "more"
    )
    monkeypatch.setenv("PLUGHUB_PLUGINS_PATH", str(extra.parent))
    monkeypatch.setenv("PLUGHUB_DENY_PLUGINS", "greeter")
    monkeypatch.setenv("PLUGHUB_LOAD_PLUGINS", "nothing")
    with load_plugin(greeter_dir) as p:
        assert [i.id for i in p.host.plugins()] == ["acme/greeter"]
        assert p.call("greet", name="A").text == "Hello, A"
    assert os.environ["PLUGHUB_DENY_PLUGINS"] == "greeter"  # restored


# -- explicit objects -------------------------------------------------------------------------


def test_harness_on_an_explicit_plugin_class() -> None:
    Counter.torn_down.clear()
    with load_plugin(Counter) as p:
        assert p.tools == ["count"]
        assert p.examples == [] and p.run_examples() == []
        # the only tool may be left out
        assert p.call(n=2).text == "c0\nc1"
        events = p.stream("count", n=2)
        assert isinstance(events[-1], ToolResult)
        assert [type(e) for e in events[:-1]].count(Progress) == 2
        assert asyncio.run(p.acall("count", n=1)).text == "c0"
        assert Counter.torn_down == []
    assert Counter.torn_down == [True]  # leaving the block closed the host


def test_harness_on_a_plain_function() -> None:
    with load_plugin(double) as p:
        assert p.call(x=21).structured == 42


def test_fixture_factory_yields_a_harness(counter: PluginHarness) -> None:
    assert counter.call("count", n=3).text == "c0\nc1\nc2"


# -- assertion helpers ------------------------------------------------------------------------

OK = ToolResult.from_dict({"content": [{"type": "text", "text": "all good"}]})
ERR = ToolResult.error("the disk is full", "tool_error")


def test_assert_ok_returns_success_and_fails_with_the_error_text() -> None:
    assert assert_ok(OK) is OK
    with pytest.raises(AssertionError, match=r"tool_error.*the disk is full"):
        assert_ok(ERR)


def test_assert_error_checks_reason_and_text() -> None:
    assert assert_error(ERR, reason="tool_error", contains="disk") is ERR
    with pytest.raises(AssertionError, match="got success: all good"):
        assert_error(OK)
    with pytest.raises(AssertionError, match=r"'timeout', got 'tool_error': the disk is full"):
        assert_error(ERR, reason="timeout")
    with pytest.raises(AssertionError, match="contain 'memory'"):
        assert_error(ERR, contains="memory")


def test_keyword_expressions() -> None:
    assert keyword_matches("greet", "greet[0]")
    assert keyword_matches("GREET", "greet[0]")
    assert not keyword_matches("not greet", "greet[0]")
    assert keyword_matches("(a or b) and not c", "xb")
    assert not keyword_matches("a and b", "a")
    assert keyword_matches("", "anything")
    for bad in ("(a", "a and", "and a", "a b", ")"):
        with pytest.raises(UsageError):
            keyword_matches(bad, "a")


def test_tool_error_is_not_swallowed_as_success() -> None:
    class Bad(Plugin):
        @tool
        def go(self) -> str:
            """Fail."""
            raise ToolError("no")

    with load_plugin(Bad) as p, pytest.raises(AssertionError, match="no"):
        assert_ok(p.call())
