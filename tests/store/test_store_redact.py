"""``redact``: secret fields of tool arguments become "***" before the audit log sees them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field, SecretStr

from plughub.store import REDACTED, is_secret_name, redact


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "Password",
        "db_password",
        "passwd",
        "secret",
        "client_secret",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "access_token",
        "refreshToken",
        "token",
        "AUTHORIZATION",
        "private_key",
        "credentials",
    ],
)
def test_secret_looking_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["max_tokens", "city", "keyword", "monkey", "key", "tokens_used", "passage"]
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_schema_markers_redact_at_any_depth() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "writeOnly": True},
            "b": {"type": "string", "format": "password"},
            "c": {"type": "string", "x-secret": True},
            "d": {"anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}]},
            "e": {"type": "array", "items": {"$ref": "#/$defs/Inner"}},
            "f": {"type": "array", "items": {"type": "string", "writeOnly": True}},
            "g": {"type": "object", "additionalProperties": {"type": "string", "x-secret": True}},
            "plain": {"type": "string"},
        },
        "$defs": {
            "Inner": {
                "type": "object",
                "properties": {
                    "pin": {"type": "string", "writeOnly": True},
                    "n": {"type": "integer"},
                },
            }
        },
    }
    args = {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": {"pin": "4", "n": 1},
        "e": [{"pin": "5", "n": 2}],
        "f": ["6", "7"],
        "g": {"anything": "8"},
        "plain": "visible",
        "unknown": {"nested": {"session_token": "9"}},
    }
    out = redact(args, schema)
    assert out == {
        "a": REDACTED,
        "b": REDACTED,
        "c": REDACTED,
        "d": {"pin": REDACTED, "n": 1},
        "e": [{"pin": REDACTED, "n": 2}],
        "f": [REDACTED, REDACTED],
        "g": {"anything": REDACTED},
        "plain": "visible",
        "unknown": {"nested": {"session_token": REDACTED}},
    }
    for secret in "123456789":
        assert f"'{secret}'" not in repr(out)
    assert args["a"] == "1"


def test_pydantic_schemas_with_secret_fields() -> None:
    class Login(BaseModel):
        user: str
        password: SecretStr
        otp_code: str = Field(json_schema_extra={"writeOnly": True})

    schema = Login.model_json_schema()
    out = redact({"user": "ann", "password": "p", "otp_code": "123"}, schema)
    assert out == {"user": "ann", "password": REDACTED, "otp_code": REDACTED}


def test_without_schema_names_still_count_and_bad_refs_are_harmless() -> None:
    assert redact({"token": "t", "q": "hi"}) == {"token": REDACTED, "q": "hi"}
    looping = {"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}}
    assert redact({"x": 1}, looping) == {"x": 1}
    assert redact({"x": 1}, {"properties": {"x": {"$ref": "http://elsewhere"}}}) == {"x": 1}
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(50):
        cur["n"] = {}
        cur = cur["n"]
    assert "***" in repr(redact(deep))  # too deep to inspect: cut off, not leaked
