"""The host's side of the worker pipes: backstop timer, in-flight cap, queued writes."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from pathlib import Path

from plughub import PluginHost
from plughub.runtime.worker import WorkerConfig

CODE = """
import asyncio, time
from plughub.sdk import tool

@tool
def size(text: str) -> int:
    return len(text)

@tool
def snooze(seconds: float = 0.3) -> str:
    time.sleep(seconds)
    return "rested"

@tool
async def nap(seconds: float = 0.3) -> str:
    await asyncio.sleep(seconds)
    return "rested"
"""


def make(root: Path) -> Path:
    folder = root / "plugins" / "wire"
    folder.mkdir(parents=True)
    (folder / "plugin.yaml").write_text(
        "id: acme/wire\nversion: 1.0.0\nentrypoint: main\nruntime: worker\n"
        "limits: {timeout: 10, max_argument_bytes: 2MiB}\n"
    )
    (folder / "main.py").write_text(textwrap.dedent(CODE))
    return root / "plugins"


def worker_of(host: PluginHost) -> object:
    return host._workers.supervisor.workers["acme/wire"]  # type: ignore[union-attr]


def test_frames_larger_than_the_pipe_are_queued_in_order(tmp_path: Path) -> None:
    plugins = make(tmp_path)
    texts = [str(i) * (600 << 10) for i in range(6)]  # 600 KiB each: far over a pipe's 64 KiB

    async def main() -> list[int]:
        async with PluginHost([plugins], entry_points=False) as host:
            results = await asyncio.gather(
                *(host.ainvoke("wire", "size", {"text": t}) for t in texts)
            )
            assert not worker_of(host)._wbuf  # type: ignore[attr-defined]
            small = await host.ainvoke("wire", "size", {"text": "abc"})
            return [r.structured for r in [*results, small]]

    assert asyncio.run(main()) == [600 << 10] * 6 + [3]


def test_one_backstop_timer_fails_each_call_at_its_own_time(tmp_path: Path) -> None:
    """A stopped worker answers nothing: each call ends at its timeout plus the grace, the
    shorter one first, and the worker is killed for ignoring the cancels."""
    plugins = make(tmp_path)
    config = WorkerConfig(cancel_grace=1.0)

    async def main() -> None:
        async with PluginHost([plugins], entry_points=False, workers=config) as host:
            assert (await host.ainvoke("wire", "size", {"text": "x"})).structured == 1
            w = worker_of(host)
            pid = w.pid  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGSTOP)
            done: dict[float, float] = {}
            t0 = time.monotonic()

            async def one(timeout: float) -> None:
                r = await host.ainvoke("wire", "size", {"text": "y"}, timeout=timeout)
                assert r.is_error and r.reason == "timeout", r
                done[timeout] = time.monotonic() - t0

            # the long call first: the short one must re-arm the shared timer earlier
            await asyncio.gather(one(0.6), one(0.2))
            assert 1.15 <= done[0.2] < done[0.6], done
            assert done[0.6] >= 1.55, done
            for _ in range(100):  # killed one grace period after the first cancel
                if not w.alive:  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.05)
            assert not w.alive  # type: ignore[attr-defined]
            r = await host.ainvoke("wire", "size", {"text": "back"})
            assert r.structured == 4  # a new worker

    asyncio.run(main())


def test_waiting_for_a_slot_is_bounded_by_the_call_timeout(tmp_path: Path) -> None:
    plugins = make(tmp_path)
    config = WorkerConfig(max_in_flight=1)

    async def main() -> None:
        async with PluginHost([plugins], entry_points=False, workers=config) as host:
            await host.ainvoke("wire", "size", {"text": ""})
            slow = asyncio.ensure_future(host.ainvoke("wire", "nap", {"seconds": 1.0}))
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            r = await host.ainvoke("wire", "size", {"text": "q"}, timeout=0.2)
            assert r.is_error and r.reason == "timeout" and time.monotonic() - t0 < 0.8
            # a cancelled waiter gives its turn away: the queue keeps moving
            waiting = [
                asyncio.ensure_future(host.ainvoke("wire", "size", {"text": "w" * i}))
                for i in range(3)
            ]
            await asyncio.sleep(0.05)
            waiting[0].cancel()
            assert (await slow).text == "rested"
            assert [(await w).structured for w in waiting[1:]] == [1, 2]
            assert worker_of(host)._on_wire == 0  # type: ignore[attr-defined]

    asyncio.run(main())
