"""Deadlines for synchronous tools that run inline in the caller's thread.

A thread hop per call would cost 20-70 us on a 2-vCPU machine (two cross-core wake-ups), far more
than the rest of the pipeline, so sync tools run in the calling thread. To still honour their
deadline, one watchdog thread raises ``DeadlineExceeded`` inside the calling thread when the
deadline passes (``PyThreadState_SetAsyncExc``). This interrupts Python code (loops, repeated
short sleeps); a single call blocked inside C (e.g. ``time.sleep(3600)``) is interrupted when it
returns. Hard guarantees come from the worker runtime, which can kill a process.

Arming and disarming cost a dict write under an uncontended lock; the watchdog wakes only when
the earliest deadline passes.
"""

from __future__ import annotations

import ctypes
import threading
import time
from threading import get_ident

__all__ = ["DeadlineExceeded", "Watchdog", "watchdog"]

_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
# The same C function with a NULL exception clears one that is pending but not yet raised.
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


class DeadlineExceeded(BaseException):
    """Raised inside a tool whose deadline passed (a BaseException so ``except Exception``
    in plugin code does not swallow it)."""


class Watchdog:
    """One background thread that enforces the deadlines of inline calls.

    The common path (arm, call returns in time, disarm) takes no lock: a dict write and a dict
    pop, both atomic under the GIL. Only a fired deadline takes the lock, so that the watchdog
    raising and the caller clearing a not-yet-delivered exception cannot interleave.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._deadlines: dict[int, float] = {}
        self._next_wake = float("inf")
        self._latest = 0.0
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> tuple[int, float | None]:
        """Watch the calling thread until ``deadline``; returns a token for ``disarm``."""
        tid = get_ident()
        prev = self._deadlines.get(tid)
        if prev is not None and prev < deadline:
            deadline = prev  # a nested call never outlives the call around it
        self._deadlines[tid] = deadline
        self._latest = max(self._latest, deadline)
        if deadline < self._next_wake:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="plughub-watchdog", daemon=True
                    )
                    self._thread.start()
                self._next_wake = deadline
                self._wake.notify()
        return tid, prev

    def disarm(self, token: tuple[int, float | None]) -> bool:
        """Stop watching; True when the deadline fired (a pending exception is cleared)."""
        tid, prev = token
        fired = self._deadlines.pop(tid, None) is None
        if fired:
            with self._lock:  # wait until the watchdog has finished raising
                _clear_async_exc(tid, None)
        if prev is not None:
            self._deadlines[tid] = prev
        return fired

    def interrupt(self, tid: int) -> bool:
        """Make the call running in thread ``tid`` hit its deadline now (used for cancel)."""
        with self._lock:
            if tid not in self._deadlines:
                return False
            self._deadlines[tid] = 0.0
            self._next_wake = 0.0
            self._wake.notify()
        return True

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                nearest = float("inf")
                for tid, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        if self._deadlines.pop(tid, None) is not None:
                            _set_async_exc(tid, DeadlineExceeded)
                    elif deadline < nearest:
                        nearest = deadline
                if nearest == float("inf") and self._latest > now:
                    # Idle: sleep until the latest deadline handed out so far rather than for
                    # ever, so the next arm (with a later deadline) needs no wake-up. That is
                    # about one wake per timeout period instead of one per call.
                    nearest = self._latest
                self._next_wake = nearest
                self._wake.wait(None if nearest == float("inf") else nearest - now)


watchdog = Watchdog()
