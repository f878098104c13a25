"""``install``, ``upgrade``, ``uninstall``, ``rollback``, ``enable``, ``disable``, ``pin``,
``unpin``, ``cleanup`` and ``search``: installed plugins under the plughub home.

The home is ``PLUGHUB_HOME`` or the platform's user data dir (``plughub.packages.home()``).
Installs print one progress bar per phase on stderr (plain lines when stderr is not a
terminal); the events behind them are the ones ``Installer.install(on_event=...)`` produces.
A failed install exits 1 with the phase, the reason and the tail of the failing tool's log;
refusals (bad source, permissions not granted, not installed) exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ..errors import InstallError
from ..manifest import semver_to_version
from ._common import (
    EXIT_FAILED,
    CliError,
    err_console,
    guarded,
    out_console,
    write_json,
    write_line,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ..packages import Installer, InstallPlan, InstallResult

__all__ = [
    "cleanup_command",
    "disable_command",
    "enable_command",
    "install_command",
    "pin_command",
    "rollback_command",
    "search_command",
    "uninstall_command",
    "unpin_command",
    "upgrade_command",
]

PluginArg = Annotated[str, typer.Argument(metavar="PLUGIN", help="The plugin id (author/name).")]
IndexOpt = Annotated[
    str | None,
    typer.Option(
        "--index",
        metavar="URL",
        help="An index: a folder, an index.json or an http(s) URL (default: PLUGHUB_INDEX).",
    ),
]
GrantOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--grant",
        metavar="TOKEN",
        help="Grant this requested permission (repeatable; e.g. network:api.example.com).",
    ),
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Grant every permission the package requests.")
]
UnsignedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unsigned",
        help="Accept unsigned packages (folder and git sources are always unsigned).",
    ),
]
UntrustedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-untrusted",
        help="Accept packages signed by keys not in the trust store (signature not checked).",
    ),
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never let uv reach a package index.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _installer(
    *,
    allow_unsigned: bool = False,
    allow_untrusted: bool = False,
    offline: bool = False,
    index: str | None = None,
) -> Installer:
    from ..packages import Installer, home

    return Installer(
        home(),
        allow_unsigned=allow_unsigned,
        allow_untrusted=allow_untrusted,
        offline=offline,
        index=index,
    )


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


class _Reporter:
    """Renders install events: rich bars on a terminal, one line per finished phase otherwise."""

    def __init__(self, verbose: bool = False) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

        from ..packages import PHASES

        self.console = err_console()
        self.verbose = verbose
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        if self.console.is_terminal:
            self.progress = Progress(
                SpinnerColumn(finished_text="[green]✓[/]"),
                TextColumn("{task.description:<12}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[msg]}", markup=False),
                console=self.console,
            )
            for phase in PHASES:
                self.tasks[phase] = self.progress.add_task(phase, total=1.0, msg="", start=False)

    @contextmanager
    def running(self) -> Iterator[_Reporter]:
        if self.progress is None:
            yield self
            return
        with self.progress:
            yield self

    def __call__(self, event: dict[str, Any]) -> None:
        phase, status = event["phase"], event["status"]
        message = " ".join(str(event.get("message") or "").split())
        fraction = event.get("fraction")
        if self.progress is not None:
            task = self.tasks[phase]
            if status == "start":
                self.progress.start_task(task)
            update: dict[str, Any] = {"msg": message[:100]}
            if status == "done":
                update["completed"] = 1.0
            elif status == "failed":
                update["msg"] = f"FAILED: {message[:100]}"
            elif fraction is not None:
                update["completed"] = fraction
            self.progress.update(task, **update)
            if status in ("done", "failed"):
                self.progress.stop_task(task)
            return
        if status in ("done", "failed") or (self.verbose and message):
            label = {"done": "ok", "failed": "FAILED"}.get(status, "..")
            self.console.print(f"{phase:<12} {label:<6} {message}", markup=False, highlight=False)


def _report_failure(exc: InstallError) -> typer.Exit:
    console = err_console()
    console.print(f"error: {exc.plugin_id}: {exc.phase} failed: {exc.message}", markup=False)
    if exc.log_tail:
        console.print("--- log (last lines) ---", markup=False)
        console.print(exc.log_tail, markup=False, highlight=False)
    if exc.missing_permissions:
        console.print(
            "grant with: "
            + " ".join(f"--grant {t}" for t in exc.missing_permissions)
            + "  (or --yes)",
            markup=False,
        )
    return typer.Exit(EXIT_FAILED)


def _interactive() -> bool:
    """Whether the operator can be asked (stdin is a terminal)."""
    return sys.stdin.isatty()


def _approve(plan: InstallPlan, grants: list[str], yes: bool) -> set[str]:
    """Show what the package requests; approve it from flags, a prompt, or refuse."""
    console = err_console()
    if plan.requested:
        lines = [f"  {t}" + ("" if t in plan.granted else "  (new)") for t in plan.requested]
        console.print(
            f"{plan.id} {plan.version} requests these permissions:\n" + "\n".join(lines),
            markup=False,
        )
    else:
        console.print(f"{plan.id} {plan.version} requests no permissions", markup=False)
    approved = set(grants)
    uncovered = [t for t in plan.missing if t not in approved]
    if yes or not uncovered:
        return approved
    if _interactive():
        if typer.confirm(f"Grant {', '.join(uncovered)} to {plan.id}?", default=False):
            return approved | set(uncovered)
        raise CliError("nothing installed: the permissions were not granted", EXIT_FAILED)
    raise CliError(
        f"{plan.id} {plan.version} requests permissions that are not granted: "
        f"{', '.join(uncovered)}; pass --grant TOKEN for each, or --yes"
    )


def _print_result(result: InstallResult, as_json: bool) -> None:
    if as_json:
        write_json(result.to_dict())
        return
    if not result.changed:
        write_line(f"{result.id} {result.version} is already installed")
        return
    was = f" (was {result.previous})" if result.previous else ""
    write_line(f"installed {result.id} {result.version}{was} in {result.duration:.2f}s")


# --------------------------------------------------------------------------------------------
# install / upgrade
# --------------------------------------------------------------------------------------------


@guarded
def install_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="A .plughub file, a plugin folder, git+URL#TAG-OR-COMMIT, or "
            "author/name[@VERSION] from an index.",
        ),
    ],
    index: IndexOpt = None,
    grant: GrantOpt = None,
    yes: YesOpt = False,
    allow_unsigned: UnsignedOpt = False,
    allow_untrusted: UntrustedOpt = False,
    offline: OfflineOpt = False,
    examples: Annotated[
        bool, typer.Option("--examples", help="Also run the manifest's examples before activating.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print uv's output lines (without a terminal).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Install a plugin package: verify, unpack, resolve, build its environment, check that it
    loads in a worker, activate.

    The permissions it requests are shown; new ones must be granted (--grant, --yes, or the
    prompt when stdin is a terminal). A failure in any phase leaves nothing installed (exit 1).
    """
    from ..packages import open_source

    installer = _installer(
        allow_unsigned=allow_unsigned, allow_untrusted=allow_untrusted, offline=offline, index=index
    )
    with open_source(source, index=index) as pkg:
        approved = _approve(installer.plan(pkg), grant or [], yes)
        reporter = _Reporter(verbose)
        try:
            with reporter.running():
                result = installer.install(
                    pkg, grant=approved, yes=yes, on_event=reporter, run_examples=examples
                )
        except InstallError as exc:
            raise _report_failure(exc) from None
    _print_result(result, as_json)


