"""ServerConfig sources (file, environment, overrides), API keys, and the serve command's setup."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from _daemon import write_plugins
from typer.testing import CliRunner

from plughub.cli import app
from plughub.errors import UsageError
from plughub.server import ApiKeySpec, Principal, ServerConfig, StaticAuthenticator, load_config


def test_defaults() -> None:
    cfg = load_config(env={})
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8787)
    assert cfg.api_keys == [] and cfg.max_body_bytes == 1 << 20
    assert cfg.compat_dialer and cfg.compat_dify and cfg.metrics


def test_yaml_file_then_env_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    path = tmp_path / "server.yaml"
    path.write_text(
        "server:\n"
        "  port: 9000\n"
        "  plugins_dirs: [plugins]\n"
        "  deny: [acme/x]\n"
        "  request_timeout: 5\n"
        "  api_keys:\n"
        "    - 'k1:acme:admin'\n"
        "    - {key: k2, tenant: globex, role: invoke, id: ci}\n"
    )
    env = {"PLUGHUB_PORT": "9100", "PLUGHUB_MAX_BODY_BYTES": "2048", "PLUGHUB_METRICS": "false"}
    cfg = load_config(path, env=env, host="0.0.0.0", port=None)
    assert cfg.port == 9100  # env beats the file
    assert cfg.host == "0.0.0.0"  # overrides beat both; None overrides are ignored
    assert cfg.plugins_dirs == [tmp_path / "plugins"]  # relative to the file
    assert cfg.deny == ["acme/x"] and cfg.request_timeout == 5
    assert cfg.max_body_bytes == 2048 and cfg.metrics is False
    assert [(k.tenant, k.role, k.id) for k in cfg.api_keys] == [
        ("acme", "admin", None),
        ("globex", "invoke", "ci"),
    ]


def test_toml_and_json_files(tmp_path: Path) -> None:
    toml = tmp_path / "plughub.toml"
    toml.write_text('[server]\nport = 1234\napi_keys = "a:t1:member,b:t2:invoke"\n')
    cfg = load_config(toml, env={})
    assert cfg.port == 1234 and len(cfg.api_keys) == 2
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"graceful_timeout": 3}))
    assert load_config(js, env={}).graceful_timeout == 3


def test_api_keys_from_the_environment() -> None:
    cfg = load_config(env={"PLUGHUB_API_KEYS": "s3:cr:et:acme:member, other:*:admin"})
    assert [(k.key.get_secret_value(), k.tenant, k.role) for k in cfg.api_keys] == [
        ("s3:cr:et", "acme", "member"),  # a key may contain ':'
        ("other", "*", "admin"),
    ]
    assert "s3:cr:et" not in repr(cfg)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PLUGHUB_API_KEYS": "k:acme:owner"}, "api_keys.0.role: Input should be"),
        ({"PLUGHUB_API_KEYS": "k:*:member"}, "only an admin key may have tenant '*'"),
        ({"PLUGHUB_API_KEYS": "k:bad tenant:admin"}, "tenant 'bad tenant' must match"),
        ({"PLUGHUB_API_KEYS": "secretonly"}, "look like 'key:tenant:role', not '***'"),
        ({"PLUGHUB_PORT": "http"}, "port: Input should be a valid integer"),
        ({"PLUGHUB_REQUEST_TIMEOUT": "0"}, "request_timeout: Input should be greater than 0"),
    ],
)
def test_bad_settings_name_the_field(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        load_config(env=env)
    assert message in str(info.value)
    assert str(info.value).startswith("invalid server configuration (PLUGHUB_")
    assert "secretonly" not in str(info.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", env={})
    ini = tmp_path / "c.ini"
    ini.write_text("x=1")
    with pytest.raises(UsageError, match=r"use a \.yaml, \.yml, \.toml or \.json file"):
        load_config(ini, env={})
    bad = tmp_path / "c.yaml"
    bad.write_text("port: [1,\n")
    with pytest.raises(UsageError, match="is not valid yaml"):
        load_config(bad, env={})
    typo = tmp_path / "t.yaml"
    typo.write_text("prot: 1\n")
    with pytest.raises(UsageError, match="prot: Extra inputs are not permitted"):
        load_config(typo, env={})
    listing = tmp_path / "l.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(UsageError, match="must hold a mapping"):
        load_config(listing, env={})


@pytest.mark.anyio
async def test_static_authenticator(anyio_backend: str) -> None:
    digest = hashlib.sha256(b"hashed-secret").hexdigest()
    auth = StaticAuthenticator(
        [
            ApiKeySpec.parse("plain-secret:acme:member"),
            ApiKeySpec.model_validate(
                {"key": f"sha256:{digest}", "tenant": "globex", "role": "admin", "id": "ops"}
            ),
        ]
    )
    plain = await auth.authenticate("plain-secret")
    assert plain is not None and (plain.tenant_id, plain.role) == ("acme", "member")
    assert plain.key_id == "k_" + hashlib.sha256(b"plain-secret").hexdigest()[:12]
    assert await auth.authenticate("hashed-secret") == Principal("globex", "ops", "admin")
    assert await auth.authenticate("plain-secre") is None
    assert await auth.authenticate("") is None
    assert len(StaticAuthenticator.from_string("a:t:invoke,b:t:admin")) == 2
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        ApiKeySpec.parse("sha256:abc:t:admin")


def test_principal_roles() -> None:
    member = Principal("acme", "k", "member")
    assert member.can("invoke") and member.can("read") and not member.can("admin")
    assert not Principal("acme", "k", "invoke").can("read")
    assert not Principal("acme", "k", "nobody").can("tools")
    assert member.acts_for("acme") and not member.acts_for("globex")
    assert Principal("*", "k", "admin").acts_for("globex")
    assert member.caller == "tenant:acme"


# -- plughub serve (without serving) -------------------------------------------------------------


def test_serve_openapi_prints_the_document(tmp_path: Path) -> None:
    plugins = write_plugins(tmp_path / "plugins")
    result = CliRunner().invoke(
        app, ["--no-entry-points", "serve", "--plugins-dir", str(plugins), "--openapi"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["info"]["title"] == "plughub"
    assert "/v1/plugins/{author}/{name}/tools/{tool}/invoke" in doc["paths"]
    assert "/plugin/{tenant_id}/dispatch/tool/invoke" in doc["paths"]


def test_serve_refuses_bad_setup(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--plugins-dir", str(tmp_path / "nope"), "--openapi"])
    assert r.exit_code == 2
    assert "plugins folder" in r.stderr and "does not exist" in r.stderr
    bad = tmp_path / "s.yaml"
    bad.write_text("port: -1\n")
    r = runner.invoke(app, ["serve", "--config", str(bad), "--openapi"])
    assert r.exit_code == 2
    assert "port: Input should be greater than or equal to 0" in r.stderr


def test_server_config_is_a_plain_model() -> None:
    cfg = ServerConfig.model_validate({"api_keys": ["k:t:admin"], "allow": "a, b"})
    assert cfg.allow == ["a", "b"]
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        ServerConfig.model_validate({"nope": 1})
