"""What every command shares: the lazily built host, error-to-exit-code mapping, output helpers.

Commands never print tracebacks for expected failures: a :class:`CliError` or any
:class:`~plughub.errors.PlughubError` becomes one line on stderr and exit code 2 (bad usage or
input); code 1 is reserved for "the thing you ran failed" (a tool error, a failing test).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from ..errors import PlughubError
from ..host import PluginHost

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "State",
    "err_console",
    "fail",
    "guarded",
    "one_line",
    "out_console",
    "state_of",
    "write_json",
    "write_line",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    """An expected failure: printed as one line, mapped to ``code`` (default 2, bad usage)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def out_console() -> Console:
    """A console on the *current* stdout (test runners swap it), never soft-wrapping data."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def err_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def one_line(text: str) -> str:
    """Multi-line messages (manifest problems) joined so each error stays on one line."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``error: message`` to stderr and return the ``Exit`` to raise."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected exceptions into a one-line message and an exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            raise fail(str(exc), exc.code) from None
        except PlughubError as exc:
            raise fail(str(exc), EXIT_USAGE) from None

    return wrapper


def _ascii_only() -> bool:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return encoding not in ("utf8", "utf8sig")


def write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def write_json(data: Any, *, indent: int | None = 2) -> None:
    """JSON on stdout; escaped to ASCII when stdout cannot encode everything."""
    write_line(json.dumps(data, indent=indent, ensure_ascii=_ascii_only(), default=str))


@dataclass(slots=True)
class State:
    """Global options, and the host built from them on first use (``new`` never needs one)."""

    plugins_dirs: list[Path] = field(default_factory=list)
    entry_points: bool = True
    allow: list[str] | None = None
    deny: list[str] = field(default_factory=list)
    data_dir: Path | None = None
    home: Path | None = None
    """The plughub home whose installed plugins are served (default: ``PLUGHUB_HOME`` or the
    platform's user data dir); it is also the data dir unless ``--data-dir`` says otherwise."""
    _host: PluginHost | None = None

    @property
    def host(self) -> PluginHost:
        if self._host is None:
            from ..host._installed import default_home

            self._host = PluginHost(
                self.plugins_dirs,
                entry_points=self.entry_points,
                allow=self.allow,
                deny=self.deny,
                data_dir=self.data_dir,
                home=self.home if self.home is not None else default_home(),
            )
        return self._host

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None


def state_of(ctx: typer.Context) -> State:
    obj = ctx.find_object(State)
    return obj if obj is not None else State()


def quiet_logs(ctx: typer.Context, verbose: bool) -> None:
    """Route plughub's log records for the duration of one command.

    Without ``--verbose`` they are dropped (commands report plugin failures themselves, and a
    tool's traceback must not leak into a CLI's stderr); with it they go to stderr.
    """
    logger = logging.getLogger("plughub")
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    old_level = logger.level
    logger.addHandler(handler)
    if verbose:
        logger.setLevel(logging.DEBUG)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    ctx.call_on_close(restore)
