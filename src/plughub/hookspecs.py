"""The host hooks: the one contract between plughub and code that extends the host.

Implement a hook with ``@plughub.sdk.hookimpl`` on a plugin class (or any object passed to
``PluginHost(hooks=[...])``). An implementation may accept any subset of a hook's arguments, so
adding an argument later breaks nobody. Implementations may be ``async``; the host awaits them.

Per-call hooks (``before_invoke``, ``after_invoke``) are compiled into a plain list when plugins
register, so a host with no such hooks pays nothing per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .sdk import AuditEvent, Deny, Invocation, ModifyArgs, ToolResult

hookspec = pluggy.HookspecMarker("plughub")

# -- plugin lifecycle --------------------------------------------------------------------------


@hookspec
def plugin_loaded(plugin_id: str, version: str, tools: list[str]) -> None:
    """A plugin's code was imported and its tools built (once per load)."""


@hookspec
def plugin_unloaded(plugin_id: str) -> None:
    """A plugin was unloaded (host closed, or the plugin was removed)."""


# -- around every invocation -------------------------------------------------------------------


@hookspec
def before_invoke(invocation: Invocation) -> Deny | ModifyArgs | None:
    """Decide on a call before it runs: ``None`` allows, ``Deny`` refuses, ``ModifyArgs`` rewrites.

    Runs after argument validation and the permission check. Implementations run in pluggy's
    order (last registered first, ``tryfirst``/``trylast`` respected); the first ``Deny`` wins,
    and each ``ModifyArgs`` is validated again and seen by the next implementation.
    """


@hookspec
def after_invoke(invocation: Invocation, result: ToolResult) -> ToolResult | None:
    """See (and optionally replace) a call's result; return ``None`` to keep it."""


@hookspec
def audit(event: AuditEvent) -> None:
    """Record a finished call. Holds sizes and outcome, never argument values or secrets."""


# -- agent task events (the AutoGPT seed's ``event_handlers``) ---------------------------------


@hookspec
def task_started(event_data: dict[str, Any]) -> None:
    """An agent task began."""


@hookspec
def task_completed(event_data: dict[str, Any]) -> None:
    """An agent task finished."""


@hookspec
def error_occurred(event_data: dict[str, Any]) -> None:
    """A tool raised an unexpected exception or an agent task failed.

    ``event_data`` has ``plugin_id``, ``tool``, ``call_id``, ``error`` (the message) and
    ``error_type``.
    """


HOOK_NAMES = (
    "plugin_loaded",
    "plugin_unloaded",
    "before_invoke",
    "after_invoke",
    "audit",
    "task_started",
    "task_completed",
    "error_occurred",
)
