"""The .plughub format: builds are deterministic and round-trip; every hostile archive is refused
with its reason, before anything is written or while inflating, never by trusting headers."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import stat
import struct
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from plughub.errors import ManifestError, PackageError
from plughub.packages import (
    META_NAME,
    PACKAGE_SUFFIX,
    PackageLimits,
    SigningKey,
    TrustStore,
    build_package,
    check_signature,
    checksum_listing,
    extract_package,
    public_key_text,
    read_package,
    signed_message,
    verify_package,
)

MANIFEST = b"id: acme/demo\nversion: 1.0.0\ndescription: A demo.\nentrypoint: plugin\n"
CODE = b"from plughub.sdk import tool\n\n\n@tool\ndef ping() -> str:\n    return 'pong'\n"


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """A plugin folder with code, data, a bundled wheel, and things the build must leave out."""
    src = tmp_path / "demo"
    (src / "assets").mkdir(parents=True)
    (src / "wheels").mkdir()
    (src / "plugin.yaml").write_bytes(MANIFEST)
    (src / "plugin.py").write_bytes(CODE)
    (src / "README.md").write_text("# demo\n")
    (src / "requirements.txt").write_text("httpx>=0.27\n")
    (src / "assets" / "icon.bin").write_bytes(bytes(range(256)) * 40)
    (src / "wheels" / "dep-1.0-py3-none-any.whl").write_bytes(b"PK-not-really-a-wheel")
    for skipped in (
        ".git/config",
        ".venv/bin/python",
        "__pycache__/plugin.cpython-311.pyc",
        ".pytest_cache/x",
        ".mypy_cache/x",
        ".ruff_cache/x",
        "sub/.hidden",
    ):
        (src / skipped).parent.mkdir(parents=True, exist_ok=True)
        (src / skipped).write_text("skip me")
    (src / ".env").write_text("API_KEY=secret\n")
    (src / "stale.pyc").write_bytes(b"\0")
    (src / "old-0.9.0.plughub").write_bytes(b"old")
    return src


KEPT = (
    "README.md",
    "assets/icon.bin",
    "plugin.py",
    "plugin.yaml",
    "requirements.txt",
    "wheels/dep-1.0-py3-none-any.whl",
)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def trust(tmp_path: Path, key: SigningKey) -> TrustStore:
    store = TrustStore(tmp_path / "trust")
    store.add(public_key_text(key.public_bytes()), "acme")
    return store


@dataclass
class Raw:
    """One hand-made zip entry: every header field is ours to falsify."""

    name: str | bytes
    payload: bytes
    method: int
    crc: int
    file_size: int
    external_attr: int = (stat.S_IFREG | 0o644) << 16
    flags: int = 0x800
    at: str | None = None  # no local header of its own: point at this entry's data instead


def raw(name: str | bytes, content: bytes, *, deflate: bool = True, **override: int) -> Raw:
    if deflate:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload, method = packer.compress(content) + packer.flush(), zipfile.ZIP_DEFLATED
    else:
        payload, method = content, zipfile.ZIP_STORED
    entry = Raw(name, payload, method, zlib.crc32(content), len(content))
    for field, value in override.items():
        setattr(entry, field, value)
    return entry


def _name(e: Raw) -> bytes:
    return e.name.encode() if isinstance(e.name, str) else e.name


def local_entry(e: Raw) -> bytes:
    """The local header and data of an entry, exactly as they appear in the archive."""
    name = _name(e)
    return (
        struct.pack(
            "<4s5H3L2H",
            b"PK\x03\x04",
            20,
            e.flags,
            e.method,
            0,
            0x21,
            e.crc,
            len(e.payload),
            e.file_size,
            len(name),
            0,
        )
        + name
        + e.payload
    )


def write_zip(path: Path, entries: list[Raw], *, prefix: bytes = b"", suffix: bytes = b"") -> Path:
    """A zip written byte by byte, with whatever the entries claim."""
    body, central, data_at = bytearray(prefix), bytearray(), {}
    for e in entries:
        name = _name(e)
        if e.at is None:
            offset = len(body)
            data_at[e.name] = offset + 30 + len(name)
            body += local_entry(e)
        else:
            offset = data_at[e.at]
        central += (
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                (3 << 8) | 20,
                20,
                e.flags,
                e.method,
                0,
                0x21,
                e.crc,
                len(e.payload),
                e.file_size,
                len(name),
                0,
                0,
                0,
                0,
                e.external_attr,
                offset,
            )
            + name
        )
    start = len(body)
    body += central + struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), start, 0
    )
    path.write_bytes(bytes(body) + suffix)
    return path


def meta_for(contents: dict[str, bytes], **override: object) -> bytes:
    checksum = checksum_listing((p, hashlib.sha256(c).hexdigest()) for p, c in contents.items())
    meta = {
        "format": 1,
        "id": "acme/demo",
        "version": "1.0.0",
        "checksum": checksum,
        "files": len(contents),
        "signature": None,
    }
    meta.update(override)
    return json.dumps(meta).encode()


def hand_package(
    path: Path,
    files: dict[str, bytes] | None = None,
    *,
    extra: tuple[Raw, ...] = (),
    meta: bytes | None = None,
) -> Path:
    """A valid package written by hand (plus ``extra`` entries the metadata counts as files)."""
    files = {"plugin.yaml": MANIFEST, "plugin.py": CODE} if files is None else files
    if meta is None:
        meta = meta_for(files, files=len(files) + len(extra))
    entries = [raw(n, c) for n, c in files.items()] + list(extra) + [raw(META_NAME, meta)]
    return write_zip(path, entries)


def rezip(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """Copy a package entry by entry, swapping the content of some entries."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info, replace.get(info.filename, zin.read(info)))
    return dst


