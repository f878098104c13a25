"""``serve``: run the HTTP daemon (``plughub.server``) with uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import EXIT_FAILED, CliError, guarded, state_of, write_json

__all__ = ["serve_command"]

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO}


def _explicit(ctx: typer.Context, name: str) -> bool:
    """Whether a global option was given on the command line (not just its default)."""
    parent = ctx.parent
    source = parent.get_parameter_source(name) if parent is not None else None
    return source is not None and source.name == "COMMANDLINE"


def _log_to_stderr(level: str) -> None:
    logger = logging.getLogger("plughub")
    if any(type(h) is logging.StreamHandler and h.stream is sys.stderr for h in logger.handlers):
        return  # --verbose already shows them
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(_LEVELS.get(level, logging.WARNING))


@guarded
def serve_command(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option("--host", metavar="ADDR", help="Interface to bind [default: 127.0.0.1]."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", metavar="PORT", help="TCP port; 0 picks a free one [default: 8787]."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="Server settings (.yaml, .toml or .json); PLUGHUB_* variables override it.",
        ),
    ] = None,
    plugins_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--plugins-dir",
            metavar="PATH",
            help="A plugins folder to serve (repeatable; added to the config file's).",
        ),
    ] = None,
    openapi: Annotated[
        bool,
        typer.Option("--openapi", help="Print the OpenAPI document as JSON and exit."),
    ] = False,
) -> None:
    """Serve the plugins over HTTP: the /v1 API, /metrics, AI-Dialer and Dify endpoints."""
    from ..host._installed import default_home
    from ..server import create_app, load_config, run

    state = state_of(ctx)
    overrides: dict[str, Any] = {"host": host, "port": port}
    if _explicit(ctx, "allow"):
        overrides["allow"] = state.allow
    if _explicit(ctx, "deny"):
        overrides["deny"] = state.deny
    if _explicit(ctx, "data_dir"):
        overrides["data_dir"] = state.data_dir
    if _explicit(ctx, "entry_points"):
        overrides["entry_points"] = state.entry_points
    cfg = load_config(config, **overrides)
    extra = [*state.plugins_dirs, *(plugins_dir or [])]
    if extra:
        cfg = cfg.model_copy(update={"plugins_dirs": [*cfg.plugins_dirs, *extra]})
    for folder in cfg.plugins_dirs:
        if not folder.exists():
            raise CliError(f"plugins folder {str(folder)!r} does not exist")
    if cfg.home is None:
        cfg = cfg.model_copy(update={"home": default_home()})
    if openapi:
        write_json(create_app(cfg).openapi())
        return
    _log_to_stderr(cfg.log_level)
    if not run(cfg):
        raise typer.Exit(EXIT_FAILED)
