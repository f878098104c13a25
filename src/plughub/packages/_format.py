"""The ``.plughub`` package: build one from a plugin folder, and read, verify or extract one safely.

A package is a zip of the plugin folder's files plus ``PLUGHUB-PACKAGE.json`` at the root. The
metadata's checksum covers every file's path and content (not zip headers, timestamps or
compression), so it identifies what gets installed; the signature covers the id, version and
that checksum. Everything read from a package is treated as hostile: see ``_limits`` for the
zip-level rules. The format reference is ``docs/packages.md``.

Reading never extracts, and extraction re-checks everything on the bytes it actually writes,
through the same open file, so a package swapped between a check and an install cannot slip
through: verify what :func:`extract_package` returns (:func:`check_signature`), or pass it the
checksum you verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import ManifestError, PackageError, UsageError
from ..manifest import MANIFEST_FILENAME, MAX_MANIFEST_BYTES, PluginManifest, load_manifest
from ..manifest import parse_manifest as _parse_manifest
from ._keys import ALGORITHM, KEY_ID_RE
from ._limits import (
    CHUNK,
    DEFAULT_LIMITS,
    Budget,
    Entry,
    NameTable,
    PackageLimits,
    Refusal,
    check_end_record,
    check_layout,
    check_path,
    classify,
    locate,
    read_entry,
    read_whole,
)

if TYPE_CHECKING:
    from ._keys import SigningKey, TrustStore

__all__ = [
    "FORMAT_VERSION",
    "META_NAME",
    "PACKAGE_SUFFIX",
    "SIGNATURE_DOMAIN",
    "PackageInfo",
    "build_package",
    "check_signature",
    "checksum_listing",
    "extract_package",
    "read_package",
    "signed_message",
    "verify_package",
]

PACKAGE_SUFFIX = ".plughub"
META_NAME = "PLUGHUB-PACKAGE.json"
FORMAT_VERSION = 1
SIGNATURE_DOMAIN = b"plughub-package-v1\n"
"""Prefix of every signed message, so a package signature can never be replayed elsewhere."""

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: builds do not depend on mtimes
_FILE_ATTR = (stat.S_IFREG | 0o644) << 16
_UNIX = 3  # ZipInfo.create_system: makes the mode bits meaningful to every reader
_CHECKSUM_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_SKIPPED_SUFFIXES = (".pyc", ".pyo", PACKAGE_SUFFIX)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FD = {os.open, os.mkdir} <= os.supports_dir_fd


@dataclass(frozen=True)
class PackageInfo:
    """What a checked package holds. ``signature`` is the metadata's (or ``None``: unsigned).

    ``files`` are the paths covered by the checksum, sorted; ``size`` is the package file's
    size in bytes; ``path`` is where it was read from.
    """

    id: str
    version: str
    checksum: str
    signature: dict[str, str] | None
    key_id: str | None
    files: tuple[str, ...]
    manifest: PluginManifest
    size: int
    path: Path | None = None


def checksum_listing(items: Iterable[tuple[str, str]]) -> str:
    """``sha256:<hex>`` of the canonical listing of ``(path, sha256 hex of content)`` pairs.

    The listing is ``path + "\\0" + hexdigest + "\\n"`` per file in sorted path order, UTF-8.
    Paths never contain NUL or control characters, so it is unambiguous.
    """
    digest = hashlib.sha256()
    for path, file_hash in sorted(items):
        digest.update(f"{path}\0{file_hash}\n".encode())
    return "sha256:" + digest.hexdigest()


def signed_message(plugin_id: str, version: str, checksum: str) -> bytes:
    """The exact bytes an ed25519 package signature signs."""
    return SIGNATURE_DOMAIN + f"{plugin_id}\n{version}\n{checksum}".encode()


# --- building ---------------------------------------------------------------------------------


def _skipped(name: str) -> bool:
    """Dotfiles and dot-folders (.git, .venv, caches, .env secrets), bytecode, packages."""
    return name.startswith(".") or name == "__pycache__" or name.endswith(_SKIPPED_SUFFIXES)


def _collect(src: Path, skip: Path, limits: PackageLimits) -> list[tuple[str, Path]]:
    """The files to package, as ``(relative posix path, absolute path)`` sorted by path."""
    found: list[tuple[str, Path]] = []
    table = NameTable()

    def walk(folder: Path, prefix: str) -> None:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            if _skipped(entry.name):
                continue
            rel = prefix + entry.name
            full = Path(entry.path)
            if entry.is_symlink():
                raise Refusal("symlink", f"{rel} is a symbolic link; packages hold regular files")
            if entry.is_dir(follow_symlinks=False):
                walk(full, rel + "/")
            elif entry.is_file(follow_symlinks=False):
                if full == skip:
                    continue
                check_path(rel, limits)
                if rel.casefold() == META_NAME.casefold():
                    raise Refusal("bad_path", f"{rel} is reserved for the package metadata")
                table.add(rel, is_dir=False)
                found.append((rel, full))
                if len(found) > limits.max_files:
                    raise Refusal("too_many_files", f"more than {limits.max_files} files")
            else:
                raise Refusal("special_file", f"{rel} is not a regular file or folder")

    walk(src, "")
    found.sort(key=lambda item: item[0])
    return found


def _looks_like_private_key(head: bytes) -> bool:
    """A PEM private key (``plughub keys generate --dir .`` is an easy mistake to ship)."""
    first = head.lstrip()[:100]
    return first.startswith(b"-----BEGIN ") and b"PRIVATE KEY-----" in first


def _zipinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = _UNIX
    info.external_attr = _FILE_ATTR
    return info


def _add_file(
    zf: zipfile.ZipFile, rel: str, full: Path, limits: PackageLimits, budget: Budget
) -> str:
    """Stream one file into the zip and return the sha256 of exactly the bytes written."""
    fd = os.open(full, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise Refusal("special_file", f"{rel} is not a regular file")
        digest = hashlib.sha256()
        size = 0
        with zf.open(_zipinfo(rel), "w") as out:
            while chunk := fh.read(CHUNK):
                if not size and _looks_like_private_key(chunk):
                    raise Refusal(
                        "private_key", f"{rel} is a private key; keep keys out of the plugin folder"
                    )
                size += len(chunk)
                if size > limits.max_file_bytes:
                    raise Refusal("too_large", f"{rel}: more than {limits.max_file_bytes} bytes")
                budget.spend(len(chunk))
                digest.update(chunk)
                out.write(chunk)
    return digest.hexdigest()


def _meta_bytes(
    manifest: PluginManifest, checksum: str, files: int, signature: dict[str, str] | None
) -> bytes:
    meta = {
        "format": FORMAT_VERSION,
        "id": manifest.id,
        "version": manifest.version,
        "checksum": checksum,
        "files": files,
        "signature": signature,
    }
    return (json.dumps(meta, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def build_package(
    src: Path,
    out: Path | None = None,
    *,
    key: SigningKey | None = None,
    limits: PackageLimits = DEFAULT_LIMITS,
) -> Path:
    """Package the plugin folder ``src``; return the package's path.

    The manifest is validated first (``ManifestError``). ``out`` defaults to
    ``src.parent / "<name>-<version>.plughub"``. Skips dotfiles and dot-folders at any level,
    ``__pycache__``, ``*.pyc``/``*.pyo`` and ``*.plughub``; refuses symlinks, special files,
    PEM private keys and names a reader would refuse (``PackageError``). Deterministic: the
    same files give the same bytes (fixed timestamps and modes, sorted entries). Written to a
    temporary file, read back with :func:`read_package`, then renamed: ``out`` is never
    half-written, and never something a reader would refuse.
    """
    src = Path(src).resolve()
    if not src.is_dir():
        raise UsageError(f"{src}: not a plugin folder")
    manifest = load_manifest(src / MANIFEST_FILENAME)
    name = manifest.id.split("/", 1)[1]
    default = src.parent / f"{name}-{manifest.version}{PACKAGE_SUFFIX}"
    target = (Path(out) if out is not None else default).absolute()
    try:
        files = _collect(src, target.resolve(), limits)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w+b") as fh:
                with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                    budget = Budget(limits.max_total_bytes)
                    digests = [
                        (rel, _add_file(zf, rel, full, limits, budget)) for rel, full in files
                    ]
                    checksum = checksum_listing(digests)
                    signature = None
                    if key is not None:
                        value = key.sign(signed_message(manifest.id, manifest.version, checksum))
                        signature = {
                            "key_id": key.key_id,
                            "algorithm": ALGORITHM,
                            "value": base64.b64encode(value).decode("ascii"),
                        }
                    meta = _meta_bytes(manifest, checksum, len(files), signature)
                    zf.writestr(_zipinfo(META_NAME), meta)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            try:  # never publish what a reader would refuse (and catch edits mid-build)
                read_package(Path(tmp), limits)
            except PackageError as exc:
                raise Refusal(exc.reason, exc.message) from None
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except Refusal as exc:
        raise PackageError(str(src), exc.reason, exc.message) from None
    return target


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Meta:
    id: str
    version: str
    checksum: str
    files: int
    signature: dict[str, str] | None


@dataclass
class _Archive:
    path: Path
    fh: BinaryIO
    size: int
    files: list[Entry]
    meta: _Meta
    manifest: PluginManifest
    manifest_bytes: bytes

    def info(self) -> PackageInfo:
        sig = self.meta.signature
        return PackageInfo(
            id=self.meta.id,
            version=self.meta.version,
            checksum=self.meta.checksum,
            signature=dict(sig) if sig else None,
            key_id=sig["key_id"] if sig else None,
            files=tuple(e.path for e in self.files),
            manifest=self.manifest,
            size=self.size,
            path=self.path,
        )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two "checksum" keys would let two JSON parsers read two different packages.
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise Refusal("bad_metadata", f"{META_NAME}: duplicate key(s) {', '.join(dupes)}")
    return dict(pairs)


def _parse_meta(data: bytes) -> _Meta:
    def bad(message: str) -> Refusal:
        return Refusal("bad_metadata", f"{META_NAME}: {message}")

    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise bad("not a JSON object")
    fmt = obj.get("format")
    if type(fmt) is not int or fmt != FORMAT_VERSION:
        raise bad(f"unsupported format {fmt!r}; this plughub reads format {FORMAT_VERSION}")
    for field in ("id", "version"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise bad(f"{field!r} must be a non-empty string")
    checksum = obj.get("checksum")
    if not isinstance(checksum, str) or not _CHECKSUM_RE.fullmatch(checksum):
        raise bad("'checksum' must be 'sha256:' and 64 lowercase hex digits")
    files = obj.get("files")
    if type(files) is not int or files < 0:
        raise bad("'files' must be a non-negative integer")
    raw_sig = obj.get("signature")
    signature = None
    if raw_sig is not None:
        if not isinstance(raw_sig, dict):
            raise bad("'signature' must be an object or null")
        key_id, algorithm, value = (raw_sig.get(k) for k in ("key_id", "algorithm", "value"))
        if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
            raise bad("signature 'key_id' must be 16 lowercase hex digits")
        if algorithm != ALGORITHM:
            raise bad(f"unsupported signature algorithm {algorithm!r}")
        try:
            sig_bytes = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        except (binascii.Error, ValueError):
            sig_bytes = b""
        if len(sig_bytes) != 64:
            raise bad("signature 'value' must be the base64 of 64 bytes")
        signature = {"key_id": key_id, "algorithm": algorithm, "value": value}
    return _Meta(obj["id"], obj["version"], checksum, files, signature)


def _inspect(path: Path, fh: BinaryIO, limits: PackageLimits) -> _Archive:
    """Every structural check; reads only the metadata and the manifest."""
    size = os.fstat(fh.fileno()).st_size
    directory_start = check_end_record(fh, size, limits)
    try:
        infos = zipfile.ZipFile(fh).infolist()
    except Exception as exc:  # whatever zipfile trips on, the directory is unreadable
        raise Refusal("not_a_zip", f"not a valid zip archive ({exc})") from None
    if len(infos) > limits.max_files + 1:
        raise Refusal("too_many_files", f"{len(infos)} entries (limit {limits.max_files} files)")
    table = NameTable()
    entries = []
    for info in infos:
        entry = classify(info, limits)
        table.add(entry.path, entry.is_dir)
        entries.append(entry)
    for entry in entries:
        locate(fh, entry, directory_start)
    check_layout(entries)

    metas = [e for e in entries if e.name == META_NAME]
    if not metas:
        raise Refusal("missing_metadata", f"no {META_NAME} at the root; not a plughub package")
    files = sorted((e for e in entries if not e.is_dir and e is not metas[0]), key=_path_of)
    declared = sum(e.file_size for e in files)
    if declared > limits.max_total_bytes:
        raise Refusal(
            "too_large", f"{declared} bytes uncompressed (limit {limits.max_total_bytes})"
        )
    meta = _parse_meta(
        read_whole(fh, metas[0], limits, limits.max_meta_bytes, cap_reason="bad_metadata")
    )
    if meta.files != len(files):
        raise Refusal(
            "bad_metadata", f"{META_NAME} says {meta.files} files, the archive holds {len(files)}"
        )
    manifests = [e for e in files if e.path == MANIFEST_FILENAME]
    if not manifests:
        raise Refusal("bad_manifest", f"no {MANIFEST_FILENAME} at the root")
    manifest_bytes = read_whole(
        fh, manifests[0], limits, MAX_MANIFEST_BYTES, cap_reason="bad_manifest"
    )
    try:
        manifest = _parse_manifest(manifest_bytes, source=MANIFEST_FILENAME)
    except ManifestError as exc:
        problems = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise Refusal("bad_manifest", problems) from None
    if (manifest.id, manifest.version) != (meta.id, meta.version):
        raise Refusal(
            "id_mismatch",
            f"{META_NAME} says {meta.id} {meta.version}, {MANIFEST_FILENAME} says "
            f"{manifest.id} {manifest.version}",
        )
    return _Archive(Path(path), fh, size, files, meta, manifest, manifest_bytes)


def _path_of(entry: Entry) -> str:
    return entry.path


@contextmanager
def _opened(path: Path, limits: PackageLimits) -> Iterator[_Archive]:
    """The checked archive; any :class:`Refusal` inside the block becomes ``PackageError``."""
    where = str(path)
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang us (refused just below).
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_BINARY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise PackageError(where, "not_a_zip", f"cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PackageError(where, "not_a_zip", "not a regular file")
    with os.fdopen(fd, "rb") as fh:
        try:
            yield _inspect(Path(path), fh, limits)
        except Refusal as exc:
            raise PackageError(where, exc.reason, exc.message) from None


def _hash_entry(fh: BinaryIO, entry: Entry, limits: PackageLimits, budget: Budget) -> str:
    digest = hashlib.sha256()
    for chunk in read_entry(fh, entry, limits, budget):
        digest.update(chunk)
    return digest.hexdigest()


def read_package(path: Path, limits: PackageLimits = DEFAULT_LIMITS) -> PackageInfo:
    """Check a package without extracting it; ``PackageError`` (with ``reason``) if unsound.

    Structure (safe names, no duplicates, no links or special files, limits, metadata,
    manifest, matching ids), then every file is inflated in bounded chunks to recompute the
    checksum. Says nothing about who built it: see :func:`verify_package`.
    """
    with _opened(Path(path), limits) as archive:
        budget = Budget(limits.max_total_bytes)
        digests = [(e.path, _hash_entry(archive.fh, e, limits, budget)) for e in archive.files]
        checksum = checksum_listing(digests)
        if checksum != archive.meta.checksum:
            raise Refusal(
                "checksum_mismatch",
                f"the files do not match the checksum in {META_NAME} (modified after packaging)",
            )
        return archive.info()


def check_signature(
    info: PackageInfo,
    trust: TrustStore,
    *,
    allow_unsigned: bool = False,
    allow_untrusted: bool = False,
) -> None:
    """Check ``info``'s signature against ``trust``; ``PackageError`` if it is not acceptable.

    ``allow_untrusted`` accepts a key that is not in the store *without verification* (there
    is no public key in the package to verify with). A signature by a trusted key that does
    not verify is refused whatever the flags.
    """
    where = str(info.path) if info.path is not None else f"{info.id} {info.version}"
    sig = info.signature
    if sig is None:
        if allow_unsigned:
            return
        raise PackageError(where, "unsigned", "the package is not signed")
    key_id = sig["key_id"]
    if trust.get(key_id) is None:
        if allow_untrusted:
            return
        raise PackageError(
            where, "untrusted_key", f"signed by key {key_id}, which is not in the trust store"
        )
    message = signed_message(info.id, info.version, info.checksum)
    if not trust.verify(key_id, message, base64.b64decode(sig["value"])):
        raise PackageError(
            where, "bad_signature", f"the signature does not verify with trusted key {key_id}"
        )


def verify_package(
    path: Path,
    trust: TrustStore,
    *,
    allow_unsigned: bool = False,
    allow_untrusted: bool = False,
    limits: PackageLimits = DEFAULT_LIMITS,
) -> PackageInfo:
    """:func:`read_package`, then :func:`check_signature`."""
    info = read_package(path, limits)
    check_signature(info, trust, allow_unsigned=allow_unsigned, allow_untrusted=allow_untrusted)
    return info


# --- extracting -------------------------------------------------------------------------------


class _Writer:
    """Creates files under ``root`` without ever following a link.

    Where the platform has ``dir_fd`` (Linux, macOS), every folder is created by us and opened
    with ``O_NOFOLLOW`` relative to its parent's descriptor, so no path is resolved through
    anything we did not make. Elsewhere, paths are joined and checked to stay inside ``root``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fds: dict[str, int] = {}
        if _DIR_FD:
            self._fds[""] = os.open(root, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)

    def _dir(self, rel: str) -> int:
        fd = self._fds.get(rel)
        if fd is None:
            parent, _, leaf = rel.rpartition("/")
            parent_fd = self._dir(parent)
            os.mkdir(leaf, 0o755, dir_fd=parent_fd)
            fd = os.open(
                leaf, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=parent_fd
            )
            self._fds[rel] = fd
        return fd

    def create(self, rel: str) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
        parent, _, leaf = rel.rpartition("/")
        if _DIR_FD:
            return os.open(leaf, flags, 0o644, dir_fd=self._dir(parent))
        target = self.root.joinpath(*rel.split("/"))  # pragma: no cover - non-POSIX fallback
        target.parent.mkdir(parents=True, exist_ok=True)  # pragma: no cover
        root = os.path.realpath(self.root)  # pragma: no cover
        if os.path.commonpath([root, os.path.realpath(target.parent)]) != root:  # pragma: no cover
            raise Refusal("bad_path", f"{rel!r} resolves outside the destination")
        return os.open(target, flags, 0o644)  # pragma: no cover

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _claim(dest: Path) -> bool:
    """Make sure ``dest`` is ours to fill; return whether we created it."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        dest.mkdir(parents=True, mode=0o755)
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise PackageError(str(dest), "bad_destination", "exists and is not a folder")
    with os.scandir(dest) as scan:
        if next(scan, None) is not None:
            raise PackageError(str(dest), "bad_destination", "exists and is not empty")
    return False


def _clear(dest: Path, created: bool) -> None:
    """Remove what an extraction wrote: ``dest`` was empty (or absent) when it started."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    try:
        with os.scandir(dest) as scan:
            children = list(scan)
    except OSError:
        return
    for child in children:
        try:
            if child.is_dir(follow_symlinks=False):
                shutil.rmtree(child.path, ignore_errors=True)
            else:
                os.unlink(child.path)
        except OSError:
            pass


