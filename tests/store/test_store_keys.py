"""Tenants and API keys: hashed at rest, shown once, roles, revocation, authentication."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from plughub.errors import StoreError
from plughub.store import ROLES, Store
from plughub.store._models import ApiKey


def test_tenants_are_created_listed_and_refused_twice(store: Store) -> None:
    info = store.create_tenant("acme", "Acme Inc.")
    assert (info.id, info.name) == ("acme", "Acme Inc.")
    assert info.created_at.tzinfo is not None
    store.create_tenant("beta")
    assert [t.id for t in store.list_tenants()] == ["acme", "beta"]
    assert store.get_tenant("beta") is not None and store.get_tenant("beta").name == "beta"  # type: ignore[union-attr]
    assert store.get_tenant("nope") is None
    with pytest.raises(StoreError) as err:
        store.create_tenant("acme")
    assert err.value.reason == "conflict" and "exists already" in str(err.value)


def test_created_key_authenticates_with_its_tenant_and_role(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    for role in ROLES:
        key_id, token = acme.create_key(role, f"{role} key")
        assert token.startswith(f"phk_{key_id}_") and len(token) > 50
        info = store.authenticate(token)
        assert info is not None
        assert (info.key_id, info.tenant_id, info.role, info.name) == (
            key_id,
            "acme",
            role,
            f"{role} key",
        )
        assert info.active and token.startswith(info.hint.rstrip("."))
    assert sorted(k.role for k in acme.list_keys()) == sorted(ROLES)


def test_wrong_or_malformed_tokens_do_not_authenticate(store: Store) -> None:
    store.create_tenant("acme")
    key_id, token = store.tenant("acme").create_key("member")
    for bad in (
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # wrong secret
        f"phk_{key_id}_",
        f"phk_{key_id}",
        "phk_0123456789abcdef_" + token.split("_", 2)[2],  # unknown key id, right secret
        token.replace("phk_", "xyz_"),
        "",
        "phk_" + "a" * 300,
        "phk_NOTHEX!!!!!!!!!_secret",
        None,
        12345,
    ):
        assert store.authenticate(bad) is None, bad  # type: ignore[arg-type]


def test_token_plaintext_is_not_stored_anywhere(
    store: Store, dump_db: Callable[[Store], str]
) -> None:
    store.create_tenant("acme")
    key_id, token = store.tenant("acme").create_key("admin", "ops")
    secret = token.split("_", 2)[2]
    dump = dump_db(store)
    assert key_id in dump  # the dump does see the key's row...
    assert secret not in dump and token not in dump  # ...but not its secret
    assert hashlib.sha256(secret.encode()).hexdigest() not in dump  # nor an unsalted hash
    (row,) = store.tenant("acme").list_keys()
    assert row.prefix == secret[:8] and "hash" not in row.to_dict()


def test_token_plaintext_is_not_in_the_sqlite_files(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.migrate()
        store.create_tenant("acme")
        _, token = store.tenant("acme").create_key("admin")
        assert store.authenticate(token) is not None
        secret = token.split("_", 2)[2].encode()
        files = [p for p in tmp_path.iterdir() if p.name.startswith("s.db")]
        assert any(p.name.endswith("-wal") for p in files)  # WAL mode is on
        for path in files:
            assert secret not in path.read_bytes(), path


def test_revoked_key_stops_authenticating_for_every_replica(
    make_store: Callable[..., Store],
) -> None:
    one, two = make_store(), make_store()
    one.create_tenant("acme")
    key_id, token = one.tenant("acme").create_key("admin")
    assert two.authenticate(token) is not None
    assert one.tenant("acme").revoke_key(key_id) is True
    assert two.authenticate(token) is None
    assert one.tenant("acme").revoke_key(key_id) is False  # already revoked
    info = two.tenant("acme").get_key(key_id)
    assert info is not None and not info.active and info.revoked_at is not None
    assert two.tenant("acme").list_keys(include_revoked=False) == []
    assert len(two.tenant("acme").list_keys()) == 1


def test_last_used_is_recorded_at_most_once_a_minute(store: Store) -> None:
    store.create_tenant("acme")
    key_id, token = store.tenant("acme").create_key("invoke")
    assert store.tenant("acme").get_key(key_id).last_used_at is None  # type: ignore[union-attr]
    store.authenticate(token)
    first = store.tenant("acme").get_key(key_id).last_used_at  # type: ignore[union-attr]
    assert first is not None
    store.authenticate(token)
    assert store.tenant("acme").get_key(key_id).last_used_at == first  # type: ignore[union-attr]
    with store.engine.begin() as conn:  # pretend the last use was long ago
        conn.execute(update(ApiKey).values(last_used_at=first - timedelta(hours=1)))
    store.authenticate(token)
    assert store.tenant("acme").get_key(key_id).last_used_at > first  # type: ignore[union-attr,operator]


def test_invalid_role_and_key_name_are_refused(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    with pytest.raises(StoreError, match="invalid role 'root'"):
        acme.create_key("root")
    with pytest.raises(StoreError, match="too long"):
        acme.create_key("admin", "x" * 201)
    with pytest.raises(StoreError, match="control characters"):
        acme.create_key("admin", "bad\nname")
    assert acme.list_keys() == []


def test_key_for_a_missing_tenant_is_not_found(store: Store) -> None:
    with pytest.raises(StoreError) as err:
        store.tenant("ghost").create_key("admin")
    assert err.value.reason == "not_found" and "ghost" in str(err.value)


def test_deleting_a_tenant_deletes_its_keys_and_data(
    store: Store, dump_db: Callable[[Store], str]
) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    _, token = acme.create_key("admin")
    acme.set_installation("a/b", settings={"marker": "acme-setting"})
    acme.storage("a/b").set("k", "acme-value")
    acme.create_task("install", plugin_id="a/b")
    assert store.delete_tenant("acme") is True
    assert store.delete_tenant("acme") is False
    assert store.authenticate(token) is None
    assert acme.list_installations() == [] and acme.list_tasks() == []
    dump = dump_db(store)
    assert "acme" not in dump
