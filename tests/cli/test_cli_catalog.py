"""``list``, ``info``, ``tools`` and ``version``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plughub import __version__
from plughub.host import FORMATS


def test_list_json_reads_manifests_without_importing_code(cli) -> None:
    result = cli("list", "--json")
    assert result.exit_code == 0, result.output
    infos = {p["id"]: p for p in json.loads(result.stdout)}
    assert set(infos) == {"acme/greet", "acme/solo", "acme/broken"}
    # nothing imported yet: the broken plugin is not known to be broken, and no tools are listed
    assert infos["acme/broken"]["status"] == "available"
    assert all(p["tools"] is None for p in infos.values())
    assert infos["acme/greet"]["version"] == "1.2.0"


def test_list_load_shows_tools_and_the_broken_plugin_failing(cli) -> None:
    result = cli("list", "--json", "--load")
    infos = {p["id"]: p for p in json.loads(result.stdout)}
    assert infos["acme/greet"]["status"] == "loaded"
    assert infos["acme/greet"]["tools"] == ["count", "echo", "fail", "hello"]
    assert infos["acme/broken"]["status"] == "failed"
    assert "plughub_missing_module_for_tests" in infos["acme/broken"]["error"]


def test_list_table_shows_status_and_tool_counts(cli) -> None:
    result = cli("list", "--load")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert "failed" in lines["acme/broken"]
    assert "loaded" in lines["acme/greet"] and " 4 " in lines["acme/greet"]
    assert "ModuleNotFoundError" in result.stdout
    # without --load nothing is imported, so the tools column is "-"
    plain = cli("list")
    assert "available" in plain.stdout and "failed" not in plain.stdout


def test_list_subprocess_json_and_broken_plugin_does_not_stop_the_good_one(sh) -> None:
    listed = sh("list", "--json", "--load")
    assert listed.returncode == 0, listed.stderr
    status = {p["id"]: p["status"] for p in json.loads(listed.stdout)}
    assert status == {"acme/broken": "failed", "acme/greet": "loaded", "acme/solo": "loaded"}
    called = sh("invoke", "greet", "hello", "name=Ann")
    assert called.returncode == 0, called.stderr
    assert called.stdout.decode() == "Hello Ann!\n"


def test_env_plugins_path_is_honoured(sh, plugins_dir: Path) -> None:
    proc = sh("list", "--json", plugins=False, extra_env={"PLUGHUB_PLUGINS_PATH": str(plugins_dir)})
    assert proc.returncode == 0, proc.stderr
    assert {p["id"] for p in json.loads(proc.stdout)} >= {"acme/greet", "acme/solo"}


def test_missing_plugins_dir_is_a_usage_error(cli, tmp_path: Path) -> None:
    result = cli("list", global_args=("--plugins-dir", str(tmp_path / "nope")))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.output


def test_allow_and_deny_filter_what_may_load(cli, plugins_dir: Path) -> None:
    base = ("--plugins-dir", str(plugins_dir), "--no-entry-points")
    allowed = cli("list", "--json", global_args=(*base, "--allow", "greet, solo"))
    status = {p["id"]: p["status"] for p in json.loads(allowed.stdout)}
    assert status["acme/broken"] == "denied" and status["acme/greet"] == "available"
    denied = cli("invoke", "greet", "hello", "name=x", global_args=(*base, "--deny", "acme/greet"))
    assert denied.exit_code == 2
    assert "acme/greet" in denied.stderr


def test_info_shows_tools_schemas_and_permissions(cli) -> None:
    result = cli("info", "greet", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "loaded" and data["permissions"] == []
    specs = {s["name"]: s for s in data["specs"]}
    assert specs["hello"]["description"] == "Say hello."
    assert specs["hello"]["input_schema"]["properties"]["name"]["description"] == "Who to greet."
    text = cli("info", "acme/greet")
    assert text.exit_code == 0
    assert "greet__hello" in text.stdout and "Who to greet." in text.stdout


def test_info_on_a_broken_plugin_reports_the_error_and_exits_2(cli) -> None:
    result = cli("info", "broken")
    assert result.exit_code == 2
    assert "failed" in result.stdout and "plughub_missing_module_for_tests" in result.stdout
    assert result.stderr.count("\n") == 1 and "acme/broken" in result.stderr
    unknown = cli("info", "nope")
    assert unknown.exit_code == 2 and "no such plugin" in unknown.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_tools_in_every_format_use_llm_names(cli, fmt: str) -> None:
    result = cli("tools", "--format", fmt)
    assert result.exit_code == 0, result.output
    tools = json.loads(result.stdout)
    names = {t["function"]["name"] if fmt == "openai" else t["name"] for t in tools}
    assert names == {"greet__hello", "greet__fail", "greet__echo", "greet__count", "solo__add"}
    # the broken plugin is skipped with a warning, not a failure
    assert "acme/broken" in result.stderr


def test_tools_subprocess_all_formats(sh) -> None:
    for fmt in FORMATS:
        proc = sh("tools", "--format", fmt, "--plugin", "solo")
        assert proc.returncode == 0, proc.stderr
        tools = json.loads(proc.stdout)
        name = tools[0]["function"]["name"] if fmt == "openai" else tools[0]["name"]
        assert name == "solo__add"
    assert sh("tools").returncode == 0
    assert json.loads(sh("tools").stdout)[0]["type"] == "function"


def test_tools_plugin_filter_and_strict_passthrough(cli) -> None:
    only = json.loads(cli("tools", "--plugin", "solo", "--strict").stdout)
    assert [t["function"]["name"] for t in only] == ["solo__add"]
    assert only[0]["function"]["strict"] is True
    loose = json.loads(cli("tools", "-p", "solo", "--no-strict", "-f", "responses").stdout)
    assert loose[0]["strict"] is False
    # hello has an optional argument, so strict mode cannot be demanded
    impossible = cli("tools", "--plugin", "greet", "--strict")
    assert impossible.exit_code == 2 and "strict" in impossible.stderr


def test_tools_bad_options_exit_2(cli) -> None:
    assert cli("tools", "--format", "xml").exit_code == 2
    assert cli("tools", "--format", "mcp", "--strict").exit_code == 2
    failed = cli("tools", "--plugin", "broken")
    assert failed.exit_code == 2 and "acme/broken" in failed.stderr


def test_version(cli) -> None:
    result = cli("version")
    assert result.exit_code == 0 and result.stdout.strip() == f"plughub {__version__}"
