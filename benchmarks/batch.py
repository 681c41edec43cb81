"""Benchmarks of the batch API (issue 14): kvnand.evaluate_many against the evaluate() loop in the same run,
their equality on random points, evaluate() at a new context of a repeated design, and `kvnand dse grid` on
the batch API over two processes.

    python -m benchmarks.batch [--quick] [--out FILE.json]     (also the `batch` group of python -m benchmarks)

Wall-clock medians; the load average is recorded (other processes on a shared machine move every number).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.equivalence import compare
from benchmarks.measure import REPO, Code, Result, env, kvnand_command, load_average, repeat, run_timed, table

MODELS = ("llama3.1-8b", "llama3.1-70b")
PRECISIONS = ("bf16", "w8a8", "w4a16")
REL = 1e-12


def sweep(quick: bool) -> tuple[list[int], list[dict]]:
    """50 contexts (128 .. 1M, log-spaced) and every (dies, G1/G2 split) of kvnand-d for 8..256 dies."""
    import numpy as np

    contexts = sorted({int(c) for c in np.geomspace(128, 1_000_000, 50)})
    dies = (8, 16) if quick else (8, 16, 32, 64, 128, 256)
    return contexts, [{"dies": d, "g2_dies": g} for d in dies for g in range(1, d)]


def batch_api(quick: bool) -> list[Result]:
    import kvnand
    from kvnand.columnar import records

    contexts, designs = sweep(quick)
    n = len(contexts) * len(designs) * len(PRECISIONS) * len(MODELS)

    def batch():
        return [kvnand.evaluate_many("kvnand-d", m, contexts, precisions=list(PRECISIONS), overrides=designs)
                for m in MODELS]

    t0 = time.perf_counter()
    cols = batch()
    cold = time.perf_counter() - t0
    walls = repeat(batch, 2 if quick else 3)
    lean = repeat(lambda: [kvnand.evaluate_many("kvnand-d", m, contexts, precisions=list(PRECISIONS),
                                                overrides=designs, breakdowns=False) for m in MODELS],
                  2 if quick else 3)
    r = Result("batch API sweep", f"kvnand.evaluate_many, kvnand-d, {len(designs)} (dies, split) designs x "
               f"{len(PRECISIONS)} precisions x {len(MODELS)} models x {len(contexts)} contexts = {n} points, warm",
               "points/s", 1_000_000, better="higher")
    r.samples = [n / t for t in walls]
    # the scalar loop and the equality check on the same random points (OOM points included)
    rng = random.Random(14)
    k = 200 if quick else 1500
    sample = [(rng.randrange(len(MODELS)), rng.randrange(len(designs) * len(PRECISIONS) * len(contexts)))
              for _ in range(k)]
    recs = {mi: records(cols[mi]) for mi in {mi for mi, _ in sample}}
    t0 = time.perf_counter()
    got = [kvnand.evaluate("kvnand-d", MODELS[mi], int(cols[mi]["context"][i]), precision=cols[mi]["precision"][i],
                           overrides=cols[mi]["overrides"][i]) for mi, i in sample]
    scalar = k / (time.perf_counter() - t0)
    bad = [f"{MODELS[mi]} {cols[mi]['overrides'][i]} {cols[mi]['precision'][i]} {cols[mi]['context'][i]}: {d}"
           for (mi, i), ref in zip(sample, got, strict=True) for d in _differences(ref, recs[mi][i])[:1]]
    r.extra.update(points=n, designs=len(designs) * len(PRECISIONS) * len(MODELS), cold_points_per_s=n / cold,
                   without_breakdowns_points_per_s=n / sorted(lean)[len(lean) // 2],
                   scalar_loop_points_per_s=scalar, scalar_loop_sample=k, ratio_to_scalar_loop=(r.median or 0) / scalar,
                   fallback_points=int(sum(c["fallback"].sum() for c in cols)),
                   oom_points=int(sum(c["oom"].sum() for c in cols)),
                   equality={"points": k, "rel": REL, "oom_points": sum(x["oom"] for x in got),
                             "differences": len(bad), "first": bad[:5]})
    if bad:
        r.error = f"{len(bad)} of {k} points differ from evaluate(): {bad[0]}"
    ratio = Result("batch API / evaluate() loop", "points/s of evaluate_many over the evaluate() loop, same run",
                   "x", 200, better="higher")
    ratio.samples = [s / scalar for s in r.samples]
    return [r, ratio]


def scalar_new_context(quick: bool) -> list[Result]:
    import kvnand

    out = []
    for system in ("kvnand-c16", "kvnand-d"):
        kvnand.evaluate(system, "llama3.1-70b", 100_000)
        ctx = iter(range(100_001, 300_000))
        r = Result(f"evaluate() new context, {system}", f"kvnand.evaluate('{system}', 'llama3.1-70b', c) at a new "
                   "context c each call, the design repeated (warm)", "ms", 0.1)
        r.samples = [t * 1e3 for t in repeat(lambda s=system, c=ctx: kvnand.evaluate(s, "llama3.1-70b", next(c)),
                                             100 if quick else 500, warmup=5)]
        out.append(r)
    return out


GRID_SPACE = """schema_version: 1
name: batch-bench
description: "kvnand-d: dies x every split x 3 precisions; 2 models x {n} contexts"
system: kvnand-d
workload:
  models: {{llama3.1-8b: 1, llama3.1-70b: 1}}
  contexts: {{{contexts}}}
