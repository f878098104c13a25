"""``test``: run a plugin's manifest examples, then its own pytest suite.

Examples are judged by :meth:`plughub.testing.PluginHarness.run_examples`, the same code plugin
authors call from pytest, so the CLI and the author's tests cannot disagree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ..errors import PluginLoadError
from ..testing import ExampleOutcome, load_plugin
from ._common import EXIT_FAILED, EXIT_OK, CliError, err_console, guarded, out_console, write_json

__all__ = ["check_command", "run_pytest"]

#: pytest's "no tests were collected": a plugin without tests has nothing failing.
PYTEST_NO_TESTS = 5


def run_pytest(tests: Path, keyword: str | None, out: IO[str]) -> int:
    """Run ``python -m pytest tests -q`` in the plugin folder, copying its output as it comes."""
    tests = tests.resolve()
    cmd = [sys.executable, "-m", "pytest", str(tests), "-q", "-p", "no:cacheprovider"]
    if keyword:
        cmd += ["-k", keyword]
    with subprocess.Popen(
        cmd, cwd=tests.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line.decode("utf-8", "replace"))
            out.flush()
    return proc.returncode


def _table(outcomes: list[ExampleOutcome]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("example", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("details")
    for o in outcomes:
        verdict = Text("pass", style="green") if o.passed else Text("FAIL", style="bold red")
        table.add_row(o.label, verdict, "; ".join(o.problems))
    return table


@guarded
def check_command(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="The plugin folder (or a single-file plugin).")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON report; pytest output goes to stderr.")
    ] = False,
    keyword: Annotated[
        str | None,
        typer.Option(
            "-k",
            metavar="EXPR",
            help="Only examples whose label (tool[index]) matches this pytest-style expression; "
            "also passed to pytest.",
        ),
    ] = None,
) -> None:
    """Check a plugin: call each manifest example and compare with its `expect`, then run
    `python -m pytest PATH/tests` when that folder exists.

    Exit codes: 0 when every example passes and pytest passes (or collects no tests); 1 when an
    example fails, pytest fails, or the plugin does not load; 2 when PATH holds no single plugin.
    The environment's PLUGHUB_PLUGINS_PATH / PLUGHUB_LOAD_PLUGINS are ignored.
    """
    if not path.exists():
        raise CliError(f"{path} does not exist")
    report: dict[str, Any] = {"path": str(path), "plugin": None, "load_error": None}
    outcomes: list[ExampleOutcome] = []
    console = err_console() if as_json else out_console()
    try:
        with load_plugin(path) as harness:
            report["plugin"] = harness.id
            outcomes = harness.run_examples(keyword)
            declared = bool(harness.examples)
    except PluginLoadError as exc:
        report["plugin"] = exc.plugin
        report["load_error"] = str(exc)
        declared = False
        console.print(Text(f"error: {exc}", style="red"))
    else:
        if not declared:
            console.print(f"{harness.id}: no examples declared", markup=False)
        elif not outcomes:
            console.print(f"{harness.id}: no example matches -k {keyword!r}", markup=False)
        else:
            console.print(Text(f"{harness.id}: examples", style="bold"))
            console.print(_table(outcomes))

    tests_dir = (path if path.is_dir() else path.parent) / "tests"
    pytest_code: int | None = None
    if tests_dir.is_dir():
        console.print(Text(f"running pytest {tests_dir}", style="bold"))
        pytest_code = run_pytest(tests_dir, keyword, sys.stderr if as_json else sys.stdout)

    examples_ok = report["load_error"] is None and all(o.passed for o in outcomes)
    pytest_ok = pytest_code in (None, 0, PYTEST_NO_TESTS)
    passed = examples_ok and pytest_ok
    if as_json:
        report.update(
            examples=[o.to_dict() for o in outcomes],
            pytest={"ran": pytest_code is not None, "exit_code": pytest_code, "passed": pytest_ok},
            passed=passed,
        )
        write_json(report)
    else:
        failed = sum(not o.passed for o in outcomes)
        summary = f"{len(outcomes) - failed}/{len(outcomes)} examples passed"
        if pytest_code is not None:
            summary += ", pytest " + ("passed" if pytest_ok else f"failed (exit {pytest_code})")
        console.print(Text(summary, style="green" if passed else "bold red"))
    raise typer.Exit(EXIT_OK if passed else EXIT_FAILED)
