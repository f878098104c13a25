"""What plugin code imports: ``tool``, ``Plugin``, ``Context``, results and ``ToolError``.

Kept light on purpose (pydantic and pluggy only): it is imported by every worker process.
"""

from ._context import Context, FileAccess, MemoryStorage, Storage, StorageQuotaExceeded
from ._hooks import AuditEvent, Deny, Invocation, ModifyArgs
from ._plugin import Plugin, hookimpl
from ._results import (
    Blob,
    Content,
    Image,
    Json,
    Link,
    LogEntry,
    Progress,
    Text,
    ToolError,
    ToolResult,
)
from ._spec import ToolSpec
from ._tool import tool

__all__ = [
    "AuditEvent",
    "Blob",
    "Content",
    "Context",
    "Deny",
    "FileAccess",
    "Image",
    "Invocation",
    "Json",
    "Link",
    "LogEntry",
    "MemoryStorage",
    "ModifyArgs",
    "Plugin",
    "Progress",
    "Storage",
    "StorageQuotaExceeded",
    "Text",
    "ToolError",
    "ToolResult",
    "ToolSpec",
    "hookimpl",
    "tool",
]
