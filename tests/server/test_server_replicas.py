"""Two ``plughub serve`` processes sharing one PostgreSQL database, one Redis and one home, as
docs/operators/deployment.md describes: changes made through one are live on the other within
2 s, rate limits are shared, and a daemon killed mid-request restarts with its state intact.

PostgreSQL: ``PLUGHUB_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/
postgres``); Redis: ``PLUGHUB_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Each test
creates its own database and key prefix and drops them afterwards.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from test_server_e2e import Server, start_server, stop_server

from plughub.packages import build_package
from plughub.store import generate_key

PG_ADMIN_URL = os.environ.get(
    "PLUGHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("PLUGHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIVE_WITHIN = 2.0  # seconds: the bound for a change to reach every replica

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX only")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database, dropped afterwards."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"plughub_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as e:
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable: {e.orig}")
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {e}")
    prefix = f"plughub-test-{uuid.uuid4().hex}:"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def cluster(
    tmp_path: Path, pg_url: str, redis_prefix: str
) -> Iterator[Callable[..., tuple[Server, Server, dict[str, str]]]]:
    """Starts two replicas on a shared database, Redis prefix, home and credential key."""
    started: list[Server] = []

    def start(extra: str | None = None, **extra_env: str) -> tuple[Server, Server, dict[str, str]]:
        args = ("--plugins-dir", extra) if extra else ()
        env = {
            "PLUGHUB_STORE_URL": pg_url,
            "PLUGHUB_REDIS_URL": REDIS_URL,
            "PLUGHUB_REDIS_PREFIX": redis_prefix,
            "PLUGHUB_SECRET_KEY": generate_key(),
            "PLUGHUB_HOME": str(tmp_path / "shared-home"),
            "PLUGHUB_API_KEYS": "",  # store keys only: the first replica makes the admin key
            **extra_env,
        }
        for i in range(2):
            started.append(start_server(tmp_path / f"replica{i}", *args, env=env))
        return started[0], started[1], env

    yield start
    for server in started:
        stop_server(server)


def admin_headers(home: Path) -> dict[str, str]:
    return {"Authorization": "Bearer " + (home / "admin.key").read_text().strip()}


def within(seconds: float, check: Callable[[], bool], step: float = 0.05) -> float | None:
    """Seconds until ``check()`` held, or None if it did not within ``seconds``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if check():
            return time.monotonic() - t0
        time.sleep(step)
    return None


VAULT_MANIFEST = """\
id: acme/vault
version: 1.0.0
description: Says which credential it was given (a digest prefix, never the value).
entrypoint: main
credentials:
  token: {required: true}
"""
VAULT_CODE = '''\
import hashlib

from plughub.sdk import Context, tool


@tool
def which(ctx: Context) -> str:
    """The first 8 hex digits of sha256(token)."""
    return hashlib.sha256(ctx.credentials["token"].encode()).hexdigest()[:8]
'''


