"""One virtual environment per plugin version, built with uv.

Why it is fast:

* ``uv venv`` creates an empty venv in tens of milliseconds (no pip seeding);
* one uv cache is shared by every env, and files are hardlinked from it (``UV_LINK_MODE=
  hardlink``; uv falls back to copying, with a warning, when the cache is on another
  filesystem, which is why the default cache sits next to ``root``);
* the SDK (plughub and its dependencies) is never installed into a plugin env. A
  ``_plughub_base.pth`` file appends the host's site-packages to the env's ``sys.path``, and
  metadata-only stubs of the SDK's distributions (``<name>-<version>.dist-info`` holding
  ``METADATA`` and ``RECORD``, no code) tell uv those packages are already installed. uv does not
  look through ``.pth`` files, so without the stubs a plugin that requires ``pydantic>=2``
  would get a second pydantic (or, offline, fail because no pydantic wheel is bundled);
* bundled wheels (``EnvSpec.wheels_dir``) install offline from that folder only.

The SDK's own dependency closure is pinned (``-c``) to the host's versions, so a plugin cannot
shadow the pydantic that ``plughub.sdk`` was built against: an incompatible requirement fails to
resolve instead. Other host packages can be shadowed by the plugin's own versions, because the
env's own site-packages comes before the ``.pth`` entries on ``sys.path``.

Layout: ``root/<author>__<name>/<version>-<hash>/`` with a ``<version>-<hash>.lock`` file beside
it. An env is built in ``.<version>-<hash>.tmp-<rand>`` in the same folder, gets its
``plughub-env.json`` marker last, and is renamed into place, so an env under its final name is
always complete. Venvs are created with ``--relocatable`` because a venv is renamed after it is
built: without it, console-script shebangs would point at the temporary folder.

POSIX only (``fcntl.flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from packaging.markers import UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ...errors import EnvBuildError

__all__ = ["EnvBuildError", "EnvBuilder", "EnvSpec", "PluginEnv", "find_uv"]

MARKER = "plughub-env.json"
BASE_PTH = "_plughub_base.pth"
REQUIREMENTS_FILE = "plughub-requirements.txt"
CONSTRAINTS_FILE = "plughub-constraints.txt"
STUB_INSTALLER = "plughub-base"
"""``INSTALLER`` of the metadata-only stubs, so they can be told apart from real installs."""

_FORMAT = 1
_TAIL_LINES = 50
_HASH_CHARS = 12
_SDK = "plughub"
_PART = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}"
# Environment variables passed to uv besides ``UV_*``; anything else (tokens, keys) stays out,
# also because uv runs the build backends of sdists, i.e. third-party code, with this env.
# CA bundles and proxies are needed to reach an index at all on many networks (this one too:
# without SSL_CERT_FILE uv rejects the TLS-intercepting proxy's certificate).
_ENV_ALLOW = frozenset(
    {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    | {p for v in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY") for p in (v, v.lower())}
)
# Only these headers are copied into a stub's METADATA: what a resolver reads, nothing else.
_STUB_HEADERS = frozenset(
    {"metadata-version", "name", "version", "requires-dist", "requires-python", "provides-extra"}
)


@dataclass(frozen=True)
class EnvSpec:
    """What a plugin version needs from Python; everything that decides the env's identity."""

    plugin_id: str
    """``"author/name"``."""
    version: str
    requirements: tuple[str, ...]
    """PEP 508 requirement strings (no pip options: they are validated and refused)."""
    wheels_dir: str | None = None
    """Bundled wheels: install offline from this folder only (``--no-index --find-links``)."""
    python: str | None = None
    """Interpreter for the venv; ``None`` is the host's ``sys.executable``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in the env's marker."""
        return {
            "plugin_id": self.plugin_id,
            "version": self.version,
            "requirements": list(self.requirements),
            "wheels_dir": self.wheels_dir,
            "python": self.python,
        }


@dataclass(frozen=True)
class PluginEnv:
    """A ready environment: run ``python`` to run plugin code in it."""

    path: Path
    """The venv root (``sys.prefix`` of the host for the base env)."""
    python: Path
    site_packages: Path
    created: bool
    """True if this call built it, False if it was reused (or is the base env)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for status output and worker handshakes."""
        return {
            "path": str(self.path),
            "python": str(self.python),
            "site_packages": str(self.site_packages),
            "created": self.created,
        }


