"""In-process cost of one tool call through ``PluginHost``, against its floors.

Measures, in ONE process and interleaved in rounds (so machine drift cancels in the ratios):

  direct        ``echo(**args)``: the trivial tool called by hand with the same arguments
  validate      ``Model.model_validate(args)`` with an equivalent pydantic model
                (one field ``text: str``, ``extra="forbid"``); also the core validator alone
  invoke        ``host.invoke("tools", "echo", args)`` (sync tool, runs inline)
  invoke_json   the same with the arguments as a JSON string
  ainvoke       ``await host.ainvoke("tools", "aecho", args)`` inside a running loop

and reports ``overhead = invoke - direct`` against ``validate`` with the goal ``<= 3.0x``.
A breakdown of pipeline pieces (watchdog, normalize, ToolResult...) follows; it uses private
names of ``plughub`` and is skipped, not fatal, if they move.

All figures are medians over rounds, per call, net of the timing loop itself. Absolute numbers
vary a lot on shared VMs; read the ratios. ``timeit`` switches the garbage collector off while
timing, and the async loops do the same, so allocation-heavy paths look slightly better than
in a long-running process.

Usage: ``python bench/invoke_inprocess.py [--quick] [--json] [--rounds N] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import itertools
import json
import os
import platform
import pstats
import statistics
import sys
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict, create_model

from plughub.host import PluginHost

GOAL = 3.0
REPEAT = 3  # runs per bench per round; the round keeps the fastest
KEY = ("empty", "direct", "validate", "validate_core", "invoke")
ARGS: dict[str, Any] = {"text": "hello"}
ARGS_JSON = json.dumps(ARGS)


def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


async def aecho(text: str) -> str:
    """Return the text unchanged (async)."""
    return text


# --------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One measured statement: a timeit statement, or an async runner ``run(n) -> ns``."""

    name: str
    label: str
    group: str  # main | breakdown
    stmt: str | None = None
    arun: Callable[[int], Any] | None = None  # async def run(n) -> total ns
    enter: Callable[[], None] | None = None  # called before each sample (e.g. monkeypatch)
    leave: Callable[[], None] | None = None
    number: int = 0
    samples: list[float] = field(default_factory=list)  # ns per call, raw (loop included)


class Runner:
    def __init__(self, target_s: float) -> None:
        self.target_s = target_s
        self.loop = asyncio.new_event_loop()
        self.globals: dict[str, Any] = {}

    def close(self) -> None:
        self.loop.close()

    def _once(self, b: Bench, n: int) -> float:
        """Total seconds for ``n`` iterations of ``b``."""
        if b.enter is not None:
            b.enter()
        try:
            if b.stmt is not None:
                return timeit.Timer(b.stmt, globals=self.globals).timeit(n)
            assert b.arun is not None
            enabled = gc.isenabled()
            gc.disable()
            try:
                return self.loop.run_until_complete(b.arun(n)) / 1e9  # type: ignore[no-any-return]
            finally:
                if enabled:
                    gc.enable()
        finally:
            if b.leave is not None:
                b.leave()

    def calibrate(self, b: Bench) -> None:
        n = 1
        while True:
            t = self._once(b, n)
            if t >= self.target_s / 5 or n >= 10_000_000:
                break
            n *= 4 if t < self.target_s / 50 else 2
        b.number = max(1, int(n * self.target_s / max(t, 1e-9)))

    def sample(self, b: Bench, repeat: int) -> None:
        """One round's figure: the best of ``repeat`` short runs (filters interruptions)."""
        best = min(self._once(b, b.number) for _ in range(repeat))
        b.samples.append(best / b.number * 1e9)


