"""`kvnand dse grid`: evaluate every design of a small discrete space, with the same outputs as a study.

No optuna sampler: designs are enumerated (conditional parameters only where active), each workload point
is evaluated once per process (`objectives` caches points, so published designs and repeated points are
free), optionally over a pool of processes, and the rows go to the same exporter plus the Fig. 15-style
heatmap. Published designs that fall between grid steps are added as extra rows. The designs are also
stored as a finished optuna study (study.journal in the output folder), so `dse pareto` and optuna-dashboard
open a grid like a search.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kvnand.dse import export
from kvnand.dse.objectives import evaluate_design
from kvnand.dse.space import Space, load_space
from kvnand.dse.study import directions, save_grid

_space: Space | None = None  # the space of a pool worker process


def _init(space_file: str) -> None:
    global _space
    _space = load_space(space_file)


def _evaluate(params: dict):
    ev = evaluate_design(_space, params)
    return ev.values, ev.feasible, ev.violated, ev.report, ev.constraints


def run_grid(space: Space, out: Path, workers: int = 1, log=print, progress=None) -> dict:
    """Evaluate every design; `progress(done, total)` is called as designs finish."""
    from kvnand.dse.study import check_workers
    from kvnand.io import check_output

    check_workers(workers)
    combos = space.grid()
    check_output(out, "--out", directory=True)
    known = {json.dumps(p, sort_keys=True): label for label, p in space.known_designs()}
    in_grid = {json.dumps(p, sort_keys=True) for p in combos}
    combos += [json.loads(k) for k in known if k not in in_grid]
    log(f"grid '{space.name}': {len(combos)} designs x {len(space.points)} workload points, {workers} process(es)")
    t0 = time.monotonic()
    results = []
    if workers == 1:
        _init(space.file)
        done = map(_evaluate, combos)
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers, _init, (space.file,))
        done = pool.imap(_evaluate, combos, chunksize=max(1, min(16, len(combos) // (4 * workers))))
    try:
        for r in done:
            results.append(r)
            if progress:
                progress(len(results), len(combos))
    finally:
        if workers > 1:
            pool.terminate()
    elapsed = time.monotonic() - t0
    labels = [known.get(json.dumps(params, sort_keys=True)) for params in combos]
    rows = [export.Row(i, "COMPLETE", params, values, feasible, violated, label, report)
            for i, (params, label, (values, feasible, violated, report, _)) in enumerate(
                zip(combos, labels, results, strict=True))]
    summary = export.write_outputs(out, rows, list(space.spec.objectives), directions(space), heatmap=True)
    url = save_grid(space, out, [(params, values, feasible, cons, {"violated": violated, "report": report}, label)
                                 for params, label, (values, feasible, violated, report, cons)
                                 in zip(combos, labels, results, strict=True)])
    summary["files"].append("study.journal")
    summary.update({"space": space.file, "designs": len(rows), "elapsed_s": elapsed,
                    "designs_per_s": len(rows) / elapsed if elapsed > 0 else None, "study": space.name,
                    "storage": url, "dashboard": f"optuna-dashboard {url}"})
    export.write_json(Path(out) / "summary.json", summary)
    return summary