def find_uv(uv: str | None = None) -> list[str]:
    """The argv prefix that runs uv: ``uv``, else ``uv`` on PATH, else next to
    ``sys.executable``, else the binary of the ``uv`` PyPI package, else ``python -m uv``."""
    if uv:
        return [uv]
    found = shutil.which("uv")
    if found:
        return [found]
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    try:
        from uv import find_uv_bin  # type: ignore[import-untyped, unused-ignore]

        return [str(find_uv_bin())]
    except (ImportError, FileNotFoundError):
        return [sys.executable, "-m", "uv"]


# --------------------------------------------------------------------------------------------
# The shared base
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stub:
    """Metadata of one host distribution, written into envs as a code-less dist-info."""

    name: str  # canonical
    version: str
    metadata: str
    entry_points: str | None


@dataclass(frozen=True)
class _Base:
    """The host side of the shared base: sys.path entries, and stubs and pins of the SDK."""

    paths: tuple[Path, ...]
    stubs: tuple[_Stub, ...]
    pins: tuple[str, ...]
    host_version: tuple[int, int] | None  # checked against the venv's Python when known

    @cached_property
    def fingerprint(self) -> str:
        """Changes when the base changes, so envs built against an older base are not reused."""
        text = "\n".join([*map(str, self.paths), *(f"{s.name}=={s.version}" for s in self.stubs)])
        return hashlib.sha256(text.encode()).hexdigest()


def _default_base_paths() -> list[Path]:
    """Host site-packages plus the folder ``plughub`` is imported from (the ``src`` folder of
    an editable install, whose own ``.pth`` would not be processed from a ``.pth`` entry)."""
    paths = [Path(p) for p in site.getsitepackages()]
    import plughub

    paths.append(Path(plughub.__file__).resolve().parent.parent)
    return paths


def _stub_metadata(meta: importlib.metadata.PackageMetadata) -> str:
    lines = []
    for key in dict.fromkeys(meta):
        if key.lower() in _STUB_HEADERS:
            for value in meta.get_all(key) or ():
                lines.append(f"{key}: {' '.join(str(value).split())}\n")
    return "".join(lines)


def _find_dist(name: str, paths: Sequence[Path]) -> importlib.metadata.Distribution | None:
    """The first distribution called ``name`` on ``paths`` (the one Python would import)."""
    found = importlib.metadata.Distribution.discover(name=name, path=[str(p) for p in paths])
    return next(iter(found), None)


def _scan_base(paths: Sequence[Path], host_version: tuple[int, int] | None) -> _Base:
    """Find ``plughub`` and its dependency closure on ``paths``: these become stubs and pins.

    Only the SDK's closure is stubbed, not every host package: the stubs are written into every
    env (so their number is a per-env cost), and other host packages may be shadowed by the
    plugin's own versions anyway.
    """
    clean: list[Path] = []
    for p in paths:
        if "\n" in str(p) or "\r" in str(p):
            raise ValueError(f"base site-packages path {str(p)!r} contains a newline")
        if p not in clean:
            clean.append(p)
    stubs: list[_Stub] = []
    seen: set[str] = set()
    todo = [_SDK]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        dist = _find_dist(name, clean)
        if dist is None:
            continue
        stubs.append(
            _Stub(
                name=name,
                version=dist.version,
                metadata=_stub_metadata(dist.metadata),
                entry_points=dist.read_text("entry_points.txt"),
            )
        )
        for line in dist.requires or ():
            try:
                req = Requirement(line)
                if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                    continue
            except (InvalidRequirement, UndefinedComparison, UndefinedEnvironmentName):
                continue
            todo.append(canonicalize_name(req.name))
    stubs.sort(key=lambda s: s.name)
    pins = tuple(f"{s.name}=={s.version}" for s in stubs)
    return _Base(paths=tuple(clean), stubs=tuple(stubs), pins=pins, host_version=host_version)


