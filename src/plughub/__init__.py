"""plughub: write a tool once; run it in-process, in an isolated worker, over HTTP or MCP.

The public API for agent developers is ``PluginHost``; plugin authors import ``plughub.sdk``.
"""

import logging as _logging
from typing import TYPE_CHECKING, Any

from .errors import (
    DependencyError,
    EnvBuildError,
    InstallError,
    ManifestError,
    PlughubError,
    PluginDisabled,
    PluginError,
    PluginLoadError,
    PluginNotFound,
    ToolNotFound,
    UsageError,
)
from .sdk import Context, Plugin, ToolError, ToolResult, hookimpl, tool

if TYPE_CHECKING:
    from .host import PluginHost, PluginInfo


def __getattr__(name: str) -> Any:
    # The host (and with it the worker runtime) loads on first use: plugin code imports
    # ``plughub.sdk``, which runs this module, and must not pay for the host (PEP 562).
    if name in ("PluginHost", "PluginInfo"):
        from . import host

        return getattr(host, name)
    raise AttributeError(f"module 'plughub' has no attribute {name!r}")

__version__ = "0.1.0"

# A library stays quiet unless the application configures logging.
_logging.getLogger("plughub").addHandler(_logging.NullHandler())

__all__ = [
    "Context",
    "DependencyError",
    "EnvBuildError",
    "InstallError",
    "ManifestError",
    "PlughubError",
    "Plugin",
    "PluginDisabled",
    "PluginError",
    "PluginHost",
    "PluginInfo",
    "PluginLoadError",
    "PluginNotFound",
    "ToolError",
    "ToolNotFound",
    "ToolResult",
    "UsageError",
    "__version__",
    "hookimpl",
    "tool",
]
