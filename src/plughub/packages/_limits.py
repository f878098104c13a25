"""What a package may contain, and the bounded reading that enforces it.

A ``.plughub`` file comes from the network, so every number in its zip headers is a claim, not a
fact. This module checks the claims early (to refuse cheaply) and then enforces the limits again
on the bytes actually produced while inflating, because a header can lie about sizes:

- :func:`check_end_record` reads the end-of-central-directory record *before* :mod:`zipfile`
  parses the directory, so an archive announcing millions of entries is refused without building
  millions of ``ZipInfo`` objects. It also refuses data before or after the archive (polyglots).
- :func:`classify` applies the safe-path rule and the entry-type rules to one ``ZipInfo``.
- :class:`NameTable` refuses duplicates, including names equal after case folding and Unicode
  normalisation, and a path used both as a file and as a folder.
- :func:`locate` reads each local header (zipfile only compares names there) and
  :func:`check_layout` refuses entries sharing bytes (the "overlapping files" zip bomb).
- :func:`read_entry` inflates one entry in bounded chunks with zlib directly, counting real
  output against the declared size, the per-file and total limits and the compression ratio,
  and checking the CRC and the end of the deflate stream.

Problems are raised as :class:`Refusal`; the caller turns them into ``PackageError`` with the
package's path.
"""

from __future__ import annotations

import itertools
import stat
import struct
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO
from zipfile import ZIP_DEFLATED, ZIP_STORED, ZipInfo

__all__ = [
    "DEFAULT_LIMITS",
    "Budget",
    "Entry",
    "NameTable",
    "PackageLimits",
    "Refusal",
    "check_end_record",
    "check_layout",
    "check_path",
    "classify",
    "locate",
    "read_entry",
    "read_whole",
]

KiB = 1024
MiB = 1024 * KiB

CHUNK = 64 * KiB
"""Largest piece read or inflated at once: memory stays bounded whatever the headers say."""

_MAX_SEGMENT_BYTES = 255  # NAME_MAX on Linux and macOS: longer names fail midway on extraction
_FORBIDDEN_CHARS = frozenset('\\:<>"|?*')  # separators, drive letters/streams, Windows-invalid
_DIR_MODE_MISMATCH = "its mode says {kind} but its name says {named}"


@dataclass(frozen=True)
class PackageLimits:
    """Bounds on a package, checked against the headers and again while inflating.

    ``max_ratio`` (uncompressed/compressed, per entry) applies only to entries larger than
    ``ratio_min_bytes``: small files compress well legitimately and cannot hurt.
    ``max_path_len`` counts UTF-8 bytes.
    """

    max_files: int = 10_000
    max_total_bytes: int = 512 * MiB
    max_file_bytes: int = 256 * MiB
    max_ratio: float = 200.0
    max_path_len: int = 512
    max_meta_bytes: int = 64 * KiB
    ratio_min_bytes: int = 1 * MiB


DEFAULT_LIMITS = PackageLimits()


