"""The install pipeline: phases in order with live events, every source, and every bad input
failing in its phase with nothing half-installed."""

from __future__ import annotations

import functools
import http.server
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _installing import PID, active, installer, layout, package, write_plugin

from plughub import PluginHost
from plughub.errors import InstallError, PluginDisabled, UsageError
from plughub.packages import (
    PHASES,
    Installer,
    SigningKey,
    TrustStore,
    load_index,
    open_source,
    read_package,
    recover,
)

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


class Events(list[dict[str, Any]]):
    def __call__(self, event: dict[str, Any]) -> None:
        self.append(event)

    def statuses(self) -> list[tuple[str, str]]:
        return [(e["phase"], e["status"]) for e in self if e["status"] != "progress"]


def assert_nothing_installed(home: Path, pid: str = PID) -> None:
    assert layout(home, pid)["exists"] is False
    assert pid not in active(home)
    assert not (home / "envs" / pid.replace("/", "__")).exists()


# --------------------------------------------------------------------------------------------
# The happy path
# --------------------------------------------------------------------------------------------


def test_signed_package_installs_through_every_phase_and_the_host_serves_it(
    home: Path, src: Path, tmp_path: Path, uv_cache: Path
) -> None:
    key = SigningKey.generate()
    trust = TrustStore(home / "trust")
    trust.add(key.public_bytes())
    pkg = package(
        write_plugin(src, requirements=["tinydep"], wheels=["tinydep"]), tmp_path / "dist", key
    )
    events = Events()
    inst = Installer(home, trust, cache_dir=uv_cache)  # signed: no allow_unsigned needed
    result = inst.install(pkg, grant={"network:api.example.com"}, on_event=events)

    assert (result.id, result.version, result.previous, result.changed) == (
        PID,
        "1.0.0",
        None,
        True,
    )
    assert result.tools == ["forecast"]
    assert events.statuses() == [(p, s) for p in PHASES for s in ("start", "done")]
    assert all(set(e) == {"plugin", "phase", "status", "message", "fraction"} for e in events)
    uv_lines = [e["message"] for e in events if e["phase"] == "environment"]
    assert any("tinydep" in line for line in uv_lines), uv_lines  # uv's output, streamed
    verify_done = next(e for e in events if e == {**e, "phase": "verify", "status": "done"})
    assert key.key_id in verify_done["message"]
    assert "network:api.example.com" in verify_done["message"]

    on_disk = layout(home)
    assert on_disk["current"] == "versions/1.0.0" and on_disk["versions"] == ["1.0.0"]
    assert on_disk["leftovers"] == []  # no staging left
    assert len(on_disk["envs"]) == 1 and on_disk["envs"][0].startswith("1.0.0-")
    state = on_disk["state"]
    assert state["id"] == PID and state["current"] == "1.0.0" and state["enabled"] is True
    assert state["granted"] == ["network:api.example.com"]
    record = state["versions"]["1.0.0"]
    assert record["source"] == f"file:{pkg}"
    assert record["key_id"] == key.key_id
    assert record["checksum"] == read_package(pkg).checksum
    assert [h["action"] for h in state["history"]] == ["install"]

    with PluginHost(entry_points=False, home=home) as host:
        (info,) = host.plugins()
        assert (info.id, info.version, info.source) == (PID, "1.0.0", "installed:1.0.0")
        assert info.runtime == "worker" and info.granted == ["network:api.example.com"]
        assert host.invoke(PID, "forecast", {"city": "Oslo"}).text == "sunny in Oslo (v1.0.0)"
        # the worker runs in the environment built at install time (no second build)
        assert layout(home)["envs"] == on_disk["envs"]


def test_installing_the_active_version_again_changes_nothing(
    home: Path, src: Path, uv_cache: Path
) -> None:
    inst = installer(home, uv_cache)
    folder = write_plugin(src)
    inst.install(folder, yes=True)
    before = layout(home)
    again = inst.install(folder, yes=True)
    assert again.changed is False and again.version == "1.0.0"
    assert layout(home) == before


