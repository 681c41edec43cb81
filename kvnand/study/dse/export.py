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

from kvnand.io import atomic_path, json_text, write_text
from kvnand.study.dse.objectives import dominates, improvement, jsonable, non_dominated, stored_constraints


@dataclass
class TrialRow:
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


def rows_from_study(study, objectives: list[str]) -> list[TrialRow]:
    """Every design a study evaluated: its taken trials except those told a stored design's values
    (`duplicate_of`; WAITING and surplus trials are not designs that ran). An infeasible trial told optuna
    the worst values; its row has the values it measured (from its report)."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING or t.user_attrs.get("surplus") or "duplicate_of" in t.user_attrs:
            continue
        violated = list(t.user_attrs.get("violated", []))
        if t.state == TrialState.FAIL:
            violated.append(f"failed: {t.user_attrs.get('error', 'worker died')}")
        feasible = t.state == TrialState.COMPLETE and all(v <= 0 for v in stored_constraints(t))
        report = t.user_attrs.get("report")
        values = list(t.values) if t.values else None
        if values and not feasible and report and "metrics" in report:
            values = [_measured(report["metrics"].get(o), v) for o, v in zip(objectives, values, strict=True)]
        rows.append(TrialRow(t.number, t.state.name, dict(t.params), values, feasible, violated,
                        t.user_attrs.get("known_design"), report))
    return rows


def _measured(value: float | None, told: float) -> float:
    return told if value is None else float(value)


def pareto(rows: list[TrialRow], directions: list[str]) -> list[TrialRow]:
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


def compare_known(rows: list[TrialRow], front: list[TrialRow], objectives: list[str],
                  directions: list[str]) -> list[dict]:
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
def write_outputs(out: Path, rows: list[TrialRow], objectives: list[str], directions: list[str],
                  heatmap: bool = False, figures: bool = True) -> dict:
    """The CSV files, and with `figures` the Pareto scatter (and with `heatmap` the Fig. 15 heatmap)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    front = pareto(rows, directions)
    known = compare_known(rows, front, objectives, directions)
    write_text(out / "trials.csv", rows_csv(rows, objectives))
    write_text(out / "pareto.csv", rows_csv(front, objectives))
    write_text(out / "known_designs.csv", _known_csv(known, objectives))
    files = ["trials.csv", "pareto.csv", "known_designs.csv"]
    if figures and any(r.feasible for r in rows):
        pareto_figure(out / "pareto.png", rows, front, objectives)
        files.append("pareto.png")
    if figures and heatmap and heatmap_figure(out / "heatmap.png", rows) is not None:
        files.append("heatmap.png")
    return {
        "objectives": objectives, "directions": directions, "out": str(out), "files": files,
        "trials": len(rows), "feasible": sum(r.feasible for r in rows),
        "infeasible": sum(r.state == "COMPLETE" and not r.feasible for r in rows),
        "failed": sum(r.state == "FAIL" for r in rows),
        "infeasible_why": why_infeasible(rows),
        "pareto": [{"number": r.number, "label": r.label, "values": dict(zip(objectives, r.values, strict=True)),
                    "params": r.params} for r in front],
        "known_designs": known,
    }


def why_infeasible(rows: list[TrialRow]) -> list[dict]:
    """Per violated constraint (most common first): how many designs break it and, for capacity, at which
    workload points they run out of memory, with counts."""
    from kvnand.scenario import context_label

    out: dict[str, dict] = {}
    for r in rows:
        if r.state != "COMPLETE" or r.feasible:
            continue
        for v in r.violated:
            rec = out.setdefault(v.split(":")[0], {"designs": 0, "points": {}})
            rec["designs"] += 1
            if v.startswith("capacity"):
                for p in (r.report or {}).get("points", []):
                    if p["oom"]:
                        where = f"{p['model']} @{context_label(p['context'])}"
                        rec["points"][where] = rec["points"].get(where, 0) + 1
    return [{"constraint": k, "designs": v["designs"],
             "points": dict(sorted(v["points"].items(), key=lambda kv: -kv[1]))}
            for k, v in sorted(out.items(), key=lambda kv: -kv[1]["designs"])]


def write_json(path: Path, obj) -> None:
    """Standard JSON: undefined values (inf, nan) become null."""
    write_text(path, json_text(jsonable(obj), indent=2) + "\n")


