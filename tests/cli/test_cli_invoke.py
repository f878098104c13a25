"""``invoke``: argument parsing, output shapes, streaming and the exit-code mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plughub.cli._common import CliError
from plughub.cli._invoke import MAX_ARGS_BYTES, parse_args, parse_pairs

# -- argument parsing -------------------------------------------------------------------------


def test_pairs_are_json_when_they_parse_and_text_otherwise() -> None:
    parsed = parse_pairs(
        [
            "n=3",
            "flag=true",
            'name="x"',
            "plain=hello",
            "empty=",
            "eq=a=b",
            "nan=NaN",
            'tags=["a","b"]',
            "null=null",
        ]
    )
    assert parsed == {
        "n": 3,
        "flag": True,
        "name": "x",
        "plain": "hello",
        "empty": "",
        "eq": "a=b",
        "nan": "NaN",
        "tags": ["a", "b"],
        "null": None,
    }


def test_pairs_need_a_key_and_an_equals_sign() -> None:
    with pytest.raises(CliError, match="key=value"):
        parse_pairs(["novalue"])
    with pytest.raises(CliError, match="missing key"):
        parse_pairs(["=3"])


def test_args_must_be_a_json_object(tmp_path: Path) -> None:
    assert parse_args('{"a": 1}') == {"a": 1}
    for bad in ("[1]", "3", "{bad", "", '{"x": NaN}'):
        with pytest.raises(CliError):
            parse_args(bad)
    f = tmp_path / "args.json"
    f.write_text('{"from": "file"}')
    assert parse_args(f"@{f}") == {"from": "file"}
    with pytest.raises(CliError, match="cannot read"):
        parse_args(f"@{tmp_path / 'missing.json'}")


# -- in-process -------------------------------------------------------------------------------


def test_invoke_prints_the_text(cli) -> None:
    result = cli("invoke", "greet", "hello", "name=Ann", "times=2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hello Ann! Hello Ann!\n"
    assert result.stderr == ""


def test_invoke_json_has_exactly_the_documented_keys(cli) -> None:
    ok = cli("invoke", "greet", "hello", "name=Ann", "--json")
    data = json.loads(ok.stdout)
    assert set(data) == {"is_error", "content", "structured"}
    assert data == {
        "is_error": False,
        "content": [{"type": "text", "text": "Hello Ann!"}],
        "structured": None,
    }
    err = cli("invoke", "greet", "fail", "msg=nope", "--json")
    assert err.exit_code == 1
    data = json.loads(err.stdout)
    assert set(data) == {"is_error", "content", "structured", "reason"}
    assert data["is_error"] is True and data["reason"] == "tool_error"


def test_tool_error_exits_1_with_the_reason_on_stderr(cli) -> None:
    result = cli("invoke", "greet", "fail", "msg=boom")
    assert result.exit_code == 1
    assert result.stdout == "boom\n"
    assert "tool_error" in result.stderr and "acme/greet.fail" in result.stderr


def test_key_values_are_typed_and_override_args(cli) -> None:
    result = cli(
        "invoke",
        "greet",
        "echo",
        "--args",
        '{"n": 1, "name": "json"}',
        "n=3",
        "flag=true",
        'tags=["a"]',
        "raw=hello world",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["structured"] == {
        "n": 3,
        "flag": True,
        "name": "json",
        "tags": ["a"],
        "raw": "hello world",
    }


def test_an_argument_with_equals_is_never_the_tool(cli) -> None:
    # solo has one tool, so "a=1" must be an argument, not a tool called "a=1"
    result = cli("invoke", "solo", "a=1", "b=2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "3\n"


@pytest.mark.parametrize("ref", ["greet.hello", "greet__hello", "acme/greet.hello"])
def test_plugin_dot_tool_and_llm_names_address_a_tool(cli, ref: str) -> None:
    result = cli("invoke", ref, "name=Zed")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hello Zed!\n"


def test_args_from_stdin(cli) -> None:
    result = cli("invoke", "greet", "hello", "--args", "-", input='{"name": "Stdin"}')
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hello Stdin!\n"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("invoke", "greet", "hello", "--args", "{bad json"), "not valid JSON"),
        (("invoke", "greet", "hello", "--args", "[1, 2]"), "JSON object"),
        (("invoke", "greet", "nope"), "no tool 'nope'"),
        (("invoke", "nope", "x"), "no such plugin"),
        (("invoke", "greet"), "has 4 tools (count, echo, fail, hello); name one"),
        (("invoke", "broken", "x"), "plughub_missing_module_for_tests"),
        (("invoke", "greet", "hello", "name"), "key=value"),
        (("invoke", "greet", "hello", "name=x", "--timeout", "0"), "--timeout"),
    ],
)
def test_bad_usage_exits_2_with_one_line(cli, argv: tuple[str, ...], needle: str) -> None:
    result = cli(*argv)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_schema_violation_is_exit_2_with_invalid_arguments(cli) -> None:
    result = cli("invoke", "greet", "hello", "times=many", "--json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["is_error"] is True and data["reason"] == "invalid_arguments"
    missing = cli("invoke", "greet", "hello")
    assert missing.exit_code == 2 and "invalid_arguments" in missing.stderr


def test_huge_inline_args_are_refused(cli) -> None:
    huge = '{"name": "' + "x" * MAX_ARGS_BYTES + '"}'
    result = cli("invoke", "greet", "hello", "--args", huge)
    assert result.exit_code == 2
    assert "16 MiB" in result.stderr


def test_invalid_utf8_on_stdin_is_refused(cli) -> None:
    result = cli("invoke", "greet", "hello", "--args", "-", input=b'{"name": "\xff"}')
    assert result.exit_code == 2 and "UTF-8" in result.stderr


def test_stream_prints_chunks_and_progress_on_stderr(cli) -> None:
    result = cli("invoke", "greet", "count", "n=2", "--stream")
    assert result.exit_code == 0, result.output
    assert result.stdout == "chunk0\nchunk1\n"
    assert "1/2" in result.stderr and "step 2" in result.stderr
    assert "made chunk 0" in result.stderr


def test_stream_of_a_non_streaming_tool_prints_its_result(cli) -> None:
    result = cli("invoke", "greet", "hello", "name=Ann", "--stream")
    assert result.stdout == "Hello Ann!\n"


# -- the real console script ------------------------------------------------------------------


def test_subprocess_exit_codes(sh) -> None:
    ok = sh("invoke", "greet", "hello", "name=Ann", "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["content"][0]["text"] == "Hello Ann!"
    tool_error = sh("invoke", "greet", "fail", "msg=boom")
    assert tool_error.returncode == 1 and tool_error.stdout == b"boom\n"
    bad_json = sh("invoke", "greet", "hello", "--args", "{nope")
    assert bad_json.returncode == 2 and b"not valid JSON" in bad_json.stderr
    assert b"Traceback" not in bad_json.stderr
    unknown = sh("invoke", "greet", "missing_tool")
    assert unknown.returncode == 2 and b"missing_tool" in unknown.stderr
    schema = sh("invoke", "greet", "hello", "name=1", "times=lots")
    assert schema.returncode == 2
    broken = sh("invoke", "broken", "x")
    assert broken.returncode == 2 and b"acme/broken" in broken.stderr
    assert broken.stderr.count(b"\n") == 1


def test_subprocess_huge_args_from_file_and_stdin(sh, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b'{"name": "' + b"x" * (MAX_ARGS_BYTES + 10) + b'"}')
    from_file = sh("invoke", "greet", "hello", "--args", f"@{big}")
    assert from_file.returncode == 2 and b"larger than" in from_file.stderr
    from_stdin = sh("invoke", "greet", "hello", "--args", "-", input=big.read_bytes())
    assert from_stdin.returncode == 2 and b"larger than" in from_stdin.stderr
    bad_utf8 = sh("invoke", "greet", "hello", "--args", "-", input=b'{"name": "\xc3\x28"}')
    assert bad_utf8.returncode == 2 and b"UTF-8" in bad_utf8.stderr


def test_subprocess_plugin_limit_applies_to_cli_arguments(sh, plugins_dir: Path) -> None:
    # 2 MiB is under the CLI's 16 MiB cap but over the manifest's default 1 MiB argument limit
    args = plugins_dir.parent / "two_mib.json"
    args.write_text(json.dumps({"name": "y" * (2 << 20)}))
    proc = sh("invoke", "greet", "hello", "--args", f"@{args}", "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["reason"] == "invalid_arguments"


def test_subprocess_stream_json_is_ndjson_ending_with_the_result(sh) -> None:
    proc = sh("invoke", "greet", "count", "n=3", "--stream", "--json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    types = [e["type"] for e in events]
    assert types[-1] == "result" and types.count("result") == 1
    assert types[:-1] == ["progress", "log", "text"] * 3
    chunks = [e["text"] for e in events if e["type"] == "text"]
    assert chunks == ["chunk0", "chunk1", "chunk2"]
    final = events[-1]
    assert final["is_error"] is False
    assert [c["text"] for c in final["content"]] == chunks
    assert [e["progress"] for e in events if e["type"] == "progress"] == [1, 2, 3]
