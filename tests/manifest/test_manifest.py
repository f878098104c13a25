"""Tests for plughub.manifest: the plugin.yaml model and its line-reporting loader."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from packaging.version import Version
from pydantic import ValidationError

from plughub.errors import ManifestError
from plughub.manifest import (
    MANIFEST_FILENAME,
    MAX_MANIFEST_BYTES,
    CredentialSpec,
    Expect,
    FieldSpec,
    Limits,
    Permissions,
    PluginManifest,
    RateLimit,
    fields_json_schema,
    load_manifest,
    parse_byte_size,
    parse_manifest,
    parse_rate_limit,
    semver_to_version,
)

MINIMAL = """\
id: acme/weather
version: 1.0.0
entrypoint: weather_plugin
"""

FULL = """\
manifest_version: 1
id: acme/weather
version: 2.1.0-beta.2+build.7
description: Current weather and forecasts.
author_name: Acme Corp
homepage: https://example.com/weather
license: MIT
icon: assets/icon.png
tags: [weather, forecast]
runtime: worker
entrypoint: weather_plugin.tools:plugin
python:
  requires: ">=3.11"
  requirements:
    - httpx>=0.27
    - tzdata; sys_platform == "win32"
dependencies:
  acme/geo: ">=1.2,<2"
  acme/units: ""
permissions:
  network: [api.weather.example, "*.tiles.example", "cache.local:8080"]
  filesystem:
    read: [data/]
    write: [cache/]
  subprocess: false
  llm: true
  storage: 10MiB
  env: [HTTP_PROXY]
settings:
  units:
    type: string
    description: Metric or imperial.
    default: metric
    enum: [metric, imperial]
  days:
    type: integer
    default: 3
credentials:
  api_key:
    description: Key for the weather API.
    required: true
    env: WEATHER_API_KEY
  account:
    secret: false
limits:
  timeout: 12.5
  concurrency: 4
  rate_limit: 60/minute
  cacheable: true
  cache_ttl: 300
  max_argument_bytes: 64KiB
  max_output_bytes: 1048576
tools:
  - name: current
    description: Current conditions.
    input_schema:
      type: object
      properties:
        city: {type: string}
      required: [city]
    output_schema:
      type: object
  - name: forecast
examples:
  - tool: current
    args: {city: Paris}
    expect:
      text_contains: [Paris, "°"]
      structured_subset: {city: Paris}
  - tool: forecast
    expect:
      is_error: true
      structured: null
