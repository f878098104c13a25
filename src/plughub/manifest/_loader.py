"""Read ``plugin.yaml`` and turn every problem into a :class:`~plughub.errors.ManifestError`.

The file goes through four stages, each of which can only make it safer for the next:

1. Size and encoding: more than :data:`MAX_MANIFEST_BYTES` is refused before any parsing;
   the text must be UTF-8 (an optional BOM is allowed) and must not contain NUL bytes.
2. A pass over the YAML *event* stream (PyYAML's safe parser). Aliases (``*name``) are refused
   outright: a manifest is small enough to repeat a value, and refusing them makes alias bombs
   ("billion laughs") impossible rather than merely bounded. Nesting deeper than
   :data:`MAX_DEPTH` is refused too, so the recursive composer cannot exhaust the stack.
3. Composition into a node tree with ``SafeLoader`` (line numbers are kept), a walk that reports
   duplicate mapping keys (PyYAML silently keeps the last one), then construction of plain
   Python values with the safe constructor; nothing is ever built from a Python tag.
4. Validation with :class:`PluginManifest`. Each pydantic error's ``loc`` is followed down the
   node tree to the deepest node that exists, whose line is reported with a dotted field name
   (``tools.1.name``) and a readable message.

All problems found by stages 3 and 4 are reported together.
"""

from __future__ import annotations

import datetime
import difflib
import os
import types
import typing
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.constructor import ConstructorError
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from plughub.errors import ManifestError

from ._model import PluginManifest

# libyaml's parser when PyYAML was built with it: ~6x faster discovery, same marks and errors.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = [
    "MANIFEST_FILENAME",
    "MAX_DEPTH",
    "MAX_MANIFEST_BYTES",
    "load_manifest",
    "parse_manifest",
]

MANIFEST_FILENAME = "plugin.yaml"
"""Name of the manifest file at the root of a plugin directory."""

MAX_MANIFEST_BYTES = 256 * 1024
"""Manifests larger than this (256 KiB) are refused before parsing."""

MAX_DEPTH = 50
"""Deepest nesting of mappings and sequences accepted."""

_MAX_ALIAS_REPORTS = 10
_MERGE_TAG = "tag:yaml.org,2002:merge"

Problem = tuple[str, int | None, str]


def load_manifest(path: str | os.PathLike[str]) -> PluginManifest:
    """Read and validate the manifest at ``path``.

    Raises :class:`~plughub.errors.ManifestError` for every failure, including a file that
    cannot be read, so callers handle one exception type.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_MANIFEST_BYTES:
                raise _too_big(source, size)
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ManifestError(source, [("", None, f"cannot read manifest: {reason}")]) from None
    return parse_manifest(data, source=source)


def parse_manifest(text: str | bytes, source: str = "<string>") -> PluginManifest:
    """Validate manifest ``text``; ``source`` names it in error messages.

    ``bytes`` must be UTF-8. The size limit applies to the UTF-8 encoding of ``text``.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_MANIFEST_BYTES:
            raise _too_big(source, len(text))
        text = _decode(text, source)
    else:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_MANIFEST_BYTES:
            raise _too_big(source, size)

    try:
        _scan_events(text, source)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                raise ManifestError(source, [("", None, "the manifest is empty")])
            if not isinstance(root, MappingNode):
                kind = _kind(root)
                message = f"the top level must be a mapping of fields, not a {kind}"
                raise ManifestError(source, [("", _line(root), message)])
            problems = _duplicate_keys(root, ())
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise ManifestError(source, [_yaml_problem(exc)]) from None
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        message = f"character U+{ord(char):04X} is not allowed in YAML"
        raise ManifestError(source, [("", line, message)]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error is one of the above
        raise ManifestError(source, [("", None, f"invalid YAML: {exc}")]) from None
    except (ValueError, RecursionError) as exc:
        # e.g. an integer literal with more digits than Python converts
        raise ManifestError(source, [("", None, f"cannot read a value: {exc}")]) from None

    manifest: PluginManifest | None = None
    try:
        manifest = PluginManifest.model_validate(data)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc.errors(include_url=False), root, data))
    if problems or manifest is None:
        raise ManifestError(source, _sorted(problems))
    return manifest


