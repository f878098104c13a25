"""AutoGPT-style plugins, written as in the seed document (only the import line changed)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import types
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pluggy
import pytest

from plughub import hookspecs
from plughub.compat import MissingArgument
from plughub.compat.autogpt import (
    BasePlugin,
    Command,
    adapt,
    override_settings,
    plugin_classes,
    substitute_env,
)
from plughub.runtime._code import LoadedCode, code_from_object
from plughub.sdk import ToolError
from plughub.sdk._tool import ArgumentsInvalid, ToolDef

LoadPlugin = Callable[[Path, str], types.ModuleType]

# -- seed code, verbatim except for the import line ------------------------------------------

WEATHER = '''
# plugins/weather/plugin.py
import requests
from plughub.compat.autogpt import BasePlugin

class WeatherPlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.name = "Weather"
        self.description = "Get weather information"
        self.api_key = self.config.get("weather_api_key")

    def can_handle(self, command):
        return command.name == "get_weather"

    def handle(self, command):
        location = command.args.get("location")
        return self.get_weather(location)

    def get_weather(self, location):
        url = f"http://api.openweathermap.org/data/2.5/weather"
        params = {
            "q": location,
            "appid": self.api_key,
            "units": "metric"
        }
        response = requests.get(url, params=params)
        return response.json()
'''

# The seed's config.yaml names the key ``api_key`` while its plugin reads ``weather_api_key``;
# both are set here.
WEATHER_CONFIG = '''
# plugins/weather/config.yaml
name: "Weather"
version: "1.0.0"
dependencies:
  - requests>=2.25.0
settings:
  api_key: ${WEATHER_API_KEY}
  weather_api_key: ${WEATHER_API_KEY}
  cache_duration: 300
  rate_limit: 100
'''

CUSTOM = '''
# plugins/my_custom_plugin/plugin.py
from plughub.compat.autogpt import BasePlugin
from typing import Dict, Any

class MyCustomPlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.name = "MyCustomPlugin"
        self.version = "1.0.0"
        self.description = "Custom plugin for specific tasks"
        self.commands = ["custom_command", "helper_function"]

    def can_handle(self, command) -> bool:
        return command.name in self.commands

    def handle(self, command) -> Dict[str, Any]:
        if command.name == "custom_command":
            return self.execute_custom_logic(command.args)
        elif command.name == "helper_function":
            return self.helper_function(command.args)

    def execute_custom_logic(self, args):
        # Your custom implementation
        return {"status": "success", "result": "Custom logic executed"}
'''

DATABASE = '''
import sqlite3
from plughub.compat.autogpt import BasePlugin

class DatabasePlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.name = "Database"
        self.db_path = self.config.get("db_path", "data.db")
        self.init_database()

    def init_database(self):
        with sqlite3.connect(self.db_path) as conn:
            conn.execute("""
                CREATE TABLE IF NOT EXISTS tasks (
                    id INTEGER PRIMARY KEY,
                    name TEXT,
                    status TEXT,
                    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
                )
            """)

    def handle(self, command):
        if command.name == "save_task":
            return self.save_task(command.args)
        elif command.name == "get_tasks":
            return self.get_tasks()

    def save_task(self, args):
        with sqlite3.connect(self.db_path) as conn:
            conn.execute(
                "INSERT INTO tasks (name, status) VALUES (?, ?)",
                (args["name"], args["status"])
            )
            return {"status": "success", "message": "Task saved"}
'''

DATABASE_CONFIG = '''
name: "Database"
settings:
  db_path: ${TMP_DB}
  table: ${PLUGHUB_TEST_UNSET_TABLE:-tasks}
  api_key: ${PLUGHUB_TEST_UNSET_KEY}
  urls:
    - http://${PLUGHUB_TEST_HOST:-localhost}/a
    - https://${PLUGHUB_TEST_UNSET_KEY}/b
'''

# ``on_error`` is referenced but not defined by the seed; BasePlugin supplies a no-op. The
# ``Recording`` subclass only observes what the bridge forwards.
EVENTS = '''
from plughub.compat.autogpt import BasePlugin

class EventDrivenPlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.event_handlers = {
            "task_started": self.on_task_started,
            "task_completed": self.on_task_completed,
            "error_occurred": self.on_error
        }

    def on_task_started(self, event_data):
        # Handle task start event
        pass

    def on_task_completed(self, event_data):
        # Handle task completion
        pass


class RecordingEventPlugin(EventDrivenPlugin):
    def __init__(self):
        super().__init__()
        self.name = "Recorder"
        self.seen = []

    def on_task_started(self, event_data):
        self.seen.append(("started", event_data))

    def on_task_completed(self, event_data):
        self.seen.append(("completed", event_data))
'''

ASYNC = '''
import asyncio
from plughub.compat.autogpt import AsyncBasePlugin

class AsyncPlugin(AsyncBasePlugin):
    async def handle(self, command):
        # Asynchronous operations
        result = await self.async_operation(command.args)
        return result

    async def async_operation(self, args):
        # Long-running async task
        await asyncio.sleep(1)
        return {"status": "completed"}
'''

SECURE = '''
from plughub.compat.autogpt import BasePlugin

class SecurePlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.required_permissions = ["file_read", "network_access"]
        self.max_file_size = 10 * 1024 * 1024  # 10MB

    def check_permissions(self):
        for permission in self.required_permissions:
            if not self.has_permission(permission):
                raise PermissionError(f"Missing permission: {permission}")

    def handle(self, command):
        self.check_permissions()
        return super().handle(command)


class SecureReader(SecurePlugin):
    def __init__(self):
        super().__init__()
        self.name = "SecureReader"
        self.commands = ["read_file"]

    def handle(self, command):
        self.check_permissions()
        return {"read": command.args["path"]}
'''

WEB_SEARCH = '''
from plughub.compat.autogpt import BasePlugin

class WebSearchPlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.name = "WebSearch"
        self.version = "1.0.0"
        self.description = "Search the web for information"

    def can_handle(self, command):
        return command.name in ["web_search", "google_search"]

    def handle(self, command):
        # Implementation details
        return self.search_web(command.args["query"])

    def search_web(self, query):
        return {"results": [f"about {query}"]}
'''

# -- a local stand-in for api.openweathermap.org (reached through HTTP_PROXY) -----------------

OWM_LONDON: dict[str, Any] = {
    "coord": {"lon": -0.1257, "lat": 51.5085},
    "weather": [{"id": 803, "main": "Clouds", "description": "broken clouds", "icon": "04d"}],
    "base": "stations",
    "main": {"temp": 14.2, "feels_like": 13.6, "temp_min": 13.1, "temp_max": 15.3,
             "pressure": 1012, "humidity": 72},
    "visibility": 10000,
    "wind": {"speed": 4.1, "deg": 240},
    "clouds": {"all": 75},
    "dt": 1700000000,
    "sys": {"type": 2, "id": 2075535, "country": "GB", "sunrise": 1699946000,
            "sunset": 1699978000},
    "timezone": 0,
    "id": 2643743,
    "name": "London",
    "cod": 200,
}


@pytest.fixture
def weather_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """An HTTP proxy on 127.0.0.1 answering OpenWeatherMap's JSON; yields the URLs it saw."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = json.dumps(OWM_LONDON).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    for var in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, proxy)
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def call(td: ToolDef, args: Any) -> Any:
    """What the host does: validate the raw arguments, then call the tool."""
    return td.func(**td.validate(args))


