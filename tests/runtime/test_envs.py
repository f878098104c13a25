"""Per-plugin envs built with the real uv, offline: every wheel is written by hand here.

Checks what the worker runtime relies on: the env can import its own dependency *and* the SDK
from the shared base without a copy of the SDK inside it, reuse is free, failures leave nothing
half-built, concurrent builders agree on one env, gc and remove clean up. Timings are printed by
the bench smoke test at the end, never asserted.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from _wheels import make_wheel
from plughub.errors import PlughubError
from plughub.runtime.worker._envs import (
    BASE_PTH,
    MARKER,
    STUB_INSTALLER,
    EnvBuilder,
    EnvBuildError,
    EnvSpec,
    PluginEnv,
    _flock,
    find_uv,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only (fcntl)")

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def run_py(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def env_dirs(plugin_dir: Path) -> list[Path]:
    return sorted(p for p in plugin_dir.iterdir() if p.is_dir())


def hidden(plugin_dir: Path) -> list[Path]:
    return sorted(p for p in plugin_dir.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "tinydep")
    make_wheel(
        folder,
        "needssdk",
        code="import pydantic, yaml, tinydep\nX = pydantic.VERSION\n",
        requires=("pydantic>=2", "PyYAML", "tinydep"),
    )
    make_wheel(
        folder,
        "withcli",
        code="def main():\n    print('cli ok')\n",
        entry_points="[console_scripts]\nwithcli = withcli:main\n",
    )
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uv cache for the module, as in production: every env shares it."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def builder(tmp_path: Path, cache: Path) -> EnvBuilder:
    return EnvBuilder(tmp_path / "envs", cache_dir=cache)


def spec_of(
    wheels: Path, *reqs: str, version: str = "1.2.0", plugin_id: str = "acme/weather"
) -> EnvSpec:
    return EnvSpec(plugin_id, version, reqs or ("tinydep",), str(wheels))


# --------------------------------------------------------------------------------------------
# Building and sharing the base
# --------------------------------------------------------------------------------------------


def test_ensure_builds_env_that_imports_dep_and_shared_sdk(tmp_path: Path, wheels: Path) -> None:
    builder = EnvBuilder(tmp_path / "envs")  # default cache: root/../uv-cache
    lines: list[str] = []
    env = builder.ensure(spec_of(wheels), on_output=lines.append)

    assert env.created is True
    assert env.path == builder.path_for(spec_of(wheels))
    assert env.path.parent.name == "acme__weather"
    assert env.path.name.startswith("1.2.0-")
    assert env.python == env.path / "bin" / "python"
    assert env.to_dict() == {
        "path": str(env.path),
        "python": str(env.python),
        "site_packages": str(env.site_packages),
        "created": True,
    }
    out = run_py(
        env.python,
        "import sys, tinydep, plughub.sdk, pydantic, yaml, pluggy\n"
        "print(tinydep.X); print(tinydep.__file__); print(pydantic.__file__); print(sys.prefix)",
    )
    assert out.returncode == 0, out.stderr
    x, tiny_file, pydantic_file, prefix = out.stdout.split()
    assert x == "42"
    assert Path(tiny_file).is_relative_to(env.site_packages)
    assert not Path(pydantic_file).is_relative_to(env.path)  # the host's pydantic
    assert Path(prefix) == env.path
    # uv's output was streamed line by line
    assert any("+ tinydep==1.0.0" in line for line in lines)
    # uv ran with the default shared cache next to root, and hardlinked from it
    assert (tmp_path / "uv-cache").is_dir()
    assert (env.site_packages / "tinydep" / "__init__.py").stat().st_nlink >= 2


def test_sdk_is_not_installed_inside_the_env(builder: EnvBuilder, wheels: Path) -> None:
    # needssdk requires pydantic>=2 and PyYAML: satisfied by the base, not reinstalled
    env = builder.ensure(spec_of(wheels, "needssdk"))
    sp = env.site_packages
    for package in ("pydantic", "pydantic_core", "yaml", "pluggy", "plughub"):
        assert not (sp / package).exists(), package
    assert sorted(p.name for p in sp.iterdir() if not p.name.endswith(".dist-info")) == [
        BASE_PTH,
        "needssdk",
        "tinydep",
    ]
    # the SDK is present as metadata-only stubs, so uv (and importlib.metadata) see it
    stubs = [d for d in sp.glob("*.dist-info") if (d / "INSTALLER").exists()]
    stub_names = {
        d.name.split("-")[0]
        for d in stubs
        if (d / "INSTALLER").read_text() == f"{STUB_INSTALLER}\n"
    }
    assert {"plughub", "pydantic", "pyyaml", "pluggy"} <= stub_names
    assert (sp / BASE_PTH).read_text().splitlines()  # host paths
    out = run_py(
        env.python,
        "import needssdk, pydantic, importlib.metadata as m\n"
        "print(needssdk.X == pydantic.VERSION, m.version('pydantic') == pydantic.VERSION)",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
    marker = json.loads((env.path / MARKER).read_text())
    assert marker["spec"] == spec_of(wheels, "needssdk").to_dict()
    assert marker["uv"].startswith("uv ")
    assert any(p.startswith("pydantic==") for p in marker["pins"])


def test_plugin_cannot_shadow_the_sdk_pins(builder: EnvBuilder, tmp_path: Path) -> None:
    wheels = tmp_path / "old"
    make_wheel(wheels, "pydantic", "1.0.0")  # a fake pydantic 1 that would shadow the real one
    with pytest.raises(EnvBuildError) as info:
        builder.ensure(EnvSpec("acme/old", "1.0.0", ("pydantic<2",), str(wheels)))
    assert info.value.phase == "install"
    assert "pydantic" in info.value.log_tail
    assert not (builder.root / "acme__old").exists() or not env_dirs(builder.root / "acme__old")


def test_plugin_may_shadow_a_non_sdk_host_package(builder: EnvBuilder, tmp_path: Path) -> None:
    # iniconfig comes with pytest on the host, outside the SDK's closure: the plugin's own wins
    wheels = tmp_path / "own"
    make_wheel(wheels, "iniconfig", "99.0.0", code="MINE = True\n")
    env = builder.ensure(EnvSpec("acme/own", "1.0.0", ("iniconfig>=99",), str(wheels)))
    out = run_py(env.python, "import iniconfig; print(iniconfig.MINE)")
    assert out.stdout.strip() == "True", out.stderr


def test_console_scripts_work_after_the_rename(builder: EnvBuilder, wheels: Path) -> None:
    # built in .tmp-*, then renamed: the venv must be relocatable or shebangs break
    env = builder.ensure(spec_of(wheels, "withcli"))
    out = subprocess.run(
        [str(env.path / "bin" / "withcli")], capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "cli ok", out.stderr


def test_moved_root_is_reused(tmp_path: Path, wheels: Path, cache: Path) -> None:
    # venvs are relocatable, and the marker stores paths relative to the env
    env = EnvBuilder(tmp_path / "a" / "envs", cache_dir=cache).ensure(spec_of(wheels, "withcli"))
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = EnvBuilder(tmp_path / "b" / "envs", cache_dir=cache).ensure(spec_of(wheels, "withcli"))
    assert moved.created is False
    assert moved.path == tmp_path / "b" / "envs" / env.path.relative_to(tmp_path / "a" / "envs")
    assert moved.site_packages.is_dir()
    out = subprocess.run(
        [str(moved.path / "bin" / "withcli")], capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "cli ok", out.stderr


def test_isolated_env_without_base(tmp_path: Path, wheels: Path, cache: Path) -> None:
    builder = EnvBuilder(tmp_path / "envs", cache_dir=cache, base_site_packages=[])
    env = builder.ensure(spec_of(wheels))
    assert not (env.site_packages / BASE_PTH).exists()
    assert not list(env.site_packages.glob("plughub-*.dist-info"))
    out = run_py(
        env.python, "import tinydep\ntry:\n import plughub\nexcept ImportError: print('no')"
    )
    assert out.stdout.strip() == "no"


def test_no_requirements_is_the_host_interpreter(builder: EnvBuilder) -> None:
    env = builder.ensure(EnvSpec("acme/plain", "1.0.0", ()))
    assert env == PluginEnv(Path(sys.prefix), Path(sys.executable), env.site_packages, False)
    assert env.site_packages.is_dir()
    assert not builder.root.exists()  # nothing built, nothing created
    assert builder.remove(EnvSpec("acme/plain", "1.0.0", ())) is False


# --------------------------------------------------------------------------------------------
# Identity and reuse
# --------------------------------------------------------------------------------------------


def test_second_ensure_reuses_without_running_uv(
    builder: EnvBuilder, wheels: Path, cache: Path
) -> None:
    spec = spec_of(wheels)
    first = builder.ensure(spec)
    t0 = time.perf_counter()
    again = builder.ensure(spec)
    elapsed = time.perf_counter() - t0
    assert again == PluginEnv(first.path, first.python, first.site_packages, created=False)
    # a builder whose uv does not even exist reuses it too: reuse never runs uv
    broken = EnvBuilder(builder.root, uv="/nonexistent/uv", cache_dir=cache)
    assert broken.ensure(spec).created is False
    print(f"reuse took {elapsed * 1e3:.2f} ms")


def test_path_for_depends_on_requirements_wheels_and_python(
    builder: EnvBuilder, wheels: Path, tmp_path: Path
) -> None:
    spec = spec_of(wheels)
    path = builder.path_for(spec)
    assert path == builder.path_for(spec_of(wheels))
    assert path == builder.path_for(EnvSpec("acme/weather", "1.2.0", (" tinydep ",), str(wheels)))
    assert path != builder.path_for(spec_of(wheels, "tinydep>=1"))
    assert path != builder.path_for(spec_of(wheels, version="1.3.0"))
    assert path != builder.path_for(
        EnvSpec("acme/weather", "1.2.0", ("tinydep",), str(wheels), "x")
    )
    more = tmp_path / "more"
    shutil.copytree(wheels, more)
    assert builder.path_for(EnvSpec("acme/weather", "1.2.0", ("tinydep",), str(more))) == path
    make_wheel(more, "extra")
    assert builder.path_for(EnvSpec("acme/weather", "1.2.0", ("tinydep",), str(more))) != path


@pytest.mark.parametrize(
    ("plugin_id", "version", "reqs", "wheels_dir"),
    [
        ("noslash", "1.0.0", ("tinydep",), None),
        ("../evil", "1.0.0", ("tinydep",), None),
        ("acme/..", "1.0.0", ("tinydep",), None),
        ("acme/x", "../1", ("tinydep",), None),
        ("acme/x", "1.0.0", ("--index-url https://evil.example",), None),
        ("acme/x", "1.0.0", ("-e .",), None),
        ("acme/x", "1.0.0", ("tinydep\n--extra-index-url https://evil.example",), None),
        ("acme/x", "1.0.0", ("tinydep; rm -rf /",), None),
        ("acme/x", "1.0.0", ("tinydep",), "/nonexistent/wheels"),
    ],
)
def test_unsafe_or_invalid_specs_are_refused(
    builder: EnvBuilder, plugin_id: str, version: str, reqs: tuple[str, ...], wheels_dir: str | None
) -> None:
    with pytest.raises(EnvBuildError) as info:
        builder.ensure(EnvSpec(plugin_id, version, reqs, wheels_dir))
    assert info.value.phase == "spec"
    assert not builder.root.exists() or not any(builder.root.rglob("*"))


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------


def test_missing_requirement_raises_and_leaves_nothing(builder: EnvBuilder, wheels: Path) -> None:
    spec = spec_of(wheels, "tinydep", "nosuchpkg>=1")
    with pytest.raises(EnvBuildError) as info:
        builder.ensure(spec)
    err = info.value
    assert isinstance(err, PlughubError)
    assert err.plugin_id == "acme/weather"
    assert err.phase == "install"
    assert "nosuchpkg" in err.log_tail  # uv's own message
    text = str(err)
    assert "'acme/weather'" in text and "(install)" in text and "nosuchpkg" in text
    plugin_dir = builder.path_for(spec).parent
    assert env_dirs(plugin_dir) == []
    assert hidden(plugin_dir) == []
    # a later good build of another spec still works
    assert builder.ensure(spec_of(wheels)).created is True


def test_error_survives_pickling() -> None:
    err = EnvBuildError("acme/x", "install", "uv pip install failed (exit 1)", "tail line")
    back = pickle.loads(pickle.dumps(err))
    assert (back.plugin_id, back.phase, back.message, back.log_tail) == (
        "acme/x",
        "install",
        "uv pip install failed (exit 1)",
        "tail line",
    )
    assert str(back) == str(err)


def fake_uv(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-uv"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


def test_timeout_kills_uv_and_cleans_up(tmp_path: Path, wheels: Path) -> None:
    uv = fake_uv(
        tmp_path,
        """\
        if [ "$1" = "--version" ]; then echo "uv 0.0.0"; exit 0; fi
        echo "starting"
        exec sleep 30
        """,
    )
    builder = EnvBuilder(tmp_path / "envs", uv=uv, timeout=1)
    t0 = time.perf_counter()
    with pytest.raises(EnvBuildError) as info:
        builder.ensure(spec_of(wheels))
    assert time.perf_counter() - t0 < 20
    assert info.value.phase == "venv"
    assert "timed out" in str(info.value)
    assert "starting" in info.value.log_tail
    assert hidden(builder.path_for(spec_of(wheels)).parent) == []


def test_uv_gets_an_allowlisted_environment(
    tmp_path: Path, wheels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = tmp_path / "env.txt"
    real = find_uv()
    uv = fake_uv(
        tmp_path, f'env >> "{dump}"\necho "ARGS: $*" >> "{dump}"\nexec {" ".join(real)} "$@"\n'
    )
    monkeypatch.setenv("PLUGHUB_TEST_SECRET", "s3cr3t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("UV_PLUGHUB_TEST", "passed")
    monkeypatch.delenv("UV_LINK_MODE", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")  # needed, not secret
    builder = EnvBuilder(tmp_path / "envs", uv=uv, cache_dir=tmp_path / "c", offline=True)
    builder.ensure(spec_of(wheels))
    seen = dump.read_text()
    assert "s3cr3t" not in seen
    assert "UV_PLUGHUB_TEST=passed" in seen
    assert f"UV_CACHE_DIR={tmp_path / 'c'}" in seen
    assert "UV_LINK_MODE=hardlink" in seen
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in seen
    args = [line.split()[1:] for line in seen.splitlines() if line.startswith("ARGS: ")]
    venv_args, install_args = args[1], args[2]  # args[0] is --version
    assert venv_args[0] == "venv" and "--relocatable" in venv_args
    assert install_args[:2] == ["pip", "install"]
    for flag in ("-r", "-c", "--no-index", "--find-links", "--offline"):
        assert flag in install_args
    assert "tinydep" not in install_args  # requirements go through a file, never argv


def test_python_version_mismatch_with_shared_base(tmp_path: Path, wheels: Path) -> None:
    other = other_python()
    if other is None:
        pytest.skip("no Python of another minor version on this machine")
    builder = EnvBuilder(tmp_path / "envs")
    spec = EnvSpec("acme/weather", "1.2.0", ("tinydep",), str(wheels), other)
    with pytest.raises(EnvBuildError) as info:
        builder.ensure(spec)
    assert info.value.phase == "venv"
    assert "shared base" in str(info.value)
    assert hidden(builder.path_for(spec).parent) == []
    # without a shared base any interpreter will do
    isolated = EnvBuilder(tmp_path / "iso", base_site_packages=[]).ensure(spec)
    out = run_py(isolated.python, "import sys, tinydep; print(sys.version_info[:2] != (3, 11))")
    assert out.returncode == 0, out.stderr


def other_python() -> str | None:
    candidates = [shutil.which(f"python3.{m}") for m in range(10, 15)]
    candidates += [str(p) for p in Path(sys.base_prefix).parent.glob("3.*/bin/python3")]
    for c in candidates:
        if not c:
            continue
        try:
            out = subprocess.run(
                [c, "-c", "import sys; print(sys.version_info[1])"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip().isdigit():
            minor = int(out.stdout)
            if minor != sys.version_info.minor and minor >= 8:
                return c
    return None


# --------------------------------------------------------------------------------------------
# Garbage, gc, remove
# --------------------------------------------------------------------------------------------


def test_corrupted_env_is_rebuilt(builder: EnvBuilder, wheels: Path) -> None:
    spec = spec_of(wheels)
    env = builder.ensure(spec)
    (env.path / MARKER).unlink()
    (env.path.parent / f".{env.path.name}.tmp-deadbeef").mkdir()  # a crashed build
    rebuilt = builder.ensure(spec)
    assert rebuilt.created is True
    assert rebuilt.path == env.path
    assert (env.path / MARKER).is_file()
    assert hidden(env.path.parent) == []
    (env.path / MARKER).write_text("{not json")
    assert builder.ensure(spec).created is True
    assert builder.ensure(spec).created is False


def test_gc_removes_versions_not_kept(builder: EnvBuilder, wheels: Path) -> None:
    old = builder.ensure(spec_of(wheels, version="1.0.0"))
    new = builder.ensure(spec_of(wheels, version="2.0.0"))
    other = builder.ensure(spec_of(wheels, version="1.0.0", plugin_id="acme/other"))
    stale = new.path.parent / f".{new.path.name}.tmp-0badc0de"
    stale.mkdir()
    (builder.root / "acme__weather" / "9.9.9-000000000000").mkdir()  # no marker: garbage

    removed = builder.gc({"acme/weather": {"2.0.0"}})

    assert set(removed) == {
        old.path,
        other.path,
        stale,
        builder.root / "acme__weather" / "9.9.9-000000000000",
    }
    assert new.path.is_dir()
    assert env_dirs(new.path.parent) == [new.path]
    assert hidden(new.path.parent) == []
    assert not (builder.root / "acme__other").exists()
    assert sorted(p.name for p in new.path.parent.iterdir()) == [
        new.path.name,
        f"{new.path.name}.lock",
    ]
    assert builder.ensure(spec_of(wheels, version="2.0.0")).created is False


def test_gc_skips_an_env_being_built(builder: EnvBuilder, wheels: Path) -> None:
    env = builder.ensure(spec_of(wheels))
    with _flock(env.path.with_name(env.path.name + ".lock")) as held:
        assert held
        assert builder.gc({}) == []
    assert builder.gc({}) == [env.path]
    assert list(builder.root.iterdir()) == []


def test_remove(builder: EnvBuilder, wheels: Path) -> None:
    spec = spec_of(wheels)
    assert builder.remove(spec) is False
    env = builder.ensure(spec)
    assert builder.remove(spec) is True
    assert not env.path.exists()
    assert not env.path.parent.exists()
    assert builder.remove(spec) is False
    assert builder.ensure(spec).created is True


def test_remove_after_the_wheels_are_gone(
    builder: EnvBuilder, wheels: Path, tmp_path: Path
) -> None:
    bundled = tmp_path / "bundled"
    shutil.copytree(wheels, bundled)
    spec = EnvSpec("acme/gone", "1.0.0", ("tinydep",), str(bundled))
    other = builder.ensure(EnvSpec("acme/gone", "2.0.0", ("tinydep",), str(wheels)))
    env = builder.ensure(spec)
    shutil.rmtree(bundled)
    assert builder.remove(spec) is True
    assert not env.path.exists()
    assert other.path.is_dir()


# --------------------------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------------------------


def test_concurrent_ensure_in_threads_builds_once(builder: EnvBuilder, wheels: Path) -> None:
    spec = spec_of(wheels)
    barrier = threading.Barrier(3)
    results: list[PluginEnv] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            results.append(builder.ensure(spec))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(r.created for r in results) == [False, False, True]
    assert {r.path for r in results} == {builder.path_for(spec)}
    plugin_dir = builder.path_for(spec).parent
    assert env_dirs(plugin_dir) == [builder.path_for(spec)]
    assert hidden(plugin_dir) == []


def test_concurrent_ensure_in_processes_builds_once(
    tmp_path: Path, wheels: Path, cache: Path
) -> None:
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from plughub.runtime.worker._envs import EnvBuilder, EnvSpec
        b = EnvBuilder(Path({str(tmp_path / "envs")!r}), cache_dir=Path({str(cache)!r}))
        while time.time() < float(sys.argv[1]):
            time.sleep(0.005)
        env = b.ensure(EnvSpec("acme/weather", "1.2.0", ("tinydep",), {str(wheels)!r}))
        print(env.created, env.path)
        """
    )
    start = str(time.time() + 1.5)  # both processes start building at the same moment
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lines = sorted(out.decode().split() for out, _ in outs)
    assert [created for created, _ in lines] == ["False", "True"]
    assert lines[0][1] == lines[1][1]
    plugin_dir = Path(lines[0][1]).parent
    assert env_dirs(plugin_dir) == [Path(lines[0][1])]
    assert hidden(plugin_dir) == []


# --------------------------------------------------------------------------------------------
# uv discovery and the timing figure
# --------------------------------------------------------------------------------------------


def test_find_uv() -> None:
    assert find_uv("/opt/uv") == ["/opt/uv"]
    argv = find_uv()
    out = subprocess.run([*argv, "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.startswith("uv ")


@pytest.mark.timeout(120)
def test_bench_env_install_prints_ensure_vs_venv_pip(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs bench/env_install.py once (1 round) and prints the figures; asserts none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHUB_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "env_install.py"), "--quick", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(proc.stdout)
    med = res["median_s"]
    assert set(med) == {"ensure_cold", "ensure_warm", "venv_pip"}
    assert all(v > 0 for v in med.values())
    assert isinstance(res["goal"]["pass"], bool)
    with capsys.disabled():
        print(
            f"\n[env_install] ensure cold {med['ensure_cold'] * 1e3:.0f} ms, "
            f"warm cache {med['ensure_warm'] * 1e3:.0f} ms, "
            f"venv+pip {med['venv_pip'] * 1e3:.0f} ms, ratio {res['ratio_cold']:.3f}x"
        )