def extract_package(
    path: Path,
    dest: Path,
    *,
    limits: PackageLimits = DEFAULT_LIMITS,
    expected_checksum: str | None = None,
) -> PackageInfo:
    """Check the package and write its files (not the metadata) into ``dest``.

    ``dest`` must not exist or be an empty folder (``bad_destination``). Files are created with
    ``O_EXCL|O_NOFOLLOW`` (mode 0644, folders 0755; zip modes are ignored), the checksum is
    recomputed over the bytes written and compared with the metadata (and with
    ``expected_checksum`` when given, e.g. the one :func:`verify_package` returned). On any
    error, what was written is removed (``dest`` too if this call created it) and the error is
    raised: ``PackageError`` for the package, ``OSError`` for the filesystem. No fsync: an
    installer that needs durability syncs before it commits.
    """
    dest = Path(dest)
    created = _claim(dest)
    try:
        with _opened(Path(path), limits) as archive:
            if expected_checksum is not None and archive.meta.checksum != expected_checksum:
                raise Refusal(
                    "checksum_mismatch",
                    f"checksum {archive.meta.checksum}, expected {expected_checksum}",
                )
            budget = Budget(limits.max_total_bytes)
            digests = []
            manifest_parts: list[bytes] = []
            writer = _Writer(dest)
            try:
                for entry in archive.files:
                    digest = hashlib.sha256()
                    keep = entry.path == MANIFEST_FILENAME
                    fd = writer.create(entry.path)
                    try:
                        for chunk in read_entry(archive.fh, entry, limits, budget):
                            _write_all(fd, chunk)
                            digest.update(chunk)
                            if keep:
                                manifest_parts.append(chunk)
                    finally:
                        os.close(fd)
                    digests.append((entry.path, digest.hexdigest()))
            finally:
                writer.close()
            if checksum_listing(digests) != archive.meta.checksum:
                raise Refusal(
                    "checksum_mismatch",
                    f"the files do not match the checksum in {META_NAME} (modified after "
                    "packaging)",
                )
            if b"".join(manifest_parts) != archive.manifest_bytes:
                raise Refusal("checksum_mismatch", f"{MANIFEST_FILENAME} changed while reading")
            return archive.info()
    except BaseException:
        _clear(dest, created)
        raise
