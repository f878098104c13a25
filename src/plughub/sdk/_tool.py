"""``@tool``: turn a function or method into a tool with a schema derived from its type hints.

The decorator only marks the function (so it still works as a plain function and binds as a
method); ``build_tool`` does the expensive work once, when the host loads the plugin.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo

from ._context import Context
from ._docstring import parse_docstring
from ._results import Blob, Image, Json, Link, Text, ToolResult
from ._spec import ToolSpec

__all__ = ["ArgumentsInvalid", "ToolDef", "ToolMarker", "build_tool", "tool", "tools_of"]

F = TypeVar("F", bound=Callable[..., Any])
#: "remote" is a runtime's proxy (a worker tool): called with the pipeline's per-call state.
Kind = Literal["sync", "async", "gen", "agen", "remote"]
MARK = "__plughub_tool__"
_CONTENT_TYPES = (Text, Json, Image, Blob, Link)
# Return annotations that are already model-facing content: nothing to validate or schema.
_PASSTHROUGH = {str, type(None), ToolResult, bytes, *_CONTENT_TYPES}


class ArgumentsInvalid(Exception):
    """Arguments did not match the tool's schema; the message is written for a model to read."""


@dataclass(slots=True, frozen=True)
class ToolMarker:
    name: str | None = None
    description: str | None = None
    annotations: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    cacheable: bool | None = None


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    title: str | None = None,
    read_only: bool | None = None,
    destructive: bool | None = None,
    idempotent: bool | None = None,
    open_world: bool | None = None,
    timeout: float | None = None,
    cacheable: bool | None = None,
) -> Callable[[F], F]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    title: str | None = None,
    read_only: bool | None = None,
    destructive: bool | None = None,
    idempotent: bool | None = None,
    open_world: bool | None = None,
    timeout: float | None = None,
    cacheable: bool | None = None,
) -> Any:
    """Mark a function or method as a tool.

    The name defaults to the function's, the description to the docstring's summary, and each
    parameter's description to its line in the docstring's ``Args:`` section. ``timeout`` and
    ``cacheable`` override the manifest's limits for this tool only.
    """
    hints = {
        "title": title,
        "read_only": read_only,
        "destructive": destructive,
        "idempotent": idempotent,
        "open_world": open_world,
    }
    marker = ToolMarker(
        name, description, {k: v for k, v in hints.items() if v is not None}, timeout, cacheable
    )

    def mark(f: F) -> F:
        setattr(f, MARK, marker)
        return f

    return mark(fn) if fn is not None else mark


def tools_of(obj: Any) -> list[tuple[Callable[..., Any], ToolMarker]]:
    """The marked tools on a class instance or module, in definition order."""
    found: list[tuple[Callable[..., Any], ToolMarker]] = []
    seen: set[str] = set()
    names = (
        list(vars(obj))
        if inspect.ismodule(obj)
        else [n for klass in reversed(type(obj).__mro__) for n in vars(klass)]
    )
    for attr in names:
        if attr in seen:
            continue
        seen.add(attr)
        raw = inspect.getattr_static(obj, attr, None)
        func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        marker = getattr(func, MARK, None)
        if isinstance(marker, ToolMarker):
            found.append((getattr(obj, attr), marker))
    return found


@dataclass(slots=True, eq=False)
class ToolDef:
    """A loaded, callable tool: its spec plus what the host needs to validate and run it."""

    spec: ToolSpec
    func: Callable[..., Any]
    kind: Kind
    validate: Callable[[Mapping[str, Any]], dict[str, Any]]
    ctx_param: str | None = None
    output: TypeAdapter[Any] | None = None
    timeout: float | None = None
    cacheable: bool | None = None
    #: Parses and validates JSON text in one pass (pydantic-core), for wire arguments.
    validate_json: Callable[[str | bytes], dict[str, Any]] | None = None


def _kind(func: Callable[..., Any]) -> Kind:
    target = inspect.unwrap(func)
    if inspect.isasyncgenfunction(target):
        return "agen"
    if inspect.isgeneratorfunction(target):
        return "gen"
    if inspect.iscoroutinefunction(target):
        return "async"
    return "sync"


