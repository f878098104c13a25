"""Catalog exports: names, $ref inlining, OpenAI strict mode and each provider's tool shape."""

from __future__ import annotations

import copy
import enum
import hashlib
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from plughub.host._formats import (
    FORMATS,
    LLM_NAME_RE,
    CatalogEntry,
    export,
    inline_refs,
    llm_name,
    mcp_wraps_output,
    strictify,
    to_anthropic,
    to_mcp,
    to_openai_chat,
    to_openai_responses,
)
from plughub.sdk._spec import ToolSpec

# --------------------------------------------------------------------------- models


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Place(BaseModel):
    """Where to look."""

    city: str
    country: str | None = Field(None, description="ISO country code")


class Forecast(BaseModel):
    place: Place
    unit: Unit = Unit.CELSIUS
    days: int = Field(3, ge=1, le=10)
    detail: Literal["short", "long"] = "short"
    title: str = Field(description="a property that happens to be called title")


class Node(BaseModel):
    """A tree node."""

    name: str
    children: list[Node] = []


class Inner(BaseModel):
    label: str
    kind: Literal["a", "b"]


class AllRequired(BaseModel):
    query: str
    inner: Inner
    unit: Unit
    maybe: int | None
    tags: list[str]


class StrictTree(BaseModel):
    name: str
    children: list[StrictTree]


def entry(
    schema: dict[str, Any],
    *,
    name: str = "get",
    plugin: str = "weather",
    description: str = "Get things.",
    output_schema: dict[str, Any] | None = None,
    annotations: dict[str, Any] | None = None,
) -> CatalogEntry:
    spec = ToolSpec(
        name=name,
        description=description,
        input_schema=schema,
        output_schema=output_schema,
        annotations=annotations or {},
    )
    return CatalogEntry(
        plugin_id=f"acme/{plugin}", plugin_name=plugin, spec=spec, llm_name=llm_name(plugin, name)
    )


def walk(node: Any) -> list[Any]:
    """Every dict and list nested in ``node`` (including itself)."""
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found.extend(walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(walk(value))
    return found


def has_key(node: Any, key: str) -> bool:
    return any(isinstance(n, dict) and key in n for n in walk(node))


def valid(schema: dict[str, Any], instance: Any) -> bool:
    return Draft202012Validator(schema).is_valid(instance)


# --------------------------------------------------------------------------- llm_name


def test_llm_name_joins_plugin_and_tool_with_double_underscore() -> None:
    assert llm_name("weather", "get_forecast") == "weather__get_forecast"
    assert llm_name("my-plugin", "Run-2") == "my-plugin__Run-2"


def test_llm_name_replaces_characters_providers_reject() -> None:
    assert llm_name("wéather.v2", "get forecast/now") == "w_ather_v2__get_forecast_now"


def test_long_names_are_cut_to_64_with_hash_of_the_original() -> None:
    plugin, tool = "p" * 200, "t" * 200
    name = llm_name(plugin, tool)
    digest = hashlib.sha1(f"{plugin}\x00{tool}".encode()).hexdigest()[:8]
    assert len(name) == 64
    assert LLM_NAME_RE.match(name)
    assert name == "p" * 55 + "_" + digest
    assert llm_name(plugin, tool) == name  # deterministic


def test_long_and_weird_names_are_valid_and_distinct() -> None:
    pairs = [
        ("p" * 200, "a"),
        ("p" * 200, "b"),
        ("p" * 199, "pa"),  # same joined text length, different split
        ("météo" * 40, "prévision.du.jour"),
        ("météo" * 40, "prévision.du.soir"),
        ("天气", "获取预报" * 30),
        ("天气", "获取预报" * 31),
        ("weather", "get.forecast"),
        ("a" * 30, "b" * 33),  # exactly 65 characters once joined
        ("a" * 30, "b" * 32),  # exactly 64: kept as is
    ]
    names = [llm_name(p, t) for p, t in pairs]
    assert all(LLM_NAME_RE.match(n) for n in names), names
    assert len(set(names)) == len(names)
    assert names[-1] == "a" * 30 + "__" + "b" * 32
    assert len(names[-2]) == 64 and names[-2] != "a" * 30 + "__" + "b" * 32


# --------------------------------------------------------------------------- inline_refs


def test_inline_refs_removes_refs_defs_and_schema_titles() -> None:
    schema = Forecast.model_json_schema()
    out = inline_refs(schema)
    assert not has_key(out, "$ref")
    assert not has_key(out, "$defs")
    assert "title" not in out
    assert "title" not in out["properties"]["place"]
    # the property named "title" survives; only its auto title keyword goes
    assert out["properties"]["title"] == {
        "description": "a property that happens to be called title",
        "type": "string",
    }
    assert out["properties"]["place"] == {
        "description": "Where to look.",
        "properties": {
            "city": {"type": "string"},
            "country": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "default": None,
                "description": "ISO country code",
            },
        },
        "required": ["city"],
        "type": "object",
    }
    # sibling keys of a $ref are merged into the inlined target
    assert out["properties"]["unit"] == {
        "enum": ["celsius", "fahrenheit"],
        "type": "string",
        "default": "celsius",
    }
    assert out["required"] == ["place", "title"]


