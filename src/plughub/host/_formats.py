"""Turn the catalog's ``ToolSpec``s into the tool formats of OpenAI, Anthropic and MCP.

Every format wants a self-contained object schema, so ``$ref``s are inlined and pydantic's
noise (auto ``title`` keys) is dropped once here rather than in each adapter. OpenAI's strict
mode accepts only a subset of JSON Schema; ``strictify`` decides whether a schema fits that
subset *without* changing what arguments it accepts (it never makes optional arguments required).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from plughub.sdk._spec import ToolSpec

__all__ = [
    "FORMATS",
    "LLM_NAME_RE",
    "CatalogEntry",
    "export",
    "inline_refs",
    "llm_name",
    "mcp_wraps_output",
    "strictify",
    "to_anthropic",
    "to_mcp",
    "to_openai_chat",
    "to_openai_responses",
]

FORMATS = ("openai", "responses", "anthropic", "mcp")

LLM_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

_MAX_NAME = 64
_HASH_LEN = 8
_MAX_DESCRIPTION = 1024  # OpenAI's limit; applied to Anthropic too so one catalog fits both
_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")

# Where JSON Schema keywords hold subschemas (2020-12 plus draft-07 spellings). Everything else
# is data (``enum``, ``const``, ``default``, ``examples``...) and is copied verbatim, so a
# ``title`` inside a default value or a property *named* ``title`` is never touched.
_SUBSCHEMA = frozenset(
    {
        "additionalProperties",
        "additionalItems",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contains",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "items",  # a list of schemas in draft-07 tuple form
        "contentSchema",
    }
)
_SUBSCHEMA_LIST = frozenset({"anyOf", "oneOf", "allOf", "prefixItems", "items"})
_SUBSCHEMA_MAP = frozenset({"properties", "patternProperties", "dependentSchemas", "dependencies"})
_DEFS_KEYS = ("$defs", "definitions")

# JSON Schema keywords OpenAI strict mode rejects (platform.openai.com, "Supported schemas").
# ``oneOf``/``allOf`` are here too: strict mode only composes with ``anyOf``.
_STRICT_UNSUPPORTED = frozenset(
    {
        "allOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "patternProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
    }
)
# The only string formats strict mode knows; others (pydantic's "uri", "path", "binary"...) fail.
_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)

_MCP_ANNOTATIONS = {
    "title": "title",
    "read_only": "readOnlyHint",
    "destructive": "destructiveHint",
    "idempotent": "idempotentHint",
    "open_world": "openWorldHint",
}


@dataclass(slots=True, frozen=True)
class CatalogEntry:
    """A tool as listed in the host catalog: which plugin owns it and the name the LLM sees."""

    plugin_id: str
    plugin_name: str
    spec: ToolSpec
    llm_name: str


# --------------------------------------------------------------------------- names


def llm_name(plugin_name: str, tool_name: str) -> str:
    """The provider-safe name ``<plugin>__<tool>`` (``^[a-zA-Z0-9_-]{1,64}$``).

    Characters providers reject become ``_``. Names over 64 characters keep a readable prefix and
    end in ``_`` plus 8 hex digits of a sha1 of the *original* pair, so long names stay distinct.
    Short names that only differ in replaced characters (``a.b`` vs ``a_b``) do collide; the
    exporters refuse duplicate names so such a clash is loud.
    """
    name = _NAME_BAD_CHARS.sub("_", f"{plugin_name}__{tool_name}")
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha1(f"{plugin_name}\x00{tool_name}".encode()).hexdigest()[:_HASH_LEN]
    return f"{name[: _MAX_NAME - _HASH_LEN - 1]}_{digest}"


# --------------------------------------------------------------------------- $ref inlining


class _Inliner:
    """Rebuilds a schema with local ``$ref``s expanded, tracking the expansion path for cycles."""

    __slots__ = ("root", "stack")

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        # "#" is on the stack from the start: any reference back to the root is a cycle.
        self.stack: list[str] = ["#"]

    def schema(self, node: Any) -> Any:
        if not isinstance(node, dict):  # boolean schema (or junk): nothing to rewrite
            return copy.deepcopy(node)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            expanded = self._expand(ref)
            expanded.update(self._keywords({k: v for k, v in node.items() if k != "$ref"}))
            return expanded
        return self._keywords(node)

    def _keywords(self, node: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title" or key in _DEFS_KEYS:
                continue
            if key in _SUBSCHEMA_MAP and isinstance(value, dict):
                out[key] = {name: self.schema(sub) for name, sub in value.items()}
            elif key in _SUBSCHEMA_LIST and isinstance(value, list):
                out[key] = [self.schema(sub) for sub in value]
            elif key in _SUBSCHEMA:
                out[key] = self.schema(value)
            elif key == "discriminator" and isinstance(value, dict):
                # pydantic's OpenAPI-style mapping points into the $defs being removed
                out[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != "mapping"}
            else:
                out[key] = copy.deepcopy(value)
        return out

    def _expand(self, ref: str) -> dict[str, Any]:
        target = self._resolve(ref)
        if ref in self.stack:
            # Recursive reference: inlining would never end, so accept any value here.
            stub: dict[str, Any] = {}
            if isinstance(target, dict) and "description" in target:
                stub["description"] = copy.deepcopy(target["description"])
            return stub
        self.stack.append(ref)
        try:
            result = self.schema(target)
        finally:
            self.stack.pop()
        if isinstance(result, dict):
            return result
        return {} if result is True else {"not": {}}  # boolean schemas as objects, so merge works

    def _resolve(self, ref: str) -> Any:
        pointer = unquote(ref[1:])
        if pointer == "":
            return self.root
        if not pointer.startswith("/"):
            raise ValueError(f"unsupported $ref {ref!r} (only JSON pointers are resolved)")
        node: Any = self.root
        for raw in pointer[1:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ValueError(f"cannot resolve $ref {ref!r}")
        return node


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` with local ``$ref``s inlined, ``$defs`` and schema ``title``s dropped.

    Several clients (and OpenAI strict mode's older validators) mishandle ``$ref``; inlining makes
    each tool schema self-contained. A cyclic reference becomes ``{}`` (any value) keeping the
    target's ``description``, so recursive models are accepted, only less deeply checked.
    Siblings of a ``$ref`` are merged over the target; a ``discriminator.mapping`` (pointers into
    the removed ``$defs``) is dropped. Non-local refs are left as they are; an
    unresolvable local ref raises ``ValueError``. The input is never mutated.
    """
    if not isinstance(schema, dict):
        raise TypeError(f"a JSON Schema object is required, not {type(schema).__name__}")
    result: dict[str, Any] = _Inliner(schema).schema(schema)
    return result