def _is_context(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return isinstance(annotation, type) and issubclass(annotation, Context)


def _readable(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "<arguments>"
        msg = "unknown argument" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{loc}: {msg}")
    return "invalid arguments: " + "; ".join(parts)


def _kwargs(inst: BaseModel) -> dict[str, Any]:
    extra = inst.__pydantic_extra__  # only set for tools that take **kwargs
    return {**inst.__dict__, **extra} if extra else inst.__dict__


def pydantic_validator(model: type[BaseModel]) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """Validate a mapping with ``model`` and return keyword arguments (fields, not dumps)."""
    validate = model.__pydantic_validator__.validate_python

    def run(args: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return _kwargs(validate(args))
        except ValidationError as e:
            raise ArgumentsInvalid(_readable(e)) from None

    return run


def pydantic_json_validator(model: type[BaseModel]) -> Callable[[str | bytes], dict[str, Any]]:
    """Like ``pydantic_validator`` for JSON text: ~3x cheaper than ``json.loads`` + validate."""
    validate = model.__pydantic_validator__.validate_json

    def run(text: str | bytes) -> dict[str, Any]:
        try:
            return _kwargs(validate(text))
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            if first["type"] == "json_invalid":
                raise ArgumentsInvalid(f"arguments are not valid JSON: {first['msg']}") from None
            if first["type"] == "model_type" and not first["loc"]:
                raise ArgumentsInvalid("arguments must be a JSON object") from None
            raise ArgumentsInvalid(_readable(e)) from None

    return run


def build_tool(func: Callable[..., Any], marker: ToolMarker | None = None) -> ToolDef:
    """Inspect a (bound) function once and build its spec, validator and output adapter."""
    marker = marker or getattr(func, MARK, None) or ToolMarker()
    name = marker.name or func.__name__
    doc = parse_docstring(inspect.getdoc(func))
    sig = inspect.signature(func)
    try:
        hints = get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward refs: fall back to raw annotations
        hints = {}
    fields: dict[str, Any] = {}
    ctx_param: str | None = None
    extra: Literal["forbid", "allow"] = "forbid"
    for pname, param in sig.parameters.items():
        annotation = hints.get(pname, param.annotation)
        if annotation is inspect.Parameter.empty:
            annotation = Any
        if _is_context(annotation):
            ctx_param = pname
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = "allow"
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        pdoc = doc.params.get(pname)
        default = ... if param.default is inspect.Parameter.empty else param.default
        if isinstance(default, FieldInfo):
            fields[pname] = (annotation, default)
            continue
        has_desc = get_origin(annotation) is Annotated and any(
            isinstance(a, FieldInfo) and a.description for a in get_args(annotation)[1:]
        )
        desc = pdoc.description if pdoc and not has_desc else None
        fields[pname] = (annotation, Field(default, description=desc) if desc else default)
    model = create_model(f"{name}_arguments", __config__=ConfigDict(extra=extra), **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    ret = hints.get("return", sig.return_annotation)
    kind = _kind(func)
    output: TypeAdapter[Any] | None = None
    output_schema: dict[str, Any] | None = None
    if kind in ("sync", "async") and ret is not inspect.Signature.empty and ret not in _PASSTHROUGH:
        origin = get_origin(ret)
        if origin not in (Iterator, AsyncIterator) and not _returns_content(ret):
            output = TypeAdapter(ret)
            output_schema = output.json_schema()
    spec = ToolSpec(
        name=name,
        description=marker.description or doc.summary,
        input_schema=schema,
        output_schema=output_schema,
        annotations=dict(marker.annotations),
        streaming=kind in ("gen", "agen"),
    )
    return ToolDef(
        spec,
        func,
        kind,
        pydantic_validator(model),
        ctx_param,
        output,
        marker.timeout,
        marker.cacheable,
        pydantic_json_validator(model),
    )


def _is_content(ann: Any) -> bool:
    if ann in _PASSTHROUGH:
        return True
    if get_origin(ann) is list:  # list[Text], list[Text | Image]: content blocks
        (item,) = get_args(ann) or (Any,)
        members = get_args(item) if get_origin(item) is not None else (item,)
        return all(m in _CONTENT_TYPES for m in members)
    return False


def _returns_content(ret: Any) -> bool:
    """True when every member of the return annotation is already model-facing content."""
    members = (
        get_args(ret) if get_origin(ret) is not None and get_origin(ret) is not list else (ret,)
    )
    return all(_is_content(m) for m in members)
