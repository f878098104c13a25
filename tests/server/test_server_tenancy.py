"""Store keys, per-tenant plugins and call scopes, and the audit log, through HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _daemon import KEYS, auth, serving
from _tenants import STAR, bearer, new_tenant, write_vault
from fastapi import FastAPI

pytestmark = pytest.mark.anyio

PEEK = "/v1/plugins/acme/vault/tools/peek/invoke"
REMEMBER = "/v1/plugins/acme/vault/tools/remember/invoke"
HELLO = "/v1/plugins/acme/greet/tools/hello/invoke"


@pytest.fixture
def app(make_app: Callable[..., FastAPI], plugins_dir: Path) -> FastAPI:
    write_vault(plugins_dir)
    return make_app()


# -- authentication against the store --------------------------------------------------------


async def test_store_keys_authenticate_and_revoked_ones_are_refused(app: FastAPI) -> None:
    async with serving(app) as c:
        token = await new_tenant(c, "t1", "member")
        me = (await c.get("/v1/whoami", headers=bearer(token))).json()
        assert me["tenant_id"] == "t1" and me["role"] == "member"
        key_id = me["key_id"]
        # Cached now; revoking through the API still takes effect at once on this replica.
        assert (await c.get("/v1/whoami", headers=bearer(token))).status_code == 200
        r = await c.delete(f"/v1/tenants/t1/keys/{key_id}", headers=STAR)
        assert r.status_code == 204
        r = await c.get("/v1/whoami", headers=bearer(token))
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        # Wrong secret for a real key id, malformed, empty, oversized: all 401.
        for bad in (token[:-2] + "xx", "phk_", "phk_zz_zz", "x" * 5000, token + " "):
            assert (await c.get("/v1/whoami", headers=bearer(bad))).status_code == 401
        assert (await c.get("/v1/whoami")).status_code == 401


async def test_a_revocation_on_another_replica_is_seen_within_two_seconds(
    app: FastAPI, make_app: Callable[..., FastAPI]
) -> None:
    # Two apps on one store; replica B never hears A's notification (memory notifiers are
    # per process object): the short cache alone must bound the delay.
    async with serving(app) as a:
        token = await new_tenant(a, "t2", "member")
        other = make_app()
        async with serving(other) as b:
            assert (await b.get("/v1/whoami", headers=bearer(token))).status_code == 200
            key_id = (await a.get("/v1/whoami", headers=bearer(token))).json()["key_id"]
            assert (
                await a.delete(f"/v1/tenants/t2/keys/{key_id}", headers=STAR)
            ).status_code == 204
            for _ in range(40):
                if (await b.get("/v1/whoami", headers=bearer(token))).status_code == 401:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("replica B still accepts a revoked key after 2 s")


async def test_first_start_writes_an_admin_key_that_works(
    make_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    async with serving(make_app(api_keys=[], home=home)) as c:
        token = (home / "admin.key").read_text().strip()
        me = (await c.get("/v1/whoami", headers=bearer(token))).json()
        assert me["tenant_id"] == "default" and me["role"] == "admin"


# -- per-tenant plugins ------------------------------------------------------------------------


async def test_tenants_get_their_own_credentials_settings_and_storage(app: FastAPI) -> None:
    async with serving(app) as c:
        a, b = await new_tenant(c, "ta"), await new_tenant(c, "tb")
        base = "/v1/tenants/ta/installations/acme/vault"
        r = await c.put(
            f"{base}/credentials", json={"credentials": {"api_key": "A-SECRET"}}, headers=bearer(a)
        )
        assert r.status_code == 200, r.text
        r = await c.patch(base, json={"settings": {"greeting": "hello A"}}, headers=bearer(a))
        assert r.status_code == 200, r.text
        peek_a = (await c.post(PEEK, json={}, headers=bearer(a))).json()
        peek_b = (await c.post(PEEK, json={}, headers=bearer(b))).json()
        assert peek_a["structured"]["greeting"] == "hello A"
        assert peek_a["structured"]["key"] is not None and not peek_a["is_error"]
        # B has no credential of its own: the call is refused, never run on A's key.
        assert peek_b["is_error"] and peek_b["reason"] == "missing_credentials"
        # Storage is per tenant.
        for token, value in ((a, "a1"), (b, "b1")):
            r = await c.post(REMEMBER, json={"arguments": {"value": value}}, headers=bearer(token))
            assert (
                r.json()["structured"] in ("None", None) or r.json()["content"][0]["text"] == "None"
            )
        r = await c.post(REMEMBER, json={"arguments": {"value": "a2"}}, headers=bearer(a))
        assert r.json()["content"][0]["text"] == "a1"


async def test_a_tenant_can_disable_an_operator_plugin_for_itself_only(app: FastAPI) -> None:
    async with serving(app) as c:
        a, b = await new_tenant(c, "da"), await new_tenant(c, "db")
        r = await c.patch(
            "/v1/tenants/da/installations/acme/greet", json={"enabled": False}, headers=bearer(a)
        )
        assert r.status_code == 200 and r.json()["visible"] is False
        ids_a = [p["id"] for p in (await c.get("/v1/plugins", headers=bearer(a))).json()]
        ids_b = [p["id"] for p in (await c.get("/v1/plugins", headers=bearer(b))).json()]
        assert "acme/greet" not in ids_a and "acme/greet" in ids_b
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=bearer(a))
        assert r.status_code == 404 and r.json()["code"] == "plugin_not_found"
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=bearer(b))
        assert r.status_code == 200
        r = await c.patch(
            "/v1/tenants/da/installations/acme/greet", json={"enabled": True}, headers=bearer(a)
        )
        r = await c.post(HELLO, json={"arguments": {"name": "x"}}, headers=bearer(a))
        assert r.status_code == 200


async def test_dify_calls_use_the_tenant_of_the_path(app: FastAPI) -> None:
    async with serving(app) as c:
        a = await new_tenant(c, "ws-a")
        await c.put(
            "/v1/tenants/ws-a/installations/acme/vault/credentials",
            json={"credentials": {"api_key": "K"}},
            headers=bearer(a),
        )
        body = {"data": {"provider": "vault", "tool": "peek", "tool_parameters": {}}}
        headers = {"X-Api-Key": KEYS["dify"], "X-Plugin-ID": "acme/vault"}
        ok = await c.post("/plugin/ws-a/dispatch/tool/invoke", json=body, headers=headers)
        other = await c.post("/plugin/ws-new/dispatch/tool/invoke", json=body, headers=headers)
        assert '"code":0' in ok.text and '"key"' in ok.text
        assert '"code":-500' in other.text and "missing_credentials" in other.text
        # A tenant key may not use another tenant's path.
        r = await c.post(
            "/plugin/ws-new/dispatch/tool/invoke", json=body, headers={**headers, "X-Api-Key": a}
        )
        assert r.status_code == 403


# -- audit -------------------------------------------------------------------------------------


async def test_every_call_path_writes_one_redacted_audit_row(app: FastAPI) -> None:
    async with serving(app) as c:
        a = await new_tenant(c, "au")
        await c.post(HELLO, json={"arguments": {"name": "Ann"}}, headers=bearer(a))
        await c.post(
            "/v1/plugins/acme/greet/tools/fail/invoke",
            json={"arguments": {"msg": "no"}},
            headers=bearer(a),
        )
        r = await c.post(
            "/v1/plugins/acme/greet/tools/count/invoke-stream",
            json={"arguments": {"n": 2}},
            headers=bearer(a),
        )
        assert r.status_code == 200
        await c.post(
            "/api/plugins/invoke",
            json={"plugin": "NoteTaker", "context": {"text": "t"}},
            headers=bearer(a),
        )
        await c.post(
            "/plugin/au/dispatch/tool/invoke",
            json={"data": {"provider": "greet", "tool": "hello", "tool_parameters": {"name": "D"}}},
            headers={"X-Api-Key": a, "X-Plugin-ID": "acme/greet"},
        )
        rows = (await c.get("/v1/audit", headers=bearer(a))).json()
        assert sorted((r["plugin_id"], r["tool"], r["outcome"]) for r in rows) == sorted(
            [
                ("acme/greet", "hello", "ok"),
                ("acme/greet", "fail", "tool_error"),
                ("acme/greet", "count", "ok"),
                ("local/notes", "NoteTaker", "ok"),
                ("acme/greet", "hello", "ok"),
            ]
        )
        me = (await c.get("/v1/whoami", headers=bearer(a))).json()
        assert {r["key_id"] for r in rows} == {me["key_id"]}
        assert all(
            r["tenant_id"] == "au" and r["arg_bytes"] > 0 for r in rows if r["tool"] != "count"
        )
        assert all(r["duration_ms"] >= 0 and len(r["call_id"]) == 32 for r in rows)
        assert all(r["result_bytes"] > 0 for r in rows)  # measured by the audit writer
        only = (
            await c.get("/v1/audit", params={"outcome": "tool_error"}, headers=bearer(a))
        ).json()
        assert [r["tool"] for r in only] == ["fail"]
        assert (await c.get("/v1/audit", params={"limit": 1}, headers=bearer(a))).json()[0]
        r = await c.get("/v1/audit", params={"limit": 0}, headers=bearer(a))
        assert r.status_code == 422
        r = await c.get("/v1/audit", params={"since": "yesterday"}, headers=bearer(a))
        assert r.status_code == 422
        # Invoke-only keys may not read the audit log; all-tenants keys must name the tenant.
        assert (await c.get("/v1/audit", headers=auth("invoke"))).status_code == 403
        assert (await c.get("/v1/audit", headers=STAR)).status_code == 400
        assert len((await c.get("/v1/tenants/au/audit", headers=STAR)).json()) == 5
        assert json.dumps(rows).count("Ann") == 1  # arguments are kept (not secret here)


async def test_a_store_outage_is_a_503_with_retry_after_on_every_path(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    from plughub.errors import StoreError

    app = make_app()
    async with serving(app) as c:
        tenancy = app.state.plughub.tenancy

        async def down(*args: object, **kwargs: object) -> object:
            raise StoreError("database unavailable: connection refused", "unavailable")

        monkeypatch.setattr(tenancy, "installations", down)
        for method, path, body in (
            ("GET", "/v1/plugins", None),
            ("POST", "/v1/plugins/acme/greet/tools/hello/invoke", {"arguments": {"name": "x"}}),
        ):
            r = await c.request(method, path, json=body, headers=auth())
            assert r.status_code == 503, (path, r.text)
            assert r.json()["code"] == "store_unavailable" and r.headers["retry-after"] == "1"
            assert "connection refused" not in r.text
