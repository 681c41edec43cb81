"""The report's figures (matplotlib, Agg canvas, imported only when drawing).

FILE: decode tokens/s, one panel per model, groups = contexts, bars = systems (the paper's Fig. 12);
FILE-energy: J/token in the same layout; FILE-breakdown: seconds per token by stage, stacked, per system
at one context per model. Out-of-memory points are hatched stubs labelled "OOM" (their value is zero).
"""

from __future__ import annotations

import math
from pathlib import Path

from kvnand.report import atomic_path
from kvnand.report.sweep import context_label

SUFFIXES = (".png", ".svg")
OOM_STUB = 0.04  # height of the hatched OOM marker, as a fraction of the panel's y range


def figure_paths(path: str | Path) -> list[Path]:
    p = Path(path)
    return [p, p.with_name(f"{p.stem}-energy{p.suffix}"), p.with_name(f"{p.stem}-breakdown{p.suffix}")]


def write_figures(results: list[dict], path: str | Path) -> list[Path]:
    """Draw the three figures beside `path` (each written atomically); returns the files written."""
    main, energy, breakdown = figure_paths(path)
    how = ", ".join(_ordered(results, "precision") + [f"{m} mode" for m in _ordered(results, "mode")])
    _grouped(results, "tokens_per_s", f"decode throughput ({how})", "decode throughput (tokens/s)", main)
    _grouped(results, "energy_j_per_token", f"decode energy per token ({how})", "energy per token (J/token)", energy)
    _breakdown(results, f"decode latency breakdown by stage ({how})", breakdown)
    return [main, energy, breakdown]


PANEL_COLUMNS = 3
LEGEND_PER_PANEL = 3  # legend entries that fit across one panel's width


def _axes(n: int, title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(n, PANEL_COLUMNS)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(max(5.0 * ncols, 7.5), 3.6 * nrows + 0.9), layout="constrained")  # room for the title
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=13)
    return fig, axes[:n]


def _legend(fig, ax, n_panels: int) -> None:
    handles, labels = ax.get_legend_handles_labels()
    ncols = max(1, min(len(labels), LEGEND_PER_PANEL * min(n_panels, PANEL_COLUMNS)))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False, fontsize=11)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:], dpi=150)


def _mark_oom(ax, xs: list[float], width: float, colors: list) -> None:
    top = ax.get_ylim()[1]
    for x, color in zip(xs, colors, strict=True):
        ax.bar(x, OOM_STUB * top, width, facecolor="none", edgecolor=color, hatch="///", linewidth=0.8)
        ax.text(x, 1.3 * OOM_STUB * top, "OOM", rotation=90, ha="center", va="bottom", fontsize=8,
                color="black")


def _ordered(results: list[dict], key: str) -> list:
    return list(dict.fromkeys(r[key] for r in results))


def _grouped(results: list[dict], metric: str, title: str, ylabel: str, path: Path) -> None:
    """One panel per model; groups of bars by context, one bar per system."""
    models, contexts, systems = (_ordered(results, k) for k in ("model", "context", "system"))
    colors = {s: f"C{i % 10}" for i, s in enumerate(systems)}
    index = {(r["model"], r["context"], r["system"]): r for r in results}
    fig, axes = _axes(len(models), title)
    width = 0.8 / len(systems)
    for ax, model in zip(axes, models, strict=True):
        oom_x, oom_c = [], []
        for j, s in enumerate(systems):
            xs, ys = [], []
            for i, c in enumerate(contexts):
                r = index.get((model, c, s))
                if r is None:
                    continue
                x = i + (j - (len(systems) - 1) / 2) * width
                if r["oom"]:
                    oom_x.append(x)
                    oom_c.append(colors[s])
                else:
                    xs.append(x)
                    ys.append(r[metric])
            ax.bar(xs, ys, width, color=colors[s], label=s)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.05)
        _mark_oom(ax, oom_x, width, oom_c)
        ax.set_title(model)
        ax.set_xticks(range(len(contexts)), [context_label(c) for c in contexts])
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    _legend(fig, axes[0], len(models))
    _save(fig, path)


def _breakdown(results: list[dict], title: str, path: Path) -> None:
    """Per model, at the largest context where the most systems fit: ms per token by stage, stacked."""
    models, systems = _ordered(results, "model"), _ordered(results, "system")
    stages = list(dict.fromkeys(k for r in results for k in r["breakdown_s"]))
    colors = {st: f"C{i % 10}" for i, st in enumerate(stages)}
    fig, axes = _axes(len(models), title)
    for ax, model in zip(axes, models, strict=True):
        rows = [r for r in results if r["model"] == model]
        ctx = max((r["context"] for r in rows), key=lambda c: (sum(not r["oom"] for r in rows if r["context"] == c), c))
        here = {r["system"]: r for r in rows if r["context"] == ctx}
        names = [s for s in systems if s in here]
        bottom = [0.0] * len(names)
        for st in stages:
            ys = [here[s]["breakdown_s"].get(st, 0.0) * 1e3 for s in names]
            ax.bar(range(len(names)), ys, 0.6, bottom=bottom, color=colors[st], label=st)
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        ax.set_ylim(0, ax.get_ylim()[1] * 1.05)
        oom = [i for i, s in enumerate(names) if here[s]["oom"]]
        _mark_oom(ax, oom, 0.6, ["dimgray"] * len(oom))
        ax.set_title(f"{model} at {context_label(ctx)} tokens")
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_ylabel("latency per token (ms)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    _legend(fig, axes[0], len(models))
    _save(fig, path)