def _write_stubs(site_packages: Path, stubs: Iterable[_Stub]) -> None:
    for stub in stubs:
        dist_info = f"{stub.name.replace('-', '_')}-{stub.version}.dist-info"
        folder = site_packages / dist_info
        folder.mkdir()
        files = {"METADATA": stub.metadata, "INSTALLER": f"{STUB_INSTALLER}\n"}
        if stub.entry_points:
            files["entry_points.txt"] = stub.entry_points
        record = [f"{dist_info}/{name},," for name in (*files, "RECORD")]
        files["RECORD"] = "\n".join(record) + "\n"
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Locking
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path``; yields False if busy and not ``blocking``.

    The lock file may be unlinked by its holder (``remove``, ``gc``); a waiter that then gets a
    lock on the unlinked inode notices that the path now names another file and tries again.
    flock locks belong to open file descriptions, so two threads of one process exclude each
    other as well as two processes do.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # the plugin folder was removed by gc meanwhile
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield True
                return
        finally:
            os.close(fd)


def _rmtree_aside(path: Path) -> None:
    """Remove a folder so that it never appears half-deleted under its own name."""
    aside = path.with_name(f".{path.name}.del-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _garbage_of(folder: Path, name: str) -> list[Path]:
    """Temporary and half-deleted folders that belong to the env called ``name``."""
    return [
        p
        for prefix in (f".{name}.tmp-", f".{name}.del-")
        for p in folder.glob(f"{prefix}*")
        if p.name.startswith(prefix)
    ]


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Result of one uv command."""

    returncode: int
    tail: str
    timed_out: bool = False
    lines: list[str] = field(default_factory=list)


class EnvBuilder:
    """Builds, reuses and removes per-plugin-version venvs under ``root``.

    ``cache_dir`` defaults to ``root/../uv-cache`` (same filesystem as the envs, so hardlinks
    work). ``base_site_packages`` defaults to the host's site-packages plus the folder
    ``plughub`` is imported from; pass ``[]`` for fully isolated envs (then the plugin must list
    the SDK in its requirements). ``offline`` adds ``--offline`` to every install. ``timeout``
    bounds each uv command, in seconds.
    """

    def __init__(
        self,
        root: Path,
        *,
        uv: str | None = None,
        cache_dir: Path | None = None,
        base_site_packages: Sequence[Path] | None = None,
        offline: bool = False,
        timeout: float = 600,
    ) -> None:
        self.root = Path(root).absolute()
        self.uv = find_uv(uv)
        self.cache_dir = Path(cache_dir).absolute() if cache_dir else self.root.parent / "uv-cache"
        self._base_paths = (
            None if base_site_packages is None else [Path(p) for p in base_site_packages]
        )
        self.offline = offline
        self.timeout = timeout
        self._uv_version: str | None = None

    # -- identity ------------------------------------------------------------------------

    @cached_property
    def _base(self) -> _Base:
        if self._base_paths is None:
            return _scan_base(_default_base_paths(), sys.version_info[:2])
        return _scan_base(self._base_paths, None)

    def path_for(self, spec: EnvSpec) -> Path:
        """``root/<author>__<name>/<version>-<hash>``; the hash covers the requirements, the
        interpreter, the bundled wheels (names and sizes) and the shared base."""
        return self._locate(spec)[0]

    def _locate(self, spec: EnvSpec) -> tuple[Path, str]:
        """The env's final path and its full key (kept in the marker to validate reuse)."""
        author, name = _check_spec(spec)
        digest = hashlib.sha256()
        for part in (
            f"format={_FORMAT}",
            f"plugin={spec.plugin_id}",
            f"version={spec.version}",
            f"python={spec.python or sys.executable}",
            *(f"req={r}" for r in sorted(r.strip() for r in spec.requirements)),
            *(f"wheel={w}" for w in _wheels_listing(spec)),
            f"base={self._base.fingerprint}",
        ):
            digest.update(part.encode() + b"\0")
        key = digest.hexdigest()
        return self.root / f"{author}__{name}" / f"{spec.version}-{key[:_HASH_CHARS]}", key

    # -- public operations -----------------------------------------------------------------

    def ensure(self, spec: EnvSpec, *, on_output: Callable[[str], None] | None = None) -> PluginEnv:
        """Return the env for ``spec``, building it if needed; idempotent, atomic and safe to
        call concurrently (threads or processes) for the same spec.

        A spec without requirements whose interpreter is the host's gets the *base* env: the
        host interpreter itself, no venv, ``created=False``. A venv would add nothing but
        startup cost. ``on_output`` receives uv's output line by line, for progress display.
        """
        if not spec.requirements and _is_host_python(spec.python):
            _check_spec(spec)
            return _base_env()
        final, key = self._locate(spec)
        env = self._existing(final, key)
        if env is not None:
            return env
        final.parent.mkdir(parents=True, exist_ok=True)
        with _flock(_lock_path(final)):
            env = self._existing(final, key)  # another caller may have built it meanwhile
            if env is not None:
                return env
            if final.exists():  # no valid marker: leftover of something else, rebuild
                _rmtree_aside(final)
            for garbage in _garbage_of(final.parent, final.name):  # crashed builds
                shutil.rmtree(garbage, ignore_errors=True)
            return self._build(spec, final, key, on_output)

    def remove(self, spec: EnvSpec) -> bool:
        """Delete the env of ``spec``; True if there was one. Waits for a build in progress.

        If ``spec.wheels_dir`` no longer exists (the plugin's files were deleted first), the
        env's hash cannot be computed, so every env of that plugin version is deleted.
        """
        if not spec.requirements and _is_host_python(spec.python):
            return False
        if spec.wheels_dir is not None and not Path(spec.wheels_dir).is_dir():
            probe = EnvSpec(spec.plugin_id, spec.version, spec.requirements, None, spec.python)
            plugin_dir = self.path_for(probe).parent
            finals = [p for p in plugin_dir.glob(f"{spec.version}-*") if p.is_dir()]
        else:
            finals = [self.path_for(spec)]
        existed = False
        for final in finals:
            if not final.parent.is_dir():
                continue
            lock = _lock_path(final)
            with _flock(lock):
                existed = final.exists() or existed
                _rmtree_aside(final)
                for garbage in _garbage_of(final.parent, final.name):
                    shutil.rmtree(garbage, ignore_errors=True)
                lock.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                final.parent.rmdir()  # only if empty
        return existed

    def gc(self, keep: Mapping[str, set[str]]) -> list[Path]:
        """Remove envs whose plugin version is not in ``keep`` (``{plugin_id: {versions}}``),
        envs without a valid marker, and leftovers of crashed builds; return what was removed.

        Envs that are being built are skipped, never waited for. Envs of a kept version built
        for another spec (older requirements, other interpreter) are kept: use ``remove``.
        """
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for plugin_dir in sorted(self.root.iterdir()):
            if not plugin_dir.is_dir() or "__" not in plugin_dir.name:
                continue
            names = {
                p.name.removesuffix(".lock")
                for p in plugin_dir.iterdir()
                if not p.name.startswith(".") and (p.is_dir() or p.name.endswith(".lock"))
            }
            for name in sorted(names):
                removed += self._gc_one(plugin_dir / name, keep)
            for p in plugin_dir.iterdir():  # leftovers whose env name has no lock nor dir
                owner = p.name[1:].rpartition(".")[0] if p.name.startswith(".") else ""
                if owner and owner not in names and (".tmp-" in p.name or ".del-" in p.name):
                    removed += self._gc_one(plugin_dir / owner, keep)
            with contextlib.suppress(OSError):
                plugin_dir.rmdir()  # only if empty
        return removed

    # -- internals -------------------------------------------------------------------------

    def _gc_one(self, final: Path, keep: Mapping[str, set[str]]) -> list[Path]:
        removed: list[Path] = []
        lock = _lock_path(final)
        with _flock(lock, blocking=False) as acquired:
            if not acquired:
                return removed
            for garbage in _garbage_of(final.parent, final.name):
                shutil.rmtree(garbage, ignore_errors=True)
                removed.append(garbage)
            marker = _read_marker(final)
            spec = marker.get("spec") if marker else None
            wanted = (
                isinstance(spec, dict)
                and spec.get("version") in keep.get(str(spec.get("plugin_id")), set())
                and (final / "bin" / "python").exists()
            )
            if final.exists() and not wanted:
                _rmtree_aside(final)
                removed.append(final)
            if not final.exists():
                lock.unlink(missing_ok=True)
        return removed

    def _existing(self, final: Path, key: str) -> PluginEnv | None:
        marker = _read_marker(final)
        if marker is None or marker.get("key") != key:
            return None
        python = final / "bin" / "python"
        site_packages = final / str(marker.get("site_packages", ""))
        if not python.exists() or not site_packages.is_dir():  # base interpreter gone, etc.
            return None
        return PluginEnv(final, python, site_packages, created=False)

    def _build(
        self, spec: EnvSpec, final: Path, key: str, on_output: Callable[[str], None] | None
    ) -> PluginEnv:
        tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(4)}")
        try:
            base = self._base
            uv_version = self._get_uv_version(spec)
            self._uv(
                spec,
                "venv",
                [
                    "venv",
                    "--python",
                    spec.python or sys.executable,
                    "--relocatable",
                    "--no-project",
                    str(tmp),
                ],
                on_output,
                cwd=final.parent,
            )
            site_packages = _venv_site_packages(spec, tmp)
            version = _venv_version(tmp)
            if base.host_version and base.paths and version and version != base.host_version:
                raise EnvBuildError(
                    spec.plugin_id,
                    "venv",
                    f"the interpreter is Python {version[0]}.{version[1]}, but the shared base "
                    f"(plughub and its dependencies) is for Python "
                    f"{base.host_version[0]}.{base.host_version[1]}",
                )
            if base.paths:
                (site_packages / BASE_PTH).write_text(
                    "".join(f"{p}\n" for p in base.paths), encoding="utf-8"
                )
                _write_stubs(site_packages, base.stubs)
            if spec.requirements:
                self._install(spec, tmp, base, on_output)
            marker = {
                "format": _FORMAT,
                "key": key,
                "spec": spec.to_dict(),
                "uv": uv_version,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "site_packages": str(site_packages.relative_to(tmp)),  # the env is relocatable
                "base_paths": [str(p) for p in base.paths],
                "pins": list(base.pins),
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return PluginEnv(
            final, final / "bin" / "python", final / site_packages.relative_to(tmp), created=True
        )

    def _install(
        self,
        spec: EnvSpec,
        venv: Path,
        base: _Base,
        on_output: Callable[[str], None] | None,
    ) -> None:
        # A file, never argv or a shell: requirement text cannot become options or commands.
        reqs = venv / REQUIREMENTS_FILE
        reqs.write_text("".join(f"{r.strip()}\n" for r in spec.requirements), encoding="utf-8")
        args = ["pip", "install", "--python", str(venv / "bin" / "python"), "-r", str(reqs)]
        if base.paths and base.pins:
            constraints = venv / CONSTRAINTS_FILE
            constraints.write_text("".join(f"{p}\n" for p in base.pins), encoding="utf-8")
            args += ["-c", str(constraints)]
        if spec.wheels_dir:
            args += ["--no-index", "--find-links", str(Path(spec.wheels_dir).absolute())]
        if spec.wheels_dir or self.offline:
            args.append("--offline")
        self._uv(spec, "install", args, on_output, cwd=venv)

    def _get_uv_version(self, spec: EnvSpec) -> str:
        if self._uv_version is None:
            run = self._run([*self.uv, "--version"], None, cwd=self.root.parent, timeout=60)
            if run.returncode != 0:
                raise EnvBuildError(
                    spec.plugin_id, "venv", f"uv is not usable ({self.uv})", run.tail
                )
            self._uv_version = run.lines[-1].strip() if run.lines else "uv (unknown version)"
        return self._uv_version

    def _uv(
        self,
        spec: EnvSpec,
        phase: str,
        args: list[str],
        on_output: Callable[[str], None] | None,
        *,
        cwd: Path,
    ) -> None:
        run = self._run([*self.uv, *args, "--color", "never"], on_output, cwd=cwd)
        if run.timed_out:
            raise EnvBuildError(
                spec.plugin_id, phase, f"uv timed out after {self.timeout:g} s", run.tail
            )
        if run.returncode != 0:
            what = "uv venv" if phase == "venv" else "uv pip install"
            raise EnvBuildError(
                spec.plugin_id, phase, f"{what} failed (exit {run.returncode})", run.tail
            )

    def _uv_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k in _ENV_ALLOW or (k.startswith("UV_") and k != "UV_CACHE_DIR")
        }
        env["UV_CACHE_DIR"] = str(self.cache_dir)
        env.setdefault("UV_LINK_MODE", "hardlink")
        env.setdefault("UV_PYTHON_DOWNLOADS", "never")  # never fetch an interpreter mid-build
        env.setdefault("UV_NO_PROGRESS", "1")
        return env

    def _run(
        self,
        argv: list[str],
        on_output: Callable[[str], None] | None,
        *,
        cwd: Path,
        timeout: float | None = None,
    ) -> _Run:
        """Run uv (no shell, allowlisted env), streaming merged stdout/stderr line by line."""
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        lines: list[str] = []
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=self._uv_env(),
                cwd=cwd,
                start_new_session=True,  # so a timeout kills uv's build subprocesses too
            )
        except OSError as exc:
            return _Run(returncode=127, tail=f"cannot run {argv[0]}: {exc}")
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(self.timeout if timeout is None else timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\r\n")
                tail.append(line)
                if len(lines) < 1000:
                    lines.append(line)
                if on_output is not None:
                    on_output(line)
            returncode = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # on_output raised, or we were interrupted
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        return _Run(returncode, "\n".join(tail), timed_out.is_set(), lines)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_spec(spec: EnvSpec) -> tuple[str, str]:
    """Refuse specs that could escape ``root`` or smuggle pip options; return (author, name)."""
    author, sep, name = spec.plugin_id.partition("/")
    if not sep or not re.fullmatch(_PART, author) or not re.fullmatch(_PART, name):
        raise EnvBuildError(spec.plugin_id, "spec", "the plugin id is not 'author/name'")
    if "__" in author or ".." in author or ".." in name:
        raise EnvBuildError(spec.plugin_id, "spec", "the plugin id cannot name a folder safely")
    if not re.fullmatch(_PART, spec.version) or ".." in spec.version:
        raise EnvBuildError(spec.plugin_id, "spec", f"invalid version {spec.version!r}")
    for line in spec.requirements:
        if "\n" in line or "\r" in line or line.strip().startswith("-"):
            raise EnvBuildError(spec.plugin_id, "spec", f"invalid requirement {line!r}")
        try:
            Requirement(line.strip())
        except InvalidRequirement as exc:
            raise EnvBuildError(
                spec.plugin_id, "spec", f"invalid requirement {line!r}: {exc}"
            ) from None
    if spec.wheels_dir is not None and not Path(spec.wheels_dir).is_dir():
        raise EnvBuildError(
            spec.plugin_id, "spec", f"the wheels folder {spec.wheels_dir!r} does not exist"
        )
    return author, name


def _wheels_listing(spec: EnvSpec) -> list[str]:
    if not spec.wheels_dir:
        return []
    folder = Path(spec.wheels_dir)
    return sorted(f"{p.name}:{p.stat().st_size}" for p in folder.iterdir() if p.is_file())


def _lock_path(final: Path) -> Path:
    return final.with_name(final.name + ".lock")


def _read_marker(final: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((final / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return None
    return data


def _is_host_python(python: str | None) -> bool:
    if python is None:
        return True
    try:
        return os.path.samefile(python, sys.executable)
    except OSError:
        return False


def _base_env() -> PluginEnv:
    return PluginEnv(
        path=Path(sys.prefix),
        python=Path(sys.executable),
        site_packages=Path(sysconfig.get_path("purelib")),
        created=False,
    )


def _venv_site_packages(spec: EnvSpec, venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if len(found) != 1:
        raise EnvBuildError(spec.plugin_id, "venv", f"no single site-packages in {venv}")
    return found[0]


def _venv_version(venv: Path) -> tuple[int, int] | None:
    """``(major, minor)`` from the venv's ``pyvenv.cfg`` (written by uv), if it says."""
    try:
        text = (venv / "pyvenv.cfg").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in {"version_info", "version"}:
            parts = value.strip().split(".")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                return int(parts[0]), int(parts[1])
    return None