def refused(reason: str, path: Path, **kwargs: object) -> PackageError:
    with pytest.raises(PackageError) as caught:
        read_package(path, **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason == reason, caught.value
    return caught.value


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- building and round trips ---------------------------------------------------------------


def test_round_trip_build_verify_extract_gives_identical_files(plugin, tmp_path, key, trust):
    pkg = build_package(plugin, key=key)
    assert pkg == tmp_path / f"demo-1.0.0{PACKAGE_SUFFIX}"
    info = verify_package(pkg, trust)
    assert (info.id, info.version, info.key_id, info.size) == (
        "acme/demo",
        "1.0.0",
        key.key_id,
        pkg.stat().st_size,
    )
    assert info.files == KEPT and info.manifest.description == "A demo."
    out = tmp_path / "installed"
    extracted = extract_package(pkg, out)
    assert extracted.checksum == info.checksum
    assert tree(out) == {name: (plugin / name).read_bytes() for name in KEPT}
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o111 == 0 for p in out.rglob("*") if p.is_file())


def test_builds_are_byte_identical_whatever_the_mtimes(plugin, tmp_path, key):
    first = build_package(plugin, tmp_path / "one.plughub", key=key).read_bytes()
    os.utime(plugin / "plugin.py", (1, 1))
    time.sleep(0.01)
    (plugin / "README.md").write_text("# demo\n")  # same content, new mtime
    second = build_package(plugin, tmp_path / "two.plughub", key=key).read_bytes()
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        names = [i.filename for i in zf.infolist()]
        assert names == [*KEPT, META_NAME]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in zf.infolist()} == {0o100644}
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}


