"""``ServerConfig``: what ``plughub serve`` and ``create_app`` are configured with.

Sources, weakest first: the model's defaults, a YAML/TOML/JSON file (its top level, or its
``server`` table), ``PLUGHUB_*`` environment variables (``ENV_VARS``), then explicit overrides
(the CLI's flags). ``PLUGHUB_PLUGINS_PATH``, ``PLUGHUB_LOAD_PLUGINS`` and ``PLUGHUB_DENY_PLUGINS``
are not listed here: the ``PluginHost`` reads them itself, as everywhere else.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import UsageError
from ..limits import LimitsConfig

__all__ = ["ENV_VARS", "ROLES", "ApiKeySpec", "Role", "ServerConfig", "load_config"]

Role = Literal["admin", "member", "invoke"]
ROLES: tuple[Role, ...] = ("admin", "member", "invoke")

ALL_TENANTS = "*"
"""A key whose tenant is ``*`` acts for any tenant (admin keys only; e.g. the one a Dify API
deployment uses for all its workspaces)."""

_TENANT_RE = re.compile(r"^(?:\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")

#: Environment variable -> ``ServerConfig`` field.
ENV_VARS: dict[str, str] = {
    "PLUGHUB_HOST": "host",
    "PLUGHUB_PORT": "port",
    "PLUGHUB_API_KEYS": "api_keys",
    "PLUGHUB_DATA_DIR": "data_dir",
    "PLUGHUB_HOME": "home",
    "PLUGHUB_STORE_URL": "store_url",
    "PLUGHUB_ENTRY_POINTS": "entry_points",
    "PLUGHUB_DEFAULT_TIMEOUT": "default_timeout",
    "PLUGHUB_DEFAULT_RUNTIME": "default_runtime",
    "PLUGHUB_MAX_BODY_BYTES": "max_body_bytes",
    "PLUGHUB_REQUEST_TIMEOUT": "request_timeout",
    "PLUGHUB_GRACEFUL_TIMEOUT": "graceful_timeout",
    "PLUGHUB_COMPAT_DIALER": "compat_dialer",
    "PLUGHUB_COMPAT_DIFY": "compat_dify",
    "PLUGHUB_METRICS": "metrics",
    "PLUGHUB_DOCS": "docs",
    "PLUGHUB_LOG_LEVEL": "log_level",
    "PLUGHUB_MAX_PACKAGE_BYTES": "max_package_bytes",
    "PLUGHUB_ALLOW_UNSIGNED": "allow_unsigned",
    "PLUGHUB_PACKAGE_INDEXES": "package_indexes",
    "PLUGHUB_GIT_HOSTS": "git_hosts",
    "PLUGHUB_TASK_LEASE_SECONDS": "task_lease_seconds",
}


class ApiKeySpec(BaseModel):
    """One API key: the secret (or ``sha256:<hex>`` of it), its tenant and its role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: SecretStr
    """The key itself, or ``sha256:<64 hex digits>`` of it (so a config file need not hold it)."""
    tenant: str
    role: Role
    id: str | None = None
    """A name for the key in audit records and ``/v1/whoami``; default ``k_`` + 12 hex digits
    of the key's sha256."""

    @field_validator("tenant")
    @classmethod
    def _tenant_ok(cls, v: str) -> str:
        if not _TENANT_RE.match(v):
            raise ValueError(f"tenant {v!r} must match {_TENANT_RE.pattern}")
        return v

    @field_validator("key")
    @classmethod
    def _key_ok(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if not raw or raw != raw.strip():
            raise ValueError("an API key must be non-empty, without surrounding spaces")
        if raw.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-f]{64}", raw):
            raise ValueError("a hashed key must be 'sha256:' + 64 lowercase hex digits")
        return v

    @model_validator(mode="after")
    def _wildcard_is_admin(self) -> ApiKeySpec:
        if self.tenant == ALL_TENANTS and self.role != "admin":
            raise ValueError("only an admin key may have tenant '*'")
        return self

    @classmethod
    def parse(cls, text: str) -> ApiKeySpec:
        """``key:tenant:role`` (the key itself may contain ``:``)."""
        return cls.model_validate(_split_key(text))


def _split_key(text: str) -> dict[str, str]:
    parts = text.strip().rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"API key entries look like 'key:tenant:role', not {_mask(text)!r}")
    key, tenant, role = parts
    return {"key": key, "tenant": tenant, "role": role}


def _mask(text: str) -> str:
    """An API key entry with its secret part hidden, for error messages."""
    head, sep, rest = text.strip().partition(":")
    return f"{head[:2]}***{sep}{rest}" if sep else "***"