parameters:
  dies: {{choices: [{dies}], default: 8}}
  g2_dies: {{int: [1, "dies - 1"], default: 1}}
  precision: {{choices: [bf16, w8a8, w4a16], default: w8a8}}
objectives: [latency_s, energy_j_per_token, cost_usd{reliability}]
constraints: {{power_w: {{max: 1000}}}}
"""


def dse_grid(quick: bool) -> list[Result]:
    """`kvnand dse grid --workers 2 --no-study` on a space of (dies, split, precision) designs x 2 models x
    many contexts (a million points in full mode), its wall time per million points; then the same with the
    flash lifetime as an objective (reliability of every point), on fewer designs and contexts."""
    import numpy as np

    contexts, designs = sweep(quick)
    all_dies = sorted({d["dies"] for d in designs})
    # full: 1,494 designs x 2 models x 335 contexts = 1,000,980 points, a million-point grid run whole
    grid_contexts = contexts[::10] if quick else sorted({int(c) for c in np.geomspace(128, 1_000_000, 335)})
    return [_grid(all_dies, grid_contexts, "", "dse grid, 2 workers"),
            _grid(all_dies[:1] if quick else all_dies[:3], contexts[:: 10 if quick else 5], ", lifetime_years",
                  "dse grid + reliability, 2 workers")]


def _grid(dies: list[int], ctx: list[int], reliability: str, name: str) -> Result:
    n_designs = sum(d - 1 for d in dies) * 3
    points = n_designs * 2 * len(ctx)
    what = "capacity, energy, power, cost" + (", flash lifetime (reliability)" if reliability else "")
    r = Result(name, f"kvnand dse grid --workers 2 --no-study: {n_designs} designs x {2 * len(ctx)} workload points "
               f"= {points} points ({what}; wall incl. start-up)", "s per 1M points", 10, better="lower")
    with tempfile.TemporaryDirectory(prefix="kvnand-bench-batch-grid-") as tmp:
        space = Path(tmp) / "space.yaml"
        space.write_text(GRID_SPACE.format(n=len(ctx), contexts=", ".join(f"{c}: 1" for c in ctx),
                                           dies=", ".join(map(str, dies)), reliability=reliability))
        walls, proc = run_timed(kvnand_command() + ["dse", "grid", str(space), "--out", str(Path(tmp) / "out"),
                                                    "--workers", "2", "--no-study"], 1,
                                child_env=env(KVNAND_CACHE_DIR=tmp))
        if proc.returncode != 0:
            r.error = f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"
            return r
        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
    r.samples = [w * 1_000_000 / points for w in walls]
    r.extra.update(points=points, designs=n_designs, wall_s=min(walls), elapsed_s=summary["elapsed_s"],
                   points_per_s=points / min(walls))
    return r


def _differences(a, b) -> list[str]:
    """Where a batch record differs from evaluate()'s (benchmarks.equivalence.compare, at REL): keys and values;
    a breakdown's keys may come in another order where stacked designs differ in what limits a task."""
    out: list[str] = []
    compare(a, b, "", out, REL, ordered=False)
    return out


def run(quick: bool) -> list[Result]:
    return [*batch_api(quick), *scalar_new_context(quick), *dse_grid(quick)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)

    before = load_average()
    results = run(args.quick)
    print(table(results))
    doc = {"schema": "kvnand.benchmarks/1", "group": "batch", "quick": args.quick,
           "kvnand": "this tree" if Code.root == REPO else "baseline files",
           "host": {"load_before": before, "load_after": load_average()}, "results": [r.as_dict() for r in results]}
    print(f"load average before/after: {doc['host']['load_before']} / {doc['host']['load_after']}")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
