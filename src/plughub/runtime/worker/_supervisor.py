"""The supervisor: lazy start, warm pool, idle stop, memory budget, restarts and circuit breaker.

Health is separate from busy: a worker with calls in flight is never stopped as idle or evicted
for memory; it is only killed when it crashes, breaks the protocol, or ignores a cancel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._cgroup import Cgroups
from ._process import LaunchSpec, RequestHandler, WorkerCrashed, WorkerProcess
from ._zygote import Zygote

__all__ = ["CircuitOpen", "Supervisor", "WorkerConfig", "WorkerState"]

log = logging.getLogger("plughub.worker")


class CircuitOpen(Exception):
    """The plugin's worker crashed too often; calls fail fast until ``retry_after`` passes."""

    def __init__(self, plugin_id: str, retry_after: float, last_error: str) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"plugin {plugin_id} is disabled for {retry_after:.1f}s after repeated worker "
            f"crashes; last: {last_error}"
        )


@dataclass(slots=True)
class WorkerConfig:
    """Operator knobs for worker processes (``PluginHost(workers=WorkerConfig(...))``)."""

    idle_timeout: float = 300.0
    health_interval: float = 30.0  # idle workers are pinged this often...
    health_timeout: float = 5.0  # ...and killed as hung when they do not answer in time
    start_timeout: float = 30.0
    cancel_grace: float = 2.0
    max_in_flight: int = 32
    memory_budget: int | None = None  # bytes of USS across all workers; LRU idle ones go first
    backoff_base: float = 0.2
    backoff_max: float = 30.0
    circuit_threshold: int = 5  # crashes within circuit_window open the circuit
    circuit_window: float = 60.0
    circuit_cooldown: float = 30.0
    sandbox: bool = True
    warm_start: bool = True  # fork workers from a pre-loaded zygote (plugins without own venv)
    # Operator caps: the manifest asks, these bound what it gets.
    max_memory: int = 1 << 30
    max_cpu_seconds: int = 3600
    max_open_files: int = 1024
    max_processes: int = 64
    max_output: int = 64 << 20


@dataclass(slots=True)
class WorkerState:
    """What ``plughub list`` shows about a plugin's worker."""

    state: str = "stopped"  # stopped | starting | running | backoff | circuit_open
    pid: int | None = None
    restarts: int = 0
    crashes: list[float] = field(default_factory=list)
    last_error: str | None = None
    next_start: float = 0.0
    circuit_until: float = 0.0
    sandbox: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "sandbox": self.sandbox,
        }


