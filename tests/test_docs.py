"""The docs cover the code: every hook, CLI command, manifest field and public name is documented,
and links between docs pages resolve. Each test fails naming what is missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

import plughub
import plughub.sdk
from plughub.cli import app
from plughub.hookspecs import HOOK_NAMES
from plughub.manifest import (
    Example,
    Expect,
    FieldSpec,
    FilesystemPermissions,
    Limits,
    Permissions,
    PluginManifest,
    PythonSpec,
    ToolDecl,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"
MANIFEST_MODELS: tuple[type[BaseModel], ...] = (
    PluginManifest,
    Permissions,
    FilesystemPermissions,
    Limits,
    FieldSpec,
    PythonSpec,
    Example,
    Expect,
    ToolDecl,
)
# [text](target), also for images; the optional "title" is ignored.
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE_RE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE_RE = re.compile(r"`([^`\n]+)`")


def _read(name: str) -> str:
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing"
    return path.read_text(encoding="utf-8")


def _pages() -> list[Path]:
    pages = sorted(DOCS.rglob("*.md"))
    assert pages, "docs/ holds no Markdown pages"
    return pages


def _headings(text: str, level: int) -> list[str]:
    prefix = "#" * level + " "
    body = FENCE_RE.sub("", text)  # a "## x" line inside a code block is not a heading
    return [line[len(prefix) :].strip() for line in body.splitlines() if line.startswith(prefix)]


def _command_names() -> list[str]:
    names = []
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else None)
        assert name, f"a CLI command has neither a name nor a callback: {info!r}"
        names.append(name.replace("_", "-"))
    for group in app.registered_groups:
        assert group.name, f"a CLI command group has no name: {group!r}"
        names.append(group.name)
    return names


def test_every_hook_has_a_heading_with_its_signature() -> None:
    headings = [h for level in (2, 3) for h in _headings(_read("hooks.md"), level)]
    missing = [n for n in HOOK_NAMES if not any(f"`{n}(" in h for h in headings)]
    assert not missing, f"docs/hooks.md has no heading containing `name(` for: {missing}"


def test_every_cli_command_has_a_section() -> None:
    names = _command_names()
    assert names, "the plughub Typer app registers no commands"
    headings = set(_headings(_read("cli.md"), 2))
    missing = [n for n in names if f"plughub {n}" not in headings]
    assert not missing, f"docs/cli.md has no '## plughub <command>' heading for: {missing}"


@pytest.mark.parametrize("model", MANIFEST_MODELS, ids=lambda m: m.__name__)
def test_every_manifest_field_is_documented(model: type[BaseModel]) -> None:
    text = _read("manifest.md")
    missing = [f for f in model.model_fields if f"`{f}`" not in text]
    assert not missing, f"docs/manifest.md does not mention {model.__name__} fields: {missing}"


def _code_text(text: str) -> str:
    """Code blocks and inline code spans: where an API name counts as documented."""
    blocks = [m.group(0) for m in FENCE_RE.finditer(text)]
    spans = INLINE_CODE_RE.findall(FENCE_RE.sub("", text))
    return "\n".join([*blocks, *spans])


def test_every_public_name_is_mentioned_somewhere_in_the_docs() -> None:
    code = "\n".join(_code_text(p.read_text(encoding="utf-8")) for p in _pages())
    names = sorted({n for n in (*plughub.sdk.__all__, *plughub.__all__) if not n.startswith("__")})
    missing = [n for n in names if not re.search(rf"\b{re.escape(n)}\b", code)]
    assert not missing, f"public names not mentioned (as code) anywhere in docs/: {missing}"


def test_relative_links_between_docs_resolve() -> None:
    broken = []
    for page in _pages():
        body = FENCE_RE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK_RE.findall(body):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                continue  # external URL, mailto:, or an anchor on the same page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(DOCS)} -> {target}")
    assert not broken, f"broken relative links: {broken}"


def test_every_worker_config_field_is_documented() -> None:
    from dataclasses import fields

    from plughub.runtime.worker import WorkerConfig

    text = _read("operators/workers.md")
    missing = [f.name for f in fields(WorkerConfig) if f"`{f.name}`" not in text]
    assert not missing, f"docs/operators/workers.md does not mention WorkerConfig fields: {missing}"


def test_every_worker_reason_code_is_in_troubleshooting() -> None:
    """Each ``ToolResult.error(message, "reason")`` in the worker runtime has an entry."""
    import ast

    src = Path(plughub.__file__).resolve().parent / "runtime" / "worker"
    reasons = set()
    for file in sorted(src.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "error"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "ToolResult"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                reasons.add(node.args[1].value)
    assert reasons, f"found no ToolResult.error(..., reason) calls under {src}"
    text = _read("troubleshooting.md")
    missing = sorted(r for r in reasons if f"`{r}`" not in text)
    assert not missing, f"docs/troubleshooting.md does not explain worker reason codes: {missing}"
