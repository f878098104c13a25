"""A plugin's private key-value storage in the store's ``plugin_kv`` table, with a byte quota.

Implements the SDK's ``Storage`` protocol, so plugins see the same ``ctx.storage`` as with the
host's SQLite file or ``MemoryStorage``. Sizes count like ``MemoryStorage``: the UTF-8 bytes of
the key plus those of the JSON value.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from ..errors import StoreError
from ..sdk import StorageQuotaExceeded
from . import _models as m
from ._store import now, rowcount
from ._validate import dumps

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["PluginStorage"]


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise StoreError("a storage key must be a non-empty string")
    if len(key) > m.KV_KEY_LEN:
        raise StoreError(f"a storage key is at most {m.KV_KEY_LEN} characters, not {len(key)}")
    if "\x00" in key:
        raise StoreError("a storage key must not contain NUL characters")
    return key


class PluginStorage:
    """``Storage`` for one plugin of one tenant. Thread-safe; each call is one transaction."""

    __slots__ = ("_store", "max_value", "plugin_id", "quota", "tenant_id")

    def __init__(
        self, store: Store, tenant_id: str, plugin_id: str, quota: int | None, max_value: int
    ) -> None:
        self._store = store
        self.tenant_id = tenant_id
        self.plugin_id = plugin_id
        self.quota = quota
        self.max_value = max_value

    def __repr__(self) -> str:
        return f"PluginStorage({self.tenant_id!r}, {self.plugin_id!r}, quota={self.quota})"

    def _where(self) -> tuple[Any, ...]:
        return (m.KVEntry.tenant_id == self.tenant_id, m.KVEntry.plugin_id == self.plugin_id)

    def get(self, key: str, default: Any = None) -> Any:
        _check_key(key)
        with self._store._session(False, self.tenant_id) as s:
            row = s.get(m.KVEntry, (self.tenant_id, self.plugin_id, key))
            return default if row is None else row.value

    def set(self, key: str, value: Any) -> None:
        """Store a JSON value; ``StorageQuotaExceeded`` when the plugin's total would pass the
        quota or the entry the per-value limit (nothing is written then)."""
        _check_key(key)
        text = dumps(value, f"the value of storage key {key[:60]!r}")
        size = len(key.encode()) + len(text.encode())
        if size > self.max_value:
            raise StorageQuotaExceeded(
                f"storage value too large: {size} bytes, at most {self.max_value} per key"
            )
        if self.quota is not None and size > self.quota:
            raise StorageQuotaExceeded(
                f"storage quota of {self.quota} bytes exceeded ({size} needed)"
            )
        stored = json.loads(text)
        at = now()
        with self._store._session(True, self.tenant_id) as s:
            self._store._advisory_lock(s, "kv", self.tenant_id, self.plugin_id)
            if self.quota is not None:
                used = s.scalar(
                    select(func.coalesce(func.sum(m.KVEntry.size), 0)).where(
                        *self._where(), m.KVEntry.key != key
                    )
                )
                need = int(used or 0) + size
                if need > self.quota:
                    raise StorageQuotaExceeded(
                        f"storage quota of {self.quota} bytes exceeded ({need} needed)"
                    )
            row = s.get(m.KVEntry, (self.tenant_id, self.plugin_id, key))
            if row is None:
                s.add(
                    m.KVEntry(
                        tenant_id=self.tenant_id,
                        plugin_id=self.plugin_id,
                        key=key,
                        value=stored,
                        size=size,
                        updated_at=at,
                    )
                )
            else:
                row.value, row.size, row.updated_at = stored, size, at

    def delete(self, key: str) -> bool:
        _check_key(key)
        with self._store._session(True, self.tenant_id) as s:
            result = s.execute(delete(m.KVEntry).where(*self._where(), m.KVEntry.key == key))
            return rowcount(result) > 0

    def keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted by code point."""
        if not isinstance(prefix, str):
            raise StoreError("a key prefix must be a string")
        query = select(m.KVEntry.key).where(*self._where())
        if prefix:
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(m.KVEntry.key.like(escaped + "%", escape="\\"))
        with self._store._session(False, self.tenant_id) as s:
            found = s.scalars(query).all()
        # SQLite's LIKE ignores ASCII case: the exact check is here.
        return sorted(k for k in found if k.startswith(prefix))

    def usage(self) -> int:
        """Bytes used, as counted against the quota."""
        with self._store._session(False, self.tenant_id) as s:
            used = s.scalar(
                select(func.coalesce(func.sum(m.KVEntry.size), 0)).where(*self._where())
            )
        return int(used or 0)

    def clear(self) -> int:
        """Delete every key; returns how many there were."""
        with self._store._session(True, self.tenant_id) as s:
            return rowcount(s.execute(delete(m.KVEntry).where(*self._where())))
