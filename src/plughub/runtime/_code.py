"""What loading a plugin's code yields, whatever style it was written in."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..sdk import Plugin, ToolError
from ..sdk._tool import MARK, ToolDef, ToolMarker, build_tool, tools_of

__all__ = ["VALIDATE_CREDENTIALS", "LoadedCode", "code_from_object", "credentials_validator"]

#: The name the credential validator is called by (not a tool name: tools have no ':').
VALIDATE_CREDENTIALS = "plughub:validate_credentials"


@dataclass(slots=True)
class LoadedCode:
    """Tools and hook implementations of one plugin, ready for the host.

    ``fallback`` serves tool names that are not declared up front (AutoGPT plugins that answer
    ``can_handle`` without listing ``commands``); it returns None for names it does not handle.
    """

    tools: list[ToolDef] = field(default_factory=list)
    hook_objects: list[Any] = field(default_factory=list)
    setup: Callable[..., Any] | None = None
    teardown: Callable[[], Any] | None = None
    aliases: list[str] = field(default_factory=list)
    fallback: Callable[[str], ToolDef | None] | None = None
    description: str | None = None
    version: str | None = None
    validate_credentials: ToolDef | None = None
    """The plugin's own credential check, callable like a tool with ``credentials``."""


def credentials_validator(fn: Callable[[Any], Any]) -> ToolDef:
    """Wrap a ``validate_credentials(credentials)`` function (sync or async) as a ToolDef, so
    hosts and workers run it with the same machinery (deadline) as a tool.

    Only a ``ToolError``'s message (the plugin's words for the user) passes through; any other
    exception becomes "the credential check failed (<type>)", since its text, traceback or
    logging could carry a credential (an HTTP error quoting the URL with the key in it).
    """

    def refused(e: Exception) -> ToolError:
        if isinstance(e, ToolError):
            return e
        return ToolError(f"the credential check failed ({type(e).__name__})")

    if inspect.iscoroutinefunction(fn):

        async def acheck(credentials: dict[str, Any]) -> bool:
            try:
                await fn(credentials)
            except Exception as e:
                raise refused(e) from None
            return True

        return build_tool(acheck, ToolMarker(name=VALIDATE_CREDENTIALS))

    def check(credentials: dict[str, Any]) -> bool:
        try:
            value = fn(credentials)
        except Exception as e:
            raise refused(e) from None
        if inspect.isawaitable(value):  # a sync method returning an awaitable: not supported
            raise TypeError("validate_credentials must be a coroutine function to be async")
        return True

    return build_tool(check, ToolMarker(name=VALIDATE_CREDENTIALS))


def _validator_of(obj: Any) -> ToolDef | None:
    """A Plugin's overridden ``validate_credentials``, or a module's function of that name."""
    if isinstance(obj, Plugin):
        if type(obj).validate_credentials is Plugin.validate_credentials:
            return None
        return credentials_validator(obj.validate_credentials)
    fn = getattr(obj, "validate_credentials", None) if inspect.ismodule(obj) else None
    return credentials_validator(fn) if callable(fn) else None


def _compat_adapter(obj: Any) -> Callable[[list[Any]], LoadedCode] | None:
    klass = obj if isinstance(obj, type) else type(obj)
    # A seed-style class can only exist if its compat module was imported: no import needed here.
    for name in ("plughub.compat.autogpt", "plughub.compat.dialer"):
        mod = sys.modules.get(name)
        if mod is not None and issubclass(klass, mod.BasePlugin):
            return mod.adapt  # type: ignore[no-any-return]
    return None


def code_from_object(obj: Any) -> LoadedCode:
    """Build ``LoadedCode`` from a Plugin class or instance, a module, a tool function, a list of
    tool functions, or a seed-style plugin class."""
    if isinstance(obj, (list, tuple)):
        if obj and all(_compat_adapter(o) is not None for o in obj):
            adapter = _compat_adapter(obj[0])
            assert adapter is not None
            return adapter(list(obj))
        return LoadedCode(tools=[build_tool(f) for f in obj])
    adapter = _compat_adapter(obj) if inspect.isclass(obj) or not inspect.ismodule(obj) else None
    if adapter is not None:
        return adapter([obj])
    if inspect.isclass(obj) and issubclass(obj, Plugin):
        obj = obj()
    if isinstance(obj, Plugin):
        return LoadedCode(
            tools=[build_tool(f, m) for f, m in tools_of(obj)],
            hook_objects=[obj],
            setup=obj.setup,
            teardown=obj.teardown,
            description=obj.description or None,
            validate_credentials=_validator_of(obj),
        )
    if inspect.ismodule(obj):
        own = [
            v
            for v in vars(obj).values()
            if inspect.isclass(v)
            and issubclass(v, Plugin)
            and v is not Plugin
            and v.__module__ == obj.__name__
        ]
        if len(own) == 1:  # a single-file plugin written as a Plugin subclass
            return code_from_object(own[0])
        return LoadedCode(
            tools=[build_tool(f, m) for f, m in tools_of(obj)],
            hook_objects=[obj],
            validate_credentials=_validator_of(obj),
        )
    if callable(obj) and getattr(obj, MARK, None) is not None:
        return LoadedCode(tools=[build_tool(obj)])
    if callable(obj):
        return LoadedCode(tools=[build_tool(obj)])
    raise TypeError(
        f"cannot make a plugin from {obj!r}: expected a Plugin class or instance, a module, "
        "a tool function, or a list of them"
    )
