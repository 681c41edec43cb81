"""Metrics of a design over its workload: what a study minimizes/maximizes and what constraints bound.

A design is evaluated at every workload point (model x context, fast mode). Per-point metrics are
aggregated with the workload weights: latency and energy per token as weighted means, power and
capacity use as the worst point, lifetime, read-disturb margin and the KV policy's useful fraction (the
share of the conversation's KV attention uses: an accuracy proxy) as the worst point. `metric@ctx`
(e.g. `latency_s@100k`) restricts a metric to the points at one context. Memory cost and the logic
area share are properties of the hardware alone.

Capacity is always a constraint (an out-of-memory point has no speed). A design that is not a valid
configuration (e.g. G2 >= dies) is recorded as infeasible with constraint `config`, not dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kvnand.errors import InputError

MINIMIZE, MAXIMIZE = "minimize", "maximize"


@dataclass(frozen=True)
class Metric:
    direction: str
    per_point: bool              # aggregated over workload points (else a property of the hardware)
    aggregate: str               # "mean" (workload-weighted), "max" or "min" over points
    meaning: str
    needs_reliability: bool = False


METRICS: dict[str, Metric] = {
    "latency_s": Metric(MINIMIZE, True, "mean", "decode latency per token of one request, workload-weighted mean"),
    "aggregate_tokens_per_s": Metric(MAXIMIZE, True, "mean", "decode tokens/s over every sequence of a batched "
                                     "or speculative step (tokens/s of the one request otherwise), "
                                     "workload-weighted mean"),
    "energy_j_per_token": Metric(MINIMIZE, True, "mean", "decode energy per token, workload-weighted mean"),
    "power_w": Metric(MINIMIZE, True, "max", "average decode power (energy/token x tokens/s), worst point"),
    "capacity_use": Metric(MINIMIZE, True, "max", "used / capacity of the fullest memory, worst point"),
    "lifetime_years": Metric(MAXIMIZE, True, "min", "flash lifetime under the usage profile, worst point", True),
    "read_disturb_margin": Metric(MAXIMIZE, True, "min", "read-disturb limit / max reads per block, worst point",
                                  True),
    "kv_useful_fraction": Metric(MAXIMIZE, True, "min", "share of the conversation's KV that attention uses "
                                 "under the KV policy (1 without one): the accuracy proxy, worst point"),
    "cost_usd": Metric(MINIMIZE, False, "", "memory cost: capacity x $/byte of every memory (kvnand.cost)"),
    "logic_area_fraction": Metric(MINIMIZE, False, "", "IFC logic area (planes x plane_area + global buffer) "
                                  "/ array die area"),
}


def split_key(key: str) -> tuple[str, str | None]:
    base, _, ctx = key.partition("@")
    return base, (ctx or None)


def metric(key: str) -> Metric:
    return METRICS[split_key(key)[0]]


def check_metric_key(key: str, space, error: Callable[..., InputError]) -> None:
    """Raise error(msg, ...) unless `key` is a known metric, optionally @ one of the workload's contexts."""
    from kvnand.scenario import parse_contexts

    base, ctx = split_key(key)
    if base not in METRICS:
        raise error("unknown metric", value=key, allowed=", ".join(METRICS) + " (per-point ones also as NAME@CONTEXT)")
    m = METRICS[base]
    if ctx is not None:
        if not m.per_point:
            raise error(f"'{base}' does not depend on the context", value=key)
        try:
            (n,) = parse_contexts(ctx, key)
        except (InputError, ValueError):
            raise error("not a context length after '@'", value=key) from None
        if n not in space.contexts:
            raise error("context not in the workload", value=key, allowed=", ".join(map(str, space.contexts)))


# ---------------------------------------------------------------------- evaluation (cached per process)
@lru_cache(maxsize=8192)
def _point(system: str, model: str, context: int, precision: str | None, overrides: tuple,
           decode: tuple = ()) -> dict:
    import kvnand

    return kvnand.evaluate(system, model, context, precision=precision, overrides=dict(overrides), **dict(decode))


