"""plughub: write a tool once; run it in-process, in an isolated worker, over HTTP or MCP.

The public API for agent developers is ``PluginHost``; plugin authors import ``plughub.sdk``.
"""

import logging as _logging

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
from .host import PluginHost, PluginInfo
from .sdk import Context, Plugin, ToolError, ToolResult, hookimpl, tool

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
