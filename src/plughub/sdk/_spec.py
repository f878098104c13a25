"""The canonical description of a tool, from which every LLM/MCP format is derived."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ToolSpec"]


@dataclass(slots=True)
class ToolSpec:
    """One tool as the host sees it, independent of any provider's format.

    ``input_schema`` is JSON Schema (2020-12) for the arguments object; ``output_schema`` is the
    schema of ``ToolResult.structured`` when the tool declares one. ``annotations`` carries
    MCP-style hints (``title``, ``read_only``, ``destructive``, ``idempotent``, ``open_world``).
    """

    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] = field(default_factory=dict)
    streaming: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "annotations": self.annotations,
            "streaming": self.streaming,
        }