def test_the_metadata_follows_the_published_spec(plugin, tmp_path, key):
    """Recompute checksum, key id and signature from the spec text, not from our helpers."""
    pkg = build_package(plugin, tmp_path / "p.plughub", key=key)
    with zipfile.ZipFile(pkg) as zf:
        meta = json.loads(zf.read(META_NAME))
        listing = "".join(
            f"{n}\0{hashlib.sha256(zf.read(n)).hexdigest()}\n" for n in sorted(KEPT)
        ).encode()
    checksum = "sha256:" + hashlib.sha256(listing).hexdigest()
    assert meta == {
        "format": 1,
        "id": "acme/demo",
        "version": "1.0.0",
        "checksum": checksum,
        "files": len(KEPT),
        "signature": meta["signature"],
    }
    sig = meta["signature"]
    assert sig["algorithm"] == "ed25519"
    assert sig["key_id"] == hashlib.sha256(key.public_bytes()).hexdigest()[:16]
    message = b"plughub-package-v1\nacme/demo\n1.0.0\n" + checksum.encode()
    assert message == signed_message("acme/demo", "1.0.0", checksum)
    Ed25519PublicKey.from_public_bytes(key.public_bytes()).verify(
        base64.b64decode(sig["value"]), message
    )


def test_an_unsigned_build_has_null_signature(plugin, tmp_path):
    pkg = build_package(plugin, tmp_path / "u.plughub")
    with zipfile.ZipFile(pkg) as zf:
        assert json.loads(zf.read(META_NAME))["signature"] is None
    info = read_package(pkg)
    assert info.signature is None and info.key_id is None


def test_build_validates_the_manifest_first(plugin, tmp_path):
    (plugin / "plugin.yaml").write_text("id: Not A Valid Id\nversion: 1\n")
    with pytest.raises(ManifestError):
        build_package(plugin)
    assert not list(tmp_path.glob("*.plughub"))


def test_build_refuses_a_symlink_in_the_folder(plugin, tmp_path):
    (tmp_path / "secret.txt").write_text("outside")
    (plugin / "link.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PackageError) as caught:
        build_package(plugin)
    assert caught.value.reason == "symlink" and "link.txt" in str(caught.value)
    assert not list(tmp_path.glob("*.plughub")) and not list(tmp_path.glob(".*.tmp"))


def test_build_refuses_a_file_named_like_the_metadata(plugin):
    (plugin / "plughub-package.JSON").write_text("{}")
    with pytest.raises(PackageError) as caught:
        build_package(plugin)
    assert caught.value.reason == "bad_path"


def test_build_refuses_to_ship_a_private_key(plugin, key, tmp_path):
    key.save(plugin / "signing.key")
    with pytest.raises(PackageError) as caught:
        build_package(plugin, key=key)
    assert caught.value.reason == "private_key" and "signing.key" in str(caught.value)
    assert not list(tmp_path.glob("*.plughub"))


def test_build_refuses_names_that_differ_only_in_case(plugin):
    (plugin / "readme.md").write_text("other")
    if len(list(plugin.glob("[Rr][Ee]*.md"))) < 2:
        pytest.skip("case-insensitive filesystem")
    with pytest.raises(PackageError) as caught:
        build_package(plugin)
    assert caught.value.reason == "duplicate_entry"


def test_build_overwrites_its_output_atomically(plugin, tmp_path):
    out = tmp_path / "dist" / "x.plughub"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    assert build_package(plugin, out) == out
    assert read_package(out).id == "acme/demo"
    assert [p.name for p in out.parent.iterdir()] == ["x.plughub"]


# --- names and entry types -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "/abs",
        "a/../../x",
        "a/./b",
        "C:x",
        "c:/windows/x",
        "a\\b",
        "..\\evil",
        "a//b",
        "a\x00b",
        "a\nb",
        "bad|name",
        "x/" + "y" * 256,
        "z" * 600,
        "./plugin.py",
    ],
    ids=repr,
)
def test_unsafe_names_are_refused(tmp_path, name):
    refused("bad_path", hand_package(tmp_path / "p.plughub", extra=(raw(name, b"x"),)))


def test_a_symlink_entry_is_refused(tmp_path):
    link = raw("link", b"/etc/passwd", external_attr=0o120777 << 16)
    refused("symlink", hand_package(tmp_path / "p.plughub", extra=(link,)))


