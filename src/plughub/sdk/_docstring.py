"""Google-style docstring parsing: the summary for the tool description, ``Args:`` for params.

Also understands the AI-Dialer seed's ``Context Parameters:`` section, which documents the keys of
the ``context`` dict in the same ``name (type, optional): text`` form.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

__all__ = ["ParamDoc", "ParsedDoc", "parse_docstring"]

_SECTION_RE = re.compile(r"^([A-Z][A-Za-z ]*):\s*$")
_PARAM_SECTIONS = {"args", "arguments", "parameters", "params", "context parameters"}
_PARAM_RE = re.compile(r"^\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


@dataclass(slots=True)
class ParamDoc:
    description: str
    type_hint: str | None = None
    optional: bool = False


@dataclass(slots=True)
class ParsedDoc:
    summary: str = ""
    description: str = ""
    params: dict[str, ParamDoc] = field(default_factory=dict)


def parse_docstring(doc: str | None) -> ParsedDoc:
    """Split a docstring into summary, free text before the first section, and params."""
    if not doc:
        return ParsedDoc()
    lines = inspect.cleandoc(doc).splitlines()
    body: list[str] = []
    params: dict[str, ParamDoc] = {}
    section: str | None = None
    current: str | None = None
    indent: int | None = None
    for raw in lines:
        m = _SECTION_RE.match(raw)
        if m and not raw.startswith(" "):
            section = m.group(1).strip().lower()
            current, indent = None, None
            continue
        if section is None:
            body.append(raw)
            continue
        if section not in _PARAM_SECTIONS or not raw.strip():
            continue
        this_indent = len(raw) - len(raw.lstrip())
        pm = _PARAM_RE.match(raw.strip())
        if pm and (indent is None or this_indent <= indent):
            indent = this_indent
            current = pm.group(1)
            hint = pm.group(2)
            optional = bool(hint and "optional" in hint)
            type_hint = None
            if hint:
                type_hint = ",".join(p for p in hint.split(",") if "optional" not in p).strip()
            params[current] = ParamDoc(pm.group(3).strip(), type_hint or None, optional)
        elif current is not None:
            prev = params[current]
            prev.description = f"{prev.description} {raw.strip()}".strip()
    text = "\n".join(body).strip()
    summary = text.split("\n\n", 1)[0].replace("\n", " ").strip()
    return ParsedDoc(summary, text, params)