# (system, model, context, precision, overrides, decode) -> record of the designs `prefetch` evaluated together
_PREFETCHED: dict[tuple, dict] = {}
# (system, model, context, precision, overrides, profile) -> the decode rate reliability needs there (NaN: none)
_RATES: dict[tuple, float] = {}


def prefetch(space, designs: list[dict[str, Any]]) -> None:
    """Evaluate the workload points of these designs (given by their parameters) together: the designs of one
    system and precision whose overrides differ in numbers only are stacked in one kvnand.evaluate_many call
    per model (every design x context in one walk), and each point's workload fields are read off the columns;
    evaluate_design then reads them instead of calling evaluate() point by point. Replaces what an earlier call
    prefetched. A design that is not a valid configuration is left to evaluate_design, which records why."""
    from kvnand.config.stack import stack_shape

    _PREFETCHED.clear()
    _RATES.clear()
    by_model: dict[str, list[int]] = {}
    for p in space.points:
        by_model.setdefault(p.model, []).append(p.context)
    groups: dict[tuple, list] = {}
    for d in dict.fromkeys(space.design(params) for params in designs):
        if not d.decode:  # a batched or speculative step is evaluated point by point
            groups.setdefault((d.system, d.precision, stack_shape(dict(d.overrides))), []).append(d)
    needs = _needs_reliability(space)
    weights = {(p.model, p.context): p.weight for p in space.points}
    for (system, precision, _), ds in groups.items():
        for model, contexts in by_model.items():
            contexts = list(dict.fromkeys(contexts))
            _prefetch_group(system, model, contexts, precision, ds, [weights[(model, c)] for c in contexts], needs)
            if needs:
                _prefetch_rates(system, model, contexts, precision, ds, space.spec.workload.profile)


def _needs_reliability(space) -> bool:
    return any(metric(k).needs_reliability for k in (*space.spec.objectives, *space.spec.constraints))


def _prefetch_group(system: str, model: str, contexts: list[int], precision, ds: list, weights: list[float],
                    reliability: bool) -> None:
    """The points of designs `ds` at `contexts` of `model` (with their workload `weights`), from one
    evaluate_many call (one per design when one of them is not a valid configuration)."""
    from kvnand.columnar import evaluate_many

    try:
        cols = evaluate_many(system, model, contexts, precisions=precision, overrides=[dict(d.overrides) for d in ds],
                             breakdowns=False)
    except InputError:
        if len(ds) > 1:
            for d in ds:
                _prefetch_group(system, model, contexts, precision, [d], weights, reliability)
        return
    n = len(contexts)
    numbers = {k: cols[k].tolist() for k in ("oom", "capacity_use", "tokens_per_s", "latency_s", "energy_j_per_token",
                                             "power_w")}
    for i, d in enumerate(ds):
        config = {k: v for k, v in cols["config"][i * n].items() if k in CONFIG_KEYS}  # the design's own
        for j, (c, w) in enumerate(zip(contexts, weights, strict=True)):
            _PREFETCHED[(d.system, model, c, d.precision, d.overrides, d.decode)] = \
                _column_point(cols, numbers, i * n + j, config, w, reliability)


def _prefetch_rates(system: str, model: str, contexts: list[int], precision, ds: list, profile) -> None:
    """The decode rate reliability needs at each point (the design's at the session's mean decode context, as
    evaluate_reliability measures it), from one evaluate_many call over those contexts."""
    from kvnand.columnar import evaluate_many
    from kvnand.config.loader import is_policy_key
    from kvnand.reliability.disturb import system_overrides
    from kvnand.reliability.profile import get_profile, session

    prof = get_profile(profile, dict(ds[0].overrides))
    if any(get_profile(profile, dict(d.overrides)) != prof or any(is_policy_key(k) for k, _ in d.overrides)
           for d in ds) or prof.tokens_per_s is not None:
        return  # designs that set the profile differently, or whose KV policy may pick a reclaim: one by one
    at = {c: session(prof, c).mean_decode_context for c in contexts}
    means = sorted(set(at.values()))
    column = {m: j for j, m in enumerate(means)}
    try:
        cols = evaluate_many(system, model, means, precisions=precision, breakdowns=False,
                             overrides=[system_overrides(dict(d.overrides)) for d in ds])
    except InputError:
        return
    rate = cols["tokens_per_s"].reshape(len(ds), len(means))
    for i, d in enumerate(ds):
        for c in contexts:
            _RATES[(d.system, model, c, d.precision, d.overrides, profile)] = float(rate[i, column[at[c]]])