async def _empty_async(n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in itertools.repeat(None, n):
        pass
    return time.perf_counter_ns() - t0


def _async_runner(make_call: Callable[[], Any]) -> Callable[[int], Any]:
    """``run(n)``: await ``make_call()`` n times, return elapsed ns."""

    async def run(n: int) -> int:
        call = make_call
        t0 = time.perf_counter_ns()
        for _ in itertools.repeat(None, n):
            await call()
        return time.perf_counter_ns() - t0

    return run


def build(host: PluginHost) -> tuple[list[Bench], dict[str, Any], list[str]]:
    model: type[BaseModel] = create_model(
        "EchoArgs", __config__=ConfigDict(extra="forbid"), text=(str, ...)
    )
    g: dict[str, Any] = {
        "host": host,
        "args": ARGS,
        "sargs": ARGS_JSON,
        "echo": echo,
        "Model": model,
        "core_validate": model.__pydantic_validator__.validate_python,
        "json_loads": json.loads,
    }
    benches = [
        Bench("empty", "timing loop (subtracted from all)", "loop", stmt="pass"),
        Bench(
            "empty_async",
            "async timing loop (subtracted from async rows)",
            "loop",
            arun=_empty_async,
        ),
        Bench("direct", "direct call echo(**args)", "main", stmt="echo(**args)"),
        Bench("direct_pos", "direct call echo('hello')", "main", stmt="echo('hello')"),
        Bench("validate", "Model.model_validate(args)", "main", stmt="Model.model_validate(args)"),
        Bench(
            "validate_core",
            "Model.__pydantic_validator__.validate_python(args)",
            "main",
            stmt="core_validate(args)",
        ),
        Bench(
            "validate_json",
            "Model.model_validate_json(json_str)",
            "main",
            stmt="Model.model_validate_json(sargs)",
        ),
        Bench(
            "loads_validate",
            "json.loads(json_str) + model_validate",
            "main",
            stmt="Model.model_validate(json_loads(sargs))",
        ),
        Bench(
            "invoke",
            "host.invoke('tools', 'echo', args)",
            "main",
            stmt="host.invoke('tools', 'echo', args)",
        ),
        Bench(
            "invoke_json",
            "host.invoke('tools', 'echo', json_str)",
            "main",
            stmt="host.invoke('tools', 'echo', sargs)",
        ),
        Bench(
            "adirect",
            "await aecho(**args) (in a running loop)",
            "main",
            arun=_async_runner(lambda: aecho(**ARGS)),
        ),
        Bench(
            "ainvoke",
            "await host.ainvoke('tools', 'aecho', args)",
            "main",
            arun=_async_runner(lambda: host.ainvoke("tools", "aecho", ARGS)),
        ),
    ]
    skipped: list[str] = []
    try:
        extra = _breakdown(host, g)
    except Exception as e:  # private names moved: the main table still runs
        extra = []
        skipped.append(f"breakdown skipped: {type(e).__name__}: {e}")
    for bench in extra:
        try:  # one row whose private signature changed must not sink the rest
            if bench.enter is not None:
                bench.enter()
            try:
                timeit.Timer(bench.stmt or "pass", globals=g).timeit(1)
            finally:
                if bench.leave is not None:
                    bench.leave()
        except Exception as e:
            skipped.append(f"breakdown row {bench.name!r} skipped: {type(e).__name__}: {e}")
        else:
            benches.append(bench)
    return benches, g, skipped


def _breakdown(host: PluginHost, g: dict[str, Any]) -> list[Bench]:
    """Pieces of the sync invoke path (private API; may need updating after refactors).

    Two shapes of ``Pipeline`` are understood: steps taking ``(b, kwargs, deadline, ...)``
    and steps taking one per-call state object ``_Call(b, caller, timeout)``.
    """
    from collections.abc import Mapping

    from plughub.host import _pipeline as pipeline_mod
    from plughub.runtime._normalize import normalize
    from plughub.runtime._watchdog import watchdog
    from plughub.sdk import Text, ToolResult

    bound = host.resolve("tools", "echo")
    pl = host._pipeline
    kwargs = bound.validate(ARGS)
    call_cls = getattr(pipeline_mod, "_Call", None)

    def new_call() -> Any:
        """A fresh per-call state, validated already (the pipeline makes one per call)."""
        c = call_cls(bound, None, None)  # type: ignore[misc]
        c.kwargs = kwargs
        return c

    if call_cls is not None:
        res = pl._run_inline(new_call())
        steps = [
            ("call_state", "_Call(b, None, None) (per-call state)", "Call(b, None, None)"),
            (
                "prepare",
                "Pipeline._prepare incl. a new _Call",
                "pl._prepare(Call(b, None, None), args)",
            ),
            ("run_inline", "Pipeline._run_inline incl. a new _Call", "pl._run_inline(new_call())"),
            ("finish", "Pipeline._finish (no hooks)", "pl._finish(c0, res)"),
        ]
    else:
        res = pl._run_inline(bound, kwargs, time.monotonic() + 30.0, 30.0, None)
        steps = [
            ("prepare", "Pipeline._prepare (checks + validation)", "pl._prepare(b, args, None)"),
            (
                "run_inline",
                "Pipeline._run_inline (watchdog + call + normalize)",
                "pl._run_inline(b, kw, monotonic() + 30.0, 30.0, None)",
            ),
            ("finish", "Pipeline._finish (no hooks)", "pl._finish(b, None, res, 0.0, kw, None)"),
        ]
    assert res.text == "hello" and not res.is_error, res
    g.update(
        b=bound,
        pl=pl,
        kw=kwargs,
        res=res,
        Call=call_cls,
        new_call=new_call,
        c0=new_call() if call_cls is not None else None,
        normalize=normalize,
        watchdog=watchdog,
        Text=Text,
        ToolResult=ToolResult,
        monotonic=time.monotonic,
        Mapping=Mapping,
        tool=bound.tool,
    )

    class _NoWatchdog:
        @staticmethod
        def arm(deadline: float) -> tuple[int, None]:
            return 0, None

        @staticmethod
        def disarm(token: Any) -> bool:
            return False

    real = pipeline_mod.watchdog
    stub = _NoWatchdog()

    def patch() -> None:
        pipeline_mod.watchdog = stub  # type: ignore[assignment]

    def unpatch() -> None:
        pipeline_mod.watchdog = real

    rows = [
        (
            "resolve",
            "host.resolve('tools', 'echo') (cached lookup)",
            "host.resolve('tools', 'echo')",
        ),
        ("pipeline_invoke", "Pipeline.invoke(bound, args) (no resolve)", "pl.invoke(b, args)"),
        *steps,
        ("tool_validate", "bound.validate(args) (wrapper + .__dict__)", "b.validate(args)"),
        ("isinstance_mapping", "isinstance(args, Mapping)", "isinstance(args, Mapping)"),
        (
            "watchdog",
            "watchdog.arm + disarm (deadline now+30s)",
            "watchdog.disarm(watchdog.arm(monotonic() + 30.0))",
        ),
        ("normalize", "normalize('hello', tool)", "normalize('hello', tool)"),
        ("toolresult", "ToolResult([Text('hello')])", "ToolResult([Text('hello')])"),
        ("text", "Text('hello')", "Text('hello')"),
        ("monotonic", "time.monotonic()", "monotonic()"),
    ]
    return [Bench(name, label, "breakdown", stmt=stmt) for name, label, stmt in rows] + [
        Bench(
            "invoke_nowd",
            "host.invoke with the watchdog stubbed out (what-if)",
            "breakdown",
            stmt="host.invoke('tools', 'echo', args)",
            enter=patch,
            leave=unpatch,
        )
    ]


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------


def _thread_switches(name: str) -> int | None:
    """Voluntary context switches (i.e. wake-ups) of the thread called ``name`` (Linux)."""
    for t in threading.enumerate():
        if t.name == name and t.native_id is not None:
            try:
                status = Path(f"/proc/self/task/{t.native_id}/status").read_text()
            except OSError:
                return None
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    return None


def watchdog_wakeups(host: PluginHost, n: int) -> float | None:
    """Wake-ups of the watchdog thread per ``host.invoke`` (0 is the ideal)."""
    host.invoke("tools", "echo", ARGS)
    before = _thread_switches("plughub-watchdog")
    if before is None:
        return None
    for _ in range(n):
        host.invoke("tools", "echo", ARGS)
    time.sleep(0.01)
    after = _thread_switches("plughub-watchdog")
    return None if after is None else (after - before) / n


def profile(host: PluginHost, n: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        host.invoke("tools", "echo", ARGS)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(15)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _loadavg() -> float:
    """1-minute load average (other work on the machine makes every figure noisier)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _fmt_ns(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"


def analyse(benches: list[Bench]) -> dict[str, Any]:
    by = {b.name: b for b in benches}
    rounds = len(by["empty"].samples)

    def net(name: str, r: int) -> float:
        loop = "empty_async" if by[name].arun is not None else "empty"
        return by[name].samples[r] - by[loop].samples[r]

    rows: dict[str, dict[str, Any]] = {}
    for b in benches:
        vals = b.samples if b.group == "loop" else [net(b.name, r) for r in range(rounds)]
        rows[b.name] = {
            "label": b.label,
            "group": b.group,
            "iterations": b.number,
            "median_ns": statistics.median(vals),
            "min_ns": min(vals),
            "max_ns": max(vals),
        }

    def paired(f: Callable[[int], float]) -> dict[str, float]:
        vals = [f(r) for r in range(rounds)]
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}

    ratios = {
        "invoke_over_direct": paired(lambda r: net("invoke", r) / net("direct", r)),
        "invoke_over_validate": paired(lambda r: net("invoke", r) / net("validate", r)),
        "overhead_over_validate": paired(
            lambda r: (net("invoke", r) - net("direct", r)) / net("validate", r)
        ),
        "overhead_over_validate_core": paired(
            lambda r: (net("invoke", r) - net("direct", r)) / net("validate_core", r)
        ),
        "json_overhead_over_validate_json": paired(
            lambda r: (net("invoke_json", r) - net("direct", r)) / net("validate_json", r)
        ),
        "json_overhead_over_loads_validate": paired(
            lambda r: (net("invoke_json", r) - net("direct", r)) / net("loads_validate", r)
        ),
        "async_overhead_over_validate": paired(
            lambda r: (net("ainvoke", r) - net("adirect", r)) / net("validate", r)
        ),
    }
    if "invoke_nowd" in by:
        ratios["nowatchdog_overhead_over_validate"] = paired(
            lambda r: (net("invoke_nowd", r) - net("direct", r)) / net("validate", r)
        )
    overhead = paired(lambda r: net("invoke", r) - net("direct", r))
    goal = ratios["overhead_over_validate"]["median"]
    return {
        "rounds": rounds,
        "rows": rows,
        "ratios": ratios,
        "overhead_ns": overhead,
        "goal": {
            "metric": "overhead / validation",
            "target": f"<= {GOAL}x",
            "value": goal,
            "pass": goal <= GOAL,
        },
    }


def print_report(res: dict[str, Any]) -> None:
    rows = res["rows"]
    print(
        f"plughub in-process invoke benchmark  (python {res['python']}, pydantic "
        f"{res['pydantic']} / core {res['pydantic_core']}, {res['machine']}, "
        f"{res['cpus']} CPUs, load avg {res['loadavg_start']:.2f} -> {res['loadavg_end']:.2f})"
    )
    print(
        f"{res['rounds']} interleaved rounds; ns/call = median over rounds, net of the timing "
        f"loop (loop: {_fmt_ns(rows['empty']['median_ns'])} ns sync, "
        f"{_fmt_ns(rows['empty_async']['median_ns'])} ns async)"
    )
    print()
    width = max(len(r["label"]) for r in rows.values()) + 2
    direct = rows["direct"]["median_ns"]
    validate = rows["validate"]["median_ns"]
    for group, title in (("main", "main"), ("breakdown", "breakdown (sync invoke path)")):
        names = [n for n, r in rows.items() if r["group"] == group]
        if not names:
            continue
        print(f"{title:<{width}} {'ns/call':>9} {'min..max':>17} {'x direct':>9} {'x valid.':>9}")
        for n in names:
            r = rows[n]
            spread = f"{_fmt_ns(r['min_ns'])}..{_fmt_ns(r['max_ns'])}"
            print(
                f"{r['label']:<{width}} {_fmt_ns(r['median_ns']):>9} {spread:>17} "
                f"{r['median_ns'] / direct:>9.1f} {r['median_ns'] / validate:>9.2f}"
            )
        print()
    for note in res.get("notes", []):
        print(note)
    r = res["ratios"]

    def line(key: str, text: str) -> None:
        v = r[key]
        print(f"{text:<52} {v['median']:6.2f}x  (rounds {v['min']:.2f}..{v['max']:.2f})")

    print("ratios (paired per round, median over rounds):")
    line("invoke_over_direct", "invoke / direct")
    line("invoke_over_validate", "invoke / validation")
    line("overhead_over_validate_core", "overhead / validate_python (core)")
    line("json_overhead_over_validate_json", "JSON: (invoke_json - direct) / model_validate_json")
    line("json_overhead_over_loads_validate", "JSON: (invoke_json - direct) / loads+validate")
    line("async_overhead_over_validate", "async: (ainvoke - await aecho) / validation")
    if "nowatchdog_overhead_over_validate" in r:
        line("nowatchdog_overhead_over_validate", "what-if no watchdog: overhead / validation")
    if res.get("watchdog_wakeups_per_invoke") is not None:
        print(
            f"{'watchdog thread wake-ups per invoke':<52} "
            f"{res['watchdog_wakeups_per_invoke']:6.2f}    (0 is ideal)"
        )
    o = res["overhead_ns"]
    print(
        f"overhead = invoke - direct = {_fmt_ns(o['median'])} ns "
        f"(rounds {_fmt_ns(o['min'])}..{_fmt_ns(o['max'])})"
    )
    g = res["goal"]
    print(
        f"GOAL overhead / validation = {g['value']:.2f}x  (goal {g['target']}): "
        f"{'PASS' if g['pass'] else 'FAIL'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few, short rounds (smoke test)")
    ap.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 15, quick 3)")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of invoke")
    ap.add_argument(
        "--budget",
        type=float,
        default=25.0,
        help="seconds; no new round starts if it would end later (at least 3 rounds run)",
    )
    opts = ap.parse_args(argv)
    rounds = opts.rounds or (3 if opts.quick else 15)
    target = 0.001 if opts.quick else 0.006

    t_start = time.perf_counter()
    load0 = _loadavg()
    host = PluginHost(tools=[echo, aecho], entry_points=False, allow=["*"])
    try:
        for tool, a in (("echo", ARGS), ("echo", ARGS_JSON)):
            out = host.invoke("tools", tool, a)
            assert not out.is_error and out.text == "hello", out
        runner = Runner(target)
        out = runner.loop.run_until_complete(host.ainvoke("tools", "aecho", ARGS))
        assert not out.is_error and out.text == "hello", out
        benches, runner.globals, notes = build(host)
        for b in benches:  # warm up and size each run to ~target seconds
            runner.calibrate(b)
        # The goal's inputs are sampled back to back, so their ratios pair well; the order
        # rotates each round, so no bench always follows the same one.
        key = [b for b in benches if b.name in KEY]
        rest = [b for b in benches if b.name not in KEY]
        for r in range(rounds):
            t_round = time.perf_counter()
            for group in (key, rest):
                k = r % len(group)
                for b in group[k:] + group[:k]:
                    runner.sample(b, REPEAT)
            now = time.perf_counter()
            if r >= 2 and now + (now - t_round) - t_start > opts.budget:  # loaded machine
                break
        runner.close()
        res = analyse(benches)
        res.update(
            python=platform.python_version(),
            pydantic=pydantic.VERSION,
            pydantic_core=pydantic_core.__version__,
            machine=platform.machine(),
            cpus=os.cpu_count(),
            loadavg_start=load0,
            loadavg_end=_loadavg(),
            quick=opts.quick,
            notes=notes,
            watchdog_wakeups_per_invoke=watchdog_wakeups(host, 2_000 if opts.quick else 20_000),
        )
        prof = profile(host, 2_000 if opts.quick else 20_000) if opts.profile else None
    finally:
        host.close()

    if opts.json:
        json.dump(res, sys.stdout, indent=2)
        print()
    else:
        print_report(res)
        if prof:
            print()
            print(prof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