def test_inline_refs_does_not_mutate_its_input() -> None:
    schema = Forecast.model_json_schema()
    before = copy.deepcopy(schema)
    out = inline_refs(schema)
    out["properties"]["place"]["properties"]["city"]["type"] = "integer"
    assert schema == before
    tree = Node.model_json_schema()
    before_tree = copy.deepcopy(tree)
    inline_refs(tree)
    assert tree == before_tree


def test_inline_refs_terminates_on_recursion_keeping_the_description() -> None:
    out = inline_refs(Node.model_json_schema())
    assert out == {
        "description": "A tree node.",
        "properties": {
            "name": {"type": "string"},
            "children": {
                "default": [],
                "items": {"description": "A tree node."},
                "type": "array",
            },
        },
        "required": ["name"],
        "type": "object",
    }


def test_inline_refs_handles_indirect_recursion_and_root_refs() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/definitions/A"},
            "self": {"$ref": "#", "description": "the whole thing again"},
        },
        "definitions": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/definitions/B"}}},
            "B": {
                "type": "object",
                "description": "bee",
                "properties": {"a": {"$ref": "#/definitions/A"}},
            },
        },
    }
    out = inline_refs(schema)
    assert out == {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "properties": {
                    "b": {
                        "type": "object",
                        "description": "bee",
                        "properties": {"a": {}},
                    }
                },
            },
            "self": {"description": "the whole thing again"},
        },
    }


def test_inline_refs_reuses_a_def_in_several_places_and_siblings_win() -> None:
    schema = {
        "type": "object",
        "properties": {
            "x": {"$ref": "#/$defs/Pt", "description": "first"},
            "y": {"$ref": "#/$defs/Pt"},
        },
        "$defs": {"Pt": {"type": "object", "description": "a point", "title": "Pt"}},
    }
    out = inline_refs(schema)
    assert out["properties"]["x"] == {"type": "object", "description": "first"}
    assert out["properties"]["y"] == {"type": "object", "description": "a point"}
    assert out["properties"]["x"] is not out["properties"]["y"]


def test_inline_refs_keeps_title_inside_data_values() -> None:
    schema = {
        "type": "object",
        "title": "Args",
        "properties": {
            "doc": {
                "type": "object",
                "title": "Doc",
                "properties": {"title": {"type": "string", "title": "Title"}},
                "default": {"title": "untitled"},
                "examples": [{"title": "x"}],
            },
            "field": {"enum": ["title", "body"], "const": "title"},
        },
    }
    out = inline_refs(schema)
    doc = out["properties"]["doc"]
    assert doc == {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "default": {"title": "untitled"},
        "examples": [{"title": "x"}],
    }
    assert out["properties"]["field"] == {"enum": ["title", "body"], "const": "title"}


def test_inline_refs_inlines_discriminated_unions_without_dangling_mapping() -> None:
    class Cat(BaseModel):
        kind: Literal["cat"]
        lives: int

    class Dog(BaseModel):
        kind: Literal["dog"]

    class Pet(BaseModel):
        pet: Cat | Dog = Field(discriminator="kind")

    original = Pet.model_json_schema()
    out = inline_refs(original)
    pet = out["properties"]["pet"]
    assert pet["discriminator"] == {"propertyName": "kind"}
    assert pet["oneOf"][0] == {
        "properties": {"kind": {"const": "cat", "type": "string"}, "lives": {"type": "integer"}},
        "required": ["kind", "lives"],
        "type": "object",
    }
    for instance, ok in [
        ({"pet": {"kind": "cat", "lives": 9}}, True),
        ({"pet": {"kind": "dog"}}, True),
        ({"pet": {"kind": "cat"}}, False),
        ({"pet": {"kind": "cow"}}, False),
    ]:
        assert valid(original, instance) is ok and valid(out, instance) is ok, instance
    assert strictify(original)[1] is False  # strict mode composes with anyOf only


def test_inline_refs_rejects_dangling_local_refs() -> None:
    with pytest.raises(ValueError, match="Missing"):
        inline_refs({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}})


