"""evaluate(): one (system, model, context, precision) point -> the result record of `kvnand report`.

Named steps: resolve (kvnand.scenario) -> fit (capacity of every memory the placement uses) -> lower
(kvnand.lowering: the program of a decode step) -> time (fast or event engine) -> count (actions) ->
price (energy table) -> [refresh] -> result record. `kvnand-d:auto` ranks every G1/G2 split by its
decode latency and evaluates the fastest in full.
"""

from __future__ import annotations

import math
from typing import Any

from kvnand.config.loader import load_system
from kvnand.energy.tables import price
from kvnand.errors import InputError
from kvnand.lowering.decode import DecodeStep
from kvnand.lowering.step import Lowering, check_composition, heads_per_phase
from kvnand.program import count_actions
from kvnand.scenario import Decode, Point, Scenario, resolve, split_auto
from kvnand.sim import fast

MODES = ("fast", "event", "page")
DEFAULT_PREFILL_TOKENS = None  # None: prefill of the whole context (time to first token for that prompt)


def _time(program, mode: str):
    """(latency, stage breakdown, bound breakdown, busy, timeline or None) of a program in one engine."""
    if mode == "fast":
        ev = fast.evaluate(program, with_work=False)
        return ev.time, ev.stage, ev.bound, ev.busy, None
    from kvnand.sim import event

    tl = event.simulate(program, page_level=(mode == "page"))
    stage, bound, busy = event.breakdown(tl)
    return tl.makespan, stage, bound, busy, tl


def _bottleneck(bound: dict[str, float]) -> str:
    if not bound:
        return ""
    name, t = max(bound.items(), key=lambda kv: kv[1])
    share = t / sum(bound.values())
    return f"{name}: {share:.0%} of the step"


def evaluate(system: str, model: str, context: int, *, precision: str | None = None, mode: str = "fast",
             overrides: dict[str, Any] | None = None, with_timeline: bool = False,
             prefill_tokens: int | None = DEFAULT_PREFILL_TOKENS, refresh: str | None = None,
             batch: int | None = None, spec_draft: str | None = None, spec_k: int | None = None,
             spec_accept: float | None = None) -> dict:
    """Evaluate one point. Returns the record described in DESIGN.md (`kvnand.report/1` results).

    `refresh`: a usage profile (kvnand.reliability.profile, e.g. "continuous"); the read-disturb refresh
    that profile needs (rewrites of blocks that reach their read limit, amortized per token) is then added
    to the latency, the energy and both breakdowns. Off by default, as in the papers we compare with.

    `batch`: sequences decoded together, each of `context` tokens; `spec_draft` (a model), `spec_k` (draft
    tokens per step) and `spec_accept` (acceptance rate, 0 <= a < 1): speculative decoding. The record then
    has `batch`, `queries_per_step`, `tokens_per_step`, `step_latency_s` and `aggregate_tokens_per_s`
    (`tokens_per_s` stays per request)."""
    if mode not in MODES:
        raise InputError("unknown mode", key="mode", value=mode, allowed=", ".join(MODES))
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise InputError("context must be a positive number of tokens", key="context", value=context)
    decode = Decode(batch, spec_draft, spec_k, spec_accept)
    if refresh and decode.active:
        raise InputError("the read-disturb refresh is modelled for single-sequence decoding only", key="refresh",
                         value=refresh, allowed="no refresh with batch or spec_draft")
    overrides = dict(overrides or {})
    stem, auto = split_auto(system)
    if auto:
        return _auto_split(stem, model, context, precision, mode, overrides, with_timeline, prefill_tokens,
                           refresh, decode)
    return _evaluate(system, model, context, precision, mode, overrides, with_timeline, prefill_tokens,
                     refresh=refresh, decode=decode)


