"""`kvnand dse grid`: evaluate every design of a small discrete space, with the same outputs as a study.

No optuna: designs are enumerated (conditional parameters only where active), each workload point is
evaluated once per process (`objectives` caches points, so published designs and repeated points are
free), optionally over a pool of processes, and the rows go to the same exporter plus the Fig. 15-style
heatmap. Published designs that fall between grid steps are added as extra rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kvnand.dse import export
from kvnand.dse.objectives import evaluate_design
from kvnand.dse.space import Space, load_space
from kvnand.dse.study import directions

_space: Space | None = None  # the space of a pool worker process


def _init(space_file: str) -> None:
    global _space
    _space = load_space(space_file)


def _evaluate(params: dict):
    ev = evaluate_design(_space, params)
    return ev.values, ev.feasible, ev.violated, ev.report


def run_grid(space: Space, out: Path, workers: int = 1, log=print) -> dict:
    from kvnand.dse.study import check_workers
    from kvnand.report import check_output

    check_workers(workers)
    combos = space.grid()
    check_output(out, "--out", directory=True)
    known = {json.dumps(p, sort_keys=True): label for label, p in space.known_designs()}
    in_grid = {json.dumps(p, sort_keys=True) for p in combos}
    combos += [json.loads(k) for k in known if k not in in_grid]
    log(f"grid '{space.name}': {len(combos)} designs x {len(space.points)} workload points, {workers} process(es)")
    t0 = time.monotonic()
    if workers == 1:
        _init(space.file)
        results = list(map(_evaluate, combos))
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers, _init, (space.file,)) as pool:
            results = pool.map(_evaluate, combos, chunksize=max(1, len(combos) // (4 * workers)))
    elapsed = time.monotonic() - t0
    rows = [export.Row(i, "COMPLETE", params, values, feasible, violated, known.get(json.dumps(params, sort_keys=True)),
                       report)
            for i, (params, (values, feasible, violated, report)) in enumerate(zip(combos, results, strict=True))]
    summary = export.write_outputs(out, rows, list(space.spec.objectives), directions(space), heatmap=True)
    summary.update({"space": space.file, "designs": len(rows), "elapsed_s": elapsed,
                    "designs_per_s": len(rows) / elapsed if elapsed > 0 else None})
    export.write_json(Path(out) / "summary.json", summary)
    return summary