@pytest.mark.parametrize(
    ("model", "good", "bad"),
    [
        (
            Forecast,
            [
                {"place": {"city": "Oslo"}, "title": "t"},
                {"place": {"city": "Oslo", "country": None}, "title": "t", "unit": "fahrenheit"},
                {"place": {"city": "Oslo", "country": "NO"}, "title": "t", "detail": "long"},
            ],
            [
                {"place": {"city": "Oslo"}},
                {"place": {"country": "NO"}, "title": "t"},
                {"place": {"city": 1}, "title": "t"},
                {"place": {"city": "Oslo"}, "title": "t", "unit": "kelvin"},
                {"place": {"city": "Oslo"}, "title": "t", "detail": "medium"},
                {"place": {"city": "Oslo"}, "title": "t", "days": 11},
            ],
        ),
        (
            AllRequired,
            [
                {
                    "query": "q",
                    "inner": {"label": "l", "kind": "a"},
                    "unit": "celsius",
                    "maybe": None,
                    "tags": [],
                }
            ],
            [
                {
                    "query": "q",
                    "inner": {"label": "l", "kind": "c"},
                    "unit": "celsius",
                    "maybe": 1,
                    "tags": [],
                },
                {
                    "query": "q",
                    "inner": {"label": "l", "kind": "a"},
                    "unit": "K",
                    "maybe": 1,
                    "tags": [],
                },
                {"query": "q", "inner": {"label": "l", "kind": "a"}, "unit": "celsius", "tags": []},
            ],
        ),
        (
            Node,
            [{"name": "root", "children": [{"name": "leaf", "children": []}]}],
            [{"children": []}, {"name": 3}, {"name": "root", "children": "nope"}],
        ),
    ],
)
def test_inlined_schema_accepts_and_rejects_the_same_instances(
    model: type[BaseModel], good: list[Any], bad: list[Any]
) -> None:
    original = model.model_json_schema()
    inlined = inline_refs(original)
    for instance in good:
        assert valid(original, instance) and valid(inlined, instance), instance
    for instance in bad:
        assert not valid(original, instance), instance
        assert not valid(inlined, instance), instance


# --------------------------------------------------------------------------- strictify


def test_strictify_closes_every_object_when_all_properties_are_required() -> None:
    schema, ok = strictify(AllRequired.model_json_schema())
    assert ok
    assert schema == {
        "properties": {
            "query": {"type": "string"},
            "inner": {
                "properties": {
                    "label": {"type": "string"},
                    "kind": {"enum": ["a", "b"], "type": "string"},
                },
                "required": ["label", "kind"],
                "type": "object",
                "additionalProperties": False,
            },
            "unit": {"enum": ["celsius", "fahrenheit"], "type": "string"},
            "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "tags": {"items": {"type": "string"}, "type": "array"},
        },
        "required": ["query", "inner", "unit", "maybe", "tags"],
        "type": "object",
        "additionalProperties": False,
    }
    sample: dict[str, Any] = {
        "query": "q",
        "inner": {"label": "l", "kind": "a"},
        "unit": "celsius",
        "maybe": None,
        "tags": [],
    }
    assert valid(schema, sample)
    assert not valid(schema, {**sample, "extra": 1})
    assert not valid(schema, {**sample, "inner": {"label": "l", "kind": "a", "extra": 1}})


def test_strictify_refuses_optional_properties_and_returns_the_plain_inlined_copy() -> None:
    original = Forecast.model_json_schema()
    schema, ok = strictify(original)
    assert not ok
    assert schema == inline_refs(original)
    assert not has_key(schema, "additionalProperties")


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "object",
            "properties": {"m": {"type": "object", "additionalProperties": True}},
            "required": ["m"],
        },
        {"type": "object", "properties": {"m": {"type": "object"}}, "required": ["m"]},
        {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
        {
            "type": "object",
            "properties": {
                "s": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
            },
            "required": ["s"],
        },
        {"type": "object", "properties": {"s": {"not": {"type": "string"}}}, "required": ["s"]},
        {
            "type": "object",
            "properties": {"s": {"type": "string", "format": "uri"}},
            "required": ["s"],
        },
        {"type": "object", "properties": {"s": {}}, "required": ["s"]},
        {"type": "object", "properties": {}, "patternProperties": {"^x": {"type": "string"}}},
        {"type": "array", "items": {"type": "string"}},
        {"anyOf": [{"type": "object", "properties": {}}, {"type": "null"}]},
    ],
    ids=[
        "open-map",
        "object-without-properties",
        "typed-map",
        "uniqueItems",
        "not",
        "format-uri",
        "untyped",
        "patternProperties",
        "array-root",
        "anyOf-root",
    ],
)
def test_strictify_refuses_what_openai_strict_cannot_express(schema: dict[str, Any]) -> None:
    out, ok = strictify(schema)
    assert not ok
    assert out == inline_refs(schema)


