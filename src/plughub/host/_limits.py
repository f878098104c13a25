"""In-memory rate limiting and result caching for one host process.

The daemon swaps these for shared (Redis) backends; the interface is the same two methods.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from ..sdk import ToolResult

__all__ = ["TTLCache", "TokenBucket"]


class TokenBucket:
    """``count`` calls per ``per`` seconds, refilled continuously, bursting up to ``count``."""

    __slots__ = ("_lock", "_stamp", "_tokens", "count", "per")

    def __init__(self, count: int, per: float) -> None:
        self.count = count
        self.per = per
        self._tokens = float(count)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take a token; returns 0.0 on success, else the seconds to wait for the next one."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(
                self.count, self._tokens + (now - self._stamp) * self.count / self.per
            )
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) * self.per / self.count


class TTLCache:
    """A small LRU of results keyed by the canonical JSON of the validated arguments."""

    def __init__(self, ttl: float, max_entries: int = 1024) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: OrderedDict[Any, tuple[float, ToolResult]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> ToolResult | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return hit[1]

    def put(self, key: Any, result: ToolResult) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl, result)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