def test_install_refuses_another_version_of_an_installed_plugin(
    home: Path, src: Path, uv_cache: Path
) -> None:
    inst = installer(home, uv_cache)
    inst.install(write_plugin(src, "1.0.0"), yes=True)
    with pytest.raises(InstallError, match="use upgrade") as err:
        inst.install(write_plugin(src, "2.0.0"), yes=True)
    assert err.value.phase == "verify"
    assert active(home) == {PID: "1.0.0"}


def test_installed_plugins_run_in_workers_unless_the_operator_grants_inprocess(
    home: Path, src: Path, uv_cache: Path
) -> None:
    inst = installer(home, uv_cache)
    inst.install(write_plugin(src, runtime=None), yes=True)  # no runtime key: worker
    with pytest.raises(InstallError, match="runtime:inprocess"):  # asked for, not granted
        inst.install(write_plugin(src, pid="acme/local", runtime="inprocess"), grant=set())
    inst.install(
        write_plugin(src, pid="acme/local", runtime="inprocess"),
        grant={"runtime:inprocess", "network:api.example.com"},
    )
    with PluginHost(entry_points=False, home=home) as host:
        assert host.runtime_of(PID) == "worker"
        assert host.runtime_of("acme/local") == "inprocess"


def test_host_without_home_does_not_see_installed_plugins(
    home: Path, src: Path, uv_cache: Path
) -> None:
    installer(home, uv_cache).install(write_plugin(src), yes=True)
    with PluginHost(entry_points=False) as host:
        assert host.plugins() == []


# --------------------------------------------------------------------------------------------
# Trust and permissions (verify)
# --------------------------------------------------------------------------------------------


def test_unsigned_and_untrusted_packages_fail_in_verify(
    home: Path, src: Path, tmp_path: Path, uv_cache: Path
) -> None:
    folder = write_plugin(src)
    strict = Installer(home, cache_dir=uv_cache)
    with pytest.raises(InstallError, match="not signed") as err:
        strict.install(package(folder, tmp_path / "a"), yes=True)
    assert err.value.phase == "verify"
    with pytest.raises(InstallError, match="packaged here, unsigned"):
        strict.install(folder, yes=True)  # a folder source is built unsigned
    signed = package(folder, tmp_path / "b", SigningKey.generate())
    with pytest.raises(InstallError, match="not in the trust store") as err:
        strict.install(signed, yes=True)
    assert err.value.phase == "verify"
    assert_nothing_installed(home)
    # the operator may accept an unknown key explicitly
    Installer(home, cache_dir=uv_cache, allow_untrusted=True).install(signed, yes=True)
    assert active(home) == {PID: "1.0.0"}


def test_requested_permissions_must_be_granted(home: Path, src: Path, uv_cache: Path) -> None:
    inst = installer(home, uv_cache)
    folder = write_plugin(src, network=["api.example.com", "cdn.example.com"])
    plan = inst.plan(package(folder, src / "dist"))
    assert plan.requested == ("network:api.example.com", "network:cdn.example.com")
    assert plan.missing == plan.requested

    with pytest.raises(InstallError) as err:
        inst.install(folder)
    assert err.value.phase == "verify"
    assert err.value.missing_permissions == plan.requested
    with pytest.raises(InstallError) as err:
        inst.install(folder, grant={"network:api.example.com"})
    assert err.value.missing_permissions == ("network:cdn.example.com",)
    assert_nothing_installed(home)

    result = inst.install(folder, grant={"network:api.example.com", "network:cdn.example.com"})
    assert result.granted == ["network:api.example.com", "network:cdn.example.com"]
    assert inst.state(PID).granted == result.granted


# --------------------------------------------------------------------------------------------
# Bad input and faults: each fails in its phase and leaves nothing behind
# --------------------------------------------------------------------------------------------


