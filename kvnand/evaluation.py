"""evaluate(): one (system, model, context, precision) point -> the result record of `kvnand report`.

Named steps: resolve (kvnand.scenario) -> fit (capacity of every memory the placement uses) -> lower
(kvnand.lowering: the program of a decode step) -> time (fast or event engine) -> count (actions) ->
price (energy table) -> [refresh] -> result record. `kvnand-d:auto` ranks every G1/G2 split by its
decode latency and evaluates the fastest in full.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

from kvnand.config.loader import is_policy_key, load_system
from kvnand.energy.tables import price
from kvnand.errors import InputError
from kvnand.lowering.decode import DecodeStep
from kvnand.lowering.step import Lowering, check_composition, heads_per_phase, stores
from kvnand.mapping.capacity import Fit, check
from kvnand.program import ceil, count_actions
from kvnand.result import Result
from kvnand.scenario import Decode, Point, Scenario, resolve, resolve_many, split_auto
from kvnand.sim import fast
from kvnand.workload import kv_policy as kvp
from kvnand.workload.kv_policy import summary as policy_summary

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


class Design:
    """What evaluate() needs of a (system configuration, model, precision) whatever the context: the resolved
    parts, the memories the placement fills, the lowering (die groups, KV layout, the context-independent
    parts of the program), the on-chip buffer it overflows, the memory cost."""

    def __init__(self, system: str, sc: Scenario, overrides: dict):
        self.system, self.spec, self.prec = sc.system, sc.model, sc.precision
        check_composition(self.system)
        self.stores = stores(self.system, self.spec, self.prec)  # dense KV, one sequence
        self._lowering: Lowering | None = None
        self._memories = _memories_of(self.system)

    @property
    def lowering(self) -> Lowering:
        if self._lowering is None:
            self._lowering = Lowering(self.system, self.spec, self.prec, 1)
        return self._lowering

    @cached_property
    def max_context(self) -> int:
        """The longest context whose KV fits beside the weights."""
        return check(self.stores, 1).max_context

    @cached_property
    def buffer_error(self) -> str | None:
        """The on-chip buffer this design overflows whatever the context (Lowering.buffer_error)."""
        return self.lowering.buffer_error()

    @cached_property
    def capacities(self) -> dict[str, float]:
        """Bytes of each memory the placement fills, by store name (read-only)."""
        return {s.name: s.capacity_bytes for s in self.stores}

    @cached_property
    def kv_summary(self) -> dict | None:
        """The `kv_mapping` record's layout fields (None when the KV is not in flash pages)."""
        lay = self.lowering.layout
        return lay.summary() if lay is not None else None

    @cached_property
    def _config(self) -> dict:
        return _config_summary(self.system, {})

    def config(self, overrides: dict) -> dict:
        """The record's config of this design reached with `overrides` (a new dict)."""
        return {**self._config, "overrides": dict(overrides)}

    def memories(self, copy: bool = True) -> dict:
        """The record's cost_usd and memories (a copy, as records are the caller's, unless the caller copies them
        into each record itself)."""
        mems = self._memories["memories"]
        return {"cost_usd": self._memories["cost_usd"], "memories": [dict(i) for i in mems] if copy else mems}


# (id(system), model, precision) -> Design. The loader hands out one System object per configuration and
# checks its files each time, so a design is found again only for an unchanged configuration; the entry
# keeps the system alive, so its id cannot be reused while cached (as kvnand.energy.tables does).
_DESIGNS: dict[tuple, Design] = {}
MAX_DESIGNS = 4096


def designs(system: str, model: str, precision: str | None, overrides: list[dict]) -> list[Design]:
    """The Design of a concrete system under each of many overrides (cached, bounded; the system's files checked
    once)."""
    return [_design_of(system, sc, ov) for sc, ov in
            zip(resolve_many(system, model, precision, overrides), overrides, strict=True)]


