"""Where a package comes from: a file, a folder, a git repository or an index.

Every source ends as a :class:`LocalPackage`, a ``.plughub`` file on local disk plus what the
source promised about it (id, version, checksum, signing key), which the installer checks
after verifying the package. ``open_source`` yields one and removes its temporary files after:

==================================  ============================================================
``plughub install SPEC``            source
==================================  ============================================================
``./weather-1.0.0.plughub``         a package file (signed, normally)
``./weather/``                      a plugin folder: packaged on the spot, *unsigned*
``git+URL#REF``                     a git repository (URL or local path) at a tag or commit:
                                    cloned, checked out and packaged on the spot, *unsigned*
``acme/weather[@1.2.0 | >=1,<2]``   an index (``--index``, or ``PLUGHUB_INDEX``): the newest
                                    matching version, downloaded and checked against the
                                    catalogue's ``sha256:`` checksum and key id
==================================  ============================================================

Folder and git sources are built locally, so they can never carry a publisher's signature:
the installer accepts them only with ``allow_unsigned``.

An index is a static JSON catalogue, in a folder (``index.json``) or at an HTTP(S) URL::

    {"plugins": {"acme/weather": {"description": "...",
                                  "versions": {"1.0.0": {"url": "weather-1.0.0.plughub",
                                                          "checksum": "sha256:...",
                                                          "key_id": "0123456789abcdef"}}}}}

A package ``url`` may be relative to the catalogue.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from ..errors import UsageError
from ..manifest import semver_to_version

__all__ = [
    "Index",
    "IndexEntry",
    "IndexVersion",
    "LocalPackage",
    "load_index",
    "open_source",
    "sha256_file",
]

INDEX_ENV = "PLUGHUB_INDEX"
INDEX_FILE = "index.json"
MAX_INDEX_BYTES = 16 << 20
MAX_DOWNLOAD_BYTES = 512 << 20
GIT_TIMEOUT = 300.0
_ID_RE = re.compile(r"[a-z0-9_-]+/[a-z0-9_-]+")
_SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}")
# Passed to git besides GIT_*-free basics: what reaching a remote needs, nothing secret.
_GIT_ENV_ALLOW = frozenset(
    {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "SSH_AUTH_SOCK"}
    | {p for v in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY") for p in (v, v.lower())}
)


@dataclass(frozen=True, slots=True)
class LocalPackage:
    """A package file ready to verify, and what its source says it must be."""

    path: Path
    source: str
    """How ``state.json`` records the origin: ``file:...``, ``folder:...``, ``git:...``,
    ``index:<catalogue>``."""
    expected_id: str | None = None
    expected_version: str | None = None
    expected_checksum: str | None = None
    """``sha256:<hex>`` of the package file, from an index."""
    expected_key_id: str | None = None
    built_locally: bool = False
    """Packaged on this machine from a folder or a git checkout: unsigned by construction."""


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


# --------------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexVersion:
    """One downloadable version in a catalogue."""

    version: str
    url: str
    """Absolute: an ``http(s)://`` URL or a local path."""
    checksum: str | None
    key_id: str | None


@dataclass(slots=True)
class IndexEntry:
    """One plugin in a catalogue."""

    id: str
    description: str
    versions: dict[str, IndexVersion] = field(default_factory=dict)

    @property
    def latest(self) -> str | None:
        """The highest version (pre-releases only if there is nothing else)."""
        if not self.versions:
            return None
        ordered = sorted(self.versions, key=semver_to_version)
        final = [v for v in ordered if not semver_to_version(v).is_prerelease]
        return (final or ordered)[-1]

    def pick(self, spec: str | None) -> IndexVersion | None:
        """The highest version matching ``spec`` (``1.2.0``, ``>=1,<2``; None: the latest)."""
        if not spec:
            latest = self.latest
            return self.versions[latest] if latest else None
        if spec in self.versions:
            return self.versions[spec]
        try:
            wanted = SpecifierSet(spec)
        except InvalidSpecifier as e:
            raise UsageError(f"invalid version or range {spec!r}: {e}") from None
        ok = [v for v in self.versions if wanted.contains(semver_to_version(v), prereleases=True)]
        final = [v for v in ok if not semver_to_version(v).is_prerelease]
        return self.versions[max(final or ok, key=semver_to_version)] if ok else None


@dataclass(slots=True)
class Index:
    """A parsed catalogue."""

    location: str
    plugins: dict[str, IndexEntry]

    def search(self, query: str = "") -> list[IndexEntry]:
        """Entries whose id or description contains every word of ``query`` (any case)."""
        words = query.lower().split()
        return [
            e
            for e in sorted(self.plugins.values(), key=lambda e: e.id)
            if all(w in f"{e.id} {e.description}".lower() for w in words)
        ]

    def get(self, plugin_id: str) -> IndexEntry:
        entry = self.plugins.get(plugin_id)
        if entry is None:
            raise UsageError(f"the index {self.location} has no plugin {plugin_id!r}")
        return entry


