"""The ``Plugin`` base class: metadata, tools as decorated methods, and a lifecycle."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar

import pluggy

from ._context import Context

__all__ = ["Plugin", "hookimpl"]

#: Marks a method of a plugin (or any registered object) as an implementation of a host hook.
hookimpl = pluggy.HookimplMarker("plughub")


class Plugin:
    """Base class for native plugins.

    Class attributes are the metadata used when the plugin has no ``plugin.yaml`` (e.g. when an
    agent developer passes the class straight to ``PluginHost``). ``setup`` runs once before the
    first call, ``teardown`` when the host unloads the plugin; both may be async.
    """

    id: ClassVar[str | None] = None
    name: ClassVar[str | None] = None
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""

    def setup(self, ctx: Context) -> Awaitable[None] | None:
        """Prepare resources (connections, caches); ``ctx`` holds settings and credentials."""
        return None

    def teardown(self) -> Awaitable[None] | None:
        """Release what ``setup`` acquired."""
        return None

    def validate_credentials(self, credentials: Mapping[str, Any]) -> Awaitable[None] | None:
        """Check credentials before they are stored (e.g. one cheap call to the service).

        Raise ``ToolError`` (or any exception) with a message for the user when they do not
        work; never put the values in it. Runs before a daemon saves a tenant's credentials,
        after the manifest's own checks (required names present, no unknown names).
        """
        return None