def _column_point(cols: dict, numbers: dict, i: int, config: dict, weight: float, reliability: bool) -> dict:
    """The report's workload point i of evaluate_many columns, in POINT_KEYS order (`numbers`: their numeric
    columns as lists), the reliability entries left for _point_report to fill where it fits."""
    oom = numbers["oom"][i]
    rate = None if oom else numbers["tokens_per_s"][i]
    point = {"system": cols["system"][i], "model": cols["model"][i], "context": int(cols["context"][i]),
             "precision": cols["precision"][i], "oom": oom, "oom_reason": cols["oom_reason"][i], "weight": weight,
             "tokens_per_s": rate, "latency_s": None if oom else numbers["latency_s"][i],
             "energy_j_per_token": None if oom else numbers["energy_j_per_token"][i],
             "power_w": None if oom else numbers["power_w"][i], "capacity_use": numbers["capacity_use"][i],
             "bottleneck": cols["bottleneck"][i]}
    if reliability and not oom:
        point.update(lifetime_years=None, read_disturb_margin=None)
    point.update(aggregate_tokens_per_s=rate,  # one request: its own rate
                 kv_useful_fraction=None if oom else 1.0, config=config)
    return point


def _point_fields(rec: dict) -> dict:
    """What a design's report needs of one evaluate() record (its workload-point fields, before reliability)."""
    out = {k: rec[k] for k in POINT_KEYS if k in rec}
    out.setdefault("aggregate_tokens_per_s", rec["tokens_per_s"])  # one request: its own rate
    out["capacity_use"] = max(s["used_bytes"] / s["capacity_bytes"] for s in rec["capacity"].values())
    out["kv_useful_fraction"] = rec["kv_policy"]["useful_fraction"] if "kv_policy" in rec else \
        (None if rec["oom"] else 1.0)
    out["config"] = {k: rec["config"][k] for k in CONFIG_KEYS if k in rec["config"]}
    return out


@lru_cache(maxsize=8192)
def _reliability(system: str, model: str, context: int, precision: str | None, overrides: tuple,
                 profile: str) -> dict:
    # the point's own evaluate() record (cached above) gives an ':auto' system its split
    key = (system, model, context, precision, overrides, ())
    from kvnand.evaluation import evaluate_reliability

    return evaluate_reliability(system, model, context, precision=precision, profile=profile,
                                overrides=dict(overrides), record=_PREFETCHED.get(key) or _point(*key),
                                rate=_RATES.get((system, model, context, precision, overrides, profile)),
                                lifetime_only=True)


@lru_cache(maxsize=1024)
def _hardware(system: str, overrides: tuple) -> dict:
    from kvnand.config.loader import load_system
    from kvnand.cost import memories_of

    s = load_system(system, dict(overrides))
    area = None
    lg = s.flash.logic if s.flash is not None else None
    if lg is not None and lg.die_area > 0:
        area = (s.flash.die.geometry.planes * lg.plane_area + lg.global_buffer_area) / lg.die_area
    return {"cost_usd": memories_of(s)["cost_usd"], "logic_area_fraction": area}


@dataclass
class Evaluation:
    """One design's result: objective values (inf = undefined, worst), constraint violations (<= 0 is
    feasible, normalized by the bound), the violated constraints in words, and the full report."""

    values: list[float]
    constraints: dict[str, float]
    violated: list[str]
    metrics: dict[str, float | None]
    report: dict

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())


