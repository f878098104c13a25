"""Tenant A cannot read, call, configure or even detect anything of tenant B, on any route.

Every route of the app is tried (all of its OpenAPI document: a new route cannot escape), with A's admin,
member and invoke keys, once naming B's real tenant, key and credential and once naming
made-up ones of the same shape: the answers must be the same, and never carry B's data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _daemon import serving
from _tenants import STAR, bearer, new_tenant, write_vault
from fastapi import FastAPI

pytestmark = pytest.mark.anyio

B_SECRET = "b-only-secret-5a5a5a5a"


def _body(method: str, path: str, tenant: str) -> Any:
    if path.endswith("/credentials"):
        return {"credentials": {"api_key": "from-A"}}
    if path.endswith("/keys"):
        return {"role": "invoke"}
    if path == "/v1/tenants":
        return {"id": "made-by-a"}
    if "/installations/" in path:
        return {"enabled": False, "settings": {"greeting": "A was here"}}
    if path.endswith("/dispatch/tool/invoke"):
        return {"data": {"provider": "vault", "tool": "peek", "tool_parameters": {}}}
    if path.endswith("/invoke") or path.endswith("/invoke-stream"):
        return (
            {"arguments": {}, "plugin": "acme/vault", "context": {}}
            if path.startswith("/api/")
            else {"arguments": {}}
        )
    return {} if method in ("POST", "PUT", "PATCH") else None


class _Route:
    def __init__(self, path: str) -> None:
        self.path = path


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


async def test_no_route_lets_tenant_a_see_or_touch_tenant_b(
    make_app: Callable[..., FastAPI], plugins_dir: Path
) -> None:
    write_vault(plugins_dir)
    app = make_app()
    async with serving(app) as c:
        b_admin = await new_tenant(c, "iso-b", "admin")
        b_key = (await c.get("/v1/whoami", headers=bearer(b_admin))).json()["key_id"]
        cred_url = "/v1/tenants/iso-b/installations/acme/vault/credentials"
        r = await c.put(
            cred_url, json={"credentials": {"api_key": B_SECRET}}, headers=bearer(b_admin)
        )
        assert r.status_code == 200
        r = await c.post(
            "/v1/plugins/acme/vault/tools/peek/invoke", json={}, headers=bearer(b_admin)
        )
        b_digest = r.json()["structured"]["key"]
        assert b_digest
        a_keys = {}
        a_admin = await new_tenant(c, "iso-a", "admin")
        for role in ("admin", "member", "invoke"):
            r = await c.post("/v1/tenants/iso-a/keys", json={"role": role}, headers=bearer(a_admin))
            a_keys[role] = r.json()["token"]

        real = {
            "tenant": "iso-b",
            "tenant_id": "iso-b",
            "key_id": b_key,
            "author": "acme",
            "name": "vault",
            "tool": "peek",
            "credential": "api_key",
        }
        fake = {**real, "tenant": "iso-q", "tenant_id": "iso-q", "key_id": "0123456789abcdef"}
        tried = 0
        routes = [(m.upper(), p) for p, item in app.openapi()["paths"].items() for m in item]
        assert len(routes) >= 25
        for method, route_path in routes:
            route = _Route(route_path)
            if True:
                if route.path in ("/v1/tenants",) and method == "POST":
                    continue  # creating a tenant names no other tenant (403 for A anyway)
                for role, token in a_keys.items():
                    answers = []
                    for values in (real, fake):
                        path = _fill(route.path, values)
                        headers = {
                            **bearer(token),
                            "X-Api-Key": token,
                            "X-Plugin-ID": "acme/vault",
                            "Accept": "application/x-ndjson",
                        }
                        r = await c.request(
                            method,
                            path,
                            headers=headers,
                            json=_body(method, route.path, values["tenant"]),
                        )
                        text = r.text
                        for secret in (B_SECRET, b_digest, b_key, b_admin):
                            assert secret not in text, (method, path, role)
                        answers.append(
                            (
                                r.status_code,
                                text.replace(values["tenant"], "T").replace(values["key_id"], "K"),
                            )
                        )
                        tried += 1
                    if "{tenant" in route.path or "{key_id}" in route.path:
                        assert answers[0][0] == answers[1][0], (method, route.path, role, answers)
                        if answers[0][0] >= 400:
                            assert answers[0] == answers[1], (method, route.path, role)
                            assert answers[0][0] in (400, 403, 404), (method, route.path, role)
        assert tried > 100
        # B is untouched: its key works, its credential and settings are its own.
        r = await c.post(
            "/v1/plugins/acme/vault/tools/peek/invoke", json={}, headers=bearer(b_admin)
        )
        assert r.json()["structured"] == {"key": b_digest, "greeting": "hi"}
        r = await c.get("/v1/tenants/iso-b/installations/acme/vault", headers=STAR)
        assert r.json()["enabled"] is True and r.json()["credentials"] == ["api_key"]
        # A's calls never run with B's credential: without one of its own, A's is refused.
        r = await c.post(
            "/v1/plugins/acme/vault/tools/peek/invoke", json={}, headers=bearer(a_admin)
        )
        assert r.json()["reason"] == "missing_credentials"
        r = await c.put(
            "/v1/tenants/iso-a/installations/acme/vault/credentials",
            json={"credentials": {"api_key": "a-own"}},
            headers=bearer(a_admin),
        )
        r = await c.post(
            "/v1/plugins/acme/vault/tools/peek/invoke", json={}, headers=bearer(a_admin)
        )
        assert r.json()["structured"]["key"] not in (None, b_digest)
        audit_b = (await c.get("/v1/tenants/iso-b/audit", headers=STAR)).json()
        assert {row["key_id"] for row in audit_b} == {b_key}
