"""``invoke``: call one tool from the shell, with arguments as JSON and/or ``key=value`` pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..sdk import LogEntry, Progress, ToolResult
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    err_console,
    guarded,
    state_of,
    write_json,
    write_line,
)

__all__ = ["MAX_ARGS_BYTES", "invoke_command", "parse_args", "parse_pairs", "result_json"]

#: Largest ``--args`` input accepted, whatever its source (inline, file or stdin).
MAX_ARGS_BYTES = 16 * 1024 * 1024

#: Tool-result reasons that mean the *caller* sent bad input: exit 2, like a usage error.
USAGE_REASONS = frozenset({"invalid_arguments"})


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    """Strict JSON: no ``NaN``/``Infinity`` (other JSON parsers would reject them)."""
    return json.loads(text, parse_constant=_no_constants)


def _read_limited(source: str) -> bytes:
    """The raw bytes of ``--args``: inline text, ``@file`` or ``-`` (stdin), capped in size."""
    if source == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text-only stdin (some embedders): measure its UTF-8 size
            return sys.stdin.read(MAX_ARGS_BYTES + 1).encode("utf-8", "surrogateescape")
        data: bytes = stream.read(MAX_ARGS_BYTES + 1)
        return data
    if source.startswith("@"):
        path = Path(source[1:])
        if not source[1:]:
            raise CliError("--args @FILE needs a file name")
        try:
            if path.stat().st_size > MAX_ARGS_BYTES:
                raise CliError(f"--args file {path} is larger than {MAX_ARGS_BYTES} bytes")
            with path.open("rb") as fh:
                return fh.read(MAX_ARGS_BYTES + 1)
        except OSError as exc:
            raise CliError(f"cannot read --args file {path}: {exc.strerror or exc}") from None
    return source.encode("utf-8", "surrogateescape")


def parse_args(source: str | None) -> dict[str, Any]:
    """``--args`` as a dict: must be a JSON object of at most ``MAX_ARGS_BYTES`` UTF-8 bytes."""
    if source is None:
        return {}
    raw = _read_limited(source)
    if len(raw) > MAX_ARGS_BYTES:
        raise CliError(f"--args is larger than {MAX_ARGS_BYTES} bytes (16 MiB)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"--args is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise CliError("--args is empty; pass a JSON object such as '{}'")
    try:
        value = _loads(text)
    except (ValueError, RecursionError) as exc:
        raise CliError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"--args must be a JSON object, not {type(value).__name__}")
    return value


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value is JSON when it parses (``n=3``, ``ok=true``), else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"expected key=value, got {pair!r}")
        if not key:
            raise CliError(f"missing key in {pair!r}")
        try:
            out[key] = _loads(value)
        except (ValueError, RecursionError):
            out[key] = value
    return out


def result_json(result: ToolResult) -> dict[str, Any]:
    """The documented ``--json`` shape: is_error, content, structured (+ reason on errors)."""
    full = result.to_dict()
    out = {k: full[k] for k in ("is_error", "content", "structured")}
    if result.is_error:
        out["reason"] = result.reason
    return out


def _exit_code(result: ToolResult) -> int:
    if not result.is_error:
        return EXIT_OK
    return EXIT_USAGE if result.reason in USAGE_REASONS else EXIT_FAILED


def _block_text(block: Any) -> str:
    return ToolResult([block]).text


@guarded
def invoke_command(
    ctx: typer.Context,
    plugin: Annotated[
        str,
        typer.Argument(
            metavar="PLUGIN",
            help="Plugin id/name/alias, or plugin.tool, or plugin__tool (LLM name).",
        ),
    ],
    rest: Annotated[
        list[str] | None,
        typer.Argument(
            help="[TOOL] then key=value pairs. An item containing '=' is always a pair, never "
            "TOOL; values are JSON when they parse (n=3, ok=true, tags='[\"a\"]'), else text.",
            metavar="[TOOL] [KEY=VALUE]",
        ),
    ] = None,
    args: Annotated[
        str | None,
        typer.Option(
            "--args",
            "-a",
            metavar="JSON|@FILE|-",
            help="Arguments as a JSON object; @FILE reads a file, - reads stdin (max 16 MiB). "
            "key=value pairs override its keys.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"is_error", "content", "structured"} (+ "reason" on errors); '
            "with --stream, one JSON line per event.",
        ),
    ] = False,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print progress, logs and chunks as they happen.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="SECONDS", help="Seconds before the call is cancelled."),
    ] = None,
) -> None:
    """Call a tool and print its result.

    TOOL may be left out when the plugin has a single tool. Output: the result's text on
    stdout (on an error result its reason also goes to stderr); with --json the result object;
    with --stream --json, NDJSON events ({"type": "progress"|"log"|"text"|...}) ending with
    {"type": "result", ...}.

    Exit codes: 0 success; 1 the tool returned an error result (tool_error, exception,
    timeout, permission_denied, rate_limited...); 2 bad usage or input: invalid --args JSON,
    unknown plugin or tool, a plugin that failed to load, or arguments the tool's schema
    rejects (reason invalid_arguments).
    """
    items = list(rest or [])
    tool = items.pop(0) if items and "=" not in items[0] else None
    call_args = {**parse_args(args), **parse_pairs(items)}
    if timeout is not None and not timeout > 0:
        raise CliError("--timeout must be a positive number of seconds")
    host = state_of(ctx).host
    bound = host.resolve(plugin, tool)
    # Serialised so that the plugin's own max_argument_bytes limit applies to CLI calls too.
    payload = json.dumps(call_args, ensure_ascii=False).encode("utf-8")
    label = f"{bound.plugin_id}.{bound.name}"
    if stream:
        result = _stream(
            host.stream(bound.plugin_id, bound.name, payload, timeout=timeout), as_json
        )
    else:
        result = host.invoke(bound.plugin_id, bound.name, payload, timeout=timeout)
        if as_json:
            write_json(result_json(result))
        elif result.content:
            write_line(result.text)
    if result.is_error:
        sys.stderr.write(f"error: {label} returned an error ({result.reason})\n")
        sys.stderr.flush()
    raise typer.Exit(_exit_code(result))


def _stream(events: Any, as_json: bool) -> ToolResult:
    """Print events as they arrive; returns the final result."""
    console = err_console()
    shown: list[Any] = []
    for event in events:
        if isinstance(event, ToolResult):
            if as_json:
                write_json({"type": "result", **result_json(event)}, indent=None)
            else:
                streamed = len(shown) if event.content[: len(shown)] == shown else 0
                if event.content[streamed:]:
                    write_line(ToolResult(event.content[streamed:]).text)
            return event
        if as_json:
            write_json(event.to_dict(), indent=None)
        elif isinstance(event, Progress):
            console.print(_progress_line(event), style="dim", markup=False)
        elif isinstance(event, LogEntry):
            console.print(f"[{event.level}] {event.message}", style="dim", markup=False)
        else:
            shown.append(event)
            write_line(_block_text(event))
    raise CliError("the call ended without a result", EXIT_FAILED)


def _progress_line(p: Progress) -> str:
    if p.total:
        width = 20
        done = max(0, min(width, round(width * p.progress / p.total)))
        head = f"[{'#' * done}{'.' * (width - done)}] {p.progress:g}/{p.total:g}"
    else:
        head = f"progress {p.progress:g}"
    return f"{head} {p.message}" if p.message else head
