"""The report as rich tables: one row per point with speedups, and geomean speedups per context.

Speedups are decode tokens/s over base1 at the same model and context, or over base2 where base1 is out
of memory (the paper's 100K comparison). "KVNAND" means every swept system named kvnand-*; "best" is
the fastest of them per point. Flat CSV rows live here too, as the other tabular view.
"""

from __future__ import annotations

import math
from collections import defaultdict

from kvnand.report.sweep import context_label

REFERENCES = ("base1", "base2")


def _by_point(results: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    out: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for r in results:
        out[(r["model"], r["context"])][r["system"]] = r
    return out


def _ratio(r: dict, ref: dict | None) -> float | None:
    if ref is None or r["oom"] or ref["oom"]:
        return None
    return r["tokens_per_s"] / ref["tokens_per_s"]


def speedup(r: dict, peers: dict[str, dict]) -> tuple[float, str] | None:
    """(speedup, reference name) against the first reference that fits at this point."""
    for name in REFERENCES:
        ref = peers.get(name)
        if ref is not None and not ref["oom"]:
            x = _ratio(r, ref)
            return (x, name) if x is not None else None
    return None


def geomeans(results: list[dict]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Columns ("best KVNAND / base1", "kvnand-c16 / base1", ...) and per context the geomean over
    models as text, with the number of models counted when some are missing (OOM)."""
    points = _by_point(results)
    systems = list(dict.fromkeys(r["system"] for r in results))
    variants = [s for s in systems if s.startswith("kvnand")]
    refs = [s for s in REFERENCES if s in systems]
    models = list(dict.fromkeys(r["model"] for r in results))
    contexts = list(dict.fromkeys(r["context"] for r in results))
    columns = [(ref, v) for ref in refs for v in (["best"] if len(variants) > 1 else []) + variants]
    rows = []
    for c in contexts:
        cells = []
        for ref, v in columns:
            xs = []
            for m in models:
                peers = points.get((m, c), {})
                cands = [_ratio(peers[s], peers.get(ref)) for s in (variants if v == "best" else [v]) if s in peers]
                cands = [x for x in cands if x is not None]
                if cands:
                    xs.append(max(cands))
            if not xs:
                cells.append("-")
                continue
            g = math.exp(sum(math.log(x) for x in xs) / len(xs))
            cells.append(f"{g:.2f}x" + (f" ({len(xs)}/{len(models)})" if len(xs) < len(models) else ""))
        rows.append((c, cells))
    names = [f"{'best KVNAND' if v == 'best' else v} / {ref}" for ref, v in columns]
    return names, rows


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def render(results: list[dict]):
    """The point table and the geomean table, as rich renderables."""
    from rich.table import Table

    precisions = ", ".join(dict.fromkeys(r["precision"] for r in results))
    modes = ", ".join(dict.fromkeys(r["mode"] for r in results))
    t = Table(title=f"kvnand report (decode, {precisions}, {modes} mode)")
    for col in ("model", "context", "system", "tokens/s", "ms/token", "J/token", "speedup", "TTFT (s)",
                "split", "bottleneck / OOM reason"):
        t.add_column(col, justify="left" if col in ("model", "system", "split", "bottleneck / OOM reason")
                     else "right", overflow="fold")
    points = _by_point(results)
    for (model, ctx), peers in points.items():
        for i, r in enumerate(peers.values()):
            sp = speedup(r, peers)
            t.add_row(
                model if i == 0 else "", context_label(ctx) if i == 0 else "", r["system"],
                "[red]OOM[/red]" if r["oom"] else f"{r['tokens_per_s']:.2f}",
                _num(r["latency_s"] and r["latency_s"] * 1e3, ".2f"), _num(r["energy_j_per_token"], ".3f"),
                f"{sp[0]:.2f}x {sp[1]}" if sp else "-", _num(r["ttft_s"], ".3g"),
                r["config"].get("split", ""), r["oom_reason"] if r["oom"] else (r["bottleneck"] or ""),
                end_section=i == len(peers) - 1,
            )
    names, rows = geomeans(results)
    if not names:
        return [t]
    g = Table(title="geomean decode speedup over models (n/N: models where both fit)")
    g.add_column("context", justify="right")
    for n in names:
        g.add_column(n, justify="right")
    for c, cells in rows:
        g.add_row(context_label(c), *cells)
    return [t, g]


def csv_rows(results: list[dict]) -> tuple[list[str], list[dict]]:
    """Flat CSV columns (units in the names) and one row per point; breakdowns become `breakdown_s.<stage>`
    and `energy_breakdown_j.<part>` columns (the union over all points)."""
    head = ["system", "model", "context", "precision", "mode", "oom", "oom_reason", "tokens_per_s", "latency_s",
            "energy_j_per_token", "ttft_s", "bottleneck", "split", "max_context"]
    nested = ("breakdown_s", "energy_breakdown_j")
    extra = {n: list(dict.fromkeys(k for r in results for k in r.get(n, {}))) for n in nested}
    columns = head + [f"{n}.{k}" for n in nested for k in extra[n]]
    rows = []
    for r in results:
        row = {k: r.get(k) for k in head}
        row["split"] = r["config"].get("split")
        for n in nested:
            row.update({f"{n}.{k}": r.get(n, {}).get(k) for k in extra[n]})
        rows.append(row)
    return columns, rows