def test_missing_plugin_dependency_fails_in_resolve(home: Path, src: Path, uv_cache: Path) -> None:
    inst = installer(home, uv_cache)
    events = Events()
    folder = write_plugin(src, dependencies={"acme/base": ">=1.0"})
    with pytest.raises(InstallError, match=r"depends on acme/base >=1\.0, which is not installed"):
        inst.install(folder, yes=True, on_event=events)
    assert events.statuses()[-1] == ("resolve", "failed")
    assert_nothing_installed(home)


def test_unsatisfiable_dependency_range_fails_in_resolve(
    home: Path, src: Path, uv_cache: Path
) -> None:
    inst = installer(home, uv_cache)
    inst.install(write_plugin(src, pid="acme/base"), yes=True)
    folder = write_plugin(src, dependencies={"acme/base": ">=2,<3"})
    with pytest.raises(InstallError) as err:
        inst.install(folder, yes=True)
    assert err.value.phase == "resolve"
    assert "depends on acme/base >=2,<3, but 1.0.0 is installed" in err.value.message
    assert_nothing_installed(home)
    assert active(home) == {"acme/base": "1.0.0"}


def test_dependencies_that_are_installed_resolve_and_load(
    home: Path, src: Path, uv_cache: Path
) -> None:
    inst = installer(home, uv_cache)
    inst.install(write_plugin(src, pid="acme/base"), yes=True)
    inst.install(write_plugin(src, dependencies={"acme/base": ">=1,<2"}), yes=True)
    assert active(home) == {"acme/base": "1.0.0", PID: "1.0.0"}


def _broken_sdist(wheels: Path) -> None:
    """An sdist whose in-tree build backend raises: uv cannot build it (offline, no deps)."""
    files = {
        "broken-1.0/pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
        'backend-path = ["."]\n\n[project]\nname = "broken"\nversion = "1.0"\n',
        "broken-1.0/backend.py": "def _boom(*a, **k):\n"
        "    raise RuntimeError('boom: broken cannot be built')\n"
        "get_requires_for_build_wheel = lambda *a, **k: []\n"
        "prepare_metadata_for_build_wheel = build_wheel = build_sdist = _boom\n",
    }
    wheels.mkdir(parents=True, exist_ok=True)
    with tarfile.open(wheels / "broken-1.0.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_requirement_that_fails_to_build_fails_in_environment_with_uvs_log(
    home: Path, src: Path, uv_cache: Path
) -> None:
    folder = write_plugin(src, requirements=["broken"])
    _broken_sdist(folder / "wheels")
    events = Events()
    with pytest.raises(InstallError) as err:
        installer(home, uv_cache).install(folder, yes=True, on_event=events)
    assert err.value.phase == "environment"
    assert "uv pip install failed" in err.value.message
    assert "boom: broken cannot be built" in err.value.log_tail
    assert "boom" in str(err.value)
    assert events.statuses()[-1] == ("environment", "failed")
    assert_nothing_installed(home)


def test_python_requirement_missing_from_the_bundled_wheels_fails_in_environment(
    home: Path, src: Path, uv_cache: Path
) -> None:
    folder = write_plugin(src, requirements=["tinydep", "notbundled>=1"], wheels=["tinydep"])
    with pytest.raises(InstallError) as err:
        installer(home, uv_cache).install(folder, yes=True)
    assert err.value.phase == "environment"
    assert "notbundled" in err.value.log_tail
    assert_nothing_installed(home)


def test_plugin_that_does_not_import_fails_the_import_check_with_its_log(
    home: Path, src: Path, uv_cache: Path
) -> None:
    folder = write_plugin(src, prelude="raise ImportError('kaboom at import')")
    with pytest.raises(InstallError) as err:
        installer(home, uv_cache).install(folder, yes=True)
    assert err.value.phase == "import-check"
    assert "kaboom at import" in err.value.message + err.value.log_tail
    assert_nothing_installed(home)


