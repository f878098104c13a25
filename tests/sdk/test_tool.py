"""``@tool`` schemas from type hints and docstrings, through the public host API."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from plughub import PluginHost
from plughub.sdk import Context, Image, Json, Link, Plugin, Text, ToolResult, tool
from plughub.sdk._docstring import parse_docstring


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    city: str = "London"


class Shapes(Plugin):
    id = "acme/shapes"

    @tool(title="Rich signature", read_only=True)
    def rich(
        self,
        ctx: Context,
        name: Annotated[str, Field(min_length=2, max_length=5)],
        count: Annotated[int, Field(ge=1, le=10, description="from Field")] = 1,
        mode: Literal["fast", "slow"] = "fast",
        colour: Colour = Colour.RED,
        address: Address | None = None,
        tags: list[str] | None = None,
    ) -> dict[str, object]:
        """Exercise every kind of parameter.

        More detail that is not the summary.

        Args:
            name: The name,
                spanning two lines.
            count: ignored because Field has a description.
            mode: How fast.
        """
        return {"name": name, "count": count, "mode": mode, "colour": colour.value,
                "city": address.city if address else None, "tags": tags, "ctx": ctx.plugin_id}

    @tool
    def contents(self, kind: str) -> ToolResult | Text | list[Text]:
        """Return content types directly."""
        if kind == "image":
            return ToolResult([Image(b"\x89PNG", "image/png")])
        if kind == "link":
            return ToolResult([Link("https://example.org", "example")])
        if kind == "many":
            return [Text("a"), Text("b")]
        return Text("plain")

    @tool
    def model_out(self, street: str) -> Address:
        """Return a pydantic model."""
        return Address(street=street)


def spec(host: PluginHost, name: str) -> dict[str, object]:
    (entry,) = [e for e in host.catalog() if e.spec.name == name]
    return entry.spec.to_dict()


def test_schema_from_type_hints_and_docstring() -> None:
    with PluginHost(plugins=[Shapes], entry_points=False) as host:
        s = spec(host, "rich")
        schema = s["input_schema"]
        assert isinstance(schema, dict)
        props = schema["properties"]
        assert "ctx" not in props  # the Context parameter is injected, not part of the schema
        assert schema["required"] == ["name"]
        assert props["name"]["minLength"] == 2 and props["name"]["maxLength"] == 5
        assert props["name"]["description"] == "The name, spanning two lines."
        assert props["count"]["description"] == "from Field" and props["count"]["maximum"] == 10
        assert props["mode"]["enum"] == ["fast", "slow"] and props["mode"]["description"] == "How fast."
        assert schema["additionalProperties"] is False
        assert s["description"] == "Exercise every kind of parameter."
        assert s["annotations"] == {"title": "Rich signature", "read_only": True}
        assert s["output_schema"] == {"additionalProperties": True, "type": "object"}


def test_arguments_are_validated_and_coerced_into_python_types() -> None:
    with PluginHost(plugins=[Shapes], entry_points=False) as host:
        r = host.invoke("shapes", "rich", {"name": "abc", "colour": "blue", "address": {"street": "x"}})
        assert r.structured == {"name": "abc", "count": 1, "mode": "fast", "colour": "blue",
                                "city": "London", "tags": None, "ctx": "acme/shapes"}
        for bad in ({"name": "a"}, {"name": "abc", "count": 11}, {"name": "abc", "mode": "warp"},
                    {"name": "abc", "colour": "green"}, {"name": "abc", "address": {"city": "x"}},
                    {"name": "abc", "ctx": "forged"}):
            r = host.invoke("shapes", "rich", bad)
            assert r.is_error and r.reason == "invalid_arguments", bad


def test_content_returns_pass_through() -> None:
    with PluginHost(plugins=[Shapes], entry_points=False) as host:
        assert host.invoke("shapes", "contents", {"kind": "image"}).content[0].type == "image"
        assert host.invoke("shapes", "contents", {"kind": "many"}).text == "a\nb"
        link = host.invoke("shapes", "contents", {"kind": "link"}).to_dict()
        assert link["content"] == [{"type": "link", "url": "https://example.org", "title": "example"}]
        r = host.invoke("shapes", "model_out", {"street": "Baker"})
        assert r.structured == {"street": "Baker", "city": "London"}
        assert isinstance(r.content[0], Json)
        assert spec(host, "model_out")["output_schema"]["required"] == ["street"]  # type: ignore[index]


def test_module_functions_sync_and_async_become_tools() -> None:
    @tool
    async def shout(text: str) -> str:
        """Upper-case text."""
        return text.upper()

    @tool(name="whisper", description="Lower-case text.")
    def lower(text: str) -> str:
        return text.lower()

    with PluginHost(tools=[shout, lower], entry_points=False) as host:
        assert host.invoke("tools", "shout", {"text": "hi"}).text == "HI"
        assert host.invoke("tools", "whisper", {"text": "HI"}).text == "hi"
        assert {e.llm_name for e in host.catalog()} == {"tools__shout", "tools__whisper"}


def test_docstring_parser_handles_google_and_dialer_sections() -> None:
    doc = parse_docstring(
        """Summary line.

        Body text.

        Context Parameters:
            param1 (str): First.
            param2 (int, optional): Second
                continued.

        Returns:
            dict: ignored
        """
    )
    assert doc.summary == "Summary line."
    assert doc.params["param1"].type_hint == "str" and not doc.params["param1"].optional
    assert doc.params["param2"].optional and doc.params["param2"].description == "Second continued."
    assert "Returns" not in doc.description