def digest(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()[:8]


def vault_dir(root: Path) -> Path:
    folder = root / "extra" / "vault"
    folder.mkdir(parents=True)
    (folder / "plugin.yaml").write_text(VAULT_MANIFEST)
    (folder / "main.py").write_text(VAULT_CODE)
    return folder.parent


def test_changes_through_one_replica_are_live_on_the_other_within_2s(
    tmp_path: Path, cluster: Callable[..., tuple[Server, Server, dict[str, str]]]
) -> None:
    a, b, env = cluster(PLUGHUB_TENANT_RATE="unlimited", extra=str(vault_dir(tmp_path)))
    admin = admin_headers(Path(env["PLUGHUB_HOME"]))
    creds = "/v1/tenants/default/installations/acme/vault/credentials"
    call = "/v1/plugins/acme/vault/tools/which/invoke"
    with httpx.Client(timeout=10) as http:

        def seen_on_b(expected: str) -> bool:
            r = http.post(b.url + call, json={"arguments": {}}, headers=admin)
            return r.status_code == 200 and r.json()["content"][0]["text"] == expected

        # Warm B's caches with the first credential, then change it through A.
        assert http.put(a.url + creds, json={"credentials": {"token": "one"}}, headers=admin).status_code == 200
        assert within(LIVE_WITHIN, lambda: seen_on_b(digest("one"))) is not None
        assert http.put(a.url + creds, json={"credentials": {"token": "two"}}, headers=admin).status_code == 200
        took = within(LIVE_WITHIN, lambda: seen_on_b(digest("two")))
        assert took is not None, "the new credential did not reach replica B within 2 s"
        print(f"credential change live on B after {took:.3f} s")

        # A key made through A works on B; revoked through A, B refuses it within 2 s.
        made = http.post(a.url + "/v1/tenants/default/keys", json={"role": "member", "name": "temp"}, headers=admin)
        assert made.status_code == 201, made.text
        key = made.json()
        member = {"Authorization": f"Bearer {key['token']}"}
        assert http.get(b.url + "/v1/plugins", headers=member).status_code == 200
        revoked = http.delete(a.url + f"/v1/tenants/default/keys/{key['key_id']}", headers=admin)
        assert revoked.status_code in (200, 204), revoked.text
        took = within(LIVE_WITHIN, lambda: http.get(b.url + "/v1/plugins", headers=member).status_code == 401)
        assert took is not None, "the revoked key still worked on replica B after 2 s"
        print(f"revocation live on B after {took:.3f} s")

        # Disabled through A: B stops serving the plugin to this tenant.
        patch = "/v1/tenants/default/installations/acme/greet"
        assert http.patch(a.url + patch, json={"enabled": False}, headers=admin).status_code == 200
        hello = "/v1/plugins/acme/greet/tools/hello/invoke"
        took = within(
            LIVE_WITHIN,
            lambda: http.post(b.url + hello, json={"arguments": {"name": "x"}}, headers=admin).status_code == 404,
        )
        assert took is not None, "the disabled plugin was still served by replica B after 2 s"
        print(f"disable live on B after {took:.3f} s")


def test_a_package_installed_through_one_replica_is_served_by_the_other_within_2s(
    tmp_path: Path, cluster: Callable[..., tuple[Server, Server, dict[str, str]]]
) -> None:
    a, b, env = cluster(PLUGHUB_TENANT_RATE="unlimited", PLUGHUB_ALLOW_UNSIGNED="true")
    admin = admin_headers(Path(env["PLUGHUB_HOME"]))
    folder = tmp_path / "pkg" / "hello"
    folder.mkdir(parents=True)
    (folder / "plugin.yaml").write_text(
        "id: acme/hello\nversion: 1.0.0\ndescription: Installed over HTTP.\nentrypoint: main\n"
    )
    (folder / "main.py").write_text(
        "from plughub.sdk import tool\n\n\n@tool\ndef hi(name: str) -> str:\n"
        '    """Greets."""\n    return f"hi {name} from a package"\n'
    )
    package = build_package(folder, tmp_path / "hello.plughub")
    call = "/v1/plugins/acme/hello/tools/hi/invoke"
    with httpx.Client(timeout=30) as http:
        assert http.post(b.url + call, json={"arguments": {"name": "x"}}, headers=admin).status_code == 404
        r = http.post(
            a.url + "/v1/packages",
            content=package.read_bytes(),
            headers={**admin, "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 202, r.text
        task_url = r.headers["location"]

        def task_done() -> bool:
            status = http.get(a.url + task_url, headers=admin).json()["status"]
            assert status != "failed", http.get(a.url + task_url, headers=admin).text
            return bool(status == "succeeded")

        assert within(60, task_done) is not None

        def served_by_b() -> bool:
            r = http.post(b.url + call, json={"arguments": {"name": "x"}}, headers=admin)
            return r.status_code == 200 and r.json()["content"][0]["text"] == "hi x from a package"

        took = within(LIVE_WITHIN, served_by_b)
        assert took is not None, "replica B did not serve the new package within 2 s"
        print(f"install live on B after {took:.3f} s")


def test_rate_limits_are_shared(cluster: Callable[..., tuple[Server, Server, dict[str, str]]]) -> None:
    a, b, env = cluster(PLUGHUB_TENANT_RATE="10/minute")
    auth = admin_headers(Path(env["PLUGHUB_HOME"]))
    path = "/v1/plugins/acme/greet/tools/hello/invoke"
    statuses: list[int] = []
    with httpx.Client(timeout=10) as http:
        for i in range(14):
            server = a if i % 2 == 0 else b
            r = http.post(server.url + path, json={"arguments": {"name": "x"}}, headers=auth)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
    assert statuses.count(200) == 10 and statuses.count(429) == 4, statuses


def test_a_daemon_killed_mid_request_restarts_intact(tmp_path: Path) -> None:
    """SIGKILL while calls (and their audit rows) are in flight, then start again on the same
    home: the SQLite store passes its integrity check, keys still work, nothing half-written."""
    home = tmp_path / "home"
    env = {"PLUGHUB_HOME": str(home), "PLUGHUB_API_KEYS": ""}
    server = start_server(tmp_path / "first", env=env)
    auth = admin_headers(home)
    base = "/v1/plugins/acme/greet/tools"
    results: list[int] = []

    def hammer(url: str) -> None:
        with httpx.Client(timeout=5) as http:
            for i in range(200):
                try:
                    tool = "slow" if i % 3 == 0 else "hello"
                    args: dict[str, Any] = {"seconds": 0.2} if tool == "slow" else {"name": "x"}
                    r = http.post(f"{url}{base}/{tool}/invoke", json={"arguments": args}, headers=auth)
                    results.append(r.status_code)
                except httpx.HTTPError:
                    return

    try:
        with httpx.Client(timeout=10) as http:
            assert http.post(
                f"{server.url}{base}/hello/invoke", json={"arguments": {"name": "before"}}, headers=auth
            ).json()["content"][0]["text"] == "Hello before!"
        threads = [threading.Thread(target=hammer, args=(server.url,)) for _ in range(4)]
        for t in threads:
            t.start()
        assert within(10, lambda: len(results) >= 20), "no calls went through"
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        for t in threads:
            t.join(10)
    finally:
        stop_server(server)

    db = sqlite3.connect(home / "store.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    again = start_server(tmp_path / "second", env=env)
    try:
        with httpx.Client(timeout=10) as http:
            r = http.post(f"{again.url}{base}/hello/invoke", json={"arguments": {"name": "after"}}, headers=auth)
            assert r.status_code == 200 and r.json()["content"][0]["text"] == "Hello after!"
            audit = http.get(f"{again.url}/v1/audit", params={"limit": 1000}, headers=auth)
            assert audit.status_code == 200
            rows = audit.json()
            rows = rows.get("items", rows) if isinstance(rows, dict) else rows
            assert len(rows) >= 1
            assert all(row["outcome"] for row in rows)
    finally:
        stop_server(again)