class Refusal(Exception):  # internal: becomes PackageError where the package path is known
    """A rule was broken; ``reason`` is one of ``PackageError``'s reasons."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class Entry:
    """One zip entry that passed :func:`classify`; ``path`` has no trailing ``/``."""

    name: str
    path: str
    is_dir: bool
    method: int
    crc: int
    compress_size: int
    file_size: int
    header_offset: int
    data_offset: int = -1


# --- the end of the archive -------------------------------------------------------------------

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")
_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIG = b"PK\x06\x06"
_CD_ENTRY_FIXED = 46


def check_end_record(fh: BinaryIO, size: int, limits: PackageLimits) -> int:
    """Validate the end records; return where the central directory starts.

    Refuses multi-disk archives, bytes before the first entry or after the end record
    (``zipfile`` accepts both), a central directory larger than ``max_files + 1`` entries can
    need, and more entries than that (counted by walking the headers, not read from the record).
    """
    if size < _EOCD.size:
        raise Refusal("not_a_zip", "not a zip archive (too short)")
    tail_len = min(size, _EOCD.size + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(_EOCD_SIG)
    if pos < 0 or len(tail) - pos < _EOCD.size:
        raise Refusal("not_a_zip", "not a zip archive (no end-of-central-directory record)")
    _sig, disk, cd_disk, _n_disk, entries, cd_size, cd_offset, comment_len = _EOCD.unpack_from(
        tail, pos
    )
    if pos + _EOCD.size + comment_len != len(tail):
        raise Refusal("not_a_zip", "unexpected bytes after the end of the zip archive")
    eocd_at = size - tail_len + pos
    directory_end = eocd_at
    if eocd_at >= _LOCATOR.size:
        fh.seek(eocd_at - _LOCATOR.size)
        locator = fh.read(_LOCATOR.size)
        if locator[:4] == _LOCATOR_SIG:
            _sig64, disk64, eocd64_at, _disks = _LOCATOR.unpack(locator)
            if disk64 != 0 or eocd64_at + _EOCD64.size > eocd_at - _LOCATOR.size:
                raise Refusal("not_a_zip", "invalid zip64 end record locator")
            fh.seek(eocd64_at)
            record = fh.read(_EOCD64.size)
            if len(record) != _EOCD64.size or record[:4] != _EOCD64_SIG:
                raise Refusal("not_a_zip", "invalid zip64 end-of-central-directory record")
            (_s, _rs, _v, _vn, disk, cd_disk, _nd, entries, cd_size, cd_offset) = _EOCD64.unpack(
                record
            )
            directory_end = eocd64_at
    if disk != 0 or cd_disk != 0:
        raise Refusal("not_a_zip", "multi-disk zip archives are not supported")
    if cd_offset + cd_size != directory_end:
        raise Refusal("not_a_zip", "unexpected bytes before or inside the zip archive")
    if entries > limits.max_files + 1:
        raise Refusal(
            "too_many_files", f"{entries} entries; at most {limits.max_files} files are allowed"
        )
    most = (limits.max_files + 1) * (_CD_ENTRY_FIXED + limits.max_path_len + 512)
    if cd_size > most:
        raise Refusal("too_large", f"central directory of {cd_size} bytes")
    _count_entries(fh, cd_offset, cd_size, limits)
    return int(cd_offset)


_CD_SIG = b"PK\x01\x02"
_CD_LENGTHS = struct.Struct("<3H")  # name, extra and comment lengths, at offset 28


def _count_entries(fh: BinaryIO, cd_offset: int, cd_size: int, limits: PackageLimits) -> None:
    """Walk the central directory's headers: zipfile parses all of them whatever the end
    record's count says, so the count that matters is the one actually there."""
    fh.seek(cd_offset)
    directory = fh.read(cd_size)
    pos = count = 0
    while pos < len(directory):
        if directory[pos : pos + 4] != _CD_SIG or pos + _CD_ENTRY_FIXED > len(directory):
            raise Refusal("not_a_zip", "malformed central directory")
        count += 1
        if count > limits.max_files + 1:
            raise Refusal("too_many_files", f"more than {limits.max_files} files")
        lengths = _CD_LENGTHS.unpack_from(directory, pos + 28)
        pos += _CD_ENTRY_FIXED + sum(lengths)
    if pos != len(directory):
        raise Refusal("not_a_zip", "malformed central directory")


# --- names ------------------------------------------------------------------------------------


