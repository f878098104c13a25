"""Redacting tool arguments before they reach the audit log."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_name", "redact"]

REDACTED = "***"
_MAX_DEPTH = 32
# Words that mark a property as secret wherever it appears, in snake, kebab or camel case.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "apikey",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "privatekey",
        "pin",
        "otp",
    }
)
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("access", "key"),
        ("private", "key"),
        ("secret", "key"),
        ("auth", "key"),
        ("session", "key"),
        ("client", "secret"),
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def is_secret_name(name: str) -> bool:
    """True for property names like ``password``, ``apiKey``, ``access_token``, ``X-Api-Key``.

    ``max_tokens`` is not a secret: words are compared whole.
    """
    words = [w.lower() for w in _WORD.findall(name)]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def _resolve(schema: Any, root: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
    """Follow local ``$ref``s (``#/$defs/X``, ``#/definitions/X``)."""
    while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str):
        if depth >= _MAX_DEPTH:
            return {}
        ref: str = schema["$ref"]
        if not ref.startswith("#/"):
            return {}
        target: Any = root
        for raw in ref[2:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, Mapping) else None
        schema = target
        depth += 1
    return schema if isinstance(schema, Mapping) else {}


def _branches(
    schema: Mapping[str, Any], root: Mapping[str, Any], depth: int
) -> list[Mapping[str, Any]]:
    """The schema and the alternatives it combines (``anyOf``/``oneOf``/``allOf``), resolved."""
    found = [schema]
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or ():
            resolved = _resolve(sub, root, depth + 1)
            if resolved and depth < _MAX_DEPTH:
                found.extend(_branches(resolved, root, depth + 1))
    return found


def _is_secret_schema(branches: list[Mapping[str, Any]]) -> bool:
    return any(
        b.get("writeOnly") is True or b.get("format") == "password" or bool(b.get("x-secret"))
        for b in branches
    )


def _walk(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return REDACTED  # deeper than any sane argument: do not risk leaking
    branches = _branches(_resolve(schema, root, depth), root, depth)
    if isinstance(value, Mapping):
        props: dict[str, Any] = {}
        extra: list[Any] = []
        for b in branches:
            if isinstance(b.get("properties"), Mapping):
                for k, v in b["properties"].items():
                    props.setdefault(k, v)
            if isinstance(b.get("additionalProperties"), Mapping):
                extra.append(b["additionalProperties"])
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            sub = props.get(key, extra[0] if extra else {})
            sub_branches = _branches(_resolve(sub, root, depth + 1), root, depth + 1)
            if is_secret_name(key) or _is_secret_schema(sub_branches):
                out[key] = REDACTED
            else:
                out[key] = _walk(v, sub, root, depth + 1)
        return out
    if isinstance(value, list | tuple):
        items: Any = {}
        for b in branches:
            if isinstance(b.get("items"), Mapping):
                items = b["items"]
                break
        if _is_secret_schema(_branches(_resolve(items, root, depth + 1), root, depth + 1)):
            return [REDACTED for _ in value]
        return [_walk(v, items, root, depth + 1) for v in value]
    return value


def redact(
    args: Mapping[str, Any], input_schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A copy of ``args`` with secret values replaced by ``"***"``.

    A value is secret when its property in ``input_schema`` (followed through ``$ref``,
    ``anyOf``/``oneOf``/``allOf``, nested objects and array items) is marked ``writeOnly: true``,
    ``format: password`` or ``x-secret``, or when its key is named like a secret (password,
    token, secret, api_key, ...; see ``is_secret_name``), at any depth, with or without a schema.
    ``args`` is not modified.
    """
    root: Mapping[str, Any] = input_schema if isinstance(input_schema, Mapping) else {}
    result = _walk(dict(args), root, root, 0)
    return result if isinstance(result, dict) else {}
