"""Smoke tests for bench/worker.py: it runs and prints its figures.

Timings and goals are never asserted (shared machines are far too noisy; a FAIL goal is a
finding, not a test failure). Only that the script exits 0 and prints the lines people read.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "worker.py"
NUM = r"[\d,]+(?:\.\d+)?"


def has_mcp_server() -> bool:
    """The MCP comparison needs mcp 2.x (``MCPServer``); without it the script says so."""
    try:
        return importlib.util.find_spec("mcp.server.mcpserver") is not None
    except ModuleNotFoundError:
        return False


def run(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHUB_")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.timeout(120)
def test_worker_quick_prints_every_section() -> None:
    out = run("--quick", "--codecs")
    assert re.search(rf"load avg {NUM} -> {NUM}\)", out)
    assert re.search(r"^frames: plughub call \d+ B, result \d+ B; floor \d+ B", out, re.M)

    # round trips: p50, p99, x floor, x p99 for both schedulings
    cells = rf"\s+{NUM}\s+{NUM}\s+{NUM}x\s+{NUM}x\s+{NUM}\s+{NUM}\s+{NUM}x\s+{NUM}x$"
    assert re.search(rf"^floor: JSON echo over os\.pipe \(sync\){cells}", out, re.M)
    # primary: async with PluginHost(...) adopts the benchmark's loop
    assert re.search(
        rf"^plughub await host\.ainvoke \(async with: adopted loop\){cells}", out, re.M
    )
    # secondary: a host whose loop runs on a background thread
    assert re.search(r"^  secondary: PluginHost\(\.\.\.\) without async with", out, re.M)
    assert re.search(
        rf"^    (await host\.ainvoke from the app loop|ainvoke via a manual hop.*){cells}",
        out,
        re.M,
    )
    assert re.search(rf"^    host\.invoke \(sync\){cells}", out, re.M)
    assert re.search(r"^ainvoke from a loop other than the host's.*: (ok|BROKEN)$", out, re.M)
    assert re.search(
        rf"^throughput, 32 concurrent ainvoke on one worker .*: plughub {NUM} calls/s", out, re.M
    )
    if has_mcp_server():
        assert re.search(rf"^MCP SDK [\d.]+ stdio call_tool{cells}", out, re.M)
        assert re.search(
            rf"^MCP / plughub p50, ainvoke adopted loop .*: unpinned {NUM}x / {NUM}x / {NUM}x; "
            rf"pinned {NUM}x / {NUM}x / {NUM}x$",
            out,
            re.M,
        )
    else:
        assert "MCP comparison skipped" in out

    # start-up and memory
    assert re.search(rf"^python -c pass\s+{NUM}\s+{NUM}x", out, re.M)
    assert re.search(rf'^python -c "import plughub\.sdk"\s+{NUM}\s+{NUM}x', out, re.M)
    assert re.search(rf"^cold worker: spawn to first answer\s+{NUM}\s+{NUM}x\s+{NUM}x", out, re.M)
    assert re.search(
        rf"^warm worker \(zygote fork\) to first answer\s+({NUM}\s+{NUM}x|warm start: not available)",
        out,
        re.M,
    )
    # the default worker (warm: forked from the zygote) and the cold path, informational
    mem = rf"\s+{NUM}\s+{NUM}\s+{NUM}$"
    assert re.search(rf"^plughub worker, (warm|cold) \(default\){mem}", out, re.M)
    assert re.search(rf"^plughub worker, cold \((informational|default)\){mem}", out, re.M)
    if re.search(r"^plughub worker, cold \(informational\)", out, re.M):
        assert "the cold path, used for plugins with their own environment" in out
    else:
        assert re.search(r"^plughub worker, warm\s+warm start: not available$", out, re.M)

    # --codecs
    assert re.search(
        rf"^codecs, encode\+decode of a 226-byte tools/call: json {NUM} us, orjson {NUM} us",
        out,
        re.M,
    )

    # goal lines are printed either way; whether they pass is not a test matter
    verdict = r"(PASS|FAIL)"
    assert re.search(
        rf"^GOAL plughub RT / floor \(ainvoke, adopted loop; pinned, p50\) = {NUM}x\s+"
        rf"\(goal <= 2\.0x; unpinned {NUM}x\): {verdict}$",
        out,
        re.M,
    )
    if has_mcp_server():
        assert re.search(
            rf"^GOAL MCP / plughub \(ainvoke, adopted loop; unpinned, p50\) = {NUM}x\s+"
            rf"\(goal >= 5\.0x; pinned {NUM}x\): {verdict}$",
            out,
            re.M,
        )
    assert re.search(r"^GOAL warm / cold start = (\d+%|n/a)\s+\(goal <= 25%\): ", out, re.M)
    assert re.search(
        rf"^GOAL idle USS, default \((warm|cold)\) worker = {NUM} MiB\s+\(goal <= 12 MiB\): "
        rf"{verdict}$",
        out,
        re.M,
    )
    assert "GOAL idle USS, cold worker" not in out  # the cold figure is informational only


@pytest.mark.timeout(120)
def test_worker_quick_json_with_breakdown() -> None:
    res: dict[str, Any] = json.loads(run("--quick", "--json", "--no-mcp", "--breakdown"))
    for mode in ("unpinned", "pinned"):
        rows = res["roundtrip"][mode]
        for name in (
            "floor",
            "ainvoke_adopted",
            "ainvoke_app",
            "invoke",
            "floor_async",
            "floor_lf",
            "floor_shape",
            "floor_pool",
        ):
            assert rows[name]["p50_us"] > 0
            assert rows[name]["p99_us"] >= rows[name]["p50_us"] * 0.5
        assert rows["floor"]["x_floor_p50"]["median"] == pytest.approx(1.0)
    assert res["throughput"]["plughub"]["median"] > 0
    assert res["startup_ms"]["cold"]["median"] > 0
    default = res["worker_config"]["default"]
    assert res["memory"][f"plughub worker, {default} (default)"]["uss"] > 0
    if default == "warm":
        assert res["memory"]["plughub worker, cold (informational)"]["uss"] > 0
    assert res["cpu_us"]
    for step in (
        "+ asyncio parent instead of a blocking one",
        "+ leader/follower child instead of one thread",
        "old shape, reference: + reader thread -> pool thread hop",
    ):
        assert step in res["attribution"]
    for key in ("rt", "warm", "uss"):
        assert key in res["goals"]
    assert "adopted loop" in res["goals"]["rt"]["metric"]
    assert res["goals"]["uss"]["worker"] == default
    assert isinstance(res["goals"]["rt"]["pass"], bool)
    assert "mcp" not in res
