"""Credentials: encrypted at rest (AES-256-GCM), bound to their row, write-only, rotatable."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from plughub.errors import StoreError
from plughub.store import Keyring, Store, generate_key
from plughub.store.__main__ import main as store_main

SECRET = "sk-live-THIS-IS-THE-PLAINTEXT-1234567890"


def test_credentials_round_trip_and_names_only_in_listings(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    info = acme.set_credential("acme/weather", "API_KEY", SECRET)
    assert (info.plugin_id, info.name, info.key_version) == ("acme/weather", "API_KEY", 1)
    acme.set_credential("acme/weather", "region", "eu")
    assert acme.get_credentials("acme/weather") == {"API_KEY": SECRET, "region": "eu"}
    assert acme.credential_names("acme/weather") == ["API_KEY", "region"]
    listed = acme.list_credentials()
    assert [c.name for c in listed] == ["API_KEY", "region"]
    assert SECRET not in repr(listed) and SECRET not in str([c.to_dict() for c in listed])
    acme.set_credential("acme/weather", "API_KEY", "new-value")  # overwrite
    assert acme.get_credentials("acme/weather")["API_KEY"] == "new-value"
    assert acme.delete_credential("acme/weather", "region") is True
    assert acme.delete_credential("acme/weather", "region") is False
    assert acme.credential_names("acme/weather") == ["API_KEY"]
    assert acme.get_credentials("other/plugin") == {}


def test_plaintext_is_not_in_any_column(store: Store, dump_db: Callable[[Store], str]) -> None:
    store.create_tenant("acme")
    store.tenant("acme").set_credential("acme/weather", "API_KEY", SECRET)
    dump = dump_db(store)
    assert "API_KEY" in dump
    assert SECRET not in dump
    assert base64.b64encode(SECRET.encode()).decode() not in dump


def test_plaintext_is_not_in_the_sqlite_file_or_wal(tmp_path: Path, keyring: Keyring) -> None:
    with Store(f"sqlite:///{tmp_path / 'store.db'}", keyring=keyring) as store:
        store.migrate()
        store.create_tenant("acme")
        acme = store.tenant("acme")
        acme.set_credential("acme/weather", "API_KEY", SECRET)
        acme.set_credential("acme/weather", "API_KEY", SECRET + "-v2")  # old page versions too
        assert acme.get_credentials("acme/weather")["API_KEY"] == SECRET + "-v2"
        files = sorted(p for p in tmp_path.iterdir() if p.name.startswith("store.db"))
        assert {p.name for p in files} >= {"store.db", "store.db-wal"}
        for path in files:
            data = path.read_bytes()
            assert SECRET.encode() not in data, path
            assert SECRET.encode("utf-16-le") not in data, path


def test_plaintext_never_reaches_the_logs(
    store: Store, make_store: Callable[..., Store], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store.create_tenant("acme")
    acme = store.tenant("acme")
    acme.set_credential("acme/weather", "API_KEY", SECRET)
    acme.get_credentials("acme/weather")
    store.rotate()
    other = make_store(keyring=Keyring({1: os.urandom(32)}))
    with pytest.raises(StoreError) as err:
        other.tenant("acme").get_credentials("acme/weather")
    assert SECRET not in str(err.value)
    assert SECRET not in caplog.text


def test_missing_key_is_a_clear_error_on_write_and_read(
    make_store: Callable[..., Store],
    monkeypatch: pytest.MonkeyPatch,
    dump_db: Callable[[Store], str],
) -> None:
    monkeypatch.delenv("PLUGHUB_SECRET_KEY", raising=False)
    monkeypatch.delenv("PLUGHUB_SECRET_KEY_FILE", raising=False)
    keyless = make_store(keyring=None)
    keyless.create_tenant("acme")  # everything without credentials works
    keyless.tenant("acme").set_installation("acme/weather")
    with pytest.raises(StoreError) as err:
        keyless.tenant("acme").set_credential("acme/weather", "API_KEY", SECRET)
    assert err.value.reason == "no_key" and "PLUGHUB_SECRET_KEY_FILE" in str(err.value)
    assert SECRET not in dump_db(keyless)  # nothing stored, certainly not the plaintext
    make_store().tenant("acme").set_credential("acme/weather", "API_KEY", SECRET)
    with pytest.raises(StoreError) as err:
        keyless.tenant("acme").get_credentials("acme/weather")
    assert err.value.reason == "no_key"


def test_wrong_key_is_a_clear_error(make_store: Callable[..., Store]) -> None:
    right = make_store()
    right.create_tenant("acme")
    right.tenant("acme").set_credential("acme/weather", "API_KEY", SECRET)
    wrong = make_store(keyring=Keyring({1: os.urandom(32)}))
    with pytest.raises(StoreError) as err:
        wrong.tenant("acme").get_credentials("acme/weather")
    assert err.value.reason == "decrypt"
    assert "API_KEY" in str(err.value) and "wrong" in str(err.value)
    missing_version = make_store(keyring=Keyring({2: os.urandom(32)}))
    with pytest.raises(StoreError, match="key version 1, which keys given in code does not hold"):
        missing_version.tenant("acme").get_credentials("acme/weather")


def test_ciphertext_moved_to_another_tenant_does_not_decrypt(store: Store) -> None:
    for tenant in ("acme", "evil"):
        store.create_tenant(tenant)
    store.tenant("acme").set_credential("acme/weather", "API_KEY", SECRET)
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO credentials (tenant_id, plugin_id, name, ciphertext, key_version,"
                " updated_at) SELECT 'evil', plugin_id, name, ciphertext, key_version, updated_at"
                " FROM credentials WHERE tenant_id = 'acme'"
            )
        )
        conn.execute(  # and to another name of the same tenant
            text(
                "INSERT INTO credentials (tenant_id, plugin_id, name, ciphertext, key_version,"
                " updated_at) SELECT tenant_id, plugin_id, 'OTHER', ciphertext, key_version,"
                " updated_at FROM credentials WHERE tenant_id = 'acme'"
            )
        )
    assert store.tenant("evil").credential_names("acme/weather") == ["API_KEY"]
    with pytest.raises(StoreError) as err:
        store.tenant("evil").get_credentials("acme/weather")
    assert err.value.reason == "decrypt" and "moved" in str(err.value)
    with pytest.raises(StoreError, match="OTHER"):
        store.tenant("acme").get_credentials("acme/weather")


def test_rotation_re_encrypts_everything_with_the_newest_key(
    make_store: Callable[..., Store],
) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    old = make_store(keyring=Keyring({1: k1}))
    for tenant in ("acme", "beta"):
        old.create_tenant(tenant)
        for i in range(3):
            old.tenant(tenant).set_credential(f"{tenant}/p{i}", "TOKEN", f"{tenant}-secret-{i}")
    assert old.credential_key_versions() == {1: 6}
    both = make_store(keyring=Keyring({1: k1, 2: k2}))
    assert both.tenant("acme").get_credentials("acme/p0") == {"TOKEN": "acme-secret-0"}
    both.tenant("acme").set_credential("acme/p0", "NEW", "x")  # new writes use version 2
    assert {c.name: c.key_version for c in both.tenant("acme").list_credentials("acme/p0")} == {
        "NEW": 2,
        "TOKEN": 1,
    }
    assert both.rotate() == 6
    assert both.credential_key_versions() == {2: 7}
    assert both.rotate() == 0
    only_new = make_store(keyring=Keyring({2: k2}))
    for tenant in ("acme", "beta"):
        for i in range(3):
            assert only_new.tenant(tenant).get_credentials(f"{tenant}/p{i}")["TOKEN"] == (
                f"{tenant}-secret-{i}"
            )


def test_validation_sees_the_merged_credentials_and_can_refuse(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    acme.set_credential("acme/weather", "region", "eu")
    seen: list[dict[str, str]] = []

    def check(values: dict[str, str]) -> None:
        seen.append(dict(values))
        if values.get("API_KEY") != "good":
            raise ValueError("the weather service refused this key")

    with pytest.raises(ValueError, match="refused"):
        acme.set_credentials("acme/weather", {"API_KEY": "bad"}, validate=check)
    assert acme.credential_names("acme/weather") == ["region"]  # nothing written
    acme.set_credentials("acme/weather", {"API_KEY": "good"}, validate=check)
    assert seen == [{"region": "eu", "API_KEY": "bad"}, {"region": "eu", "API_KEY": "good"}]
    assert acme.get_credentials("acme/weather") == {"region": "eu", "API_KEY": "good"}


def test_malformed_credentials_are_refused(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    for plugin, name, value, message in (
        ("weather", "K", "v", "invalid plugin id"),
        ("acme/weather", "bad name", "v", "invalid credential name"),
        ("acme/weather", "K" * 129, "v", "invalid credential name"),
        ("acme/weather", "a|b", "v", "invalid credential name"),
        ("acme/weather", "K", 42, "must be a string"),
        ("acme/weather", "K", "x" * (64 * 1024 + 1), "too long"),
    ):
        with pytest.raises(StoreError, match=message):
            acme.set_credential(plugin, name, value)  # type: ignore[arg-type]
    assert acme.list_credentials() == []


def test_keyring_from_file_and_env(tmp_path: Path) -> None:
    k1, k2 = generate_key(), generate_key()
    key_file = tmp_path / "keys"
    key_file.write_text(f"# plughub keys\n1:{k1}\n2:{k2}  # newest\n")
    key_file.chmod(0o600)
    ring = Keyring.from_env({"PLUGHUB_SECRET_KEY_FILE": str(key_file), "PLUGHUB_SECRET_KEY": "x"})
    assert ring is not None and ring.versions == (1, 2) and ring.newest == 2
    assert k1 not in repr(ring)
    single = Keyring.from_env({"PLUGHUB_SECRET_KEY": k1})
    assert single is not None and single.versions == (1,)
    several = Keyring.from_env({"PLUGHUB_SECRET_KEY": f"3:{k1}, 7:{k2}"})
    assert several is not None and several.newest == 7
    assert Keyring.from_env({}) is None
    version, blob = ring.encrypt(b"hello", b"t|p|n")
    assert version == 2 and ring.decrypt(2, blob, b"t|p|n") == b"hello"
    with pytest.raises(StoreError, match="does not decrypt"):
        ring.decrypt(2, blob, b"t|p|other")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no key"),
        ("not-base64!!", "not '<version>:<base64 key>'"),
        (base64.b64encode(b"short").decode(), "must be 32 bytes"),
        (f"1:{generate_key()}\n1:{generate_key()}", "appears twice"),
        (f"{generate_key()}\n{generate_key()}", "each needs a version"),
        (f"0:{generate_key()}", "integers >= 1"),
    ],
)
def test_bad_key_files_are_refused_clearly(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(StoreError, match=message) as err:
        Keyring.from_file(path)
    assert err.value.reason == "bad_key"
    with pytest.raises(StoreError, match="cannot read the key file"):
        Keyring.from_file(tmp_path / "missing")


def test_key_file_added_after_start_is_picked_up_and_rotation_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "secret.keys"
    assert store_main(["add-key", str(key_file)]) == 0
    assert key_file.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("PLUGHUB_SECRET_KEY_FILE", str(key_file))
    monkeypatch.setenv("PLUGHUB_STORE_URL", store_url)
    with Store(store_url) as replica_a, Store(store_url) as replica_b:
        replica_a.create_tenant("acme")
        replica_a.tenant("acme").set_credential("acme/weather", "API_KEY", SECRET)
        assert replica_b.tenant("acme").get_credentials("acme/weather") == {"API_KEY": SECRET}
        assert replica_b.keyring().versions == (1,)
        assert store_main(["add-key", str(key_file)]) == 0  # the operator adds version 2
        assert Keyring.from_file(key_file).versions == (1, 2)
        assert store_main(["rotate"]) == 0
        assert "re-encrypted 1 credential(s) with key version 2" in capsys.readouterr().out
        # Replica B loaded version 1 only; it re-reads the file when it meets version 2.
        assert replica_b.tenant("acme").get_credentials("acme/weather") == {"API_KEY": SECRET}
        assert replica_a.credential_key_versions() == {2: 1}
    assert store_main(["key-status"]) == 0
    assert "key version 2: 1 credential(s)" in capsys.readouterr().out


def test_add_key_keeps_an_unversioned_key_as_version_1(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    first = generate_key()
    key_file.write_text(first + "\n")
    assert store_main(["add-key", str(key_file)]) == 0
    ring = Keyring.from_file(key_file)
    assert ring.versions == (1, 2)
    assert key_file.read_text().startswith(f"1:{first}\n")
    assert store_main(["generate-key"]) == 0
