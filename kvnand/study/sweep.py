"""The grid of a report: parsing and checking its axes, and evaluating every point (cached, with progress).

Points run model-major (model, then context, then system) so the table reads in groups. Each computed
point is stored in the cache before the next starts, so an interrupted sweep resumes.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from kvnand.errors import InputError
from kvnand.result import Result
from kvnand.study.cache import Cache

# The paper's comparison (KVNAND Sec. V, Fig. 12): what `kvnand report` runs with no arguments.
PAPER_SYSTEMS = ("base1", "base2", "kvnand-c16", "kvnand-d:auto")
PAPER_MODELS = ("opt-30b", "llama2-7b", "llama3.1-8b", "llama3.1-70b", "mixtral-8x7b")
PAPER_CONTEXTS = (128, 1000, 10_000, 100_000)


@dataclass(frozen=True)
class SweepPoint:
    system: str
    model: str
    context: int
    batch: int | None = None  # sequences per decode step (None: the plain, unbatched record)
    batch_contexts: tuple[int, ...] | None = None  # each sequence's context (the longest is `context`)


def series(record: dict) -> str:
    """The system of a record as a table row or figure series: 'kvnand-c16' or, batched, 'kvnand-c16 b=4'."""
    return record["system"] + (f" b={record['batch']}" if "batch" in record else "")


def check_inputs(systems: list[str], models: list[str], precision: str | None, overrides: dict) -> None:
    """Fail on unknown names and --set paths before any point runs (values are validated by the first point)."""
    from kvnand.config.loader import apply_overrides, resolve_system_tree
    from kvnand.workload.kv_policy import resolve_policy
    from kvnand.workload.model import load_model
    from kvnand.workload.precision import get_precision

    def as_option(exc: InputError, option: str, value: str) -> InputError:
        # the loaders name their own key ("system", "model"); on the command line it is the option
        if exc.key in ("system", "model", "precision"):
            return InputError(exc.detail, key=option, value=value, allowed=exc.allowed)
        return exc

    for name in systems:
        try:
            tree, src = resolve_system_tree(name.removesuffix(":auto"))
        except InputError as exc:
            raise as_option(exc, "--systems", name) from None
        apply_overrides(tree, overrides, src.default_file)
    for name in models:
        try:
            load_model(name)
        except InputError as exc:
            raise as_option(exc, "--models", name) from None
    if precision is not None:
        try:
            get_precision(precision)
        except InputError as exc:
            raise as_option(exc, "--precision", precision) from None
    resolve_policy(overrides)  # a bad policy name or field fails here, before any point


def grid(systems: list[str], models: list[str], contexts: list[int],
         batches: list[int | None] = (None,), batch_contexts: tuple[int, ...] | None = None) -> list[SweepPoint]:
    """Every point; with `batch_contexts` (cycled to each batch size: sequence i has the (i mod n)-th) the one
    context is their longest."""
    if batch_contexts is not None:
        from kvnand.scenario import cycle_contexts

        return [SweepPoint(s, m, max(batch_contexts), b, cycle_contexts(batch_contexts, b))
                for m in models for s in systems for b in batches]
    return [SweepPoint(s, m, c, b) for m in models for c in contexts for s in systems for b in batches]


def public(record: dict) -> dict:
    """The record as JSON sees it (Result.to_json: tuples as lists, numpy scalars as floats, no NaN)."""
    return Result.of(record).to_json()


def run(points: list[SweepPoint], *, precision: str | None, mode: str, overrides: dict, cache: Cache,
        refresh: str | None = None, spec: dict | None = None, progress=None) -> list[dict]:
    """Evaluate every point (cache first), with a progress bar when `progress` is given. `spec`: the
    speculative decoding keywords of evaluate() (spec_draft, spec_k, spec_accept) for every point. The plain
    points a (system, model) pair misses are evaluated together (kvnand.evaluate_many), batched or
    speculative ones one by one; each is stored as soon as it is computed. `progress`: a progress-bar factory
    (label, total) -> context yielding update(done, ...) or None (the CLI passes kvnand.present.terminal's)."""
    from kvnand.columnar import evaluate_many, records
    from kvnand.evaluation import evaluate

    spec = spec or {}
    decodes = [{"batch": p.batch, **spec, **({"batch_contexts": list(p.batch_contexts)} if p.batch_contexts else {})}
               if p.batch is not None or spec else None for p in points]
    keys = [cache.key(p.system, p.model, p.context, precision, mode, overrides, refresh, d)
            for p, d in zip(points, decodes, strict=True)]
    out: list = [cache.get(k) for k in keys]
    missing: dict[tuple[str, str, bool], list[int]] = {}
    for i, p in enumerate(points):
        if out[i] is None:
            missing.setdefault((p.system, p.model, decodes[i] is None), []).append(i)
    with (progress("report", len(points)) if progress else nullcontext(None)) as update:
        done = len(points) - sum(len(v) for v in missing.values())
        for (system, model, plain), idx in missing.items():
            if update:
                update(done, description=f"{model} {system} ({len(idx)} points)")
            if plain:
                contexts = list(dict.fromkeys(points[i].context for i in idx))
                recs = dict(zip(contexts, records(evaluate_many(system, model, contexts, precisions=precision,
                                                                overrides=[overrides], mode=mode, refresh=refresh)),
                                strict=True))
            for i in idx:
                out[i] = public(recs[points[i].context] if plain else
                                evaluate(system, model, points[i].context, precision=precision, mode=mode,
                                         overrides=overrides, refresh=refresh, **decodes[i]))
                cache.put(keys[i], out[i])
            done += len(idx)
    return out
