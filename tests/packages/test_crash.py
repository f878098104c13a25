"""SIGKILL in every install phase, for a fresh install and for an upgrade: after ``recover``,
the plugin is fully at the old version (or absent) or fully at the new one, never between.

The install runs in a subprocess whose ``on_event`` kills its own process (SIGKILL: no cleanup
code runs) when a given event arrives: the start of each phase, and inside ``activate`` after
the new version folder is renamed into place and after ``current`` is switched (the commit
point). "Fully" means that ``state.json``, the ``current`` symlink, the version folders, the
environments, what a host reads and what a host runs all agree.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _installing import PID, active, layout, write_plugin

from plughub import PluginHost
from plughub.packages import PHASES, Installer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only (SIGKILL, symlinks)")

SCRIPT = """
import os, signal, sys
from plughub.packages import Installer

home, cache, source, mode, phase, status, nth = sys.argv[1:]
seen = 0

def on_event(event):
    global seen
    if event["phase"] == phase and event["status"] == status:
        seen += 1
        if seen == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)

inst = Installer(home, allow_unsigned=True, cache_dir=cache)
if mode == "install":
    inst.install(source, yes=True, on_event=on_event)
else:
    inst.upgrade("acme/weather", source, yes=True, on_event=on_event)
print("completed")
"""

# (phase, status, nth event of that kind, the version that must be active afterwards)
KILL_POINTS = [
    *((phase, "start", 1, "old") for phase in PHASES),
    ("activate", "progress", 1, "old"),  # versions/<new> renamed into place, current not switched
    ("activate", "progress", 2, "new"),  # current switched, state.json not written yet
]
REQS = {"requirements": ["tinydep"], "wheels": ["tinydep"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sources of 1.0.0 and 2.0.0, a warm uv cache, and a home with 1.0.0 installed."""
    root = tmp_path_factory.mktemp("crash")
    cache = root / "uv-cache"
    v1 = write_plugin(root / "src", "1.0.0", **REQS)  # type: ignore[arg-type]
    v2 = write_plugin(root / "src", "2.0.0", **REQS)  # type: ignore[arg-type]
    with_v1 = root / "home-v1"
    Installer(with_v1, allow_unsigned=True, cache_dir=cache).install(v1, yes=True)
    return {"cache": cache, "v1": v1, "v2": v2, "home_v1": with_v1}


def run_killed(
    home: Path, cache: Path, source: Path, mode: str, point: tuple[str, str, int]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHUB_")}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(home), str(cache), str(source), mode, *map(str, point)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)


def assert_fully_at(home: Path, version: str | None, installed: list[str]) -> None:
    """state.json, current, version folders, envs, the host's view and the running code agree."""
    on_disk = layout(home)
    if version is None:
        assert on_disk["exists"] is False, on_disk
        assert active(home) == {}
        assert not (home / "envs" / "acme__weather").exists()
        return
    assert on_disk["current"] == f"versions/{version}", on_disk
    assert on_disk["leftovers"] == [], on_disk
    assert on_disk["versions"] == installed, on_disk
    state = on_disk["state"]
    assert state["current"] == version and sorted(state["versions"]) == installed, state
    assert state["granted"] == ["network:api.example.com"]
    assert [e.split("-")[0] for e in on_disk["envs"]] == installed, on_disk
    assert active(home) == {PID: version}
    code = home / "plugins" / "acme__weather" / "versions" / version / "main.py"
    assert f"(v{version})" in code.read_text()
    with PluginHost(entry_points=False, home=home) as host:
        (info,) = host.plugins()
        assert (info.version, info.source) == (version, f"installed:{version}")
        result = host.invoke(PID, "forecast", {"city": "Nice"})
        assert result.text == f"sunny in Nice (v{version})", result


@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda p: f"{p[0]}-{p[1]}{p[2]}")
def test_sigkill_during_a_fresh_install(
    point: tuple[str, str, int, str], world: dict[str, Path], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    run_killed(home, world["cache"], world["v1"], "install", point[:3])
    Installer(home).recover()
    if point[3] == "old":
        assert_fully_at(home, None, [])
    else:
        assert_fully_at(home, "1.0.0", ["1.0.0"])
    if point[:3] == ("activate", "progress", 1):  # the most littered case: installing again works
        inst = Installer(home, allow_unsigned=True, cache_dir=world["cache"])
        assert inst.install(world["v1"], yes=True).changed
        assert_fully_at(home, "1.0.0", ["1.0.0"])


@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda p: f"{p[0]}-{p[1]}{p[2]}")
def test_sigkill_during_an_upgrade(
    point: tuple[str, str, int, str], world: dict[str, Path], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(world["home_v1"], home, symlinks=True)
    run_killed(home, world["cache"], world["v2"], "upgrade", point[:3])
    Installer(home).recover()
    if point[3] == "old":
        assert_fully_at(home, "1.0.0", ["1.0.0"])
    else:
        assert_fully_at(home, "2.0.0", ["1.0.0", "2.0.0"])


def test_a_host_reading_during_the_lag_sees_the_new_version_with_its_grants(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """Killed between the switch and state.json: before any recovery, a reader already sees a
    complete new version, with the grant recorded in that version's own install record."""
    home = tmp_path / "home"
    shutil.copytree(world["home_v1"], home, symlinks=True)
    run_killed(home, world["cache"], world["v2"], "upgrade", ("activate", "progress", 2))
    assert layout(home)["state"]["current"] == "1.0.0"  # state.json lags behind the symlink
    with PluginHost(entry_points=False, home=home) as host:
        (info,) = host.plugins()
        assert info.version == "2.0.0" and info.granted == ["network:api.example.com"]
