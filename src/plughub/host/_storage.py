"""A plugin's key-value storage in a SQLite file, with a byte quota.

One file per host data directory, one namespace per plugin; values are JSON. The daemon's store
replaces this with its SQLAlchemy tables; plugins see the same ``Storage`` protocol.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from ..sdk import StorageQuotaExceeded

__all__ = ["SQLiteStorage"]


class SQLiteStorage:
    """``Storage`` for one plugin, backed by a shared SQLite file."""

    def __init__(self, path: Path, plugin_id: str, quota: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (plugin TEXT NOT NULL, key TEXT NOT NULL,"
            " value TEXT NOT NULL, PRIMARY KEY (plugin, key))"
        )
        self._plugin = plugin_id
        self._lock = threading.Lock()
        self.quota = quota

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM kv WHERE plugin = ? AND key = ?", (self._plugin, key)
            ).fetchone()
        return default if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        encoded = json.dumps(value)
        with self._lock:
            if self.quota is not None:
                (used,) = self._conn.execute(
                    "SELECT COALESCE(SUM(LENGTH(CAST(key AS BLOB))"
                    " + LENGTH(CAST(value AS BLOB))), 0) FROM kv WHERE plugin = ? AND key != ?",
                    (self._plugin, key),
                ).fetchone()
                need = used + len(key.encode()) + len(encoded.encode())
                if need > self.quota:
                    raise StorageQuotaExceeded(
                        f"storage quota of {self.quota} bytes exceeded ({need} needed)"
                    )
            self._conn.execute(
                "INSERT INTO kv (plugin, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
                (self._plugin, key, encoded),
            )

    def delete(self, key: str) -> bool:
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM kv WHERE plugin = ? AND key = ?", (self._plugin, key)
            )
        return cur.rowcount > 0

    def keys(self, prefix: str = "") -> list[str]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._lock:
            rows = self._conn.execute(
                "SELECT key FROM kv WHERE plugin = ? AND key LIKE ? ESCAPE '\\' ORDER BY key",
                (self._plugin, escaped + "%"),
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self._conn.close()