def test_strictify_refuses_recursive_models_because_the_cut_is_untyped() -> None:
    _, ok = strictify(StrictTree.model_json_schema())
    assert not ok


def test_strictify_accepts_an_empty_arguments_object() -> None:
    class NoArgs(BaseModel):
        pass

    schema, ok = strictify(NoArgs.model_json_schema())
    assert ok
    assert schema == {"properties": {}, "type": "object", "additionalProperties": False}


# --------------------------------------------------------------------------- exporters


def test_openai_chat_shape_with_auto_strict_on() -> None:
    tools = to_openai_chat([entry(Inner.model_json_schema(), description="Label a thing.")])
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "weather__get",
                "description": "Label a thing.",
                "parameters": {
                    "properties": {
                        "label": {"type": "string"},
                        "kind": {"enum": ["a", "b"], "type": "string"},
                    },
                    "required": ["label", "kind"],
                    "type": "object",
                    "additionalProperties": False,
                },
                "strict": True,
            },
        }
    ]


def test_openai_chat_auto_strict_off_for_optional_arguments() -> None:
    (tool,) = to_openai_chat([entry(Forecast.model_json_schema())])
    assert tool["function"]["strict"] is False
    assert tool["function"]["parameters"] == inline_refs(Forecast.model_json_schema())


def test_openai_forced_strict_raises_naming_the_tool() -> None:
    entries = [
        entry(Inner.model_json_schema(), name="fine"),
        entry(Forecast.model_json_schema(), name="forecast"),
    ]
    with pytest.raises(ValueError, match="weather__forecast") as info:
        to_openai_chat(entries, strict=True)
    assert "days" in str(info.value)  # says why: an optional property
    with pytest.raises(ValueError, match="weather__forecast"):
        to_openai_responses(entries, strict=True)


def test_openai_forced_strict_succeeds_when_possible() -> None:
    (tool,) = to_openai_chat([entry(AllRequired.model_json_schema())], strict=True)
    assert tool["function"]["strict"] is True
    assert tool["function"]["parameters"]["additionalProperties"] is False


def test_openai_strict_false_leaves_objects_open() -> None:
    (tool,) = to_openai_chat([entry(AllRequired.model_json_schema())], strict=False)
    assert tool["function"]["strict"] is False
    assert not has_key(tool["function"]["parameters"], "additionalProperties")
    assert tool["function"]["parameters"] == inline_refs(AllRequired.model_json_schema())


def test_openai_responses_shape_is_flat() -> None:
    tools = to_openai_responses(
        [entry(Inner.model_json_schema()), entry(Node.model_json_schema(), name="tree")]
    )
    assert [set(t) for t in tools] == [{"type", "name", "description", "parameters", "strict"}] * 2
    assert tools[0]["type"] == "function"
    assert tools[0]["name"] == "weather__get"
    assert tools[0]["strict"] is True
    assert tools[1]["name"] == "weather__tree"
    assert tools[1]["strict"] is False
    chat = to_openai_chat(
        [entry(Inner.model_json_schema()), entry(Node.model_json_schema(), name="tree")]
    )
    assert [{"type": "function", **c["function"]} for c in chat] == tools


def test_anthropic_shape() -> None:
    tools = to_anthropic([entry(Forecast.model_json_schema(), description="Forecast.")])
    assert tools == [
        {
            "name": "weather__get",
            "description": "Forecast.",
            "input_schema": inline_refs(Forecast.model_json_schema()),
        }
    ]
    assert tools[0]["input_schema"]["type"] == "object"


def test_root_is_made_an_object_schema() -> None:
    (bare,) = to_anthropic([entry({})])
    assert bare["input_schema"] == {"type": "object", "properties": {}}
    (described,) = to_openai_chat([entry({"description": "nothing"})])
    assert described["function"]["parameters"] == {
        "type": "object",
        "description": "nothing",
        "properties": {},
        "additionalProperties": False,
    }
    assert described["function"]["strict"] is True
    (typed,) = to_mcp([entry({"type": "object"})])
    assert typed["inputSchema"] == {"type": "object", "properties": {}}


def test_non_object_root_is_rejected() -> None:
    with pytest.raises(ValueError, match="weather__get"):
        to_anthropic([entry({"type": "string"})])


