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
    assert re.search(
        rf"^plughub (await host\.ainvoke \(app loop\)|ainvoke via a manual hop.*){cells}",
        out,
        re.M,
    )
    assert re.search(rf"^plughub await host\.ainvoke \(host's loop\){cells}", out, re.M)
    assert re.search(rf"^plughub host\.invoke \(sync\){cells}", out, re.M)
    assert re.search(r"^ainvoke from a loop other than the host's.*: (ok|BROKEN)$", out, re.M)
    assert re.search(
        rf"^throughput, 32 concurrent ainvoke on one worker .*: plughub {NUM} calls/s", out, re.M
    )
    if has_mcp_server():
        assert re.search(rf"^MCP SDK [\d.]+ stdio call_tool{cells}", out, re.M)
        assert re.search(rf"^MCP / plughub p50, unpinned: ainvoke \(app loop\) {NUM}x", out, re.M)
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
    assert re.search(rf"^plughub worker, cold\s+{NUM}\s+{NUM}\s+{NUM}$", out, re.M)
    assert re.search(
        r"^plughub worker, warm\s+(\S+\s+\S+\s+\S+|warm start: not available)$", out, re.M
    )

    # --codecs
    assert re.search(
        rf"^codecs, encode\+decode of a 226-byte tools/call: json {NUM} us, orjson {NUM} us",
        out,
        re.M,
    )

    # goal lines are printed either way; whether they pass is not a test matter
    verdict = r"(PASS|FAIL)"
    assert re.search(
        rf"^GOAL plughub RT / floor \(pinned, p50\) = {NUM}x\s+\(goal <= 2\.0x; unpinned {NUM}x\): {verdict}$",
        out,
        re.M,
    )
    if has_mcp_server():
        assert re.search(
            rf"^GOAL MCP / plughub \(unpinned, p50\) = {NUM}x\s+\(goal >= 5\.0x; pinned {NUM}x\): {verdict}$",
            out,
            re.M,
        )
    assert re.search(r"^GOAL warm / cold start = (\d+%|n/a)\s+\(goal <= 25%\): ", out, re.M)
    assert re.search(
        rf"^GOAL idle USS, cold worker = {NUM} MiB\s+\(goal <= 12 MiB\): {verdict}$", out, re.M
    )


@pytest.mark.timeout(120)
def test_worker_quick_json_with_breakdown() -> None:
    res: dict[str, Any] = json.loads(run("--quick", "--json", "--no-mcp", "--breakdown"))
    for mode in ("unpinned", "pinned"):
        rows = res["roundtrip"][mode]
        for name in ("floor", "ainvoke_app", "ainvoke_host", "invoke", "floor_shape"):
            assert rows[name]["p50_us"] > 0
            assert rows[name]["p99_us"] >= rows[name]["p50_us"] * 0.5
        assert rows["floor"]["x_floor_p50"]["median"] == pytest.approx(1.0)
    assert res["throughput"]["plughub"]["median"] > 0
    assert res["startup_ms"]["cold"]["median"] > 0
    assert res["memory"]["plughub worker, cold"]["uss"] > 0
    assert res["cpu_us"]
    assert "+ asyncio parent instead of a blocking one" in res["attribution"]
    for key in ("rt", "warm", "uss_cold"):
        assert key in res["goals"]
    assert isinstance(res["goals"]["rt"]["pass"], bool)
    assert "mcp" not in res