def _evaluate(system: str, model: str, context: int, precision: str | None, mode: str, overrides: dict,
              with_timeline: bool, prefill_tokens: int | None, prebuilt: tuple | None = None,
              refresh: str | None = None, decode: Decode = Decode()) -> dict:
    """evaluate() of a concrete system; `prebuilt` = (decode step, its program) already built for exactly this
    point (by kvnand-d:auto while ranking splits), so they are not built twice."""
    sc = resolve(Point(system, model, context, precision, overrides, decode))
    sys_cfg, spec, prec = sc.system, sc.model, sc.precision
    check_composition(sys_cfg)
    step = DecodeStep(sc)
    fitted = step.fit()
    record: dict[str, Any] = {
        "system": system, "model": spec.name, "context": context, "precision": prec.name,
        "mode": mode, "oom": fitted.oom, "oom_reason": fitted.reason, "max_context": fitted.max_context,
        "model_max_context": spec.max_context, "beyond_model_context": context > spec.max_context,
        "tokens_per_s": None, "latency_s": None, "energy_j_per_token": None, "ttft_s": None,
        "power_w": None, "power_breakdown_w": {},
        "breakdown_s": {}, "breakdown_by_resource_s": {}, "busy_s": {}, "energy_breakdown_j": {},
        "bottleneck": None, "capacity": fitted.stores, "config": _config_summary(sys_cfg, overrides),
    }
    if decode.active:
        record.update(_decode_fields(decode, sc, None))
    record.update(_memories(system, overrides))
    if fitted.oom:
        return record
    if prebuilt is not None:
        step, program = prebuilt
    else:
        on_chip = step.on_chip_error()
        if on_chip is not None:
            record.update(oom=True, oom_reason=on_chip)
            return record
        program = step.program()
    b = step.target
    step_s, stage, bound, busy, tl = _time(program, mode)
    # a request gains tokens_per_sequence tokens per step; the step's energy is shared by all of them
    tokens = step.tokens_per_sequence
    latency = step_s / tokens
    counts = count_actions(program).actions  # counting is independent of timing
    energy, ebreak = price(counts, sys_cfg, step_s)
    per_step = 1
    if decode.active:
        per_step = step.batch * tokens
        energy, ebreak = energy / per_step, {k: v / per_step for k, v in ebreak.items()}
    if refresh:
        from kvnand.reliability.refresh import refresh_overhead

        r = refresh_overhead(system, model, context, precision, overrides=overrides, profile=refresh,
                             tokens_per_s=1.0 / latency)
        latency += r["seconds_per_token"]
        energy += r["joules_per_token"]
        stage = {**stage, "refresh": r["seconds_per_token"]}
        bound = {**bound, "array program + erase (read-disturb refresh)": r["seconds_per_token"]}
        ebreak = {**ebreak, "flash refresh": r["joules_per_token"]}
        record["refresh"] = {"profile": refresh, **{k: v for k, v in r.items() if k != "oom"}}
    n_pre = prefill_tokens or context
    # the prefill program does not depend on the builder's context: the decode step reuses its builder (its
    # KV layout and die groups) when the prompt is the context, as it is by default
    pre = step.prefill(n_pre)
    ttft = fast.latency(pre) if mode == "fast" else _time(pre, mode)[0]
    lay = b.layout
    if decode.active:
        record.update(_decode_fields(decode, sc, step_s))
    record.update({
        "tokens_per_s": 1.0 / latency, "latency_s": latency, "energy_j_per_token": energy, "ttft_s": ttft,
        # power: the step's energy over the step's time (a request's token shares the step with the others)
        "power_w": energy * per_step / (latency * tokens),
        "power_breakdown_w": {k: v * per_step / (latency * tokens) for k, v in ebreak.items()},
        "prefill_tokens": n_pre,
        "breakdown_s": stage, "breakdown_by_resource_s": bound, "busy_s": busy,
        "utilization": {r: t / (latency * tokens) for r, t in busy.items()},
        "energy_breakdown_j": ebreak, "bottleneck": _bottleneck(bound), "actions": counts,
    })
    if lay is not None:
        record["kv_mapping"] = {**lay.summary(), **kv_page_reads(counts, b)}
    if b.split_alpha is not None:
        record["config"]["read_compute_fraction"] = b.split_alpha
    if with_timeline:
        record["_timeline"] = tl
        record["_program"] = program
    return record


def _decode_fields(decode: Decode, sc: Scenario, step_s: float | None) -> dict:
    """The batch fields of a batched or speculative record (timing fields null when it does not fit)."""
    tokens = decode.accepted_tokens
    out = {"batch": decode.sequences, "queries_per_step": decode.sequences * decode.queries,
           "tokens_per_step": decode.sequences * tokens, "step_latency_s": step_s,
           "aggregate_tokens_per_s": None if step_s is None else decode.sequences * tokens / step_s}
    if sc.draft is not None:
        out["speculation"] = {"draft": sc.draft.name, "draft_placement": sc.system.placement.draft,
                              "k": decode.spec_k, "accept_rate": float(decode.spec_accept),
                              "expected_tokens_per_step": tokens}
    return out


def kv_page_reads(counts: dict, b: Lowering) -> dict:
    """KV page reads of one decode step: in total (the sensed KV bits that energy and read disturb use)
    and on the busiest plane summed over the attention phases (what sets their time); with a batch, every
    sequence's pages (a draft model's KV reads on the same dies are in the total too)."""
    lay, g = b.layout, b.kvgroup
    if lay is None:  # KV outside flash (DRAM) has no pages
        return {}
    hp = heads_per_phase(b.s, b.m)
    busiest = 0.0
    for kind, layers in b.m.layer_kinds:  # each kind attends over its own context (a window caps it)
        lw = b.for_kind(kind)
        rounds = lw.logit_rounds() if hp == b.m.kv_heads else 1
        phases = 2 * layers * math.ceil(b.m.kv_heads / hp) * rounds  # Logit and Attend
        busiest += lay.phase_reads(lw.L, math.ceil(hp / rounds))[0] * phases * b.batch
    total = counts.get(b.kv_sense_action(), 0.0) / (8 * g.page_bytes)
    return {"page_reads_per_token": total, "busiest_plane_page_reads_per_token": busiest,
            "useful_kv_bytes_per_token": b.m.kv_bytes(b.p, b.context) * b.batch,
            "sensed_kv_bytes_per_token": total * g.page_bytes}