@pytest.mark.parametrize("mode", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_special_file_entries_are_refused(tmp_path, mode):
    entry = raw("dev", b"", external_attr=(mode | 0o644) << 16)
    refused("special_file", hand_package(tmp_path / "p.plughub", extra=(entry,)))


def test_a_file_entry_whose_mode_says_folder_is_refused(tmp_path):
    entry = raw("data", b"x", external_attr=(stat.S_IFDIR | 0o755) << 16)
    refused("special_file", hand_package(tmp_path / "p.plughub", extra=(entry,)))


def test_folder_entries_are_accepted_but_carry_nothing(tmp_path):
    folder = raw("assets/", b"", external_attr=(stat.S_IFDIR | 0o755) << 16)
    files = {"plugin.yaml": MANIFEST, "assets/a.txt": b"a"}
    pkg = write_zip(
        tmp_path / "p.plughub",
        [folder, *(raw(n, c) for n, c in files.items()), raw(META_NAME, meta_for(files))],
    )
    assert read_package(pkg).files == ("assets/a.txt", "plugin.yaml")


def test_exact_duplicate_entries_are_refused(tmp_path):
    pkg = tmp_path / "p.plughub"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name" and writes it anyway
        with zipfile.ZipFile(pkg, "w") as zf:
            zf.writestr("plugin.yaml", MANIFEST)
            zf.writestr("plugin.py", CODE)
            zf.writestr("plugin.py", b"print('the other one')")
            zf.writestr(META_NAME, meta_for({"plugin.yaml": MANIFEST, "plugin.py": CODE}))
    assert "twice" in str(refused("duplicate_entry", pkg))


def test_two_metadata_files_are_refused(tmp_path):
    files = {"plugin.yaml": MANIFEST}
    entries = [
        raw("plugin.yaml", MANIFEST),
        raw(META_NAME, meta_for(files)),
        raw(META_NAME, meta_for(files, id="evil/other")),
    ]
    refused("duplicate_entry", write_zip(tmp_path / "p.plughub", entries))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("README.md", "readme.md"),
        ("Lib/x.py", "lib/x.py"),
        ("caf\u00e9.txt", "cafe\u0301.txt"),
        ("data", "data/inner.txt"),
        ("STRASSE", "straße"),
    ],
)
def test_names_that_collide_on_some_filesystem_are_refused(tmp_path, first, second):
    entries = (raw(first, b"1"), raw(second, b"2"))
    refused("duplicate_entry", hand_package(tmp_path / "p.plughub", extra=entries))


def test_encrypted_and_exotic_compression_are_refused(tmp_path):
    refused(
        "unsupported_entry",
        hand_package(tmp_path / "e.plughub", extra=(raw("x", b"x", flags=0x801),)),
    )
    refused(
        "unsupported_entry",
        hand_package(tmp_path / "b.plughub", extra=(raw("x", b"x", method=12),)),
    )


# --- counts, sizes and bombs -----------------------------------------------------------------


def test_too_many_files_is_refused(tmp_path):
    files = {"plugin.yaml": MANIFEST, **{f"f{i}.txt": b"x" for i in range(10)}}
    pkg = hand_package(tmp_path / "p.plughub", files)
    refused("too_many_files", pkg, limits=PackageLimits(max_files=10))
    assert read_package(pkg, limits=PackageLimits(max_files=11)).files


def test_a_huge_entry_count_is_refused_before_zipfile_reads_the_directory(tmp_path, monkeypatch):
    files = {"plugin.yaml": MANIFEST, **{f"f{i}.txt": b"x" for i in range(50)}}
    pkg = hand_package(tmp_path / "p.plughub", files)

    def must_not_run(*_a: object, **_k: object) -> None:
        raise AssertionError("zipfile parsed the directory")

    monkeypatch.setattr(zipfile, "ZipFile", must_not_run)
    refused("too_many_files", pkg, limits=PackageLimits(max_files=10))