class ServerConfig(BaseModel):
    """Settings of the daemon (see docs/api.md#configuration)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = Field(8787, ge=0, le=65535)
    """TCP port (0: any free port)."""
    plugins_dirs: list[Path] = Field(default_factory=list)
    """Plugin folders to serve (plus ``PLUGHUB_PLUGINS_PATH``)."""
    entry_points: bool = True
    """Also serve the ``plughub.plugins`` entry-point group."""
    allow: list[str] | None = None
    """Only these plugin ids/names/globs may load (default ``PLUGHUB_LOAD_PLUGINS``, else all)."""
    deny: list[str] = Field(default_factory=list)
    """These plugins never load (plus ``PLUGHUB_DENY_PLUGINS``)."""
    data_dir: Path | None = None
    """Plugin storage, worker logs and environments (default: ``home``)."""
    home: Path | None = None
    """The daemon's home: installed plugins, the default SQLite store, the credential key file
    (default: ``PLUGHUB_HOME``, else the platform's user data folder)."""
    store_url: str | None = Field(None, repr=False)
    """The store's database: ``sqlite:///path`` or ``postgresql+psycopg://...`` (default: a
    SQLite file ``store.db`` in ``home``)."""
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    """Rate limits, concurrency and their backend (memory, or Redis shared by replicas); the
    ``PLUGHUB_REDIS_URL``/``PLUGHUB_*_RATE`` variables of docs/operators/limits.md apply."""
    default_timeout: float = Field(30.0, gt=0, allow_inf_nan=False)
    """Deadline of tools whose manifest sets none (seconds)."""
    default_runtime: Literal["inprocess", "worker"] = "inprocess"
    """Where plugins without a manifest run."""
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per plugin id or name: settings merged over manifest defaults."""
    credentials: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)
    """Per plugin id or name: credentials (one set for every tenant until the store lands)."""
    grants: dict[str, list[str]] | None = None
    """Per plugin id or name: granted permission tokens (None: what each plugin requests)."""
    api_keys: list[ApiKeySpec] = Field(default_factory=list, repr=False)
    """Accepted API keys (``key:tenant:role`` strings or mappings)."""
    max_body_bytes: int = Field(1 << 20, ge=1)
    """Larger request bodies are refused with 413 before they are read."""
    request_timeout: float = Field(120.0, gt=0, allow_inf_nan=False)
    """A request with no response started after this many seconds gets 504."""
    graceful_timeout: float = Field(30.0, ge=0, allow_inf_nan=False)
    """On shutdown, how long calls in flight may take to finish."""
    compat_dialer: bool = True
    """Serve the AI-Dialer endpoint ``POST /api/plugins/invoke``."""
    compat_dify: bool = True
    """Serve the Dify plugin-daemon endpoint ``POST /plugin/{tenant}/dispatch/tool/invoke``."""
    metrics: bool = True
    """Serve ``GET /metrics``."""
    docs: bool = True
    """Serve the interactive API docs (``/docs``, ``/redoc``); ``/openapi.json`` always."""
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    """uvicorn's log level."""
    max_package_bytes: int = Field(64 << 20, ge=1)
    """Largest ``.plughub`` upload (``POST /v1/packages``); it replaces ``max_body_bytes`` there."""
    allow_unsigned: bool = False
    """Install unsigned packages (uploads, index entries, every git source)."""
    allow_inprocess: bool = False
    """Let tenants grant ``runtime:inprocess`` (plugins running unisolated inside the daemon)."""
    package_indexes: list[str] = Field(default_factory=list)
    """Indexes (URLs, folders) tenants may install from; the first is the default."""
    git_hosts: list[str] = Field(default_factory=list)
    """Hosts of the ``https://`` git repositories tenants may install from (none: no git)."""
    task_lease_seconds: float = Field(60.0, ge=1, le=3600, allow_inf_nan=False)
    """How long a replica owns a package task without renewing it (renewed every third)."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [part for part in v.split(",") if part.strip()]
        if isinstance(v, list):
            return [_split_key(x) if isinstance(x, str) else x for x in v]
        return v

    @field_validator("plugins_dirs", "deny", "package_indexes", "git_hosts", mode="before")
    @classmethod
    def _split_lists(cls, v: Any) -> Any:
        return [p for p in v.split(",") if p.strip()] if isinstance(v, str) else v

    @field_validator("allow", mode="before")
    @classmethod
    def _split_allow(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise UsageError(f"config file {str(path)!r}: use a .yaml, .yml, .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise UsageError(f"config file {str(path)!r} is not valid {suffix[1:]}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {str(path)!r} must hold a mapping of settings")
    out: dict[str, Any] = dict(data)
    server = out.get("server")
    if isinstance(server, dict):
        out = dict(server)
    # Relative folders in a file are relative to the file, not to the server's cwd.
    base = path.resolve().parent
    for key in ("data_dir", "home"):
        if isinstance(out.get(key), str):
            out[key] = str(base / Path(out[key]).expanduser())
    if isinstance(out.get("plugins_dirs"), list):
        out["plugins_dirs"] = [
            str(base / Path(p).expanduser()) if isinstance(p, str) else p
            for p in out["plugins_dirs"]
        ]
    return out


def _format_errors(e: ValidationError, origin: str) -> str:
    problems = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        problems.append(f"{loc}: {err['msg']}")
    return f"invalid server configuration ({origin}): " + "; ".join(problems)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ServerConfig:
    """Build a ``ServerConfig`` from a file, the environment and overrides (``None`` skipped).

    Raises ``UsageError`` naming the source and each bad field.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    origin = []
    if path is not None:
        data.update(_read_file(Path(path)))
        origin.append(str(path))
    for var, field in ENV_VARS.items():
        value = env.get(var)
        if value is not None and value != "":
            data[field] = value
            origin.append(var)
    data.update({k: v for k, v in overrides.items() if v is not None})
    limits = data.pop("limits", None)
    try:
        config = ServerConfig.model_validate(data)
    except ValidationError as e:
        raise UsageError(_format_errors(e, ", ".join(origin) or "defaults")) from None
    if isinstance(limits, LimitsConfig):
        config.limits = limits
        return config
    if limits is not None and not isinstance(limits, Mapping):
        raise UsageError("invalid server configuration: limits must be a table of settings")
    try:  # the limits' own variables (PLUGHUB_REDIS_URL, PLUGHUB_TENANT_RATE...) over the file
        config.limits = LimitsConfig.from_env(env, limits)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return config
