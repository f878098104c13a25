"""The worker runtime: each plugin in its own supervised, sandboxed process.

See ``docs/runtime.md`` for the protocol, the lifecycle and exactly what is isolated how.
"""

from ._process import LaunchSpec, WorkerCrashed, WorkerProcess, memory_of
from ._protocol import FrameDecoder, ProtocolError, encode
from ._runtime import WorkerPlugin, WorkerRuntime
from ._supervisor import CircuitOpen, Supervisor, WorkerConfig, WorkerState

__all__ = [
    "CircuitOpen",
    "FrameDecoder",
    "LaunchSpec",
    "ProtocolError",
    "Supervisor",
    "WorkerConfig",
    "WorkerCrashed",
    "WorkerPlugin",
    "WorkerProcess",
    "WorkerRuntime",
    "WorkerState",
    "encode",
    "memory_of",
]
