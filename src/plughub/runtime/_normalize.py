"""Turn whatever a tool returned (or yielded) into ``ToolResult`` content."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ValidationError

from ..sdk import Blob, Image, Json, Link, LogEntry, Progress, Text, ToolResult
from ..sdk._tool import ToolDef

__all__ = ["chunk_items", "normalize"]

_CONTENT = (Text, Json, Image, Blob, Link)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def normalize(value: Any, tool: ToolDef) -> ToolResult:
    """Map a return value to a result; validates it against the return annotation if any."""
    if type(value) is str and tool.output is None:
        return ToolResult([Text(value)])
    if isinstance(value, ToolResult):
        return value
    if value is None:
        return ToolResult()
    if isinstance(value, _CONTENT):
        return ToolResult([value])
    if isinstance(value, bytes):
        return ToolResult([Blob(value)])
    if isinstance(value, list) and value and all(isinstance(v, _CONTENT) for v in value):
        return ToolResult(list(value))
    if tool.output is not None:
        try:
            checked = tool.output.validate_python(value)
            structured = tool.output.dump_python(checked, mode="json")
        except ValidationError as e:
            return ToolResult.error(
                f"tool {tool.spec.name!r} returned a value that does not match its declared "
                f"return type: {e.errors(include_url=False)[0]['msg']}",
                "invalid_output",
            )
    else:
        structured = _jsonable(value)
    if isinstance(structured, str):
        return ToolResult([Text(structured)], structured)
    return ToolResult([Json(structured)], structured)


def chunk_items(item: Any) -> list[Any]:
    """Content blocks (or progress events) for one streamed item."""
    if isinstance(item, (Progress, LogEntry)):
        return [item]
    if isinstance(item, str):
        return [Text(item)]
    if isinstance(item, _CONTENT):
        return [item]
    if isinstance(item, bytes):
        return [Blob(item)]
    if isinstance(item, ToolResult):
        return list(item.content)
    return [Json(_jsonable(item))]
