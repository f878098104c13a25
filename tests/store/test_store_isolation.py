"""Tenant isolation: a tenant's view never reads, changes or deletes another tenant's rows, and
every statement it sends filters by its tenant."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from plughub.errors import StoreError
from plughub.sdk import AuditEvent
from plughub.store import Store, TenantStore

PLUGIN = "shared/plugin"  # both tenants install the same plugin
TENANT_TABLES = ("api_keys", "installations", "credentials", "plugin_kv", "tasks", "audit_log")


def _audit(tool: str) -> AuditEvent:
    return AuditEvent("c1", PLUGIN, tool, None, time.time(), 0.1, "ok", 1, 1)


def _populate(t: TenantStore, marker: str) -> dict[str, Any]:
    key_id, token = t.create_key("admin", f"{marker}-key")
    t.set_installation(PLUGIN, granted=[f"net:{marker}.example"], settings={"who": marker})
    t.set_credential(PLUGIN, "TOKEN", f"{marker}-secret")
    t.storage(PLUGIN).set("who", marker)
    task = t.create_task("install", plugin_id=PLUGIN, params={"who": marker})
    t.append_audit(_audit(f"{marker}-tool"), arguments={"who": marker})
    return {"key_id": key_id, "token": token, "task_id": task.id}


@pytest.fixture
def two(store: Store) -> tuple[Store, dict[str, Any], dict[str, Any]]:
    store.create_tenant("a")
    store.create_tenant("b")
    return store, _populate(store.tenant("a"), "a"), _populate(store.tenant("b"), "b")


def test_reads_see_only_the_own_tenant(two: tuple[Store, dict[str, Any], dict[str, Any]]) -> None:
    store, ra, rb = two
    a, b = store.tenant("a"), store.tenant("b")
    for me, mine, theirs, marker in ((a, ra, rb, "a"), (b, rb, ra, "b")):
        assert [k.key_id for k in me.list_keys()] == [mine["key_id"]]
        assert me.get_key(theirs["key_id"]) is None and me.get_key(mine["key_id"]) is not None
        (inst,) = me.list_installations()
        assert inst.settings == {"who": marker} and inst.granted == (f"net:{marker}.example",)
        assert me.get_installation(PLUGIN).settings == {"who": marker}  # type: ignore[union-attr]
        assert me.get_credentials(PLUGIN) == {"TOKEN": f"{marker}-secret"}
        assert [c.name for c in me.list_credentials()] == ["TOKEN"]
        assert me.storage(PLUGIN).get("who") == marker and me.storage(PLUGIN).keys() == ["who"]
        assert me.storage(PLUGIN).usage() == len("who") + len(f'"{marker}"')
        assert [t.id for t in me.list_tasks()] == [mine["task_id"]]
        assert me.get_task(theirs["task_id"]) is None
        assert [r.tool for r in me.query_audit()] == [f"{marker}-tool"]
        assert store.authenticate(mine["token"]).tenant_id == marker  # type: ignore[union-attr]


def test_writes_cannot_touch_the_other_tenant(
    two: tuple[Store, dict[str, Any], dict[str, Any]],
) -> None:
    store, _, rb = two
    a, b = store.tenant("a"), store.tenant("b")
    assert a.revoke_key(rb["key_id"]) is False
    assert store.authenticate(rb["token"]) is not None
    with pytest.raises(StoreError) as err:
        a.update_task(rb["task_id"], status="cancelled")
    assert err.value.reason == "not_found"
    assert a.renew_lease(rb["task_id"], "r") is False
    assert a.claim_task("replica-a") is not None  # a's own task...
    assert a.claim_task("replica-a") is None  # ...and never b's
    assert b.get_task(rb["task_id"]).status == "queued"  # type: ignore[union-attr]
    # The same plugin id, key and credential name in both tenants are separate rows.
    a.storage(PLUGIN).set("who", "changed-by-a")
    a.storage(PLUGIN).delete("who")
    a.storage(PLUGIN).clear()
    a.set_credential(PLUGIN, "TOKEN", "changed-by-a")
    a.delete_credential(PLUGIN, "TOKEN")
    a.set_installation(PLUGIN, enabled=False, settings={})
    assert a.delete_installation(PLUGIN) is True
    assert b.storage(PLUGIN).get("who") == "b"
    assert b.get_credentials(PLUGIN) == {"TOKEN": "b-secret"}
    inst = b.get_installation(PLUGIN)
    assert inst is not None and inst.enabled and inst.settings == {"who": "b"}
    assert len(b.query_audit()) == 1 and len(b.list_keys()) == 1
    # Deleting tenant a leaves b whole.
    assert store.delete_tenant("a")
    assert b.get_credentials(PLUGIN) == {"TOKEN": "b-secret"} and len(b.list_tasks()) == 1


def test_tenant_quota_is_per_tenant(store: Store) -> None:
    store.create_tenant("a")
    store.create_tenant("b")
    store.tenant("a").storage(PLUGIN, quota=50).set("k", "x" * 40)
    store.tenant("b").storage(PLUGIN, quota=50).set("k", "y" * 40)  # a's bytes do not count


@pytest.fixture
def statements(store: Store) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    yield seen
    event.remove(store.engine, "before_cursor_execute", record)


def test_every_statement_of_a_tenant_view_filters_by_tenant(
    two: tuple[Store, dict[str, Any], dict[str, Any]], statements: list[str]
) -> None:
    store, ra, _ = two
    a = store.tenant("a")
    statements.clear()
    # Every TenantStore and PluginStorage method.
    a.info()
    a.create_key("member")
    a.get_key(ra["key_id"])
    a.list_keys()
    a.revoke_key(ra["key_id"])
    a.get_installation(PLUGIN)
    a.list_installations()
    a.set_installation(PLUGIN, enabled=True)
    a.set_credential(PLUGIN, "X", "y")
    a.set_credentials(PLUGIN, {"Y": "z"}, validate=lambda values: None)
    a.get_credentials(PLUGIN)
    a.credential_names(PLUGIN)
    a.list_credentials()
    a.delete_credential(PLUGIN, "X")
    kv = a.storage(PLUGIN)
    kv.set("k", 1)
    kv.get("k")
    kv.keys("k")
    kv.usage()
    kv.delete("k")
    kv.clear()
    task = a.create_task("install")
    a.get_task(task.id)
    a.list_tasks()
    claimed = a.claim_task("r")
    assert claimed is not None
    a.renew_lease(claimed.id, "r")
    a.update_task(claimed.id, status="succeeded", replica="r")
    a.append_audit(_audit("x"))
    a.query_audit(tool="x")
    a.delete_installation(PLUGIN)
    checked = 0
    for sql in statements:
        flat = " ".join(sql.split())
        verb = flat.split(" ", 1)[0].upper()
        tables = [t for t in TENANT_TABLES if re.search(rf"\b{t}\b", flat)]
        if verb in ("SELECT", "UPDATE", "DELETE") and tables:
            where = flat.upper().split(" WHERE ", 1)
            assert len(where) == 2 and "TENANT_ID" in where[1], flat
            checked += 1
        elif verb == "SELECT" and re.search(r"\btenants\b", flat):
            assert "tenants.id =" in flat, flat
    assert checked >= 25


def test_installed_elsewhere_names_other_tenants_plugins_only(store: Store) -> None:
    for tenant in ("acme", "globex", "initech"):
        store.create_tenant(tenant)
    store.tenant("acme").set_installation("acme/weather")
    store.tenant("acme").set_installation("acme/mail")
    store.tenant("globex").set_installation("acme/weather")
    store.tenant("initech").set_installation("acme/search")
    assert store.installed_elsewhere("acme") == {"acme/weather", "acme/search"}
    assert store.installed_elsewhere("globex") == {"acme/weather", "acme/mail", "acme/search"}
    store.tenant("globex").delete_installation("acme/weather")
    assert store.installed_elsewhere("acme") == {"acme/search"}
