"""Every exception plughub raises, in one place.

Tool *failures* are not exceptions: a tool that raises, times out or gets bad arguments yields a
``ToolResult`` with ``is_error=True`` that a model can read. The classes below are for callers
who misuse the host, for broken plugins, and for infrastructure faults.

Exception tree::

    PlughubError                    base of everything below
    ├── ManifestError               a plugin.yaml is invalid; names file, field and line
    ├── PluginError                 something is wrong with one plugin (carries ``plugin``)
    │   ├── PluginLoadError         its code failed to import or to build its tools
    │   ├── PluginNotFound          no plugin by that id, name or alias
    │   ├── CredentialsInvalid      credentials the plugin's checks refused (never their values)
    │   └── PluginDisabled          it exists but is denied, disabled or failed to load
    │       └── DependencyError     ... because a dependency is missing, mismatched or cyclic
    ├── EnvBuildError               a plugin's Python environment could not be built (phase, log)
    ├── InstallError                an install failed in one phase (phase, log); nothing changed
    ├── PackageError                a .plughub package was refused: unsafe, corrupt, untrusted
    ├── StoreError                  the daemon's store refused or failed an operation (reason)
    ├── LimitsBackendError          the shared limits backend (Redis) failed
    ├── ToolNotFound                the plugin has no tool by that name
    └── UsageError                  the caller passed something the host cannot accept

``ToolError`` (raised *by* plugin code to report a readable failure) lives in ``plughub.sdk``;
it is not a ``PlughubError`` because it never escapes the host.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CredentialsInvalid",
    "DependencyError",
    "EnvBuildError",
    "InstallError",
    "LimitsBackendError",
    "ManifestError",
    "PackageError",
    "PlughubError",
    "PluginDisabled",
    "PluginError",
    "PluginLoadError",
    "PluginNotFound",
    "StoreError",
    "ToolNotFound",
    "UsageError",
]


class PlughubError(Exception):
    """Base class of every exception plughub raises."""


class ManifestError(PlughubError):
    """A manifest is invalid. ``problems`` lists ``(field, line, message)`` triples."""

    def __init__(self, path: str, problems: list[tuple[str, int | None, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = []
        for field, line, message in problems:
            where = f"{path}:{line}" if line else path
            lines.append(f"{where}: {field or '<root>'}: {message}")
        super().__init__("\n".join(lines))


class PluginError(PlughubError):
    """A problem with one plugin; ``plugin`` is its id (or the name the caller used)."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class PluginLoadError(PluginError):
    """The plugin's code could not be imported or its tools could not be built."""


class PluginNotFound(PluginError):
    """No plugin matches the id, name or alias."""

    def __init__(self, plugin: str) -> None:
        super().__init__(plugin, "no such plugin")


