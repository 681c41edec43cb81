"""Outputs of a study or grid, all written atomically into the run folder.

- `trials.csv`: every evaluated or failed trial (objectives, all metrics, parameters, violated constraints);
- `pareto.csv`: the feasible non-dominated trials only (one row per distinct design);
- `known_designs.csv`: each published design: Pareto-optimal, dominated (by which trial and by how much
  per objective), infeasible (which constraint) or failed;
- `pareto.png`: objective-pair scatter of all trials, the front and the published designs;
- `heatmap.png` (grid mode): the paper's Fig. 15 view: decode latency by G1/G2 split x context, one panel
  per model and precision, out-of-memory cells blank, the fastest split per context starred;
- `summary.json`: what the command prints, machine-readable.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from kvnand.dse.objectives import dominates, improvement, non_dominated
from kvnand.report import atomic_path, json_text, write_text


@dataclass
class Row:
    """One design's outcome, from an optuna trial or a grid point."""

    number: int
    state: str                                  # COMPLETE, FAIL, RUNNING
    params: dict
    values: list[float] | None
    feasible: bool
    violated: list[str] = field(default_factory=list)
    label: str | None = None                    # published design name
    report: dict | None = None                  # evaluate_design's report (metrics, design, points)

    @property
    def metrics(self) -> dict:
        return (self.report or {}).get("metrics", {})


