"""Schemathesis against the app's own /openapi.json: no request it can make gets a 5xx.

Driven with hypothesis directly, one operation after the other, because schemathesis'
``pytest.from_fixture`` does not work with this pytest (it sets ``node._nodeid``).

Two passes: the document as served (random plugin names: mostly 404s past authentication),
then the same document with the plugin, tool and tenant names pinned to the test plugins, so
the generated arguments reach real tools (and the AI-Dialer and Dify mappings).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import schemathesis
from _daemon import KEYS
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

HEADERS = {"Authorization": f"Bearer {KEYS['admin']}", "X-Api-Key": KEYS["dify"]}
# not "blob", "slow" or "watch": a generated {"size": 10**12} would only measure memory and time
TOOLS = ["hello", "data", "fail", "boom", "count", "picture", "link", "nope"]


def run_all(schema: Any, examples: int, only: Callable[[str], bool] = lambda p: True) -> int:
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if not only(operation.path):
            continue
        count += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=HEADERS, checks=[not_a_server_error])

        check()
    return count


def pinned(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with path/header parameters and plugin names limited to real ones."""
    doc = copy.deepcopy(doc)
    values = {
        "author": ["acme"],
        "name": ["greet", "blocked"],
        "tool": TOOLS,
        "tenant_id": ["acme", "t-1"],
        "X-Plugin-ID": ["acme/greet", "local/notes"],
    }
    for item in doc["paths"].values():
        for operation in item.values():
            for param in operation.get("parameters", []):
                if param["name"] in values:
                    param["schema"] = {"type": "string", "enum": values[param["name"]]}
    schemas = doc["components"]["schemas"]
    # NoteTaker only: Crasher's 500 is the AI-Dialer contract for a plugin that raises
    schemas["DialerInvokeRequest"]["properties"]["plugin"] = {"enum": ["NoteTaker", "acme/greet"]}
    schemas["DifyToolInvokeData"]["properties"]["provider"] = {"enum": ["greet", "notes"]}
    schemas["DifyToolInvokeData"]["properties"]["tool"] = {"enum": [*TOOLS, "NoteTaker"]}
    return doc


def test_no_request_gets_a_server_error(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(default_timeout=2)  # a generated {"n": 10**9} for count stops in time
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    assert run_all(schema, examples=15) >= 11

    deep = schemathesis.openapi.from_dict(pinned(app.openapi()))
    deep.app = app
    deep.location = "/openapi.json"
    calls = run_all(deep, examples=40, only=lambda p: "invoke" in p)
    assert calls == 4
