"""Plugin key-value storage: the SDK ``Storage`` protocol with a byte quota, per tenant."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from plughub.errors import StoreError
from plughub.sdk import Context, MemoryStorage, Storage, StorageQuotaExceeded, ToolError
from plughub.store import PluginStorage, Store


@pytest.fixture
def kv(store: Store) -> PluginStorage:
    store.create_tenant("acme")
    return store.tenant("acme").storage("acme/notes", quota=None)


def test_storage_round_trips_json_values(kv: PluginStorage) -> None:
    values: dict[str, Any] = {
        "str": "héllo ✓",
        "int": 42,
        "float": 1.5,
        "bool": False,
        "none": None,
        "list": [1, "two", {"three": 3}],
        "dict": {"nested": {"deep": [True, None]}},
        "nul": "a\x00b",
    }
    for key, value in values.items():
        kv.set(key, value)
    for key, value in values.items():
        assert kv.get(key, "default") == value
    assert kv.get("missing") is None and kv.get("missing", 7) == 7
    kv.set("int", 43)
    assert kv.get("int") == 43
    assert kv.delete("int") is True and kv.delete("int") is False
    assert kv.get("int", "gone") == "gone"


def test_keys_filters_by_exact_prefix(kv: PluginStorage) -> None:
    for key in ("user:1", "user:2", "User:3", "users", "u%x", "u_x", "uAx", "a"):
        kv.set(key, 1)
    assert kv.keys() == sorted(["user:1", "user:2", "User:3", "users", "u%x", "u_x", "uAx", "a"])
    assert kv.keys("user:") == ["user:1", "user:2"]  # case-sensitive on SQLite too
    assert kv.keys("u%") == ["u%x"]  # LIKE wildcards are literal
    assert kv.keys("u_") == ["u_x"]
    assert kv.keys("zzz") == []


def test_behaves_like_memory_storage(store: Store) -> None:
    store.create_tenant("acme")
    ours: Storage = store.tenant("acme").storage("acme/notes", quota=200)
    reference: Storage = MemoryStorage(quota=200)
    script: list[tuple[str, tuple[Any, ...]]] = [
        ("set", ("a", {"x": 1})),
        ("set", ("b", "y" * 50)),
        ("get", ("a",)),
        ("keys", ("",)),
        ("set", ("c", "z" * 150)),  # over quota in both
        ("set", ("b", "y" * 10)),  # overwriting frees space
        ("set", ("c", "z" * 100)),
        ("delete", ("a",)),
        ("delete", ("a",)),
        ("keys", ("",)),
        ("get", ("c",)),
    ]
    for op, args in script:
        outcomes = []
        for backend in (ours, reference):
            try:
                outcomes.append(("ok", getattr(backend, op)(*args)))
            except StorageQuotaExceeded:
                outcomes.append(("quota", None))
        assert outcomes[0] == outcomes[1], (op, args)


def test_quota_is_enforced_and_nothing_is_written_past_it(store: Store) -> None:
    store.create_tenant("acme")
    kv = store.tenant("acme").storage("acme/notes", quota=100)
    kv.set("a", "x" * 40)  # 1 + 42 bytes
    assert kv.usage() == 43
    with pytest.raises(StorageQuotaExceeded, match="quota of 100 bytes exceeded") as err:
        kv.set("b", "y" * 60)
    assert isinstance(err.value, ToolError)  # a readable tool failure for the model
    assert kv.get("b") is None and kv.usage() == 43
    kv.set("a", "x" * 90)  # replacing a value counts only the new size
    assert kv.usage() == 93
    # The default quota comes from the store; another plugin has its own budget.
    assert store.tenant("acme").storage("acme/other").quota == store.kv_quota
    store.tenant("acme").storage("acme/other", quota=100).set("b", "y" * 60)


def test_huge_values_and_bad_keys_are_refused_clearly(store: Store) -> None:
    store.create_tenant("acme")
    kv = store.tenant("acme").storage("acme/notes", quota=None)
    with pytest.raises(StorageQuotaExceeded, match="too large"):
        kv.set("big", "x" * (store.kv_max_value + 1))
    with pytest.raises(StoreError, match="at most 256 characters"):
        kv.set("k" * 257, 1)
    with pytest.raises(StoreError, match="non-empty string"):
        kv.set("", 1)
    with pytest.raises(StoreError, match="NUL"):
        kv.get("a\x00b")
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        kv.set("obj", object())
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        kv.set("nan", float("nan"))
    with pytest.raises(StoreError, match="invalid plugin id"):
        store.tenant("acme").storage("not-a-plugin-id")
    assert kv.keys() == []


def test_concurrent_writers_never_pass_the_quota(make_store: Callable[..., Store]) -> None:
    make_store().create_tenant("acme")
    replicas = [make_store() for _ in range(4)]
    quota = 1000
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        kv = replicas[n].tenant("acme").storage("acme/notes", quota=quota)
        for i in range(15):
            try:
                kv.set(f"w{n}-{i}", "x" * 40)  # 46 bytes each: 60 writes would need 2760
            except StorageQuotaExceeded:
                pass
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    used = replicas[0].tenant("acme").storage("acme/notes").usage()
    assert used <= quota and used > quota - 46


def test_store_storage_works_as_a_tool_context(kv: PluginStorage) -> None:
    ctx = Context("acme/notes", storage=kv)
    ctx.storage.set("seen", ["x"])
    assert ctx.storage.get("seen") == ["x"] and ctx.storage.keys() == ["seen"]
    assert kv.clear() == 1 and kv.keys() == []
