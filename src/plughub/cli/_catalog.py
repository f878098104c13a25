"""``list``, ``info`` and ``tools``: what plugins exist and what their tools look like."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from ..host import FORMATS, PluginHost, PluginInfo, llm_name
from ._common import (
    EXIT_USAGE,
    CliError,
    err_console,
    fail,
    guarded,
    out_console,
    state_of,
    write_json,
)

__all__ = ["info_command", "list_command", "tools_command"]

_STATUS_STYLE = {
    "loaded": "green",
    "available": "cyan",
    "failed": "red",
    "denied": "yellow",
    "disabled": "yellow",
}


def _short(text: str | None, limit: int = 80) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@guarded
def list_command(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print PluginInfo objects as JSON.")
    ] = False,
    load: Annotated[
        bool, typer.Option("--load", help="Import every plugin to list its tools and load errors.")
    ] = False,
) -> None:
    """List discovered and installed plugins.

    By default no plugin code is imported (fast and safe: only manifests are read), so tools
    are shown as "-"; pass --load to import them all and see their tools and load errors.
    Installed plugins (plughub install) also show where they came from and what was granted.
    """
    host = state_of(ctx).host
    infos = host.load_all() if load else host.plugins()
    if as_json:
        write_json([i.to_dict() for i in infos])
        return
    if not infos:
        err_console().print(
            "no plugins found (use --plugins-dir or PLUGHUB_PLUGINS_PATH, or plughub install)"
        )
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("style", no_wrap=True)
    table.add_column("runtime", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("tools", justify="right", no_wrap=True)
    table.add_column("error", overflow="ellipsis")
    for i in infos:
        table.add_row(
            i.id,
            i.version,
            i.style,
            i.runtime if i.worker is None else f"{i.runtime} ({i.worker['state']})",
            Text(i.status, style=_STATUS_STYLE.get(i.status, "")),
            "-" if i.tools is None else str(len(i.tools)),
            _short(i.error),
        )
    out_console().print(table)
    _print_installed(state_of(ctx).host, infos)


def _print_installed(host: PluginHost, infos: list[PluginInfo]) -> None:
    """A second table for installed plugins: where each came from and what it was granted."""
    if host.home is None:
        return
    from ..host._installed import read_installed

    installed = {p.id: p for p in read_installed(host.home)}
    rows = [i for i in infos if i.source.startswith("installed:") and i.id in installed]
    if not rows:
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    table.add_column("installed", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("pinned", no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("granted", overflow="fold")
    for i in rows:
        inst = installed[i.id]
        table.add_row(
            i.id,
            i.version,
            Text(i.status, style=_STATUS_STYLE.get(i.status, "")),
            "yes" if inst.pinned else "",
            inst.source,
            ", ".join(i.granted or []) or "none",
        )
    console = out_console()
    console.print()
    console.print(table)


def _specs(host: PluginHost, info: PluginInfo) -> list[dict[str, Any]]:
    return [host.resolve(info.id, name).tool.spec.to_dict() for name in info.tools or []]


@guarded
def info_command(
    ctx: typer.Context,
    plugin: Annotated[str, typer.Argument(metavar="PLUGIN", help="Plugin id, name or alias.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show one plugin: status, permissions, and each tool's description and input schema.

    Loads the plugin. Exits 2 (after printing what is known) when it is failed or denied.
    """
    host = state_of(ctx).host
    info = host.plugin(plugin)
    specs = _specs(host, info) if info.status == "loaded" else []
    if as_json:
        write_json({**info.to_dict(), "specs": specs})
    else:
        _render_info(info, specs)
    if info.status != "loaded":
        raise fail(f"plugin {info.id} is not usable ({info.status}): {info.error}", EXIT_USAGE)


def _render_info(info: PluginInfo, specs: list[dict[str, Any]]) -> None:
    console = out_console()
    console.print(Text(f"{info.id} {info.version}", style="bold"))
    if info.description:
        console.print(info.description)
    meta = Table.grid(padding=(0, 2))
    meta.add_row("status", Text(info.status, style=_STATUS_STYLE.get(info.status, "")))
    meta.add_row("style", info.style)
    meta.add_row("runtime", info.runtime)
    if info.worker is not None:
        w = info.worker
        meta.add_row(
            "worker",
            f"{w['state']} (pid {w['pid']}, restarts {w['restarts']})"
            + (f", last error: {w['last_error']}" if w.get("last_error") else ""),
        )
        box = w.get("sandbox") or {}
        if box:
            meta.add_row(
                "sandbox",
                f"network: {box.get('network_isolated')}; files: {box.get('filesystem')}; "
                + ", ".join(f"{k}={v}" for k, v in (box.get("rlimits") or {}).items()),
            )
    meta.add_row("source", info.source)
    meta.add_row("permissions", ", ".join(info.permissions) or "none")
    if info.granted is not None:
        meta.add_row("granted", ", ".join(info.granted) or "none")
    if info.aliases:
        meta.add_row("aliases", ", ".join(info.aliases))
    if info.error:
        meta.add_row("error", Text(info.error, style="red"))
    console.print(meta)
    for spec in specs:
        console.print()
        title = f"{spec['name']}  ({llm_name(info.name, spec['name'])})"
        console.print(Text(title, style="bold cyan"))
        if spec["description"]:
            console.print(spec["description"])
        console.print(JSON.from_data(spec["input_schema"]))


@guarded
def tools_command(
    ctx: typer.Context,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", metavar="FORMAT", help=f"Tool format: {', '.join(FORMATS)}."
        ),
    ] = "openai",
    plugins: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin", "-p", metavar="PLUGIN", help="Only this plugin's tools (repeatable)."
        ),
    ] = None,
    strict: Annotated[
        bool | None,
        typer.Option(
            "--strict/--no-strict",
            help="openai/responses only: demand (or never use) strict mode; "
            "default: strict where it is lossless.",
        ),
    ] = None,
) -> None:
    """Print tool definitions as a JSON list, ready to send to an LLM API or an MCP client."""
    if fmt not in FORMATS:
        raise CliError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    kw: dict[str, Any] = {}
    if strict is not None:
        if fmt not in ("openai", "responses"):
            raise CliError("--strict/--no-strict only applies to the openai and responses formats")
        kw["strict"] = strict
    host = state_of(ctx).host
    try:
        if plugins:
            _check_usable(host, plugins)
            tools = host.export_tools(fmt, plugins=plugins, **kw)
        else:
            tools = host.export_tools(fmt, **kw)
            for info in host.plugins():
                if info.status == "failed":
                    err_console().print(
                        f"warning: plugin {info.id}: {_short(info.error, 200)}",
                        markup=False,
                    )
    except ValueError as exc:  # strict mode impossible, clashing names
        raise CliError(str(exc)) from None
    write_json(tools)


def _check_usable(host: PluginHost, refs: list[str]) -> None:
    """Refuse plugins that cannot be exported (imports only the named ones)."""
    for ref in refs:
        info = host.plugin(ref)
        if info.status != "loaded":
            raise CliError(f"plugin {info.id} is not usable ({info.status}): {info.error}")
