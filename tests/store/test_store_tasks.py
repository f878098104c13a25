"""Install tasks: queued, claimed by exactly one replica under a lease, reported, finished."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from plughub.errors import StoreError
from plughub.store import Store
from plughub.store._models import Task


def test_task_lifecycle(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    task = acme.create_task(
        "install", plugin_id="acme/weather", params={"source": "index", "version": "1.2.0"}
    )
    assert (task.status, task.kind, task.attempts, task.owner) == ("queued", "install", 0, None)
    assert acme.get_task(task.id) == task
    claimed = store.claim_task("replica-1", lease_seconds=30)
    assert claimed is not None and claimed.id == task.id
    assert (claimed.status, claimed.owner, claimed.attempts) == ("running", "replica-1", 1)
    assert claimed.lease_until is not None and claimed.params == {
        "source": "index",
        "version": "1.2.0",
    }
    assert store.claim_task("replica-2") is None
    for phase in ("verify", "unpack"):
        acme.update_task(
            task.id, phase=phase, event={"phase": phase, "status": "done"}, replica="replica-1"
        )
    done = acme.update_task(
        task.id, status="succeeded", result={"version": "1.2.0"}, replica="replica-1"
    )
    assert done.finished and done.phase == "unpack" and done.lease_until is None
    assert [e["phase"] for e in done.events] == ["verify", "unpack"]
    assert done.result == {"version": "1.2.0"}
    with pytest.raises(StoreError) as err:
        acme.update_task(task.id, status="failed")
    assert err.value.reason == "conflict" and "succeeded already" in str(err.value)
    assert done.to_dict()["created_at"].endswith("+00:00")


def test_tasks_are_listed_newest_first_with_filters(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    ids = [
        acme.create_task("install" if i % 2 else "upgrade", plugin_id=f"acme/p{i}").id
        for i in range(5)
    ]
    assert [t.id for t in acme.list_tasks()] == ids[::-1]
    assert [t.id for t in acme.list_tasks(kind="install")] == [ids[3], ids[1]]
    assert [t.id for t in acme.list_tasks(plugin_id="acme/p2")] == [ids[2]]
    assert [t.id for t in acme.list_tasks(limit=2)] == ids[:2:-1][:2]
    acme.update_task(ids[0], status="cancelled")
    assert [t.id for t in acme.list_tasks(status="cancelled")] == [ids[0]]
    assert store.claim_task("r", kinds=("upgrade",)).id == ids[2]  # type: ignore[union-attr]  # oldest queued
    with pytest.raises(StoreError, match="limit"):
        acme.list_tasks(limit=0)


def test_two_replicas_claim_each_task_exactly_once(make_store: Callable[..., Store]) -> None:
    setup = make_store()
    for tenant in ("acme", "beta"):
        setup.create_tenant(tenant)
        for i in range(15):
            setup.tenant(tenant).create_task("install", plugin_id=f"{tenant}/p{i}")
    replicas = [make_store() for _ in range(4)]
    claims: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(replicas))

    def run(n: int) -> None:
        try:
            start.wait()
            while (task := replicas[n].claim_task(f"replica-{n}")) is not None:
                with lock:
                    claims.append((task.id, f"replica-{n}"))
                replicas[n].tenant(task.tenant_id).update_task(
                    task.id, status="succeeded", replica=f"replica-{n}"
                )
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    counts = Counter(task_id for task_id, _ in claims)
    assert len(counts) == 30 and set(counts.values()) == {1}
    for tenant in ("acme", "beta"):
        tasks = setup.tenant(tenant).list_tasks()
        assert {t.status for t in tasks} == {"succeeded"} and {t.attempts for t in tasks} == {1}


def _expire_leases(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    with store.engine.begin() as conn:
        conn.execute(update(Task).where(Task.lease_until.is_not(None)).values(lease_until=past))


def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    task = acme.create_task("install")
    first = store.claim_task("replica-1", lease_seconds=60)
    assert first is not None
    assert acme.renew_lease(task.id, "replica-1", lease_seconds=60) is True
    assert store.claim_task("replica-2") is None  # the lease holds
    _expire_leases(store)  # replica-1 died
    second = store.claim_task("replica-2")
    assert second is not None and (second.owner, second.attempts) == ("replica-2", 2)
    with pytest.raises(StoreError, match="lease lost") as err:
        acme.update_task(task.id, status="failed", error="late", replica="replica-1")
    assert err.value.reason == "conflict"
    assert acme.renew_lease(task.id, "replica-1") is False
    released = acme.update_task(task.id, status="queued", replica="replica-2")
    assert (released.status, released.owner, released.lease_until) == ("queued", None, None)
    assert acme.claim_task("replica-3") is not None


def test_task_input_is_checked(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    with pytest.raises(StoreError, match="task kind must not be empty"):
        acme.create_task("")
    with pytest.raises(StoreError, match="too large"):
        acme.create_task("install", params={"blob": "x" * 70_000})
    task = acme.create_task("install")
    with pytest.raises(StoreError, match="invalid task status"):
        acme.update_task(task.id, status="exploded")
    with pytest.raises(StoreError, match="must be a JSON object"):
        acme.update_task(task.id, event=["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(StoreError) as err:
        acme.update_task("0" * 32, status="failed")
    assert err.value.reason == "not_found"
    with pytest.raises(StoreError, match="lease_seconds"):
        store.claim_task("r", lease_seconds=0)
    with pytest.raises(StoreError, match="replica id"):
        store.claim_task("")
    long_error = acme.update_task(task.id, status="failed", error="e" * 100_000)
    assert long_error.error is not None and len(long_error.error) == 64 * 1024
    assert acme.get_task("x" * 100) is None
