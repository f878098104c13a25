"""Request and response bodies, as pydantic models (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AUTH_ERRORS",
    "CredentialsIn",
    "DialerInvokeRequest",
    "DifyInvokeRequest",
    "DifyToolInvokeData",
    "ErrorBody",
    "Health",
    "InstallationPatch",
    "InvokeRequest",
    "InvokeResult",
    "KeyIn",
    "PluginDetail",
    "PluginSummary",
    "Readiness",
    "TenantIn",
    "ToolOut",
    "ToolsOut",
    "WhoAmI",
]


class InvokeRequest(BaseModel):
    """The body of ``POST .../invoke`` and ``.../invoke-stream``."""

    model_config = ConfigDict(extra="forbid")

    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The tool's arguments (validated by the host)."
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="Seconds; can only shorten the tool's own deadline.",
    )


class InvokeResult(BaseModel):
    """A tool's result. A tool failure is a result with ``is_error`` true, not an HTTP error."""

    is_error: bool
    content: list[dict[str, Any]] = Field(
        description="Content blocks: text, json, image, blob, link (see docs/host-api.md)."
    )
    structured: Any = Field(default=None, description="The JSON value programs read.")
    reason: str | None = Field(
        default=None, description="Machine-readable failure code when is_error."
    )
    meta: dict[str, Any] | None = Field(default=None, description="Extra data, e.g. retry_after.")


class ErrorBody(BaseModel):
    """An HTTP error of the ``/v1`` API."""

    detail: str
    code: str


#: The answers every authenticated route may give before it does anything (OpenAPI ``responses``).
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid API key."},
    403: {"model": ErrorBody, "description": "The key's role does not allow this."},
    429: {"model": ErrorBody, "description": "Rate limited (see Retry-After)."},
}


class PluginSummary(BaseModel):
    """One plugin in ``GET /v1/plugins``."""

    id: str
    name: str
    version: str
    description: str
    style: str
    runtime: str
    status: str = Field(description="available, loaded, failed, denied or disabled.")
    error: str | None
    tools: list[str] | None = Field(description="Tool names once the plugin is loaded.")
    permissions: list[str]
    aliases: list[str]
    source: str | None = Field(default=None, description="Where it was found (admin keys only).")
    granted: list[str] | None = Field(
        default=None, description="Granted permissions (admin keys only)."
    )


class ToolOut(BaseModel):
    """One tool of a plugin."""

    name: str
    llm_name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any]
    streaming: bool


class PluginDetail(PluginSummary):
    """``GET /v1/plugins/{author}/{name}``: the plugin (loaded) and its tools."""

    tool_specs: list[ToolOut]


class ToolsOut(BaseModel):
    """``GET /v1/tools``: tool definitions in one provider's format."""

    format: str
    tools: list[dict[str, Any]]


class WhoAmI(BaseModel):
    tenant_id: str
    key_id: str
    role: str
    scopes: list[str]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    plugins: int = 0
    calls_in_flight: int = 0


class DialerInvokeRequest(BaseModel):
    """The AI-Dialer backend's ``POST /api/plugins/invoke`` body."""

    plugin: str = Field(min_length=1, description="The plugin's class name (or a plughub id).")
    context: dict[str, Any] = Field(
        default_factory=dict, description="Passed to the plugin's execute(context)."
    )


class DifyToolInvokeData(BaseModel):
    """``data`` of a Dify tool invoke."""

    model_config = ConfigDict(extra="allow")

    provider: str = Field(description="The provider name: the plugin's name.")
    tool: str
    credentials: dict[str, Any] = Field(default_factory=dict)
    credential_type: str | None = None
    tool_parameters: dict[str, Any] = Field(default_factory=dict)


class DifyInvokeRequest(BaseModel):
    """The Dify API's body for ``dispatch/tool/invoke`` (``InvokePluginRequest``)."""

    model_config = ConfigDict(extra="allow")

    user_id: str | None = None
    conversation_id: str | None = None
    message_id: str | None = None
    app_id: str | None = None
    endpoint_id: str | None = None
    context: dict[str, Any] | None = None
    data: DifyToolInvokeData


# -- management (docs/operators/tenants.md) ------------------------------------------------------


class TenantIn(BaseModel):
    """``POST /v1/tenants``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="1-64 characters of a-z, 0-9, '_' and '-'.")
    name: str = Field(default="", max_length=200)


class KeyIn(BaseModel):
    """``POST /v1/tenants/{tenant}/keys``."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "member", "invoke"]
    name: str = Field(default="", max_length=200, description="A label for listings.")


class InstallationPatch(BaseModel):
    """``PATCH /v1/tenants/{tenant}/installations/{author}/{name}``: fields left out keep
    their value."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    settings: dict[str, Any] | None = Field(
        default=None, description="Replaces the settings (non-secret values only)."
    )
    granted: list[str] | None = Field(
        default=None, description="Replaces the granted permissions (admin keys only)."
    )


class CredentialsIn(BaseModel):
    """``PUT .../credentials``: the named credentials are set; others are kept."""

    model_config = ConfigDict(extra="forbid")

    credentials: dict[str, str] = Field(min_length=1)
