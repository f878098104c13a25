"""Every exception plughub raises, in one place.

Tool *failures* are not exceptions: a tool that raises, times out or gets bad arguments yields a
``ToolResult`` with ``is_error=True`` that a model can read. The classes below are for callers
who misuse the host, for broken plugins, and for infrastructure faults.

Exception tree::

    PlughubError                    base of everything below
    ├── ManifestError               a plugin.yaml is invalid; names file, field and line
    ├── PluginError                 something is wrong with one plugin (carries ``plugin``)
    │   ├── PluginLoadError         its code failed to import or to build its tools
    │   ├── PluginNotFound          no plugin by that id, name or alias
    │   └── PluginDisabled          it exists but is denied, disabled or failed to load
    │       └── DependencyError     ... because a dependency is missing, mismatched or cyclic
    ├── EnvBuildError               a plugin's Python environment could not be built (phase, log)
    ├── ToolNotFound                the plugin has no tool by that name
    └── UsageError                  the caller passed something the host cannot accept

``ToolError`` (raised *by* plugin code to report a readable failure) lives in ``plughub.sdk``;
it is not a ``PlughubError`` because it never escapes the host.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DependencyError",
    "EnvBuildError",
    "ManifestError",
    "PlughubError",
    "PluginDisabled",
    "PluginError",
    "PluginLoadError",
    "PluginNotFound",
    "ToolNotFound",
    "UsageError",
]


class PlughubError(Exception):
    """Base class of every exception plughub raises."""


class ManifestError(PlughubError):
    """A manifest is invalid. ``problems`` lists ``(field, line, message)`` triples."""

    def __init__(self, path: str, problems: list[tuple[str, int | None, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = []
        for field, line, message in problems:
            where = f"{path}:{line}" if line else path
            lines.append(f"{where}: {field or '<root>'}: {message}")
        super().__init__("\n".join(lines))


class PluginError(PlughubError):
    """A problem with one plugin; ``plugin`` is its id (or the name the caller used)."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class PluginLoadError(PluginError):
    """The plugin's code could not be imported or its tools could not be built."""


class PluginNotFound(PluginError):
    """No plugin matches the id, name or alias."""

    def __init__(self, plugin: str) -> None:
        super().__init__(plugin, "no such plugin")


class PluginDisabled(PluginError):
    """The plugin is known but not usable: denied, disabled, or broken (see ``reason``)."""

    def __init__(self, plugin: str, reason: str) -> None:
        self.reason = reason
        super().__init__(plugin, f"not available: {reason}")


class DependencyError(PluginDisabled):
    """The plugin is unusable because a dependency is missing, mismatched or cyclic."""


class EnvBuildError(PlughubError):
    """A plugin environment could not be built.

    ``phase`` is ``"spec"`` (the spec itself is unusable: bad id, version, requirement or
    wheels folder), ``"venv"`` (``uv venv`` or the shared-base setup failed) or ``"install"``
    (``uv pip install`` failed: unknown or unbuildable requirement, missing bundled wheel,
    conflict with the SDK's pinned versions). ``log_tail`` is the end of uv's output.
    """

    def __init__(self, plugin_id: str, phase: str, message: str, log_tail: str = "") -> None:
        self.plugin_id = plugin_id
        self.phase = phase
        self.message = message
        self.log_tail = log_tail
        text = f"cannot build the environment of plugin {plugin_id!r} ({phase}): {message}"
        if log_tail:
            text += f"\n--- uv output (last lines) ---\n{log_tail}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable across processes despite the multi-argument __init__.
        return (type(self), (self.plugin_id, self.phase, self.message, self.log_tail))


class ToolNotFound(PlughubError):
    """The plugin exists but has no tool by that name."""

    def __init__(self, plugin: str, tool: str, known: list[str]) -> None:
        self.plugin = plugin
        self.tool = tool
        hint = f"; its tools: {', '.join(sorted(known))}" if known else "; it has no tools"
        super().__init__(f"plugin {plugin!r} has no tool {tool!r}{hint}")


class UsageError(PlughubError):
    """The caller passed an argument the host cannot accept (not a tool failure)."""
