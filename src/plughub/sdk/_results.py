"""Result and event types a tool produces.

Content classes are plain (not frozen) slotted dataclasses: a frozen dataclass's ``__init__``
goes through ``object.__setattr__`` and costs several times more on the hot path.

A tool may return plain Python values; the host normalises them into a ``ToolResult``. Content
blocks mirror MCP's (text, image, embedded resource, link) plus ``Json``, because models read
text while programs want data: ``content`` is for the model, ``structured`` is for code.
"""

from __future__ import annotations

import base64
import json as _json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

__all__ = [
    "Blob",
    "Content",
    "Image",
    "Json",
    "Link",
    "LogEntry",
    "Progress",
    "Text",
    "ToolError",
    "ToolResult",
    "content_from_dict",
]


@dataclass(slots=True)
class Text:
    """Plain text for the model."""

    text: str
    type: ClassVar[Literal["text"]] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(slots=True)
class Json:
    """JSON-able data; rendered as compact JSON text for models that only read text."""

    data: Any
    type: ClassVar[Literal["json"]] = "json"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "json", "data": self.data}

    def as_text(self) -> str:
        return _json.dumps(self.data, ensure_ascii=False, default=str)


@dataclass(slots=True)
class Image:
    """An image; ``data`` is raw bytes (base64 only on the wire)."""

    data: bytes
    mime_type: str = "image/png"
    type: ClassVar[Literal["image"]] = "image"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "image",
            "mime_type": self.mime_type,
            "data": base64.b64encode(self.data).decode("ascii"),
        }


@dataclass(slots=True)
class Blob:
    """A file or binary payload with an optional file name."""

    data: bytes
    mime_type: str = "application/octet-stream"
    filename: str | None = None
    type: ClassVar[Literal["blob"]] = "blob"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "blob",
            "mime_type": self.mime_type,
            "data": base64.b64encode(self.data).decode("ascii"),
        }
        if self.filename is not None:
            out["filename"] = self.filename
        return out


@dataclass(slots=True)
class Link:
    """A link the model or user can follow."""

    url: str
    title: str | None = None
    type: ClassVar[Literal["link"]] = "link"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "link", "url": self.url}
        if self.title is not None:
            out["title"] = self.title
        return out


Content = Text | Json | Image | Blob | Link


def content_from_dict(d: dict[str, Any]) -> Content:
    """Inverse of ``to_dict``; used by runtimes that receive results over a wire."""
    kind = d.get("type")
    if kind == "text":
        return Text(str(d["text"]))
    if kind == "json":
        return Json(d.get("data"))
    if kind == "image":
        return Image(base64.b64decode(d["data"]), d.get("mime_type", "image/png"))
    if kind == "blob":
        return Blob(
            base64.b64decode(d["data"]),
            d.get("mime_type", "application/octet-stream"),
            d.get("filename"),
        )
    if kind == "link":
        return Link(str(d["url"]), d.get("title"))
    raise ValueError(f"unknown content type {kind!r}")


@dataclass(slots=True, init=False)
class ToolResult:
    """What a tool call produced.

    ``is_error`` marks a failure the caller (or a model) should read; ``reason`` is a stable
    machine-readable code for it (``invalid_arguments``, ``tool_error``, ``exception``,
    ``timeout``, ``permission_denied``, ``missing_credentials``, ``rate_limited``,
    ``denied_by_policy`` or a hook's own code, ``policy_error``, ``invalid_output``, ``busy``),
    so that any refusal can be explained later.
    """

    content: list[Content]
    structured: Any
    is_error: bool
    reason: str | None
    meta: dict[str, Any]

    def __init__(
        self,
        content: list[Content] | None = None,
        structured: Any = None,
        is_error: bool = False,
        reason: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        # Hand-written: dataclass default factories cost ~0.2 us per result on the hot path.
        self.content = [] if content is None else content
        self.structured = structured
        self.is_error = is_error
        self.reason = reason
        self.meta = {} if meta is None else meta

    @classmethod
    def error(cls, message: str, reason: str, **meta: Any) -> ToolResult:
        return cls([Text(message)], None, True, reason, meta)

    @property
    def text(self) -> str:
        """All content as text, the way a text-only model would see it."""
        parts: list[str] = []
        for c in self.content:
            if isinstance(c, Text):
                parts.append(c.text)
            elif isinstance(c, Json):
                parts.append(c.as_text())
            elif isinstance(c, Link):
                parts.append(c.url if c.title is None else f"{c.title}: {c.url}")
            else:
                parts.append(f"[{c.type} {c.mime_type}, {len(c.data)} bytes]")
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "is_error": self.is_error,
            "content": [c.to_dict() for c in self.content],
            "structured": self.structured,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.meta:
            out["meta"] = self.meta
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolResult:
        return cls(
            [content_from_dict(c) for c in d.get("content", [])],
            d.get("structured"),
            bool(d.get("is_error", False)),
            d.get("reason"),
            dict(d.get("meta") or {}),
        )


@dataclass(slots=True, frozen=True)
class Progress:
    """A progress report from a running tool (``total`` may be unknown)."""

    progress: float
    total: float | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "progress",
            "progress": self.progress,
            "total": self.total,
            "message": self.message,
        }


@dataclass(slots=True, frozen=True)
class LogEntry:
    """A log record a tool emitted through ``ctx.log``; never part of the result."""

    level: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "log", "level": self.level, "message": self.message}


class ToolError(Exception):
    """Raise from a tool to report a failure the caller should read (``is_error`` result).

    Unlike any other exception, its message is shown as written, with no traceback.
    ``reason`` is the result's machine-readable code (``tool_error`` unless a more precise one
    applies, e.g. ``not_found``); ``data`` becomes the result's ``structured`` value.
    """

    def __init__(self, message: str, *, data: Any = None, reason: str = "tool_error") -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        self.reason = reason
