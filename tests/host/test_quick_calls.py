"""Sync tools in async callers: in a thread pool, except tools that have proven quick, which run
inline (a hop to a thread costs more than they do); one slow inline call sends a tool back."""

from __future__ import annotations

import asyncio
import threading
import time

from plughub import PluginHost, tool
from plughub.host._pipeline import QUICK_SAMPLES


@tool
def where(pause: float = 0.0) -> int:
    """The id of the thread that ran the call (after sleeping ``pause`` seconds)."""
    if pause:
        time.sleep(pause)
    return threading.get_ident()


@tool
def always_slow() -> int:
    """Blocks 3 ms every time: never allowed on a loop."""
    time.sleep(0.003)
    return threading.get_ident()


def test_quick_tools_go_inline_and_a_slow_call_sends_them_back() -> None:
    async def scenario() -> None:
        loop_thread = threading.get_ident()
        async with PluginHost(tools=[where, always_slow], entry_points=False) as host:

            async def thread_of(name: str, **args: float) -> int:
                result = await host.ainvoke("local/tools", name, args)
                assert not result.is_error, result.text
                return int(result.structured)

            async def calls_until_inline() -> int:
                for n in range(1, 100):  # (a loaded machine may need a few more samples)
                    if await thread_of("where") == loop_thread:
                        return n
                raise AssertionError("a 1 us tool never ran inline")

            assert await calls_until_inline() > QUICK_SAMPLES  # measured in the pool first

            # An inline call that blocks: back to the pool, and twice as many calls to return.
            assert await thread_of("where", pause=0.005) == loop_thread
            assert await calls_until_inline() > 2 * QUICK_SAMPLES

            slow = [await thread_of("always_slow") for _ in range(3 * QUICK_SAMPLES)]
            assert loop_thread not in slow  # never measured quick: never on the loop

    asyncio.run(scenario())


def test_a_quick_tool_still_meets_its_deadline_inline() -> None:
    @tool(timeout=0.2)
    def spin(forever: bool = False) -> str:
        """Returns at once, or loops until stopped."""
        while forever:
            pass
        return "done"

    async def scenario() -> None:
        async with PluginHost(tools=[spin], entry_points=False) as host:
            for _ in range(QUICK_SAMPLES + 1):
                assert (await host.ainvoke("local/tools", "spin", {})).text == "done"
            r = await host.ainvoke("local/tools", "spin", {"forever": True})
            assert r.is_error and r.reason == "timeout"
            assert (await host.ainvoke("local/tools", "spin", {})).text == "done"

    asyncio.run(scenario())
