"""The report's figures (matplotlib, Agg canvas, imported only when drawing); PNG, SVG or PDF by suffix.

`--policy-plot FILE`: tokens/s and J/token against the context, per system and KV policy (policy_figure).

FILE: decode tokens/s, one panel per model, groups = contexts, bars = systems;
FILE-speedup: the same layout normalized, tokens/s over base1 at each system's own precision (base2 where
base1 is out of memory, marked under the context), the paper's Fig. 12 (only when a reference was swept);
FILE-energy: J/token in the same layout; FILE-breakdown: ms per token by stage, stacked, per system at
one context per model; FILE-batch (with several --batch values): aggregate and per-request tokens/s vs batch,
one panel per model and context, one colour per system. With batches, the other figures' series are
"system b=B".

Every system keeps one colour in every panel and figure, and every legend lists every system with its
precision, whether or not it fits in the first panel. An out-of-memory point is an "OOM" label standing
on the baseline in its system's colour: no bar, so no height to misread. Systems given as YAML paths are
labelled by the `name` inside the file.
"""

from __future__ import annotations

import math
from pathlib import Path

from kvnand.io import atomic_path
from kvnand.scenario import context_label

SUFFIXES = (".png", ".svg", ".pdf")
PANEL_COLUMNS = 3


def figure_paths(path: str | Path) -> dict[str, Path]:
    p = Path(path)
    return {"throughput": p, **{k: p.with_name(f"{p.stem}-{k}{p.suffix}") for k in ("speedup", "energy",
                                                                                      "breakdown", "batch")}}


def write_figures(results: list[dict], path: str | Path, references: list[dict] = ()) -> list[Path]:
    """Draw the figures beside `path` (each written atomically); returns the files written."""
    paths = figure_paths(path)
    written = []
    for name, fig in figures(results, references).items():
        _save(fig, paths[name])
        written.append(paths[name])
    return written


def figures(results: list[dict], references: list[dict] = ()) -> dict:
    """{"throughput", "speedup" (when a reference system was swept), "energy", "breakdown", "batch" (when
    several batch sizes were swept)} -> Figure."""
    from kvnand.present.table import REFERENCES, index_points, speedup
    from kvnand.study.sweep import series

    swept = results
    if any("batch" in r for r in results):  # one series per system and batch size
        results = [{**r, "system": series(r)} for r in results]
    precs = _ordered(results, "precision")
    how = ", ".join([f"{m} mode" for m in _ordered(results, "mode")]
                    + [precs[0] if len(precs) == 1 else "each system at the precision in its legend entry"])
    out = {"throughput": _grouped(results, lambda r: r["tokens_per_s"], f"decode throughput ({how})",
                                  "decode throughput (tokens/s)")}
    if any(r["system"] in REFERENCES for r in swept):
        index = index_points(results, list(references))
        ref_of = {}

        def ratio(r):
            sp = speedup(r, index)
            if sp is not None:
                ref_of.setdefault((r["model"], r["context"]), set()).add(sp[1])
            return sp and sp[0]

        out["speedup"] = _grouped(
            results, ratio, f"decode speedup over base1 at equal precision, base2 where base1 is OOM ({how})",
            "speedup over the reference (x)", ref_of=ref_of, unity=True)
    out["energy"] = _grouped(results, lambda r: r["energy_j_per_token"], f"decode energy per token ({how})",
                             "energy per token (J/token)")
    out["breakdown"] = _breakdown(results, "decode latency breakdown by stage ("
                                  + ", ".join(f"{m} mode" for m in _ordered(results, "mode")) + ")")
    if len({r.get("batch") for r in swept} - {None}) > 1:
        out["batch"] = _batch(swept, f"decode tokens/s vs batch: solid aggregate, dashed per request\n({how})")
    return out


def _batch(results: list[dict], title: str):
    """Per model and context: aggregate (solid) and per-request (dashed) tokens/s against the batch size, one
    colour per system; a batch that does not fit has no point (the line stops)."""
    panels = list(dict.fromkeys((r["model"], r["context"]) for r in results))
    systems = _ordered(results, "system")
    colors = _colors(systems)
    fig, axes = _axes(len(panels), title)
    for ax, (model, ctx) in zip(axes, panels, strict=True):
        for s in systems:
            pts = sorted((r["batch"], r["aggregate_tokens_per_s"], r["tokens_per_s"]) for r in results
                         if r["model"] == model and r["context"] == ctx and r["system"] == s and not r["oom"])
            if not pts:
                continue
            bs, agg, per = zip(*pts, strict=True)
            ax.plot(bs, agg, "o-", color=colors[s])
            ax.plot(bs, per, "o--", color=colors[s], markersize=3)
        batches = sorted({r["batch"] for r in results})
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_yscale("log")
        # with --batch-contexts the panel's context is only the longest of the sequences' own
        own = sorted({c for r in results if r["model"] == model and r["context"] == ctx
                      for c in r.get("batch_contexts", ())})
        ax.set_title(f"{model}, sequences of {', '.join(map(context_label, own))} tokens" if own else
                     f"{model} at {context_label(ctx)} tokens")
        ax.set_xlabel("batch (sequences per step)")
        ax.set_ylabel("decode tokens/s")
        ax.grid(alpha=0.3, which="both")
    _legend(fig, _entries(results, systems))
    return fig


