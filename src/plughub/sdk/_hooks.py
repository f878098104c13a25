"""Types that host hooks receive and return: an ``Invocation`` and the decisions on it.

Hooks return decisions and the host applies them, so that the transcript, the trace and the
executed call always agree (no hook mutates a call behind the caller's back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AuditEvent", "Deny", "Invocation", "ModifyArgs"]


@dataclass(slots=True)
class Invocation:
    """One tool call as hooks see it. ``args`` are the arguments after validation."""

    plugin_id: str
    tool: str
    args: dict[str, Any]
    call_id: str
    caller: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Deny:
    """Refuse the call; ``message`` is shown to the caller, ``reason`` is a stable code."""

    message: str
    reason: str = "denied_by_policy"


@dataclass(slots=True, frozen=True)
class ModifyArgs:
    """Replace the call's arguments (validated again against the tool's schema)."""

    args: dict[str, Any]


@dataclass(slots=True, frozen=True)
class AuditEvent:
    """What happened in one call, for the audit log. Never holds argument values."""

    call_id: str
    plugin_id: str
    tool: str
    caller: str | None
    started: float
    duration: float
    outcome: str  # "ok" or the error reason
    arg_bytes: int
    result_bytes: int
    cached: bool = False
