"""``install``, ``upgrade``, ``rollback``, ``pin``/``unpin``, ``enable``/``disable``,
``cleanup``, ``uninstall``, ``search`` and what ``list`` shows about installed plugins."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from plughub.cli import app
from plughub.packages import build_package, read_package

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages"))
from _installing import PID, active, write_plugin

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")

GRANT = ("--grant", "network:api.example.com")


@pytest.fixture
def home() -> Path:
    return Path(os.environ["PLUGHUB_HOME"])  # a fresh folder per test (tests/conftest.py)


def run(*args: str, input: str | None = None) -> Result:
    runner = CliRunner(env={"COLUMNS": "160"})
    return runner.invoke(app, ["--no-entry-points", *args], input=input)


def test_install_shows_permissions_and_refuses_without_a_grant_when_not_interactive(
    tmp_path: Path, home: Path
) -> None:
    folder = write_plugin(tmp_path, network=["api.example.com", "cdn.example.com"])
    result = run("install", str(folder), "--allow-unsigned")
    assert result.exit_code == 2, result.output
    assert "acme/weather 1.0.0 requests these permissions" in result.stderr
    assert "network:cdn.example.com  (new)" in result.stderr
    assert "--grant TOKEN" in result.stderr and "--yes" in result.stderr
    assert active(home) == {}

    result = run("install", str(folder), "--allow-unsigned", *GRANT)
    assert result.exit_code == 2 and "network:cdn.example.com" in result.stderr
    assert "network:api.example.com;" not in result.stderr  # only what is still missing

    result = run("install", str(folder), "--allow-unsigned", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("installed acme/weather 1.0.0 in ")
    # without a terminal, one line per finished phase
    for phase in ("verify", "unpack", "resolve", "environment", "import-check", "activate"):
        assert f"\n{phase}" in "\n" + result.stderr, result.stderr


def test_install_asks_on_a_terminal(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("plughub.cli._lifecycle._interactive", lambda: True)
    folder = write_plugin(tmp_path)
    refused = run("install", str(folder), "--allow-unsigned", input="n\n")
    assert refused.exit_code == 1 and "not granted" in refused.stderr
    assert active(home) == {}
    accepted = run("install", str(folder), "--allow-unsigned", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "Grant network:api.example.com to acme/weather?" in accepted.output
    assert active(home) == {PID: "1.0.0"}


def test_list_shows_version_source_status_and_granted_permissions(
    tmp_path: Path, home: Path
) -> None:
    folder = write_plugin(tmp_path)
    assert run("install", str(folder), "--allow-unsigned", *GRANT).exit_code == 0
    table = run("list")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.startswith(PID))
    for text in ("1.0.0", "worker", "available", "folder:", "network:api.example.com"):
        assert text in table.stdout, (text, table.stdout)
    assert "available" in row
    (info,) = json.loads(run("list", "--json").stdout)
    assert info["source"] == "installed:1.0.0"
    assert info["granted"] == ["network:api.example.com"]
    assert info["runtime"] == "worker"
    shown = run("info", PID)
    assert "granted" in shown.stdout and "installed:1.0.0" in shown.stdout
    assert run("invoke", PID, "forecast", "city=Lyon").stdout.strip() == "sunny in Lyon (v1.0.0)"

    assert run("disable", PID).stdout.strip() == "acme/weather disabled"
    assert "disabled" in run("list").stdout
    assert run("invoke", PID, "forecast", "city=Lyon").exit_code == 2
    assert run("enable", PID).stdout.strip() == "acme/weather enabled"


def test_failed_install_exits_1_with_the_phase_and_the_log_tail(tmp_path: Path, home: Path) -> None:
    folder = write_plugin(tmp_path, prelude="raise RuntimeError('no luck at import')")
    result = run("install", str(folder), "--allow-unsigned", "--yes")
    assert result.exit_code == 1, result.output
    assert "error: acme/weather: import-check failed: the plugin does not load" in result.stderr
    assert "--- log (last lines) ---" in result.stderr
    assert "no luck at import" in result.stderr
    assert active(home) == {}


def test_upgrade_rollback_pin_cleanup_uninstall(tmp_path: Path, home: Path) -> None:
    v1, v2, v3 = (write_plugin(tmp_path, v) for v in ("1.0.0", "1.1.0", "1.2.0"))
    assert run("install", str(v1), "--allow-unsigned", *GRANT).exit_code == 0
    up = run("upgrade", PID, str(v2), "--allow-unsigned")
    assert up.exit_code == 0, up.output
    assert "installed acme/weather 1.1.0 (was 1.0.0)" in up.stdout
    assert run("rollback", PID).stdout.strip() == "acme/weather is at 1.0.0"
    assert run("pin", PID).stdout.strip() == "acme/weather is pinned at 1.0.0"
    refused = run("upgrade", PID, str(v3), "--allow-unsigned")
    assert refused.exit_code == 1 and "pinned at 1.0.0" in refused.stderr
    assert run("unpin", PID).stdout.strip() == "acme/weather unpinned"
    assert run("upgrade", PID, str(v3), "--allow-unsigned", "--json").exit_code == 0
    assert active(home) == {PID: "1.2.0"}
    cleaned = run("cleanup", "--keep", "0")
    assert cleaned.stdout.strip() == "acme/weather: removed 1.1.0, 1.0.0"
    assert run("uninstall", PID).stdout.strip() == "uninstalled acme/weather (1.2.0)"
    gone = run("uninstall", PID)
    assert gone.exit_code == 2 and "not installed" in gone.stderr
    usage = run("upgrade")
    assert usage.exit_code == 2 and "--all" in usage.stderr


def test_search_install_and_upgrade_all_from_an_index(tmp_path: Path, home: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    versions = {}
    for v in ("1.0.0", "1.1.0"):
        pkg = build_package(write_plugin(tmp_path / "src", v), index / f"weather-{v}.plughub")
        versions[v] = {"url": pkg.name, "checksum": read_package(pkg).checksum}
    catalogue = {"plugins": {PID: {"description": "Weather for tests", "versions": versions}}}
    (index / "index.json").write_text(json.dumps(catalogue))

    found = run("search", "weather", "--index", str(index))
    assert found.exit_code == 0 and PID in found.stdout and "1.1.0" in found.stdout
    as_json = json.loads(run("search", "--index", str(index), "--json").stdout)
    assert as_json == [
        {
            "id": PID,
            "description": "Weather for tests",
            "latest": "1.1.0",
            "versions": ["1.0.0", "1.1.0"],
        }
    ]
    assert run("search", "weather").exit_code == 2  # no index given

    args = ("--index", str(index), "--allow-unsigned", *GRANT)
    assert run("install", f"{PID}@1.0.0", *args).exit_code == 0
    upgraded = run("upgrade", "--all", "--allow-unsigned")
    assert upgraded.exit_code == 0, upgraded.output
    assert active(home) == {PID: "1.1.0"}
    again = run("upgrade", "--all")
    assert again.exit_code == 0 and "is up to date" in again.stderr
