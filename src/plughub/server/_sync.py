"""``HostSync``: keep this replica's plugin host in step with the shared home.

An install task runs on one replica and switches the package in the shared home atomically;
every replica must then drop the old version and serve the new one. The replica that ran the
task calls ``refresh_soon()``; the others hear of it from the change notifier (topic
``installations``, or ``resync`` after a reconnect) and do the same. Refreshes are coalesced:
any number of hints while one runs lead to exactly one more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..host import PluginHost
from ..limits import RESYNC, Notifier

__all__ = ["HostSync"]

log = logging.getLogger("plughub.server")

_TOPICS = ("installations", RESYNC)


class HostSync:
    """Runs ``host.refresh()`` off the loop whenever the home may have changed."""

    def __init__(self, host: PluginHost, notifier: Notifier) -> None:
        self._host = host
        self._notifier = notifier
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.refreshes = 0
        """How many refreshes ran (for tests and metrics)."""

    async def start(self) -> None:
        self._unsubscribe = self._notifier.subscribe(self._on_message)
        self._task = asyncio.create_task(self._run(), name="plughub-host-sync")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("topic") in _TOPICS:
            self.refresh_soon()

    def refresh_soon(self) -> None:
        """Ask for a refresh (call on the server's loop)."""
        self._wanted.set()

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                changed = await asyncio.to_thread(self._host.refresh)
            except Exception:
                log.exception("refreshing the installed plugins failed")
                continue
            self.refreshes += 1
            if changed:
                log.info("plugins changed in the home: %s", ", ".join(changed))
