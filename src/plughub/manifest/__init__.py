"""``plugin.yaml``: the model of a plugin manifest and the loader that reports problems by line.

Typical use::

    from plughub.manifest import load_manifest

    manifest = load_manifest("plugins/weather/plugin.yaml")  # raises ManifestError
    print(manifest.id, manifest.parsed_version, manifest.permissions.summary())
"""

from __future__ import annotations

from ._loader import MANIFEST_FILENAME, MAX_DEPTH, MAX_MANIFEST_BYTES, load_manifest, parse_manifest
from ._model import (
    CredentialSpec,
    Example,
    Expect,
    FieldSpec,
    FieldType,
    FilesystemPermissions,
    Limits,
    Permissions,
    PluginManifest,
    PythonSpec,
    RateLimit,
    Runtime,
    ToolDecl,
    check_values,
    fields_json_schema,
    parse_byte_size,
    parse_rate_limit,
    semver_to_version,
)

__all__ = [
    "MANIFEST_FILENAME",
    "MAX_DEPTH",
    "MAX_MANIFEST_BYTES",
    "CredentialSpec",
    "Example",
    "Expect",
    "FieldSpec",
    "FieldType",
    "FilesystemPermissions",
    "Limits",
    "Permissions",
    "PluginManifest",
    "PythonSpec",
    "RateLimit",
    "Runtime",
    "ToolDecl",
    "check_values",
    "fields_json_schema",
    "load_manifest",
    "parse_byte_size",
    "parse_manifest",
    "parse_rate_limit",
    "semver_to_version",
]