def constraint_names(space) -> list[str]:
    return ["config", "capacity", *space.spec.constraints]


def evaluate_design(space, params: dict[str, Any]) -> Evaluation:
    d = space.design(params)
    keys = list(dict.fromkeys([*space.spec.objectives, *space.spec.constraints]))
    try:
        needs = _needs_reliability(space)
        points = [_point_report(space, d, p, needs) for p in space.points]
        hw = _hardware(d.system, d.overrides)
    except InputError as exc:  # an impossible combination, e.g. G2 >= dies
        cons = dict.fromkeys(constraint_names(space), 0.0)
        cons["config"] = 1.0
        return Evaluation([worst(k) for k in space.spec.objectives], cons, [f"config: {exc}"],
                          {}, jsonable({"design": d.as_dict(), "params": params, "error": str(exc)}))
    metrics: dict[str, float | None] = dict(hw)
    always = [k for k, m in METRICS.items() if m.per_point and not m.needs_reliability]
    for key in dict.fromkeys(always + keys):
        if METRICS[split_key(key)[0]].per_point:
            metrics[key] = _aggregate(space, key, points)
    cons, violated = {"config": 0.0}, []
    cons["capacity"] = metrics["capacity_use"] - 1.0
    oom = [p for p in points if p["oom"]]
    if oom:
        first = oom[0]
        violated.append(f"capacity: {len(oom)} of {len(points)} workload points out of memory, e.g. "
                        f"{first['model']} @{first['context']}: {first['oom_reason']}")
    for key, bound in space.spec.constraints.items():
        v = metrics.get(key)
        limit = bound.max if bound.max is not None else bound.min
        if v is None:  # undefined because every point is out of memory (already a violation)
            cons[key] = 0.0
            continue
        excess = (v - limit) if bound.max is not None else (limit - v)
        cons[key] = excess / (abs(limit) or 1.0)
        if excess > 0:
            violated.append(f"{key}: {v:.4g} {'>' if bound.max is not None else '<'} {limit:g} "
                            f"({'max' if bound.max is not None else 'min'})")
    values = [worst(k) if metrics.get(k) is None else float(metrics[k]) for k in space.spec.objectives]
    report = jsonable({"design": d.as_dict(), "params": params, "metrics": metrics, "constraints": cons,
                       "violated": violated})
    report["points"] = [_stored(p) for p in points]
    return Evaluation(values, cons, violated, metrics, report)


# what a trial keeps of each workload point (optuna stores it per trial: the full record is ~30x larger)
POINT_KEYS = ("system", "model", "context", "precision", "oom", "oom_reason", "weight", "tokens_per_s", "latency_s",
              "energy_j_per_token", "power_w", "capacity_use", "bottleneck", "lifetime_years", "read_disturb_margin",
              "batch", "queries_per_step", "aggregate_tokens_per_s", "kv_useful_fraction")
CONFIG_KEYS = ("dies", "g1_dies", "g2_dies", "kv_store", "split")


# what a `kvnand dse run` trial stores of each workload point: which ran out of memory (`kvnand dse show`
# re-evaluates the design for everything else)
STORED_POINT_KEYS = ("model", "context", "oom")


def compact_report(report: dict) -> dict:
    """The record a study trial keeps: the design, its metrics and constraints, which points ran out of
    memory (about a fifth of the full report on the 8-die space)."""
    out = {k: v for k, v in report.items() if k not in ("points", "params")}
    if "points" in report:
        out["points"] = [{k: p[k] for k in STORED_POINT_KEYS} for p in report["points"]]
    return out


def _compact(rec: dict) -> dict:
    """A workload point of the report: POINT_KEYS in order, then the config's CONFIG_KEYS."""
    out = {k: rec[k] for k in POINT_KEYS if k in rec}
    out["config"] = rec["config"]
    return out


def _stored(point: dict) -> dict:
    """The point as jsonable() stores it (inf and NaN become None; in place, once it has been aggregated)."""
    for k, v in point.items():
        if isinstance(v, float) and not math.isfinite(v):
            point[k] = None
    return point