def _is_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https")


def _http_client(timeout: float) -> Any:
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is in the http extra
        raise UsageError("HTTP indexes need httpx (pip install 'plughub[http]')") from None
    return httpx.Client(timeout=timeout, follow_redirects=True)


def load_index(location: str | os.PathLike[str], *, timeout: float = 30.0) -> Index:
    """Read a catalogue from a folder (its ``index.json``), a JSON file or an HTTP(S) URL."""
    loc = os.fspath(location)
    if _is_url(loc):
        url = loc if not loc.endswith("/") else loc + INDEX_FILE
        try:
            with _http_client(timeout) as client, client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise UsageError(f"cannot read the index {url}: HTTP {resp.status_code}")
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_INDEX_BYTES:
                        raise UsageError(f"the index {url} is larger than {MAX_INDEX_BYTES} bytes")
                base = str(resp.url)
        except OSError as e:
            raise UsageError(f"cannot read the index {url}: {e}") from None
        except Exception as e:
            if type(e).__module__.startswith("httpx"):
                raise UsageError(f"cannot read the index {url}: {e}") from None
            raise
        raw = bytes(body)
    else:
        path = Path(loc).expanduser()
        if path.is_dir():
            path = path / INDEX_FILE
        try:
            if path.stat().st_size > MAX_INDEX_BYTES:
                raise UsageError(f"the index {path} is larger than {MAX_INDEX_BYTES} bytes")
            raw = path.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read the index {path}: {e.strerror or e}") from None
        base = str(path.resolve())
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise UsageError(f"the index {loc} is not JSON: {e}") from None
    return _parse_index(data, loc, base)


def _parse_index(data: Any, location: str, base: str) -> Index:
    def bad(why: str) -> UsageError:
        return UsageError(f"the index {location} is malformed: {why}")

    if not isinstance(data, dict) or not isinstance(data.get("plugins"), dict):
        raise bad('expected {"plugins": {...}}')
    plugins: dict[str, IndexEntry] = {}
    for pid, item in data["plugins"].items():
        if not isinstance(pid, str) or not _ID_RE.fullmatch(pid) or not isinstance(item, dict):
            raise bad(f"plugin {pid!r}: expected an 'author/name' id and an object")
        versions = item.get("versions")
        if not isinstance(versions, dict):
            raise bad(f"plugin {pid}: 'versions' must be an object")
        entry = IndexEntry(pid, str(item.get("description") or ""))
        for version, v in versions.items():
            try:
                semver_to_version(str(version))
            except ValueError as e:
                raise bad(f"plugin {pid}: {e}") from None
            if not isinstance(v, dict) or not isinstance(v.get("url"), str) or not v["url"]:
                raise bad(f"plugin {pid} {version}: 'url' is required")
            checksum = v.get("checksum")
            if checksum is not None and (
                not isinstance(checksum, str) or not _SHA256_RE.fullmatch(checksum)
            ):
                raise bad(f"plugin {pid} {version}: checksum must be 'sha256:<64 hex digits>'")
            key_id = v.get("key_id")
            url = v["url"]
            if _is_url(base):
                url = urljoin(base, url)
            elif not _is_url(url):
                scheme = urlparse(url).scheme
                if scheme == "file":
                    url = urlparse(url).path
                elif scheme:
                    raise bad(f"plugin {pid} {version}: unsupported URL scheme {scheme!r}")
                url = str(Path(base).parent / url)
            entry.versions[str(version)] = IndexVersion(
                str(version), url, checksum, key_id if isinstance(key_id, str) else None
            )
        plugins[pid] = entry
    return Index(location, plugins)


def _download(url: str, dest: Path, timeout: float) -> None:
    if not _is_url(url):
        try:
            shutil.copyfile(url, dest)
        except OSError as e:
            raise UsageError(f"cannot read the package {url}: {e.strerror or e}") from None
        return
    try:
        with (
            _http_client(timeout) as client,
            client.stream("GET", url) as resp,
            open(dest, "wb") as f,
        ):
            if resp.status_code != 200:
                raise UsageError(f"cannot download {url}: HTTP {resp.status_code}")
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise UsageError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes")
                f.write(chunk)
    except OSError as e:
        raise UsageError(f"cannot download {url}: {e}") from None
    except Exception as e:
        if type(e).__module__.startswith("httpx"):
            raise UsageError(f"cannot download {url}: {e}") from None
        raise


