"""Input checks shared by the store: every refusal is a ``StoreError("...", "invalid")``."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import StoreError
from . import _models as m

__all__ = [
    "check_credential_name",
    "check_json",
    "check_key_id",
    "check_name",
    "check_plugin_id",
    "check_tenant_id",
    "check_text",
    "dumps",
]

_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)
_PLUGIN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}/[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)
_CRED = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_KEY_ID = re.compile(r"[0-9a-f]{16,32}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_tenant_id(value: object) -> str:
    if not isinstance(value, str) or not _TENANT.fullmatch(value):
        raise StoreError(
            f"invalid tenant id {_show(value)}: 1-64 characters of a-z, 0-9, '_' and '-',"
            " starting with a letter or digit"
        )
    return value


def check_plugin_id(value: object) -> str:
    if not isinstance(value, str) or not _PLUGIN.fullmatch(value):
        raise StoreError(
            f"invalid plugin id {_show(value)}: expected 'author/name', each part 1-64"
            " characters of a-z, 0-9, '_' and '-'"
        )
    return value


def check_credential_name(value: object) -> str:
    if not isinstance(value, str) or not _CRED.fullmatch(value):
        raise StoreError(
            f"invalid credential name {_show(value)}: 1-128 characters of A-Z, a-z, 0-9, '_',"
            " '.' and '-', not starting with a digit, '.' or '-'"
        )
    return value


def check_key_id(value: object) -> str | None:
    """The key id, or None when it cannot be one (callers treat that as 'not found')."""
    return value if isinstance(value, str) and _KEY_ID.fullmatch(value) else None


def check_text(value: object, what: str, limit: int, *, empty: bool = True) -> str:
    """A single-line text field: no control characters, at most ``limit`` characters."""
    if not isinstance(value, str):
        raise StoreError(f"{what} must be a string, not {type(value).__name__}")
    if not empty and not value:
        raise StoreError(f"{what} must not be empty")
    if len(value) > limit:
        raise StoreError(f"{what} is too long: {len(value)} characters, at most {limit}")
    if _CONTROL.search(value):
        raise StoreError(f"{what} must not contain control characters")
    return value


def check_name(value: object, what: str = "name") -> str:
    return check_text(value, what, m.NAME_LEN)


def dumps(value: Any, what: str) -> str:
    """Canonical JSON text of ``value``; refuses what JSON cannot carry (NaN, sets, objects)."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what} is not JSON-serialisable: {e}") from None


def check_json(value: Any, what: str, limit: int) -> Any:
    """``value`` as it will read back (a JSON round trip), at most ``limit`` bytes of JSON."""
    text = dumps(value, what)
    size = len(text.encode())
    if size > limit:
        raise StoreError(f"{what} is too large: {size} bytes of JSON, at most {limit}")
    return json.loads(text)
