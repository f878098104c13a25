"""The ``plughub`` Typer app: global options on the callback, one module per command family."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ._catalog import info_command, list_command, tools_command
from ._check import check_command
from ._common import State, quiet_logs, write_line
from ._invoke import invoke_command
from ._lifecycle import (
    cleanup_command,
    disable_command,
    enable_command,
    install_command,
    pin_command,
    rollback_command,
    search_command,
    uninstall_command,
    unpin_command,
    upgrade_command,
)
from ._packaging import keys_app, package_command, verify_command
from ._scaffold import new_command
from ._serve import serve_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="plughub",
    help="Write a tool once; run it in-process, in a worker, over HTTP or MCP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


@app.callback()
def _options(
    ctx: typer.Context,
    plugins_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--plugins-dir",
            metavar="PATH",
            help="A plugins folder or one plugin's folder (repeatable; PLUGHUB_PLUGINS_PATH "
            "adds more).",
        ),
    ] = None,
    entry_points: Annotated[
        bool,
        typer.Option(
            "--entry-points/--no-entry-points",
            help="Also load plugins installed as 'plughub.plugins' entry points.",
        ),
    ] = True,
    allow: Annotated[
        str | None,
        typer.Option(
            "--allow",
            metavar="IDS",
            help="Only these plugin ids/names/globs may load, comma-separated "
            "(default: PLUGHUB_LOAD_PLUGINS, else all).",
        ),
    ] = None,
    deny: Annotated[
        str | None,
        typer.Option("--deny", metavar="IDS", help="These plugins never load, comma-separated."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", metavar="DIR", help="Where plugin storage lives (in memory when unset)."
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show plughub's log messages on stderr.")
    ] = False,
) -> None:
    """Options shared by every command; the plugin host is built only when a command needs it."""
    state = State(
        plugins_dirs=list(plugins_dir or []),
        entry_points=entry_points,
        allow=_split(allow),
        deny=_split(deny) or [],
        data_dir=data_dir,
    )
    ctx.obj = state
    ctx.call_on_close(state.close)
    quiet_logs(ctx, verbose)


def version_command() -> None:
    """Print the plughub version."""
    write_line(f"plughub {__version__}")


app.command("list")(list_command)
app.command("info")(info_command)
app.command("tools")(tools_command)
app.command("invoke")(invoke_command)
app.command("new")(new_command)
app.command("test")(check_command)
app.command("version")(version_command)
app.command("package")(package_command)
app.command("verify")(verify_command)
app.add_typer(keys_app, name="keys")
app.command("install")(install_command)
app.command("upgrade")(upgrade_command)
app.command("uninstall")(uninstall_command)
app.command("rollback")(rollback_command)
app.command("enable")(enable_command)
app.command("disable")(disable_command)
app.command("pin")(pin_command)
app.command("unpin")(unpin_command)
app.command("cleanup")(cleanup_command)
app.command("search")(search_command)
app.command("serve")(serve_command)


def main() -> None:
    """Console-script entry point (``plughub``)."""
    try:
        app(prog_name="plughub")
    except BrokenPipeError:  # `plughub tools | head`: the reader left, nothing to report
        raise SystemExit(1) from None
