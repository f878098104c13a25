"""The management API: tenants, keys, installations, credentials; secrets never come back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from _daemon import auth, serving
from _tenants import STAR, bearer, new_tenant, write_vault
from fastapi import FastAPI

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-VALUE-9f8e7d6c5b4a"
VAULT = "/v1/tenants/{}/installations/acme/vault"


@pytest.fixture
def app(make_app: Callable[..., FastAPI], plugins_dir: Path, tmp_path: Path) -> FastAPI:
    write_vault(plugins_dir)
    return make_app(home=tmp_path / "home")


async def test_tenants_are_managed_by_all_tenants_admin_keys_only(app: FastAPI) -> None:
    async with serving(app) as c:
        r = await c.post("/v1/tenants", json={"id": "new-co", "name": "New Co"}, headers=STAR)
        assert r.status_code == 201 and r.json()["id"] == "new-co"
        assert (await c.post("/v1/tenants", json={"id": "new-co"}, headers=STAR)).status_code == 409
        for bad in ({"id": "Bad Id"}, {"id": ""}, {"id": "x" * 65}, {"id": 3}, {"nope": 1}, []):
            r = await c.post("/v1/tenants", json=bad, headers=STAR)
            assert r.status_code == 422, (bad, r.text)
        ids = [t["id"] for t in (await c.get("/v1/tenants", headers=STAR)).json()]
        assert "new-co" in ids and "acme" in ids  # configured keys' tenants exist too
        # A tenant admin key can neither list, create nor delete tenants.
        assert (await c.get("/v1/tenants", headers=auth("admin"))).status_code == 403
        r = await c.post("/v1/tenants", json={"id": "x1"}, headers=auth("admin"))
        assert r.status_code == 403
        assert (await c.delete("/v1/tenants/new-co", headers=auth("admin"))).status_code == 403
        assert (await c.get("/v1/tenants/acme", headers=auth("member"))).json()["id"] == "acme"
        token = await new_tenant(c, "doomed", "member")
        assert (await c.delete("/v1/tenants/doomed", headers=STAR)).status_code == 204
        assert (await c.get("/v1/whoami", headers=bearer(token))).status_code == 401
        assert (await c.delete("/v1/tenants/doomed", headers=STAR)).status_code == 404
        assert (await c.get("/v1/tenants/doomed", headers=STAR)).status_code == 404


async def test_keys_roles_and_tokens_shown_once(app: FastAPI) -> None:
    async with serving(app) as c:
        admin = await new_tenant(c, "k1", "admin")
        r = await c.post(
            "/v1/tenants/k1/keys", json={"role": "member", "name": "ci"}, headers=bearer(admin)
        )
        assert r.status_code == 201
        member, member_id = r.json()["token"], r.json()["key_id"]
        # A member may mint member/invoke keys, not admin keys; invoke keys manage nothing.
        r = await c.post("/v1/tenants/k1/keys", json={"role": "admin"}, headers=bearer(member))
        assert r.status_code == 403
        r = await c.post("/v1/tenants/k1/keys", json={"role": "invoke"}, headers=bearer(member))
        assert r.status_code == 201
        invoke = r.json()["token"]
        assert (await c.get("/v1/tenants/k1/keys", headers=bearer(invoke))).status_code == 403
        for bad in ({"role": "root"}, {"role": "admin", "extra": 1}, {}):
            r = await c.post("/v1/tenants/k1/keys", json=bad, headers=bearer(admin))
            assert r.status_code == 422
        listed = (await c.get("/v1/tenants/k1/keys", headers=bearer(admin))).json()
        assert len(listed) == 3 and all("token" not in k for k in listed)
        assert not any(t[-20:] in str(listed) for t in (admin, member, invoke))
        admin_id = next(k["key_id"] for k in listed if k["role"] == "admin")
        r = await c.delete(f"/v1/tenants/k1/keys/{admin_id}", headers=bearer(member))
        assert r.status_code == 403
        r = await c.delete(f"/v1/tenants/k1/keys/{member_id}", headers=bearer(admin))
        assert r.status_code == 204
        r = await c.delete(f"/v1/tenants/k1/keys/{member_id}", headers=bearer(admin))
        assert r.status_code == 404
        assert (await c.delete("/v1/tenants/k1/keys/zz", headers=bearer(admin))).status_code == 404


async def test_installations_settings_and_grants(app: FastAPI) -> None:
    async with serving(app) as c:
        a = await new_tenant(c, "i1", "admin")
        m = await c.post("/v1/tenants/i1/keys", json={"role": "member"}, headers=bearer(a))
        member = m.json()["token"]
        listed = (await c.get("/v1/tenants/i1/installations", headers=bearer(member))).json()
        assert {"acme/greet", "acme/vault", "local/notes"} <= {i["plugin_id"] for i in listed}
        assert all(i["kind"] == "operator" and i["enabled"] for i in listed)
        url = VAULT.format("i1")
        for bad in (
            {"settings": {"greeting": 3}},
            {"settings": {"nope": "x"}},
            {"settings": {"api_key": "x"}},
            {"enabled": "maybe"},
            {},
            {"unknown": True},
        ):
            r = await c.patch(url, json=bad, headers=bearer(member))
            assert r.status_code == 422, (bad, r.text)
        r = await c.patch(url, json={"settings": {"greeting": "yo"}}, headers=bearer(member))
        assert r.status_code == 200 and r.json()["settings"] == {"greeting": "yo"}
        # Grants: admin keys only, and only for package-installed plugins.
        r = await c.patch(url, json={"granted": ["network:*"]}, headers=bearer(member))
        assert r.status_code == 403
        r = await c.patch(url, json={"granted": ["network:*"]}, headers=bearer(a))
        assert r.status_code == 422
        r = await c.get("/v1/tenants/i1/installations/acme/nothing", headers=bearer(a))
        assert r.status_code == 404
        r = await c.patch(
            "/v1/tenants/i1/installations/acme/nothing", json={"enabled": False}, headers=bearer(a)
        )
        assert r.status_code == 404


async def test_credentials_are_validated_write_only_and_never_leak(
    app: FastAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    async with serving(app) as c:
        a = await new_tenant(c, "c1", "admin")
        url = VAULT.format("c1") + "/credentials"
        r = await c.put(url, json={"credentials": {"wrong_name": SECRET}}, headers=bearer(a))
        assert r.status_code == 422 and r.json()["code"] == "credentials_invalid"
        bodies.append(r.text)
        for bad in ({"credentials": {"api_key": 5}}, {"credentials": {}}, {"api_key": SECRET}):
            r = await c.put(url, json=bad, headers=bearer(a))
            assert r.status_code == 422
            bodies.append(r.text)
        assert (await c.get(url, headers=bearer(a))).json() == []
        r = await c.put(url, json={"credentials": {"api_key": SECRET}}, headers=bearer(a))
        assert r.status_code == 200 and [x["name"] for x in r.json()] == ["api_key"]
        bodies.append(r.text)
        for path in (
            url,
            VAULT.format("c1"),
            "/v1/tenants/c1/installations",
            "/v1/tenants/c1/audit",
            "/v1/plugins/acme/vault",
        ):
            bodies.append((await c.get(path, headers=bearer(a))).text)
        r = await c.post("/v1/plugins/acme/vault/tools/peek/invoke", json={}, headers=bearer(a))
        assert not r.json()["is_error"]
        bodies.append(r.text)
        bodies.append((await c.get("/v1/tenants/c1/audit", headers=bearer(a))).text)
        bodies.append((await c.get("/metrics")).text)
        assert (await c.delete(url + "/api_key", headers=bearer(a))).status_code == 204
        assert (await c.delete(url + "/api_key", headers=bearer(a))).status_code == 404
        assert (await c.get(url, headers=bearer(a))).json() == []
    for body in bodies:
        assert SECRET not in body
    assert SECRET not in caplog.text
    for f in (tmp_path / "home").glob("store.db*"):
        assert SECRET.encode() not in f.read_bytes(), f
    assert list((tmp_path / "home").glob("store.db*"))
