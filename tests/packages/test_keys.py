"""Signing keys, their public line, the trust store, and where plughub keeps them."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plughub.packages import (
    SigningKey,
    TrustStore,
    home,
    key_id_of,
    parse_public_key,
    public_key_text,
)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def test_key_id_is_the_start_of_the_sha256_of_the_raw_public_key(key):
    raw = key.public_bytes()
    assert len(raw) == 32
    assert key.key_id == key_id_of(raw) == hashlib.sha256(raw).hexdigest()[:16]
    with pytest.raises(ValueError):
        key_id_of(b"short")


def test_save_writes_a_0600_pem_and_load_reads_it_back(key, tmp_path):
    path = tmp_path / "me.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = SigningKey.load(path)
    assert loaded.key_id == key.key_id
    assert loaded.sign(b"data") == key.sign(b"data")  # ed25519 is deterministic


def test_save_never_overwrites_or_follows_a_link(key, tmp_path):
    path = tmp_path / "me.key"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        key.save(path)
    assert path.read_text() == "precious"
    target = tmp_path / "target"
    (tmp_path / "link.key").symlink_to(target)
    with pytest.raises(FileExistsError):
        key.save(tmp_path / "link.key")
    assert not target.exists()


def test_load_refuses_what_is_not_an_ed25519_private_key(tmp_path):
    (tmp_path / "junk.key").write_text("hello")
    with pytest.raises(ValueError, match="PEM"):
        SigningKey.load(tmp_path / "junk.key")
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ec.key").write_bytes(other)
    with pytest.raises(ValueError, match="not an ed25519 key"):
        SigningKey.load(tmp_path / "ec.key")
    with pytest.raises(FileNotFoundError):
        SigningKey.load(tmp_path / "absent.key")


def test_repr_shows_the_key_id_only(key):
    assert repr(key) == f"SigningKey(key_id={key.key_id!r})"


def test_public_key_text_round_trips(key):
    text = public_key_text(key.public_bytes())
    kind, b64, key_id = text.split()
    assert (kind, key_id) == ("ed25519", key.key_id)
    assert base64.b64decode(b64) == key.public_bytes()
    assert parse_public_key(text) == key.public_bytes()
    assert parse_public_key(f"# a comment\n\n  {text} Alice Example  \n") == key.public_bytes()
    assert parse_public_key(f"ed25519 {b64}") == key.public_bytes()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ssh-ed25519 AAAA",
        "ed25519",
        "ed25519 !!!not-base64!!!",
        "ed25519 " + base64.b64encode(b"x" * 31).decode(),
        "ed25519 " + base64.b64encode(b"x" * 32).decode() + " 0000000000000000",  # wrong id
        "ed25519 "
        + base64.b64encode(b"x" * 32).decode()
        + "\ned25519 "
        + base64.b64encode(b"y" * 32).decode(),  # two keys
    ],
    ids=["empty", "ssh", "no-key", "base64", "length", "key-id", "two-keys"],
)
def test_parse_public_key_refuses_anything_else(text):
    with pytest.raises(ValueError):
        parse_public_key(text)


def test_trust_store_add_get_list_remove(key, tmp_path):
    store = TrustStore(tmp_path / "trust")
    assert store.list() == [] and store.get(key.key_id) is None
    key_id = store.add(public_key_text(key.public_bytes()) + " from the line")
    assert key_id == key.key_id
    assert (tmp_path / "trust" / f"{key_id}.pub").is_file()
    assert store.get(key_id) == key.public_bytes()
    other = SigningKey.generate()
    assert store.add(other.public_bytes(), "raw bytes") == other.key_id
    assert store.list() == sorted([(key.key_id, "from the line"), (other.key_id, "raw bytes")])
    store.add(public_key_text(key.public_bytes()), name="renamed")
    assert dict(store.list())[key.key_id] == "renamed"
    assert store.remove(key_id) is True
    assert store.remove(key_id) is False
    assert store.get(key_id) is None
    with pytest.raises(ValueError):
        store.remove("../../etc/passwd")


def test_trust_store_verifies_signatures_only_by_trusted_keys(key, tmp_path):
    store = TrustStore(tmp_path / "trust")
    sig = key.sign(b"message")
    assert store.verify(key.key_id, b"message", sig) is False  # not trusted yet
    store.add(key.public_bytes())
    assert store.verify(key.key_id, b"message", sig) is True
    assert store.verify(key.key_id, b"other message", sig) is False
    assert store.verify(key.key_id, b"message", sig[:-1] + bytes([sig[-1] ^ 1])) is False
    assert store.verify(key.key_id, b"message", b"short") is False
    assert store.verify("not-an-id", b"message", sig) is False


def test_a_store_file_whose_key_does_not_match_its_name_is_ignored(key, tmp_path):
    store = TrustStore(tmp_path / "trust")
    other = SigningKey.generate()
    store.add(other.public_bytes())
    # Someone renames a trusted key's file to impersonate another id.
    os.replace(tmp_path / "trust" / f"{other.key_id}.pub", tmp_path / "trust" / f"{key.key_id}.pub")
    assert store.get(key.key_id) is None and store.list() == []
    (tmp_path / "trust" / "garbage.pub").write_text("not a key")
    assert store.list() == []


def test_key_names_are_one_line(key, tmp_path):
    with pytest.raises(ValueError):
        TrustStore(tmp_path).add(key.public_bytes(), "two\nlines")


def test_home_is_plughub_home_else_the_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PLUGHUB_HOME", str(tmp_path / "h"))
    assert home() == tmp_path / "h"
    monkeypatch.setenv("PLUGHUB_HOME", "~/ph")
    assert home() == Path.home() / "ph"
    monkeypatch.delenv("PLUGHUB_HOME")
    import platformdirs

    assert home() == Path(platformdirs.user_data_dir("plughub", appauthor=False))
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # not installed
    assert home() == Path.home() / ".plughub"