# --------------------------------------------------------------------------------------------
# Stage 1: bytes
# --------------------------------------------------------------------------------------------


def _too_big(source: str, size: int) -> ManifestError:
    return ManifestError(
        source,
        [
            (
                "",
                None,
                f"the manifest is {size} bytes; the limit is {MAX_MANIFEST_BYTES} bytes (256 KiB)",
            )
        ],
    )


def _decode(data: bytes, source: str) -> str:
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ManifestError(
            source, [("", line, "this is a binary file (it contains NUL bytes), not YAML text")]
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise ManifestError(
            source,
            [("", line, f"the manifest is not UTF-8 text (byte 0x{bad} at offset {exc.start})")],
        ) from None


# --------------------------------------------------------------------------------------------
# Stage 2: events
# --------------------------------------------------------------------------------------------


class _Frame:
    """A mapping or sequence being read in the event stream, to name the path of a node."""

    __slots__ = ("children", "key", "mapping")

    def __init__(self, mapping: bool) -> None:
        self.mapping = mapping
        self.children = 0  # nodes seen so far (keys and values, for a mapping)
        self.key = "?"  # the last key of a mapping

    def segment(self) -> str | None:
        """Path segment of the next child; None when the next child is a mapping key."""
        if not self.mapping:
            return str(self.children)
        return None if self.children % 2 == 0 else self.key


def _scan_events(text: str, source: str) -> None:
    """Refuse aliases and excessive nesting before anything is composed."""
    stack: list[_Frame] = []
    problems: list[Problem] = []
    aliases = 0

    def path() -> str:
        parts = [f.segment() for f in stack]
        if parts and parts[-1] is None:
            return ".".join(p for p in parts[:-1] if p is not None)
        return ".".join(p if p is not None else "?" for p in parts)

    def finished(key: str) -> None:
        if stack:
            frame = stack[-1]
            if frame.mapping and frame.children % 2 == 0:
                frame.key = key
            frame.children += 1

    for event in yaml.parse(text, Loader=_Loader):
        if not isinstance(event, NodeEvent | CollectionEndEvent):
            continue
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, AliasEvent):
            aliases += 1
            if aliases <= _MAX_ALIAS_REPORTS:
                problems.append(
                    (
                        path(),
                        line,
                        f"YAML aliases (*{event.anchor}) are not allowed in manifests; "
                        "write the value out instead",
                    )
                )
            finished("?")
        elif isinstance(event, ScalarEvent):
            finished(event.value)
        elif isinstance(event, CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                top = path().split(".")
                field = ".".join(top[:3]) + ("..." if len(top) > 3 else "")
                problems.append((field, line, f"nested more than {MAX_DEPTH} levels deep"))
                raise ManifestError(source, problems)
            stack.append(_Frame(mapping=isinstance(event, MappingStartEvent)))
        elif isinstance(event, CollectionEndEvent):
            stack.pop()
            finished("?")
    if aliases > _MAX_ALIAS_REPORTS:
        problems.append(("", None, f"{aliases - _MAX_ALIAS_REPORTS} more aliases not listed"))
    if problems:
        raise ManifestError(source, problems)


def _yaml_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or "invalid YAML"
    if exc.context:
        where = ""
        if exc.context_mark is not None and exc.context_mark is not mark:
            where = f" started on line {exc.context_mark.line + 1}"
        message = f"{message} ({exc.context}{where})"
    label = "invalid YAML value" if isinstance(exc, ConstructorError) else "YAML syntax error"
    return ("", mark.line + 1 if mark else None, f"{label}: {message}")


# --------------------------------------------------------------------------------------------
# Stage 3: the node tree
# --------------------------------------------------------------------------------------------


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "list"
    if isinstance(node, MappingNode):
        return "mapping"
    return "single value"


def _duplicate_keys(node: Node, path: tuple[str, ...]) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(node, MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                continue  # complex keys are refused by the constructor
            if key.tag == _MERGE_TAG:
                problems.extend(_duplicate_keys(value, path))
                continue
            ident = (key.tag, key.value)
            if ident in seen:
                field = ".".join((*path, key.value))
                problems.append(
                    (
                        field,
                        _line(key),
                        f"duplicate key {key.value!r} (first on line {seen[ident]})",
                    )
                )
            else:
                seen[ident] = _line(key)
            problems.extend(_duplicate_keys(value, (*path, key.value)))
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            problems.extend(_duplicate_keys(item, (*path, str(i))))
    return problems


# --------------------------------------------------------------------------------------------
# Stage 4: validation errors
# --------------------------------------------------------------------------------------------

_MISSING = object()


def _validation_problems(errors: Iterable[ErrorDetails], root: Node, data: Any) -> list[Problem]:
    merged: dict[tuple[str, int | None], list[str]] = {}
    for error in errors:
        loc = tuple(error["loc"])
        field = _field_name(loc, data)
        line = _line_for(loc, root)
        messages = merged.setdefault((field, line), [])
        message = _message(error, loc)
        if message not in messages:
            messages.append(message)
    return [(field, line, "; ".join(msgs)) for (field, line), msgs in merged.items()]


def _field_name(loc: tuple[int | str, ...], data: Any) -> str:
    """Dotted name of ``loc``, without pydantic's markers (``[key]``, union member names)."""
    parts: list[str] = []
    current = data
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(current, dict):
            match = [k for k in current if k == part or str(k) == str(part)]
            current = current[match[0]] if match else _MISSING
        elif isinstance(current, list) and isinstance(part, int):
            current = current[part] if 0 <= part < len(current) else _MISSING
        elif current is not _MISSING:
            break  # a scalar: the rest names validators, not places
        parts.append(str(part))
    return ".".join(parts)


def _line_for(loc: tuple[int | str, ...], root: Node) -> int:
    """Line of the deepest node of ``root`` that ``loc`` reaches."""
    node = root
    for i, part in enumerate(loc):
        if isinstance(node, MappingNode):
            want_key = i + 1 < len(loc) and loc[i + 1] == "[key]"
            found: tuple[Node, Node] | None = None
            for key, value in node.value:  # the last duplicate wins, as in the constructor
                if isinstance(key, ScalarNode) and key.value == str(part):
                    found = (key, value)
            if found is None:
                break
            node = found[0] if want_key else found[1]
            if want_key:
                break
        elif isinstance(node, SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
        else:
            break
    return _line(node)


_TYPE_NAMES: dict[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    dict: "mapping",
    type(None): "null",
    datetime.date: "date",
    datetime.datetime: "timestamp",
    bytes: "binary",
    set: "set",
}


def _describe(value: Any) -> str:
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, list | dict | set | bytes) or value is None:
        return kind
    shown = repr(value) if isinstance(value, str) else str(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} {shown}"


def _message(error: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    kind = error["type"]
    msg = error["msg"]
    value = error.get("input")
    if kind == "manifest":
        return msg
    if kind == "missing":
        return "required field is missing"
    if kind == "invalid_key":
        return "keys must be strings (put the key in quotes)"
    if kind == "extra_forbidden":
        message = "unknown field"
        model = _model_at(loc[:-1])
        if model is not None and loc:
            close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return message
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if msg.startswith("Input should be "):
        msg = "must be " + msg[len("Input should be ") :]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = "must be a mapping"
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
        msg += f", got {_describe(value)}"
        if kind == "string_type" and isinstance(value, int | float | bool | datetime.date):
            msg += " (put the value in quotes)"
    return msg


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc``, if it is a model."""
    tp: Any = PluginManifest
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif origin is list:
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: p[1] or 0)