def rows_csv(rows: list[TrialRow], objectives: list[str]) -> str:
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
def _figure(nplots: int, ncols: int, size: tuple[float, float], legend_in: float = 0.0):
    """Panels with fixed margins (a layout engine costs seconds per figure); `legend_in` inches are kept
    free at the bottom for a figure legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nrows = math.ceil(nplots / ncols)
    height = size[1] * nrows + legend_in
    fig = Figure(figsize=(size[0] * ncols, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    fig.subplots_adjust(left=0.12 / ncols + 0.02, right=1 - 0.14 / ncols, bottom=(0.5 + legend_in) / height,
                        top=1 - 0.7 / height, wspace=0.5, hspace=0.45)
    for ax in axes[nplots:]:
        ax.set_visible(False)
    return fig, axes[:nplots]


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:] or "png", dpi=130)


def _place_labels(ax, items: list[tuple[str, tuple[float, float]]]) -> int:
    """Annotate points without overprinting: each label takes the first free spot around its point, or is
    left out (the CSVs name every design). Returns the number left out."""
    renderer = ax.figure.canvas.get_renderer()
    placed, skipped = [ax.bbox.frozen()], 0
    for text, xy in items:
        for dx, dy, ha, va in ((4, 4, "left", "bottom"), (4, -4, "left", "top"), (-4, 4, "right", "bottom"),
                               (-4, -4, "right", "top")):
            a = ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=6)
            box = a.get_window_extent(renderer)
            inside = placed[0].x0 <= box.x0 and box.x1 <= placed[0].x1 and placed[0].y0 <= box.y0 <= box.y1 \
                <= placed[0].y1
            if inside and not any(box.overlaps(b) for b in placed[1:]):
                placed.append(box)
                break
            a.remove()
        else:
            skipped += 1
    return skipped


def _plain_ticks(axis) -> None:
    """A log axis labelled at 1-2-5 steps in plain numbers (by default every minor tick gets a label in
    scientific notation, and they overprint)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def pareto_figure(path: Path, rows: list[TrialRow], front: list[TrialRow], objectives: list[str]):
    """Scatter of every objective pair (objective vs trial number when there is one objective): infeasible
    designs as grey crosses at the values they measured, feasible ones as dots, the front in red, published
    designs as triangles (hollow grey when infeasible). Labels name the front and the feasible published
    designs where they fit. Returns the figure (written to `path` when given)."""
    from matplotlib.lines import Line2D

    pairs = list(itertools.combinations(range(len(objectives)), 2)) or [(None, 0)]
    fig, axes = _figure(len(pairs), min(len(pairs), 3), (4.6, 3.8), legend_in=0.5)

    def xy(rs, i, j):
        pts = [(r.number if i is None else r.values[i], r.values[j]) for r in rs if r.values]
        return [p for p in pts if all(v is not None and math.isfinite(v) for v in p)]

    done = [r for r in rows if r.state == "COMPLETE"]
    infeasible = [r for r in done if not r.feasible]
    styles = (
        ("infeasible", infeasible, dict(marker="x", c="0.6", s=14, linewidths=0.8)),
        ("feasible", [r for r in done if r.feasible], dict(c="tab:blue", s=12, alpha=0.45)),
        ("Pareto front", front, dict(c="tab:red", s=30)),
        ("published design", [r for r in done if r.label and r.feasible],
         dict(marker="^", facecolors="none", edgecolors="k", s=60)),
        ("published, infeasible", [r for r in done if r.label and not r.feasible],
         dict(marker="^", facecolors="none", edgecolors="0.6", s=60, linestyle="--")),
    )
    used = set()
    on_front = {r.number for r in front}
    labelled = [r for r in done if (r.label and r.feasible) or r.number in on_front]
    for ax, (i, j) in zip(axes, pairs, strict=True):
        for name, rs, kw in styles:
            if pts := xy(rs, i, j):
                ax.scatter(*zip(*pts, strict=True), **kw)
                used.add(name)
        ax.set_xlabel("trial" if i is None else objectives[i])
        ax.set_ylabel(objectives[j])
        for axis, idx in (("x", i), ("y", j)):
            vals = [v for r in done if r.values for v in [r.values[idx] if idx is not None else r.number]
                    if v is not None and math.isfinite(v)]
            if vals and min(vals) > 0 and max(vals) / min(vals) > 30:
                getattr(ax, f"set_{axis}scale")("log")
                _plain_ticks(getattr(ax, f"{axis}axis"))
        _place_labels(ax, [(r.label or f"#{r.number}", pt[0]) for r in labelled if (pt := xy([r], i, j))])
    handles = [Line2D([], [], linestyle="none", label=f"{name} ({len(rs)})" if name == "infeasible" else name,
                      marker=kw.get("marker", "o"), color=kw.get("c", "none"),
                      markerfacecolor=kw.get("c", kw.get("facecolors")), markeredgecolor=kw.get("edgecolors",
                                                                                              kw.get("c")))
               for name, rs, kw in styles if name in used]
    fig.legend(handles=handles, loc="lower center", ncols=len(handles), frameon=False, fontsize=8)
    n = len(done)
    fig.suptitle(f"design-space exploration: {n} designs, {len(infeasible)} infeasible, {len(front)} on the "
                 "Pareto front")
    if path is not None:
        _save(fig, path)
    return fig


