"""The host: discovery, dependency checks, the catalog and the invoke pipeline."""

from ._formats import FORMATS, CatalogEntry, llm_name
from ._host import PluginHost
from ._pipeline import Bound
from ._records import PluginInfo, permission_tokens
from ._scope import CallScope

__all__ = [
    "FORMATS",
    "Bound",
    "CallScope",
    "CatalogEntry",
    "PluginHost",
    "PluginInfo",
    "llm_name",
    "permission_tokens",
]
