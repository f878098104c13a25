"""``api_reference``: the HTTP API reference in Markdown, generated from the OpenAPI document.

``docs/api-reference.md`` is this function's output (``make docs`` writes it; a test fails when
it is stale), so the reference cannot drift from the routes. ``docs/api.md`` is the guide.
"""

from __future__ import annotations

import re
from typing import Any

from ._config import ServerConfig

__all__ = ["api_reference"]

_METHODS = ("get", "post", "put", "patch", "delete")
_RST_LITERAL = re.compile(r"``([^`]+)``")


def _text(value: str | None) -> str:
    """A docstring as Markdown: ``literal`` becomes `literal`, lines joined into paragraphs."""
    if not value:
        return ""
    text = _RST_LITERAL.sub(r"`\1`", value.strip())
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(paragraphs)


def _cell(value: str) -> str:
    return _text(value).replace("|", "\\|").replace("\n\n", " ")


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _type(schema: dict[str, Any]) -> str:
    """A short type: ``string``, ``integer``, ``Name`` (a component), ``array of X``, ``A | B``."""
    name = _ref_name(schema)
    if name:
        return f"[{name}](#schema-{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " \\| ".join(_type(s) for s in schema[key])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items') or {})}"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if kind and fmt else str(kind or "any")


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    out = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        out += [f"**{op['summary'].rstrip('.')}.**", ""]
    if op.get("description"):
        out += [_text(op["description"]), ""]
    security = [name for item in op.get("security", []) for name in item]
    out += [f"Authentication: {', '.join(f'`{s}`' for s in security) or 'none'}.", ""]
    params = op.get("parameters") or []
    if params:
        out += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema") or {}
            kind = _type(schema)
            if schema.get("pattern"):
                kind += f" matching `{schema['pattern']}`"
            out.append(
                f"| `{p['name']}` | {p['in']} | {kind} | {'yes' if p.get('required') else 'no'}"
                f" | {_cell(p.get('description') or schema.get('description') or '')} |"
            )
        out.append("")
    body = op.get("requestBody")
    if body:
        kinds = [f"`{ct}` {_type(c.get('schema') or {})}" for ct, c in body["content"].items()]
        required = "required" if body.get("required") else "optional"
        out += [f"Request body ({required}): {', '.join(kinds)}.", ""]
    out += ["| status | meaning | body |", "|---|---|---|"]
    for status, resp in sorted(op.get("responses", {}).items()):
        shapes = [
            f"`{ct}` {_type(c.get('schema') or {})}" if c.get("schema") else f"`{ct}`"
            for ct, c in (resp.get("content") or {}).items()
        ]
        out.append(f"| {status} | {_cell(resp.get('description', ''))} | {', '.join(shapes)} |")
    out.append("")
    return out


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f'<a id="schema-{name.lower()}"></a>', "", f"### {name}", ""]
    if schema.get("description"):
        out += [_text(schema["description"]), ""]
    props = schema.get("properties") or {}
    if not props:
        out += [f"Type: {_type(schema)}.", ""]
        return out
    required = set(schema.get("required") or [])
    out += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, spec in props.items():
        out.append(
            f"| `{field}` | {_type(spec)} | {'yes' if field in required else 'no'} | "
            f"{_cell(spec.get('description') or '')} |"
        )
    out.append("")
    return out


def api_reference(config: ServerConfig | None = None) -> str:
    """Markdown for every operation and schema of the app ``create_app(config)`` builds."""
    from ._app import create_app

    doc = create_app(config or ServerConfig.model_validate({})).openapi()
    lines = [
        "# HTTP API reference",
        "",
        "<!-- Generated from the OpenAPI document by plughub.server.api_reference (make docs);"
        " do not edit. -->",
        "",
        f"{doc['info']['title']} {doc['info']['version']}. The guide is [api.md](api.md); this"
        " page lists every operation of `GET /openapi.json` with its parameters, bodies and"
        " answers.",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in doc["paths"].items():
        for method in _METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method, path, item[method]))
    for tag, ops in by_tag.items():
        lines += [f"## {tag}", ""]
        for method, path, op in ops:
            lines += _operation(method, path, op)
    lines += ["## Schemas", ""]
    for name, schema in sorted(doc.get("components", {}).get("schemas", {}).items()):
        lines += _schema(name, schema)
    return "\n".join(lines).rstrip() + "\n"