def test_an_end_record_understating_the_entry_count_does_not_help(tmp_path, monkeypatch):
    """zipfile parses every header in the directory whatever the end record says: count them."""
    files = {"plugin.yaml": MANIFEST, **{f"f{i}.txt": b"x" for i in range(50)}}
    pkg = hand_package(tmp_path / "p.plughub", files)
    data = bytearray(pkg.read_bytes())
    eocd = data.rindex(b"PK\x05\x06")
    struct.pack_into("<2H", data, eocd + 8, 1, 1)  # "this archive holds 1 entry"
    pkg.write_bytes(bytes(data))

    def must_not_run(*_a: object, **_k: object) -> None:
        raise AssertionError("zipfile parsed the directory")

    monkeypatch.setattr(zipfile, "ZipFile", must_not_run)
    refused("too_many_files", pkg, limits=PackageLimits(max_files=10))


def test_a_highly_compressible_large_file_is_a_zip_bomb(tmp_path):
    zeros = raw("zeros.bin", bytes(50 * 1024 * 1024))
    assert len(zeros.payload) < 100_000
    refused("zip_bomb", hand_package(tmp_path / "p.plughub", extra=(zeros,)))


def test_small_files_may_compress_well(tmp_path):
    files = {"plugin.yaml": MANIFEST, "blank.txt": bytes(1024)}
    assert read_package(hand_package(tmp_path / "p.plughub", files)).files


