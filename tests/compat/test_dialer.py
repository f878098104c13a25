"""AI-Dialer-style plugins, written as in the seed document (only the import line changed)."""

from __future__ import annotations

import asyncio
import gc
import threading
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from plughub.compat import _current_loop
from plughub.compat.dialer import (
    BasePlugin,
    adapt,
    current_caller,
    get_registry,
    plugin_classes,
    schema_from_docstring,
    set_invoker,
    using_invoker,
)
from plughub.runtime._code import code_from_object
from plughub.sdk import Json, Text, ToolError, ToolResult
from plughub.sdk._tool import ArgumentsInvalid, ToolDef

LoadPlugin = Callable[[Path, str], types.ModuleType]

# -- seed code, verbatim except for the import line ------------------------------------------

MY_PLUGIN = '''
# app/plugins/my_plugin.py

from plughub.compat.dialer import BasePlugin

class MyPlugin(BasePlugin):
    """Brief description of what your plugin does"""

    def __init__(self):
        super().__init__()
        # Initialize any resources here

    def get_description(self):
        """Return a description of the plugin"""
        return "Describe what your plugin does"

    def execute(self, context):
        """
        Main plugin logic

        Args:
            context: Dictionary with plugin parameters

        Returns:
            dict: Plugin execution result
        """
        # Validate required parameters
        is_valid, error = self.validate_context(context, ['required_param'])
        if not is_valid:
            raise ValueError(error)

        # Your plugin logic here
        result = self._do_something(context)

        return {
            'result': result,
            'message': 'Plugin executed successfully'
        }

    def _do_something(self, context):
        """Private helper method"""
        # Implementation details
        pass
'''

CALENDAR = '''
from plughub.compat.dialer import BasePlugin
from datetime import datetime

class CalendarPlugin(BasePlugin):
    """Manages calendar events"""

    def __init__(self):
        super().__init__()
        self.events = []

    def get_description(self):
        return "Schedules and manages calendar events"

    def execute(self, context):
        action = context.get('action', 'add')

        if action == 'add':
            return self._add_event(context)
        elif action == 'list':
            return self._list_events()
        elif action == 'delete':
            return self._delete_event(context)

    def _add_event(self, context):
        is_valid, error = self.validate_context(
            context,
            ['title', 'date', 'time']
        )
        if not is_valid:
            raise ValueError(error)

        event = {
            'id': len(self.events) + 1,
            'title': context['title'],
            'date': context['date'],
            'time': context['time'],
            'created': datetime.now().isoformat()
        }

        self.events.append(event)

        return {
            'event': event,
            'message': f"Event '{event['title']}' scheduled for {event['date']} at {event['time']}"
        }

    def _list_events(self):
        return {
            'events': self.events,
            'count': len(self.events)
        }

    def _delete_event(self, context):
        event_id = context.get('event_id')
        self.events = [e for e in self.events if e['id'] != event_id]

        return {
            'message': f"Event {event_id} deleted",
            'remaining': len(self.events)
        }
'''

# The "Documentation" best practice's docstring, with the "Input Validation" execute body.
DOCUMENTED = '''
from plughub.compat.dialer import BasePlugin

class DocumentedPlugin(BasePlugin):
    """
    One-line description

    Detailed description of what the plugin does,
    when to use it, and any limitations.

    Context Parameters:
        param1 (str): Description of param1
        param2 (int, optional): Description of param2

    Returns:
        dict: Description of return value structure

    Example:
        >>> plugin = MyPlugin()
        >>> result = plugin.execute({
        ...     'param1': 'value',
        ...     'param2': 42
        ... })
    """

    def execute(self, context):
        # Validate required fields
        is_valid, error = self.validate_context(
            context,
            ['param1']
        )
        if not is_valid:
            raise ValueError(error)

        # Validate field values
        if context['param1'] not in ['valid1', 'valid2']:
            raise ValueError("field must be one of: valid1, valid2")
        return {'param1': context['param1'], 'param2': context.get('param2')}
'''

ASYNC = '''
import asyncio
from plughub.compat.dialer import BasePlugin

class AsyncPlugin(BasePlugin):
    async def execute_async(self, context):
        result = await self._async_operation(context)
        return result

    def execute(self, context):
        # Wrapper for sync interface
        loop = asyncio.get_event_loop()
        return loop.run_until_complete(self.execute_async(context))

    async def _async_operation(self, context):
        # Async implementation
        await asyncio.sleep(1)
        return {'status': 'completed'}
'''

