"""Run plugins written for other hosts (AutoGPT-style, AI-Dialer-style) unmodified.

Plugin code changes only its import line (``from plughub.compat.autogpt import BasePlugin`` or
``from plughub.compat.dialer import BasePlugin, get_registry``); each submodule's ``adapt`` turns
those classes into a ``LoadedCode`` the host runs like any native plugin.

This module holds the small pieces both adapters share: argument validation, readable
missing-argument errors, and running sync plugin code that expects an event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import inspect
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..sdk._results import ToolError
from ..sdk._tool import ArgumentsInvalid

__all__ = ["MissingArgument"]

T = TypeVar("T")

#: What LLM providers accept as a tool name; anything else is refused before it reaches code.
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_MESSAGES = 5
_MAX_MESSAGE_CHARS = 200


class MissingArgument(ToolError, KeyError):
    """``args["x"]`` / ``context["x"]`` on a missing key.

    Seed plugins index their argument dicts directly; a bare ``KeyError: 'x'`` means nothing to
    a model, so the message names the argument. It is still a ``KeyError`` so that plugin code
    catching ``KeyError`` keeps working.
    """

    def __init__(self, key: object, owner: str) -> None:
        super().__init__(f"missing required argument {key!r} for {owner}")
        self.key = key

    def __str__(self) -> str:
        return self.message


class Args(dict[str, Any]):
    """The argument dict handed to plugin code: a plain dict whose missing keys are readable."""

    __slots__ = ("_owner",)

    def __init__(self, data: Mapping[str, Any], owner: str) -> None:
        super().__init__(data)
        self._owner = owner

    def __missing__(self, key: str) -> Any:
        raise MissingArgument(key, self._owner)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."


def _require_mapping(args: Any) -> dict[str, Any]:
    if not isinstance(args, Mapping):
        raise ArgumentsInvalid(f"invalid arguments: expected an object, got {type(args).__name__}")
    if not all(isinstance(k, str) for k in args):
        raise ArgumentsInvalid("invalid arguments: every key must be a string")
    return dict(args)


def is_free_form(schema: Mapping[str, Any]) -> bool:
    """True when a schema accepts any object (nothing to validate beyond "is a mapping")."""
    return set(schema) <= {"type", "additionalProperties", "description", "title"} and (
        schema.get("additionalProperties", True) is True
    )


def schema_validator(
    schema: Mapping[str, Any], owner: str
) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A ``ToolDef.validate`` for a JSON Schema: returns a dict copy or raises ArgumentsInvalid.

    The schema is checked here, at load time, so that a broken schema fails the plugin's load
    (ValueError naming ``owner``) instead of every call. Messages are clipped: a model sent a
    megabyte string should not get it echoed back inside the error.
    """
    if schema.get("type", "object") != "object":
        raise ValueError(f"{owner}: the arguments schema must describe an object")
    if is_free_form(schema):
        return _require_mapping
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise ValueError(f"{owner}: invalid JSON Schema: {_clip(e.message)}") from None
    validator = Draft202012Validator(schema)

    def validate(args: Mapping[str, Any]) -> dict[str, Any]:
        data = _require_mapping(args)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            parts = []
            for err in errors[:_MAX_MESSAGES]:
                where = ".".join(str(p) for p in err.absolute_path) or "<arguments>"
                parts.append(f"{_clip(where)}: {_clip(err.message)}")
            more = len(errors) - _MAX_MESSAGES
            tail = f"; and {more} more" if more > 0 else ""
            raise ArgumentsInvalid("invalid arguments: " + "; ".join(parts) + tail)
        return data

    return validate


# -- sync code that wants an event loop ----------------------------------------------------------


def _in_fresh_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a short-lived thread (same contextvars) and return or re-raise its outcome.

    Used when the calling thread already runs an event loop: ``run_until_complete`` cannot nest,
    so the plugin gets a thread of its own.
    """
    ctx = contextvars.copy_context()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = ctx.run(fn)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="plughub-compat", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _current_loop() -> asyncio.AbstractEventLoop | None:
    """The loop set (not necessarily running) in this thread, without creating one.

    Best effort: asyncio has no public way to ask this without side effects (``get_event_loop``
    may create a loop or warn), so this reads the default policy's thread-local. When that is
    not available the answer is None, and the caller behaves like ``asyncio.run`` does.
    """
    policy = getattr(asyncio.events, "_event_loop_policy", None)
    loop = getattr(getattr(policy, "_local", None), "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


class _OwnedLoop:
    """A thread's reusable loop; closed when the thread ends (its locals are dropped) or, for
    threads that live until then (the main thread), at interpreter exit."""

    __slots__ = ("__weakref__", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        _all_owned.add(self)

    def close(self) -> None:
        if not self.loop.is_closed() and not self.loop.is_running():
            self.loop.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


_owned = threading.local()
_all_owned: weakref.WeakSet[_OwnedLoop] = weakref.WeakSet()


@atexit.register
def _close_owned_loops() -> None:
    for holder in list(_all_owned):
        with contextlib.suppress(Exception):
            holder.close()


def _owned_loop() -> asyncio.AbstractEventLoop:
    holder: _OwnedLoop | None = getattr(_owned, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _owned.holder = _OwnedLoop()
    return holder.loop


def call_with_loop(fn: Callable[[], Any]) -> Any:
    """Call sync plugin code so that ``asyncio.get_event_loop().run_until_complete(...)`` works.

    The AI-Dialer seed wraps async plugins as ``asyncio.get_event_loop().run_until_complete(
    self.execute_async(context))``. The host runs sync tools in worker threads, where
    ``get_event_loop`` raises (no loop is set there), and sometimes in a thread whose loop is
    already running, where ``run_until_complete`` raises. So:

    * a loop is running in this thread: run ``fn`` in a fresh thread (recursing into this);
    * a usable loop is already set: call ``fn`` as is;
    * otherwise: set this thread's own loop for the duration of the call, then unset it. That
      loop is created once per thread and reused (as the seed's process-wide loop was; creating
      one per call would cost more than most tools), and closed when the thread ends.

    An awaitable returned by ``fn`` is run to completion on that loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return _in_fresh_thread(lambda: call_with_loop(fn))
    existing = _current_loop()
    if existing is not None and not existing.is_closed():
        value = fn()
        return existing.run_until_complete(_await(value)) if inspect.isawaitable(value) else value
    loop = _owned_loop()
    asyncio.set_event_loop(loop)
    try:
        value = fn()
        if inspect.isawaitable(value):
            value = loop.run_until_complete(_await(value))
        return value
    finally:
        asyncio.set_event_loop(existing)


async def _await(value: Any) -> Any:
    return await value


def settle(value: Any) -> Any:
    """Resolve an awaitable that sync code returned (e.g. a sync override of an async method)."""
    if not inspect.isawaitable(value):
        return value
    return call_with_loop(lambda: value)
