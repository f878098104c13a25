"""Seed-style plugin folders served by the real ``PluginHost`` (discovery → adapt → invoke)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from plughub.host import PluginHost
from plughub.sdk import AuditEvent, hookimpl

CUSTOM = '''
from plughub.compat.autogpt import BasePlugin

class MyCustomPlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.name = "MyCustomPlugin"
        self.version = "1.0.0"
        self.description = "Custom plugin for specific tasks"
        self.commands = ["custom_command"]

    def handle(self, command):
        return {"status": "success", "args": dict(command.args)}
'''

DEPENDENT = '''
import asyncio
from plughub.compat.dialer import BasePlugin, get_registry

class OtherPlugin(BasePlugin):
    """Echoes its parameter"""

    async def execute_async(self, context):
        await asyncio.sleep(0)
        return {'echo': context['param']}

    def execute(self, context):
        loop = asyncio.get_event_loop()
        return loop.run_until_complete(self.execute_async(context))

class DependentPlugin(BasePlugin):
    def execute(self, context):
        other = get_registry().get_plugin('OtherPlugin')
        return {'processed': other.execute({'param': context.get('param', 'value')})}
'''


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    (tmp_path / "my_custom_plugin").mkdir()
    (tmp_path / "my_custom_plugin" / "plugin.py").write_text(textwrap.dedent(CUSTOM))
    (tmp_path / "dependent.py").write_text(textwrap.dedent(DEPENDENT))
    return tmp_path


def test_host_runs_seed_plugins_and_routes_plugin_calls_through_itself(plugins_dir: Path) -> None:
    seen: list[tuple[str, str | None]] = []

    class Audit:
        @hookimpl
        def audit(self, event: AuditEvent) -> None:
            seen.append((event.tool, event.caller))

    with PluginHost([plugins_dir], entry_points=False, hooks=[Audit()]) as host:
        result = host.invoke("local/my_custom_plugin", "custom_command", {"x": 1})
        assert result.structured == {"status": "success", "args": {"x": 1}}
        out = host.invoke("DependentPlugin", "DependentPlugin", {"param": "p"})
        assert out.structured == {"processed": {"echo": "p"}}
        out = asyncio.run(host.ainvoke("DependentPlugin", "DependentPlugin", {}))
        assert out.structured == {"processed": {"echo": "value"}}
        err = host.invoke("OtherPlugin", "OtherPlugin", {})
        assert err.is_error and err.text == "missing required argument 'param' for OtherPlugin"
    # The nested call went through the host (audited) with the calling plugin as its caller.
    assert seen.count(("OtherPlugin", "DependentPlugin")) == 2
    assert ("DependentPlugin", None) in seen