def _memories(system: str, overrides: dict) -> dict:
    """Memory cost and the capacity of each memory (kvnand.cost), in every record, OOM or not."""
    from kvnand.cost import memory_cost

    c = memory_cost(system, overrides)
    return {"cost_usd": c["cost_usd"], "memories": c["memories"]}


def _config_summary(s, overrides) -> dict:
    out: dict[str, Any] = {"overrides": {k: v for k, v in overrides.items()}}
    if s.flash is not None:
        out.update(dies=s.flash.dies, channels=s.flash.channels, planes_per_die=s.flash.die.geometry.planes,
                   page_size=s.flash.die.geometry.page_size)
        if s.flash.logic is not None:
            out["fmacs_per_plane"] = s.flash.logic.fmacs_per_plane
    if s.kv.store == "flash_group":
        out["g1_dies"] = s.flash.dies - s.kv.g2_dies
        out["g2_dies"] = s.kv.g2_dies
    out["kv_store"] = s.kv.store
    out["kv_mapping"] = s.kv.mapping
    out["hg_pipeline"] = s.schedule.hg_pipeline
    return out


def _split_latency(system, model, context, precision, overrides, g2, decode) -> tuple[float | None, int, tuple]:
    """(decode step latency in fast mode, exactly as evaluate() computes it, or None when it is OOM; the
    split's kv.g2_dies; (decode step, its program)) of one G1/G2 split."""
    sc = resolve(Point(system, model, context, precision, {**overrides, "g2_dies": g2}, decode))
    sys_cfg = sc.system
    check_composition(sys_cfg)
    step = DecodeStep(sc)
    if step.fit().oom:
        return None, sys_cfg.kv.g2_dies, ()
    if step.on_chip_error() is not None:
        return None, sys_cfg.kv.g2_dies, ()
    program = step.program()
    return fast.latency(program), sys_cfg.kv.g2_dies, (step, program)


def _auto_split(system, model, context, precision, mode, overrides, with_timeline, prefill_tokens, refresh,
                decode):
    """KVNAND-D:auto: every G2 size from 1 to dies-1 (fast mode), the fastest that fits wins.

    Candidates are ranked by their fast-mode decode latency alone (no prefill, counts or energy); only the
    winner is evaluated in full, in the requested mode."""
    base = load_system(system, {**overrides, "g2_dies": 1})  # any valid split: every candidate replaces it
    if base.kv.store != "flash_group":
        raise InputError("':auto' picks a G1/G2 split and needs a system with kv.store 'flash_group'",
                         key="system", value=f"{system}:auto", allowed="kvnand-d:auto")
    best_g2, best_t, best_built = None, None, None
    for g2 in range(1, base.flash.dies):
        t, g2_dies, built = _split_latency(system, model, context, precision, overrides, g2, decode)
        if t is not None and (best_t is None or t < best_t):
            best_g2, best_t, best_built = g2_dies, t, built
    if best_g2 is None:
        first = _evaluate(system, model, context, precision, "fast", {**overrides, "g2_dies": 1}, False,
                          prefill_tokens, decode=decode)
        first = dict(first)
        first["system"] = f"{system}:auto"
        first["oom_reason"] = f"no G1/G2 split fits: {first['oom_reason']}"
        return first
    # the winner's decode program is the one evaluate() would build (same configuration values): reuse it
    final = _evaluate(system, model, context, precision, mode, {**overrides, "g2_dies": best_g2}, with_timeline,
                      prefill_tokens, prebuilt=best_built, refresh=refresh, decode=decode)
    final["system"] = f"{system}:auto"
    final["config"]["split"] = f"{final['config']['g1_dies']}+{best_g2}"
    return final


def evaluate_reliability(system: str, model: str, context: int, *, precision: str | None = None,
                         mapping: str | None = None, profile="continuous", overrides: dict | None = None) -> dict:
    """kvnand.reliability.reliability() of a point, with what only evaluate() knows: the G1/G2 split a
    ':auto' system picks for speed (the one whose flash is aged) and, when the profile gives no decode rate,
    the system's own rate at the session's mean decode context."""
    from kvnand.reliability import reliability
    from kvnand.reliability.disturb import system_overrides
    from kvnand.reliability.profile import get_profile, session

    overrides = dict(overrides or {})
    sys_over = {**system_overrides(overrides), **({"mapping": mapping} if mapping is not None else {})}
    stem, auto = split_auto(system)
    if auto:
        chosen = evaluate(system, model, context, precision=precision, overrides=sys_over)["config"]
        system = stem
        if "g2_dies" in chosen:
            overrides["g2_dies"] = chosen["g2_dies"]
            sys_over["g2_dies"] = chosen["g2_dies"]
    rate = None
    prof = get_profile(profile, overrides)
    if prof.tokens_per_s is None and isinstance(context, int) and not isinstance(context, bool) and context > 0:
        rate = evaluate(system, model, session(prof, context).mean_decode_context, precision=precision,
                        overrides=sys_over)["tokens_per_s"]
    return reliability(system, model, context, precision=precision, mapping=mapping, profile=profile,
                       overrides=overrides, tokens_per_s=rate)
