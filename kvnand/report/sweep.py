"""The grid of a report: parsing and checking its axes, and evaluating every point (cached, with progress).

Points run model-major (model, then context, then system) so the table reads in groups. Each computed
point is stored in the cache before the next starts, so an interrupted sweep resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kvnand.errors import InputError
from kvnand.report.cache import Cache
from kvnand.scenario import context_label

# The paper's comparison (KVNAND Sec. V, Fig. 12): what `kvnand report` runs with no arguments.
PAPER_SYSTEMS = ("base1", "base2", "kvnand-c16", "kvnand-d:auto")
PAPER_MODELS = ("opt-30b", "llama2-7b", "llama3.1-8b", "llama3.1-70b", "mixtral-8x7b")
PAPER_CONTEXTS = (128, 1000, 10_000, 100_000)


@dataclass(frozen=True)
class Point:
    system: str
    model: str
    context: int
    batch: int | None = None  # sequences per decode step (None: the plain, unbatched record)


def series(record: dict) -> str:
    """The system of a record as a table row or figure series: 'kvnand-c16' or, batched, 'kvnand-c16 b=4'."""
    return record["system"] + (f" b={record['batch']}" if "batch" in record else "")


def check_inputs(systems: list[str], models: list[str], precision: str | None, overrides: dict) -> None:
    """Fail on unknown names and --set paths before any point runs (values are validated by the first point)."""
    from kvnand.config.loader import apply_overrides, resolve_system_tree
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


def grid(systems: list[str], models: list[str], contexts: list[int],
         batches: list[int | None] = (None,)) -> list[Point]:
    return [Point(s, m, c, b) for m in models for c in contexts for s in systems for b in batches]


def public(record: dict) -> dict:
    """The record as JSON sees it: no `_` keys (timeline, program), tuples as lists, numpy scalars as floats."""
    return json.loads(json.dumps({k: v for k, v in record.items() if not k.startswith("_")}, default=float))


def run(points: list[Point], *, precision: str | None, mode: str, overrides: dict, cache: Cache,
        refresh: str | None = None, spec: dict | None = None) -> list[dict]:
    """Evaluate every point (cache first); a progress bar on stderr when it is a terminal. `spec`: the
    speculative decoding keywords of evaluate() (spec_draft, spec_k, spec_accept) for every point."""
    spec = spec or {}
    from kvnand.report.terminal import progress_bar

    out = []
    with progress_bar("report", len(points)) as update:
        for p in points:
            if update:
                update(len(out), description=f"{p.model} {context_label(p.context)} {p.system}")
            decode = {"batch": p.batch, **spec} if p.batch is not None or spec else None
            key = cache.key(p.system, p.model, p.context, precision, mode, overrides, refresh, decode)
            record = cache.get(key)
            if record is None:
                from kvnand.evaluation import evaluate

                record = public(evaluate(p.system, p.model, p.context, precision=precision, mode=mode,
                                         overrides=overrides, refresh=refresh, **(decode or {})))
                cache.put(key, record)
            out.append(record)
    return out
