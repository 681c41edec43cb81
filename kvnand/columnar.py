"""evaluate() over many points at once, as columns (`kvnand.evaluate_many`).

A sweep's designs that differ only in numbers (dies, a G1/G2 split, a page size: any override that leaves the
lowering's structure alone) are each resolved and validated, then stacked (kvnand.config.stack) into one system
whose differing numbers are arrays over the designs. That system is lowered once, with the contexts as a second
array axis, and walked once by the fast engine: every number of the result is an array over designs x contexts,
by the same rules as evaluate()'s (kvnand.program's array leaves). `kvnand-d:auto` stacks every split of every
design and ranks them per context in that one walk.

What does not depend on the context (validation, the capacity each memory has, the on-chip buffers a design
overflows, the record's config, memories and cost) is each design's own, from its cached Design. Event modes,
refresh and KV policies (whose eviction and selection branch on the context) are evaluated by evaluate() point
by point; so is any design the array path cannot take (a lowering branch on a swept number), so that a new
feature of the lowering never breaks a sweep: stacked designs that cannot be walked together are first tried one
design at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from kvnand.config.loader import is_policy_key
from kvnand.config.stack import NotStackable, stack, stack_shape
from kvnand.energy.tables import price
from kvnand.errors import InputError
from kvnand.evaluation import MODES, Design, _auto_dies, _unmeasured, designs, evaluate, kv_page_reads
from kvnand.lowering.step import Lowering
from kvnand.mapping.capacity import Store, check_many
from kvnand.program import count_actions
from kvnand.result import Result
from kvnand.scenario import split_auto
from kvnand.sim import fast

SCALARS = ("tokens_per_s", "latency_s", "energy_j_per_token", "ttft_s", "power_w")
BREAKDOWNS = ("breakdown_s", "breakdown_by_resource_s", "busy_s", "energy_breakdown_j", "power_breakdown_w",
              "utilization", "actions")
# what an array lowering raises where it meets a branch on a swept number (or a scalar-only function)
_NOT_BATCHABLE = (NotStackable, TypeError, ValueError, IndexError)


def evaluate_many(system: str | list[str], model: str | list[str], contexts, *,
                  precisions: str | list[str | None] | None = None, overrides: list[dict] | dict | None = None,
                  mode: str = "fast", prefill_tokens: int | None = None, refresh: str | None = None,
                  breakdowns: bool = True) -> dict:
    """evaluate() at every point of systems x models x overrides x precisions x contexts (contexts vary
    fastest), as columns: the same fields as evaluate()'s records, one entry per point.

    `overrides`: a list of override dicts, or a dict of lists (their product: {"dies": [8, 16], "g2_dies":
    [1, 2]}). Columns: numbers as numpy arrays (NaN where a point is out of memory, as evaluate() gives None),
    strings as lists (oom_reason None where it fits), each breakdown (breakdown_s, busy_s, actions, ...) as a
    mapping of arrays (0.0 at points without that entry; each array built when first read), `overrides` as a
    list of dicts, `fallback` (bool array: the point was evaluated by evaluate() itself), and `capacity_use`
    (used / capacity of the fullest memory, out of memory above 1; not a record field). `records(columns)`
    gives evaluate()'s records. `breakdowns=False` leaves the breakdowns empty (a sweep that needs the numbers
    only; records() then refuses).

    Designs that differ in numbers only are stacked and walked together over all their contexts (see the
    module's docstring); the event modes, `refresh`, KV policies and any design the array path cannot lower
    fall back to evaluate() point by point."""
    import numpy as np

    if mode not in MODES:
        raise InputError("unknown mode", key="mode", value=mode, allowed=", ".join(MODES))
    ctx = _contexts(contexts)
    systems = [system] if isinstance(system, str) else list(system)
    models = [model] if isinstance(model, str) else list(model)
    precs = [precisions] if precisions is None or isinstance(precisions, str) else list(precisions)
    variants = _variants(overrides)
    n_ctx, per_variant = len(ctx), len(precs) * len(ctx)
    pieces = []
    for (si, s), (mi, m), (pi, p) in itertools.product(enumerate(systems), enumerate(models), enumerate(precs)):
        base = (si * len(models) + mi) * len(variants) * per_variant + pi * n_ctx
        for members in _shapes(variants):
            starts = np.array([base + v * per_variant for v in members], dtype=np.int64)
            chosen = [variants[v] for v in members]
            if mode != "fast" or refresh or any(is_policy_key(k) for k in chosen[0]):
                pieces += [(start + np.arange(n_ctx), _scalar_group(s, m, ctx, p, mode, ov, prefill_tokens, refresh))
                           for start, ov in zip(starts, chosen, strict=True)]
            else:
                pieces += _stacked_pieces(s, m, ctx, p, chosen, starts, prefill_tokens, breakdowns)
    cols = _columns(pieces, len(systems) * len(models) * len(variants) * per_variant, n_ctx)
    if not breakdowns:
        cols.update({f: {} for f in BREAKDOWNS}, _pieces=None)
    return cols


def _contexts(contexts):
    import numpy as np

    ctx = np.atleast_1d(np.asarray(contexts))
    if ctx.ndim != 1 or ctx.dtype == bool or not np.issubdtype(ctx.dtype, np.integer) or (ctx.size and ctx.min() < 1):
        raise InputError("contexts must be positive whole numbers of tokens", key="contexts",
                         value=str(contexts)[:80])
    return ctx.astype(np.int64)


def _variants(overrides) -> list[dict]:
    if overrides is None:
        return [{}]
    if isinstance(overrides, dict):
        keys = list(overrides)
        values = [v if isinstance(v, (list, tuple)) else [v] for v in overrides.values()]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
    return [dict(o) for o in overrides]


def _shapes(variants: list[dict]) -> list[list[int]]:
    """The variants in groups that may stack (config.stack.stack_shape)."""
    groups: dict[tuple, list[int]] = {}
    for i, ov in enumerate(variants):
        groups.setdefault(stack_shape(ov), []).append(i)
    return list(groups.values())


def _scalar_group(system, model, ctx, precision, mode, overrides, prefill_tokens, refresh) -> dict:
    recs = [evaluate(system, model, int(c), precision=precision, mode=mode, overrides=overrides,
                     prefill_tokens=prefill_tokens, refresh=refresh) for c in ctx]
    return {"records": recs, "n": len(recs), "overrides": overrides}


def _stacked_pieces(system, model, ctx, precision, variants, starts, prefill_tokens, breakdowns) -> list[tuple]:
    """[(positions, group)] of designs that differ in numbers only: one stacked walk, or, where the array path
    cannot take them together, one per design, or evaluate() point by point."""
    import numpy as np

    stem, auto = split_auto(system)
    cols = np.arange(len(ctx))
    try:
        if auto:
            return _auto_pieces(stem, model, ctx, precision, variants, starts, prefill_tokens, breakdowns)
        g = _walk_stack(system, designs(system, model, precision, variants), variants, ctx, prefill_tokens,
                        breakdowns=breakdowns)
        return [((starts[:, None] + cols).ravel(), g)]
    except _NOT_BATCHABLE:
        if len(variants) > 1:
            return [p for start, ov in zip(starts, variants, strict=True)
                    for p in _stacked_pieces(system, model, ctx, precision, [ov], start[None], prefill_tokens,
                                             breakdowns)]
        return [(starts[0] + cols, _scalar_group(system, model, ctx, precision, "fast", variants[0],
                                                 prefill_tokens, None))]


def _auto_pieces(stem, model, ctx, precision, variants, starts, prefill_tokens, breakdowns) -> list[tuple]:
    """kvnand-d:auto over many designs and contexts: every split of every design stacked and walked once; at
    each context the first fastest split that fits wins (as evaluate() ranks them); where none fits, the point
    is the first split's, saying so."""
    import numpy as np

    splits = [[{**ov, "g2_dies": g2} for g2 in range(1, _auto_dies(stem, ov))] for ov in variants]
    flat = [sv for per in splits for sv in per]
    g = _walk_stack(stem, designs(stem, model, precision, flat), flat, ctx, prefill_tokens, rows_only=True,
                    breakdowns=breakdowns)
    fits = g["fits"]
    t = np.where(fits, g["latency"], np.inf)
    rows, infos, first = [], [], 0
    for ov, per in zip(variants, splits, strict=True):
        seg = t[first:first + len(per)]
        win = np.argmin(seg, axis=0)
        none = ~fits[first:first + len(per)].any(axis=0)
        rows.append(first + win)
        for k in range(len(per)):
            info = g["designs"][first + k]
            info["config"]["split"] = f"{info['config']['g1_dies']}+{per[k]['g2_dies']}"
        # a point where no split fits: the first split's record, its reason saying so, the caller's overrides
        nofit = dict(g["designs"][first], overrides=ov, config={**g["designs"][first]["config"]})
        nofit["config"].pop("split")
        infos.append((none, nofit))
        first += len(per)
    row = np.stack(rows)                            # (designs, contexts): the winning stacked row
    nofit_rows = []
    for v, (none, info) in enumerate(infos):
        if none.any():
            g["designs"].append(info)
            nofit_rows.append((v, none, len(g["designs"]) - 1))
    group = _gather(g, row, stem + ":auto")
    for v, none, info_row in nofit_rows:
        sel = v * len(ctx) + np.flatnonzero(none)
        group["row"][sel] = info_row
        for i in sel:
            group["oom_reason"][i] = f"no G1/G2 split fits: {group['oom_reason'][i]}"
    return [((starts[:, None] + np.arange(len(ctx))).ravel(), group)]


def _walk_stack(system: str, stacked: list[Design], variants: list[dict], ctx, prefill_tokens, *,
                rows_only: bool = False, breakdowns: bool = True) -> dict:
    """Every design x context of designs that differ in numbers only, in one walk: per point arrays of shape
    (designs, contexts), and each design's own context-independent fields. `rows_only`: the arrays are left
    2-D for the caller to pick points from (kvnand-d:auto) instead of made the group of every point."""
    import numpy as np

    k, n_ctx = len(stacked), len(ctx)
    shape = (k, n_ctx)
    first = stacked[0]
    st = _stack_of(stacked)
    ctx2 = np.broadcast_to(ctx, shape)
    oom, reasons, used = check_many(st.stores, ctx2, st.names)
    capacity_use = _fullest(used, [s.capacity_bytes for s in st.stores])
    errors = [d.buffer_error for d in stacked]
    for i, e in enumerate(errors):
        if e is not None:
            reasons[i, ~oom[i]] = e
            oom[i] = True
    out: dict[str, Any] = {
        "system": system, "model": first.spec.name, "precision": first.prec.name, "shape": shape,
        "context": ctx2, "oom": oom, "oom_reason": reasons, "beyond_model_context": ctx2 > first.spec.max_context,
        "model_max_context": first.spec.max_context, "used": used, "capacity_use": capacity_use, "masked": set(),
        "kv_reads": None,
        "designs": [_design_info(d, ov) for d, ov in zip(stacked, variants, strict=True)],
        "values": {}, "breakdowns": {f: {} for f in BREAKDOWNS}, "keep_breakdowns": breakdowns,
    }
    if not (~oom).any():
        out["fits"], out["latency"] = ~oom, np.full(shape, np.inf)
        return out if rows_only else _gather(out, None, system)
    lw = st.lowering.at(ctx2)
    with np.errstate(all="ignore"):  # out-of-memory points are walked too, and masked
        over = np.broadcast_to(lw.logits_overflow(), shape) & ~oom
        if over.any():
            at = np.nonzero(over)
            words = lw.logit_errors(np.broadcast_to(lw.L, shape)[at].tolist(),
                                    np.broadcast_to(lw._logit_bytes(1), shape)[at].tolist())
            reasons[at] = np.array(words, dtype=object)
        oom |= over
        program = lw.decode_step()
        ev = fast.evaluate(program, with_work=False)
        latency = np.broadcast_to(ev.time, shape)
        counts = count_actions(program).actions
        energy, ebreak = price(counts, st.system, latency)
        n_pre = ctx2 if not prefill_tokens else np.full(shape, prefill_tokens)
        ttft = fast.latency(lw.at(n_pre).prefill(n_pre))
        out["values"] = {"tokens_per_s": 1.0 / latency, "latency_s": latency, "energy_j_per_token": energy,
                         "ttft_s": ttft, "power_w": energy / latency, "prefill_tokens": n_pre}
        out["breakdowns"] = {
            "breakdown_s": ev.stage, "breakdown_by_resource_s": ev.bound, "busy_s": ev.busy,
            "energy_breakdown_j": ebreak, "power_breakdown_w": {c: v / latency for c, v in ebreak.items()},
            "utilization": {r: t / latency for r, t in ev.busy.items()}, "actions": counts}
        if lw.layout is not None and breakdowns:  # (for records, which need the breakdowns too)
            out["kv_reads"] = kv_page_reads(counts, lw)
    out["masked"] = ev.masked
    out["fits"], out["latency"] = ~oom, latency
    alpha = lw.split_alpha
    if alpha is not None:
        for i, info in enumerate(out["designs"]):
            info["config"]["read_compute_fraction"] = float(np.broadcast_to(alpha, (k, 1))[i, 0])
    return out if rows_only else _gather(out, None, system)


class _Stack:
    """What a walk of stacked designs needs whatever the context: the stacked system, its memories (numbers
    over the designs, each design's own store names) and its lowering, which keeps the context-independent
    parts of the program (as a Design's does)."""

    def __init__(self, stacked: list[Design]):
        self.designs = stacked  # (keeps them, and so their ids, alive while cached)
        self.system = stack([d.system for d in stacked], (len(stacked), 1))
        self.stores = _stacked_stores(stacked)
        self.names = [[s.name for s in d.stores] for d in stacked]
        self.lowering = Lowering(self.system, stacked[0].spec, stacked[0].prec, 1)


# ids of the stacked Designs -> _Stack: a sweep run again (a warm grid, a notebook) is not stacked again
_STACKS: dict[tuple, _Stack] = {}


def _stack_of(stacked: list[Design]) -> _Stack:
    key = tuple(id(d) for d in stacked)
    hit = _STACKS.get(key)
    if hit is not None and all(a is b for a, b in zip(hit.designs, stacked, strict=True)):
        return hit
    if len(_STACKS) >= 64:
        _STACKS.clear()
    st = _STACKS[key] = _Stack(stacked)
    return st


def _stacked_stores(stacked: list[Design]) -> list[Store]:
    """The designs' memories as stores whose numbers are arrays over the designs (a row each); their names are
    the first design's (each design's own name its memories: check_many's `names`)."""
    import numpy as np

    per = [d.stores for d in stacked]
    if any([s.name.split(" (")[0] for s in p] != [s.name.split(" (")[0] for s in per[0]] for p in per):
        raise NotStackable("designs whose memories differ")
    out = []
    for i, s0 in enumerate(per[0]):
        column = [p[i] for p in per]
        if any(s.windowed != s0.windowed for s in column):
            raise NotStackable("designs whose windowed KV differs")
        nums = [np.array([s[f] for s in column]).reshape(-1, 1) if any(s[f] != s0[f] for s in column) else s0[f]
                for f in (1, 2, 3)]
        out.append(Store(s0.name, *nums, s0.windowed))
    return out


def _fullest(used: list, capacity: list):
    """used / capacity of the fullest memory at every point (as a DSE's capacity_use)."""
    import numpy as np

    return np.maximum.reduce([u / c for u, c in zip(used, capacity, strict=True)])


def _design_info(d: Design, overrides: dict) -> dict:
    """A design's fields of the record that do not depend on the context."""
    return {"overrides": overrides, "config": d.config(overrides), **d.memories(copy=False),
            "max_context": d.max_context, "capacity": d.capacities,
            "kv_summary": d.kv_summary}


def _gather(w: dict, row, system: str) -> dict:
    """The group of one point per (stacked row, context): every row's points (`row` None), or at each context
    of each design the row `row[design, context]` (kvnand-d:auto's winners). Its numbers are made now; its
    breakdowns stay the walk's arrays over (designs, contexts), read at its points when asked for
    (_breakdown_values, _flat)."""
    import numpy as np

    k, n_ctx = w["shape"]
    if row is None:
        rows, take = np.repeat(np.arange(k), n_ctx), None
    else:
        rows = row.ravel()
        take = (rows, np.tile(np.arange(n_ctx), row.shape[0]))
    g: dict[str, Any] = {"records": None, "n": len(rows), "shape": (k, n_ctx), "take": take}
    oom = _pick(g, w["oom"])
    ok = ~oom
    g.update({
        "system": system, "model": w["model"], "precision": w["precision"], "mode": "fast", "row": rows.copy(),
        "designs": w["designs"], "context": _pick(g, w["context"]), "oom": oom, "ok": ok, "all_ok": bool(ok.all()),
        "oom_reason": list(_pick(g, w["oom_reason"])), "beyond_model_context": _pick(g, w["beyond_model_context"]),
        "model_max_context": w["model_max_context"], "used": [_pick(g, u) for u in w["used"]],
        "capacity_use": _pick(g, w["capacity_use"]), "masked": w["masked"], "bottleneck": [None] * len(rows),
        **{f: np.full(len(rows), np.nan) for f in (*SCALARS, "prefill_tokens")},
        "src": {f: {} for f in BREAKDOWNS}, "kv_src": None, "flat": None,
    })
    if not ok.any():
        return g
    for f, v in w["values"].items():
        g[f] = _masked(g, v, np.nan)
    bound = {key: _masked(g, v, 0.0) for key, v in w["breakdowns"]["breakdown_by_resource_s"].items()}
    g["bottleneck"] = _bottlenecks(bound, ok)
    if w["keep_breakdowns"]:
        g["src"], g["kv_src"] = w["breakdowns"], w["kv_reads"]
    return g


def _pick(g: dict, a):
    """The values of an array over (designs, contexts) at the group's points."""
    import numpy as np

    full = np.broadcast_to(a, g["shape"])
    return full.reshape(-1) if g["take"] is None else full[g["take"]]


def _masked(g: dict, a, fill):
    """_pick(), `fill` at the group's out-of-memory points."""
    import numpy as np

    v = _pick(g, a)
    return v if g["all_ok"] else np.where(g["ok"], v, fill)


def _breakdown_values(g: dict, f: str, key: str):
    """Breakdown `f`'s entry `key` at the group's points (0.0 where out of memory or without it)."""

    if g["records"] is not None:
        return g["flat"][f].get(key, 0.0)
    src = g["src"][f].get(key)
    return 0.0 if src is None or not g["ok"].any() else _masked(g, src, 0.0)


def _flat(g: dict) -> dict:
    """Every breakdown (and the KV page reads) of a stacked group at its points, made once (for its records)."""
    if g["flat"] is None:
        g["flat"] = {f: {key: _breakdown_values(g, f, key) for key in g["src"][f]} for f in BREAKDOWNS}
        g["flat"]["kv_reads"] = None if g["kv_src"] is None else \
            {key: _masked(g, v, 0.0) for key, v in g["kv_src"].items()}
    return g["flat"]


class _Breakdown(Mapping):
    """One breakdown of evaluate_many's columns: entry -> array over every point, each array built when first
    read (a sweep that reads a few entries does not fill hundreds of columns)."""

    def __init__(self, field: str, pieces: list[tuple], n: int, block: int):
        self._field, self._pieces, self._n, self._block = field, pieces, n, block
        self._keys = list(dict.fromkeys(key for _, g in pieces for key in _entries(g, field)))
        self._made: dict = {}

    def __getitem__(self, key):
        col = self._made.get(key)
        if col is None:
            if key not in self._keys:
                raise KeyError(key)
            import numpy as np

            col = self._made[key] = np.zeros(self._n)
            for idx, g in self._pieces:
                if key in _entries(g, self._field):
                    _put(col, _breakdown_values(g, self._field, key), idx, self._block)
        return col

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def _entries(g: dict, f: str):
    return g["flat"][f] if g["records"] is not None else g["src"][f]


def _put(col, values, idx, block: int) -> None:
    """values (one, or one per position of `idx`: whole blocks of `block` consecutive positions) into col."""
    import numpy as np

    rows = idx[::block] // block
    col.reshape(-1, block)[rows] = values if np.ndim(values) == 0 else np.reshape(values, (-1, block))


def _bottlenecks(bound: dict, ok) -> list:
    """The record's bottleneck of every point (None where out of memory): evaluate()'s wording, each distinct
    (resource, whole percent) formatted once."""
    import numpy as np

    if not bound:
        return [None if not o else "" for o in ok]
    names = list(bound)
    vals = np.stack([bound[k] for k in names])
    top_i = vals.argmax(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # out-of-memory points have no step
        share = vals.max(axis=0) / vals.sum(axis=0)
    # format(x, ".0%") rounds x * 100 half to even, as np.rint does: each (resource, percent) is worded once
    at = np.flatnonzero(ok & np.isfinite(share))
    codes = top_i[at] * 1000 + np.rint(share[at] * 100).astype(np.int64)
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    texts = np.array([f"{names[top_i[at[j]]]}: {share[at[j]]:.0%} of the step" for j in first], dtype=object)
    words = np.full(len(ok), None, dtype=object)
    words[at] = texts[inverse.ravel()]
    for i in np.flatnonzero(ok & ~np.isfinite(share)):
        words[i] = f"{names[top_i[i]]}: {share[i]:.0%} of the step"
    return words.tolist()


def _columns(pieces: list[tuple], n: int, block: int) -> dict:
    """Columns of every point from the groups (each with its points' positions: whole blocks of `block`
    consecutive positions, one design's contexts, which are copied as rows). A group evaluate() made point by
    point is turned into columns here (its `flat`); the breakdowns are _Breakdown mappings."""
    import numpy as np

    objects = ("system", "model", "precision", "mode", "oom_reason", "bottleneck", "overrides", "config")
    cols: dict[str, Any] = {
        **{f: np.full(n, None, dtype=object) for f in objects},
        "context": np.zeros(n, dtype=np.int64), "max_context": np.zeros(n, dtype=np.int64),
        "model_max_context": np.zeros(n, dtype=np.int64), "oom": np.zeros(n, dtype=bool),
        "beyond_model_context": np.zeros(n, dtype=bool), "fallback": np.zeros(n, dtype=bool),
        "cost_usd": np.zeros(n), "prefill_tokens": np.full(n, np.nan), "capacity_use": np.zeros(n),
        **{f: np.full(n, np.nan) for f in SCALARS},
    }
    for idx, g in pieces:
        def put(col, values, idx=idx):
            _put(col, values, idx, block)

        if g["records"] is not None:
            g = _from_records(g)
            put(cols["fallback"], True)
        designs, row = g["designs"], g["row"]
        for f in ("system", "model", "precision", "mode"):
            put(cols[f], g[f])
        for f in ("max_context", "cost_usd"):
            put(cols[f], np.array([info[f] for info in designs])[row])
        for f in ("overrides", "config"):
            per = np.empty(len(designs), dtype=object)
            per[:] = [info[f] for info in designs]
            put(cols[f], per[row])
        for f in ("oom_reason", "bottleneck"):
            vals = np.empty(len(idx), dtype=object)
            vals[:] = g[f]
            put(cols[f], vals)
        put(cols["model_max_context"], g["model_max_context"])
        for f in ("context", "oom", "beyond_model_context", "prefill_tokens", "capacity_use", *SCALARS):
            put(cols[f], g[f])
    for f in objects:
        cols[f] = cols[f].tolist()
    cols.update({f: _Breakdown(f, pieces, n, block) for f in BREAKDOWNS})
    cols["_pieces"] = pieces
    return cols


def _from_records(g: dict) -> dict:
    """The columns of a group of points evaluate() evaluated one by one (each point its own design); its
    breakdowns go to the group's `flat`."""
    import numpy as np

    recs = g["records"]
    out: dict[str, Any] = {f: [r[f] for r in recs] for f in ("oom_reason", "bottleneck")}
    out.update({f: recs[0][f] for f in ("system", "model", "precision", "mode")}, row=np.arange(len(recs)),
               model_max_context=recs[0]["model_max_context"],
               designs=[{"overrides": g["overrides"], "config": r["config"], "max_context": r["max_context"],
                         "cost_usd": r["cost_usd"]} for r in recs])
    for f in ("context", "oom", "beyond_model_context"):
        out[f] = np.array([r[f] for r in recs])
    out["capacity_use"] = np.array([max(c["used_bytes"] / c["capacity_bytes"] for c in r["capacity"].values())
                                    for r in recs])
    for f in (*SCALARS, "prefill_tokens"):
        out[f] = np.array([np.nan if r.get(f) is None else r[f] for r in recs], dtype=float)
    g["flat"] = {f: {k: np.array([r.get(f, {}).get(k, 0.0) for r in recs])
                     for k in dict.fromkeys(k for r in recs for k in r.get(f, {}))} for f in BREAKDOWNS}
    return out


def records(columns: dict) -> list[Result]:
    """evaluate()'s record of every point of evaluate_many() columns, in order."""
    if columns["_pieces"] is None:
        raise InputError("these columns were evaluated without breakdowns: records need them",
                         key="breakdowns", value=False, allowed="evaluate_many(..., breakdowns=True)")
    out: list = [None] * len(columns["context"])
    for idx, g in columns["_pieces"]:
        for j, i in enumerate(idx):
            out[i] = g["records"][j] if g["records"] is not None else Result(_record(g, j))
    return out


def _record(g: dict, i: int) -> dict:
    """The record of point i of a stacked group, as evaluate() writes it (same keys, same order)."""
    info = g["designs"][g["row"][i]]
    oom = bool(g["oom"][i])
    context = int(g["context"][i])
    config = {**info["config"], "overrides": dict(info["config"]["overrides"])}
    rec: dict[str, Any] = {
        "system": g["system"], "model": g["model"], "context": context, "precision": g["precision"],
        "mode": g["mode"], "oom": oom, "oom_reason": g["oom_reason"][i], "max_context": info["max_context"],
        "model_max_context": g["model_max_context"], "beyond_model_context": bool(g["beyond_model_context"][i]),
        **_unmeasured(),
        "capacity": {s: {"capacity_bytes": cap, "used_bytes": float(used[i])}
                     for (s, cap), used in zip(info["capacity"].items(), g["used"], strict=True)},
        "config": config, "cost_usd": info["cost_usd"], "memories": [dict(m) for m in info["memories"]],
    }
    if oom:
        config.pop("read_compute_fraction", None)  # the lowering's choice, made only where the point fits
        return rec

    flat = _flat(g)

    def at(f):
        masked = g["masked"] if f in ("breakdown_s", "breakdown_by_resource_s") else ()
        return {k: float(v[i]) for k, v in flat[f].items() if not (k in masked and v[i] == 0.0)}

    rec.update({f: float(g[f][i]) for f in SCALARS})
    rec.update({"power_breakdown_w": at("power_breakdown_w"), "prefill_tokens": int(g["prefill_tokens"][i]),
                "breakdown_s": at("breakdown_s"), "breakdown_by_resource_s": at("breakdown_by_resource_s"),
                "busy_s": at("busy_s"), "utilization": at("utilization"),
                "energy_breakdown_j": at("energy_breakdown_j"), "bottleneck": g["bottleneck"][i],
                "actions": at("actions")})
    if info["kv_summary"] is not None:
        rec["kv_mapping"] = {**info["kv_summary"], **{k: float(v[i]) for k, v in flat["kv_reads"].items()}}
    return rec