# --------------------------------------------------------------------------- OpenAI strict


def _is_object(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node


def _close(node: Any, path: str, problems: list[str]) -> Any:
    """A copy of ``node`` with objects closed; what strict mode can't take goes to ``problems``."""
    where = path or "/"
    if not isinstance(node, dict):
        problems.append(f"{where}: not a schema object")
        return node
    unsupported = sorted(_STRICT_UNSUPPORTED.intersection(node))
    if unsupported:
        problems.append(f"{where}: unsupported keyword(s) {', '.join(unsupported)}")
    if "$ref" in node:
        problems.append(f"{where}: unresolved $ref {node['$ref']!r}")
    elif not any(key in node for key in ("type", "anyOf", "enum", "const")):
        problems.append(f"{where}: schema without a type")
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt not in _STRICT_FORMATS:
        problems.append(f"{where}: unsupported format {fmt!r}")

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "additionalProperties":
            out[key] = value  # judged below, never descended into
        elif key in _SUBSCHEMA_MAP and isinstance(value, dict):
            out[key] = {n: _close(s, f"{path}/{key}/{n}", problems) for n, s in value.items()}
        elif key in _SUBSCHEMA_LIST and isinstance(value, list):
            out[key] = [_close(s, f"{path}/{key}/{i}", problems) for i, s in enumerate(value)]
        elif key in _SUBSCHEMA:
            out[key] = _close(value, f"{path}/{key}", problems)
        else:
            out[key] = value

    if _is_object(node):
        if node.get("additionalProperties", False) is not False:
            problems.append(f"{where}: object allows additional properties")
        out["additionalProperties"] = False
        properties = node.get("properties")
        if not isinstance(properties, dict):
            problems.append(f"{where}: object without declared properties")
        else:
            required = node.get("required", [])
            optional = [name for name in properties if name not in required]
            if optional:
                problems.append(f"{where}: optional properties {', '.join(optional)}")
    return out


def _strict_problems(inlined: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    if inlined.get("type") != "object":
        problems.append("/: root is not an object")
    if "anyOf" in inlined:
        problems.append("/: root uses anyOf")
    closed = _close(inlined, "", problems)
    return closed, problems


def strictify(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Return ``(schema_for_openai_strict, ok)``.

    When ``ok`` the copy has refs inlined, titles dropped and every object closed with
    ``additionalProperties: false``. Strict mode forces the model to send every property, so a
    schema with optional properties, open-ended objects, untyped parts (including the ``{}`` left
    by a recursive ref), or keywords/formats strict mode rejects is *not* ok. Then the returned
    copy is only ``inline_refs(schema)``: a half-closed schema is useless to callers, who send the
    schema non-strict as it was written.
    """
    inlined = inline_refs(schema)
    closed, problems = _strict_problems(inlined)
    return (inlined, False) if problems else (closed, True)


# --------------------------------------------------------------------------- exporters


def _description(spec: ToolSpec, limit: int | None) -> str:
    text = spec.description.strip() or spec.name
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _checked(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    """Materialise ``entries``, refusing names a provider would reject or that are ambiguous."""
    result = list(entries)
    seen: set[str] = set()
    for entry in result:
        if not LLM_NAME_RE.match(entry.llm_name):
            raise ValueError(f"invalid tool name {entry.llm_name!r} for {entry.plugin_id}")
        if entry.llm_name in seen:
            raise ValueError(f"duplicate tool name {entry.llm_name!r} ({entry.plugin_id})")
        seen.add(entry.llm_name)
    return result


def _input_schema(entry: CatalogEntry) -> dict[str, Any]:
    """The tool's arguments schema, inlined, with an object root every provider accepts."""
    schema = inline_refs(entry.spec.input_schema)
    kind = schema.get("type")
    if kind is None:
        schema = {"type": "object", **schema}
    elif kind != "object":
        raise ValueError(
            f"tool {entry.llm_name!r} ({entry.plugin_id}): input schema root must be an object, "
            f"not {kind!r}"
        )
    schema.setdefault("properties", {})
    return schema


def _openai_parameters(entry: CatalogEntry, strict: bool | None) -> tuple[dict[str, Any], bool]:
    schema = _input_schema(entry)
    if strict is False:
        return schema, False
    closed, problems = _strict_problems(schema)
    if not problems:
        return closed, True
    if strict:
        raise ValueError(
            f"tool {entry.llm_name!r} ({entry.plugin_id}) cannot use OpenAI strict mode: "
            + "; ".join(problems)
        )
    return schema, False


def to_openai_chat(
    entries: Iterable[CatalogEntry], *, strict: bool | None = None
) -> list[dict[str, Any]]:
    """Chat Completions ``tools``. ``strict=None`` turns strict mode on only where it is lossless;
    ``True`` demands it (``ValueError`` naming the tool otherwise); ``False`` never uses it."""
    tools: list[dict[str, Any]] = []
    for entry in _checked(entries):
        parameters, is_strict = _openai_parameters(entry, strict)
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": entry.llm_name,
                    "description": _description(entry.spec, _MAX_DESCRIPTION),
                    "parameters": parameters,
                    "strict": is_strict,
                },
            }
        )
    return tools


