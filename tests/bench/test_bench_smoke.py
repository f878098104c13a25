"""Smoke tests for bench/: the scripts run and print their figures.

Timings are never asserted (shared machines are far too noisy); only that each script exits 0
and prints the lines people read. The one correctness property asserted is discovery's: listing
plugins must not import any plugin code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHUB_")}
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.timeout(120)
def test_invoke_inprocess_quick_prints_table_and_goal() -> None:
    out = ok(run("invoke_inprocess.py", "--quick"))
    for label in (
        "direct call echo(**args)",
        "Model.model_validate(args)",
        "host.invoke('tools', 'echo', args)",
        "host.invoke('tools', 'echo', json_str)",
        "await host.ainvoke('tools', 'aecho', args)",
    ):
        assert label in out
    assert re.search(r"^invoke / direct\s+[\d.]+x", out, re.M)
    assert re.search(r"^overhead = invoke - direct = [\d,.]+ ns", out, re.M)
    # The goal line is printed either way; whether it passes is not a test matter.
    assert re.search(
        r"^GOAL overhead / validation = [\d.]+x\s+\(goal <= 3\.0x\): (PASS|FAIL)$", out, re.M
    )


@pytest.mark.timeout(120)
def test_invoke_inprocess_quick_json() -> None:
    res: dict[str, Any] = json.loads(ok(run("invoke_inprocess.py", "--quick", "--json")))
    for name in ("direct", "validate", "validate_core", "invoke", "invoke_json", "ainvoke"):
        assert res["rows"][name]["median_ns"] > 0
    assert isinstance(res["goal"]["value"], float)
    assert isinstance(res["goal"]["pass"], bool)
    assert "overhead_over_validate" in res["ratios"]


@pytest.mark.timeout(120)
def test_discovery_quick_imports_no_plugin_code() -> None:
    out = ok(run("discovery.py", "--quick"))
    assert re.search(
        r"^ratio PluginHost\(\) time\(100\)/time\(25\) = [\d.]+ .*: (linear|NOT linear)$",
        out,
        re.M,
    )
    for n in (25, 50, 100):
        assert re.search(rf"^\s+{n}\s+[\d.]+\s+[\d.]+", out, re.M)
    # correctness, not timing: discovery must never run plugin code
    assert "imported no plugin code: yes" in out
    assert "detector self-test (loading bench/p0 on purpose is detected): ok" in out


@pytest.mark.timeout(120)
def test_discovery_json_imports_no_plugin_code() -> None:
    res = json.loads(ok(run("discovery.py", "--json", "--sizes", "10,20", "--rounds", "1")))
    assert res["imported_plugin_code"] is False
    assert res["imported_modules"] == []
    assert res["marker_found"] is False
    assert res["detector_self_test"] is True
    assert res["problems"] == []
    assert set(res["sizes"]) == {"10", "20"}