def _split_index_spec(spec: str) -> tuple[str, str | None]:
    """``acme/weather@1.2.0`` / ``acme/weather>=1,<2`` / ``acme/weather`` -> (id, version)."""
    if "@" in spec:
        pid, _, version = spec.partition("@")
        return pid.strip(), version.strip() or None
    m = re.match(r"([a-z0-9_-]+/[a-z0-9_-]+)\s*(.*)", spec)
    if m is None:
        return spec, None
    return m[1], m[2].strip() or None


# --------------------------------------------------------------------------------------------
# git
# --------------------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        raise UsageError("git sources need git on PATH")
    env = {k: v for k, v in os.environ.items() if k in _GIT_ENV_ALLOW}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_ASKPASS="true")
    try:
        return subprocess.run(
            [git, "-c", "protocol.ext.allow=never", "-c", "core.hooksPath=/dev/null", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"git {args[0]} timed out after {GIT_TIMEOUT:g} s") from None


def _git_checkout(url: str, ref: str, work: Path) -> tuple[Path, str]:
    """Clone ``url`` and check out ``ref`` (a tag or a commit); return (folder, commit)."""
    if url.startswith("-") or ref.startswith("-") or not ref.strip():
        raise UsageError(f"invalid git source {url!r}#{ref!r}")
    repo = work / "checkout"
    run = _git(["clone", "--quiet", "--no-checkout", "--", url, str(repo)])
    if run.returncode != 0:
        raise UsageError(f"git clone {url} failed: {_last_lines(run.stderr)}")
    run = _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", ref], repo)
    if run.returncode != 0:
        raise UsageError(f"git checkout {ref} failed: {_last_lines(run.stderr)}")
    commit = _git(["rev-parse", "HEAD"], repo).stdout.strip()
    is_tag = _git(["rev-parse", "--verify", "--quiet", f"refs/tags/{ref}"], repo).returncode == 0
    is_commit = re.fullmatch(r"[0-9a-f]{7,40}", ref) is not None and commit.startswith(ref)
    if not (is_tag or is_commit):
        raise UsageError(
            f"git ref {ref!r} is neither a tag nor a commit id; pin a tag or a commit so the "
            "install is reproducible"
        )
    shutil.rmtree(repo / ".git", ignore_errors=True)
    return repo, commit


def _last_lines(text: str, n: int = 5) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-n:]) or "no output"


# --------------------------------------------------------------------------------------------
# open_source
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_source(
    spec: str | os.PathLike[str],
    *,
    index: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> Iterator[LocalPackage]:
    """Turn a source spec into a local package file (see the module docstring for the forms).

    Temporary files (downloads, checkouts, packages built from folders) are removed when the
    context exits. Raises :class:`~plughub.errors.UsageError` for a source that cannot be read.
    """
    from ._format import build_package

    text = os.fspath(spec)
    with tempfile.TemporaryDirectory(prefix="plughub-source-") as tmp:
        work = Path(tmp)
        if text.startswith("git+"):
            url, _, ref = text[4:].partition("#")
            if not ref:
                raise UsageError(f"pin the git source to a tag or commit: {text}#<tag-or-commit>")
            checkout, commit = _git_checkout(url, ref, work)
            built = build_package(checkout, work / "package.plughub")
            yield LocalPackage(built, f"git:{url}#{ref}@{commit[:12]}", built_locally=True)
            return
        path = Path(text).expanduser()
        if path.is_file():
            yield LocalPackage(path.resolve(), f"file:{path.resolve()}")
            return
        if path.is_dir():
            built = build_package(path, work / "package.plughub")
            yield LocalPackage(built, f"folder:{path.resolve()}", built_locally=True)
            return
        location = os.fspath(index) if index is not None else os.environ.get(INDEX_ENV)
        pid, version = _split_index_spec(text)
        if not _ID_RE.fullmatch(pid):
            raise UsageError(f"{text!r} is not a package file, a plugin folder or 'git+URL#REF'")
        if not location:
            raise UsageError(
                f"{text!r} is not a file or folder; to install {pid} from an index pass --index "
                f"(or set {INDEX_ENV})"
            )
        if not _is_url(location):
            location = str(Path(location).expanduser().resolve())
        catalogue = load_index(location, timeout=timeout)
        found = catalogue.get(pid).pick(version)
        if found is None:
            raise UsageError(
                f"the index {location} has no version of {pid} matching {version!r}; it has "
                + ", ".join(sorted(catalogue.get(pid).versions, key=semver_to_version))
            )
        dest = work / f"{pid.replace('/', '__')}-{found.version}.plughub"
        _download(found.url, dest, timeout)
        yield LocalPackage(
            dest,
            f"index:{location}",
            expected_id=pid,
            expected_version=found.version,
            expected_checksum=found.checksum,
            expected_key_id=found.key_id,
        )