def to_openai_responses(
    entries: Iterable[CatalogEntry], *, strict: bool | None = None
) -> list[dict[str, Any]]:
    """Responses API ``tools``: the same content as ``to_openai_chat``, without the nesting."""
    return [
        {"type": "function", **tool["function"]} for tool in to_openai_chat(entries, strict=strict)
    ]


def to_anthropic(entries: Iterable[CatalogEntry]) -> list[dict[str, Any]]:
    """Anthropic Messages ``tools``."""
    return [
        {
            "name": entry.llm_name,
            "description": _description(entry.spec, _MAX_DESCRIPTION),
            "input_schema": _input_schema(entry),
        }
        for entry in _checked(entries)
    ]


def _mcp_output(spec: ToolSpec) -> tuple[dict[str, Any], bool] | None:
    if spec.output_schema is None:
        return None
    schema = inline_refs(spec.output_schema)
    if schema.get("type") == "object":
        return schema, False
    return {"type": "object", "properties": {"result": schema}, "required": ["result"]}, True


def mcp_wraps_output(spec: ToolSpec) -> bool:
    """Whether MCP's ``outputSchema`` wraps the declared one as ``{"result": ...}``.

    MCP requires an object ``outputSchema``; when the tool's isn't, the server must send
    ``structuredContent`` as ``{"result": value}`` to match what ``to_mcp`` advertised.
    """
    output = _mcp_output(spec)
    return output is not None and output[1]


def _mcp_annotations(annotations: dict[str, Any]) -> dict[str, Any]:
    """Our snake_case hints as MCP's names; MCP spellings pass through, unknown keys are dropped."""
    known = set(_MCP_ANNOTATIONS.values())
    out: dict[str, Any] = {}
    for key, value in annotations.items():
        name = _MCP_ANNOTATIONS.get(key) or (key if key in known else None)
        if name is not None and value is not None:
            out[name] = value
    return out


def to_mcp(entries: Iterable[CatalogEntry]) -> list[dict[str, Any]]:
    """MCP ``tools/list`` entries (descriptions are not truncated: MCP has no limit)."""
    tools: list[dict[str, Any]] = []
    for entry in _checked(entries):
        spec = entry.spec
        tool: dict[str, Any] = {"name": entry.llm_name}
        title = spec.annotations.get("title")
        if title:
            tool["title"] = title
        tool["description"] = _description(spec, None)
        tool["inputSchema"] = _input_schema(entry)
        output = _mcp_output(spec)
        if output is not None:
            tool["outputSchema"] = output[0]
        annotations = _mcp_annotations(spec.annotations)
        if annotations:
            tool["annotations"] = annotations
        tools.append(tool)
    return tools


_EXPORTERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "openai": to_openai_chat,
    "responses": to_openai_responses,
    "anthropic": to_anthropic,
    "mcp": to_mcp,
}


def export(entries: Iterable[CatalogEntry], fmt: str, **kw: Any) -> list[dict[str, Any]]:
    """Export in the format named ``fmt`` (one of ``FORMATS``); ``kw`` goes to the exporter."""
    exporter = _EXPORTERS.get(fmt)
    if exporter is None:
        raise ValueError(f"unknown tool format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return exporter(entries, **kw)
