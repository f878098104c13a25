"""Cost of ``Installer.install`` of a plugin package against ``python -m venv`` + pip.

The plugin needs one pure-Python dependency, ``tinydep``, bundled as a wheel in the package's
``wheels/`` folder (offline; the wheel is written by hand, no build backend, no network). The
package is signed, and its key is trusted. Each round times, in a rotating order:

  install cold   the whole pipeline (verify, unpack, resolve, environment with uv, import check
                 in a worker, activate) into a fresh home with a fresh uv cache: the first
                 plugin on a new machine
  install warm   the same into a fresh home, with a shared uv cache that already holds tinydep
  venv + pip     ``python -m venv D`` then ``D/bin/python -m pip install --no-index
                 --find-links WHEELS tinydep`` (no import check, no activation: less work)

Figures are medians over rounds (default 5); the goal is ``install cold / (venv + pip) <= 0.5``.
Timings never change the exit status; an install that fails (or a plugin that cannot answer a
call afterwards) exits 1.

Usage: ``python bench/install.py [--quick] [--json] [--rounds N]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from env_install import _venv_pip, make_wheel

from plughub import PluginHost
from plughub.packages import Installer, SigningKey, TrustStore, build_package

GOAL = 0.5
PLUGIN_ID = "bench/weather"
MANIFEST = """\
id: bench/weather
version: 1.0.0
description: A plugin with one pure-Python dependency.
runtime: worker
entrypoint: main
python:
  requirements: [tinydep]
permissions:
  network: [api.example.com]
"""
CODE = """\
import tinydep
from plughub.sdk import tool


@tool
def forecast(city: str) -> str:
    \"\"\"Tomorrow's weather.\"\"\"
    return f"sunny in {city} ({tinydep.X})"
"""


def make_package(work: Path, key: SigningKey) -> Path:
    src = work / "weather"
    src.mkdir(parents=True)
    (src / "plugin.yaml").write_text(MANIFEST)
    (src / "main.py").write_text(CODE)
    make_wheel(src / "wheels")
    return build_package(src, work / "weather-1.0.0.plughub", key=key)


def _check_installed(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHUB_")}
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(env)
    try:
        with PluginHost(entry_points=False, home=home) as host:
            text = host.invoke(PLUGIN_ID, "forecast", {"city": "Oslo"}).text
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if text != "sunny in Oslo (42)":
        raise RuntimeError(f"the installed plugin answered {text!r}")


def measure(rounds: int = 5, *, workdir: Path | None = None) -> dict[str, Any]:
    """Time cold and warm-cache installs against venv + pip, ``rounds`` times each, in one run;
    return medians (seconds), all samples and the goal ratio."""
    tmp = Path(tempfile.mkdtemp(prefix="plughub-bench-install-", dir=workdir))
    try:
        key = SigningKey.generate()
        pkg = make_package(tmp / "src", key)
        wheels = tmp / "wheels"
        make_wheel(wheels)
        warm_cache = tmp / "warm-cache"

        def installer(home: Path, cache: Path | None) -> Installer:
            trust = TrustStore(home / "trust")
            trust.add(key.public_bytes())
            return Installer(home, trust, cache_dir=cache)

        installer(tmp / "warmup", warm_cache).install(pkg, yes=True)  # fills the warm cache
        samples: dict[str, list[float]] = {"install_cold": [], "install_warm": [], "venv_pip": []}
        phases: dict[str, list[float]] = {}

        def timed_install(home: Path, cache: Path | None) -> Path:
            inst = installer(home, cache)  # trust store set up outside the timing
            marks: dict[str, float] = {}

            def on_event(event: dict[str, Any]) -> None:
                if event["status"] in ("start", "done"):
                    marks[f"{event['phase']}:{event['status']}"] = time.perf_counter()

            t0 = time.perf_counter()
            inst.install(pkg, yes=True, on_event=on_event)
            samples["install_cold" if cache is None else "install_warm"].append(
                time.perf_counter() - t0
            )
            if cache is None:
                for phase in (
                    "verify",
                    "unpack",
                    "resolve",
                    "environment",
                    "import-check",
                    "activate",
                ):
                    spent = marks[f"{phase}:done"] - marks[f"{phase}:start"]
                    phases.setdefault(phase, []).append(spent)
            return home

        def pip(i: int) -> None:
            t0 = time.perf_counter()
            _venv_pip(tmp / f"pip{i}", wheels)
            samples["venv_pip"].append(time.perf_counter() - t0)

        for i in range(rounds):
            benches = [
                lambda i=i: timed_install(tmp / f"cold{i}", None),
                lambda i=i: timed_install(tmp / f"warm{i}", warm_cache),
                lambda i=i: pip(i),
            ]
            k = i % len(benches)
            for fn in benches[k:] + benches[:k]:  # rotate so no bench always goes first
                fn()
        _check_installed(tmp / "cold0")
        med = {name: statistics.median(vals) for name, vals in samples.items()}
        ratio = med["install_cold"] / med["venv_pip"]
        return {
            "rounds": rounds,
            "python": platform.python_version(),
            "median_s": med,
            "phases_cold_median_s": {p: statistics.median(v) for p, v in phases.items()},
            "samples_s": samples,
            "ratio_cold": ratio,
            "ratio_warm": med["install_warm"] / med["venv_pip"],
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
        res = measure(rounds)
    except Exception as exc:
        print(f"install: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    res["loadavg_start"], res["loadavg_end"] = load0, os.getloadavg()[0]
    if opts.json:
        print(json.dumps(res, indent=2))
        return 0
    med = res["median_s"]
    print("install: a signed plugin package with 1 pure-Python dependency from bundled wheels")
    print(
        f"python {res['python']}, {rounds} round(s), median; load average "
        f"{res['loadavg_start']:.2f} -> {res['loadavg_end']:.2f}"
    )
    print(f"  plughub install (fresh home, cold uv cache)     {med['install_cold'] * 1e3:9.1f} ms")
    print(f"  plughub install (fresh home, warm uv cache)     {med['install_warm'] * 1e3:9.1f} ms")
    print(f"  python -m venv + pip install --no-index         {med['venv_pip'] * 1e3:9.1f} ms")
    print(
        "  phases of the cold install (median): "
        + ", ".join(f"{p} {s * 1e3:.0f} ms" for p, s in res["phases_cold_median_s"].items())
    )
    print(f"ratio install(warm) / (venv + pip) = {res['ratio_warm']:.3f}x")
    verdict = "PASS" if res["goal"]["pass"] else "FAIL"
    print(f"GOAL install / (venv+pip) = {res['ratio_cold']:.3f}x (goal <= {GOAL}x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