def test_descriptions_fall_back_to_the_tool_name_and_are_truncated_except_for_mcp() -> None:
    long = "x" * 3000
    entries = [
        entry({}, name="nameless", description=""),
        entry({}, name="wordy", description=long),
    ]
    chat = to_openai_chat(entries)
    assert chat[0]["function"]["description"] == "nameless"
    assert len(chat[1]["function"]["description"]) == 1024
    assert chat[1]["function"]["description"].endswith("...")
    anthropic = to_anthropic(entries)
    assert anthropic[0]["description"] == "nameless"
    assert len(anthropic[1]["description"]) == 1024
    responses = to_openai_responses(entries)
    assert len(responses[1]["description"]) == 1024
    mcp = to_mcp(entries)
    assert mcp[0]["description"] == "nameless"
    assert mcp[1]["description"] == long


def test_mcp_shape_with_annotations_and_object_output() -> None:
    tool = entry(
        Place.model_json_schema(),
        output_schema=Forecast.model_json_schema(),
        annotations={
            "title": "Weather lookup",
            "read_only": True,
            "destructive": False,
            "idempotent": True,
            "open_world": True,
            "something_else": 1,
        },
    )
    assert to_mcp([tool]) == [
        {
            "name": "weather__get",
            "title": "Weather lookup",
            "description": "Get things.",
            "inputSchema": inline_refs(Place.model_json_schema()),
            "outputSchema": inline_refs(Forecast.model_json_schema()),
            "annotations": {
                "title": "Weather lookup",
                "readOnlyHint": True,
                "destructiveHint": False,
                "idempotentHint": True,
                "openWorldHint": True,
            },
        }
    ]
    assert not mcp_wraps_output(tool.spec)


def test_mcp_omits_title_output_and_annotations_when_absent() -> None:
    tool = entry(Inner.model_json_schema())
    (out,) = to_mcp([tool])
    assert out == {
        "name": "weather__get",
        "description": "Get things.",
        "inputSchema": inline_refs(Inner.model_json_schema()),
    }
    assert not mcp_wraps_output(tool.spec)


def test_mcp_wraps_non_object_output_schema() -> None:
    tool = entry(
        Inner.model_json_schema(), output_schema={"type": "array", "items": {"type": "integer"}}
    )
    (out,) = to_mcp([tool])
    assert out["outputSchema"] == {
        "type": "object",
        "properties": {"result": {"type": "array", "items": {"type": "integer"}}},
        "required": ["result"],
    }
    assert mcp_wraps_output(tool.spec)
    assert valid(out["outputSchema"], {"result": [1, 2]})


def test_mcp_output_schema_given_as_root_ref_is_an_object() -> None:
    tool = entry(Inner.model_json_schema(), output_schema=Node.model_json_schema())
    (out,) = to_mcp([tool])
    assert out["outputSchema"]["type"] == "object"
    assert not has_key(out["outputSchema"], "$ref")
    assert not mcp_wraps_output(tool.spec)


def test_export_dispatches_on_format_name() -> None:
    entries = [entry(Inner.model_json_schema())]
    assert FORMATS == ("openai", "responses", "anthropic", "mcp")
    assert export(entries, "openai") == to_openai_chat(entries)
    assert export(entries, "openai", strict=False) == to_openai_chat(entries, strict=False)
    assert export(entries, "responses") == to_openai_responses(entries)
    assert export(entries, "anthropic") == to_anthropic(entries)
    assert export(entries, "mcp") == to_mcp(entries)


def test_export_rejects_unknown_formats_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="openai, responses, anthropic, mcp"):
        export([], "gemini")


def test_exporters_accept_any_iterable_once() -> None:
    entries = (entry(Inner.model_json_schema(), name=n) for n in ("a", "b"))
    assert [t["name"] for t in to_anthropic(entries)] == ["weather__a", "weather__b"]


def test_exporters_refuse_duplicate_or_invalid_names() -> None:
    dup = [entry({}, name="get.x"), entry({}, name="get_x")]
    with pytest.raises(ValueError, match="duplicate"):
        to_mcp(dup)
    bad = CatalogEntry("acme/w", "w", ToolSpec("t", "d", {}), "w.t")
    with pytest.raises(ValueError, match="invalid"):
        to_openai_chat([bad])


def test_exports_do_not_mutate_specs() -> None:
    tool = entry(Forecast.model_json_schema(), output_schema=Node.model_json_schema())
    before = copy.deepcopy(tool.spec.to_dict())
    for fmt in FORMATS:
        export([tool], fmt)
    assert tool.spec.to_dict() == before