# The seed's DependentPlugin calls ``self._process`` without defining it; it is added here.
DEPENDENT = '''
from plughub.compat.dialer import BasePlugin, get_registry

class OtherPlugin(BasePlugin):
    """Echoes its parameter"""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def execute(self, context):
        is_valid, error = self.validate_context(context, ['param'])
        if not is_valid:
            raise ValueError(error)
        self.calls += 1
        return {'echo': context['param'], 'calls': self.calls}

class DependentPlugin(BasePlugin):
    def execute(self, context):
        registry = get_registry()

        # Use another plugin
        other_plugin = registry.get_plugin('OtherPlugin')
        other_result = other_plugin.execute({'param': 'value'})

        # Use result
        return self._process(other_result)

    def _process(self, other_result):
        return {'processed': other_result}
'''


def call(td: ToolDef, args: Any) -> Any:
    """What the host does: validate the raw arguments, then call the tool."""
    return td.func(**td.validate(args))


@pytest.fixture(autouse=True)
def _no_invoker() -> Any:
    previous = set_invoker(None)
    yield
    set_invoker(previous)


# -- tests -------------------------------------------------------------------------------------


def test_my_plugin(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "my_plugin.py", MY_PLUGIN)
    code = adapt(plugin_classes(mod))
    assert code.aliases == ["MyPlugin"]
    td = code.tools[0]
    assert (td.spec.name, td.kind, td.ctx_param) == ("MyPlugin", "sync", None)
    assert td.spec.description == "Describe what your plugin does"
    assert td.spec.input_schema == {"type": "object"}
    assert call(td, {"required_param": "value"}) == {
        "result": None, "message": "Plugin executed successfully",
    }
    with pytest.raises(ToolError, match=r"^Missing required parameter\(s\): required_param$"):
        call(td, {})
    with pytest.raises(ToolError, match="required_param"):
        call(td, {"required_param": None})
    # The seed's own unit test style still works on the class.
    with pytest.raises(ValueError):
        mod.MyPlugin().execute({})


def test_calendar_add_list_delete(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "calendar_plugin.py", CALENDAR)
    td = adapt(plugin_classes(mod)).tools[0]
    assert (td.spec.name, td.spec.description) == (
        "CalendarPlugin", "Schedules and manages calendar events",
    )
    added = call(td, {"title": "Standup", "date": "2025-01-06", "time": "09:30"})
    assert added["event"]["id"] == 1
    assert added["message"] == "Event 'Standup' scheduled for 2025-01-06 at 09:30"
    call(td, {"action": "add", "title": "Review", "date": "2025-01-07", "time": "14:00"})
    listed = call(td, {"action": "list"})
    assert listed["count"] == 2 and [e["title"] for e in listed["events"]] == ["Standup", "Review"]
    assert call(td, {"action": "delete", "event_id": 1}) == {
        "message": "Event 1 deleted", "remaining": 1,
    }
    with pytest.raises(ToolError, match=r"Missing required parameter\(s\): date, time"):
        call(td, {"action": "add", "title": "Incomplete"})
    assert call(td, {"action": "unknown"}) is None


def test_docstring_context_parameters_become_the_schema(
    tmp_path: Path, load_plugin: LoadPlugin
) -> None:
    mod = load_plugin(tmp_path / "documented.py", DOCUMENTED)
    td = adapt(plugin_classes(mod)).tools[0]
    assert td.spec.description == "One-line description"
    assert td.spec.input_schema == {
        "type": "object",
        "properties": {
            "param1": {"type": "string", "description": "Description of param1"},
            "param2": {"type": "integer", "description": "Description of param2"},
        },
        "required": ["param1"],
        "additionalProperties": True,
    }
    assert call(td, {"param1": "valid1", "extra": True}) == {"param1": "valid1", "param2": None}
    with pytest.raises(ArgumentsInvalid) as err:
        td.validate({"param2": "forty-two"})
    assert "'param1' is a required property" in str(err.value)
    assert "param2: 'forty-two' is not of type 'integer'" in str(err.value)
    with pytest.raises(ToolError, match="field must be one of: valid1, valid2"):
        call(td, {"param1": "other"})
    with pytest.raises(ArgumentsInvalid) as err:
        td.validate({"param1": 1, "param2": "9" * 1_000_000})
    assert len(str(err.value)) < 1000


def test_schema_from_docstring_types_and_absence() -> None:
    assert schema_from_docstring(None) is None
    assert schema_from_docstring("Just a summary.\n\nArgs:\n    x (int): not context") is None
    schema = schema_from_docstring("""Summary.

    Context Parameters:
        a (float): A
        b (bool, optional): B
        c (dict): C
        d (List[str]): D
        e (SomeClass): E
          continued
        f: untyped

    Returns:
        dict: ignored
    """)
    assert schema is not None
    props = schema["properties"]
    assert [props[k].get("type") for k in "abcdef"] == [
        "number", "boolean", "object", "array", None, None,
    ]
    assert props["e"]["description"] == "E continued"
    assert schema["required"] == ["a", "c", "d", "e", "f"]


