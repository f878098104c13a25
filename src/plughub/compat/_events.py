"""Bridge the host's agent-task hooks to an AutoGPT-style plugin's ``event_handlers`` dict."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from ..sdk import hookimpl

__all__ = ["EventBridge"]

log = logging.getLogger("plughub.compat")


class EventBridge:
    """Registered with the host's plugin manager in place of the plugin instance.

    The plugin itself is not registered because its method names (``handle``, ``config``...)
    are not hooks, and because its handlers live in a dict, looked up at call time so that a
    plugin may change them after loading. A handler that raises is logged and ignored: one
    plugin's bookkeeping must not break the agent's task or another plugin's handler.
    """

    def __init__(self, plugin: Any, plugin_name: str) -> None:
        self.plugin = plugin
        self.plugin_name = plugin_name

    def _dispatch(self, event: str, event_data: dict[str, Any]) -> Any:
        handlers = getattr(self.plugin, "event_handlers", None)
        handler = handlers.get(event) if isinstance(handlers, dict) else None
        if handler is None:
            return None
        try:
            value = handler(event_data)
        except Exception:
            log.exception("%s handler of plugin %s failed", event, self.plugin_name)
            return None
        if inspect.isawaitable(value):
            # The host awaits awaitable hook results; errors are contained the same way.
            return self._guard(event, value)
        return None

    async def _guard(self, event: str, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception:
            log.exception("%s handler of plugin %s failed", event, self.plugin_name)

    @hookimpl
    def task_started(self, event_data: dict[str, Any]) -> Any:
        return self._dispatch("task_started", event_data)

    @hookimpl
    def task_completed(self, event_data: dict[str, Any]) -> Any:
        return self._dispatch("task_completed", event_data)

    @hookimpl
    def error_occurred(self, event_data: dict[str, Any]) -> Any:
        return self._dispatch("error_occurred", event_data)
