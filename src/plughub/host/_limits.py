"""Result caching for one host process (rate limits live in ``plughub.limits``)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from ..sdk import ToolResult

__all__ = ["TTLCache"]


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
