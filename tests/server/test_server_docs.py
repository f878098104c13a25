"""docs/api.md names every route of the app; docs/compat-endpoints.md the compatible ones."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute
from starlette.routing import Route

from plughub.server import ENV_VARS, ServerConfig, create_app

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _routes() -> list[tuple[str, str]]:
    app = create_app(ServerConfig())  # every optional part on: metrics, docs, compat
    found = {
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    }
    for route in app.routes:  # the documentation routes are not in the document
        if isinstance(route, Route | APIRoute):
            found.update((m, route.path) for m in route.methods or () if m != "HEAD")
    return sorted(found)


def test_every_route_is_in_the_api_reference() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    routes = _routes()
    assert len(routes) >= 15
    missing = [f"{m} {p}" for m, p in routes if f"`{m} {p}`" not in text]
    assert not missing, f"docs/api.md does not mention (as `METHOD path`): {missing}"


def test_compat_endpoints_are_described() -> None:
    text = (DOCS / "compat-endpoints.md").read_text(encoding="utf-8")
    for route in ("POST /api/plugins/invoke", "POST /plugin/{tenant_id}/dispatch/tool/invoke"):
        assert f"`{route}`" in text, f"docs/compat-endpoints.md does not describe {route}"


def test_every_setting_and_variable_is_documented() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [f for f in ServerConfig.model_fields if f"`{f}`" not in text]
    missing += [v for v in ENV_VARS if f"`{v}`" not in text]
    assert not missing, f"docs/api.md does not mention: {missing}"


def test_the_generated_api_reference_is_current() -> None:
    """docs/api-reference.md is ``api_reference()``'s output: run ``make docs`` after a change."""
    from plughub.server import api_reference

    text = (DOCS / "api-reference.md").read_text(encoding="utf-8")
    assert text == api_reference(), "docs/api-reference.md is stale: run `make docs`"
