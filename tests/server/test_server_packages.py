"""Package management over HTTP: uploads and sources, tasks and their streamed events, the
lifecycle endpoints, hostile input, and the task runner's exactly-once claims."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from _daemon import auth, serving
from fastapi import FastAPI

from plughub.packages import SigningKey, build_package
from plughub.server import ServerConfig, create_app
from plughub.server._tasks import Done, TaskFailed, TaskRunner
from plughub.store import Store, TaskInfo

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX only"),
]

PID = "acme/weather"
OCTET = {"Content-Type": "application/octet-stream"}


def write_plugin(
    root: Path,
    version: str = "1.0.0",
    *,
    network: tuple[str, ...] = ("api.example.com",),
    prelude: str = "",
    runtime: str = "worker",
) -> Path:
    """A native plugin ``acme/weather`` whose tool answers with its version."""
    folder = root / f"weather-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "id": PID,
        "version": version,
        "description": "weather for tests",
        "entrypoint": "main",
        "runtime": runtime,
        "permissions": {"network": list(network)},
    }
    (folder / "plugin.yaml").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "main.py").write_text(
        f"{prelude}\nfrom plughub.sdk import tool\n\n\n@tool\n"
        f"def forecast(city: str) -> str:\n"
        f'    """Weather."""\n    return f"sunny in {{city}} (v{version})"\n',
        encoding="utf-8",
    )
    return folder


def make_package(
    root: Path, version: str = "1.0.0", key: SigningKey | None = None, **kw: Any
) -> Path:
    folder = write_plugin(root / "src", version, **kw)
    out = root / "dist"
    out.mkdir(parents=True, exist_ok=True)
    return build_package(folder, out / f"{folder.name}-{len(list(out.iterdir()))}.plughub", key=key)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def pkg_app(make_config: Callable[..., ServerConfig], home: Path) -> Callable[..., FastAPI]:
    def make(**overrides: Any) -> FastAPI:
        values: dict[str, Any] = {"home": home, "allow_unsigned": True, **overrides}
        return create_app(make_config(**values))

    return make


async def upload(
    c: httpx.AsyncClient,
    pkg: Path | bytes,
    *,
    role: str = "admin",  # granting permissions needs an admin key
    grant: tuple[str, ...] = ("network:api.example.com",),
    url: str = "/v1/packages",
    **params: Any,
) -> httpx.Response:
    body = pkg if isinstance(pkg, bytes) else pkg.read_bytes()
    query = {"grant": list(grant), **params}
    return await c.post(url, content=body, params=query, headers={**auth(role), **OCTET})


async def follow(c: httpx.AsyncClient, task_id: str, role: str = "member") -> list[dict[str, Any]]:
    """Every NDJSON event of the task's stream, up to its final ``task`` event."""
    headers = {**auth(role), "Accept": "application/x-ndjson"}
    out = []
    async with c.stream("GET", f"/v1/tasks/{task_id}/events", headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.strip():
                out.append(json.loads(line))
    assert out and out[-1]["event"] == "task"
    return out


async def run_task(c: httpx.AsyncClient, r: httpx.Response, role: str = "member") -> dict[str, Any]:
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/tasks/{r.json()['id']}"
    events = await follow(c, r.json()["id"], role)
    final = await c.get(r.headers["location"], headers=auth(role))
    assert final.status_code == 200
    return {**final.json(), "stream": events}


async def forecast(c: httpx.AsyncClient, role: str = "member") -> httpx.Response:
    return await c.post(
        f"/v1/plugins/{PID}/tools/forecast/invoke",
        json={"arguments": {"city": "Oslo"}},
        headers=auth(role),
    )


def uploads_left(home: Path) -> list[str]:
    folder = home / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# -- install, stream, visibility ------------------------------------------------------------


async def test_upload_installs_streams_its_phases_and_only_the_tenant_sees_it(
    pkg_app: Callable[..., FastAPI], tmp_path: Path, home: Path
) -> None:
    async with serving(pkg_app()) as c:
        done = await run_task(c, await upload(c, make_package(tmp_path)))
        assert done["status"] == "succeeded", done["error"]
        assert done["kind"] == "install" and done["plugin_id"] == PID
        assert done["result"]["version"] == "1.0.0"
        assert "upload" not in done["params"]  # the file's name in the home stays internal
        phases = [e for e in done["stream"] if e["event"] == "phase"]
        starts = [e["phase"] for e in phases if e["status"] == "start"]
        assert starts == ["verify", "unpack", "resolve", "environment", "import-check", "activate"]
        assert [e["seq"] for e in phases] == sorted(e["seq"] for e in phases)
        assert done["stream"][-1]["status"] == "succeeded"
        stored = (await c.get(f"/v1/tasks/{done['id']}", headers=auth())).json()["events"]
        assert [e["seq"] for e in stored] == [e["seq"] for e in phases]  # what was streamed

        r = await forecast(c)
        assert r.status_code == 200 and r.json()["content"][0]["text"] == "sunny in Oslo (v1.0.0)"
        assert uploads_left(home) == []

        # another tenant: neither the plugin nor the task
        assert (await forecast(c, "other")).status_code == 404
        assert (await c.get(f"/v1/tasks/{done['id']}", headers=auth("other"))).status_code == 404
        assert (
            await c.get(f"/v1/tasks/{done['id']}/events", headers=auth("other"))
        ).status_code == 404
        assert (await c.get("/v1/tasks", headers=auth("other"))).json() == []
        listed = (await c.get("/v1/tasks", headers=auth())).json()
        assert [t["id"] for t in listed] == [done["id"]] and "events" not in listed[0]

        # SSE framing, for a finished task: every event again, then the task
        r = await c.get(f"/v1/tasks/{done['id']}/events", headers=auth())
        kinds = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
        assert kinds[-1] == "task" and kinds.count("phase") == len(phases)


async def test_tasks_need_the_configure_scope_and_a_known_id(
    pkg_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    async with serving(pkg_app()) as c:
        pkg = make_package(tmp_path)
        assert (await upload(c, pkg, role="invoke")).status_code == 403
        assert (await c.get("/v1/tasks", headers=auth("invoke"))).status_code == 403
        assert (await c.get("/v1/tasks", headers={})).status_code == 401
        r = await c.get("/v1/tasks/0123abcd", headers=auth())
        assert r.status_code == 404 and r.json()["code"] == "task_not_found"
        assert (await c.get("/v1/tasks/not-an-id", headers=auth())).status_code == 422
        r = await c.get("/v1/tasks/0123abcd/events", headers={**auth(), "Accept": "image/png"})
        assert r.status_code == 406


# -- hostile and bad input ------------------------------------------------------------------


def _zip(entries: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _bad_packages(tmp_path: Path) -> dict[str, tuple[bytes, set[str]]]:
    good = make_package(tmp_path).read_bytes()
    meta = json.dumps({"format": 1, "id": PID, "version": "1.0.0"}).encode()
    return {
        "not a package": (b"certainly not a zip file" * 10, {"not_a_zip"}),
        "truncated": (good[: len(good) // 2], {"not_a_zip", "corrupt"}),
        "zip-slip": (
            _zip({"../../evil.py": b"x = 1", "PLUGHUB-PACKAGE.json": meta}),
            {"bad_path"},
        ),
        "absolute path": (_zip({"/etc/evil": b"x", "PLUGHUB-PACKAGE.json": meta}), {"bad_path"}),
        "zip bomb": (
            _zip(
                {"plugin.yaml": b"id: x", "big.bin": bytes(40 << 20), "PLUGHUB-PACKAGE.json": meta}
            ),
            {"zip_bomb"},
        ),
        "plain zip": (_zip({"plugin.yaml": b"id: acme/weather"}), {"missing_metadata"}),
    }


async def test_hostile_uploads_are_refused_before_anything_is_queued(
    pkg_app: Callable[..., FastAPI], tmp_path: Path, home: Path
) -> None:
    async with serving(pkg_app()) as c:
        for what, (body, reasons) in _bad_packages(tmp_path).items():
            r = await upload(c, body)
            assert r.status_code == 400, (what, r.text)
            assert r.json()["code"] in reasons, (what, r.json())
        assert (await c.get("/v1/tasks", headers=auth())).json() == []
        assert uploads_left(home) == []
        assert not (home / "plugins").exists() or not any((home / "plugins").iterdir())


async def test_unsigned_and_untrusted_packages_need_the_operator(
    pkg_app: Callable[..., FastAPI], tmp_path: Path, home: Path
) -> None:
    key = SigningKey.generate()
    async with serving(pkg_app(allow_unsigned=False)) as c:
        r = await upload(c, make_package(tmp_path))
        assert r.status_code == 400 and r.json()["code"] == "unsigned"
        signed = make_package(tmp_path, key=key)
        r = await upload(c, signed)
        assert r.status_code == 400 and r.json()["code"] == "untrusted_key"
        from plughub.packages import TrustStore

        TrustStore(home / "trust").add(key.public_bytes())
        done = await run_task(c, await upload(c, signed))
        assert done["status"] == "succeeded", done["error"]
        assert uploads_left(home) == []


async def test_content_type_and_size_limits(
    pkg_app: Callable[..., FastAPI], tmp_path: Path, home: Path
) -> None:
    pkg = make_package(tmp_path).read_bytes()
    async with serving(pkg_app(max_package_bytes=len(pkg) - 1, max_body_bytes=64)) as c:
        r = await c.post(
            "/v1/packages", content=pkg, headers={**auth(), "Content-Type": "text/plain"}
        )
        assert r.status_code in (413, 415)  # the general body limit or the type, never a task
        r = await c.post(
            "/v1/packages", content=b"{}", headers={**auth(), "Content-Type": "application/json"}
        )
        assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
        # declared too large: refused before reading
        r = await upload(c, pkg)
        assert r.status_code == 413 and r.json()["code"] == "body_too_large"

        # chunked (no Content-Length): counted as it arrives
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(pkg), 1000):
                yield pkg[i : i + 1000]

        r = await c.post("/v1/packages", content=chunks(), headers={**auth(), **OCTET})
        assert r.status_code == 413
        assert uploads_left(home) == []
        assert (await c.get("/v1/tasks", headers=auth())).json() == []
        r = await c.post("/v1/packages", content=b"", headers={**auth(), **OCTET})
        assert r.status_code == 400
    # the package's own limit is not the general one: it fits once max_package_bytes allows it
    async with serving(pkg_app(max_package_bytes=len(pkg), max_body_bytes=64)) as c:
        assert (await upload(c, pkg)).status_code == 202


async def test_grants_are_the_tenants_own_and_inprocess_needs_the_operator(
    pkg_app: Callable[..., FastAPI], tmp_path: Path, home: Path
) -> None:
    async with serving(pkg_app()) as c:
        pkg = make_package(tmp_path)
        done = await run_task(c, await upload(c, pkg, grant=()))
        assert done["status"] == "failed"
        assert done["error"].startswith("verify: needs permissions")
        assert done["result"]["missing_permissions"] == ["network:api.example.com"]
        assert (await upload(c, pkg, grant=("*",))).status_code == 400
        r = await upload(c, pkg, grant=("runtime:inprocess",))
        assert r.status_code == 403 and r.json()["code"] == "inprocess_not_allowed"
        inproc = make_package(tmp_path / "ip", runtime="inprocess")
        done = await run_task(c, await upload(c, inproc))
        assert done["status"] == "failed" and "in-process" in done["error"]
        # acme installs it; globex must still grant the permission itself
        assert (await run_task(c, await upload(c, pkg)))["status"] == "succeeded"
        done = await run_task(c, await upload(c, pkg, role="other", grant=()), role="other")
        assert done["status"] == "failed" and done["result"]["phase"] == "verify"
        assert (await forecast(c, "other")).status_code == 404
    async with serving(pkg_app(allow_inprocess=True)) as c:
        r = await upload(c, inproc, grant=("network:api.example.com", "runtime:inprocess"))
        assert r.status_code == 202  # the operator allows it; the installer then decides


# -- sources --------------------------------------------------------------------------------

HOSTILE_GIT = [
    ("https://example.com/acme/weather.git", "--upload-pack=touch /tmp/pwned"),
    ("https://example.com/acme/weather.git", "-c core.sshCommand=evil"),
    ("--upload-pack=touch /tmp/pwned", "v1.0.0"),
    ("file:///etc", "v1.0.0"),
    ("/srv/repos/weather", "v1.0.0"),
    ("ext::sh -c touch% /tmp/pwned", "v1.0.0"),
    ("ssh://example.com/acme/weather.git", "v1.0.0"),
    ("https://evil.example.org/acme/weather.git", "v1.0.0"),
    ("https://user:secret@example.com/acme/weather.git", "v1.0.0"),
    ("https://example.com/acme/weather.git?x=--upload-pack", "v1.0.0"),
    ("https://example.com/acme/weather.git", "v1/../../x"),
    ("https://example.com/a b", "v1.0.0"),
]


async def test_hostile_git_sources_are_refused(pkg_app: Callable[..., FastAPI]) -> None:
    async with serving(pkg_app(git_hosts=["example.com"])) as c:
        for url, ref in HOSTILE_GIT:
            body = {"source": "git", "ref": url, "version": ref, "grant": []}
            r = await c.post("/v1/installs", json=body, headers=auth())
            assert r.status_code == 400, (url, ref, r.text)
        assert (await c.get("/v1/tasks", headers=auth())).json() == []
    async with serving(pkg_app()) as c:  # no git host configured: no git at all
        body = {"source": "git", "ref": "https://example.com/a.git", "version": "v1"}
        r = await c.post("/v1/installs", json=body, headers=auth())
        assert r.status_code == 400 and "not enabled" in r.json()["detail"]


async def test_index_installs_only_from_configured_indexes_and_upgrades(
    pkg_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    index = tmp_path / "index"
    index.mkdir()
    versions = {}
    for v in ("1.0.0", "1.1.0"):
        pkg = make_package(tmp_path / v, v)
        (index / pkg.name).write_bytes(pkg.read_bytes())
        versions[v] = {"url": pkg.name}
    (index / "index.json").write_text(json.dumps({"plugins": {PID: {"versions": versions}}}))
    async with serving(pkg_app()) as c:
        body = {"source": "index", "ref": PID, "grant": ["network:api.example.com"]}
        r = await c.post("/v1/installs", json=body, headers=auth("admin"))
        assert r.status_code == 400 and r.json()["code"] == "no_index"
    async with serving(pkg_app(package_indexes=[str(index)])) as c:
        for bad in ({"index": "/etc"}, {"ref": "../../etc/passwd"}, {"version": "1; rm -rf"}):
            r = await c.post("/v1/installs", json={**body, **bad}, headers=auth("admin"))
            assert r.status_code == 400, bad
        done = await run_task(
            c, await c.post("/v1/installs", json={**body, "version": "1.0.0"}, headers=auth("admin"))
        )
        assert done["status"] == "succeeded", done["error"]
        assert done["result"]["version"] == "1.0.0"
        # no body: the newest in the index it came from
        done = await run_task(c, await c.post(f"/v1/plugins/{PID}/upgrade", headers=auth("admin")))
        assert done["status"] == "succeeded", done["error"]
        assert done["kind"] == "upgrade" and done["result"]["version"] == "1.1.0"
        assert "(v1.1.0)" in (await forecast(c)).json()["content"][0]["text"]


# -- lifecycle ------------------------------------------------------------------------------


async def test_failed_upgrade_keeps_the_previous_version_then_upgrade_and_rollback(
    pkg_app: Callable[..., FastAPI], tmp_path: Path, home: Path
) -> None:
    async with serving(pkg_app()) as c:
        assert (await run_task(c, await upload(c, make_package(tmp_path))))["status"] == "succeeded"
        url = f"/v1/plugins/{PID}/upgrade"
        broken = make_package(tmp_path / "b", "2.0.0", prelude="raise RuntimeError('broken')")
        done = await run_task(c, await upload(c, broken, url=url))
        assert done["status"] == "failed" and done["result"]["phase"] == "import-check"
        assert done["error"].startswith("import-check: ")
        assert "(v1.0.0)" in (await forecast(c)).json()["content"][0]["text"]

        other = make_package(tmp_path / "o", "3.0.0")
        other_id = other.read_bytes()
        assert (await upload(c, other_id, url="/v1/plugins/acme/other/upgrade")).status_code == 404

        done = await run_task(c, await upload(c, make_package(tmp_path / "g", "2.0.1"), url=url))
        assert done["status"] == "succeeded", done["error"]
        assert done["result"]["previous"] == "1.0.0"
        assert "(v2.0.1)" in (await forecast(c)).json()["content"][0]["text"]

        r = await c.post(f"/v1/plugins/{PID}/rollback", headers=auth())
        done = await run_task(c, r)
        assert done["status"] == "succeeded" and done["result"]["version"] == "1.0.0"
        assert "(v1.0.0)" in (await forecast(c)).json()["content"][0]["text"]
        r = await c.post(f"/v1/plugins/{PID}/rollback", json={"to": "9.9.9"}, headers=auth())
        assert (await run_task(c, r))["status"] == "failed"


async def test_enable_disable_and_uninstall_per_tenant(
    pkg_app: Callable[..., FastAPI], tmp_path: Path, home: Path
) -> None:
    folder = home / "plugins" / "acme__weather"
    async with serving(pkg_app()) as c:
        pkg = make_package(tmp_path)
        for role in ("admin", "other_admin"):
            assert (await run_task(c, await upload(c, pkg, role=role), role))["status"] == (
                "succeeded"
            )
        r = await c.post(f"/v1/plugins/{PID}/disable", headers=auth())
        assert r.status_code == 200 and r.json()["enabled"] is False
        assert (await forecast(c)).status_code == 404
        assert (await forecast(c, "other")).status_code == 200
        r = await c.post(f"/v1/plugins/{PID}/enable", headers=auth())
        assert r.status_code == 200 and r.json()["enabled"] is True
        assert (await forecast(c)).status_code == 200

        done = await run_task(
            c, await c.delete(f"/v1/plugins/{PID}", headers=auth("other")), "other"
        )
        assert done["status"] == "succeeded" and done["result"]["files"].startswith("kept")
        assert folder.is_dir()
        assert (await forecast(c, "other")).status_code == 404
        assert (await forecast(c)).status_code == 200
        r = await c.delete(f"/v1/plugins/{PID}", headers=auth("other"))
        assert r.status_code == 404  # not installed for that tenant any more

        done = await run_task(c, await c.delete(f"/v1/plugins/{PID}", headers=auth()))
        assert done["status"] == "succeeded" and done["result"]["files"] == "removed"
        assert not folder.exists()
        assert (await forecast(c)).status_code == 404
        assert (await c.post(f"/v1/plugins/{PID}/enable", headers=auth())).status_code == 404


async def test_concurrent_installs_of_one_plugin_queue_one_task(
    pkg_app: Callable[..., FastAPI], tmp_path: Path, home: Path
) -> None:
    async with serving(pkg_app()) as c:
        pkg = make_package(tmp_path).read_bytes()
        first, second = await asyncio.gather(upload(c, pkg), upload(c, pkg))
        codes = sorted([first.status_code, second.status_code])
        assert codes == [202, 409], (first.text, second.text)
        accepted = first if first.status_code == 202 else second
        refused = second if accepted is first else first
        assert refused.json()["code"] == "task_in_progress"
        assert refused.headers["location"] == accepted.headers["location"]
        assert (await run_task(c, accepted))["status"] == "succeeded"
        assert uploads_left(home) == []  # the refused upload's file is gone too
        assert [p.name for p in (home / "plugins" / "acme__weather" / "versions").iterdir()] == [
            "1.0.0"
        ]


# -- the runner: claims, leases, other replicas ---------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'tasks.db'}")
    s.migrate()
    s.create_tenant("acme")
    return s


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_two_runners_execute_each_task_exactly_once(store: Store) -> None:
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def job(task: TaskInfo, emit: Callable[[Mapping[str, Any]], None]) -> Done:
        with lock:
            runs[task.id] += 1
        emit({"phase": "work", "status": "progress", "message": task.params["n"]})
        time.sleep(0.02)
        return Done({"n": task.params["n"]})

    tenant = store.tenant("acme")
    ids = [tenant.create_task("demo", params={"n": i}).id for i in range(20)]
    runners = [
        TaskRunner(store, f"replica-{i}", {"demo": job}, poll_interval=0.05, concurrency=2)
        for i in range(2)
    ]
    for r in runners:
        await r.start()
    try:
        await _until(lambda: all(tenant.get_task(i).finished for i in ids))  # type: ignore[union-attr]
    finally:
        for r in runners:
            await r.stop(5)
    assert runs == Counter(dict.fromkeys(ids, 1))
    tasks = [tenant.get_task(i) for i in ids]
    assert all(t is not None and t.status == "succeeded" and t.attempts == 1 for t in tasks)


async def test_a_dead_replicas_task_is_taken_over_and_a_live_lease_is_kept(store: Store) -> None:
    runs: Counter[str] = Counter()

    def slow(task: TaskInfo, emit: Callable[[Mapping[str, Any]], None]) -> Done:
        runs[task.id] += 1
        time.sleep(2.0)  # longer than the lease: the runner must renew it
        return Done({})

    tenant = store.tenant("acme")
    orphan = tenant.create_task("demo").id
    claimed = store.claim_task("dead-replica", lease_seconds=0.5)
    assert claimed is not None and claimed.id == orphan
    kept = tenant.create_task("demo").id
    runners = [
        TaskRunner(store, f"r{i}", {"demo": slow}, lease_seconds=0.75, poll_interval=0.05)
        for i in range(2)
    ]
    for r in runners:
        await r.start()
    try:
        await _until(lambda: all(tenant.get_task(i).finished for i in (orphan, kept)))  # type: ignore[union-attr]
    finally:
        for r in runners:
            await r.stop(5)
    assert runs == Counter({orphan: 1, kept: 1})
    o = tenant.get_task(orphan)
    assert o is not None and o.status == "succeeded" and o.attempts == 2
    assert o.owner != "dead-replica"


async def test_failures_name_their_phase_and_retries_are_bounded(store: Store) -> None:
    def failing(task: TaskInfo, emit: Callable[[Mapping[str, Any]], None]) -> Done:
        raise TaskFailed("resolve", "depends on acme/base, which is not installed")

    def crashing(task: TaskInfo, emit: Callable[[Mapping[str, Any]], None]) -> Done:
        raise RuntimeError("disk on fire")

    tenant = store.tenant("acme")
    a = tenant.create_task("fail").id
    b = tenant.create_task("crash").id
    c = tenant.create_task("fail").id
    for _ in range(3):  # claimed three times by replicas that died
        store.claim_task("dead", lease_seconds=0.01, kinds=("fail",))
        await asyncio.sleep(0.02)
    runner = TaskRunner(store, "r", {"fail": failing, "crash": crashing}, poll_interval=0.05)
    await runner.start()
    try:
        await _until(lambda: all(tenant.get_task(i).finished for i in (a, b, c)))  # type: ignore[union-attr]
    finally:
        await runner.stop(5)
    ta, tb, tc = tenant.get_task(a), tenant.get_task(b), tenant.get_task(c)
    assert ta is not None and tb is not None and tc is not None
    assert ta.status == "failed" and ta.attempts == 4
    assert ta.error is not None and "given up after 3 attempts" in ta.error
    assert tc.status == "failed" and tc.attempts == 1
    assert tc.error == "resolve: depends on acme/base, which is not installed"
    assert tc.result == {"phase": "resolve"}
    assert tb.status == "failed" and tb.error == "start: RuntimeError: disk on fire"


async def test_events_stream_while_another_replica_runs_the_task(
    pkg_app: Callable[..., FastAPI],
) -> None:
    """Each step of a task run by another replica reaches the client before the next starts.

    The app is driven through raw ASGI (httpx's ASGI transport buffers whole responses), so the
    test sees every chunk the moment the server sends it."""
    release = threading.Event()
    waited: list[bool] = []

    def stepper(task: TaskInfo, emit: Callable[[Mapping[str, Any]], None]) -> Done:
        for i in range(3):
            emit({"phase": f"step{i}", "status": "start", "message": "", "fraction": 0.0})
            waited.append(release.wait(10))  # False: the client never saw this step
            release.clear()
        return Done({"steps": 3})

    app = pkg_app()
    async with serving(app):
        store = app.state.plughub.services.store
        task = store.tenant("acme").create_task("demo")
        other = TaskRunner(store, "other-replica", {"demo": stepper}, poll_interval=0.05)
        await other.start()
        seen: list[dict[str, Any]] = []
        buffer = b""

        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal buffer
            if message["type"] != "http.response.body":
                return
            buffer += message.get("body", b"")
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    seen.append(json.loads(line))
                    if seen[-1]["event"] == "phase":
                        release.set()  # the next step only after this one was streamed

        headers = [(k.lower().encode(), v.encode()) for k, v in auth().items()]
        headers.append((b"accept", b"application/x-ndjson"))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/v1/tasks/{task.id}/events",
            "raw_path": f"/v1/tasks/{task.id}/events".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1234),
            "server": ("plughub.test", 80),
        }
        try:
            await asyncio.wait_for(app(scope, receive, send), 30)
        finally:
            await other.stop(5)
    assert waited == [True, True, True]
    phases = [e["phase"] for e in seen if e["event"] == "phase"]
    assert phases == ["step0", "step1", "step2"]
    assert seen[-1]["event"] == "task" and seen[-1]["status"] == "succeeded"
    assert seen[-1]["result"] == {"steps": 3}
    assert any(e["event"] == "status" and e["status"] == "running" for e in seen)


async def test_a_tenant_cannot_change_a_version_other_tenants_share(
    pkg_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    """One version is active for every tenant that installed a plugin: no tenant may upgrade
    or roll it back under the others (their calls would run code they did not choose)."""
    async with serving(pkg_app()) as c:
        v1 = make_package(tmp_path / "a")
        for role in ("admin", "other_admin"):
            assert (await run_task(c, await upload(c, v1, role=role), role))["status"] == "succeeded"
        v2 = make_package(tmp_path / "b", "2.0.0")
        for params in ({"upgrade": "true"}, {"url": f"/v1/plugins/{PID}/upgrade"}):
            done = await run_task(c, await upload(c, v2, **params), "admin")
            assert done["status"] == "failed" and done["result"]["reason"] == "plugin_shared"
        r = await c.post(f"/v1/plugins/{PID}/rollback", headers=auth("admin"))
        done = await run_task(c, r, "admin")
        assert done["status"] == "failed" and done["result"]["reason"] == "plugin_shared"
        assert "(v1.0.0)" in (await forecast(c, "other")).json()["content"][0]["text"]
        # Members install only plugins that ask for no permission.
        r = await upload(c, v2, role="member")
        assert r.status_code == 403 and "admin" in r.json()["detail"]


async def test_only_the_first_content_type_counts_for_the_upload_exemption(
    pkg_app: Callable[..., FastAPI],
) -> None:
    """A JSON body disguised with a second, package Content-Type keeps the ordinary limit."""
    async with serving(pkg_app(max_body_bytes=1024)) as c:
        headers = [
            ("Authorization", auth("admin")["Authorization"]),
            ("Content-Type", "application/json"),
            ("Content-Type", "application/octet-stream"),
        ]
        r = await c.post(f"/v1/plugins/{PID}/upgrade", content=b"{" + b" " * 8192 + b"}", headers=headers)
        assert r.status_code == 413


async def test_a_tenant_cannot_queue_more_than_its_share_of_tasks(
    pkg_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    from plughub.server._packages import MAX_UNFINISHED

    app = pkg_app()
    async with serving(app) as c:
        store = app.state.plughub.services.store
        for _ in range(MAX_UNFINISHED):
            store.tenant("acme").create_task("demo")  # a kind no runner takes: stays queued
        r = await upload(c, make_package(tmp_path))
        assert r.status_code == 429 and r.json()["code"] == "too_many_tasks"
        assert int(r.headers["retry-after"]) >= 1
        assert uploads_left(app.state.plughub.services.home) == []  # nothing left behind
        # another tenant is not affected
        r = await upload(c, make_package(tmp_path / "o"), role="other_admin")
        assert r.status_code == 202
