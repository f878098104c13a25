"""``ctx.http``: an httpx client that refuses hosts outside the plugin's network grant."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ._results import ToolError

__all__ = ["PermissionedHttp", "host_allowed"]


def host_allowed(url: str, grants: list[str]) -> bool:
    """True when the URL's host (and port, if the grant names one) matches a grant."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in ("http", "https"):
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for grant in grants:
        g = grant.lower()
        g_host, _, g_port = g.partition(":")
        if g_port and g_port != str(port):
            continue
        if g_host in ("*", host):
            return True
        if g_host.startswith("*.") and fnmatch.fnmatch(host, g_host):
            return True
    return False


class PermissionedHttp:
    """A thin wrapper over ``httpx.Client`` that checks every URL before sending.

    httpx is imported on first use so that plugins that never touch the network pay nothing.
    """

    def __init__(self, grants: list[str], remaining: Callable[[], float | None]) -> None:
        self._grants = grants
        self._remaining = remaining
        self._client: Any = None

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        if not host_allowed(url, self._grants):
            raise ToolError(f"network access to {url!r} is not granted to this plugin")
        if self._client is None:
            import httpx

            self._client = httpx.Client(follow_redirects=False)
        left = self._remaining()
        if left is not None and "timeout" not in kwargs:
            kwargs["timeout"] = left
        return self._client.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