def test_examples_run_in_the_import_check_when_asked(home: Path, src: Path, uv_cache: Path) -> None:
    folder = write_plugin(src, answer="no weather today")
    inst = installer(home, uv_cache)
    with pytest.raises(InstallError, match=r"1 of 1 example\(s\) failed") as err:
        inst.install(folder, yes=True, run_examples=True)
    assert err.value.phase == "import-check"
    assert_nothing_installed(home)
    assert inst.install(folder, yes=True).changed  # examples are not run by default


def test_a_tampered_package_fails_in_verify(home: Path, src: Path, uv_cache: Path) -> None:
    pkg = package(write_plugin(src), src / "dist")
    data = bytearray(pkg.read_bytes())
    i = data.find(b"sunny")
    data[i : i + 5] = b"rainy"
    pkg.write_bytes(bytes(data))
    with pytest.raises(InstallError) as err:
        installer(home, uv_cache).install(pkg, yes=True)
    assert err.value.phase == "verify"
    assert_nothing_installed(home)


def test_recover_removes_staging_and_uncommitted_versions(
    home: Path, src: Path, uv_cache: Path
) -> None:
    inst = installer(home, uv_cache)
    inst.install(write_plugin(src), yes=True)
    folder = home / "plugins" / "acme__weather"
    (folder / ".staging-dead").mkdir()
    (folder / "versions" / "9.9.9").mkdir()
    (folder / "current.tmp-dead").symlink_to("versions/9.9.9")
    (home / "plugins" / "acme__never").mkdir()  # an install that never reached its commit
    notes = recover(home)
    assert any("9.9.9" in n for n in notes)
    assert layout(home)["versions"] == ["1.0.0"] and layout(home)["leftovers"] == []
    assert not (folder / "current.tmp-dead").exists()
    assert not (home / "plugins" / "acme__never").exists()


# --------------------------------------------------------------------------------------------
# Sources: git and index
# --------------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
    }
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_source_pinned_to_a_tag_or_commit_installs_unsigned_only_when_allowed(
    home: Path, src: Path, uv_cache: Path
) -> None:
    repo = write_plugin(src, "1.0.0")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "v1")
    _git(repo, "tag", "v1.0.0")
    commit = _git(repo, "rev-parse", "HEAD")

    with pytest.raises(UsageError, match="pin the git source"):
        installer(home, uv_cache).install(f"git+{repo}", yes=True)
    with pytest.raises(UsageError, match="neither a tag nor a commit"):
        installer(home, uv_cache).install(f"git+{repo}#main", yes=True)
    with pytest.raises(InstallError, match="unsigned"):
        Installer(home, cache_dir=uv_cache).install(f"git+{repo}#v1.0.0", yes=True)

    result = installer(home, uv_cache).install(f"git+{repo}#v1.0.0", yes=True)
    assert result.source == f"git:{repo}#v1.0.0@{commit[:12]}"
    installer(home, uv_cache).uninstall(PID)
    result = installer(home, uv_cache).install(f"git+{repo}#{commit[:10]}", yes=True)
    assert result.source.endswith(f"@{commit[:12]}")
    # the checkout's .git never reaches the installed version
    assert not (home / "plugins" / "acme__weather" / "versions" / "1.0.0" / ".git").exists()


def _catalogue(root: Path, src: Path, versions: list[str], key: SigningKey | None = None) -> Path:
    """An index folder with packages of acme/weather (relative URLs) and an index.json."""
    root.mkdir(parents=True, exist_ok=True)
    entries = {}
    for v in versions:
        pkg = package(write_plugin(src, v), root, key)
        info = read_package(pkg)
        entries[v] = {"url": pkg.name, "checksum": info.checksum, "key_id": info.key_id}
    data = {
        "plugins": {
            PID: {"description": "Weather forecasts for tests", "versions": entries},
            "acme/other": {"description": "Something else", "versions": {}},
        }
    }
    (root / "index.json").write_text(json.dumps(data))
    return root


