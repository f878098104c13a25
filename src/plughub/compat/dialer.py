"""AI-Dialer-style plugins: one ``BasePlugin`` subclass per tool, ``execute(context) -> dict``.

``adapt`` makes one tool per class, named after the class (``NoteTaker``). The tool's input
schema comes from the class docstring's ``Context Parameters:`` section when there is one
(``name (type[, optional]): text`` lines), otherwise any object is accepted. ``ValueError`` and
``TypeError`` raised by ``execute`` are the seed's way to report bad input, so they become
readable tool errors.

Plugins call each other through ``get_registry().get_plugin(name).execute(context)``. Inside a
host that call goes through the host (see ``set_invoker``), so permissions, limits and audit
apply to it; outside one (an author's unit test) it falls back to calling the class directly.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from ..runtime._code import LoadedCode
from ..sdk._docstring import parse_docstring
from ..sdk._results import ToolError, ToolResult
from ..sdk._spec import ToolSpec
from ..sdk._tool import ToolDef
from . import TOOL_NAME_RE, Args, call_with_loop, schema_validator

__all__ = [
    "BasePlugin",
    "Invoker",
    "PluginHandle",
    "Registry",
    "adapt",
    "current_caller",
    "get_registry",
    "plugin_classes",
    "schema_from_docstring",
    "set_invoker",
    "using_invoker",
]

#: ``invoker(plugin_name, context) -> ToolResult``: runs another plugin through the host.
Invoker = Callable[[str, dict[str, Any]], ToolResult]

_FREE_FORM: dict[str, Any] = {"type": "object"}
_SECTION_RE = re.compile(r"^([A-Z][A-Za-z ]*):\s*$")
_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "dict": "object",
    "mapping": "object",
    "object": "object",
    "list": "array",
    "array": "array",
    "tuple": "array",
    "sequence": "array",
}

_lock = threading.RLock()
_classes: dict[str, type[BasePlugin]] = {}
_instances: dict[str, BasePlugin] = {}
_invoker: Invoker | None = None
_lister: Callable[[], list[str]] | None = None
_scoped_invoker: ContextVar[Invoker | None] = ContextVar("plughub_dialer_invoker", default=None)
_caller: ContextVar[str | None] = ContextVar("plughub_dialer_caller", default=None)


class BasePlugin:
    """Base class of AI-Dialer-style plugins.

    Every subclass is recorded (by class name) in a process-local registry so that
    ``get_registry()`` works even when no host is involved.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            with _lock:
                if _classes.get(cls.__name__) is not cls:
                    _instances.pop(cls.__name__, None)
                _classes[cls.__name__] = cls

    def __init__(self) -> None:
        """Subclasses acquire resources here; no arguments, so the host can construct them."""

    _plughub_name: str | None = None

    @property
    def name(self) -> str:
        """The plugin's name: its class name (also its tool name), unless a subclass sets one."""
        return self._plughub_name or type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        self._plughub_name = value

    def get_description(self) -> str:
        """The first line of the class docstring."""
        doc = type(self).__doc__
        if not doc:
            return ""
        return next((line.strip() for line in doc.strip().splitlines() if line.strip()), "")

    def execute(self, context: dict[str, Any]) -> Any:
        """Run the plugin on ``context`` (subclasses implement this)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement execute()")

    def validate_context(
        self, context: Mapping[str, Any], required: Iterable[str]
    ) -> tuple[bool, str | None]:
        """``(True, None)``, or ``(False, message)`` naming every missing (or None) key."""
        missing = [key for key in required if context.get(key) is None]
        if missing:
            return False, f"Missing required parameter(s): {', '.join(missing)}"
        return True, None


# -- host contract -----------------------------------------------------------------------------


def set_invoker(
    invoker: Invoker | None, *, lister: Callable[[], list[str]] | None = None
) -> Invoker | None:
    """Install the host's invoker for plugin-to-plugin calls (process-wide); returns the old one.

    ``invoker(name, context)`` must run plugin ``name`` with ``context`` as its arguments and
    return the ``ToolResult``; it raises for a name it does not know. ``current_caller()``
    tells it which plugin is calling. ``lister`` backs ``Registry.list_plugins``. Pass None to
    uninstall (calls then go straight to the classes again).
    """
    global _invoker, _lister
    with _lock:
        previous = _invoker
        _invoker, _lister = invoker, lister
    return previous


@contextlib.contextmanager
def using_invoker(invoker: Invoker | None) -> Iterator[None]:
    """Use ``invoker`` in this context only (wins over ``set_invoker``).

    Context variables do not follow ``run_in_executor`` into worker threads, so a host that
    runs sync tools on an executor should use ``set_invoker``; this is for tests and hosts
    whose tools run in the context that set it.
    """
    token = _scoped_invoker.set(invoker)
    try:
        yield
    finally:
        _scoped_invoker.reset(token)


def current_caller() -> str | None:
    """The name of the dialer plugin whose ``execute`` is running here (None outside one)."""
    return _caller.get()


def _active_invoker() -> Invoker | None:
    return _scoped_invoker.get() or _invoker


class PluginHandle:
    """What ``Registry.get_plugin`` returns: ``execute(context)`` runs the named plugin."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"PluginHandle({self.name!r})"

    def execute(self, context: Mapping[str, Any] | None = None) -> Any:
        """Through the host when one is installed: the result's ``structured`` value (or its
        text); an error result raises ``ValueError`` with its message, the way a plugin's own
        bad-input error would. Without a host, the plugin's ``execute`` is called directly."""
        payload = dict(context or {})
        invoker = _active_invoker()
        if invoker is not None:
            result = invoker(self.name, payload)
            if result.is_error:
                raise ValueError(result.text)
            return result.structured if result.structured is not None else result.text
        plugin = _local_instance(self.name)
        return call_with_loop(lambda: plugin.execute(payload))

    def get_description(self) -> str:
        """The plugin's description when it is known locally, else an empty string."""
        with _lock:
            known = self.name in _classes
        return _local_instance(self.name).get_description() if known else ""