def test_async_pattern_with_run_until_complete(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "async_plugin.py", ASYNC)
    td = adapt(plugin_classes(mod)).tools[0]
    assert td.kind == "sync"

    # 1. A host worker thread: no event loop is set there, so get_event_loop() would raise.
    def in_worker() -> tuple[Any, Any]:
        return call(td, {"x": 1}), _current_loop()

    with ThreadPoolExecutor(1) as pool:
        result, left_behind = pool.submit(in_worker).result()
    assert result == {"status": "completed"}
    assert left_behind is None  # the thread's loop is only set during the call

    # 2. A thread whose loop is running (sync call made from async code): a fresh thread runs it.
    async def from_async() -> Any:
        return call(td, {})

    assert asyncio.run(from_async()) == {"status": "completed"}


def test_async_pattern_keeps_a_loop_the_thread_already_has(
    tmp_path: Path, load_plugin: LoadPlugin
) -> None:
    mod = load_plugin(tmp_path / "async_plugin.py", ASYNC.replace("sleep(1)", "sleep(0)"))
    td = adapt(plugin_classes(mod)).tools[0]

    def with_own_loop() -> bool:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            assert call(td, {}) == {"status": "completed"}
            return _current_loop() is loop
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(with_own_loop).result() is True
    # And the main thread, whatever loop state earlier tests left it in.
    assert call(td, {}) == {"status": "completed"}


def test_async_execute(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "native_async.py", '''
        import asyncio
        from plughub.compat.dialer import BasePlugin, current_caller

        class NativeAsync(BasePlugin):
            """Awaits directly"""

            async def execute(self, context):
                await asyncio.sleep(0)
                if context.get('fail'):
                    raise ValueError('asked to fail')
                return {'caller': current_caller(), 'n': context['n']}
    ''')
    td = adapt(plugin_classes(mod)).tools[0]
    assert td.kind == "async"
    assert asyncio.run(td.func(**td.validate({"n": 3}))) == {"caller": "NativeAsync", "n": 3}
    with pytest.raises(ToolError, match="asked to fail"):
        asyncio.run(td.func(**td.validate({"n": 3, "fail": True})))
    with pytest.raises(ToolError, match="missing required argument 'n' for NativeAsync"):
        asyncio.run(td.func(**td.validate({})))


def test_dependent_plugin_standalone(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "dependent.py", DEPENDENT)
    # As in the author's own unit test: no host, no adapt.
    assert mod.DependentPlugin().execute({}) == {"processed": {"echo": "value", "calls": 1}}
    assert "OtherPlugin" in get_registry().list_plugins()
    with pytest.raises(KeyError, match="NoSuchPlugin"):
        get_registry().get_plugin("NoSuchPlugin")

    # Adapted: the registry shares the instances the host runs.
    code = adapt(plugin_classes(mod))
    assert code.aliases == ["OtherPlugin", "DependentPlugin"]
    other, dependent = code.tools
    assert call(other, {"param": "direct"}) == {"echo": "direct", "calls": 1}
    assert call(dependent, {}) == {"processed": {"echo": "value", "calls": 2}}
    assert get_registry().get_plugin("OtherPlugin").get_description() == "Echoes its parameter"


def test_dependent_plugin_goes_through_the_host_invoker(
    tmp_path: Path, load_plugin: LoadPlugin
) -> None:
    mod = load_plugin(tmp_path / "dependent.py", DEPENDENT)
    dependent = adapt([mod.DependentPlugin]).tools[0]
    calls: list[tuple[str, dict[str, Any], str | None]] = []

    def invoker(name: str, context: dict[str, Any]) -> ToolResult:
        calls.append((name, context, current_caller()))
        if name == "Denied":
            return ToolResult.error("permission denied: Denied", "permission_denied")
        return ToolResult([Json({"via": "host"})], {"via": "host"})

    previous = set_invoker(invoker, lister=lambda: ["OtherPlugin", "DependentPlugin"])
    assert previous is None
    try:
        assert call(dependent, {}) == {"processed": {"via": "host"}}
        assert calls == [("OtherPlugin", {"param": "value"}, "DependentPlugin")]
        assert get_registry().list_plugins() == ["OtherPlugin", "DependentPlugin"]
        # Unknown names are the host's to judge, at call time.
        handle = get_registry().get_plugin("Denied")
        with pytest.raises(ValueError, match="permission denied: Denied"):
            handle.execute({})
    finally:
        set_invoker(None)

    # A scoped invoker wins over the global one; text-only results come back as text.
    def text_invoker(name: str, context: dict[str, Any]) -> ToolResult:
        return ToolResult([Text(f"{name} says hi")])

    with using_invoker(text_invoker):
        assert call(dependent, {}) == {"processed": "OtherPlugin says hi"}

    def failing(name: str, context: dict[str, Any]) -> ToolResult:
        return ToolResult.error("OtherPlugin is at its concurrency limit", "busy")

    with using_invoker(failing), pytest.raises(ToolError, match="concurrency limit"):
        call(dependent, {})