class CredentialsInvalid(PluginError):
    """Credentials refused by the manifest's rules or the plugin's ``validate_credentials``.

    ``problems`` lists what is wrong; nothing here carries a credential's value.
    """

    def __init__(self, plugin: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(plugin, "credentials refused: " + "; ".join(problems))


class PluginDisabled(PluginError):
    """The plugin is known but not usable: denied, disabled, or broken (see ``reason``)."""

    def __init__(self, plugin: str, reason: str) -> None:
        self.reason = reason
        super().__init__(plugin, f"not available: {reason}")


class DependencyError(PluginDisabled):
    """The plugin is unusable because a dependency is missing, mismatched or cyclic."""


class EnvBuildError(PlughubError):
    """A plugin environment could not be built.

    ``phase`` is ``"spec"`` (the spec itself is unusable: bad id, version, requirement or
    wheels folder), ``"venv"`` (``uv venv`` or the shared-base setup failed) or ``"install"``
    (``uv pip install`` failed: unknown or unbuildable requirement, missing bundled wheel,
    conflict with the SDK's pinned versions). ``log_tail`` is the end of uv's output.
    """

    def __init__(self, plugin_id: str, phase: str, message: str, log_tail: str = "") -> None:
        self.plugin_id = plugin_id
        self.phase = phase
        self.message = message
        self.log_tail = log_tail
        text = f"cannot build the environment of plugin {plugin_id!r} ({phase}): {message}"
        if log_tail:
            text += f"\n--- uv output (last lines) ---\n{log_tail}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable across processes despite the multi-argument __init__.
        return (type(self), (self.plugin_id, self.phase, self.message, self.log_tail))


class PackageError(PlughubError):
    """A ``.plughub`` package was refused; ``reason`` says why in one machine-readable word.

    Reasons: ``not_a_zip``, ``bad_path``, ``symlink``, ``special_file``, ``unsupported_entry``
    (encrypted, or compressed other than stored/deflate), ``duplicate_entry`` (also names that
    differ only in case or Unicode normalisation), ``too_many_files``, ``too_large``,
    ``zip_bomb``, ``corrupt`` (CRC, truncated stream, headers that disagree),
    ``missing_metadata``, ``bad_metadata``, ``bad_manifest``, ``id_mismatch``,
    ``checksum_mismatch``, ``unsigned``, ``untrusted_key``, ``bad_signature`` and
    ``bad_destination`` (extraction target exists and is not an empty folder); when building,
    also ``private_key`` (a PEM private key in the plugin folder). ``path`` is the package (the
    plugin folder when building, the target for ``bad_destination``) and ``message`` the
    human explanation.
    """

    def __init__(self, path: str, reason: str, message: str) -> None:
        self.path = path
        self.reason = reason
        self.message = message
        super().__init__(f"{path}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (install tasks may run in another process) despite the 3-argument __init__.
        return (type(self), (self.path, self.reason, self.message))


class InstallError(PlughubError):
    """An install or upgrade of a plugin package failed; nothing of it was activated.

    ``phase`` is the pipeline phase that failed: ``verify`` (signature, checksum, trust,
    permissions not granted, wrong version), ``unpack``, ``resolve`` (plugin dependencies,
    Python or plughub version), ``environment`` (uv could not build the plugin's environment),
    ``import-check`` (the plugin did not load in a worker, or its examples failed) or
    ``activate``. ``log_tail`` is the end of the failing tool's output (uv, the worker's log).
    ``missing_permissions`` lists requested permissions that were not granted, if that is why.
    """

    def __init__(
        self,
        plugin_id: str,
        phase: str,
        message: str,
        log_tail: str = "",
        missing_permissions: tuple[str, ...] = (),
    ) -> None:
        self.plugin_id = plugin_id
        self.phase = phase
        self.message = message
        self.log_tail = log_tail
        self.missing_permissions = tuple(missing_permissions)
        text = f"cannot install {plugin_id} ({phase}): {message}"
        if log_tail:
            text += f"\n--- log (last lines) ---\n{log_tail}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.plugin_id, self.phase, self.message, self.log_tail, self.missing_permissions),
        )


class LimitsBackendError(PlughubError):
    """The shared limits backend (Redis) could not be reached or refused a command.

    Raised by notifiers when a change cannot be published, and by rate and concurrency limiters
    configured with ``on_backend_error="raise"``; the message names the (password-free) URL.
    """


class ToolNotFound(PlughubError):
    """The plugin exists but has no tool by that name."""

    def __init__(self, plugin: str, tool: str, known: list[str]) -> None:
        self.plugin = plugin
        self.tool = tool
        hint = f"; its tools: {', '.join(sorted(known))}" if known else "; it has no tools"
        super().__init__(f"plugin {plugin!r} has no tool {tool!r}{hint}")


class UsageError(PlughubError):
    """The caller passed an argument the host cannot accept (not a tool failure)."""


class StoreError(PlughubError):
    """The store (``plughub.store``) refused or could not carry out an operation.

    ``reason`` is one machine-readable word: ``invalid`` (malformed input: a bad id, a name or
    value too long), ``not_found`` (no such tenant, key, installation or task), ``conflict``
    (it exists already, or a task is finished or owned by another replica), ``no_key`` (no
    credential encryption key is configured), ``bad_key`` (the key file or variable is
    unusable), ``decrypt`` (a credential does not decrypt: wrong key, or the ciphertext was
    altered or moved) and ``unavailable`` (the database cannot be reached). Messages never
    contain a credential's value.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        self.message = message
        self.reason = reason
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.reason))
