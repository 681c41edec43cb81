"""`kvnand dse grid`: evaluate every design of a small discrete space, with the same outputs as a study.

No optuna sampler: designs are enumerated (conditional parameters only where active) and evaluated in
chunks of up to CHUNK designs, each chunk's workload points together (`objectives.prefetch`:
kvnand.evaluate_many, the chunk's designs that differ in numbers only stacked in one walk per model over all
its contexts; a lifetime objective's decode rates too), optionally over a pool of processes (`--workers`: the
chunks are split between them; the result does not depend on how). A million-point grid (1,494 designs x 670
workload points) takes about 9 s on two workers without a reliability objective; with one, each fitting
point's flash lifetime is a scalar model (kvnand.reliability.lifetime) and sets the pace. The rows go to the
same exporter plus the Fig. 15-style heatmap, and every design to grid.npz (compressed columns: parameters,
objectives, metrics).
Published designs that fall between grid steps are added as extra rows. Unless `study=False`, the designs
are also stored as a finished optuna study (study.journal in the output folder), so `dse pareto` and
optuna-dashboard open a grid like a search.

Beyond one machine: the chunks are independent, so a grid splits over machines as a Dask bag (or any task
queue) of chunks, each worker running `_evaluate_chunk`, and the rows land in a shared optuna PostgreSQL
storage as `dse run --storage postgresql://...` already does for searches; not built here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kvnand.study.dse import export
from kvnand.study.dse.objectives import evaluate_design, prefetch
from kvnand.study.dse.space import Space, load_space
from kvnand.study.dse.study import directions, save_grid

_space: Space | None = None  # the space of a pool worker process


def _init(space_file: str) -> None:
    global _space
    _space = load_space(space_file)


CHUNK = 256  # designs whose workload points are evaluated together (more share a stacked walk)


def _evaluate_chunk(chunk: list[dict]) -> list[tuple]:
    prefetch(_space, chunk)
    out = []
    for params in chunk:
        ev = evaluate_design(_space, params)
        out.append((ev.values, ev.feasible, ev.violated, ev.report, ev.constraints))
    return out


def run_grid(space: Space, out: Path, workers: int = 1, log=print, progress=None, study: bool = True,
             figures: bool = True) -> dict:
    """Evaluate every design; `progress(done, total)` is called as designs finish; `figures`: draw the Pareto
    scatter and the Fig. 15 heatmap (matplotlib is imported only then)."""
    from kvnand.io import check_output
    from kvnand.study.dse.study import check_workers

    check_workers(workers)
    combos = space.grid()
    check_output(out, "--out", directory=True)
    known = {json.dumps(p, sort_keys=True): label for label, p in space.known_designs()}
    in_grid = {json.dumps(p, sort_keys=True) for p in combos}
    combos += [json.loads(k) for k in known if k not in in_grid]
    log(f"grid '{space.name}': {len(combos)} designs x {len(space.points)} workload points, {workers} process(es)")
    t0 = time.monotonic()
    results: list = []
    size = max(1, min(CHUNK, -(-len(combos) // (4 * workers))))  # every worker gets several chunks
    chunks = [combos[i:i + size] for i in range(0, len(combos), size)]
    if workers == 1:
        _init(space.file)
        done = map(_evaluate_chunk, chunks)
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers, _init, (space.file,))
        done = pool.imap(_evaluate_chunk, chunks)
    try:
        for chunk in done:
            for r in chunk:
                results.append(r)
                if progress:
                    progress(len(results), len(combos))
    finally:
        if workers > 1:
            pool.terminate()
    elapsed = time.monotonic() - t0
    labels = [known.get(json.dumps(params, sort_keys=True)) for params in combos]
    rows = [export.TrialRow(i, "COMPLETE", params, values, feasible, violated, label, report)
            for i, (params, label, (values, feasible, violated, report, _)) in enumerate(
                zip(combos, labels, results, strict=True))]
    summary = export.write_outputs(out, rows, list(space.spec.objectives), directions(space), heatmap=True,
                                   figures=figures)
    write_columns(Path(out) / "grid.npz", rows, list(space.spec.objectives))
    summary["files"].append("grid.npz")
    url = None
    if study:
        url = save_grid(space, out, [(params, values, feasible, cons, {"violated": violated, "report": report},
                                      label) for params, label, (values, feasible, violated, report, cons)
                                     in zip(combos, labels, results, strict=True)])
        summary["files"].append("study.journal")
    summary.update({"space": space.file, "designs": len(rows), "elapsed_s": elapsed,
                    "designs_per_s": len(rows) / elapsed if elapsed > 0 else None, "study": space.name,
                    "storage": url, "dashboard": f"optuna-dashboard {url}" if url else None})
    export.write_json(Path(out) / "summary.json", summary)
    return summary


def write_columns(path: Path, rows: list, objectives: list[str]) -> None:
    """Every design as compressed columns: number, label, feasible, each parameter (NaN / "" where a
    conditional parameter is not active), each objective and each scalar metric (NaN where undefined)."""
    import numpy as np

    from kvnand.io import atomic_path

    params = list(dict.fromkeys(k for r in rows for k in r.params))
    metrics = list(dict.fromkeys(k for r in rows for k, v in r.metrics.items() if not isinstance(v, (dict, list))))
    cols = {"number": np.array([r.number for r in rows]), "label": np.array([r.label or "" for r in rows]),
            "feasible": np.array([r.feasible for r in rows])}
    for k in params:
        vals = [r.params.get(k) for r in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals if v is not None)
        cols[f"param.{k}"] = (np.array([np.nan if v is None else v for v in vals], dtype=float) if numeric
                              else np.array(["" if v is None else str(v) for v in vals]))
    for i, k in enumerate(objectives):
        cols[f"objective.{k}"] = np.array([np.nan if r.values is None else r.values[i] for r in rows], dtype=float)
    for k in metrics:
        cols[f"metric.{k}"] = np.array([np.nan if r.metrics.get(k) is None else r.metrics[k] for r in rows],
                                       dtype=float)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **cols)
