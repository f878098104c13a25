"""Test plugins, API keys and helpers shared by the daemon tests (imported as ``_daemon``)."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI

GREET_MANIFEST = """\
id: acme/greet
version: 1.0.0
description: Tools the daemon tests call.
entrypoint: main:Greet
"""

GREET_CODE = '''\
import asyncio
import pathlib

from plughub.sdk import Blob, Context, Image, Link, Plugin, ToolError, tool


class Greet(Plugin):
    @tool
    def hello(self, name: str) -> str:
        """Say hello to name."""
        return f"Hello {name}!"

    @tool
    def fail(self, msg: str) -> str:
        """Always fails with msg."""
        raise ToolError(msg)

    @tool
    def boom(self) -> str:
        """Raises an unexpected exception."""
        raise RuntimeError("kaboom")

    @tool
    def data(self, n: int = 2) -> dict:
        """Structured data."""
        return {"n": n, "items": list(range(n))}

    @tool
    def count(self, n: int, ctx: Context):
        """Stream n chunks with progress and logs."""
        for i in range(n):
            ctx.progress(i + 1, n, f"step {i + 1}")
            ctx.log(f"made chunk {i}")
            yield f"c{i}"

    @tool
    async def watch(self, marker: str):
        """Stream until cancelled; writes what happened to the marker file."""
        finished = False
        try:
            yield "started"
            for _ in range(1000):
                await asyncio.sleep(0.01)
            finished = True
            yield "finished"
        finally:
            pathlib.Path(marker).write_text("finished" if finished else "cancelled")

    @tool
    async def slow(self, seconds: float, marker: str = "") -> str:
        """Sleep, then answer; the marker file says whether it finished or was cancelled."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if marker:
                pathlib.Path(marker).write_text("cancelled")
            raise
        if marker:
            pathlib.Path(marker).write_text("done")
        return f"slept {seconds}"

    @tool
    def picture(self) -> Image:
        """A tiny PNG."""
        return Image(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(24), "image/png")

    @tool
    def blob(self, size: int) -> Blob:
        """size bytes of data."""
        return Blob(bytes(i % 251 for i in range(size)), "application/octet-stream", "data.bin")

    @tool
    def link(self) -> Link:
        """A link."""
        return Link("https://example.com/doc", "Doc")
'''

BLOCKED_MANIFEST = """\
id: acme/blocked
version: 1.0.0
description: Denied by the server's configuration.
entrypoint: main:hello
"""

BLOCKED_CODE = '''\
from plughub.sdk import tool


@tool
def hello() -> str:
    """Never runs."""
    return "hi"
'''

NOTES_CODE = '''\
from plughub.compat.dialer import BasePlugin


class NoteTaker(BasePlugin):
    """Keeps notes.

    Context Parameters:
        text (str): The note to add.
    """

    def execute(self, context):
        if not context["text"].strip():
            raise ValueError("text must not be empty")
        return {"note": context["text"], "message": "Note saved"}


class Crasher(BasePlugin):
    """Always crashes."""

    def execute(self, context):
        raise RuntimeError("database unavailable")
'''

KEYS = {
    "admin": "admin-key-0123456789",
    "member": "member-key-0123456789",
    "invoke": "invoke-key-0123456789",
    "other": "other-key-0123456789",
    "other_admin": "other-admin-key-0123456789",
    "dify": "dify-key-0123456789",
}
API_KEYS = (
    f"{KEYS['admin']}:acme:admin,{KEYS['member']}:acme:member,{KEYS['invoke']}:acme:invoke,"
    f"{KEYS['other']}:globex:member,{KEYS['other_admin']}:globex:admin,{KEYS['dify']}:*:admin"
)


def auth(role: str = "member") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


def write_plugins(root: Path) -> Path:
    """The test plugins: ``acme/greet``, ``acme/blocked`` and the AI-Dialer file ``notes.py``."""
    for name, manifest, code in (
        ("greet", GREET_MANIFEST, GREET_CODE),
        ("blocked", BLOCKED_MANIFEST, BLOCKED_CODE),
    ):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plugin.yaml").write_text(manifest)
        (folder / "main.py").write_text(code)
    (root / "notes.py").write_text(textwrap.dedent(NOTES_CODE))
    return root


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an httpx client talking ASGI to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plughub.test") as c:
            yield c