def tool(code: LoadedCode, name: str) -> ToolDef:
    return next(t for t in code.tools if t.spec.name == name)


# -- tests -------------------------------------------------------------------------------------


def test_weather_plugin_runs_unmodified_against_a_local_api(
    tmp_path: Path, load_plugin: LoadPlugin, weather_proxy: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEATHER_API_KEY", "k-123")
    (tmp_path / "weather").mkdir()
    (tmp_path / "weather" / "config.yaml").write_text(WEATHER_CONFIG)
    mod = load_plugin(tmp_path / "weather" / "plugin.py", WEATHER)

    code = adapt(plugin_classes(mod, None))

    # No ``commands``: the name comes from the ``command.name == "get_weather"`` in can_handle.
    assert [t.spec.name for t in code.tools] == ["get_weather"]
    assert code.aliases == ["Weather"]
    assert code.description == "Get weather information"
    td = code.tools[0]
    assert td.kind == "sync" and td.ctx_param is None
    assert td.spec.input_schema == {"type": "object"}
    result = call(td, {"location": "London"})
    assert result["name"] == "London" and result["main"]["temp"] == 14.2
    assert len(weather_proxy) == 1
    url = urllib.parse.urlsplit(weather_proxy[0])
    assert (url.hostname, url.path) == ("api.openweathermap.org", "/data/2.5/weather")
    assert urllib.parse.parse_qs(url.query) == {
        "q": ["London"], "appid": ["k-123"], "units": ["metric"],
    }
    # The hook bridge exposes the instance (and its substituted config).
    assert code.hook_objects[0].plugin.config["cache_duration"] == 300


def test_fallback_serves_names_only_can_handle_knows(
    tmp_path: Path, load_plugin: LoadPlugin
) -> None:
    mod = load_plugin(tmp_path / "echo" / "plugin.py", """
        from plughub.compat.autogpt import BasePlugin

        class EchoPlugin(BasePlugin):
            def __init__(self):
                super().__init__()
                self.name = "Echo"

            def can_handle(self, command):
                return command.name.startswith("echo_")

            def handle(self, command):
                return {"command": command.name, "args": dict(command.args)}
    """)
    code = adapt(plugin_classes(mod, None))
    assert code.tools == []
    assert code.fallback is not None
    td = code.fallback("echo_loud")
    assert td is not None and td.spec.name == "echo_loud"
    assert call(td, {"text": "hi"}) == {"command": "echo_loud", "args": {"text": "hi"}}
    # Unknown, malformed and oversized names are refused before reaching plugin code.
    for name in ("get_weather", "echo_../../etc/passwd", "echo_" + "x" * 5000, "", "echo x"):
        assert code.fallback(name) is None


def test_weather_name_is_declared_so_fallback_defers(
    tmp_path: Path, load_plugin: LoadPlugin
) -> None:
    mod = load_plugin(tmp_path / "weather" / "plugin.py", WEATHER)
    code = adapt([mod.WeatherPlugin])
    assert code.fallback is not None
    assert code.fallback("get_weather") is None  # served as a declared tool
    assert code.fallback("get_forecast") is None


def test_my_custom_plugin_declares_its_commands(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "my_custom_plugin" / "plugin.py", CUSTOM)
    code = adapt(plugin_classes(mod, ["MyCustomPlugin"]))
    assert [t.spec.name for t in code.tools] == ["custom_command", "helper_function"]
    assert code.version == "1.0.0"
    assert code.aliases == ["MyCustomPlugin"]
    assert tool(code, "custom_command").spec.description == (
        "Custom plugin for specific tasks (command: custom_command)"
    )
    assert call(tool(code, "custom_command"), {"anything": 1}) == {
        "status": "success", "result": "Custom logic executed",
    }
    # code_from_object routes seed classes (and instances) here too.
    via_runtime = code_from_object(mod.MyCustomPlugin())
    assert [t.spec.name for t in via_runtime.tools] == ["custom_command", "helper_function"]


def test_plugin_classes_filters_and_checks_names(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "search" / "plugin.py", WEB_SEARCH)
    assert plugin_classes(mod, None) == [mod.WebSearchPlugin]  # not the imported BasePlugin
    with pytest.raises(ValueError, match="'Missing'"):
        plugin_classes(mod, ["WebSearchPlugin", "Missing"])
    code = adapt(plugin_classes(mod, None))
    assert [t.spec.name for t in code.tools] == ["web_search", "google_search"]
    assert call(tool(code, "google_search"), {"query": "plughub"}) == {
        "results": ["about plughub"]
    }
    with pytest.raises(ToolError, match="missing required argument 'query'"):
        call(tool(code, "web_search"), {})


def test_database_plugin_config_substitution_and_bound_parameters(
    tmp_path: Path, load_plugin: LoadPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "tasks.db"
    monkeypatch.setenv("TMP_DB", str(db))
    for var in ("PLUGHUB_TEST_UNSET_TABLE", "PLUGHUB_TEST_UNSET_KEY", "PLUGHUB_TEST_HOST"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "database").mkdir()
    (tmp_path / "database" / "config.yaml").write_text(DATABASE_CONFIG)
    mod = load_plugin(tmp_path / "database" / "plugin.py", DATABASE)

    code = adapt(plugin_classes(mod, None))

    plugin = code.hook_objects[0].plugin
    assert plugin.config == {
        "db_path": str(db), "table": "tasks", "api_key": None,
        "urls": ["http://localhost/a", None],
    }
    assert plugin.db_path == str(db)
    # ``handle`` compares command.name with these; the seed never lists them.
    assert [t.spec.name for t in code.tools] == ["save_task", "get_tasks"]
    hostile = "Robert'); DROP TABLE tasks;--"
    assert call(tool(code, "save_task"), {"name": hostile, "status": "open"}) == {
        "status": "success", "message": "Task saved",
    }
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, status FROM tasks").fetchall()
    assert rows == [(hostile, "open")]
    with pytest.raises(ToolError, match="missing required argument 'status'") as err:
        call(tool(code, "save_task"), {"name": "x"})
    assert isinstance(err.value, KeyError)  # plugin code catching KeyError still works


def test_operator_settings_win_over_config_yaml(
    tmp_path: Path, load_plugin: LoadPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMP_DB", str(tmp_path / "from-config.db"))
    (tmp_path / "database").mkdir()
    (tmp_path / "database" / "config.yaml").write_text(DATABASE_CONFIG)
    mod = load_plugin(tmp_path / "database" / "plugin.py", DATABASE)
    operator_db = str(tmp_path / "operator.db")

    code = adapt([mod.DatabasePlugin], settings={"db_path": operator_db})
    assert code.hook_objects[0].plugin.db_path == operator_db
    assert (tmp_path / "operator.db").exists()
    assert not (tmp_path / "from-config.db").exists()

    with override_settings({"db_path": str(tmp_path / "ctx.db")}):
        assert mod.DatabasePlugin().db_path == str(tmp_path / "ctx.db")
    assert mod.DatabasePlugin().db_path == str(tmp_path / "from-config.db")


def test_substitute_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUGHUB_A", "a")
    monkeypatch.setenv("PLUGHUB_EMPTY", "")
    monkeypatch.delenv("PLUGHUB_NOPE", raising=False)
    assert substitute_env({
        "x": "${PLUGHUB_A}-${PLUGHUB_A}",
        "d": "${PLUGHUB_NOPE:-fallback}",
        "e": "${PLUGHUB_EMPTY:-used}",
        "n": "${PLUGHUB_NOPE}",
        "keep": "$PLUGHUB_A and ${not a var}",
        "nested": [{"k": "${PLUGHUB_A}"}, 3, None],
    }) == {
        "x": "a-a", "d": "fallback", "e": "used", "n": None,
        "keep": "$PLUGHUB_A and ${not a var}", "nested": [{"k": "a"}, 3, None],
    }


def test_config_must_be_mappings(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.yaml").write_text("settings: [1, 2]\n")
    mod = load_plugin(tmp_path / "bad" / "plugin.py", CUSTOM)
    with pytest.raises(ValueError, match="'settings' must be a mapping"):
        adapt([mod.MyCustomPlugin])


def test_event_handlers_are_called_through_the_hook_bridge(
    tmp_path: Path, load_plugin: LoadPlugin, caplog: pytest.LogCaptureFixture
) -> None:
    mod = load_plugin(tmp_path / "events" / "plugin.py", EVENTS)
    code = adapt(plugin_classes(mod, None))
    assert code.tools == []
    assert len(code.hook_objects) == 2

    pm = pluggy.PluginManager("plughub")
    pm.add_hookspecs(hookspecs)
    for obj in code.hook_objects:
        pm.register(obj)
    recorder = next(o.plugin for o in code.hook_objects if o.plugin.name == "Recorder")

    pm.hook.task_started(event_data={"task": "t1"})
    pm.hook.task_completed(event_data={"task": "t1", "ok": True})
    pm.hook.error_occurred(event_data={"error": "boom"})  # seed's on_error: BasePlugin no-op
    assert recorder.seen == [("started", {"task": "t1"}), ("completed", {"task": "t1", "ok": True})]

    def broken(event_data: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    recorder.event_handlers["error_occurred"] = broken
    with caplog.at_level(logging.ERROR, logger="plughub.compat"):
        assert pm.hook.error_occurred(event_data={"error": "x"}) == []
    assert "error_occurred handler of plugin Recorder failed" in caplog.text

    async def slow(event_data: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        recorder.seen.append(("async", event_data))

    async def broken_async(event_data: dict[str, Any]) -> None:
        raise RuntimeError("async handler bug")

    recorder.event_handlers["task_started"] = slow
    recorder.event_handlers["task_completed"] = broken_async

    async def fire() -> None:
        for name in ("task_started", "task_completed"):
            for pending in getattr(pm.hook, name)(event_data={"task": "t2"}):
                await pending  # what the host does with awaitable hook results

    asyncio.run(fire())
    assert recorder.seen[-1] == ("async", {"task": "t2"})
    assert "task_completed handler of plugin Recorder failed" in caplog.text


def test_async_plugin(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "async_plugin" / "plugin.py", ASYNC)
    # The seed's AsyncPlugin declares no command; an instance is configured by its user.
    plugin = mod.AsyncPlugin()
    plugin.commands = ["long_task"]
    code = adapt([plugin])
    td = code.tools[0]
    assert (td.spec.name, td.kind) == ("long_task", "async")
    assert asyncio.run(td.func(**td.validate({"n": 1}))) == {"status": "completed"}


def test_secure_plugin_permissions(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "secure" / "plugin.py", SECURE)

    trusted = adapt([mod.SecurePlugin]).hook_objects[0].plugin
    assert trusted.has_permission("file_read") and trusted.has_permission("network_access")
    assert not trusted.has_permission("shell")
    trusted.check_permissions()

    limited = adapt([mod.SecurePlugin], granted=["file_read"]).hook_objects[0].plugin
    assert limited.has_permission("file_read") and not limited.has_permission("network_access")
    with pytest.raises(PermissionError, match="network_access"):
        limited.check_permissions()
    assert not mod.SecurePlugin().has_permission("file_read")  # nothing granted by default

    reader = adapt([mod.SecureReader])
    assert call(reader.tools[0], {"path": "/tmp/x"}) == {"read": "/tmp/x"}
    denied = adapt([mod.SecureReader], granted=[])
    with pytest.raises(ToolError, match="permission denied: Missing permission: file_read"):
        call(denied.tools[0], {"path": "/tmp/x"})


def test_validate_args_false_and_schemas(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "lookup" / "plugin.py", """
        from plughub.compat.autogpt import BasePlugin

        class LookupPlugin(BasePlugin):
            def __init__(self):
                super().__init__()
                self.name = "Lookup"
                self.description = "Look things up"

            def get_schema(self):
                return {
                    "lookup": {
                        "type": "object",
                        "properties": {"q": {"type": "string", "maxLength": 100}},
                        "required": ["q"],
                    },
                    "count": {"n": {"type": "integer"}},
                }

            def validate_args(self, args):
                return args.get("q") != "forbidden"

            def handle(self, command):
                return {"command": command.name, "args": dict(command.args)}


        class Typed(BasePlugin):
            def __init__(self):
                super().__init__()
                self.commands = ["typed"]

            def get_schema(self):
                return {"properties": {"x": {"type": "number"}}, "required": ["x"]}

            def handle(self, command):
                return command.args["x"] * 2
    """)
    code = adapt(plugin_classes(mod, None))
    assert [t.spec.name for t in code.tools] == ["lookup", "count", "typed"]
    lookup, count, typed = code.tools
    assert lookup.spec.input_schema["required"] == ["q"]
    assert count.spec.input_schema == {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert typed.spec.input_schema["type"] == "object"
    assert call(lookup, {"q": "cats"}) == {"command": "lookup", "args": {"q": "cats"}}
    assert call(typed, {"x": 2.5}) == 5.0
    with pytest.raises(ToolError, match="invalid arguments for lookup"):
        call(lookup, {"q": "forbidden"})
    with pytest.raises(ArgumentsInvalid, match="'q' is a required property"):
        lookup.validate({})
    with pytest.raises(ArgumentsInvalid, match=r"x: .* is not of type 'number'"):
        typed.validate({"x": "2"})
    # A huge value is rejected without being echoed back in full.
    with pytest.raises(ArgumentsInvalid) as err:
        lookup.validate({"q": "y" * 1_000_000})
    assert len(str(err.value)) < 1000


def test_hostile_arguments(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "my_custom_plugin" / "plugin.py", CUSTOM)
    td = adapt([mod.MyCustomPlugin]).tools[0]
    for bad in ("a string", ["a", "list"], 42, None, {1: "non-string key"}):
        with pytest.raises(ArgumentsInvalid):
            td.validate(bad)  # type: ignore[arg-type]
    huge = {"blob": "z" * 2_000_000, "nested": {"deep": [[["x"]]]}}
    assert call(td, huge)["status"] == "success"


def test_duplicate_commands_are_an_error(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "dupes" / "plugin.py", """
        from plughub.compat.autogpt import BasePlugin

        class First(BasePlugin):
            def __init__(self):
                super().__init__()
                self.name = "First"
                self.commands = ["shared", "only_first"]

        class Second(BasePlugin):
            commands = ["shared"]  # a class attribute is kept by BasePlugin.__init__
    """)
    with pytest.raises(ValueError, match=r"First and Second both declare command 'shared'"):
        adapt(plugin_classes(mod, None))
    with pytest.raises(TypeError):
        adapt([object()])


def test_broken_schemas_fail_the_load(tmp_path: Path, load_plugin: LoadPlugin) -> None:
    mod = load_plugin(tmp_path / "broken" / "plugin.py", """
        from plughub.compat.autogpt import BasePlugin

        class BadType(BasePlugin):
            commands = ["bad_type"]

            def get_schema(self):
                return {"type": "object", "properties": {"x": {"type": "nonsense"}}}

        class NotAnObject(BasePlugin):
            commands = ["scalar"]

            def get_schema(self):
                return {"type": "string"}
    """)
    with pytest.raises(ValueError, match=r"plugin BadType, command 'bad_type': invalid JSON Schema"):
        adapt([mod.BadType])
    with pytest.raises(ValueError, match="must describe an object"):
        adapt([mod.NotAnObject])


def test_command_behaves_like_its_name() -> None:
    cmd = Command("get_weather", {"location": "Paris"})
    assert str(cmd) == "get_weather" and cmd == "get_weather" and cmd != "other"
    assert cmd == Command("get_weather", {"location": "Paris"})
    assert hash(cmd) == hash("get_weather")
    assert cmd in {"get_weather"}
    assert repr(cmd) == "Command('get_weather', {'location': 'Paris'})"
    with pytest.raises(MissingArgument):
        cmd.args["nope"]
    assert cmd.args.get("nope") is None


def test_base_plugin_defaults() -> None:
    class Bare(BasePlugin):
        pass

    plugin = Bare()
    assert (plugin.name, plugin.version, plugin.description) == ("", "", "")
    assert plugin.commands == [] and plugin.event_handlers == {} and plugin.config == {}
    assert plugin.validate_args({}) is True and plugin.get_schema() == {}
    assert plugin.can_handle(Command("x")) is False
    with pytest.raises(NotImplementedError):
        plugin.handle(Command("x"))
    code = adapt([plugin])
    assert code.tools == [] and code.aliases == [] and code.version is None
