"""The benchmarks of issue 9: each function returns one or more `Result`s (targets from the issue).

Wall-clock medians on whatever machine runs them; the load average is recorded next to the results, since
other processes on a 2-core machine move every number. Nothing here asserts speed: `benchmarks.runner`
compares with the targets and reports.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import PYTHON, Code, Result, env, kvnand_command, repeat, run_timed

# the 8-die design space of dse/kvnand-8die-70b.yaml: C vs D (G2 = 1..7), two models, two precisions, 4 contexts
GRID_DESIGNS = [("kvnand-c16", {"dies": 8})] + [("kvnand-d", {"dies": 8, "g2_dies": g}) for g in range(1, 8)]
GRID_MODELS = ("llama3.1-70b", "opt-30b")
GRID_PRECISIONS = ("w8a8", "w4a16")
GRID_CONTEXTS = (1000, 10_000, 30_000, 100_000)


# ---------------------------------------------------------------------------------------------- start-up
def import_time(quick: bool) -> list[Result]:
    n = 3 if quick else 7
    out = []
    base, _ = run_timed([PYTHON, "-c", "pass"], n)
    r = Result("import kvnand", "python -c 'import kvnand' (wall, interpreter start-up included)", "s", 0.5)
    r.samples, proc = run_timed([PYTHON, "-c", "import kvnand"], n)
    r.extra["bare_interpreter_s"] = min(base)
    r.extra["importtime_top"] = _importtime("import kvnand")
    if proc.returncode != 0:
        r.error = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
    out.append(r)
    h = Result("kvnand --help", "the console script's --help (wall)", "s", 0.5)
    h.samples, proc = run_timed(kvnand_command() + ["--help"], n)
    h.extra["importtime_top_cli"] = _importtime("import kvnand.cli")
    if proc.returncode != 0:
        h.error = f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
    out.append(h)
    return out


def _importtime(stmt: str, top: int = 8) -> list[list]:
    """The modules with the largest cumulative import time (us), from python -X importtime."""
    import subprocess

    proc = subprocess.run([PYTHON, "-X", "importtime", "-c", stmt], capture_output=True, text=True, env=env(),
                          cwd=Code.root)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 3:  # top-level imports (and their direct children)
            rows.append([m.group(4), int(m.group(2))])
    return sorted(rows, key=lambda x: -x[1])[:top]


# ---------------------------------------------------------------------------------------------- fast mode
def fast_eval(quick: bool) -> list[Result]:
    import kvnand

    n = 60 if quick else 400
    point = ("kvnand-d", "llama3.1-70b", 100_000)
    kvnand.evaluate(*point)  # configs, model, pint: loaded once (warm)
    r = Result("fast evaluate 70B@100k", "kvnand.evaluate('kvnand-d', 'llama3.1-70b', 100_000), warm", "ms", 1.0)
    r.extra["kvnand"] = os.path.relpath(kvnand.__file__, Code.root)  # which tree was imported
    r.samples = [t * 1e3 for t in repeat(lambda: kvnand.evaluate(*point), n, warmup=10)]
    cpu = repeat(lambda: kvnand.evaluate(*point), max(20, n // 4), clock=time.thread_time)
    r.extra["cpu_median_ms"] = sorted(cpu)[len(cpu) // 2] * 1e3
    ctx = iter(range(100_001, 200_000))  # a new context every call: nothing point-specific can be reused
    vary = repeat(lambda: kvnand.evaluate(point[0], point[1], next(ctx)), max(20, n // 4))
    r.extra["varying_context_median_ms"] = sorted(vary)[len(vary) // 2] * 1e3
    auto = repeat(lambda: kvnand.evaluate("kvnand-d:auto", "llama3.1-70b", 100_000), 5 if quick else 20, warmup=1)
    r.extra["auto_split_median_ms"] = sorted(auto)[len(auto) // 2] * 1e3
    ev = repeat(lambda: kvnand.evaluate(*point, mode="event"), 1 if quick else 3)
    r.extra["same_point_event_mode_s"] = min(ev)
    return [r]


def report(quick: bool) -> list[Result]:
    """`kvnand report` (the paper's default grid) from a cold interpreter, disk cache off, then on."""
    n = 1 if quick else 3
    out = []
    cmd = kvnand_command() + ["report"]
    with tempfile.TemporaryDirectory(prefix="kvnand-bench-cache-") as cache:
        child = env(KVNAND_CACHE_DIR=cache)
        r = Result("kvnand report (no cache)", "default report, 80 points, --no-cache, empty KVNAND_CACHE_DIR (wall)",
                   "s", 2.0)
        r.samples, proc = run_timed(cmd + ["--no-cache"], n, child_env=child)
        _check_report(r, proc)
        out.append(r)
        fill, proc = run_timed(cmd, 1, child_env=child)  # fills the cache
        c = Result("kvnand report (cached)", "default report, every point from the disk cache (wall)", "s", 2.0)
        c.extra["cold_fill_s"] = fill[0]
        c.samples, proc = run_timed(cmd, n, child_env=child)
        _check_report(c, proc)
        out.append(c)
    return out


def _check_report(r: Result, proc) -> None:
    if proc.returncode != 0:
        r.error = f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"
        return
    m = re.search(r"kvnand report: (\d+) points(?:, (\d+) from cache)?", proc.stderr)
    if m:
        r.extra["points"] = int(m.group(1))
        r.extra["from_cache"] = int(m.group(2) or 0)


# ---------------------------------------------------------------------------------------------- event mode
_CHILD = r"""
import json, resource, sys, time
from kvnand import evaluate
system, model, context, mode, trace = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
evaluate(system, model, 128)                     # configs, model and units loaded: not part of the step
if trace:
    import tracemalloc
    tracemalloc.start()
t0 = time.perf_counter()
r = evaluate(system, model, context, mode=mode)
dt = time.perf_counter() - t0
out = {"seconds": dt, "latency_s": r["latency_s"], "oom": r["oom"],
       "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if trace:
    out["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
print(json.dumps(out))
"""


def _event_child(system: str, model: str, context: int, mode: str = "event", trace: bool = False) -> dict:
    import subprocess

    proc = subprocess.run([PYTHON, "-c", _CHILD, system, model, str(context), mode, "1" if trace else "0"],
                          capture_output=True, text=True, env=env(), cwd=Code.root, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-300:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def event_mode(quick: bool) -> list[Result]:
    """Event mode (decode step + prefill, list-scheduled), each run in a fresh process for its peak memory."""
    out = []
    n = 1 if quick else 3
    peak = Result("event peak memory", "max RSS of a process running the event-mode points below", "MB", 2048)
    for name, point, target in (("event 8B@10k kvnand-c16", ("kvnand-c16", "llama3.1-8b", 10_000), 5.0),
                                ("event 70B@100k kvnand-d", ("kvnand-d", "llama3.1-70b", 100_000), 30.0)):
        r = Result(name, f"evaluate{point}, mode='event' (decode step + prefill, warm)", "s", target)
        try:
            runs = [_event_child(*point) for _ in range(n)]
        except RuntimeError as exc:
            r.error = str(exc)
            out.append(r)
            continue
        r.samples = [x["seconds"] for x in runs]
        r.extra["latency_s"] = runs[0]["latency_s"]
        peak.samples += [x["maxrss_mb"] for x in runs]
        if not quick:
            page = _event_child(*point, mode="page")
            r.extra["page_mode_s"] = page["seconds"]
            peak.samples.append(page["maxrss_mb"])
            r.extra["tracemalloc_peak_mb"] = _event_child(*point, trace=True)["tracemalloc_peak_mb"]
        out.append(r)
    out.append(peak)
    return out


# ---------------------------------------------------------------------------------------------- grid mode
def grid_points() -> list[tuple]:
    return [(s, m, c, p, ov) for s, ov in GRID_DESIGNS for m in GRID_MODELS for p in GRID_PRECISIONS
            for c in GRID_CONTEXTS]


def grid(quick: bool) -> list[Result]:
    import kvnand

    points = grid_points()

    def one_pass():
        oom = 0
        for s, m, c, p, ov in points:
            oom += kvnand.evaluate(s, m, c, precision=p, overrides=ov)["oom"]
        return oom

    t0 = time.perf_counter()
    oom = one_pass()
    cold = time.perf_counter() - t0
    passes = repeat(one_pass, 2 if quick else 6)
    r = Result("grid: evaluate() loop, 8-die space", f"{len(points)} points (C/D x G2=1..7 x 2 models x "
               "2 precisions x 4 contexts) per pass, warm", "points/s", 10_000, better="higher")
    r.samples = [len(points) / t for t in passes]
    fits = len(points) - oom
    r.extra.update(points=len(points), oom_points=oom, first_pass_points_per_s=len(points) / cold,
                   per_point_us=1e6 * sorted(passes)[len(passes) // 2] / len(points),
                   per_fitting_point_us_upper_bound=1e6 * sorted(passes)[len(passes) // 2] / max(1, fits))
    out = [r]
    space = Code.root / "dse" / "kvnand-8die-70b.yaml"
    if not quick and (Code.root / "kvnand" / "dse" / "grid.py").is_file() and space.is_file():
        out.append(_dse_grid(space, quick))
    return out


def _dse_grid(space: Path, quick: bool) -> Result:
    """`kvnand dse grid` on the 8-die space: designs (each = every model x context point + reliability) per s."""
    r = Result("kvnand dse grid (8-die space)", "kvnand dse grid dse/kvnand-8die-70b.yaml: evaluations "
               "(design x workload point) per s, as it reports its own elapsed time", "points/s", 10_000,
               better="higher")
    with tempfile.TemporaryDirectory(prefix="kvnand-bench-grid-") as tmp:
        walls, proc = run_timed(kvnand_command() + ["dse", "grid", str(space), "--out", tmp], 1 if quick else 2,
                                child_env=env(KVNAND_CACHE_DIR=tmp))
        if proc.returncode != 0:
            r.error = f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"
            return r
        summary = json.loads((Path(tmp) / "summary.json").read_text()) if (Path(tmp) / "summary.json").is_file() \
            else {}
    m = re.search(r"(\d+) designs in ([\d.]+) s", proc.stdout + proc.stderr)
    designs = summary.get("designs") or (int(m.group(1)) if m else None)
    elapsed = summary.get("elapsed_s") or (float(m.group(2)) if m else None)
    w = re.search(r"(\d+) designs x (\d+) workload points", proc.stdout + proc.stderr)
    per_design = int(w.group(2)) if w else len(GRID_MODELS) * len(GRID_CONTEXTS)
    if designs and elapsed:
        r.samples = [designs * per_design / elapsed]
        r.extra.update(designs=designs, workload_points_per_design=per_design, elapsed_s=elapsed,
                       designs_per_s=designs / elapsed, wall_s_with_startup=min(walls))
    return r


# ---------------------------------------------------------------------------------------------- scaling
def scaling(quick: bool) -> tuple[list[Result], dict]:
    """Evaluation time against context length (1k..1M) and against layers (8..80), fast and event modes."""
    import kvnand

    contexts = [1000, 10_000, 100_000, 1_000_000] if quick else [1000, 3000, 10_000, 30_000, 100_000, 300_000,
                                                                   1_000_000]
    layers = [8, 32, 80] if quick else [8, 16, 32, 48, 64, 80]
    n_fast, n_event = (15, 1) if quick else (60, 3)
    system, model = "kvnand-c16", "llama3.1-8b"   # fits 1M tokens, so every point runs the whole program
    data: dict = {"system": system, "model": model, "contexts": contexts, "layers": layers, "by_context": {},
                  "by_layers": {}}
    kvnand.evaluate(system, model, 128)
    modes = {"fast": n_fast, "event": n_event, "page": n_event}
    for mode, n in modes.items():
        data["by_context"][mode] = [_median(repeat(lambda c=c, mode=mode: _fits(kvnand.evaluate(
            system, model, c, mode=mode)), n, warmup=1)) for c in contexts]
    with tempfile.TemporaryDirectory(prefix="kvnand-bench-models-") as tmp:
        cfg = json.loads((Code.root / "arch_configs" / "models" / f"{model}.json").read_text())
        paths = []
        for n_layers in layers:
            p = Path(tmp) / f"{model}-{n_layers}L.json"
            p.write_text(json.dumps({**cfg, "num_hidden_layers": n_layers}))
            paths.append(str(p))
        for mode, n in modes.items():
            data["by_layers"][mode] = [_median(repeat(lambda p=p, mode=mode: _fits(kvnand.evaluate(
                system, p, 10_000, mode=mode)), n, warmup=1)) for p in paths]
    fast_ctx = data["by_context"]["fast"]
    r1 = Result("fast: context 1k->1M", f"fast evaluate time at {contexts[-1]:,} / at {contexts[0]:,} tokens "
                f"({system}, {model}); O(1) in tokens means ~1", "x", 1.5)
    r1.samples = [fast_ctx[-1] / fast_ctx[0]]
    r1.extra["ms_by_context"] = dict(zip(map(str, contexts), [t * 1e3 for t in fast_ctx], strict=True))
    r2 = Result("fast: layers 8->80 exponent", "b in time ~ layers^b, fast mode, 10k tokens (<= 1: at most "
                "linear)", "b", 1.0)
    r2.samples = [_exponent(layers, data["by_layers"]["fast"])]
    r2.extra["ms_by_layers"] = dict(zip(map(str, layers), [t * 1e3 for t in data["by_layers"]["fast"]], strict=True))
    r3 = Result("event: layers 8->80 exponent", "b in time ~ layers^b, event mode, 10k tokens (informational)",
                "b", None)
    r3.samples = [_exponent(layers, data["by_layers"]["event"])]
    return [r1, r2, r3], data


def _fits(record: dict) -> None:
    if record["oom"]:
        raise RuntimeError(f"scaling point is out of memory: {record['oom_reason']}")


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def _exponent(xs, ys) -> float:
    import math

    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def scaling_figure(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    style = {"fast": ("o-", "C0"), "event": ("s-", "C1"), "page": ("^--", "C2")}
    for mode, ys in data["by_context"].items():
        a.plot(data["contexts"], [y * 1e3 for y in ys], style[mode][0], color=style[mode][1], label=mode)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("context length (tokens)")
    a.set_ylabel("time per evaluate() (ms)")
    a.set_title(f"vs context ({data['system']}, {data['model']})")
    for mode, ys in data["by_layers"].items():
        b.plot(data["layers"], [y * 1e3 for y in ys], style[mode][0], color=style[mode][1], label=mode)
    b.set_xlabel("decoder layers (LLaMA3.1-8B shape)")
    b.set_ylabel("time per evaluate() (ms)")
    b.set_yscale("log")
    b.set_title("vs model depth (10k tokens)")
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="mode")
    fig.suptitle("kvnand evaluation cost (decode step + prefill), median wall time", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


ALL = {"startup": import_time, "fast": fast_eval, "report": report, "event": event_mode, "grid": grid}

if __name__ == "__main__":  # python -m benchmarks.cases NAME: one group, raw JSON
    res = ALL[sys.argv[1]](quick="--quick" in sys.argv)
    print(json.dumps([x.as_dict() for x in res], indent=1))
