"""Cost of building a plugin env with ``EnvBuilder.ensure`` against ``python -m venv`` + pip.

The plugin needs one pure-Python dependency, ``tinydep``, from bundled wheels (offline). The
wheel is written by hand (no build backend, no network). Each round times, in a rotating order:

  ensure cold   ``EnvBuilder(fresh root, offline=True).ensure(spec)`` with a fresh uv cache
                (default ``root/../uv-cache``), a new builder (so the base scan and
                ``uv --version`` are included): the first plugin on a new machine
  ensure warm   the same with a fresh root but a shared, already-filled uv cache: every later
                plugin on the same machine
  venv + pip    ``python -m venv D`` then ``D/bin/python -m pip install --no-index
                --find-links WHEELS tinydep``

Figures are medians over rounds (default 5); the goal is ``ensure cold / (venv + pip) <= 0.5``.
Timings never change the exit status; a build that fails (or an env that cannot import
``tinydep``) exits 1.

Usage: ``python bench/env_install.py [--quick] [--json] [--rounds N]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from plughub.runtime.worker._envs import EnvBuilder, EnvSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _wheels import make_wheel as _make_wheel

GOAL = 0.5


def make_wheel(dest: Path, name: str = "tinydep", version: str = "1.0.0") -> Path:
    """A valid pure-Python wheel ``name`` whose module holds ``X = 42`` (the tests' builder)."""
    return _make_wheel(dest, name, version, code="X = 42\n")


def _check_import(python: Path) -> None:
    out = subprocess.run(
        [str(python), "-c", "import tinydep; print(tinydep.X)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.stdout.strip() != "42":
        raise RuntimeError(f"{python} cannot import tinydep: {out.stderr}")


def _venv_pip(work: Path, wheels: Path) -> Path:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    subprocess.run([sys.executable, "-m", "venv", str(work)], check=True, env=env)
    python = work / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(wheels),
            "tinydep",
        ],
        check=True,
        env=env,
    )
    return python


def measure_install(rounds: int = 5, *, workdir: Path | None = None) -> dict[str, Any]:
    """Time cold and warm-cache ``ensure`` against venv + pip, ``rounds`` times each, in one
    run; return medians (seconds), all samples and the goal ratio."""
    tmp = Path(tempfile.mkdtemp(prefix="plughub-bench-env-", dir=workdir))
    try:
        wheels = tmp / "wheels"
        make_wheel(wheels)
        spec = EnvSpec("bench/one-dep", "1.0.0", ("tinydep",), wheels_dir=str(wheels))
        warm_cache = tmp / "warm-cache"
        EnvBuilder(tmp / "warmup" / "envs", cache_dir=warm_cache, offline=True).ensure(spec)
        samples: dict[str, list[float]] = {"ensure_cold": [], "ensure_warm": [], "venv_pip": []}
        uv_version = ""

        def cold(i: int) -> Path:
            builder = EnvBuilder(tmp / f"cold{i}" / "envs", offline=True)
            return builder.ensure(spec).python

        def warm(i: int) -> Path:
            builder = EnvBuilder(tmp / f"warm{i}" / "envs", cache_dir=warm_cache, offline=True)
            return builder.ensure(spec).python

        def pip(i: int) -> Path:
            return _venv_pip(tmp / f"pip{i}", wheels)

        benches = [("ensure_cold", cold), ("ensure_warm", warm), ("venv_pip", pip)]
        for i in range(rounds):
            k = i % len(benches)
            for name, fn in benches[k:] + benches[:k]:  # rotate so no bench always goes first
                t0 = time.perf_counter()
                python = fn(i)
                samples[name].append(time.perf_counter() - t0)
                if i == 0:
                    _check_import(python)
        marker = next((tmp / "cold0" / "envs").glob("*/*/plughub-env.json"))
        uv_version = json.loads(marker.read_text())["uv"]
        med = {name: statistics.median(vals) for name, vals in samples.items()}
        ratio = med["ensure_cold"] / med["venv_pip"]
        return {
            "rounds": rounds,
            "python": platform.python_version(),
            "uv": uv_version,
            "median_s": med,
            "samples_s": samples,
            "ratio_cold": ratio,
            "ratio_warm": med["ensure_warm"] / med["venv_pip"],
            "goal": {"value": ratio, "max": GOAL, "pass": ratio <= GOAL},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round (smoke test)")
    ap.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5, quick 1)")
    opts = ap.parse_args(argv)
    rounds = opts.rounds or (1 if opts.quick else 5)
    load0 = os.getloadavg()[0]
    try:
        res = measure_install(rounds)
    except Exception as exc:
        print(f"env_install: build failed: {exc}", file=sys.stderr)
        return 1
    res["loadavg_start"], res["loadavg_end"] = load0, os.getloadavg()[0]
    if opts.json:
        print(json.dumps(res, indent=2))
        return 0
    med = res["median_s"]
    print("env_install: plugin env with 1 pure-Python dependency from bundled wheels (offline)")
    print(
        f"python {res['python']}, {res['uv']}, {rounds} round(s), median; load average "
        f"{res['loadavg_start']:.2f} -> {res['loadavg_end']:.2f}"
    )
    print(f"  EnvBuilder.ensure (fresh root, cold uv cache)   {med['ensure_cold'] * 1e3:9.1f} ms")
    print(f"  EnvBuilder.ensure (fresh root, warm uv cache)   {med['ensure_warm'] * 1e3:9.1f} ms")
    print(f"  python -m venv + pip install --no-index         {med['venv_pip'] * 1e3:9.1f} ms")
    print(f"ratio warm / (venv + pip) = {res['ratio_warm']:.3f}x")
    verdict = "PASS" if res["goal"]["pass"] else "FAIL"
    print(
        f"GOAL ensure(cold) / (venv + pip) = {res['ratio_cold']:.3f}x  (goal <= {GOAL}x): {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