def _two_gib_of_zeros_deflated() -> bytes:
    """A raw deflate stream inflating to 2 GiB, built in milliseconds from one flushed block."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(bytes(1024 * 1024)) + packer.flush(zlib.Z_FULL_FLUSH)
    return block * 2048 + b"\x03\x00"  # an empty final block ends the stream


def test_a_header_that_lies_about_the_size_is_caught_while_inflating(tmp_path):
    stream = _two_gib_of_zeros_deflated()
    liar = Raw("small.txt", stream, zipfile.ZIP_DEFLATED, zlib.crc32(bytes(100)), file_size=100)
    pkg = hand_package(tmp_path / "p.plughub", extra=(liar,))
    started = time.monotonic()
    err = refused("zip_bomb", pkg)
    assert "declared 100 bytes" in str(err)
    assert time.monotonic() - started < 5  # stopped at the first chunk, not after 2 GiB
    with pytest.raises(PackageError) as caught:
        extract_package(pkg, tmp_path / "out")
    assert caught.value.reason == "zip_bomb" and not (tmp_path / "out").exists()


def test_a_header_claiming_more_than_is_inside_is_corrupt(tmp_path):
    short = raw("short.txt", b"abc", file_size=10)
    refused("corrupt", hand_package(tmp_path / "p.plughub", extra=(short,)))


def test_file_and_total_size_limits(tmp_path):
    files = {"plugin.yaml": MANIFEST, "a.bin": os.urandom(3000), "b.bin": os.urandom(3000)}
    pkg = hand_package(tmp_path / "p.plughub", files)
    refused("too_large", pkg, limits=PackageLimits(max_file_bytes=2000))
    refused("too_large", pkg, limits=PackageLimits(max_total_bytes=5000))
    assert read_package(pkg, limits=PackageLimits(max_total_bytes=7000)).files


def test_overlapping_entries_are_a_zip_bomb(tmp_path):
    """The "better zip bomb": an entry's local header hidden inside another entry's data, so
    one stored stream is counted (and inflated) many times. Every header agrees; only the
    layout gives it away."""
    inner = raw("b.txt", b"hello")
    outer = raw("a.bin", local_entry(inner), deflate=False)
    inner.at = "a.bin"
    err = refused("zip_bomb", hand_package(tmp_path / "p.plughub", extra=(outer, inner)))
    assert "overlap" in str(err)


def test_a_local_header_that_disagrees_with_the_directory_is_corrupt(tmp_path):
    pkg = hand_package(tmp_path / "p.plughub")
    data = bytearray(pkg.read_bytes())
    second = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)  # plugin.py's entry
    struct.pack_into("<L", data, second + 42, 0)  # ... now points at plugin.yaml's header
    pkg.write_bytes(bytes(data))
    assert "disagrees" in str(refused("corrupt", pkg))


def test_a_wrong_crc_is_corrupt(tmp_path):
    refused("corrupt", hand_package(tmp_path / "p.plughub", extra=(raw("x", b"data", crc=1),)))


# --- not a zip, metadata, manifest -----------------------------------------------------------


def test_not_a_zip(tmp_path):
    (tmp_path / "noise.plughub").write_bytes(os.urandom(4000))
    refused("not_a_zip", tmp_path / "noise.plughub")
    refused("not_a_zip", tmp_path / "missing.plughub")
    (tmp_path / "dir.plughub").mkdir()
    refused("not_a_zip", tmp_path / "dir.plughub")


def test_bytes_before_or_after_the_archive_are_refused(tmp_path):
    files = {"plugin.yaml": MANIFEST}
    entries = [raw("plugin.yaml", MANIFEST), raw(META_NAME, meta_for(files))]
    refused("not_a_zip", write_zip(tmp_path / "a.plughub", entries, prefix=b"#!/bin/sh\n"))
    refused("not_a_zip", write_zip(tmp_path / "b.plughub", entries, suffix=b"trailing"))
    assert read_package(write_zip(tmp_path / "c.plughub", entries)).id == "acme/demo"


def test_missing_metadata(tmp_path):
    pkg = write_zip(tmp_path / "p.plughub", [raw("plugin.yaml", MANIFEST)])
    refused("missing_metadata", pkg)


@pytest.mark.parametrize(
    "meta",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b"[" * 60000,
        b'{"format": 2}',
        b'{"format": true, "id": "acme/demo"}',
        meta_for({"plugin.yaml": MANIFEST}, checksum="md5:abc"),
        meta_for({"plugin.yaml": MANIFEST}, files=7),
        meta_for(
            {"plugin.yaml": MANIFEST},
            signature={"key_id": "x", "algorithm": "ed25519", "value": ""},
        ),
        meta_for(
            {"plugin.yaml": MANIFEST},
            signature={
                "key_id": "0" * 16,
                "algorithm": "rsa",
                "value": base64.b64encode(bytes(64)).decode(),
            },
        ),
        meta_for({"plugin.yaml": MANIFEST})[:-1] + b', "checksum": "sha256:' + b"0" * 64 + b'"}',
        b" " * (64 * 1024 + 1),
    ],
    ids=[
        "text",
        "not-utf8",
        "list",
        "deep",
        "format-2",
        "format-bool",
        "checksum",
        "count",
        "key-id",
        "algorithm",
        "duplicate-key",
        "too-big",
    ],
)
def test_bad_metadata(tmp_path, meta):
    pkg = write_zip(tmp_path / "p.plughub", [raw("plugin.yaml", MANIFEST), raw(META_NAME, meta)])
    refused("bad_metadata", pkg)


def test_missing_or_invalid_manifest(tmp_path):
    files = {"plugin.py": CODE}
    refused("bad_manifest", hand_package(tmp_path / "a.plughub", files))
    files = {"plugin.yaml": b"id: acme/demo\nversion: one\n"}
    err = refused("bad_manifest", hand_package(tmp_path / "b.plughub", files))
    assert "version" in str(err)


def test_manifest_and_metadata_must_name_the_same_plugin(tmp_path):
    files = {"plugin.yaml": MANIFEST}
    refused(
        "id_mismatch",
        hand_package(tmp_path / "a.plughub", files, meta=meta_for(files, id="acme/other")),
    )
    refused(
        "id_mismatch",
        hand_package(tmp_path / "b.plughub", files, meta=meta_for(files, version="2.0.0")),
    )


# --- checksums and signatures ----------------------------------------------------------------


def test_a_file_changed_after_signing_is_a_checksum_mismatch(plugin, tmp_path, key, trust):
    pkg = build_package(plugin, key=key)
    changed = MANIFEST.replace(b"A demo.", b"A demo, now with a backdoor.")
    tampered = rezip(pkg, tmp_path / "tampered.plughub", {"plugin.yaml": changed})
    refused("checksum_mismatch", tampered)
    with pytest.raises(PackageError) as caught:
        verify_package(tampered, trust)
    assert caught.value.reason == "checksum_mismatch"
    with pytest.raises(PackageError) as caught:
        extract_package(tampered, tmp_path / "out")
    assert caught.value.reason == "checksum_mismatch" and not (tmp_path / "out").exists()


def test_unsigned_is_refused_unless_allowed(plugin, trust):
    pkg = build_package(plugin)
    with pytest.raises(PackageError) as caught:
        verify_package(pkg, trust)
    assert caught.value.reason == "unsigned"
    assert verify_package(pkg, trust, allow_unsigned=True).signature is None


def test_an_unknown_key_is_untrusted_unless_allowed(plugin, tmp_path):
    stranger = SigningKey.generate()
    pkg = build_package(plugin, key=stranger)
    empty = TrustStore(tmp_path / "empty")
    with pytest.raises(PackageError) as caught:
        verify_package(pkg, empty, allow_unsigned=True)
    assert caught.value.reason == "untrusted_key" and stranger.key_id in str(caught.value)
    assert verify_package(pkg, empty, allow_untrusted=True).key_id == stranger.key_id


def _resign(pkg: Path, dst: Path, sign: SigningKey, key_id: str) -> Path:
    with zipfile.ZipFile(pkg) as zf:
        meta = json.loads(zf.read(META_NAME))
    message = signed_message(meta["id"], meta["version"], meta["checksum"])
    meta["signature"] = {
        "key_id": key_id,
        "algorithm": "ed25519",
        "value": base64.b64encode(sign.sign(message)).decode(),
    }
    return rezip(pkg, dst, {META_NAME: json.dumps(meta).encode()})


def test_a_wrong_signature_is_refused_whatever_the_flags(plugin, tmp_path, key, trust):
    pkg = build_package(plugin, key=key)
    forged = _resign(pkg, tmp_path / "forged.plughub", SigningKey.generate(), key.key_id)
    for flags in ({}, {"allow_unsigned": True, "allow_untrusted": True}):
        with pytest.raises(PackageError) as caught:
            verify_package(forged, trust, **flags)  # type: ignore[arg-type]
        assert caught.value.reason == "bad_signature"
    assert _resign(pkg, tmp_path / "ok.plughub", key, key.key_id).exists()
    assert verify_package(tmp_path / "ok.plughub", trust).key_id == key.key_id


def test_a_signature_over_another_version_does_not_verify(plugin, tmp_path, key, trust):
    """The signed message binds id and version: metadata claiming 2.0.0 cannot reuse it."""
    pkg = build_package(plugin, key=key)
    (plugin / "plugin.yaml").write_bytes(MANIFEST.replace(b"1.0.0", b"2.0.0"))
    newer = build_package(plugin, tmp_path / "newer.plughub")
    with zipfile.ZipFile(pkg) as zf:
        old_sig = json.loads(zf.read(META_NAME))["signature"]
    with zipfile.ZipFile(newer) as zf:
        meta = json.loads(zf.read(META_NAME))
    meta["signature"] = old_sig
    spliced = rezip(newer, tmp_path / "spliced.plughub", {META_NAME: json.dumps(meta).encode()})
    with pytest.raises(PackageError) as caught:
        verify_package(spliced, trust)
    assert caught.value.reason == "bad_signature"


def test_check_signature_verifies_what_extract_returned(plugin, tmp_path, key, trust):
    pkg = build_package(plugin, key=key)
    info = extract_package(pkg, tmp_path / "out")
    check_signature(info, trust)
    with pytest.raises(PackageError) as caught:
        check_signature(info, TrustStore(tmp_path / "none"))
    assert caught.value.reason == "untrusted_key"


# --- extraction ------------------------------------------------------------------------------


def test_extraction_into_a_non_empty_folder_is_refused(plugin, tmp_path):
    pkg = build_package(plugin)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(PackageError) as caught:
        extract_package(pkg, dest)
    assert caught.value.reason == "bad_destination"
    assert tree(dest) == {"mine.txt": b"keep"}


def test_extraction_into_a_file_or_a_symlink_is_refused(plugin, tmp_path):
    pkg = build_package(plugin)
    (tmp_path / "file").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for dest in (tmp_path / "file", tmp_path / "link"):
        with pytest.raises(PackageError) as caught:
            extract_package(pkg, dest)
        assert caught.value.reason == "bad_destination"
    assert list((tmp_path / "real").iterdir()) == []


def test_extraction_into_an_existing_empty_folder_works(plugin, tmp_path):
    dest = tmp_path / "empty"
    dest.mkdir()
    extract_package(build_package(plugin), dest)
    assert sorted(tree(dest)) == sorted(KEPT)


def test_an_extraction_that_fails_midway_leaves_nothing_behind(tmp_path):
    files = {"a.txt": b"a" * 100, "plugin.yaml": MANIFEST, "sub/b.txt": b"b"}
    broken = raw("zz/late.txt", b"late", crc=0)  # sorted last: fails after the others are written
    pkg = hand_package(tmp_path / "p.plughub", files, extra=(broken,))
    new = tmp_path / "new"
    with pytest.raises(PackageError) as caught:
        extract_package(pkg, new)
    assert caught.value.reason == "corrupt"
    assert not new.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(PackageError):
        extract_package(pkg, existing)
    assert existing.is_dir() and list(existing.iterdir()) == []


def test_an_extraction_failing_on_the_filesystem_cleans_up(plugin, tmp_path, monkeypatch):
    from plughub.packages import _format

    pkg = build_package(plugin)
    real_write_all = _format._write_all
    calls = {"n": 0}

    def disk_full_on_third_write(fd: int, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(_format, "_write_all", disk_full_on_third_write)
    with pytest.raises(OSError, match="No space"):
        extract_package(pkg, tmp_path / "out")
    assert calls["n"] == 3 and not (tmp_path / "out").exists()


def test_extract_refuses_a_package_other_than_the_one_verified(plugin, tmp_path, key, trust):
    good = verify_package(build_package(plugin, key=key), trust)
    (plugin / "plugin.py").write_text("print('swapped')\n")
    swapped = build_package(plugin, tmp_path / "swapped.plughub")
    with pytest.raises(PackageError) as caught:
        extract_package(swapped, tmp_path / "out", expected_checksum=good.checksum)
    assert caught.value.reason == "checksum_mismatch" and not (tmp_path / "out").exists()


def test_the_writer_never_follows_a_link_planted_in_the_destination(tmp_path):
    from plughub.packages._format import _Writer

    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    (dest / "file.txt").symlink_to(outside / "target.txt")
    writer = _Writer(dest)
    try:
        with pytest.raises(OSError):
            writer.create("sub/x.txt")
        with pytest.raises(OSError):
            writer.create("file.txt")
    finally:
        writer.close()
    assert list(outside.iterdir()) == []


def test_package_errors_pickle_and_name_the_package(tmp_path):
    err = refused("missing_metadata", write_zip(tmp_path / "p.plughub", [raw("a", b"a")]))
    assert str(err).startswith(str(tmp_path / "p.plughub") + ": ")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.reason, copy.message, str(copy)) == (
        err.path,
        err.reason,
        err.message,
        str(err),
    )