class Registry:
    """The seed's ``app.plugins.registry`` object: look plugins up by class name."""

    def get_plugin(self, name: str) -> PluginHandle:
        """A handle on plugin ``name``.

        With a host invoker installed, the host decides at ``execute`` time whether the name
        exists (and raises if not); standalone, an unknown name raises ``KeyError`` here.
        """
        if _active_invoker() is None:
            with _lock:
                if name not in _classes:
                    raise KeyError(f"no plugin named {name!r}")
        return PluginHandle(name)

    def list_plugins(self) -> list[str]:
        """Plugin names: the host's (when it installed a lister), else the local registry's."""
        lister = _lister
        if _active_invoker() is not None and lister is not None:
            return list(lister())
        with _lock:
            return sorted(_classes)


_REGISTRY = Registry()


def get_registry() -> Registry:
    """The process-wide registry (what ``app.plugins.registry.get_registry`` returned)."""
    return _REGISTRY


def _local_instance(name: str) -> BasePlugin:
    """One shared instance per class, built on first use, so that plugin state persists."""
    with _lock:
        inst = _instances.get(name)
        if inst is None:
            klass = _classes.get(name)
            if klass is None:
                raise KeyError(f"no plugin named {name!r}")
            inst = _instances[name] = klass()
        return inst


# -- discovery and adapting --------------------------------------------------------------------


def plugin_classes(module: types.ModuleType) -> list[type]:
    """Runnable ``BasePlugin`` subclasses defined in ``module``, in definition order.

    Names starting with ``_`` are private helpers; classes that do not override ``execute``
    are intermediate bases (they could only raise NotImplementedError), so both are skipped.
    """
    return [
        obj
        for n, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, BasePlugin)
        and obj is not BasePlugin
        and obj.__module__ == module.__name__
        and not n.startswith("_")
        and obj.execute is not BasePlugin.execute
    ]