def split_label(rec: dict) -> str:
    """Row name of a point in the heatmap: KVNAND-D's split, KVNAND-C's die count, else the system."""
    c = rec.get("config", {})
    if c.get("kv_store") == "flash_group":
        return f"D-({c['g1_dies']}+{c['g2_dies']})"
    if c.get("kv_store") == "colocated":
        return f"C-{c['dies']}"
    return rec.get("system", "?")


MAX_LABELLED_CELLS = 400  # heatmap panels up to this many cells print each cell's value


def heatmap_figure(path: Path | None, rows: list[TrialRow]):
    """Fig. 15-style heatmap with a colorbar per panel; other varying parameters collapse to the fastest
    design per cell. Returns the figure, or None when no row has workload points."""
    import numpy as np
    from matplotlib.colors import LogNorm

    from kvnand.scenario import context_label

    cells: dict[tuple, dict[tuple, float]] = {}
    for r in rows:
        for p in (r.report or {}).get("points", []):
            panel = cells.setdefault((p["model"], p["precision"]), {})
            key = (split_label(p), p["context"])
            panel[key] = min(panel.get(key, math.inf), math.inf if p["oom"] else p["latency_s"])
    if not cells:
        return None

    def order(label: str):
        return (label.startswith("D"), int(label.split("+")[-1].rstrip(")")) if "+" in label else 0, label)

    fig, axes = _figure(len(cells), min(len(cells), 2), (6.4, 4.2))
    for ax, ((model, prec), panel) in zip(axes, sorted(cells.items()), strict=True):
        splits = sorted({k[0] for k in panel}, key=order)
        ctxs = sorted({k[1] for k in panel})
        ms = np.array([[panel.get((s, c), math.inf) * 1e3 for c in ctxs] for s in splits])
        ms[~np.isfinite(ms)] = np.nan  # out of memory (or not in the grid): grey
        # a panel whose every cell is out of memory is all grey (a scale it does not use keeps matplotlib valid)
        lo, hi = (np.nanmin(ms), np.nanmax(ms)) if not np.isnan(ms).all() else (1.0, 1.0)
        norm = LogNorm(lo, hi if hi > lo else lo * 1.01)
        ax.set_facecolor("0.85")
        im = ax.imshow(np.ma.masked_invalid(ms), cmap="viridis_r", aspect="auto", norm=norm)
        bar = fig.colorbar(im, ax=ax, label="ms/token (log scale)", fraction=0.08, pad=0.03)
        _plain_ticks(bar.ax.yaxis)
        # a large grid's cells are too small to read a number in (and thousands of labels take seconds to
        # draw): there the colours carry the values and a star marks the fastest design per context
        labelled = ms.size <= MAX_LABELLED_CELLS
        bests = []
        for j in range(len(ctxs)):
            col = ms[:, j]
            best = int(np.nanargmin(col)) if not np.isnan(col).all() else -1
            if best >= 0:
                bests.append((j, best))
            for i in range(len(splits) if labelled else 0):
                if not math.isnan(col[i]):
                    bright = norm(col[i]) < 0.5  # viridis_r: fast = yellow, needs black text
                    ax.text(j, i, f"{col[i]:.3g}" + ("*" if i == best else ""), ha="center", va="center",
                            fontsize=7, color="k" if bright else "w", fontweight="bold" if i == best else None)
        if not labelled and bests:
            ax.scatter(*zip(*bests, strict=True), marker="*", s=12, color="r")
        step_x, step_y = -(-len(ctxs) // 10), -(-len(splits) // 24)  # tick labels that do not overlap
        ax.set_xticks(range(0, len(ctxs), step_x), [context_label(c) for c in ctxs][::step_x])
        ax.set_yticks(range(0, len(splits), step_y), splits[::step_y])
        ax.set_xlabel("context (tokens)")
        ax.set_title(f"{model}, {prec.upper()}: ms/token (grey = OOM, * = fastest)", fontsize=9)
    fig.suptitle("decode latency by G1/G2 split and context")
    if path is not None:
        _save(fig, path)
    return fig
