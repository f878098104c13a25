"""Malformed input is refused with a clear ``StoreError(reason="invalid")`` before any write."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from plughub.errors import PlughubError, StoreError
from plughub.store import Store


@pytest.mark.parametrize(
    "tenant_id",
    ["", "UPPER", "has space", "a/b", "x" * 65, "-leading", "semi;colon", "ünï", None, 7],
)
def test_bad_tenant_ids(store: Store, tenant_id: Any) -> None:
    with pytest.raises(StoreError, match="invalid tenant id") as err:
        store.create_tenant(tenant_id)
    assert err.value.reason == "invalid" and isinstance(err.value, PlughubError)
    with pytest.raises(StoreError, match="invalid tenant id"):
        store.tenant(tenant_id)
    assert store.list_tenants() == []


@pytest.mark.parametrize(
    "plugin_id",
    ["", "noslash", "a/b/c", "A/b", "a/" + "b" * 65, "a /b", "../etc", "a/b\n", None],
)
def test_bad_plugin_ids(store: Store, plugin_id: Any) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    for call in (
        lambda: acme.set_installation(plugin_id),
        lambda: acme.get_installation(plugin_id),
        lambda: acme.delete_installation(plugin_id),
        lambda: acme.set_credential(plugin_id, "K", "v"),
        lambda: acme.get_credentials(plugin_id),
        lambda: acme.storage(plugin_id),
        lambda: acme.create_task("install", plugin_id=plugin_id or "?"),
    ):
        with pytest.raises(StoreError, match="invalid plugin id"):
            call()
    assert acme.list_installations() == []


def test_installation_fields_are_checked(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"granted": "net:*"}, "granted must be a list"),
        ({"granted": [1]}, "a granted permission must be a string"),
        ({"granted": ["x" * 513]}, "too long"),
        ({"granted": ["p"] * 1001}, "too many grants"),
        ({"settings": ["not", "a", "dict"]}, "settings must be an object"),
        ({"settings": {"big": "x" * 300_000}}, "settings is too large"),
        ({"settings": {"s": {1, 2}}}, "not JSON-serialisable"),
        ({"version": ""}, "version must not be empty"),
    ]
    for kwargs, message in cases:
        with pytest.raises(StoreError, match=message):
            acme.set_installation("acme/p", **kwargs)
    assert acme.list_installations() == []


def test_installations_round_trip(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    first = acme.set_installation("acme/p", version="1.0.0", granted=["net:b", "net:a", "net:a"])
    assert (first.enabled, first.version, first.granted, first.settings) == (
        True,
        "1.0.0",
        ("net:a", "net:b"),
        {},
    )
    second = acme.set_installation(
        "acme/p", enabled=False, settings={"units": "metric", "n": [1, 2]}
    )
    assert (second.enabled, second.version, second.granted) == (False, "1.0.0", ("net:a", "net:b"))
    assert (
        second.settings == {"units": "metric", "n": [1, 2]}
        and second.created_at == first.created_at
    )
    assert acme.get_installation("acme/p") == second
    assert second.to_dict()["granted"] == ["net:a", "net:b"]
    acme.set_credential("acme/p", "K", "v")
    acme.storage("acme/p").set("k", 1)
    assert acme.delete_installation("acme/p", purge=False) is True
    assert acme.credential_names("acme/p") == ["K"]  # kept without purge
    acme.set_installation("acme/p")
    assert acme.delete_installation("acme/p") is True  # purge (the default) removes them
    assert acme.credential_names("acme/p") == [] and acme.storage("acme/p").keys() == []
    assert acme.delete_installation("acme/p") is False


def test_long_tenant_names_and_unknown_keys(store: Store) -> None:
    with pytest.raises(StoreError, match="tenant name is too long"):
        store.create_tenant("acme", "n" * 201)
    store.create_tenant("acme", "n" * 200)
    acme = store.tenant("acme")
    assert acme.get_key("not-an-id") is None and acme.revoke_key("x" * 1000) is False
    assert acme.get_task(None) is None  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="quota must be"):
        acme.storage("acme/p", quota=-1)


def test_concurrent_first_writes_of_one_installation_do_not_conflict(
    make_store: Callable[..., Store],
) -> None:
    make_store().create_tenant("acme")
    replicas = [make_store() for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(replicas))

    def run(n: int) -> None:
        try:
            start.wait()
            replicas[n].tenant("acme").set_installation("acme/p", settings={"n": n})
            replicas[n].tenant("acme").set_credential("acme/p", "TOKEN", f"t{n}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(replicas[0].tenant("acme").list_installations()) == 1
    assert replicas[0].tenant("acme").credential_names("acme/p") == ["TOKEN"]
