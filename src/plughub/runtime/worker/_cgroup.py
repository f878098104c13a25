"""Per-worker control groups: a process-count cap that also holds for root, and a kill-all.

RLIMIT_NPROC is per user and does not bind uid 0, so a fork bomb in a worker run as root would
not be stopped by it. A cgroup's ``pids.max`` counts only the worker's own processes, and killing
every pid in the group also takes processes that left the worker's process group (``setsid``).
Uses cgroup v2 when the unified hierarchy has the ``pids`` controller, else the v1 ``pids``
hierarchy; when neither is writable the report says so and only rlimits apply.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = ["Cgroups"]


def _own_path(controller: str) -> str:
    """This process's cgroup path for a v1 controller (or the v2 path with ``""``)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if (controller == "" and names == "") or controller in names.split(","):
                return path.lstrip("/")
    except OSError:
        pass
    return ""


class Cgroups:
    """Creates one cgroup per worker under this process's own cgroup."""

    def __init__(self, root: str = "/sys/fs/cgroup") -> None:
        self.base: Path | None = None
        self.mode = "none"
        v2 = Path(root)
        if (v2 / "cgroup.controllers").is_file() and "pids" in (
            v2 / "cgroup.controllers"
        ).read_text():
            base = v2 / _own_path("")
            if os.access(base, os.W_OK):
                self.base, self.mode = base, "v2"
        if self.base is None:
            v1 = Path(root) / "pids"
            base = v1 / _own_path("pids")
            if (v1 / "cgroup.procs").is_file() and os.access(base, os.W_OK):
                self.base, self.mode = base, "v1"

    def attach(self, name: str, pid: int, pids_max: int) -> str:
        """Put ``pid`` in a new group capped at ``pids_max`` processes; returns a report line."""
        if self.base is None:
            return "process cap: none (no writable pids cgroup)"
        group = self.base / f"plughub-{name}-{pid}"
        try:
            group.mkdir(exist_ok=True)
            (group / "pids.max").write_text(str(pids_max))
            (group / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            return f"process cap: none ({e.strerror or e})"
        return f"process cap: {pids_max} (cgroup {self.mode} pids)"

    def release(self, name: str, pid: int) -> None:
        """Kill whatever is left in the worker's group, then remove the group."""
        if self.base is None:
            return
        group = self.base / f"plughub-{name}-{pid}"
        if not group.is_dir():
            return
        for _ in range(50):
            try:
                pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
            except OSError:
                return
            if not pids:
                break
            for p in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            group.rmdir()