def test_index_folder_source_installs_the_newest_matching_version(
    home: Path, src: Path, tmp_path: Path, uv_cache: Path
) -> None:
    index = _catalogue(tmp_path / "index", src, ["1.0.0", "1.2.0", "2.0.0-beta.1"])
    inst = installer(home, uv_cache, index=str(index))
    result = inst.install(PID, yes=True)
    assert result.version == "1.2.0"  # the pre-release is not "newest" when a release exists
    assert result.source == f"index:{index.resolve()}"
    assert [e.id for e in load_index(index).search("weather")] == [PID]
    assert load_index(index).search("nothing matches") == []

    other = tmp_path / "home2"
    assert installer(other, uv_cache, index=str(index)).install(
        f"{PID}@1.0.0", yes=True
    ).version == ("1.0.0")
    with pytest.raises(UsageError, match="no version of acme/weather matching"):
        installer(other, uv_cache, index=str(index)).install(f"{PID}>=3", yes=True)


def test_index_checksum_and_key_must_match_the_package(
    home: Path, src: Path, tmp_path: Path, uv_cache: Path
) -> None:
    index = _catalogue(tmp_path / "index", src, ["1.0.0"])
    data = json.loads((index / "index.json").read_text())
    data["plugins"][PID]["versions"]["1.0.0"]["checksum"] = "sha256:" + "0" * 64
    (index / "index.json").write_text(json.dumps(data))
    with pytest.raises(InstallError, match="does not match the index") as err:
        installer(home, uv_cache, index=str(index)).install(PID, yes=True)
    assert err.value.phase == "verify"
    data["plugins"][PID]["versions"]["1.0.0"]["checksum"] = None
    data["plugins"][PID]["versions"]["1.0.0"]["key_id"] = "0123456789abcdef"
    (index / "index.json").write_text(json.dumps(data))
    with pytest.raises(InstallError, match="the index says 0123456789abcdef"):
        installer(home, uv_cache, index=str(index)).install(PID, yes=True)
    assert_nothing_installed(home)


@pytest.fixture
def http_index(tmp_path: Path, src: Path) -> Iterator[str]:
    key = SigningKey.generate()
    root = _catalogue(tmp_path / "served", src, ["1.0.0", "1.1.0"], key)
    (tmp_path / "served" / "key.pub").write_text(key.public_bytes().hex())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_http_index_source_downloads_verifies_and_installs(
    home: Path, tmp_path: Path, http_index: str, uv_cache: Path
) -> None:
    key_hex = (tmp_path / "served" / "key.pub").read_text()
    trust = TrustStore(home / "trust")
    trust.add(bytes.fromhex(key_hex))
    inst = Installer(home, trust, cache_dir=uv_cache, index=http_index)  # signed: strict
    assert [e.latest for e in load_index(http_index).search("weather")] == ["1.1.0"]
    with open_source(f"{PID}@1.0.0", index=http_index) as pkg:
        assert pkg.expected_version == "1.0.0" and pkg.expected_key_id is not None
        result = inst.install(pkg, yes=True)
    assert result.version == "1.0.0" and result.source == f"index:{http_index}"
    # upgrade without a source: the newest version from the index it came from
    assert inst.newer_from_index(PID) == (f"{PID}@1.1.0", http_index)
    assert inst.upgrade(PID, yes=True).version == "1.1.0"
    assert inst.newer_from_index(PID) is None
    assert inst.upgrade(PID).changed is False


def test_disabled_installed_plugin_is_listed_but_never_loads(
    home: Path, src: Path, uv_cache: Path
) -> None:
    inst = installer(home, uv_cache)
    inst.install(write_plugin(src), yes=True)
    assert inst.disable(PID) is True
    with PluginHost(entry_points=False, home=home) as host:
        assert host.plugins()[0].status == "disabled"
        with pytest.raises(PluginDisabled):
            host.invoke(PID, "forecast", {"city": "x"})
    assert inst.enable(PID) is True
    with PluginHost(entry_points=False, home=home) as host:
        assert host.invoke(PID, "forecast", {"city": "x"}).text == "sunny in x (v1.0.0)"