def _point_report(space, d, p, reliability: bool) -> dict:
    """The report's workload point `p` of design `d`: prefetched (a point of this chunk's), else from the point's
    evaluate() record; with the flash lifetime and read-disturb margin where it fits when `reliability`."""
    key = (d.system, p.model, p.context, d.precision, d.overrides, d.decode)
    rec = _PREFETCHED.get(key)
    prefetched = rec is not None
    if not prefetched:
        rec = _point_fields(_point(*key))
        rec["weight"] = p.weight
    if reliability and not rec["oom"]:
        r = _reliability(d.system, p.model, p.context, d.precision, d.overrides, space.spec.workload.profile)
        rec["lifetime_years"] = r.get("lifetime_years")
        reads, limit = r.get("max_reads_per_block"), r.get("read_disturb_limit")
        rec["read_disturb_margin"] = (limit / reads if reads else math.inf) if limit else None
    if prefetched:  # the report keeps it: a second request of this point is answered anew
        del _PREFETCHED[key]
        return rec
    return _compact(rec)


def _aggregate(space, key: str, points: list[dict]) -> float | None:
    from kvnand.scenario import parse_contexts

    base, ctx = split_key(key)
    if ctx is not None:
        (n,) = parse_contexts(ctx, key)
        points = [p for p in points if p["context"] == n]
    vals = [(p[base], p["weight"]) for p in points if p.get(base) is not None]
    if not vals:
        return None
    how = METRICS[base].aggregate
    if how == "mean":
        return sum(v * w for v, w in vals) / sum(w for _, w in vals)
    return max(v for v, _ in vals) if how == "max" else min(v for v, _ in vals)


def worst(key: str) -> float:
    return math.inf if metric(key).direction == MINIMIZE else -math.inf


def jsonable(obj: Any) -> Any:
    """A JSON round trip: what optuna stores as a user attribute must serialize (inf/nan become null)."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.loads(json.dumps(clean(obj), default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# ---------------------------------------------------------------------- Pareto dominance
def to_loss(values: list[float], directions: list[str]) -> list[float]:
    return [v if d == MINIMIZE else -v for v, d in zip(values, directions, strict=True)]


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    la, lb = to_loss(a, directions), to_loss(b, directions)
    return all(x <= y for x, y in zip(la, lb, strict=True)) and any(x < y for x, y in zip(la, lb, strict=True))


def non_dominated(values: list[list[float]], directions: list[str]) -> list[bool]:
    """Mask of the points no other point dominates. The points are taken in lexicographic order of their
    losses, so whatever dominates a point comes before it, and a point is dominated exactly when a point
    already on the front dominates it: O(points x front) time and O(front) memory (a grid of 10^5 designs
    would need 10^10 pairs the all-pairs way)."""
    import numpy as np

    if not values:
        return []
    loss = np.array([to_loss(v, directions) for v in values], dtype=float)
    keep = np.zeros(len(loss), dtype=bool)
    front = np.empty((0, loss.shape[1]))
    for i in np.lexsort(loss.T[::-1]):
        p = loss[i]
        if len(front) and ((front <= p).all(axis=1) & (front < p).any(axis=1)).any():
            continue
        keep[i] = True
        front = np.vstack([front, p])
    return keep.tolist()


def improvement(better: list[float], worse: list[float], directions: list[str]) -> list[float]:
    """Relative gain of `better` over `worse` per objective (0.2 = 20 % lower latency or higher lifetime)."""
    out = []
    for b, w, d in zip(better, worse, directions, strict=True):
        gain = (w - b) if d == MINIMIZE else (b - w)
        out.append(gain / abs(w) if w not in (0, math.inf, -math.inf) else 0.0)
    return out


def stored_constraints(trial) -> list[float]:
    """The constraint values the objective stored on a (frozen) trial, in `constraint_names` order (optuna
    reads our list and the one-key-per-constraint records of studies made before it)."""
    return list(trial.constraints.values())
