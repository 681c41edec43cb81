"""The report as rich tables: one row per point with speedups, and geomean speedups per context.

A speedup compares like with like: decode tokens/s over base1 at the same model, context and precision,
or over base2 where base1 is out of memory (the paper's 100K comparison). When systems run at their own
default precisions, the references are also evaluated at the other precisions (`missing_references`), so
a W8A8 system is compared with base1 at W8A8, not at BF16. "KVNAND" means every swept system named
kvnand-*; "best" is the fastest of them per point. Flat CSV rows live here too, as the other tabular view.
"""

from __future__ import annotations

import math
from collections import defaultdict

from kvnand.scenario import context_label
from kvnand.study.sweep import SweepPoint, series

REFERENCES = ("base1", "base2")
SPEEDUP_RULE = "speedup = decode tokens/s over base1 at the row's precision (base2 where base1 is OOM)"


def _by_point(results: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    out: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for r in results:
        out[(r["model"], r["context"])][series(r)] = r
    return out


def index_points(results: list[dict], references: list[dict]) -> dict[tuple, dict]:
    """(system, model, context, precision, batch) -> record; batch None for a plain record."""
    return {(r["system"], r["model"], r["context"], r["precision"], r.get("batch")): r
            for r in [*references, *results]}


def missing_references(results: list[dict]) -> dict[str, list[SweepPoint]]:
    """Per precision, the reference points an equal-precision speedup needs that the sweep did not run
    (a reference ran at its own default precision while another system ran at a different one)."""
    have = index_points(results, [])
    refs = [s for s in REFERENCES if any(r["system"] == s for r in results)]
    out: dict[str, list[SweepPoint]] = defaultdict(list)
    for r in results:
        for ref in refs:
            bc = r.get("batch_contexts")
            p = SweepPoint(ref, r["model"], r["context"], r.get("batch"), tuple(bc) if bc else None)
            if (ref, r["model"], r["context"], r["precision"], r.get("batch")) not in have and \
                    p not in out[r["precision"]]:
                out[r["precision"]].append(p)
    return dict(out)


def _ratio(r: dict, ref: dict | None) -> float | None:
    if ref is None or r["oom"] or ref["oom"]:
        return None
    return r["tokens_per_s"] / ref["tokens_per_s"]


def speedup(r: dict, index: dict[tuple, dict]) -> tuple[float, str] | None:
    """(speedup, reference name) against the first reference that fits at this point and precision."""
    for name in REFERENCES:
        ref = index.get((name, r["model"], r["context"], r["precision"], r.get("batch")))
        if ref is not None and not ref["oom"]:
            x = _ratio(r, ref)
            return (x, name) if x is not None else None
    return None


def geomeans(results: list[dict], references: list[dict] = ()) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Columns ("best KVNAND / base1", "kvnand-c16 / base1", ...) and per context the geomean over
    models (each system against the reference at its own precision) as text, with the number of models
    counted when some are missing (OOM)."""
    index = index_points(results, list(references))
    points = _by_point(results)
    systems = list(dict.fromkeys(series(r) for r in results))
    variants = [s for s in systems if s.startswith("kvnand")]
    refs = [s for s in REFERENCES if any(r["system"] == s for r in results)]
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
                cands = [_ratio(peers[s], index.get((ref, m, c, peers[s]["precision"], peers[s].get("batch"))))
                         for s in (variants if v == "best" else [v]) if s in peers]
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


def _context_note(results: list[dict]) -> str | None:
    """Points beyond a model's trained (or scaled) context: said under the table, never silently run."""
    beyond: dict[tuple[str, int], set[int]] = defaultdict(set)
    for r in results:
        if r.get("beyond_model_context"):
            beyond[(r["model"], r["model_max_context"])].add(r["context"])
    if not beyond:
        return None
    lines = [f"  {m} (max {limit}) at {', '.join(context_label(c) for c in sorted(cs))}"
             for (m, limit), cs in beyond.items()]  # one short line per model: the note fits narrow terminals
    return "\n".join(["warning: beyond the model's max_position_embeddings (positions extrapolated):",
                      *lines])


def _extra_note(references: list[dict]) -> str | None:
    """Which references were also run at other precisions (they are not rows of the table)."""
    runs = defaultdict(set)
    for r in references:
        runs[r["system"]].add(r["precision"])
    if not runs:
        return None
    what = "; ".join(f"{s} also at {', '.join(sorted(p))}" for s, p in runs.items())
    return f"equal-precision references run for the speedups only: {what}"


TEXT_COLUMNS = ("bottleneck / OOM reason",)
OPTIONAL_COLUMNS = ("ms/token", "TTFT (s)", "split", "bottleneck / OOM reason")  # dropped last-first when narrow


def render(results: list[dict], references: list[dict] = ()):
    """The point table, the geomean table and a note on extra reference runs, as rich renderables."""
    from rich.table import Table

    index = index_points(results, list(references))
    modes = ", ".join(dict.fromkeys(r["mode"] for r in results))
    batched = any("batch" in r for r in results)
    policies = ", ".join(dict.fromkeys(r["config"]["kv_policy"]["name"] for r in results
                                       if "kv_policy" in r.get("config", {})))
    t = Table(title=f"kvnand report (decode, {modes} mode{', KV policy ' + policies if policies else ''})",
              caption=SPEEDUP_RULE + ("; tokens/s and ms/token per request, b=B: B sequences per step"
                                      if batched else "")
              + ("; with batch_contexts the context is the longest sequence's" if any(
                  "batch_contexts" in r for r in results) else ""))
    for col in ("model", "context", "system", "precision", "tokens/s", *(("aggregate tok/s",) if batched else ()),
                "ms/token", "J/token", "speedup", "TTFT (s)", "split", "bottleneck / OOM reason"):
        t.add_column(col, justify="left" if col in ("model", "system", "precision", "split", *TEXT_COLUMNS)
                     else "right")
    points = _by_point(results)
    for (model, ctx), peers in points.items():
        for i, r in enumerate(peers.values()):
            sp = speedup(r, index)
            t.add_row(
                model if i == 0 else "", context_label(ctx) if i == 0 else "", series(r), r["precision"],
                "[red]OOM[/red]" if r["oom"] else f"{r['tokens_per_s']:.2f}",
                *((_num(r.get("aggregate_tokens_per_s"), ".2f"),) if batched else ()),
                _num(r["latency_s"] and r["latency_s"] * 1e3, ".2f"), _num(r["energy_j_per_token"], ".3f"),
                f"{sp[0]:.2f}x {sp[1]}" if sp else "-", _num(r["ttft_s"], ".3g"),
                r["config"].get("split", ""), r["oom_reason"] if r["oom"] else (r["bottleneck"] or ""),
                end_section=i == len(peers) - 1,
            )
    out = [t]
    names, rows = geomeans(results, references)
    if names:  # one row per comparison, one column per context: narrow however many systems are swept
        g = Table(title="geomean decode speedup over models, each system against the reference at its own "
                        "precision (n/N: models where both fit)")
        g.add_column("speedup")
        for c, _ in rows:
            g.add_column(context_label(c), justify="right")
        for i, n in enumerate(names):
            g.add_row(n, *(cells[i] for _, cells in rows))
        out.append(g)
    notes = [n for n in (_context_note(results), _extra_note(list(references))) if n]
    return out, "\n".join(notes) or None


def csv_rows(results: list[dict]) -> tuple[list[str], list[dict]]:
    """Flat CSV columns (units in the names) and one row per point; breakdowns become `breakdown_s.<stage>`
    and `energy_breakdown_j.<part>` columns (the union over all points)."""
    head = ["system", "model", "context", "precision", "mode", "oom", "oom_reason", "tokens_per_s", "latency_s",
            "energy_j_per_token", "ttft_s", "bottleneck", "split", "max_context", "cost_usd"]
    if any("batch" in r for r in results):  # batched or speculative points: their step and aggregate rate
        head[8:8] = ["batch", "queries_per_step", "tokens_per_step", "step_latency_s", "aggregate_tokens_per_s"]
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
