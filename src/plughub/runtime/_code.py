"""What loading a plugin's code yields, whatever style it was written in."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..sdk import Plugin
from ..sdk._tool import MARK, ToolDef, build_tool, tools_of

__all__ = ["LoadedCode", "code_from_object"]


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
        return LoadedCode(tools=[build_tool(f, m) for f, m in tools_of(obj)], hook_objects=[obj])
    if callable(obj) and getattr(obj, MARK, None) is not None:
        return LoadedCode(tools=[build_tool(obj)])
    if callable(obj):
        return LoadedCode(tools=[build_tool(obj)])
    raise TypeError(
        f"cannot make a plugin from {obj!r}: expected a Plugin class or instance, a module, "
        "a tool function, or a list of them"
    )