def _context_section(doc: str) -> str | None:
    lines = inspect.cleandoc(doc).splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower() == "context parameters:" and not line.startswith(" "):
            body = []
            for rest in lines[i + 1 :]:
                if _SECTION_RE.match(rest) and not rest.startswith(" "):
                    break
                body.append(rest)
            return "\n".join(body)
    return None


def _json_type(hint: str | None) -> str | None:
    if not hint:
        return None
    key = re.split(r"[\[\s|(]", hint.strip().lower(), maxsplit=1)[0]
    return _TYPES.get(key)


def schema_from_docstring(doc: str | None) -> dict[str, Any] | None:
    """A JSON Schema from a docstring's ``Context Parameters:`` section, or None without one.

    Parameters marked ``optional`` are not required; unknown types are left untyped; other
    keys are allowed (``additionalProperties``), since plugins often read extra context.
    """
    if not doc:
        return None
    section = _context_section(doc)
    if section is None:
        return None
    params = parse_docstring("-\n\nContext Parameters:\n" + section).params
    if not params:
        return None
    properties: dict[str, Any] = {}
    for pname, p in params.items():
        prop: dict[str, Any] = {}
        jtype = _json_type(p.type_hint)
        if jtype is not None:
            prop["type"] = jtype
        if p.description:
            prop["description"] = p.description
        properties[pname] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": True,
    }
    required = [n for n, p in params.items() if not p.optional]
    if required:
        schema["required"] = required
    return schema


def _description(inst: BasePlugin) -> str:
    try:
        desc = inst.get_description()
    except Exception:
        desc = None
    if isinstance(desc, str) and desc.strip():
        return desc.strip()
    return BasePlugin.get_description(inst) or type(inst).__name__


def _readable(exc: Exception) -> ToolError:
    return ToolError(str(exc) or type(exc).__name__)


def _make_tool(inst: BasePlugin, name: str) -> ToolDef:
    schema = schema_from_docstring(type(inst).__doc__) or dict(_FREE_FORM)
    validate = schema_validator(schema, f"plugin {name}")

    def run(**kwargs: Any) -> Any:
        context = Args(kwargs, name)
        token = _caller.set(name)
        try:
            return call_with_loop(lambda: inst.execute(context))
        except (ValueError, TypeError) as e:
            raise _readable(e) from e
        finally:
            _caller.reset(token)

    async def arun(**kwargs: Any) -> Any:
        context = Args(kwargs, name)
        token = _caller.set(name)
        try:
            return await inst.execute(context)
        except (ValueError, TypeError) as e:
            raise _readable(e) from e
        finally:
            _caller.reset(token)

    is_async = inspect.iscoroutinefunction(inst.execute)
    spec = ToolSpec(name=name, description=_description(inst), input_schema=schema)
    return ToolDef(spec, arun if is_async else run, "async" if is_async else "sync", validate, None)


def adapt(items: Iterable[Any]) -> LoadedCode:
    """One tool per plugin class (or instance), named after the class.

    Adapted instances also back the standalone registry, so a plugin looked up by name
    without a host invoker shares state with the one the host runs.
    """
    tools: list[ToolDef] = []
    names: list[str] = []
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, BasePlugin):
                raise TypeError(f"{item!r} is not an AI-Dialer-style BasePlugin subclass")
            inst = item()
        elif isinstance(item, BasePlugin):
            inst = item
        else:
            raise TypeError(f"{item!r} is not an AI-Dialer-style plugin class or instance")
        name = type(inst).__name__
        if not TOOL_NAME_RE.match(name):
            raise ValueError(f"plugin class name {name!r} must match {TOOL_NAME_RE.pattern}")
        if name in names:
            raise ValueError(f"two plugins are named {name!r}")
        names.append(name)
        with _lock:
            _classes[name] = type(inst)
            _instances[name] = inst
        tools.append(_make_tool(inst, name))
    return LoadedCode(
        tools=tools,
        aliases=list(names),
        description=tools[0].spec.description if len(tools) == 1 else None,
    )