def system_label(system: str) -> str:
    """A preset's name as given; a system YAML path as the `name` inside it (its file stem if unreadable)."""
    base, auto = system.removesuffix(":auto"), system.endswith(":auto")
    if not base.endswith((".yaml", ".yml")) and "/" not in base:
        return system
    from kvnand.config.loader import load_system
    from kvnand.errors import InputError

    try:
        name = load_system(base).name
    except InputError:
        name = Path(base).stem
    return name + (":auto" if auto else "")


def _colors(systems: list[str]) -> dict[str, str]:
    return {s: f"C{i % 10}" for i, s in enumerate(systems)}


def _stage_colors(stages: list[str]) -> dict[str, tuple]:
    """Stages take a palette other than the systems' (tab10), so a stage is never mistaken for a system."""
    from matplotlib import colormaps

    palette = [*colormaps["Set2"].colors, *colormaps["Pastel1"].colors]
    return {st: palette[i % len(palette)] for i, st in enumerate(stages)}


def _axes(n: int, title: str, columns: int = PANEL_COLUMNS):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(n, columns)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(max(5.0 * ncols, 7.5), 3.6 * nrows + 0.9), layout="constrained")  # room for the title
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    return fig, axes[:n]


def _legend(fig, entries: list[tuple[str, str]]) -> None:
    """One legend for the whole figure, built from (label, colour), so it never depends on what a panel drew."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=color, label=label) for label, color in entries]
    # as many columns as the longest entry allows across the figure (~0.075 in per character at 10 pt)
    entry_in = 0.6 + 0.075 * max(len(label) for label, _ in entries)
    ncols = max(1, min(len(handles), int(fig.get_figwidth() // entry_in)))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False, fontsize=10)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:], dpi=150)


def _mark_oom(ax, xs: list[float], colors: list[str]) -> None:
    """"OOM" standing on the baseline: an annotation, not a bar, so it has no value on the y axis."""
    for x, color in zip(xs, colors, strict=True):
        ax.annotate("OOM", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 2), textcoords="offset points",
                    rotation=90, ha="center", va="bottom", fontsize=7, color=color, fontweight="bold")


def _ordered(results: list[dict], key: str) -> list:
    return list(dict.fromkeys(r[key] for r in results))


def _entries(results: list[dict], systems: list[str]) -> list[tuple[str, str]]:
    colors = _colors(systems)
    precs = {s: ", ".join(dict.fromkeys(r["precision"] for r in results if r["system"] == s)) for s in systems}
    return [(f"{system_label(s)} ({precs[s]})", colors[s]) for s in systems]


def _grouped(results: list[dict], value, title: str, ylabel: str, ref_of: dict | None = None,
             unity: bool = False):
    """One panel per model; groups of bars by context, one bar per system. `value(record)` is the bar
    height (None: no bar); `ref_of` names the reference under a context when it is not base1."""
    models, contexts, systems = (_ordered(results, k) for k in ("model", "context", "system"))
    colors = _colors(systems)
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
                elif (v := value(r)) is not None:
                    xs.append(x)
                    ys.append(v)
            ax.bar(xs, ys, width, color=colors[s])
        if unity:
            ax.axhline(1.0, color="0.3", linewidth=0.8, linestyle="--")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.05)
        ax.set_xlim(-0.5, len(contexts) - 0.5)  # the OOM labels are not data: keep their slots in view
        _mark_oom(ax, oom_x, oom_c)
        ax.set_title(model)
        labels = [context_label(c) for c in contexts]
        if ref_of is not None:
            labels = [lab + "".join(f"\nvs {x}" for x in sorted(ref_of.get((model, c), ())) if x != "base1")
                      for lab, c in zip(labels, contexts, strict=True)]
        ax.set_xticks(range(len(contexts)), labels)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    _legend(fig, _entries(results, systems))
    return fig


def _breakdown(results: list[dict], title: str):
    """Per model, at the largest context where the most systems fit: ms per step by stage (per token without
    batching or speculation), stacked
    horizontally (one row per system, so names of any length never overprint)."""
    models, systems = _ordered(results, "model"), _ordered(results, "system")
    stages = list(dict.fromkeys(k for r in results for k in r["breakdown_s"]))
    colors = _stage_colors(stages)
    sys_colors = _colors(systems)
    fig, axes = _axes(len(models), title)
    for ax, model in zip(axes, models, strict=True):
        rows = [r for r in results if r["model"] == model]
        ctx = max((r["context"] for r in rows), key=lambda c: (sum(not r["oom"] for r in rows if r["context"] == c), c))
        here = {r["system"]: r for r in rows if r["context"] == ctx}
        names = [s for s in systems if s in here]
        left = [0.0] * len(names)
        for st in stages:
            xs = [here[s]["breakdown_s"].get(st, 0.0) * 1e3 for s in names]
            ax.barh(range(len(names)), xs, 0.6, left=left, color=colors[st])
            left = [a + x for a, x in zip(left, xs, strict=True)]
        ax.set_xlim(0, ax.get_xlim()[1] * 1.05)
        ax.set_ylim(len(names) - 0.5, -0.5)  # first system on top
        for i, s in enumerate(names):
            if here[s]["oom"]:
                ax.annotate("OOM", (0, i), xycoords=("axes fraction", "data"), xytext=(3, 0),
                            textcoords="offset points", ha="left", va="center", fontsize=8, fontweight="bold",
                            color=sys_colors[s])
        ax.set_title(f"{model} at {context_label(ctx)} tokens")
        ax.set_yticks(range(len(names)), [f"{system_label(s)} ({here[s]['precision']})" for s in names], fontsize=8)
        # breakdown_s sums to the step: a request's token only when a step decodes one token per request
        stepped = any(r.get("step_latency_s") is not None for r in here.values())
        ax.set_xlabel("decode step time (ms)" if stepped else "latency per token (ms)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    _legend(fig, [(st, colors[st]) for st in stages])
    return fig


POLICY_STYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def policy_figure(by_policy: dict[str, list[dict]]):
    """`--policy-plot`: per model, decode tokens/s and J/token against the context (log axes), one colour per
    system, one line style per KV policy; a triangle on the x axis marks each system x policy's longest
    context that fits (its max_context, drawn when inside the plotted range), a cross an OOM point."""
    from matplotlib.lines import Line2D

    policies = list(by_policy)
    every = [r for rs in by_policy.values() for r in rs]
    models, systems = _ordered(every, "model"), _ordered(every, "system")
    colors = _colors(systems)
    styles = {p: POLICY_STYLES[i % len(POLICY_STYLES)] for i, p in enumerate(policies)}
    fig, axes = _axes(2 * len(models), "decode throughput and energy against context, per KV policy", columns=2)
    for m_i, model in enumerate(models):
        for ax, key, ylabel in ((axes[2 * m_i], "tokens_per_s", "decode throughput (tokens/s)"),
                                (axes[2 * m_i + 1], "energy_j_per_token", "energy per token (J/token)")):
            contexts = sorted({r["context"] for r in every if r["model"] == model})
            lo, hi = contexts[0], contexts[-1]
            for pol in policies:
                for s in systems:
                    rs = sorted((r for r in by_policy[pol] if r["model"] == model and r["system"] == s),
                                key=lambda r: r["context"])
                    fits = [r for r in rs if not r["oom"]]
                    ax.plot([r["context"] for r in fits], [r[key] for r in fits], linestyle=styles[pol],
                            color=colors[s], marker="o", markersize=3)
                    for r in rs:
                        if r["oom"]:
                            ax.plot(r["context"], 0.03, marker="x", color=colors[s],
                                    transform=ax.get_xaxis_transform())
                    mc = max((r["max_context"] for r in rs), default=0)
                    if lo <= mc <= hi:
                        ax.plot(mc, 0.0, marker="^", color=colors[s], markersize=7, clip_on=False,
                                transform=ax.get_xaxis_transform())
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(model)
            ax.set_xlabel("context (tokens); ^ longest that fits, x out of memory")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=colors[s], label=system_label(s)) for s in systems]
    handles += [Line2D([], [], color="0.3", linestyle=styles[p], label=f"policy: {p}") for p in policies]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False, fontsize=9)
    return fig


def write_policy_figure(by_policy: dict[str, list[dict]], path: str | Path) -> list[Path]:
    p = Path(path)
    _save(policy_figure(by_policy), p)
    return [p]
