"""AutoGPT-style plugins: ``BasePlugin`` with ``can_handle(command)`` / ``handle(command)``.

A plugin folder holds ``plugin.py`` (one or more ``BasePlugin`` subclasses) and optionally
``config.yaml`` whose ``settings`` become ``self.config``. ``adapt`` turns the classes into host
tools, one per command:

* the names in ``commands``; else
* the keys of a per-command ``get_schema()``; else
* the names the class compares ``command.name`` with in ``can_handle``/``handle`` (read from
  the source with ``ast``: the seed's ``WeatherPlugin`` and ``DatabasePlugin`` never list them).

Any other name a plugin's ``can_handle`` accepts is still served, on demand, through
``LoadedCode.fallback``.

Host-facing knobs (see ``adapt``): ``settings`` (operator settings, which win over
``config.yaml``; also available as the ``override_settings`` context manager) and ``granted``
(the permission names ``has_permission`` answers True for).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import logging
import os
import re
import textwrap
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml

from ..runtime._code import LoadedCode
from ..sdk._results import ToolError
from ..sdk._spec import ToolSpec
from ..sdk._tool import ToolDef
from . import TOOL_NAME_RE, Args, schema_validator, settle
from ._events import EventBridge

__all__ = [
    "AsyncBasePlugin",
    "BasePlugin",
    "Command",
    "adapt",
    "override_settings",
    "plugin_classes",
    "substitute_env",
]

log = logging.getLogger("plughub.compat.autogpt")

_GRANTS: ContextVar[list[str] | None] = ContextVar("plughub_autogpt_grants", default=None)
_SETTINGS: ContextVar[Mapping[str, Any] | None] = ContextVar(
    "plughub_autogpt_settings", default=None
)
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Keys that mark a mapping as a JSON Schema rather than a ``{command: schema}`` table.
_SCHEMA_KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "$ref",
        "$defs",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
        "definitions",
        "patternProperties",
        "description",
        "title",
        "default",
        "examples",
        "format",
    }
)
_FREE_FORM: dict[str, Any] = {"type": "object"}


class Command:
    """A command as plugins see it: ``command.name`` and ``command.args``.

    Compares equal to (and prints as) its name, so plugins written against a string-typed
    command keep working.
    """

    __slots__ = ("args", "name")

    def __init__(self, name: str, args: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.args: dict[str, Any] = (
            args if isinstance(args, Args) else Args(args or {}, f"command {name!r}")
        )

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Command({self.name!r}, {dict(self.args)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Command):
            return self.name == other.name and dict(self.args) == dict(other.args)
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)


# -- config ------------------------------------------------------------------------------------


def _substitute_str(text: str) -> str | None:
    unset = False

    def repl(m: re.Match[str]) -> str:
        nonlocal unset
        value = os.environ.get(m.group(1))
        if value is None or (value == "" and m.group(2) is not None):
            # ``:-`` semantics as in the shell: the default also applies to an empty variable.
            if m.group(2) is None:
                unset = True
                return ""
            return m.group(2)
        return value

    out = _ENV_RE.sub(repl, text)
    return None if unset else out


def substitute_env(value: Any) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in strings, recursively in lists and dicts.

    A string that uses an unset variable with no default becomes None as a whole (not a
    string with a hole in it), so ``self.config.get("api_key")`` reads as missing, and a URL
    such as ``https://${HOST}/api`` does not silently become ``https:///api``.
    """
    if isinstance(value, str):
        return _substitute_str(value) if "${" in value else value
    if isinstance(value, list):
        return [substitute_env(v) for v in value]
    if isinstance(value, dict):
        return {k: substitute_env(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def override_grants(granted: Iterable[str] | None) -> Iterator[None]:
    """Within the block, ``adapt`` without ``granted`` uses these (the host's policy)."""
    token = _GRANTS.set(None if granted is None else [str(g) for g in granted])
    try:
        yield
    finally:
        _GRANTS.reset(token)


@contextlib.contextmanager
def override_settings(settings: Mapping[str, Any] | None) -> Iterator[None]:
    """Within the block, ``load_config`` lays ``settings`` over ``config.yaml``'s settings.

    For hosts that construct plugins themselves; ``adapt(settings=...)`` uses it.
    """
    token = _SETTINGS.set(dict(settings) if settings is not None else None)
    try:
        yield
    finally:
        _SETTINGS.reset(token)


# -- plugin base classes -----------------------------------------------------------------------


class BasePlugin:
    """Base class of AutoGPT-style plugins.

    Subclasses call ``super().__init__()`` and then set ``name``, ``description``,
    ``commands``... Attributes a subclass already set (as class attributes or before calling
    ``super().__init__()``) are not reset.
    """

    name: str
    version: str
    description: str
    commands: list[str]
    event_handlers: dict[str, Callable[[dict[str, Any]], Any]]
    granted_permissions: set[str]
    config: dict[str, Any]

    def __init__(self) -> None:
        defaults: dict[str, Callable[[], Any]] = {
            "name": str,
            "version": str,
            "description": str,
            "commands": list,
            "event_handlers": dict,
            "granted_permissions": set,
        }
        for attr, make in defaults.items():
            if not hasattr(self, attr):
                setattr(self, attr, make())
        self.config = self.load_config()

    def load_config(self) -> dict[str, Any]:
        """The ``settings`` mapping of ``config.yaml`` next to the plugin's module.

        ``${VAR}`` / ``${VAR:-default}`` are substituted (see ``substitute_env``); operator
        settings installed with ``override_settings`` (or ``adapt(settings=...)``) win.
        """
        config: dict[str, Any] = {}
        path = _config_path(type(self))
        if path is not None and path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a mapping at the top level")
            settings = data.get("settings") or {}
            if not isinstance(settings, dict):
                raise ValueError(f"{path}: 'settings' must be a mapping")
            config = substitute_env(settings)
        override = _SETTINGS.get()
        if override:
            config.update(override)
        return config

    def can_handle(self, command: Command) -> bool:
        """Whether this plugin handles ``command``: by ``commands``, else by the keys of a
        per-command ``get_schema()``, else by the names the class's own code compares
        ``command.name`` with."""
        commands = self.commands
        if commands:
            return command.name in ([commands] if isinstance(commands, str) else commands)
        table = _per_command(_schema_of(self))
        if table is not None:
            return command.name in table
        return command.name in _inferred_commands(type(self))

    def handle(self, command: Command) -> Any:
        """Execute the command (subclasses implement this)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement handle()")

    def validate_args(self, args: dict[str, Any]) -> bool:
        """Validate command arguments; False makes the call fail with a readable error."""
        return True

    def get_schema(self) -> dict[str, Any]:
        """A JSON Schema for the arguments, or ``{command: schema}``; ``{}`` means free-form."""
        return {}

    def has_permission(self, permission: str) -> bool:
        """Whether the host granted ``permission`` (see ``adapt``'s ``granted``)."""
        return permission in getattr(self, "granted_permissions", ())

    # The seed's EventDrivenPlugin maps ``self.on_error`` without defining it; these no-ops let
    # such plugins load unmodified.
    def on_task_started(self, event_data: dict[str, Any]) -> None:
        """Default no-op handler."""

    def on_task_completed(self, event_data: dict[str, Any]) -> None:
        """Default no-op handler."""

    def on_error(self, event_data: dict[str, Any]) -> None:
        """Default no-op handler."""


class AsyncBasePlugin(BasePlugin):
    """Base class of plugins whose ``handle`` is a coroutine."""

    async def handle(self, command: Command) -> Any:
        """Execute the command (subclasses implement this)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement handle()")


_BASES = (BasePlugin, AsyncBasePlugin)


def _config_path(klass: type) -> Path | None:
    try:
        return Path(inspect.getfile(klass)).resolve().parent / "config.yaml"
    except (TypeError, OSError):  # defined in __main__, a REPL or exec'd code
        return None


# -- reading command names from the source -----------------------------------------------------

_inferred_cache: dict[type, tuple[str, ...]] = {}
_inferred_lock = threading.Lock()


def _is_name_attr(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute) and node.attr == "name" and isinstance(node.value, ast.Name)
    )


def _literals(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [
            e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
        ]
    return []


def _names_in(func: Any) -> list[str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            left, right = operands[i], operands[i + 1]
            if isinstance(op, (ast.Eq, ast.In)) and _is_name_attr(left):
                found += _literals(right)
            elif isinstance(op, ast.Eq) and _is_name_attr(right):
                found += _literals(left)
    return found


def _inferred_commands(klass: type) -> tuple[str, ...]:
    """Command names a class compares ``<x>.name`` with in its own ``can_handle``/``handle``.

    Cached per class: the default ``can_handle`` calls it on every command.
    """
    cached = _inferred_cache.get(klass)
    if cached is not None:
        return cached
    names: list[str] = []
    for attr in ("can_handle", "handle"):
        for owner in klass.__mro__:
            if owner in _BASES or owner is object:
                break
            func = owner.__dict__.get(attr)
            if func is not None:
                names += _names_in(func)
                break
    result = tuple(dict.fromkeys(n for n in names if TOOL_NAME_RE.match(n)))
    with _inferred_lock:
        _inferred_cache[klass] = result
    return result


# -- discovery ---------------------------------------------------------------------------------


def plugin_classes(module: types.ModuleType, names: list[str] | None = None) -> list[type]:
    """``BasePlugin`` subclasses defined in ``module`` (restricted to ``names`` when given).

    ``names`` comes from ``AVAILABLE_PLUGINS``; a listed class that does not exist is an
    error rather than a silently missing plugin.
    """
    found = {
        n: obj
        for n, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, BasePlugin)
        and obj not in _BASES
        and obj.__module__ == module.__name__
    }
    if names is None:
        return list(found.values())
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(
            f"{module.__name__}: no BasePlugin subclass named {', '.join(map(repr, missing))}"
        )
    return [found[n] for n in names]


# -- adapting ----------------------------------------------------------------------------------


def _label(inst: BasePlugin) -> str:
    name = getattr(inst, "name", "")
    return name if isinstance(name, str) and name else type(inst).__name__


def _description(inst: BasePlugin) -> str:
    desc = getattr(inst, "description", "")
    if isinstance(desc, str) and desc.strip():
        return desc.strip()
    doc = type(inst).__doc__
    if doc:
        return inspect.cleandoc(doc).split("\n\n", 1)[0].replace("\n", " ")
    return f"{_label(inst)} plugin"


def _schema_of(inst: BasePlugin) -> Any:
    try:
        return inst.get_schema()
    except NotImplementedError:
        return {}


def _per_command(schema: Any) -> dict[str, dict[str, Any]] | None:
    """``schema`` as ``{command: schema}``, or None when it is not such a table."""
    if not isinstance(schema, Mapping) or not schema:
        return None
    if any(k in _SCHEMA_KEYWORDS for k in schema):
        return None
    if not all(isinstance(v, Mapping) for v in schema.values()):
        return None
    return {str(k): dict(v) for k, v in schema.items()}


def _as_object_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise to an object schema: a bare ``{arg: schema}`` map becomes its properties."""
    if not schema:
        return dict(_FREE_FORM)
    if not any(k in _SCHEMA_KEYWORDS for k in schema) and all(
        isinstance(v, Mapping) for v in schema.values()
    ):
        return {"type": "object", "properties": {k: dict(v) for k, v in schema.items()}}
    out = dict(schema)
    out.setdefault("type", "object")
    return out


def _input_schema(schema: Any, command: str) -> dict[str, Any]:
    table = _per_command(schema)
    if table is not None:
        return _as_object_schema(table.get(command, {}))
    if isinstance(schema, Mapping) and ("type" in schema or "properties" in schema):
        return _as_object_schema(schema)
    return dict(_FREE_FORM)


def _command_names(inst: BasePlugin) -> list[str]:
    commands = getattr(inst, "commands", None)
    if isinstance(commands, str):
        return [commands]
    if commands:
        return [str(c) for c in commands]
    table = _per_command(_schema_of(inst))
    if table is not None:
        return list(table)
    accepted = []
    for name in _inferred_commands(type(inst)):
        try:
            if settle(inst.can_handle(Command(name, {}))):
                accepted.append(name)
        except Exception:  # can_handle that needs real args: served by the fallback instead
            continue
    return accepted


def _make_tool(inst: BasePlugin, command: str, schema: dict[str, Any], multi: bool) -> ToolDef:
    label = _label(inst)
    description = schema.get("description")
    if not isinstance(description, str) or not description:
        description = _description(inst) + (f" (command: {command})" if multi else "")
    owner = f"{label}.{command}"
    validate = schema_validator(schema, f"plugin {label}, command {command!r}")

    def prepare(kwargs: dict[str, Any]) -> Command:
        cmd = Command(command, Args(kwargs, owner))
        if not settle(inst.validate_args(cmd.args)):
            raise ToolError(f"invalid arguments for {command}")
        if not settle(inst.can_handle(cmd)):
            raise ToolError(f"plugin {label} cannot handle command {command!r} with these args")
        return cmd

    def run(**kwargs: Any) -> Any:
        cmd = prepare(kwargs)
        try:
            return settle(inst.handle(cmd))
        except PermissionError as e:
            raise ToolError(f"permission denied: {e}") from e

    async def arun(**kwargs: Any) -> Any:
        cmd = prepare(kwargs)
        try:
            value = inst.handle(cmd)
            return await value if inspect.isawaitable(value) else value
        except PermissionError as e:
            raise ToolError(f"permission denied: {e}") from e

    is_async = inspect.iscoroutinefunction(inst.handle)
    spec = ToolSpec(name=command, description=description, input_schema=schema)
    return ToolDef(spec, arun if is_async else run, "async" if is_async else "sync", validate, None)


def _instantiate(items: Iterable[Any], settings: Mapping[str, Any] | None) -> list[BasePlugin]:
    out: list[BasePlugin] = []
    # Without explicit settings, keep any the host set around the import (override_settings).
    scope = override_settings(settings) if settings is not None else contextlib.nullcontext()
    with scope:
        for item in items:
            if isinstance(item, type):
                if not issubclass(item, BasePlugin):
                    raise TypeError(f"{item!r} is not an AutoGPT-style BasePlugin subclass")
                out.append(item())
            elif isinstance(item, BasePlugin):
                if settings:
                    # Built by the caller: config was already read, so overlay it now.
                    item.config = {**getattr(item, "config", {}), **settings}
                out.append(item)
            else:
                raise TypeError(f"{item!r} is not an AutoGPT-style plugin class or instance")
    return out


def adapt(
    items: Iterable[Any],
    granted: Iterable[str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> LoadedCode:
    """Instantiate (when given classes) and wrap AutoGPT-style plugins as host tools.

    ``granted``: the permissions ``has_permission`` answers True for. None means trusted mode:
    each plugin gets exactly what its ``required_permissions`` lists (a local, trusted host);
    a host enforcing a policy passes the granted names (possibly empty).

    ``settings``: operator settings laid over each plugin's ``config.yaml`` settings.

    Raises ValueError when two plugins declare the same command.
    """
    if granted is None:
        granted = _GRANTS.get()
    instances = _instantiate(items, settings)
    tools: list[ToolDef] = []
    owners: dict[str, str] = {}
    for inst in instances:
        if granted is None:
            required = getattr(inst, "required_permissions", None) or ()
            inst.granted_permissions = {str(p) for p in required}
        else:
            inst.granted_permissions = {str(p) for p in granted}
        names = _command_names(inst)
        schema = _schema_of(inst)
        for command in names:
            if not TOOL_NAME_RE.match(command):
                raise ValueError(
                    f"plugin {_label(inst)}: command name {command!r} must match "
                    f"{TOOL_NAME_RE.pattern}"
                )
            if command in owners:
                raise ValueError(
                    f"plugins {owners[command]} and {_label(inst)} both declare command {command!r}"
                )
            owners[command] = _label(inst)
            tools.append(_make_tool(inst, command, _input_schema(schema, command), len(names) > 1))

    def fallback(tool_name: str) -> ToolDef | None:
        """A free-form tool for a name some plugin's ``can_handle`` accepts, else None."""
        if not TOOL_NAME_RE.match(tool_name) or tool_name in owners:
            return None
        for inst in instances:
            try:
                ok = settle(inst.can_handle(Command(tool_name, {})))
            except Exception:
                log.debug("can_handle(%r) of %s raised", tool_name, _label(inst), exc_info=True)
                continue
            if ok:
                return _make_tool(inst, tool_name, dict(_FREE_FORM), False)
        return None

    first = instances[0] if instances else None
    version = getattr(first, "version", None)
    description = getattr(first, "description", None)
    return LoadedCode(
        tools=tools,
        hook_objects=[EventBridge(inst, _label(inst)) for inst in instances],
        aliases=list(
            dict.fromkeys(
                n for inst in instances if isinstance(n := getattr(inst, "name", ""), str) and n
            )
        ),
        fallback=fallback,
        description=description if isinstance(description, str) and description else None,
        version=version if isinstance(version, str) and version else None,
    )
