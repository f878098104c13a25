"""The invocation audit log: append, query with filters (newest first), redaction, retention."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from plughub.errors import StoreError
from plughub.sdk import AuditEvent
from plughub.store import Store

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "pin": {"type": "string", "writeOnly": True},
        "login": {"$ref": "#/$defs/Login"},
    },
    "$defs": {
        "Login": {
            "type": "object",
            "properties": {
                "user": {"type": "string"},
                "code": {"type": "string", "format": "password"},
            },
        }
    },
}


def event(
    tool: str = "forecast",
    outcome: str = "ok",
    started: float | None = None,
    plugin: str = "acme/weather",
) -> AuditEvent:
    return AuditEvent(
        call_id=f"call-{tool}-{outcome}",
        plugin_id=plugin,
        tool=tool,
        caller="agent-7",
        started=time.time() if started is None else started,
        duration=0.25,
        outcome=outcome,
        arg_bytes=20,
        result_bytes=300,
    )


def test_audit_rows_hold_who_what_when_and_redacted_arguments(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    key_id, _ = acme.create_key("invoke")
    args = {
        "city": "Oslo",
        "pin": "1234",
        "login": {"user": "ann", "code": "s3cr3t"},
        "api_key": "k-999",
    }
    row_id = acme.append_audit(event(), key_id=key_id, arguments=args, input_schema=SCHEMA)
    (rec,) = acme.query_audit()
    assert rec.id == row_id and rec.key_id == key_id and rec.caller == "agent-7"
    assert (rec.plugin_id, rec.tool, rec.outcome, rec.cached) == (
        "acme/weather",
        "forecast",
        "ok",
        False,
    )
    assert (rec.arg_bytes, rec.result_bytes, rec.duration_ms) == (20, 300, 250.0)
    assert abs(rec.started.timestamp() - time.time()) < 60 and rec.started.tzinfo is not None
    assert rec.arguments == {
        "city": "Oslo",
        "pin": "***",
        "login": {"user": "ann", "code": "***"},
        "api_key": "***",
    }
    assert args["pin"] == "1234"  # the caller's dict is untouched
    assert "1234" not in str(rec.to_dict()) and "s3cr3t" not in str(rec.to_dict())
    acme.append_audit(event("other"))  # without arguments: none stored
    assert acme.query_audit(tool="other")[0].arguments is None


def test_query_filters_and_order(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()
    for i in range(6):
        acme.append_audit(
            event(
                tool="forecast" if i % 2 else "alerts",
                outcome="ok" if i < 4 else "timeout",
                started=base + i * 60,
                plugin="acme/weather" if i != 5 else "acme/news",
            )
        )
    assert [r.started.minute for r in acme.query_audit()] == [5, 4, 3, 2, 1, 0]  # newest first
    assert [r.started.minute for r in acme.query_audit(tool="alerts")] == [4, 2, 0]
    assert [r.started.minute for r in acme.query_audit(outcome="timeout")] == [5, 4]
    assert [r.started.minute for r in acme.query_audit(plugin_id="acme/news")] == [5]
    since = datetime(2026, 1, 1, 12, 2, tzinfo=UTC)
    assert [r.started.minute for r in acme.query_audit(since=since)] == [5, 4, 3, 2]  # inclusive
    assert [r.started.minute for r in acme.query_audit(until=base + 120)] == [1, 0]  # exclusive
    window = acme.query_audit(since=since, until=since + timedelta(minutes=2))
    assert [r.started.minute for r in window] == [3, 2]
    assert [r.started.minute for r in acme.query_audit(limit=2)] == [5, 4]
    (both,) = acme.query_audit(tool="alerts", outcome="timeout", plugin_id="acme/weather")
    assert both.started.minute == 4
    with pytest.raises(StoreError, match="limit"):
        acme.query_audit(limit=5000)
    with pytest.raises(StoreError, match="since must be a datetime"):
        acme.query_audit(since="yesterday")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="invalid plugin id"):
        acme.query_audit(plugin_id="DROP TABLE")


def test_huge_arguments_are_summarised_and_long_fields_clipped(store: Store) -> None:
    store.create_tenant("acme")
    acme = store.tenant("acme")
    acme.append_audit(event(tool="t" * 500), arguments={"text": "x" * 100_000})
    (rec,) = acme.query_audit()
    assert rec.arguments is not None and rec.arguments["_truncated"] is True
    assert rec.arguments["bytes"] > 100_000 and len(rec.tool) == 128
    with pytest.raises(StoreError, match="invalid plugin id"):
        acme.append_audit(event(plugin="no-slash"))
    with pytest.raises(StoreError, match="AuditEvent"):
        acme.append_audit({"tool": "x"})  # type: ignore[arg-type]


def test_prune_audit_deletes_old_rows_of_every_tenant(store: Store) -> None:
    old = time.time() - 90 * 86400
    for tenant in ("acme", "beta"):
        store.create_tenant(tenant)
        store.tenant(tenant).append_audit(event(started=old))
        store.tenant(tenant).append_audit(event())
    assert store.prune_audit(datetime.now(UTC) - timedelta(days=30)) == 2
    for tenant in ("acme", "beta"):
        assert len(store.tenant(tenant).query_audit()) == 1
