"""The host: discovery, dependency checks, the catalog and the invoke pipeline."""

from ._formats import FORMATS, CatalogEntry, llm_name
from ._host import PluginHost, PluginInfo, permission_tokens
from ._pipeline import Bound

__all__ = [
    "FORMATS",
    "Bound",
    "CatalogEntry",
    "PluginHost",
    "PluginInfo",
    "llm_name",
    "permission_tokens",
]
