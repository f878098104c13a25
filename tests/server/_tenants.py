"""A plugin with a credential, and helpers for the tenancy, admin and isolation tests."""

from __future__ import annotations

from pathlib import Path

import httpx
from _daemon import auth

VAULT_MANIFEST = """\
id: acme/vault
version: 1.0.0
description: Tells whether a credential is set, without showing it.
entrypoint: main:Vault
credentials:
  api_key:
    type: string
    required: true
settings:
  greeting:
    type: string
    default: hi
"""

VAULT_CODE = '''\
import hashlib

from plughub.sdk import Context, Plugin, tool


class Vault(Plugin):
    @tool
    def peek(self, ctx: Context) -> dict:
        """A hash prefix of the api_key credential, and the greeting setting."""
        key = ctx.credentials.get("api_key")
        digest = hashlib.sha256(key.encode()).hexdigest()[:12] if key else None
        return {"key": digest, "greeting": ctx.settings.get("greeting")}

    @tool
    def remember(self, value: str, ctx: Context) -> str:
        """Keep value in this tenant's storage, answer the previous one."""
        before = ctx.storage.get("value")
        ctx.storage.set("value", value)
        return str(before)
'''


def write_vault(root: Path) -> None:
    folder = root / "vault"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plugin.yaml").write_text(VAULT_MANIFEST)
    (folder / "main.py").write_text(VAULT_CODE)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


STAR = auth("dify")  # the all-tenants admin key, as a bearer token


async def new_tenant(c: httpx.AsyncClient, tenant: str, role: str = "admin") -> str:
    """Create ``tenant`` with the all-tenants key; answer a fresh key of ``role`` for it."""
    r = await c.post("/v1/tenants", json={"id": tenant}, headers=STAR)
    assert r.status_code in (201, 409), r.text
    r = await c.post(f"/v1/tenants/{tenant}/keys", json={"role": role}, headers=STAR)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token
