"""``PluginHost.refresh``: a running host picks up installs, upgrades, rollbacks, removals and
enable/disable made in its home (what a daemon does when an install task ends)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _installing import PID, installer, write_plugin

from plughub import PluginHost
from plughub.errors import PluginDisabled, PluginNotFound

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")


def test_refresh_follows_the_home(tmp_path: Path) -> None:
    home, src = tmp_path / "home", tmp_path / "src"
    inst = installer(home, tmp_path / "cache")
    with PluginHost(entry_points=False, home=home) as host:
        assert host.refresh() == []
        with pytest.raises(PluginNotFound):
            host.resolve(PID, "forecast")

        inst.install(write_plugin(src, "1.0.0", runtime="inprocess"), yes=True)
        assert host.refresh() == [PID]
        assert host.invoke(PID, "forecast", {"city": "Oslo"}).text == "sunny in Oslo (v1.0.0)"
        assert host.refresh() == []  # nothing changed: the loaded plugin stays loaded
        assert host.plugin(PID).status == "loaded"

        inst.upgrade(PID, write_plugin(src, "1.1.0", runtime="inprocess"), yes=True)
        assert host.refresh() == [PID]
        assert host.invoke(PID, "forecast", {"city": "Oslo"}).text == "sunny in Oslo (v1.1.0)"
        assert host.plugin(PID).version == "1.1.0"

        inst.rollback(PID)
        assert host.refresh() == [PID]
        assert host.invoke(PID, "forecast", {"city": "Oslo"}).text == "sunny in Oslo (v1.0.0)"

        inst.disable(PID)
        assert host.refresh() == [PID]
        assert host.plugin(PID).status == "disabled"
        with pytest.raises(PluginDisabled):
            host.resolve(PID, "forecast")
        inst.enable(PID)
        assert host.refresh() == [PID]
        assert host.invoke(PID, "forecast", {"city": "Oslo"}).text == "sunny in Oslo (v1.0.0)"

        inst.uninstall(PID)
        assert host.refresh() == [PID]
        with pytest.raises(PluginNotFound):
            host.resolve(PID, "forecast")
        assert [p.id for p in host.plugins()] == []


def test_refresh_stops_the_old_worker(tmp_path: Path) -> None:
    home, src = tmp_path / "home", tmp_path / "src"
    inst = installer(home, tmp_path / "cache")
    inst.install(write_plugin(src, "1.0.0"), yes=True)  # runtime: worker
    with PluginHost(entry_points=False, home=home) as host:
        assert host.invoke(PID, "forecast", {"city": "Lima"}).text == "sunny in Lima (v1.0.0)"
        inst.upgrade(PID, write_plugin(src, "2.0.0"), yes=True)
        assert host.refresh() == [PID]
        assert host.invoke(PID, "forecast", {"city": "Lima"}).text == "sunny in Lima (v2.0.0)"


def test_refresh_without_a_home_is_a_no_op(tmp_path: Path) -> None:
    with PluginHost(entry_points=False) as host:
        assert host.refresh() == []
