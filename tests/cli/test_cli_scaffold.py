"""``new`` and ``test``: the scaffold passes its own checks; wrong expectations fail."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plughub.cli import app
from plughub.cli._scaffold import class_name
from plughub.manifest import load_manifest

runner = CliRunner()


def test_new_then_test_passes_with_the_real_script(sh, tmp_path: Path) -> None:
    made = sh("new", "my_tool", "--dir", str(tmp_path), "--author", "acme", plugins=False)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "my_tool"
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == {
        "plugin.yaml",
        "plugin.py",
        "README.md",
        "tests/test_plugin.py",
    }
    manifest = load_manifest(folder / "plugin.yaml")
    assert manifest.id == "acme/my_tool" and len(manifest.examples) == 3
    checked = sh("test", str(folder), plugins=False)
    out = checked.stdout.decode()
    assert checked.returncode == 0, out + checked.stderr.decode()
    assert "3/3 examples passed" in out and "4 passed" in out
    # the scaffold is immediately callable too
    called = sh(
        "--plugins-dir", str(folder), "invoke", "my_tool", "greet", "name=Ada", plugins=False
    )
    assert called.returncode == 0 and called.stdout == b"Hello, Ada.\n"


def test_new_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["new", "taken", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "not overwriting" in result.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "taken" / "plugin.yaml").exists()
    # an existing *empty* folder is fine
    (tmp_path / "empty").mkdir()
    assert runner.invoke(app, ["new", "empty", "--dir", str(tmp_path)]).exit_code == 0


@pytest.mark.parametrize("name", ["Bad", "-dash", "has space", "dot.name", "x" * 65, ""])
def test_new_refuses_an_invalid_name(tmp_path: Path, name: str) -> None:
    result = runner.invoke(app, ["new", "--dir", str(tmp_path), "--", name])
    assert result.exit_code == 2
    assert "invalid plugin name" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_new_refuses_an_invalid_author(tmp_path: Path) -> None:
    result = runner.invoke(app, ["new", "ok", "--dir", str(tmp_path), "--author", "Bad Author"])
    assert result.exit_code == 2 and "invalid plugin author" in result.stderr


def test_class_names_are_identifiers() -> None:
    assert class_name("weather") == "WeatherPlugin"
    assert class_name("my-cool_plugin") == "MyCoolPlugin"
    assert class_name("2fa").isidentifier()


WRONG = """\
id: acme/wrong
version: 0.1.0
entrypoint: plugin
examples:
  - tool: add
    args: {a: 1, b: 2}
    expect:
      structured: 3
  - tool: add
    args: {a: 1, b: 2}
    expect:
      text_contains: "4"
  - tool: nosuch
    args: {}
"""

ADD = '''\
from plughub.sdk import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
'''


def test_test_fails_when_an_expectation_is_wrong(tmp_path: Path, new_plugin) -> None:
    folder = new_plugin(tmp_path / "wrong", WRONG, ADD)
    result = runner.invoke(app, ["test", str(folder)])
    assert result.exit_code == 1, result.output
    assert "add[0]" in result.stdout and "pass" in result.stdout
    assert "FAIL" in result.stdout and "text does not contain '4'" in result.stdout
    assert "nosuch[2]" in result.stdout and "ToolNotFound" in result.stdout
    # -k narrows the run to the passing example
    narrowed = runner.invoke(app, ["test", str(folder), "-k", "add and not nosuch", "--json"])
    report = json.loads(narrowed.stdout)
    assert [e["index"] for e in report["examples"]] == [0, 1]
    assert report["passed"] is False and narrowed.exit_code == 1
    only_first = runner.invoke(app, ["test", str(folder), "-k", "add[0]"])
    assert only_first.exit_code == 0, only_first.output


def test_test_subprocess_exit_1_on_wrong_expectation(sh, tmp_path: Path, new_plugin) -> None:
    folder = new_plugin(tmp_path / "wrong", WRONG, ADD)
    proc = sh("test", str(folder), "--json", plugins=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert [e["passed"] for e in report["examples"]] == [True, False, False]


def test_test_runs_pytest_and_fails_when_it_fails(tmp_path: Path, new_plugin) -> None:
    folder = new_plugin(tmp_path / "ok", "id: acme/ok\nversion: 0.1.0\nentrypoint: plugin\n", ADD)
    (folder / "tests").mkdir()
    (folder / "tests" / "test_fails.py").write_text("def test_no():\n    assert 1 == 2\n")
    result = runner.invoke(app, ["test", str(folder), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["examples"] == [] and report["pytest"]["exit_code"] == 1
    assert "1 failed" in result.stderr  # pytest's output goes to stderr with --json


def test_test_counts_no_collected_tests_as_passing(tmp_path: Path, new_plugin) -> None:
    folder = new_plugin(tmp_path / "ok", "id: acme/ok\nversion: 0.1.0\nentrypoint: plugin\n", ADD)
    (folder / "tests").mkdir()
    result = runner.invoke(app, ["test", str(folder)])
    assert result.exit_code == 0, result.output
    assert "no examples declared" in result.stdout


def test_test_on_a_seed_style_plugin_without_examples(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "tools.py").write_text(ADD)
    result = runner.invoke(app, ["test", str(seed / "tools.py")])
    assert result.exit_code == 0, result.output
    assert "no examples declared" in result.stdout


def test_test_reports_a_plugin_that_fails_to_load(tmp_path: Path, new_plugin) -> None:
    folder = new_plugin(
        tmp_path / "bad",
        "id: acme/bad\nversion: 0.1.0\nentrypoint: plugin\n",
        "raise SystemExit(3)\n",
    )
    result = runner.invoke(app, ["test", str(folder)])
    assert result.exit_code == 1
    assert "acme/bad" in result.stdout and "SystemExit" in result.stdout


def test_test_ignores_ambient_plugin_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_plugin
) -> None:
    folder = new_plugin(tmp_path / "ok", "id: acme/ok\nversion: 0.1.0\nentrypoint: plugin\n", ADD)
    other = new_plugin(
        tmp_path / "other" / "x", "id: acme/x\nversion: 0.1.0\nentrypoint: plugin\n", ADD
    )
    monkeypatch.setenv("PLUGHUB_PLUGINS_PATH", str(other.parent))
    monkeypatch.setenv("PLUGHUB_DENY_PLUGINS", "acme/ok")
    result = runner.invoke(app, ["test", str(folder)])
    assert result.exit_code == 0, result.output


def test_test_usage_errors_exit_2(tmp_path: Path, new_plugin) -> None:
    assert runner.invoke(app, ["test", str(tmp_path / "missing")]).exit_code == 2
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["test", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no plugin found" in empty.stderr
    new_plugin(tmp_path / "two" / "a", "id: acme/a\nversion: 0.1.0\nentrypoint: plugin\n", ADD)
    new_plugin(tmp_path / "two" / "b", "id: acme/b\nversion: 0.1.0\nentrypoint: plugin\n", ADD)
    two = runner.invoke(app, ["test", str(tmp_path / "two")])
    assert two.exit_code == 2 and "2 plugins" in two.stderr


def test_manifest_problem_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "badyaml"
    folder.mkdir()
    (folder / "plugin.yaml").write_text(
        textwrap.dedent("""\
        id: acme/badyaml
        version: one
        entrypoint: plugin
    """)
    )
    (folder / "plugin.py").write_text(ADD)
    result = runner.invoke(app, ["test", str(folder)])
    assert result.exit_code == 1
    assert "semantic version" in result.stdout
