"""Fixtures of the daemon tests: the plugins folder, configs and apps built from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _daemon import API_KEYS, write_plugins
from fastapi import FastAPI

from plughub.server import ServerConfig, create_app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    return write_plugins(tmp_path / "plugins")


@pytest.fixture
def make_config(plugins_dir: Path) -> Callable[..., ServerConfig]:
    def make(**overrides: Any) -> ServerConfig:
        values: dict[str, Any] = {
            "plugins_dirs": [plugins_dir],
            "entry_points": False,
            "deny": ["acme/blocked"],
            "api_keys": API_KEYS,
            **overrides,
        }
        return ServerConfig.model_validate(values)

    return make


@pytest.fixture
def make_app(make_config: Callable[..., ServerConfig]) -> Callable[..., FastAPI]:
    def make(**overrides: Any) -> FastAPI:
        hooks = {
            k: overrides.pop(k)
            for k in ("rate_limit", "visibility", "host_factory", "authenticator")
            if k in overrides
        }
        return create_app(make_config(**overrides), **hooks)

    return make