def check_path(name: str, limits: PackageLimits) -> tuple[str, bool]:
    """Apply the safe-path rule to an entry name; return ``(path, is_dir)``.

    Relative, ``/``-separated, UTF-8, no empty/``.``/``..`` segments, no control characters and
    none of ``\\ : < > " | ? *`` (so no drive letters, Windows streams or separators), each
    segment at most 255 bytes, the whole at most ``max_path_len`` bytes.
    """
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise Refusal("bad_path", f"{name!r}: name is not valid UTF-8") from None
    if not name:
        raise Refusal("bad_path", "an entry has an empty name")
    if len(encoded) > limits.max_path_len:
        raise Refusal("bad_path", f"{name[:80]!r}...: longer than {limits.max_path_len} bytes")
    bad = sorted({c for c in name if c in _FORBIDDEN_CHARS or ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        raise Refusal("bad_path", f"{name!r}: forbidden character(s) {''.join(bad)!r}")
    if name.startswith("/"):
        raise Refusal("bad_path", f"{name!r}: absolute path")
    is_dir = name.endswith("/")
    path = name[:-1] if is_dir else name
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise Refusal("bad_path", f"{name!r}: empty, '.' or '..' path segment")
        if len(segment.encode("utf-8")) > _MAX_SEGMENT_BYTES:
            raise Refusal("bad_path", f"{name!r}: a path segment is longer than 255 bytes")
    return path, is_dir


def _fold(path: str) -> str:
    """Unicode caseless match key: what a case-insensitive, normalising filesystem sees."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", path).casefold())


class NameTable:
    """Refuses two entries that would land on the same file on some filesystem."""

    def __init__(self) -> None:
        self._files: dict[str, str] = {}
        self._dirs: dict[str, str] = {}  # folded -> first spelling, explicit or implied
        self._explicit_dirs: set[str] = set()

    def add(self, path: str, is_dir: bool) -> None:
        key = _fold(path)
        if is_dir:
            if key in self._files or key in self._explicit_dirs:
                raise Refusal("duplicate_entry", self._clash(path, key))
            self._explicit_dirs.add(key)
            self._dirs.setdefault(key, path)
        else:
            if key in self._files or key in self._dirs:
                raise Refusal("duplicate_entry", self._clash(path, key))
            self._files[key] = path
        parts = path.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            folded = _fold(prefix)
            if folded in self._files:
                raise Refusal("duplicate_entry", f"{self._files[folded]!r} is a file and a folder")
            self._dirs.setdefault(folded, prefix)

    def _clash(self, path: str, key: str) -> str:
        other = self._files.get(key) or self._dirs.get(key, path)
        if other == path:
            return f"{path!r} appears twice"
        return f"{path!r} and {other!r} differ only in case or Unicode normalisation"


def classify(info: ZipInfo, limits: PackageLimits) -> Entry:
    """Check one central-directory entry: path, type, encryption, method and declared sizes."""
    name = info.orig_filename  # ``filename`` is cut at NUL and has ``\\`` replaced on Windows
    path, is_dir = check_path(name, limits)
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise Refusal("symlink", f"{name!r} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise Refusal("special_file", f"{name!r} is not a regular file or folder")
    if (kind == stat.S_IFDIR and not is_dir) or (kind == stat.S_IFREG and is_dir):
        named, said = ("folder", "file") if is_dir else ("file", "folder")
        mismatch = _DIR_MODE_MISMATCH.format(kind=said, named=named)
        raise Refusal("special_file", f"{name!r}: {mismatch}")
    if info.flag_bits & 0x1:
        raise Refusal("unsupported_entry", f"{name!r} is encrypted")
    if info.compress_type not in (ZIP_STORED, ZIP_DEFLATED):
        raise Refusal(
            "unsupported_entry",
            f"{name!r}: compression method {info.compress_type} (only stored and deflate are read)",
        )
    if is_dir and info.file_size:
        raise Refusal("corrupt", f"{name!r}: a folder entry with content")
    if info.compress_type == ZIP_STORED and info.compress_size != info.file_size:
        raise Refusal("corrupt", f"{name!r}: stored entry whose sizes disagree")
    if info.file_size > limits.max_file_bytes:
        raise Refusal(
            "too_large", f"{name!r}: {info.file_size} bytes (limit {limits.max_file_bytes})"
        )
    if info.file_size > limits.ratio_min_bytes and (
        info.file_size > limits.max_ratio * info.compress_size
    ):
        raise Refusal(
            "zip_bomb",
            f"{name!r}: declares {info.file_size} bytes from {info.compress_size} compressed "
            f"(ratio above {limits.max_ratio:g})",
        )
    return Entry(
        name=name,
        path=path,
        is_dir=is_dir,
        method=info.compress_type,
        crc=info.CRC,
        compress_size=info.compress_size,
        file_size=info.file_size,
        header_offset=info.header_offset,
    )


# --- where the bytes are ----------------------------------------------------------------------

_LOCAL = struct.Struct("<4s5H3L2H")
_LOCAL_SIG = b"PK\x03\x04"


def locate(fh: BinaryIO, entry: Entry, directory_start: int) -> None:
    """Read the entry's local header and set ``entry.data_offset``.

    The local header must agree with the central directory on name and method (readers that
    trust one or the other would otherwise see different archives), and the data must lie
    before the central directory.
    """
    fh.seek(entry.header_offset)
    header = fh.read(_LOCAL.size)
    if len(header) != _LOCAL.size or header[:4] != _LOCAL_SIG:
        raise Refusal("corrupt", f"{entry.name!r}: bad local file header")
    _sig, _ver, flags, method, _t, _d, _crc, _cs, _fs, name_len, extra_len = _LOCAL.unpack(header)
    raw_name = fh.read(name_len)
    try:
        local_name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
    except UnicodeDecodeError:
        local_name = ""
    if local_name != entry.name or method != entry.method:
        raise Refusal(
            "corrupt", f"{entry.name!r}: local header disagrees with the central directory"
        )
    entry.data_offset = entry.header_offset + _LOCAL.size + name_len + extra_len
    if entry.data_offset + entry.compress_size > directory_start:
        raise Refusal("corrupt", f"{entry.name!r}: data runs past the end of the entries")


def check_layout(entries: list[Entry]) -> None:
    """Refuse bytes before the first entry, and entries whose bytes overlap.

    Overlap is how the "better zip bomb" reuses one deflate stream for many entries; leading
    bytes are how a file is made both a zip and something else (a script, an image).
    """
    spans = sorted((e.header_offset, e.data_offset + e.compress_size, e.name) for e in entries)
    if spans and spans[0][0] != 0:
        raise Refusal("not_a_zip", "unexpected bytes before the first entry")
    for (_start, end, name), (next_start, _end, next_name) in itertools.pairwise(spans):
        if next_start < end:
            raise Refusal("zip_bomb", f"entries {name!r} and {next_name!r} overlap")


# --- reading ----------------------------------------------------------------------------------


class Budget:
    """Uncompressed bytes produced so far across one pass over a package."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise Refusal("too_large", f"more than {self.limit} bytes uncompressed in total")


def read_entry(
    fh: BinaryIO,
    entry: Entry,
    limits: PackageLimits,
    budget: Budget | None = None,
    *,
    cap: int | None = None,
    cap_reason: str = "too_large",
) -> Iterator[bytes]:
    """Yield the entry's content in chunks, enforcing every limit on the real output.

    Never trusts ``file_size``: producing more than declared is ``zip_bomb``, fewer or a wrong
    CRC or a truncated/over-long deflate stream is ``corrupt``. ``cap`` (with ``cap_reason``)
    is a tighter bound for small files read whole (metadata, manifest).
    """
    limit = limits.max_file_bytes if cap is None else min(cap, limits.max_file_bytes)
    if entry.file_size > limit:
        raise Refusal(cap_reason, f"{entry.name!r}: {entry.file_size} bytes (limit {limit})")
    produced = 0
    crc = 0

    def account(data: bytes) -> None:
        nonlocal produced, crc
        produced += len(data)
        if produced > entry.file_size:
            raise Refusal(
                "zip_bomb", f"{entry.name!r} inflates past its declared {entry.file_size} bytes"
            )
        if produced > limit:
            raise Refusal(cap_reason, f"{entry.name!r}: more than {limit} bytes")
        if produced > limits.ratio_min_bytes and produced > limits.max_ratio * max(
            entry.compress_size, 1
        ):
            ratio = f"compression ratio above {limits.max_ratio:g}"
            raise Refusal("zip_bomb", f"{entry.name!r}: {ratio}")
        if budget is not None:
            budget.spend(len(data))
        crc = zlib.crc32(data, crc)

    fh.seek(entry.data_offset)
    remaining = entry.compress_size
    if entry.method == ZIP_STORED:
        while remaining:
            data = fh.read(min(CHUNK, remaining))
            if not data:
                raise Refusal("corrupt", f"{entry.name!r}: truncated")
            remaining -= len(data)
            account(data)
            yield data
    else:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        while not inflater.eof:
            if inflater.unconsumed_tail:
                feed = inflater.unconsumed_tail
            elif remaining:
                feed = fh.read(min(CHUNK, remaining))
                if not feed:
                    raise Refusal("corrupt", f"{entry.name!r}: truncated")
                remaining -= len(feed)
            else:
                feed = b""
            try:
                data = inflater.decompress(feed, CHUNK)
            except zlib.error as exc:
                raise Refusal("corrupt", f"{entry.name!r}: invalid deflate data ({exc})") from None
            if data:
                account(data)
                yield data
            elif not feed:
                break
        if not inflater.eof:
            raise Refusal("corrupt", f"{entry.name!r}: the deflate stream is truncated")
        if remaining or inflater.unused_data or inflater.unconsumed_tail:
            raise Refusal("corrupt", f"{entry.name!r}: bytes after the end of the deflate stream")
    if produced != entry.file_size:
        raise Refusal(
            "corrupt", f"{entry.name!r}: {produced} bytes, but the header says {entry.file_size}"
        )
    if crc != entry.crc:
        raise Refusal("corrupt", f"{entry.name!r}: CRC mismatch")


def read_whole(
    fh: BinaryIO, entry: Entry, limits: PackageLimits, cap: int, cap_reason: str
) -> bytes:
    """The whole content of a small entry, refused past ``cap`` bytes."""
    return b"".join(read_entry(fh, entry, limits, cap=cap, cap_reason=cap_reason))