def _design_of(system: str, sc: Scenario, overrides: dict) -> Design:
    key = (id(sc.system), sc.model, sc.precision)
    hit = _DESIGNS.get(key)
    if hit is not None and hit.system is sc.system:
        return hit
    if len(_DESIGNS) >= MAX_DESIGNS:  # the oldest quarter goes (~70 kB a design with its program parts)
        for old in list(_DESIGNS)[:MAX_DESIGNS // 4]:
            del _DESIGNS[old]
    d = _DESIGNS[key] = Design(system, sc, overrides)
    return d


def _unmeasured() -> dict:
    """The timing, energy and breakdown fields of a record before (or, out of memory, instead of) a step."""
    return {"tokens_per_s": None, "latency_s": None, "energy_j_per_token": None, "ttft_s": None, "power_w": None,
            "power_breakdown_w": {}, "breakdown_s": {}, "breakdown_by_resource_s": {}, "busy_s": {},
            "energy_breakdown_j": {}, "bottleneck": None}


def _bottleneck(bound: dict[str, float]) -> str:
    if not bound:
        return ""
    name, t = max(bound.items(), key=lambda kv: kv[1])
    share = t / sum(bound.values())
    return f"{name}: {share:.0%} of the step"


def evaluate(system: str, model: str, context: int, *, precision: str | None = None, mode: str = "fast",
             overrides: dict[str, Any] | None = None, with_timeline: bool = False,
             prefill_tokens: int | None = DEFAULT_PREFILL_TOKENS, refresh: str | None = None,
             kv_policy: str | None = None, batch: int | None = None, spec_draft: str | None = None,
             spec_k: int | None = None, spec_accept: float | None = None,
             batch_contexts: list | tuple | None = None) -> Result:
    """Evaluate one point. Returns the record described in DESIGN.md (`kvnand.report/1` results).

    `kv_policy`: a shipped KV-cache policy (arch_configs/kv_policies/NAME.yaml) or a path to one; the same as
    the override `kv_policy=NAME`, whose fields `kv_policy.bits` etc. override it.

    `refresh`: a usage profile (kvnand.reliability.profile, e.g. "continuous"); the read-disturb refresh
    that profile needs (rewrites of blocks that reach their read limit, amortized per token) is then added
    to the latency, the energy and both breakdowns. Off by default, as in the papers we compare with.

    `batch`: sequences decoded together, each of `context` tokens; `spec_draft` (a model), `spec_k` (draft
    tokens per step) and `spec_accept` (acceptance rate, 0 <= a < 1): speculative decoding. The record then
    has `batch`, `queries_per_step`, `tokens_per_step`, `step_latency_s` and `aggregate_tokens_per_s`
    (`tokens_per_s` stays per request).

    `batch_contexts`: each sequence's own context (a list of token counts or texts like "10k", one per
    sequence; `batch` defaults to its length), and `context` must be the longest of them: the record's
    `context` and `max_context` are the longest sequence's (`max_context`: with every sequence's context
    scaled in proportion). Weights are read once per step for every sequence; attention reads each sequence's
    own KV; the capacity holds the sum of their KV; the TTFT prefills each prompt at its own length (the
    prompts of one length together). Equal contexts are the equal-context batch exactly. Contexts that
    differ are not modelled under a KV policy other than dense."""
    if mode not in MODES:
        raise InputError("unknown mode", key="mode", value=mode, allowed=", ".join(MODES))
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise InputError("context must be a positive number of tokens", key="context", value=context)
    decode = Decode(batch, spec_draft, spec_k, spec_accept, batch_contexts)
    if decode.contexts is not None and context != decode.longest:
        raise InputError("context must be the longest of batch_contexts", key="context", value=context,
                         allowed=str(decode.longest))
    if refresh and decode.active:
        raise InputError("the read-disturb refresh is modelled for single-sequence decoding only", key="refresh",
                         value=refresh, allowed="no refresh with batch or spec_draft")
    overrides = dict(overrides or {})
    if kv_policy is not None:
        overrides["kv_policy"] = kv_policy
    policy = kvp.resolve_policy(overrides)
    if decode.mix is not None and not kvp.is_dense(policy):
        raise InputError("sequences of different contexts are modelled without a KV policy only",
                         key="batch_contexts", value=str(list(decode.contexts))[:80],
                         allowed="equal contexts, or kv_policy dense")
    if len(_reclaims(overrides, policy)) > 1:
        return Result.of(_auto_reclaim(system, model, context, precision, mode, overrides, with_timeline,
                                       prefill_tokens, refresh, decode))
    stem, auto = split_auto(system)
    if auto:
        return Result.of(_auto_split(stem, model, context, precision, mode, overrides, with_timeline,
                                     prefill_tokens, refresh, decode))
    return _evaluate(system, model, context, precision, mode, overrides, with_timeline, prefill_tokens,
                     refresh=refresh, decode=decode)


def _decode_step(system: str, sc: Scenario, overrides: dict) -> tuple[DecodeStep, Fit, Design | None]:
    """The decode step of a resolved point and its fit. A plain step that keeps every token takes the
    context-independent parts (stores, memory cost, the lowering's shared tasks) from its cached Design."""
    check_composition(sc.system)
    d = _design_of(system, sc, overrides) if not sc.point.decode.active and kvp.is_dense(sc.policy) else None
    step = DecodeStep(sc, d.lowering.at(sc.context) if d is not None else None)
    return step, (check(d.stores, sc.context) if d is not None else step.fit()), d


def _evaluate(system: str, model: str, context: int, precision: str | None, mode: str, overrides: dict,
              with_timeline: bool, prefill_tokens: int | None, prebuilt: tuple | None = None,
              refresh: str | None = None, decode: Decode = Decode()) -> dict:
    """evaluate() of a concrete system; `prebuilt` = (decode step, its program) already built for exactly this
    point (by kvnand-d:auto while ranking splits), so they are not built twice."""
    sc = resolve(Point(system, model, context, precision, overrides, decode))
    sys_cfg, spec, prec = sc.system, sc.model, sc.precision
    step, fitted, d = _decode_step(system, sc, overrides)
    record = Result({
        "system": system, "model": spec.name, "context": context, "precision": prec.name,
        "mode": mode, "oom": fitted.oom, "oom_reason": fitted.reason, "max_context": fitted.max_context,
        "model_max_context": spec.max_context, "beyond_model_context": context > spec.max_context,
        **_unmeasured(), "capacity": fitted.stores, "config": _config_summary(sys_cfg, overrides),
    })
    if decode.active:
        record.update(_decode_fields(decode, sc, None))
    policy_given = any(is_policy_key(k) for k in overrides)
    if policy_given:
        record["config"]["kv_policy"] = policy_summary(sc.policy)
    record.update(d.memories() if d is not None else _memories_of(sys_cfg))
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
    if policy_given:
        record["kv_policy"] = kv_policy_record(b, record.get("kv_mapping"))
    if b.split_alpha is not None:
        record["config"]["read_compute_fraction"] = b.split_alpha
    if with_timeline:
        record.timeline, record.program = tl, program
    return record


def _decode_fields(decode: Decode, sc: Scenario, step_s: float | None) -> dict:
    """The batch fields of a batched or speculative record (timing fields null when it does not fit)."""
    tokens = decode.accepted_tokens
    out = {"batch": decode.sequences,
           **({"batch_contexts": list(decode.contexts)} if decode.contexts is not None else {}),
           "queries_per_step": decode.sequences * decode.queries,
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
    groups = b.groups or (b,)  # the sequences of each context (a mix), or all of them
    for kind, layers in b.m.layer_kinds:  # each kind attends over its own context (a window caps it)
        for grp in groups:
            lw = grp.for_kind(kind)
            rounds = lw.logit_rounds() if hp == b.m.kv_heads else 1
            phases = math.ceil(b.m.kv_heads / hp) * rounds * layers * grp.batch
            heads = ceil(hp / rounds)
            busiest += lw.kv_reads(heads)[0] * 2 * phases  # Logit and Attend
            if b.policy.selector is not None:
                busiest += lw.selection_reads(heads)[0] * phases
    total = counts.get(b.kv_sense_action(), 0.0) / (8 * g.page_bytes)
    return {"page_reads_per_token": total, "busiest_plane_page_reads_per_token": busiest,
            "useful_kv_bytes_per_token": sum(_useful_kv_bytes(grp) * grp.batch for grp in groups),
            "sensed_kv_bytes_per_token": total * g.page_bytes}


def _useful_kv_bytes(b: Lowering) -> float:
    """KV bytes attention uses per step: every held token's without selection, the attended ones' with it."""
    m = b.m
    if kvp.is_dense(b.policy):
        return m.kv_bytes(b.p, b.context)
    unit = m.kv_bytes_per_token_layer(b.p)
    return sum(n * unit * b.for_kind(kind).L for kind, n in m.layer_kinds)


def kv_policy_record(b: Lowering, mapping: dict | None) -> dict:
    """The `kv_policy` record of a point under a policy: its name and width; tokens written, held and
    attended; the useful fraction (the conversation's KV attention uses: the accuracy proxy) and the
    page-read fraction (KV pages sensed against reading every page of the conversation: flash homes), the
    selection's page reads, GC per token, how often a page is read (read disturb), and the full-width residual
    window (tokens, memory, bytes)."""
    m, pol = b.m, b.policy
    hp = heads_per_phase(b.s, m)
    kinds = [(b.for_kind(kind), n) for kind, n in m.layer_kinds]
    useful, page_read = b.read_fractions(hp)
    out = {"name": pol.name, "reclaim": pol.reclaim if kvp.evicts(pol) else None,
           "kv_bytes_per_element": b.p.kv_bytes,
           "stored_kv_bytes_per_token": m.kv_bytes_per_token(b.p) * kvp.stored_scale(pol, m.kv_streams),
           "stored_tokens": b.stored, "held_tokens": b.held, "attended_tokens": b.L,
           "useful_fraction": useful,
           "page_read_fraction": None, "selection_page_reads_per_token": 0.0, "gc": b.gc()._asdict(),
           "hot_page_read_probability": None, "window_tokens": b.window, "window_memory": b.window_memory(),
           "window_bytes": b.window_bytes() if b.residual else 0.0}
    if b.layout is None or mapping is None:
        return out
    out["page_read_fraction"] = page_read
    if pol.selector is not None:
        out["selection_page_reads_per_token"] = sum(n * lw.selection_reads(hp)[1] for lw, n in kinds) * \
            math.ceil(m.kv_heads / hp)
    # read disturb: on average a page is read by page_read_fraction of the phases; the pages of persistent
    # heavy hitters (selected at every step) are read by every phase, as without a policy
    out["hot_page_read_probability"] = 1.0
    return out


def _memories_of(s) -> dict:
    """Memory cost and the capacity of each memory (kvnand.cost), in every record, OOM or not."""
    from kvnand.cost import memories_of

    c = memories_of(s)
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


def _reclaims(overrides: dict, policy=None) -> list[dict]:
    """The overrides of each reclaim an eviction policy with `reclaim: auto` chooses between (compact by GC, or
    leave evicted slots in place); the overrides themselves for any other policy (`policy`: the overrides'
    own, when the caller has resolved it)."""
    policy = policy or kvp.resolve_policy(overrides)
    if not (kvp.evicts(policy) and policy.reclaim == "auto"):
        return [overrides]
    return [{**overrides, "kv_policy.reclaim": choice} for choice in ("gc", "none")]


def _auto_reclaim(system, model, context, precision, mode, overrides, with_timeline, prefill_tokens, refresh,
                  decode):
    """Eviction with `reclaim: auto`: the FTL compacts (gc) or leaves evicted slots in place (none), whichever
    decodes faster and fits; when neither fits, the compacting one (it holds less) reports the OOM."""
    runs = [evaluate(system, model, context, precision=precision, mode=mode, with_timeline=with_timeline,
                     prefill_tokens=prefill_tokens, refresh=refresh, batch=decode.batch,
                     spec_draft=decode.spec_draft, spec_k=decode.spec_k, spec_accept=decode.spec_accept,
                     batch_contexts=decode.contexts, overrides=variant) for variant in _reclaims(overrides)]
    fitting = [r for r in runs if not r["oom"]]
    best = min(fitting, key=lambda r: r["latency_s"]) if fitting else runs[0]
    best["config"]["overrides"] = {k: v for k, v in overrides.items()}
    return best


def _decode_latency(system, model, context, precision, overrides,
                    decode: Decode = Decode()) -> tuple[float | None, Any, tuple]:
    """(decode step latency in fast mode, exactly as evaluate() computes it, or None when it is OOM; the
    resolved system; (decode step, its program)) of a concrete system point: the decode step alone, no
    prefill, counts or energy."""
    sc = resolve(Point(system, model, context, precision, overrides, decode))
    sys_cfg = sc.system
    step, fitted, _ = _decode_step(system, sc, overrides)
    if fitted.oom or step.on_chip_error() is not None:
        return None, sys_cfg, ()
    program = step.program()
    return fast.latency(program), sys_cfg, (step, program)


def _split_latency(system, model, context, precision, overrides, g2, decode) -> tuple[float | None, int, tuple]:
    """(decode step latency as in _decode_latency; the split's kv.g2_dies; (decode step, its program)) of one
    G1/G2 split."""
    t, sys_cfg, built = _decode_latency(system, model, context, precision, {**overrides, "g2_dies": g2}, decode)
    return t, sys_cfg.kv.g2_dies, built


def _auto_dies(system: str, overrides: dict) -> int:
    """The dies a ':auto' system splits into G1 and G2 (one clear error when it has no such groups)."""
    base = load_system(system, {**overrides, "g2_dies": 1})  # any valid split: every candidate replaces it
    if base.kv.store != "flash_group":
        raise InputError("':auto' picks a G1/G2 split and needs a system with kv.store 'flash_group'",
                         key="system", value=f"{system}:auto", allowed="kvnand-d:auto")
    return base.flash.dies


def _auto_split(system, model, context, precision, mode, overrides, with_timeline, prefill_tokens, refresh,
                decode):
    """KVNAND-D:auto: every G2 size from 1 to dies-1 (fast mode), the fastest that fits wins.

    Candidates are ranked by their fast-mode decode latency alone (no prefill, counts or energy); only the
    winner is evaluated in full, in the requested mode."""
    best_g2, best_t, best_built = None, None, None
    for g2 in range(1, _auto_dies(system, overrides)):
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
                         mapping: str | None = None, profile="continuous", overrides: dict | None = None,
                         record: dict | None = None, rate: float | None = None,
                         lifetime_only: bool = False) -> dict:
    """kvnand.reliability.reliability() of a point, with what only evaluate() knows: the G1/G2 split a
    ':auto' system picks for speed (the one whose flash is aged) and, when the profile gives no decode rate,
    the system's own rate at the session's mean decode context (evaluate()'s tokens_per_s there, from the
    decode step alone: no prefill, counts or energy are needed for it).

    `record`: the caller's evaluate() result of this very point (same system, model, context, precision and
    overrides), if it has one; an ':auto' system then takes the split it chose instead of ranking them again.
    `rate`: the system's decode rate at the session's mean decode context when the caller has it (NaN: that
    point does not fit), as decode_rate() gives it (e.g. a grid's, from evaluate_many at those contexts).
    `lifetime_only`: kvnand.reliability.lifetime()'s fields only (no bit-error model)."""
    from kvnand.reliability import lifetime, reliability
    from kvnand.reliability.disturb import system_overrides
    from kvnand.reliability.profile import get_profile, session

    overrides = dict(overrides or {})
    sys_over = {**system_overrides(overrides), **({"mapping": mapping} if mapping is not None else {})}
    stem, auto = split_auto(system)
    if auto:
        chosen = (record if record is not None else
                  evaluate(system, model, context, precision=precision, overrides=sys_over))["config"]
        system = stem
        if "g2_dies" in chosen:
            overrides["g2_dies"] = chosen["g2_dies"]
            sys_over["g2_dies"] = chosen["g2_dies"]
    prof = get_profile(profile, overrides)
    if rate is not None:
        rate = None if math.isnan(rate) else rate
    elif prof.tokens_per_s is None and isinstance(context, int) and not isinstance(context, bool) and context > 0:
        rate = decode_rate(system, model, session(prof, context).mean_decode_context, precision, sys_over)
    return (lifetime if lifetime_only else reliability)(system, model, context, precision=precision, mapping=mapping,
                                                         profile=profile, overrides=overrides, tokens_per_s=rate)


def decode_rate(system: str, model: str, context: int, precision: str | None = None,
                overrides: dict | None = None) -> float | None:
    """evaluate(...)["tokens_per_s"] of a concrete system in fast mode (None when the point does not fit),
    from the decode step alone."""
    # reclaim 'auto' decodes with whichever reclaim is faster and fits, as evaluate() does
    times = [t for variant in _reclaims(dict(overrides or {}))
             if (t := _decode_latency(system, model, context, precision, variant)[0]) is not None]
    return 1.0 / min(times) if times else None