@guarded
def upgrade_command(
    plugin: Annotated[
        str | None,
        typer.Argument(metavar="PLUGIN", help="The plugin id; omit with --all."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="SOURCE",
            help="Where the new version is (as for install); default: the newest version in "
            "the index the plugin came from.",
        ),
    ] = None,
    all_plugins: Annotated[
        bool, typer.Option("--all", help="Upgrade every unpinned plugin installed from an index.")
    ] = False,
    grant: GrantOpt = None,
    yes: YesOpt = False,
    allow_unsigned: UnsignedOpt = False,
    allow_untrusted: UntrustedOpt = False,
    offline: OfflineOpt = False,
    examples: Annotated[
        bool,
        typer.Option(
            "--examples/--no-examples", help="Run the manifest's examples before activating."
        ),
    ] = True,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print uv's output lines (without a terminal).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Upgrade a plugin to a newer version; the old one stays installed for rollback.

    If the new version fails its import check or its examples, the previous version stays
    active (exit 1). Pinned plugins are not upgraded. New permissions need a new grant.
    """
    from ..packages import open_source

    installer = _installer(
        allow_unsigned=allow_unsigned, allow_untrusted=allow_untrusted, offline=offline
    )
    if all_plugins == (plugin is not None) or (all_plugins and source is not None):
        raise CliError("name one PLUGIN (optionally with a SOURCE), or pass --all")
    targets: list[tuple[str, str | None]] = []
    if all_plugins:
        for state in installer.installed():
            if state.pinned is None and (state.source or "").startswith("index:"):
                targets.append((state.id, None))
    else:
        assert plugin is not None
        targets.append((plugin, source))
    results: list[InstallResult] = []
    for plugin_id, given in targets:
        spec, index = given, None
        if spec is None:
            found = installer.newer_from_index(plugin_id)
            if found is None:
                current = installer.state(plugin_id).current
                err_console().print(f"{plugin_id} {current} is up to date", markup=False)
                continue
            spec, index = found
        with open_source(spec, index=index) as pkg:
            approved = _approve(installer.plan(pkg), grant or [], yes)
            reporter = _Reporter(verbose)
            try:
                with reporter.running():
                    result = installer.upgrade(
                        plugin_id,
                        pkg,
                        grant=approved,
                        yes=yes,
                        on_event=reporter,
                        run_examples=examples,
                    )
            except InstallError as exc:
                raise _report_failure(exc) from None
        results.append(result)
        if not as_json:
            _print_result(result, False)
    if as_json:
        write_json([r.to_dict() for r in results])


# --------------------------------------------------------------------------------------------
# lifecycle
# --------------------------------------------------------------------------------------------


@guarded
def uninstall_command(
    plugin: PluginArg,
    force: Annotated[
        bool, typer.Option("--force", help="Even if installed plugins depend on it.")
    ] = False,
) -> None:
    """Remove an installed plugin: every version, its grants, state and environments.

    Refused (exit 2) while another installed plugin depends on it, unless --force.
    """
    versions = _installer().uninstall(plugin, force=force)
    write_line(f"uninstalled {plugin} ({', '.join(versions)})")


@guarded
def rollback_command(
    plugin: PluginArg,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="VERSION", help="This installed version (default: previous)."),
    ] = None,
) -> None:
    """Make the previously active installed version active again."""
    version = _installer().rollback(plugin, to)
    write_line(f"{plugin} is at {version}")


@guarded
def enable_command(plugin: PluginArg) -> None:
    """Enable an installed plugin (it loads again)."""
    changed = _installer().enable(plugin)
    write_line(f"{plugin} {'enabled' if changed else 'was already enabled'}")


@guarded
def disable_command(plugin: PluginArg) -> None:
    """Disable an installed plugin: it stays installed and listed, but never loads."""
    changed = _installer().disable(plugin)
    write_line(f"{plugin} {'disabled' if changed else 'was already disabled'}")


@guarded
def pin_command(
    plugin: PluginArg,
    version: Annotated[
        str | None,
        typer.Argument(metavar="VERSION", help="An installed version (default: the active one)."),
    ] = None,
) -> None:
    """Pin a plugin at a version (activating it if needed): upgrades are refused until unpin."""
    pinned = _installer().pin(plugin, version)
    write_line(f"{plugin} is pinned at {pinned}")


@guarded
def unpin_command(plugin: PluginArg) -> None:
    """Allow upgrades of a pinned plugin again."""
    changed = _installer().unpin(plugin)
    write_line(f"{plugin} {'unpinned' if changed else 'was not pinned'}")


@guarded
def cleanup_command(
    plugin: Annotated[
        str | None, typer.Argument(metavar="PLUGIN", help="One plugin (default: all).")
    ] = None,
    keep: Annotated[
        int,
        typer.Option("--keep", metavar="N", help="Inactive versions to keep per plugin."),
    ] = 1,
) -> None:
    """Remove inactive installed versions and their environments (pinned ones are kept)."""
    removed = _installer().cleanup(plugin, keep=keep)
    if not removed:
        write_line("nothing to remove")
    for pid, versions in removed.items():
        write_line(f"{pid}: removed {', '.join(versions)}")


@guarded
def search_command(
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help="Words to find in ids and descriptions.")
    ] = "",
    index: IndexOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search an index for plugins."""
    import os

    from ..packages import load_index

    location = index or os.environ.get("PLUGHUB_INDEX")
    if not location:
        raise CliError("no index: pass --index URL (or set PLUGHUB_INDEX)")
    found = load_index(location).search(query)
    if as_json:
        write_json(
            [
                {
                    "id": e.id,
                    "description": e.description,
                    "latest": e.latest,
                    "versions": sorted(e.versions, key=semver_to_version),
                }
                for e in found
            ]
        )
        return
    if not found:
        err_console().print(f"nothing in {location} matches {query!r}", markup=False)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("latest", no_wrap=True)
    table.add_column("description", overflow="fold")
    for e in found:
        table.add_row(e.id, e.latest or "-", e.description)
    out_console().print(table)