def test_plugin_classes_order_and_filtering(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "several.py", '''
        from plughub.compat.dialer import BasePlugin

        class Zeta(BasePlugin):
            def execute(self, context):
                return 'z'

        class _Private(BasePlugin):
            def execute(self, context):
                return 'p'

        class IntermediateBase(BasePlugin):
            """No execute: not a plugin on its own"""

        class Alpha(IntermediateBase):
            def execute(self, context):
                if not isinstance(context.get('n', 0), int):
                    raise TypeError("n must be an integer")
                return 'a'
    ''')
    assert plugin_classes(mod) == [mod.Zeta, mod.Alpha]
    code = adapt(plugin_classes(mod))
    assert [t.spec.name for t in code.tools] == ["Zeta", "Alpha"]
    assert code.description is None
    assert code.tools[0].spec.description == "Zeta"  # no docstring: the class name
    with pytest.raises(ToolError, match="n must be an integer"):
        call(code.tools[1], {"n": "1"})
    with pytest.raises(ValueError, match="two plugins are named 'Zeta'"):
        adapt([mod.Zeta, mod.Zeta()])
    with pytest.raises(TypeError):
        adapt([int])
    # code_from_object routes dialer classes here as well.
    assert [t.spec.name for t in code_from_object([mod.Zeta, mod.Alpha]).tools] == [
        "Zeta", "Alpha",
    ]


def test_hostile_arguments(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "calendar_plugin.py", CALENDAR)
    td = adapt(plugin_classes(mod)).tools[0]
    for bad in ("a string", ["list"], 3.14, None, {("tuple",): 1}):
        with pytest.raises(ArgumentsInvalid, match="invalid arguments"):
            td.validate(bad)  # type: ignore[arg-type]
    huge = "t" * 2_000_000
    out = call(td, {"title": huge, "date": "d", "time": "t"})
    assert out["event"]["title"] == huge


def test_base_plugin_helpers() -> None:
    class Plain(BasePlugin):
        """First line.

        More text.
        """

    plugin = Plain()
    assert plugin.name == "Plain"
    plugin.name = "Renamed"
    assert plugin.name == "Renamed"
    assert plugin.get_description() == "First line."
    assert plugin.validate_context({"a": 1, "b": None}, ["a", "b", "c"]) == (
        False, "Missing required parameter(s): b, c",
    )
    assert plugin.validate_context({"a": 0}, ["a"]) == (True, None)
    with pytest.raises(NotImplementedError):
        plugin.execute({})


def test_caller_is_visible_to_nested_threads(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "who.py", '''
        from plughub.compat.dialer import BasePlugin, current_caller

        class WhoAmI(BasePlugin):
            def execute(self, context):
                return current_caller()
    ''')
    td = adapt(plugin_classes(mod)).tools[0]
    assert call(td, {}) == "WhoAmI"
    assert current_caller() is None
    seen: list[Any] = []
    t = threading.Thread(target=lambda: seen.append(call(td, {})))
    t.start()
    t.join()
    assert seen == ["WhoAmI"]


def test_a_threads_loop_is_reused_and_closed_with_the_thread(
    tmp_path: Path, load_plugin: LoadPlugin
) -> None:
    mod = load_plugin(tmp_path / "loops.py", '''
        import asyncio
        from plughub.compat.dialer import BasePlugin

        class LoopUser(BasePlugin):
            loops = []

            def execute(self, context):
                loop = asyncio.get_event_loop()
                self.loops.append(loop)
                return loop.run_until_complete(asyncio.sleep(0, result=len(self.loops)))
    ''')
    td = adapt(plugin_classes(mod)).tools[0]
    worker = threading.Thread(target=lambda: [call(td, {}) for _ in range(3)])
    worker.start()
    worker.join()
    gc.collect()
    loops = mod.LoopUser.loops
    assert len(loops) == 3 and len({id(loop) for loop in loops}) == 1
    assert loops[0].is_closed()