def rows_from_study(study) -> list[Row]:
    """Every taken trial of a study (WAITING and surplus trials are not designs that ran)."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING or t.user_attrs.get("surplus"):
            continue
        violated = list(t.user_attrs.get("violated", []))
        if t.state == TrialState.FAIL:
            violated.append(f"failed: {t.user_attrs.get('error', 'worker died (heartbeat went stale)')}")
        feasible = t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())
        rows.append(Row(t.number, t.state.name, dict(t.params), list(t.values) if t.values else None, feasible,
                        violated, t.user_attrs.get("known_design"), t.user_attrs.get("report")))
    return rows


def pareto(rows: list[Row], directions: list[str]) -> list[Row]:
    """Feasible non-dominated rows, one per distinct design (the lowest trial number, e.g. the published one)."""
    feasible = [r for r in rows if r.feasible]
    front = [r for r, keep in zip(feasible, non_dominated([r.values for r in feasible], directions), strict=True)
             if keep]
    seen, out = set(), []
    for r in sorted(front, key=lambda r: r.number):
        key = json.dumps(r.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def compare_known(rows: list[Row], front: list[Row], objectives: list[str], directions: list[str]) -> list[dict]:
    """Each published design against the front: the dominating trial with the largest worst-case gain."""
    out = []
    on_front = {json.dumps(r.params, sort_keys=True) for r in front}
    for k in (r for r in rows if r.label):
        rec = {"label": k.label, "number": k.number, "feasible": k.feasible, "violated": k.violated,
               "values": dict(zip(objectives, k.values or [], strict=False)), "status": "", "dominated_by": None,
               "dominated_by_label": None, "gain": {}}
        if not k.feasible:
            rec["status"] = "failed" if k.state == "FAIL" else "infeasible"
        elif json.dumps(k.params, sort_keys=True) in on_front:
            rec["status"] = "pareto-optimal"
        else:
            rivals = [f for f in front if dominates(f.values, k.values, directions)]
            best = max(rivals, key=lambda f: (min(g := improvement(f.values, k.values, directions)), sum(g)))
            rec.update(status="dominated", dominated_by=best.number, dominated_by_label=best.label,
                       gain=dict(zip(objectives, improvement(best.values, k.values, directions), strict=True)))
        out.append(rec)
    return out


# ---------------------------------------------------------------------- files
def write_outputs(out: Path, rows: list[Row], objectives: list[str], directions: list[str],
                  heatmap: bool = False) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    front = pareto(rows, directions)
    known = compare_known(rows, front, objectives, directions)
    write_text(out / "trials.csv", rows_csv(rows, objectives))
    write_text(out / "pareto.csv", rows_csv(front, objectives))
    write_text(out / "known_designs.csv", _known_csv(known, objectives))
    files = ["trials.csv", "pareto.csv", "known_designs.csv"]
    if any(r.feasible for r in rows):
        pareto_figure(out / "pareto.png", rows, front, objectives)
        files.append("pareto.png")
    if heatmap and heatmap_figure(out / "heatmap.png", rows):
        files.append("heatmap.png")
    return {
        "objectives": objectives, "directions": directions, "out": str(out), "files": files,
        "trials": len(rows), "feasible": sum(r.feasible for r in rows),
        "infeasible": sum(r.state == "COMPLETE" and not r.feasible for r in rows),
        "failed": sum(r.state == "FAIL" for r in rows),
        "pareto": [{"number": r.number, "label": r.label, "values": dict(zip(objectives, r.values, strict=True)),
                    "params": r.params} for r in front],
        "known_designs": known,
    }


def write_json(path: Path, obj) -> None:
    write_text(path, json_text(obj, indent=2) + "\n")


def rows_csv(rows: list[Row], objectives: list[str]) -> str:
    # a parameter named system/precision is the design's column of that name
    params = [k for k in dict.fromkeys(k for r in rows for k in r.params) if k not in ("system", "precision")]
    extra = sorted({k for r in rows for k in r.metrics} - set(objectives))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "label", "state", "feasible", *objectives, *extra, "system", "precision", *params,
                "violated"])
    for r in rows:
        design = (r.report or {}).get("design", {})
        values = r.values or [None] * len(objectives)
        w.writerow([r.number, r.label or "", r.state, r.feasible, *(_cell(v) for v in values),
                    *(_cell(r.metrics.get(k)) for k in extra), design.get("system", ""),
                    design.get("precision") or "", *(_cell(r.params.get(p)) for p in params), "; ".join(r.violated)])
    return buf.getvalue()


def _cell(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def _known_csv(known: list[dict], objectives: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "number", "status", "dominated_by", "dominated_by_label", *objectives,
                *(f"gain_{o}" for o in objectives), "violated"])
    for k in known:
        w.writerow([k["label"], k["number"], k["status"], _cell(k["dominated_by"]), k["dominated_by_label"] or "",
                    *(_cell(k["values"].get(o)) for o in objectives), *(_cell(k["gain"].get(o)) for o in objectives),
                    "; ".join(k["violated"])])
    return buf.getvalue()


# ---------------------------------------------------------------------- figures
def _figure(nplots: int, ncols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nrows = math.ceil(nplots / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    # fixed margins: a layout engine costs seconds per figure
    fig.subplots_adjust(left=0.12 / ncols + 0.02, right=0.98, bottom=0.12 / nrows + 0.02, top=1 - 0.14 / nrows,
                        wspace=0.35, hspace=0.4)
    for ax in axes[nplots:]:
        ax.set_visible(False)
    return fig, axes[:nplots]


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:] or "png", dpi=130)


def pareto_figure(path: Path, rows: list[Row], front: list[Row], objectives: list[str]) -> None:
    """Scatter of every objective pair (objective vs trial number when there is one objective)."""
    pairs = list(itertools.combinations(range(len(objectives)), 2)) or [(None, 0)]
    fig, axes = _figure(len(pairs), min(len(pairs), 3), (4.6, 3.8))

    def xy(rs, i, j):
        pts = [(r.number if i is None else r.values[i], r.values[j]) for r in rs if r.values]
        return [p for p in pts if all(math.isfinite(v) for v in p)]

    done = [r for r in rows if r.state == "COMPLETE"]
    for ax, (i, j) in zip(axes, pairs, strict=True):
        for rs, kw in (([r for r in done if not r.feasible], dict(marker="x", c="0.75", s=12, label="infeasible")),
                       ([r for r in done if r.feasible], dict(c="tab:blue", s=12, alpha=0.45, label="feasible")),
                       (front, dict(c="tab:red", s=30, label="Pareto front")),
                       ([r for r in done if r.label],
                        dict(marker="^", facecolors="none", edgecolors="k", s=60, label="published design"))):
            pts = xy(rs, i, j)
            if pts:
                ax.scatter(*zip(*pts, strict=True), **kw)
        for r in done:
            if r.label and (pt := xy([r], i, j)):
                ax.annotate(r.label, pt[0], fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("trial" if i is None else objectives[i])
        ax.set_ylabel(objectives[j])
        for axis, idx in (("x", i), ("y", j)):
            vals = [v for r in done if r.values for v in [r.values[idx] if idx is not None else r.number]
                    if math.isfinite(v)]
            if vals and min(vals) > 0 and max(vals) / min(vals) > 30:
                getattr(ax, f"set_{axis}scale")("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("design-space exploration: trials and Pareto front")
    _save(fig, path)


def split_label(rec: dict) -> str:
    """Row name of a point in the heatmap: KVNAND-D's split, KVNAND-C's die count, else the system."""
    c = rec.get("config", {})
    if c.get("kv_store") == "flash_group":
        return f"D-({c['g1_dies']}+{c['g2_dies']})"
    if c.get("kv_store") == "colocated":
        return f"C-{c['dies']}"
    return rec.get("system", "?")


def heatmap_figure(path: Path, rows: list[Row]) -> bool:
    """Fig. 15-style heatmap; other varying parameters collapse to the fastest design per cell."""
    import numpy as np

    from kvnand.report.sweep import context_label

    cells: dict[tuple, dict[tuple, float]] = {}
    for r in rows:
        for p in (r.report or {}).get("points", []):
            panel = cells.setdefault((p["model"], p["precision"]), {})
            key = (split_label(p), p["context"])
            panel[key] = min(panel.get(key, math.inf), math.inf if p["oom"] else p["latency_s"])
    if not cells:
        return False

    def order(label: str):
        return (label.startswith("D"), int(label.split("+")[-1].rstrip(")")) if "+" in label else 0, label)

    fig, axes = _figure(len(cells), min(len(cells), 2), (5.6, 4.2))
    for ax, ((model, prec), panel) in zip(axes, sorted(cells.items()), strict=True):
        splits = sorted({k[0] for k in panel}, key=order)
        ctxs = sorted({k[1] for k in panel})
        ms = np.array([[panel.get((s, c), math.inf) * 1e3 for c in ctxs] for s in splits])
        ms[~np.isfinite(ms)] = np.nan  # out of memory (or not in the grid): blank
        shade = np.log10(ms)
        lo, hi = np.nanmin(shade), np.nanmax(shade)
        ax.imshow(np.ma.masked_invalid(shade), cmap="viridis_r", aspect="auto", vmin=lo, vmax=hi)
        for j in range(len(ctxs)):
            col = ms[:, j]
            best = int(np.nanargmin(col)) if not np.isnan(col).all() else -1
            for i in range(len(splits)):
                if not math.isnan(col[i]):
                    bright = hi == lo or (shade[i, j] - lo) / (hi - lo) < 0.5  # viridis_r: fast = yellow
                    ax.text(j, i, f"{col[i]:.3g}" + ("*" if i == best else ""), ha="center", va="center",
                            fontsize=7, color="k" if bright else "w", fontweight="bold" if i == best else None)
        ax.set_xticks(range(len(ctxs)), [context_label(c) for c in ctxs])
        ax.set_yticks(range(len(splits)), splits)
        ax.set_xlabel("context (tokens)")
        ax.set_title(f"{model}, {prec.upper()}: ms/token (blank = OOM, * = fastest)", fontsize=9)
    fig.suptitle("decode latency by G1/G2 split and context")
    _save(fig, path)
    return True