hooks: [on_load, on_unload]
min_plughub: ">=0.1"
"""


def write(tmp_path: Path, text: str | bytes, name: str = MANIFEST_FILENAME) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str | bytes) -> ManifestError:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.path == str(path)
    return info.value


def problem(err: ManifestError, field: str) -> tuple[int | None, str]:
    """The (line, message) of the only problem reported for ``field``."""
    found = [(line, msg) for f, line, msg in err.problems if f == field]
    assert len(found) == 1, err.problems
    return found[0]


# ------------------------------------------------------------------------------------------
# Valid manifests
# ------------------------------------------------------------------------------------------


def test_full_manifest_loads_every_field(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, FULL))
    assert m.id == "acme/weather"
    assert (m.author, m.name) == ("acme", "weather")
    assert m.version == "2.1.0-beta.2+build.7"
    assert m.parsed_version == Version("2.1.0b2")
    assert m.runtime == "worker"
    assert (m.entrypoint_module, m.entrypoint_attr) == ("weather_plugin.tools", "plugin")
    assert m.icon == "assets/icon.png"
    assert m.tags == ["weather", "forecast"]
    assert m.python.requires == ">=3.11"
    assert m.python.requirements == ["httpx>=0.27", 'tzdata; sys_platform == "win32"']
    assert m.dependencies == {"acme/geo": ">=1.2,<2", "acme/units": ""}
    p = m.permissions
    assert p.network == ["api.weather.example", "*.tiles.example", "cache.local:8080"]
    assert p.filesystem.read == ["data/"] and p.filesystem.write == ["cache/"]
    assert p.llm is True and p.subprocess is False
    assert p.storage == 10 * 1024 * 1024
    assert p.env == ["HTTP_PROXY"]
    assert m.settings["units"].enum == ["metric", "imperial"]
    assert m.settings["days"].default == 3
    assert isinstance(m.credentials["api_key"], CredentialSpec)
    assert m.credentials["api_key"].secret is True
    assert m.credentials["api_key"].env == "WEATHER_API_KEY"
    assert m.credentials["account"].secret is False
    assert m.limits.timeout == 12.5
    assert m.limits.concurrency == 4
    assert m.limits.parsed_rate_limit == RateLimit(count=60, per_seconds=60.0)
    assert m.limits.cache_ttl == 300
    assert m.limits.max_argument_bytes == 64 * 1024
    assert [t.name for t in m.tools] == ["current", "forecast"]
    assert m.tools[0].input_schema["required"] == ["city"]
    assert m.tools[1].input_schema == {"type": "object", "properties": {}}
    assert m.examples[0].args == {"city": "Paris"}
    assert m.examples[1].expect is not None and m.examples[1].expect.checks_structured
    assert m.hooks == ["on_load", "on_unload"]
    assert m.min_plughub == ">=0.1"


def test_full_manifest_round_trips(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, FULL))
    again = PluginManifest.model_validate(m.model_dump(exclude_unset=True))
    assert again == m
    assert again.examples[1].expect is not None
    assert again.examples[1].expect.checks_structured
    # JSON round trip too (what a worker or a cache would do).
    assert PluginManifest.model_validate_json(m.model_dump_json()) == m


def test_minimal_manifest_gets_defaults() -> None:
    m = parse_manifest(MINIMAL)
    assert m.manifest_version == 1
    assert m.runtime == "inprocess"
    assert m.entrypoint == "weather_plugin"
    assert (m.entrypoint_module, m.entrypoint_attr) == ("weather_plugin", None)
    assert m.description == "" and m.icon is None and m.tags == []
    assert m.python.requires is None and m.python.requirements == []
    assert m.dependencies == {} and m.settings == {} and m.credentials == {}
    assert m.permissions.is_empty and m.permissions.summary() == []
    assert m.limits == Limits()
    assert m.limits.timeout == 30.0
    assert m.limits.concurrency is None and m.limits.parsed_rate_limit is None
    assert m.limits.cacheable is False and m.limits.cache_ttl == 0
    assert m.limits.max_argument_bytes == 1_048_576
    assert m.limits.max_output_bytes == 16_777_216
    assert m.tools == [] and m.examples == [] and m.hooks == []
    assert m.min_plughub is None


def test_manifest_is_frozen() -> None:
    m = parse_manifest(MINIMAL)
    with pytest.raises(ValidationError):
        m.version = "2.0.0"


def test_parse_accepts_bytes_with_bom() -> None:
    m = parse_manifest(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert m.id == "acme/weather"


def test_mcp_runtime_needs_no_entrypoint() -> None:
    m = parse_manifest("id: acme/remote\nversion: 0.1.0\nruntime: mcp\n")
    assert m.entrypoint is None and m.entrypoint_module is None


def test_storage_quota_strings() -> None:
    def quota(value: str) -> int | None:
        return parse_manifest(MINIMAL + f"permissions:\n  storage: {value}\n").permissions.storage

    assert quota("10MB") == 10_000_000
    assert quota("512KiB") == 524_288
    assert quota("1GB") == 1_000_000_000
    assert quota("2 gib") == 2 * 1024**3
    assert quota("1.5KB") == 1500
    assert quota("4096") == 4096
    assert quota('"100"') == 100
    assert quota("0") == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60/minute", RateLimit(60, 60.0)),
        ("10/second", RateLimit(10, 1.0)),
        ("1000/hour", RateLimit(1000, 3600.0)),
        ("5/s", RateLimit(5, 1.0)),
        ("100/m", RateLimit(100, 60.0)),
        ("3/h", RateLimit(3, 3600.0)),
        ("2/day", RateLimit(2, 86400.0)),
        ("10 / 30s", RateLimit(10, 30.0)),
    ],
)
def test_rate_limits(text: str, expected: RateLimit) -> None:
    assert parse_rate_limit(text) == expected
    m = parse_manifest(MINIMAL + f"limits:\n  rate_limit: {text}\n")
    assert m.limits.parsed_rate_limit == expected


@pytest.mark.parametrize("bad", ["60", "60/fortnight", "0/minute", "-1/s", "x/s", "5/0s", ""])
def test_bad_rate_limit_strings(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_rate_limit(bad)


@pytest.mark.parametrize(
    ("semver", "pep440"),
    [
        ("1.2.3", "1.2.3"),
        ("1.0.0-alpha", "1.0.0a0"),
        ("1.0.0-alpha.1", "1.0.0a1"),
        ("1.0.0-beta.2", "1.0.0b2"),
        ("1.0.0-rc.1", "1.0.0rc1"),
        ("1.0.0-RC3", "1.0.0rc3"),
        ("1.0.0-dev.4", "1.0.0.dev4"),
        ("1.0.0-x.7.z", "1.0.0.dev0"),
        ("1.0.0-0.3.7", "1.0.0.dev0"),
        ("1.0.0+build.5", "1.0.0"),
    ],
)
def test_semver_to_version(semver: str, pep440: str) -> None:
    assert semver_to_version(semver) == Version(pep440)


def test_semver_prereleases_sort_before_release() -> None:
    order = ["1.0.0-0.3.7", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-rc.1", "1.0.0"]
    versions = [semver_to_version(v) for v in order]
    assert versions == sorted(versions)
    assert versions[0] < versions[1] and versions[-2] < versions[-1]


def test_parse_byte_size_rejects_nonsense() -> None:
    assert parse_byte_size(7) == 7
    for bad in ["10M", "ten MB", "-1MB", "1..2KB", "5 PB"]:
        with pytest.raises(ValueError, match="is not a size"):
            parse_byte_size(bad)
    with pytest.raises(ValueError, match="negative"):
        parse_byte_size(-1)


def test_permissions_summary_and_is_empty(tmp_path: Path) -> None:
    p = load_manifest(write(tmp_path, FULL)).permissions
    assert not p.is_empty
    assert p.summary() == [
        "network: api.weather.example, *.tiles.example, cache.local:8080",
        "filesystem read: data/",
        "filesystem write: cache/",
        "llm: may call the host's language model",
        "storage: 10 MiB",
        "env: HTTP_PROXY",
    ]
    assert Permissions(network=["*"], subprocess=True, storage=10_000_000).summary() == [
        "network: any host",
        "subprocess: may start other programs",
        "storage: 10 MB",
    ]
    assert not Permissions(storage=0).is_empty
    assert Permissions().is_empty


def test_network_entries_are_normalised() -> None:
    p = Permissions(network=["API.Example.COM", "[::1]:8080", "10.0.0.1:5432", "localhost"])
    assert p.network == ["api.example.com", "[::1]:8080", "10.0.0.1:5432", "localhost"]


def test_fields_json_schema(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, FULL))
    assert fields_json_schema(m.settings) == {
        "type": "object",
        "properties": {
            "units": {
                "type": "string",
                "description": "Metric or imperial.",
                "default": "metric",
                "enum": ["metric", "imperial"],
            },
            "days": {"type": "integer", "default": 3},
        },
        "additionalProperties": False,
    }
    assert m.credentials_schema() == {
        "type": "object",
        "properties": {
            "api_key": {
                "type": "string",
                "description": "Key for the weather API.",
                "writeOnly": True,
                "format": "password",
            },
            "account": {"type": "string"},
        },
        "required": ["api_key"],
        "additionalProperties": False,
    }
    secret_number = fields_json_schema({"pin": FieldSpec(type="integer", secret=True, default=1)})
    assert secret_number["properties"]["pin"] == {"type": "integer", "writeOnly": True}


def test_expect_mismatches() -> None:
    exp = Expect(text_contains=["sunny", "°C"], structured_subset={"now": {"temp": 20}})
    good = {"now": {"temp": 20, "wind": 3}, "city": "Paris"}
    assert exp.mismatches(is_error=False, text="sunny, 20°C", structured=good) == []
    assert exp.mismatches(is_error=True, text="rain", structured={"now": {"temp": 21}}) == [
        "expected is_error=False, got True",
        "text does not contain 'sunny'",
        "text does not contain '°C'",
        "structured.now.temp: expected 20, got 21",
    ]
    exact = Expect(structured={"a": [1, True]})
    assert exact.checks_structured
    assert exact.mismatches(is_error=False, text="", structured={"a": [1, True]}) == []
    assert exact.mismatches(is_error=False, text="", structured={"a": [1, 1]}) == [
        "structured.a.1: expected True, got 1"
    ]
    assert exact.mismatches(is_error=False, text="", structured={"a": [1, True], "b": 2}) == [
        "structured: unexpected keys b"
    ]
    null = Expect(structured=None)
    assert null.checks_structured
    assert null.mismatches(is_error=False, text="", structured={}) == [
        "structured: expected None, got {}"
    ]
    unchecked = Expect()
    assert not unchecked.checks_structured
    assert unchecked.mismatches(is_error=False, text="", structured={"x": 1}) == []


# ------------------------------------------------------------------------------------------
# Invalid manifests: every message names file, field and line
# ------------------------------------------------------------------------------------------


def test_malformed_yaml_reports_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, "id: acme/x\nversion: 1.0.0\nentrypoint: [a, b\ntags: x\n")
    [(field, line, message)] = err.problems
    assert line == 4
    assert field == ""
    assert "YAML syntax error" in message and "flow sequence" in message
    assert str(err).startswith(f"{tmp_path / MANIFEST_FILENAME}:4: <root>: YAML syntax error")


def test_tab_indentation_is_a_syntax_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "id: acme/x\nlimits:\n\ttimeout: 3\n")
    [(_, line, message)] = err.problems
    assert line == 3
    assert "YAML syntax error" in message


def test_root_must_be_a_mapping(tmp_path: Path) -> None:
    err = load_error(tmp_path, "- id: acme/x\n- version: 1.0.0\n")
    assert err.problems == [("", 1, "the top level must be a mapping of fields, not a list")]
    assert "not a list" in str(err)


def test_scalar_root_and_empty_file(tmp_path: Path) -> None:
    err = load_error(tmp_path, "just a string\n")
    assert err.problems == [
        ("", 1, "the top level must be a mapping of fields, not a single value")
    ]
    err = load_error(tmp_path, "# only a comment\n")
    assert err.problems == [("", None, "the manifest is empty")]


def test_multiple_documents_are_refused() -> None:
    with pytest.raises(ManifestError, match="expected a single document"):
        parse_manifest(MINIMAL + "---\n" + MINIMAL)


def test_unknown_top_level_field(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "descripton: typo\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.problems == [("descripton", 4, "unknown field (did you mean 'description'?)")]
    assert str(info.value) == f"{path}:4: descripton: unknown field (did you mean 'description'?)"


def test_unknown_nested_field_points_at_its_line(tmp_path: Path) -> None:
    text = (
        MINIMAL + "limits:\n  timeout: 5\n  timout: 3\npermissions:\n  filesystem:\n    raed: [x]\n"
    )
    err = load_error(tmp_path, text)
    assert problem(err, "limits.timout") == (6, "unknown field (did you mean 'timeout'?)")
    assert problem(err, "permissions.filesystem.raed") == (
        9,
        "unknown field (did you mean 'read'?)",
    )
    assert f"{MANIFEST_FILENAME}:9: permissions.filesystem.raed: unknown field" in str(err)


def test_unknown_field_inside_list_item(tmp_path: Path) -> None:
    text = MINIMAL + "tools:\n  - name: a\n  - name: b\n    descriptoin: x\n"
    err = load_error(tmp_path, text)
    assert problem(err, "tools.1.descriptoin") == (
        7,
        "unknown field (did you mean 'description'?)",
    )


def test_wrong_types_are_all_reported(tmp_path: Path) -> None:
    text = """\
        id: acme/x
        version: 1.0
        entrypoint: m
        tags: weather
        runtime: java
        limits: 30
        permissions:
          subprocess: "yes"
          network: api.example.com
        """
    err = load_error(tmp_path, text)
    assert problem(err, "version") == (
        2,
        "must be a valid string, got number 1.0 (put the value in quotes)",
    )
    assert problem(err, "tags") == (4, "must be a valid list, got string 'weather'")
    line, message = problem(err, "runtime")
    assert line == 5 and message.startswith("must be 'inprocess', 'worker', 'mcp' or 'dify'")
    assert problem(err, "limits") == (6, "must be a mapping, got integer 30")
    assert problem(err, "permissions.subprocess") == (
        8,
        "must be a valid boolean, got string 'yes'",
    )
    assert problem(err, "permissions.network") == (
        9,
        "must be a valid list, got string 'api.example.com'",
    )
    assert len(err.problems) == 6
    # Problems are listed in file order.
    assert [line for _, line, _ in err.problems] == [2, 4, 5, 6, 8, 9]


def test_missing_required_fields(tmp_path: Path) -> None:
    err = load_error(tmp_path, "description: nothing else\n")
    assert problem(err, "id") == (1, "required field is missing")
    assert problem(err, "version") == (1, "required field is missing")
    assert problem(err, "entrypoint") == (1, "entrypoint is required when runtime is 'inprocess'")


def test_missing_entrypoint_for_worker(tmp_path: Path) -> None:
    err = load_error(tmp_path, "id: acme/x\nversion: 1.0.0\nruntime: worker\n")
    assert err.problems == [("entrypoint", 1, "entrypoint is required when runtime is 'worker'")]


@pytest.mark.parametrize("bad", ["weather", "Acme/weather", "acme/", "acme/we ather", "a/b/c"])
def test_bad_id(tmp_path: Path, bad: str) -> None:
    err = load_error(tmp_path, f"version: 1.0.0\nentrypoint: m\nid: '{bad}'\n")
    line, message = problem(err, "id")
    assert line == 3
    assert message.startswith(f"{bad!r} is not a plugin id; write 'author/name'")


@pytest.mark.parametrize("bad", ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0+"])
def test_bad_semver(tmp_path: Path, bad: str) -> None:
    err = load_error(tmp_path, f"id: acme/x\nentrypoint: m\nversion: '{bad}'\n")
    line, message = problem(err, "version")
    assert line == 3
    assert message.startswith(f"{bad!r} is not a semantic version")


def test_bad_entrypoint(tmp_path: Path) -> None:
    err = load_error(tmp_path, "id: acme/x\nversion: 1.0.0\nentrypoint: 'my-plugin:run'\n")
    line, message = problem(err, "entrypoint")
    assert line == 3 and message.startswith("'my-plugin:run' is not an entrypoint")


def test_bad_specifiers(tmp_path: Path) -> None:
    text = MINIMAL + (
        "python:\n  requires: '3.11+'\n"
        "dependencies:\n  acme/geo: '>=1.2'\n  acme/units: 'newest'\n"
        "min_plughub: '=> 1'\n"
    )
    err = load_error(tmp_path, text)
    assert problem(err, "python.requires") == (
        5,
        "'3.11+' is not a version specifier; write e.g. '>=1.2', '>=1,<2' or '~=1.4' "
        "(or '' for any version)",
    )
    line, message = problem(err, "dependencies.acme/units")
    assert line == 8 and message.startswith("'newest' is not a version specifier")
    line, message = problem(err, "min_plughub")
    assert line == 9 and message.startswith("'=> 1' is not a version specifier")


def test_bad_dependency_id_points_at_key(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + "dependencies:\n  acme/geo: '>=1'\n  geo: '>=1'\n")
    line, message = problem(err, "dependencies.geo")
    assert line == 6 and message.startswith("'geo' is not a plugin id")
    err = load_error(tmp_path, MINIMAL + "dependencies:\n  acme/geo: ''\n  acme/weather: ''\n")
    assert err.problems == [("dependencies.acme/weather", 6, "a plugin cannot depend on itself")]


def test_bad_requirement(tmp_path: Path) -> None:
    text = MINIMAL + "python:\n  requirements:\n    - httpx>=0.27\n    - 'httpx >= = 1'\n"
    err = load_error(tmp_path, text)
    line, message = problem(err, "python.requirements.1")
    assert line == 7
    assert message.startswith("'httpx >= = 1' is not a PEP 508 requirement")


def test_bad_rate_limit(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + "limits:\n  rate_limit: 60/fortnight\n")
    line, message = problem(err, "limits.rate_limit")
    assert line == 5
    assert message.startswith("'60/fortnight' is not a rate limit; write COUNT/UNIT")
    assert f"{MANIFEST_FILENAME}:5: limits.rate_limit: '60/fortnight' is not a rate limit" in str(
        err
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be greater than 0"),
        ("-1.5", "must be greater than 0"),
        ("3601", "must be less than or equal to 3600"),
    ],
)
def test_timeout_bounds(tmp_path: Path, value: str, message: str) -> None:
    err = load_error(tmp_path, MINIMAL + f"limits:\n  concurrency: 2\n  timeout: {value}\n")
    assert err.problems == [("limits.timeout", 6, message)]
    assert str(err).endswith(f":6: limits.timeout: {message}")


def test_other_limit_bounds(tmp_path: Path) -> None:
    text = MINIMAL + "limits:\n  concurrency: 0\n  cache_ttl: -1\n  max_output_bytes: 0\n"
    err = load_error(tmp_path, text)
    assert problem(err, "limits.concurrency") == (5, "must be greater than or equal to 1")
    assert problem(err, "limits.cache_ttl") == (6, "must be greater than or equal to 0")
    assert problem(err, "limits.max_output_bytes") == (7, "must be greater than 0")


def test_duplicate_tool_names(tmp_path: Path) -> None:
    text = MINIMAL + "tools:\n  - name: search\n  - name: fetch\n  - name: search\n"
    err = load_error(tmp_path, text)
    assert err.problems == [
        ("tools.2.name", 7, "duplicate tool name 'search' (first declared as tools.0)")
    ]


def test_bad_tool_declarations(tmp_path: Path) -> None:
    text = MINIMAL + (
        "tools:\n"
        "  - name: 'has space'\n"
        "  - name: ok\n"
        "    input_schema: {type: string}\n"
        "  - name: ok2\n"
        "    input_schema: {type: 12}\n"
    )
    err = load_error(tmp_path, text)
    line, message = problem(err, "tools.0.name")
    assert line == 5 and "is not a tool name" in message
    assert problem(err, "tools.1.input_schema") == (
        7,
        "input_schema must describe an object (type: object)",
    )
    line, message = problem(err, "tools.2.input_schema")
    assert line == 9 and message.startswith("not a valid JSON Schema")


def test_duplicate_yaml_keys(tmp_path: Path) -> None:
    text = MINIMAL + "limits:\n  timeout: 5\n  timeout: 10\nversion: 2.0.0\n"
    err = load_error(tmp_path, text)
    assert err.problems == [
        ("limits.timeout", 6, "duplicate key 'timeout' (first on line 5)"),
        ("version", 7, "duplicate key 'version' (first on line 2)"),
    ]
    assert f"{MANIFEST_FILENAME}:7: version: duplicate key 'version' (first on line 2)" in str(err)


def test_duplicate_keys_reported_with_validation_errors(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + "tags: [a]\ntags: [b]\nruntime: java\n")
    assert problem(err, "tags") == (5, "duplicate key 'tags' (first on line 4)")
    line, message = problem(err, "runtime")
    assert line == 6 and message.startswith("must be 'inprocess'")


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        bomb.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    text = MINIMAL + "\n".join(bomb) + "\n"
    err = load_error(tmp_path, text)
    assert err.problems[0] == (
        "b.0",
        5,
        "YAML aliases (*a) are not allowed in manifests; write the value out instead",
    )
    # 72 aliases: the first ten are listed, then one summary line.
    assert len(err.problems) == 11
    assert err.problems[-1] == ("", None, "62 more aliases not listed")


def test_single_alias_names_its_field(tmp_path: Path) -> None:
    text = MINIMAL + "settings:\n  a: &spec {type: string}\n  b: *spec\n"
    err = load_error(tmp_path, text)
    assert err.problems == [
        (
            "settings.b",
            6,
            "YAML aliases (*spec) are not allowed in manifests; write the value out instead",
        )
    ]


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + "tags: " + "[" * 80 + "]" * 80 + "\n")
    [(field, line, message)] = err.problems
    assert line == 4 and message == "nested more than 50 levels deep"
    assert field.startswith("tags.0.0")


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    # Invalid YAML past the limit: the size check must come first.
    text = MINIMAL + "description: '" + "x" * MAX_MANIFEST_BYTES + "\n  : [\n"
    err = load_error(tmp_path, text)
    [(field, line, message)] = err.problems
    assert (field, line) == ("", None)
    assert "the limit is 262144 bytes (256 KiB)" in message
    assert str(err).startswith(f"{tmp_path / MANIFEST_FILENAME}: <root>: the manifest is ")
    with pytest.raises(ManifestError, match="256 KiB"):
        parse_manifest(text)


def test_binary_file_is_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    [(field, line, message)] = err.problems
    assert field == "" and line == 3
    assert message == "this is a binary file (it contains NUL bytes), not YAML text"


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL.encode() + "description: café\n".encode("latin-1"))
    assert err.problems == [("", 4, "the manifest is not UTF-8 text (byte 0xe9 at offset 75)")]


def test_control_character_in_text() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(MINIMAL + "description: a\x07b\n", source="inline.yaml")
    assert info.value.problems == [("", 4, "character U+0007 is not allowed in YAML")]
    assert str(info.value) == "inline.yaml:4: <root>: character U+0007 is not allowed in YAML"


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "missing" / MANIFEST_FILENAME)


def test_python_tags_are_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + "description: !!python/object/apply:os.system [ls]\n")
    [(field, line, message)] = err.problems
    assert (field, line) == ("", 4)
    assert message.startswith("invalid YAML value: could not determine a constructor")


@pytest.mark.parametrize(
    "icon",
    ["/etc/passwd", "C:\\icons\\a.png", "\\\\server\\share\\a.png", "../icon.png", "a/../../b.png"],
)
def test_icon_must_be_relative(tmp_path: Path, icon: str) -> None:
    err = load_error(tmp_path, MINIMAL + f"icon: '{icon}'\n")
    line, message = problem(err, "icon")
    assert line == 4
    assert "relative to the plugin directory" in message or "must not contain '..'" in message


def test_network_entry_with_scheme(tmp_path: Path) -> None:
    text = MINIMAL + (
        "permissions:\n  network:\n    - api.example.com\n    - https://api.example.com/v1\n"
        "    - ''\n    - 'api.example.com/v1'\n    - 'host:99999'\n    - '::1'\n"
    )
    err = load_error(tmp_path, text)
    assert problem(err, "permissions.network.1") == (
        7,
        "'https://api.example.com/v1' is a URL; give only the host (and optional port), "
        "e.g. 'api.example.com'",
    )
    assert problem(err, "permissions.network.2") == (8, "a network entry must not be empty")
    line, message = problem(err, "permissions.network.3")
    assert line == 9 and "without a path" in message
    line, message = problem(err, "permissions.network.4")
    assert line == 10 and "invalid port" in message
    line, message = problem(err, "permissions.network.5")
    assert line == 11 and "brackets" in message


def test_bad_storage_quota(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + "permissions:\n  storage: 10 bananas\n")
    line, message = problem(err, "permissions.storage")
    assert line == 5 and message.startswith("'10 bananas' is not a size")
    err = load_error(tmp_path, MINIMAL + "permissions:\n  storage: -5\n")
    assert problem(err, "permissions.storage") == (5, "must be greater than or equal to 0")


def test_bad_env_names(tmp_path: Path) -> None:
    text = MINIMAL + "permissions:\n  env: [OK_NAME, 1BAD]\ncredentials:\n  key:\n    env: 'A-B'\n"
    err = load_error(tmp_path, text)
    line, message = problem(err, "permissions.env.1")
    assert line == 5 and "not an environment variable name" in message
    line, message = problem(err, "credentials.key.env")
    assert line == 8 and "not an environment variable name" in message


def test_example_naming_undeclared_tool(tmp_path: Path) -> None:
    text = MINIMAL + (
        "tools:\n  - name: search\n  - name: fetch\n"
        "examples:\n  - tool: search\n  - tool: serach\n    args: {q: x}\n"
    )
    err = load_error(tmp_path, text)
    assert err.problems == [
        (
            "examples.1.tool",
            9,
            "example names tool 'serach', which is not declared in tools (declared: fetch, search)",
        )
    ]


def test_examples_unchecked_without_declared_tools() -> None:
    m = parse_manifest(MINIMAL + "examples:\n  - tool: anything\n")
    assert m.examples[0].tool == "anything" and m.examples[0].expect is None


def test_bad_expect(tmp_path: Path) -> None:
    text = MINIMAL + (
        "examples:\n  - tool: t\n    expect:\n      text_contains: 5\n"
        "      structured_subset: [1]\n      is_eror: true\n"
    )
    err = load_error(tmp_path, text)
    assert problem(err, "examples.0.expect.text_contains") == (
        7,
        "must be a string or a list of strings",
    )
    assert problem(err, "examples.0.expect.structured_subset") == (
        8,
        "must be a mapping, got list",
    )
    assert problem(err, "examples.0.expect.is_eror") == (
        9,
        "unknown field (did you mean 'is_error'?)",
    )


def test_field_spec_consistency(tmp_path: Path) -> None:
    text = MINIMAL + (
        "settings:\n"
        "  days:\n    type: integer\n    default: three\n"
        "  mode:\n    enum: [fast, 2]\n    default: slow\n"
        "  flag:\n    type: bool\n"
        "  bad-name: {}\n"
    )
    err = load_error(tmp_path, text)
    assert problem(err, "settings.days.default") == (7, "default must be of type 'integer'")
    assert problem(err, "settings.mode.enum.1") == (9, "enum value must be of type 'string'")
    assert problem(err, "settings.mode.default") == (10, "default must be one of the enum values")
    line, message = problem(err, "settings.flag.type")
    assert line == 12 and message.startswith("must be 'string', 'integer'")
    line, message = problem(err, "settings.bad-name")
    assert line == 13 and "'bad-name' is not a valid name" in message
    assert len(err.problems) == 5


def test_setting_and_credential_names_must_differ(tmp_path: Path) -> None:
    text = MINIMAL + "settings:\n  token: {}\ncredentials:\n  user: {}\n  token: {}\n"
    err = load_error(tmp_path, text)
    assert err.problems == [("credentials.token", 8, "'token' is both a setting and a credential")]


def test_unsupported_manifest_version(tmp_path: Path) -> None:
    err = load_error(tmp_path, "manifest_version: 2\n" + MINIMAL)
    assert err.problems == [
        ("manifest_version", 1, "unsupported manifest_version 2; this plughub reads version 1")
    ]


def test_problems_from_python_dicts_have_precise_locations() -> None:
    """Validation without the loader still yields exact ``loc`` paths (used by the loader)."""
    with pytest.raises(ValidationError) as info:
        PluginManifest.model_validate(
            {
                "id": "acme/x",
                "version": "1.0.0",
                "entrypoint": "m",
                "tools": [{"name": "a"}, {"name": "a"}],
            }
        )
    [error] = info.value.errors()
    assert error["loc"] == ("tools", 1, "name")


def test_non_string_keys(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + "limits:\n  timeout: 3\n5: five\n")
    assert err.problems == [("5", 6, "keys must be strings (put the key in quotes)")]


def test_huge_integer_literal_is_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + "limits:\n  concurrency: 1" + "0" * 5000 + "\n")
    [(field, line, message)] = err.problems
    assert (field, line) == ("", None)
    assert message.startswith("cannot read a value: Exceeds the limit")
