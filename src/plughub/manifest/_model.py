"""The pydantic model of ``plugin.yaml``.

Every model forbids unknown fields (a typo must not silently turn into a default), is frozen
(a loaded manifest is a value, shared between the host, the CLI and workers) and is strict (YAML
already gives values their types; ``subprocess: "yes"`` is a mistake, not ``True``).

Validators that need to point at a place *below* the field they check (the second of two tools
with the same name, the ``default`` of one setting) raise a ``ValidationError`` whose ``loc`` is
relative to that field; pydantic prefixes it with the enclosing location, so the loader can
report the exact line.
"""

from __future__ import annotations

import ipaddress
import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, NoReturn

import jsonschema
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
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
    "fields_json_schema",
    "parse_byte_size",
    "parse_rate_limit",
    "semver_to_version",
]

Runtime = Literal["inprocess", "worker", "mcp", "dify"]
FieldType = Literal["string", "integer", "number", "boolean", "array", "object"]

# --------------------------------------------------------------------------------------------
# Patterns and small parsers
# --------------------------------------------------------------------------------------------

_ID_PART = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,64}", re.ASCII)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}", re.ASCII)
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.ASCII)
_SEMVER = re.compile(
    r"(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*)"
    r"(?:-(?P<pre>(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)
_SEMVER_PRE = re.compile(r"(alpha|a|beta|b|rc|c|pre|preview|dev)([0-9]*)", re.ASCII)
_PEP440_PRE = {
    "alpha": "a",
    "a": "a",
    "beta": "b",
    "b": "b",
    "rc": "rc",
    "c": "rc",
    "pre": "rc",
    "preview": "rc",
}
_RATE = re.compile(
    r"(?P<count>[0-9]+)\s*/\s*(?P<n>[0-9]+(?:\.[0-9]+)?)?\s*(?P<unit>[a-zA-Z]+)", re.ASCII
)
_RATE_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}
_SIZE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[a-zA-Z]*)", re.ASCII)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def semver_to_version(version: str) -> Version:
    """Convert a semantic version to a ``packaging`` ``Version`` that sorts the same way.

    Pre-release tags ``alpha``/``a``, ``beta``/``b``, ``rc``/``c``/``pre``/``preview`` and
    ``dev``, optionally followed by a number (``beta.2`` or ``beta2``), map to their PEP 440
    equivalents (``b2``). Any other pre-release (``1.0.0-x.7.z``) becomes ``.dev0``: it still
    sorts before the release, but such pre-releases are not ordered among themselves. Build
    metadata (``+build.5``) is dropped because semver ignores it for precedence while PEP 440
    would not. Raises ``ValueError`` if ``version`` is not semver.
    """
    m = _SEMVER.fullmatch(version)
    if m is None:
        raise ValueError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    base = f"{m['major']}.{m['minor']}.{m['patch']}"
    pre = m["pre"]
    if pre is None:
        return Version(base)
    ids = pre.split(".")
    tag = _SEMVER_PRE.fullmatch(ids[0].lower())
    number: str | None = None
    if tag is not None:
        if len(ids) == 1:
            number = tag[2] or "0"
        elif len(ids) == 2 and not tag[2] and ids[1].isdigit():
            number = ids[1]
    if tag is None or number is None:
        return Version(f"{base}.dev0")
    if tag[1] == "dev":
        return Version(f"{base}.dev{int(number)}")
    return Version(f"{base}{_PEP440_PRE[tag[1]]}{int(number)}")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` calls in any window of ``per_seconds`` seconds."""

    count: int
    per_seconds: float


def parse_rate_limit(text: str) -> RateLimit:
    """Parse ``"60/minute"``, ``"5/s"``, ``"100/m"``, ``"2/day"`` or ``"10/30s"``.

    Units: ``s``/``sec``/``second(s)``, ``m``/``min``/``minute(s)``, ``h``/``hr``/``hour(s)``,
    ``d``/``day(s)``; an optional number before the unit multiplies it. Raises ``ValueError``.
    """
    m = _RATE.fullmatch(text.strip())
    unit = _RATE_UNITS.get(m["unit"].lower()) if m else None
    if m is None or unit is None:
        raise ValueError(
            f"{text!r} is not a rate limit; write COUNT/UNIT such as '60/minute', '10/second', "
            "'1000/hour', '5/s' or '2/day'"
        )
    count = int(m["count"])
    multiplier = float(m["n"]) if m["n"] else 1.0
    if count < 1 or multiplier <= 0:
        raise ValueError(f"{text!r}: the count and the period must be greater than 0")
    return RateLimit(count=count, per_seconds=multiplier * unit)


def parse_byte_size(value: int | str) -> int:
    """Turn ``1024``, ``"1024"``, ``"10MB"``, ``"512KiB"`` or ``"1.5 GB"`` into bytes.

    ``KB``/``MB``/``GB``/``TB`` are powers of 1000, ``KiB``/``MiB``/``GiB``/``TiB`` powers of
    1024; units are case-insensitive and fractions round down. Raises ``ValueError``.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            f"a size must be a whole number of bytes or a string like '10MB', got {value!r}"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    m = _SIZE.fullmatch(value.strip())
    factor = _SIZE_UNITS.get(m["unit"].lower()) if m else None
    if m is None or factor is None:
        raise ValueError(
            f"{value!r} is not a size; write a number of bytes or a number with a unit "
            "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. '10MB' or '512KiB'"
        )
    try:
        return int(Decimal(m["num"]) * factor)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"{value!r} is not a size") from exc


def _format_size(n: int) -> str:
    for factor, unit in ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    for factor, unit in ((1000**4, "TB"), (1000**3, "GB"), (1000**2, "MB"), (1000, "kB")):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


def _fail(errors: list[tuple[tuple[str | int, ...], str, Any]]) -> NoReturn:
    """Raise validation errors at ``loc`` paths relative to the field being validated."""
    raise ValidationError.from_exception_data(
        "PluginManifest",
        [
            InitErrorDetails(
                type=PydanticCustomError("manifest", "{reason}", {"reason": message}),
                loc=loc,
                input=value,
            )
            for loc, message, value in errors
        ],
    )


# --------------------------------------------------------------------------------------------
# Annotated string types
# --------------------------------------------------------------------------------------------


def _check_plugin_id(value: str) -> str:
    author, sep, name = value.partition("/")
    if not sep or not _ID_PART.fullmatch(author) or not _ID_PART.fullmatch(name):
        raise ValueError(
            f"{value!r} is not a plugin id; write 'author/name', each part 1-64 characters of "
            "lowercase letters, digits, '_' and '-', starting with a letter or digit"
        )
    return value


def _check_semver(value: str) -> str:
    if not _SEMVER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a semantic version; write MAJOR.MINOR.PATCH, optionally with a "
            "pre-release and build, e.g. '1.2.0' or '2.0.0-beta.1'"
        )
    return value


def _check_specifier(value: str) -> str:
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(
            f"{value!r} is not a version specifier; write e.g. '>=1.2', '>=1,<2' or '~=1.4' "
            "(or '' for any version)"
        ) from None
    return value


def _check_requirement(value: str) -> str:
    try:
        Requirement(value)
    except InvalidRequirement as exc:
        raise ValueError(f"{value!r} is not a PEP 508 requirement: {exc}") from None
    return value


def _check_entrypoint(value: str) -> str:
    module, sep, attr = value.partition(":")
    parts = module.split(".")
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts) or (
        sep and not (attr.isidentifier() and not keyword.iskeyword(attr))
    ):
        raise ValueError(
            f"{value!r} is not an entrypoint; write 'package.module:attribute' or "
            "'package.module' (the module then holds the @tool functions)"
        )
    return value


def _check_tool_name(value: str) -> str:
    if not _TOOL_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a tool name; use 1-64 letters, digits, '_', '.' or '-'")
    return value


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an environment variable name (letters, digits and '_', "
            "not starting with a digit)"
        )
    return value


def _check_field_name(value: str) -> str:
    if not _FIELD_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name; use 1-64 letters, digits and '_', "
            "not starting with a digit"
        )
    return value


def _check_relative_path(value: str) -> str:
    if not value or "\0" in value:
        raise ValueError("must be a non-empty path")
    if value.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", value) or "://" in value:
        raise ValueError(f"{value!r} must be a path relative to the plugin directory")
    if ".." in re.split(r"[/\\]", value):
        raise ValueError(f"{value!r} must not contain '..'; it must stay inside the plugin")
    return value


def _check_fs_path(value: str) -> str:
    if not value.strip() or "\0" in value:
        raise ValueError("must be a non-empty path")
    return value


def _check_tag(value: str) -> str:
    if not value.strip() or len(value) > 64:
        raise ValueError("a tag must be 1-64 characters and not blank")
    return value


def _check_hook(value: str) -> str:
    if not value.isidentifier() or keyword.iskeyword(value):
        raise ValueError(f"{value!r} is not a hook name (a Python identifier)")
    return value


def _check_homepage(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+\S*", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    labels = host.split(".")
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _check_network(value: str) -> str:
    """Validate one ``permissions.network`` entry and return it lower-cased."""
    if not value or not value.strip():
        raise ValueError("a network entry must not be empty")
    if "://" in value:
        host = value.split("://", 1)[1].split("/", 1)[0]
        raise ValueError(
            f"{value!r} is a URL; give only the host (and optional port), e.g. {host!r}"
        )
    entry = value.lower()
    if entry == "*":
        return entry
    if "/" in entry or any(c.isspace() for c in entry):
        raise ValueError(f"{value!r} must be a host name without a path, e.g. 'api.example.com'")
    port: str | None = None
    if entry.startswith("["):
        m = re.fullmatch(r"\[([0-9a-f:.]+)\](?::([0-9]+))?", entry)
        if m is None:
            raise ValueError(f"{value!r} is not a valid '[IPv6]:port' entry")
        host, port = m[1], m[2]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r} does not hold a valid IPv6 address") from None
    elif entry.count(":") > 1:
        raise ValueError(f"write IPv6 addresses in brackets, e.g. '[{value}]'")
    else:
        host, sep, port_text = entry.partition(":")
        port = port_text if sep else None
        bare = host[2:] if host.startswith("*.") else host
        if not _is_host(bare):
            raise ValueError(
                f"{value!r} is not a host name; write 'api.example.com', '*.example.com' "
                "or 'host:port'"
            )
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{value!r} has an invalid port (1-65535)")
    return entry


def _size_before(value: Any) -> Any:
    return parse_byte_size(value) if isinstance(value, str) else value


def _text_contains_before(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError("must be a string or a list of strings")


def _check_rate_limit(value: str) -> str:
    parse_rate_limit(value)
    return value


PluginId = Annotated[str, AfterValidator(_check_plugin_id)]
SemVer = Annotated[str, AfterValidator(_check_semver)]
Specifier = Annotated[str, AfterValidator(_check_specifier)]
RequirementStr = Annotated[str, AfterValidator(_check_requirement)]
ToolName = Annotated[str, AfterValidator(_check_tool_name)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
FieldName = Annotated[str, AfterValidator(_check_field_name)]
NetworkEntry = Annotated[str, AfterValidator(_check_network)]
FsPath = Annotated[str, AfterValidator(_check_fs_path)]
ByteSize = Annotated[int, BeforeValidator(_size_before)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True
    )


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


class PythonSpec(_Model):
    """What the plugin needs from Python, so the host can refuse or build an environment."""

    requires: Specifier | None = None
    """PEP 440 specifier the interpreter version must satisfy, e.g. ``">=3.11"``."""
    requirements: list[RequirementStr] = []
    """PEP 508 requirements installed into the plugin's environment (worker runtime)."""


class FilesystemPermissions(_Model):
    """Paths the plugin may read or write; the host decides how to interpret and enforce them."""

    read: list[FsPath] = []
    """Paths (or host-defined placeholders) the plugin may read."""
    write: list[FsPath] = []
    """Paths (or host-defined placeholders) the plugin may write."""


class Permissions(_Model):
    """What the plugin asks to be allowed to do; shown to the user before it is enabled."""

    network: list[NetworkEntry] = []
    """Hosts it may contact: ``api.example.com``, ``*.example.com``, ``host:port``, or ``*``."""
    filesystem: FilesystemPermissions = Field(default_factory=FilesystemPermissions)
    """Filesystem access beyond its own directory."""
    subprocess: bool = False
    """Whether it may start other processes."""
    llm: bool = False
    """Whether it may call the host's language model."""
    storage: Annotated[ByteSize, Field(ge=0)] | None = None
    """Persistent storage quota in bytes (``"10MB"`` and ``"512KiB"`` accepted); None: none."""
    env: list[EnvName] = []
    """Environment variables it may read."""

    @property
    def is_empty(self) -> bool:
        """True when the plugin asks for nothing at all."""
        fs = self.filesystem
        return not (
            self.network
            or fs.read
            or fs.write
            or self.subprocess
            or self.llm
            or self.storage is not None
            or self.env
        )

    def summary(self) -> list[str]:
        """One human-readable line per permission, e.g. ``network: api.example.com``."""
        lines: list[str] = []
        if self.network:
            hosts = ", ".join("any host" if h == "*" else h for h in self.network)
            lines.append(f"network: {hosts}")
        if self.filesystem.read:
            lines.append(f"filesystem read: {', '.join(self.filesystem.read)}")
        if self.filesystem.write:
            lines.append(f"filesystem write: {', '.join(self.filesystem.write)}")
        if self.subprocess:
            lines.append("subprocess: may start other programs")
        if self.llm:
            lines.append("llm: may call the host's language model")
        if self.storage is not None:
            lines.append(f"storage: {_format_size(self.storage)}")
        if self.env:
            lines.append(f"env: {', '.join(self.env)}")
        return lines


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _matches(value: Any, field_type: str) -> bool:
    if isinstance(value, bool) and field_type != "boolean":
        return False
    return isinstance(value, _JSON_TYPES[field_type])


class FieldSpec(_Model):
    """One user-supplied setting: its type, documentation, default and where it may come from."""

    type: FieldType = "string"
    """JSON type of the value."""
    description: str = ""
    """Shown to the user who configures the plugin."""
    default: Any = None
    """Value used when none is configured (None: no default)."""
    required: bool = False
    """Whether the plugin refuses to start without a value."""
    secret: bool = False
    """Whether the value must be masked in output and logs."""
    enum: list[Any] | None = None
    """The only values allowed, if given."""
    env: EnvName | None = None
    """Environment variable that supplies the value when it is not configured."""

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
        if self.default is not None and not _matches(self.default, self.type):
            errors.append((("default",), f"default must be of type {self.type!r}", self.default))
        if self.enum is not None:
            if not self.enum:
                errors.append((("enum",), "enum must list at least one value", self.enum))
            for i, item in enumerate(self.enum):
                if not _matches(item, self.type):
                    errors.append((("enum", i), f"enum value must be of type {self.type!r}", item))
            if self.default is not None and self.default not in self.enum:
                errors.append(
                    (("default",), "default must be one of the enum values", self.default)
                )
        if errors:
            _fail(errors)
        return self


class CredentialSpec(FieldSpec):
    """A credential (API key, token): a :class:`FieldSpec` whose ``secret`` defaults to True."""

    secret: bool = True
    """Credentials are masked unless the manifest explicitly says otherwise."""


def check_values(
    fields: Mapping[str, FieldSpec], values: Mapping[str, Any], *, partial: bool = False
) -> list[str]:
    """Problems of ``values`` (settings or credentials) against the manifest's ``fields``:
    unknown names, missing required ones (unless ``partial``), wrong types, values outside an
    enum. Messages never quote a secret field's value."""
    problems = []
    for name, value in values.items():
        spec = fields.get(name)
        if spec is None:
            known = ", ".join(sorted(fields)) or "none"
            problems.append(f"unknown field {name!r} (the plugin declares: {known})")
        elif value is None:
            continue
        elif not _matches(value, spec.type):
            problems.append(f"{name!r} must be of type {spec.type!r}")
        elif spec.enum is not None and value not in spec.enum:
            shown = "" if spec.secret else f" {value!r} is not one of {spec.enum!r}"
            problems.append(f"{name!r}: value not allowed{':' if shown else ''}{shown}")
    if not partial:
        for name, spec in fields.items():
            if spec.required and values.get(name) in (None, "") and spec.default is None:
                problems.append(f"{name!r} is required")
    return problems


def fields_json_schema(fields: Mapping[str, FieldSpec]) -> dict[str, Any]:
    """A JSON Schema object describing ``settings`` or ``credentials``.

    Secret fields are ``writeOnly`` (and ``format: password`` when they are strings) and never
    expose their default.
    """
    properties: dict[str, Any] = {}
    for name, spec in fields.items():
        prop: dict[str, Any] = {"type": spec.type}
        if spec.description:
            prop["description"] = spec.description
        if spec.default is not None and not spec.secret:
            prop["default"] = spec.default
        if spec.enum is not None:
            prop["enum"] = list(spec.enum)
        if spec.secret:
            prop["writeOnly"] = True
            if spec.type == "string":
                prop["format"] = "password"
        properties[name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    required = [name for name, spec in fields.items() if spec.required]
    if required:
        schema["required"] = required
    return schema


class Limits(_Model):
    """Bounds the host enforces on every call, protecting itself and upstream services."""

    timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """Seconds a single call may take before it is cancelled."""
    concurrency: Annotated[int, Field(ge=1)] | None = None
    """Calls that may run at the same time (None: no limit)."""
    rate_limit: Annotated[str, AfterValidator(_check_rate_limit)] | None = None
    """Calls allowed per period, e.g. ``"60/minute"``; see :func:`parse_rate_limit`."""
    cacheable: bool = False
    """Whether results may be cached (the tools are pure functions of their arguments)."""
    cache_ttl: Annotated[float, Field(ge=0)] = 0.0
    """Seconds a cached result stays valid (0: for the life of the host)."""
    max_argument_bytes: Annotated[ByteSize, Field(gt=0)] = 1_048_576
    """Largest serialized arguments accepted."""
    max_output_bytes: Annotated[ByteSize, Field(gt=0)] = 16_777_216
    """Largest serialized result accepted."""
    memory: Annotated[ByteSize, Field(gt=0)] | None = None
    """Address-space limit of the plugin's worker process (capped by the operator)."""
    cpu_seconds: Annotated[int, Field(gt=0)] | None = None
    """CPU time the worker process may use in its life (capped by the operator)."""
    open_files: Annotated[int, Field(gt=0)] | None = None
    """File descriptors the worker may hold (capped by the operator)."""
    processes: Annotated[int, Field(gt=0)] | None = None
    """Processes/threads the worker may run (capped by the operator)."""

    @property
    def parsed_rate_limit(self) -> RateLimit | None:
        """``rate_limit`` as a :class:`RateLimit`, or None."""
        return None if self.rate_limit is None else parse_rate_limit(self.rate_limit)


def _default_input_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


def _check_schema(schema: dict[str, Any]) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None


class ToolDecl(_Model):
    """A tool declared in the manifest, for runtimes whose tools are not Python functions."""

    name: ToolName
    """Name the model calls the tool by."""
    description: str = ""
    """What the tool does, for the model."""
    input_schema: dict[str, Any] = Field(default_factory=_default_input_schema)
    """JSON Schema of the arguments object."""
    output_schema: dict[str, Any] | None = None
    """JSON Schema of the structured result, if any."""

    @field_validator("input_schema")
    @classmethod
    def _input_schema_ok(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_schema(value)
        if value.get("type", "object") != "object":
            raise ValueError("input_schema must describe an object (type: object)")
        return value

    @field_validator("output_schema")
    @classmethod
    def _output_schema_ok(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            _check_schema(value)
        return value


def _mismatch(expected: Any, actual: Any, where: str, *, subset: bool) -> str | None:
    """Where ``actual`` differs from ``expected`` (None if it does not).

    With ``subset``, mappings in ``actual`` may hold extra keys at any depth; lists always match
    element by element and in full. ``True`` never equals ``1``.
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected a mapping, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{where}.{key}: missing"
            problem = _mismatch(value, actual[key], f"{where}.{key}", subset=subset)
            if problem:
                return problem
        extra = [key for key in actual if key not in expected]
        if extra and not subset:
            return f"{where}: unexpected keys {', '.join(map(str, extra))}"
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{where}: expected {expected!r}, got {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problem = _mismatch(e, a, f"{where}.{i}", subset=subset)
            if problem:
                return problem
        return None
    same = expected == actual
    if isinstance(expected, bool) or isinstance(actual, bool):
        same = same and type(expected) is type(actual)
    return None if same else f"{where}: expected {expected!r}, got {actual!r}"


class Expect(_Model):
    """What an example call must produce; lets ``plughub test`` check a plugin end to end."""

    is_error: bool = False
    """Whether the result must be an error."""
    text_contains: Annotated[str | list[str] | None, BeforeValidator(_text_contains_before)] = None
    """Text (or every text in a list) that must occur in the result's text."""
    structured: Any = None
    """Exact structured result. Checked only when the key is present, so ``null`` is checkable."""
    structured_subset: dict[str, Any] | None = None
    """Keys and values (recursively) the structured result must contain; lists match in full."""

    @property
    def checks_structured(self) -> bool:
        """True when ``structured`` was written in the manifest (even as ``null``)."""
        return "structured" in self.model_fields_set

    def mismatches(self, *, is_error: bool, text: str, structured: Any) -> list[str]:
        """Why a result does not meet this expectation (empty when it does)."""
        problems: list[str] = []
        if is_error != self.is_error:
            problems.append(f"expected is_error={self.is_error}, got {is_error}")
        needles = self.text_contains
        if isinstance(needles, str):
            needles = [needles]
        for needle in needles or ():
            if needle not in text:
                problems.append(f"text does not contain {needle!r}")
        checks: list[tuple[Any, bool]] = []
        if self.checks_structured:
            checks.append((self.structured, False))
        if self.structured_subset is not None:
            checks.append((self.structured_subset, True))
        for expected, subset in checks:
            problem = _mismatch(expected, structured, "structured", subset=subset)
            if problem is not None:
                problems.append(problem)
        return problems


class Example(_Model):
    """A sample call: documentation for users and models, and a test case for the plugin."""

    tool: ToolName
    """The tool to call."""
    args: dict[str, Any] = {}
    """Arguments to call it with."""
    expect: Expect | None = None
    """What the call must return (None: only that it does not crash the host)."""


# --------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------


class PluginManifest(_Model):
    """The parsed ``plugin.yaml``: who the plugin is, how to run it and what it may do."""

    manifest_version: int = 1
    """Format version of this file; only 1 exists."""
    id: PluginId
    """Globally unique ``author/name``."""
    version: SemVer
    """Semantic version of the plugin (see :attr:`parsed_version`)."""
    description: str = ""
    """One paragraph for users and catalogues."""
    author_name: str | None = None
    """Display name of the author."""
    homepage: Annotated[str, AfterValidator(_check_homepage)] | None = None
    """Project URL."""
    license: str | None = None
    """License identifier, e.g. ``MIT``."""
    icon: Annotated[str, AfterValidator(_check_relative_path)] | None = None
    """Icon file, relative to the plugin directory."""
    tags: list[Annotated[str, AfterValidator(_check_tag)]] = []
    """Keywords for search."""
    runtime: Runtime = "inprocess"
    """Where the tools run: in the host, in a worker process, an MCP server, or Dify."""
    entrypoint: Annotated[str, AfterValidator(_check_entrypoint)] | None = Field(
        default=None, validate_default=True
    )
    """``module:attr`` or ``module``; required for the ``inprocess`` and ``worker`` runtimes."""
    python: PythonSpec = Field(default_factory=PythonSpec)
    """Python version and packages the plugin needs."""
    dependencies: dict[PluginId, Specifier] = {}
    """Other plugins this one needs: id -> version specifier (``""``: any version)."""
    permissions: Permissions = Field(default_factory=Permissions)
    """What the plugin may do."""
    settings: dict[FieldName, FieldSpec] = {}
    """Configuration the user may supply."""
    credentials: dict[FieldName, CredentialSpec] = {}
    """Secrets the user must supply; masked by default."""
    limits: Limits = Field(default_factory=Limits)
    """Per-call bounds."""
    tools: list[ToolDecl] = []
    """Declared tools, for runtimes whose tools are not discovered from Python."""
    examples: list[Example] = []
    """Sample calls, used as documentation and as tests."""
    hooks: list[Annotated[str, AfterValidator(_check_hook)]] = []
    """Host hooks the plugin implements (checked when it loads)."""
    min_plughub: Specifier | None = None
    """Specifier the plughub version must satisfy."""

    @field_validator("manifest_version")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported manifest_version {value}; this plughub reads version 1")
        return value

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_needed(cls, value: str | None, info: ValidationInfo) -> str | None:
        runtime = info.data.get("runtime")
        if value is None and runtime in ("inprocess", "worker"):
            raise ValueError(f"entrypoint is required when runtime is {runtime!r}")
        return value

    @field_validator("dependencies")
    @classmethod
    def _not_self(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        own = info.data.get("id")
        if own is not None and own in value:
            _fail([((own,), "a plugin cannot depend on itself", value[own])])
        return value

    @field_validator("settings", "credentials")
    @classmethod
    def _no_clash(cls, value: dict[str, FieldSpec], info: ValidationInfo) -> dict[str, FieldSpec]:
        if info.field_name == "credentials":
            clash = sorted(set(value) & set(info.data.get("settings") or {}))
            if clash:
                _fail([((n,), f"{n!r} is both a setting and a credential", n) for n in clash])
        return value

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[ToolDecl]) -> list[ToolDecl]:
        first: dict[str, int] = {}
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
        for i, tool in enumerate(value):
            if tool.name in first:
                errors.append(
                    (
                        (i, "name"),
                        f"duplicate tool name {tool.name!r} "
                        f"(first declared as tools.{first[tool.name]})",
                        tool.name,
                    )
                )
            else:
                first[tool.name] = i
        if errors:
            _fail(errors)
        return value

    @field_validator("examples")
    @classmethod
    def _examples_name_tools(cls, value: list[Example], info: ValidationInfo) -> list[Example]:
        tools: list[ToolDecl] = info.data.get("tools") or []
        if not tools:
            return value  # tools come from code; checked when the plugin loads
        known = {t.name for t in tools}
        errors: list[tuple[tuple[str | int, ...], str, Any]] = [
            (
                (i, "tool"),
                f"example names tool {ex.tool!r}, which is not declared in tools "
                f"(declared: {', '.join(sorted(known))})",
                ex.tool,
            )
            for i, ex in enumerate(value)
            if ex.tool not in known
        ]
        if errors:
            _fail(errors)
        return value

    @property
    def author(self) -> str:
        """The part of ``id`` before the slash."""
        return self.id.partition("/")[0]

    @property
    def name(self) -> str:
        """The part of ``id`` after the slash."""
        return self.id.partition("/")[2]

    @property
    def parsed_version(self) -> Version:
        """``version`` as a PEP 440 ``Version``; see :func:`semver_to_version` for the mapping."""
        return semver_to_version(self.version)

    @property
    def entrypoint_module(self) -> str | None:
        """The module part of ``entrypoint``."""
        return None if self.entrypoint is None else self.entrypoint.partition(":")[0]

    @property
    def entrypoint_attr(self) -> str | None:
        """The attribute part of ``entrypoint``; None when the module itself holds the tools."""
        if self.entrypoint is None:
            return None
        return self.entrypoint.partition(":")[2] or None

    def settings_schema(self) -> dict[str, Any]:
        """JSON Schema of the ``settings`` object."""
        return fields_json_schema(self.settings)

    def credentials_schema(self) -> dict[str, Any]:
        """JSON Schema of the ``credentials`` object."""
        return fields_json_schema(self.credentials)
