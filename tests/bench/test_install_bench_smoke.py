"""Smoke test for bench/install.py: it runs and prints its figures and goal line (timings are
never asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")
@pytest.mark.timeout(120)
def test_install_bench_quick_prints_rows_and_goal() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHUB_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "install.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    for label in (
        "plughub install (fresh home, cold uv cache)",
        "plughub install (fresh home, warm uv cache)",
        "python -m venv + pip install --no-index",
        "phases of the cold install (median): verify",
    ):
        assert label in out, out
    assert re.search(
        r"^GOAL install / \(venv\+pip\) = [\d.]+x \(goal <= 0\.5x\): (PASS|FAIL)$", out, re.M
    ), out