class Supervisor:
    """Owns every worker of one host; runs on the host's event loop."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.workers: dict[str, WorkerProcess] = {}
        self.states: dict[str, WorkerState] = {}
        self._starting: dict[str, asyncio.Future[WorkerProcess]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.cgroups = Cgroups() if config.sandbox else None
        self.zygote: Zygote | None = None

    def state(self, plugin_id: str) -> WorkerState:
        return self.states.setdefault(plugin_id, WorkerState())

    async def acquire(
        self,
        spec_factory: Callable[[], LaunchSpec],
        plugin_id: str,
        on_request: RequestHandler,
        deadline: float | None = None,
    ) -> WorkerProcess:
        """The plugin's running worker, started (or restarted after backoff) if needed."""
        w = self.workers.get(plugin_id)
        if w is not None and w.alive:
            return w
        pending = self._starting.get(plugin_id)
        if pending is not None:
            return await asyncio.shield(pending)
        st = self.state(plugin_id)
        now = time.monotonic()
        if st.circuit_until > now:
            raise CircuitOpen(plugin_id, st.circuit_until - now, st.last_error or "")
        if st.next_start > now:
            wait = st.next_start - now
            if deadline is not None and now + wait > deadline:
                raise WorkerCrashed(
                    f"worker for {plugin_id} is restarting after a crash; retry in {wait:.1f}s"
                )
            st.state = "backoff"
            await asyncio.sleep(wait)
        fut: asyncio.Future[WorkerProcess] = asyncio.get_running_loop().create_future()
        self._starting[plugin_id] = fut
        try:
            worker = await self._start(spec_factory(), on_request)
        except BaseException as e:
            if not isinstance(e, asyncio.CancelledError):  # a caller giving up is no crash
                self._record_crash(plugin_id, str(e))
            fut.set_exception(e if isinstance(e, Exception) else WorkerCrashed("start abandoned"))
            fut.exception()  # consumed here; waiters get it through their own await
            raise
        finally:
            self._starting.pop(plugin_id, None)
        fut.set_result(worker)
        self.workers[plugin_id] = worker
        st.state, st.pid, st.sandbox = "running", worker.pid, worker.ready.get("sandbox") or {}
        self._ensure_reaper()
        await self._enforce_budget(keep=plugin_id)
        return worker

    async def _start(self, spec: LaunchSpec, on_request: RequestHandler) -> WorkerProcess:
        st = self.state(spec.plugin_id)
        st.state = "starting"
        zygote = None
        if self.config.warm_start and spec.python == sys.executable:
            if self.zygote is None:
                from ._sandbox import child_environment

                self.zygote = Zygote(sys.executable, child_environment(os.environ))
            zygote = self.zygote
        worker = WorkerProcess(
            spec,
            on_request,
            max_frame=self.config.max_output + (1 << 20),
            cgroups=self.cgroups,
            zygote=zygote,
            max_in_flight=self.config.max_in_flight,
        )
        worker.cancel_grace = self.config.cancel_grace
        try:
            await worker.start(self.config.start_timeout)
        except BaseException:
            worker.kill("start failed or was abandoned")  # never leave a half-started process
            raise
        return worker

    def crashed(self, plugin_id: str, worker: WorkerProcess) -> None:
        """Note that a worker died (called by the host when a call saw it happen)."""
        if self.workers.get(plugin_id) is worker:
            del self.workers[plugin_id]
            self._record_crash(plugin_id, worker.exit_reason or "crashed")

    def _record_crash(self, plugin_id: str, error: str) -> None:
        st = self.state(plugin_id)
        now = time.monotonic()
        st.crashes = [t for t in st.crashes if now - t < self.config.circuit_window] + [now]
        st.restarts += 1
        st.last_error = error
        st.pid = None
        delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** (len(st.crashes) - 1))
        st.next_start = now + delay
        if len(st.crashes) >= self.config.circuit_threshold:
            st.circuit_until = now + self.config.circuit_cooldown
            st.state = "circuit_open"
            st.crashes.clear()
            log.error("circuit opened for %s: %s", plugin_id, error)
        else:
            st.state = "backoff"

    async def stop(self, plugin_id: str) -> None:
        w = self.workers.pop(plugin_id, None)
        if w is not None:
            await w.stop(self.config.cancel_grace)
            self.state(plugin_id).state = "stopped"
            self.state(plugin_id).pid = None

    async def stop_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await asyncio.gather(*(self.stop(pid) for pid in list(self.workers)))
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    def kill_all(self, reason: str) -> None:
        """Kill every worker now (no teardown): for a host closed where it cannot wait."""
        for w in list(self.workers.values()):
            w.kill(reason)
        self.workers.clear()
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        """Stop workers idle longer than ``idle_timeout``; ping idle ones, kill the hung.

        Only idle workers are pinged: a busy worker may hold the GIL in C code for a long time
        without being unhealthy, and its calls have deadlines of their own.
        """
        cfg = self.config
        last_check = time.monotonic()
        while self.workers:
            await asyncio.sleep(min(5.0, cfg.idle_timeout / 2, cfg.health_interval))
            now = time.monotonic()
            check = now - last_check >= cfg.health_interval
            if check:
                last_check = now
            for plugin_id, w in list(self.workers.items()):
                if not w.alive:
                    self.crashed(plugin_id, w)
                elif w.in_flight == 0 and now - w.last_used > cfg.idle_timeout:
                    log.info("stopping idle worker for %s", plugin_id)
                    await self.stop(plugin_id)
                elif check and w.in_flight == 0 and not await w.ping(cfg.health_timeout):
                    w.kill(f"did not answer a health check within {cfg.health_timeout:g}s")
                    self.crashed(plugin_id, w)

    async def _enforce_budget(self, keep: str) -> None:
        """Evict least recently used idle workers while the total USS exceeds the budget."""
        budget = self.config.memory_budget
        if budget is None:
            return
        usage = {p: w.memory()["uss"] for p, w in self.workers.items()}
        total = sum(usage.values())
        for plugin_id, w in sorted(self.workers.items(), key=lambda kv: kv[1].last_used):
            if total <= budget:
                break
            if plugin_id == keep or w.in_flight:
                continue  # never evict the one just started, nor a busy one
            log.info("evicting %s: workers use %d bytes, budget %d", plugin_id, total, budget)
            total -= usage[plugin_id]
            await self.stop(plugin_id)

    def memory(self) -> dict[str, dict[str, int]]:
        return {p: w.memory() for p, w in self.workers.items()}
