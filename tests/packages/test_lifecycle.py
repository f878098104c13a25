"""Lifecycle: upgrade (with automatic rollback), rollback, uninstall, enable/disable, pin,
cleanup; grants on upgrade; dependents protected."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _installing import PID, active, installer, layout, write_plugin

from plughub import PluginHost
from plughub.errors import InstallError, UsageError
from plughub.packages import Installer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return tmp_path / "src"


@pytest.fixture
def inst(home: Path, uv_cache: Path) -> Installer:
    return installer(home, uv_cache)


def answer(home: Path) -> str:
    with PluginHost(entry_points=False, home=home) as host:
        return host.invoke(PID, "forecast", {"city": "Rome"}).text


def test_upgrade_switches_versions_and_rollback_switches_back(
    home: Path, src: Path, inst: Installer
) -> None:
    inst.install(write_plugin(src, "1.0.0", requirements=["tinydep"], wheels=["tinydep"]), yes=True)
    result = inst.upgrade(
        PID, write_plugin(src, "1.1.0", requirements=["tinydep"], wheels=["tinydep"]), yes=True
    )
    assert (result.version, result.previous, result.changed) == ("1.1.0", "1.0.0", True)
    on_disk = layout(home)
    assert on_disk["current"] == "versions/1.1.0"
    assert on_disk["versions"] == ["1.0.0", "1.1.0"]
    assert [e.split("-")[0] for e in on_disk["envs"]] == ["1.0.0", "1.1.0"]
    assert answer(home) == "sunny in Rome (v1.1.0)"

    assert inst.rollback(PID) == "1.0.0"
    assert layout(home)["current"] == "versions/1.0.0"
    assert answer(home) == "sunny in Rome (v1.0.0)"
    state = inst.state(PID)
    assert state.current == "1.0.0" and state.source == layout(home)["state"]["source"]
    assert [h["action"] for h in state.history] == ["install", "upgrade", "rollback"]
    assert inst.rollback(PID, "1.1.0") == "1.1.0"  # forward again, to an installed version
    with pytest.raises(UsageError, match="not installed"):
        inst.rollback(PID, "0.9.0")


def test_upgrade_that_fails_its_import_check_leaves_the_old_version_active(
    home: Path, src: Path, inst: Installer
) -> None:
    inst.install(write_plugin(src, "1.0.0"), yes=True)
    before = layout(home)
    with pytest.raises(InstallError) as err:
        inst.upgrade(PID, write_plugin(src, "2.0.0", prelude="import no_such_module_here"))
    assert err.value.phase == "import-check"
    assert "no_such_module_here" in err.value.message + err.value.log_tail
    assert layout(home) == before
    assert answer(home) == "sunny in Rome (v1.0.0)"


def test_upgrade_that_fails_its_examples_leaves_the_old_version_active(
    home: Path, src: Path, inst: Installer
) -> None:
    inst.install(write_plugin(src, "1.0.0"), yes=True)
    before = layout(home)
    broken = write_plugin(src, "1.1.0", answer="it depends")
    with pytest.raises(InstallError, match="example") as err:
        inst.upgrade(PID, broken)
    assert err.value.phase == "import-check"
    assert layout(home) == before
    # the operator may skip the examples
    assert inst.upgrade(PID, broken, run_examples=False).version == "1.1.0"


def test_upgrade_asking_for_more_permissions_needs_a_new_grant(
    home: Path, src: Path, inst: Installer
) -> None:
    inst.install(write_plugin(src, "1.0.0"), yes=True)
    more = write_plugin(src, "1.1.0", network=["api.example.com", "tiles.example.com"])
    with pytest.raises(InstallError) as err:
        inst.upgrade(PID, more)
    assert err.value.phase == "verify"
    assert err.value.missing_permissions == ("network:tiles.example.com",)
    assert active(home) == {PID: "1.0.0"}
    inst.upgrade(PID, more, grant={"network:tiles.example.com"})
    assert inst.state(PID).granted == ["network:api.example.com", "network:tiles.example.com"]
    with PluginHost(entry_points=False, home=home) as host:
        assert host.plugins()[0].granted == inst.state(PID).granted


def test_upgrade_refuses_older_versions_pinned_plugins_and_plugins_not_installed(
    home: Path, src: Path, inst: Installer
) -> None:
    with pytest.raises(InstallError, match="not installed"):
        inst.upgrade(PID, write_plugin(src, "1.0.0"))
    inst.install(write_plugin(src, "1.0.0"), yes=True)
    inst.upgrade(PID, write_plugin(src, "1.1.0"), yes=True)
    with pytest.raises(InstallError, match="not newer"):
        inst.upgrade(PID, write_plugin(src, "1.0.1"), yes=True)
    assert inst.pin(PID, "1.0.0") == "1.0.0"  # pinning an older version activates it
    assert active(home) == {PID: "1.0.0"}
    with pytest.raises(InstallError, match=r"pinned at 1\.0\.0"):
        inst.upgrade(PID, write_plugin(src, "2.0.0"), yes=True)
    with pytest.raises(UsageError, match="pinned"):
        inst.rollback(PID, "1.1.0")
    assert inst.unpin(PID) is True and inst.unpin(PID) is False
    assert inst.upgrade(PID, write_plugin(src, "2.0.0"), yes=True).version == "2.0.0"
    with pytest.raises(UsageError, match="not an index"):
        inst.upgrade(PID)  # no source, and it did not come from an index


def test_uninstall_is_refused_while_another_plugin_depends_on_it(
    home: Path, src: Path, inst: Installer
) -> None:
    inst.install(
        write_plugin(src, pid="acme/base", requirements=["tinydep"], wheels=["tinydep"]), yes=True
    )
    inst.install(write_plugin(src, dependencies={"acme/base": ">=1,<2"}), yes=True)
    assert inst.dependents("acme/base") == [PID]
    with pytest.raises(UsageError, match="acme/weather depend"):
        inst.uninstall("acme/base")
    assert active(home) == {"acme/base": "1.0.0", PID: "1.0.0"}
    # an upgrade of the dependency that would break the dependent is refused too
    with pytest.raises(InstallError, match=r"acme/weather needs acme/base >=1,<2; 2\.0\.0") as err:
        inst.upgrade("acme/base", write_plugin(src, "2.0.0", pid="acme/base"), yes=True)
    assert err.value.phase == "resolve"

    assert inst.uninstall(PID) == ["1.0.0"]
    assert inst.uninstall("acme/base") == ["1.0.0"]
    assert active(home) == {}
    assert list((home / "plugins").iterdir()) == []
    assert not (home / "envs" / "acme__base").exists()


def test_forced_uninstall_leaves_dependents_failing_to_load(
    home: Path, src: Path, inst: Installer
) -> None:
    inst.install(write_plugin(src, pid="acme/base"), yes=True)
    inst.install(write_plugin(src, dependencies={"acme/base": ">=1"}), yes=True)
    inst.uninstall("acme/base", force=True)
    with PluginHost(entry_points=False, home=home) as host:
        (info,) = host.plugins()
        assert info.status == "failed" and "acme/base" in (info.error or "")
    with pytest.raises(UsageError, match="not installed"):
        inst.uninstall("acme/base")


def test_cleanup_removes_inactive_versions_and_their_environments(
    home: Path, src: Path, inst: Installer
) -> None:
    reqs = {"requirements": ["tinydep"], "wheels": ["tinydep"]}
    for i, v in enumerate(["1.0.0", "1.1.0", "1.2.0"]):
        folder = write_plugin(src, v, **reqs)  # type: ignore[arg-type]
        (inst.install if i == 0 else lambda f, **k: inst.upgrade(PID, f, **k))(folder, yes=True)
    assert layout(home)["versions"] == ["1.0.0", "1.1.0", "1.2.0"]
    assert inst.cleanup(PID) == {PID: ["1.0.0"]}  # keeps the newest inactive one
    on_disk = layout(home)
    assert on_disk["versions"] == ["1.1.0", "1.2.0"]
    assert [e.split("-")[0] for e in on_disk["envs"]] == ["1.1.0", "1.2.0"]
    assert sorted(on_disk["state"]["versions"]) == ["1.1.0", "1.2.0"]
    assert inst.cleanup(keep=0) == {PID: ["1.1.0"]}
    assert layout(home)["versions"] == ["1.2.0"]
    assert inst.cleanup() == {}
    with pytest.raises(UsageError, match="no other installed version"):
        inst.rollback(PID)
    assert answer(home) == "sunny in Rome (v1.2.0)"


def test_enable_disable_and_pin_are_recorded_in_state_and_history(
    home: Path, src: Path, inst: Installer
) -> None:
    inst.install(write_plugin(src), yes=True)
    assert inst.disable(PID) is True and inst.disable(PID) is False
    assert inst.state(PID).enabled is False
    assert inst.enable(PID) is True
    assert inst.pin(PID) == "1.0.0"
    state = inst.state(PID)
    assert state.pinned == "1.0.0" and state.enabled is True
    assert [h["action"] for h in state.history] == ["install", "disable", "enable", "pin"]
    for op in (inst.enable, inst.disable, inst.unpin):
        with pytest.raises(UsageError, match="not installed"):
            op("acme/nothing")
