"""Flash reliability under a usage profile: read disturb, refresh, P/E wear, bit errors and lifetime.

profile.py describes how the device is used (sessions, decode rate, hours/day, years). disturb.py counts
page reads per block for every die group. refresh.py decides when blocks are rewritten and what that
costs per token. endurance.py turns writes and refreshes into P/E per year and a lifetime. ecc.py turns
wear into RBER, UBER and read retries. `reliability()` (one `kvnand.reliability/1` result) and
`refresh_overhead()` (refresh cost per token, for evaluate()) are the entry points; `lifetime()` is the part of
`reliability()` a design-space search ranks by. Heavy modules load
on first call, so importing this package (the CLI does) stays cheap.
"""

from __future__ import annotations

import math


def reliability(system: str, model: str, context: int, *, precision: str | None = None, mapping: str | None = None,
                profile="continuous", overrides: dict | None = None, tokens_per_s: float | None = None) -> dict:
    """One point's reliability record (keys of DESIGN.md's `kvnand.reliability/1` results, and more).

    `max_reads_per_block` is the largest count a KV block reaches between erases without refresh (None
    when the KV cache is not in flash); weight blocks have no such bound and are reported per token.
    `overrides` takes system `--set` keys plus `profile.*` and `refresh.*` keys. The decode rate is the
    profile's, else `tokens_per_s` (kvnand.evaluation.evaluate_reliability measures the system's own).
    """
    from kvnand.reliability import refresh

    w, policy, rec = _start(system, model, context, precision, mapping, profile, overrides, tokens_per_s)
    if w.fit.oom:
        return rec
    plans, rate, wears, worst, kv_group = _wear(w, policy)
    tokens_per_day = rate * 3600 * w.profile.hours_per_day
    groups = [_group_record(w, g, p, wr, tokens_per_day) for g, p, wr in zip(w.groups, plans, wears, strict=True)]
    errs = max(groups, key=lambda x: x["uber"])
    writes = sum(x.write_erases_per_day for x in wears)
    refreshes = sum(x.refresh_erases_per_day for x in wears)
    cost = refresh.summary(plans, tokens_per_day)
    rec.update({
        "max_reads_per_block": kv_group.kv.max() if kv_group else None,
        "refreshes_per_day": cost.pop("refreshes_per_day"),
        "pe_cycles_per_year": worst.pe_cycles_per_year,
        "lifetime_years": _finite(worst.lifetime_years),
        "uber": errs["uber"],
        "rber_worst": errs["rber"], "codeword_failure_prob": errs["codeword_failure"],
        "expected_read_retries": errs["expected_read_retries"],
        "pe_budget": worst.pe_budget, "pe_cycles_over_profile": worst.pe_cycles_per_year * w.profile.years,
        "refresh_pe_share": refreshes / (writes + refreshes) if writes + refreshes else 0.0,
        "block_randomization": w.system.kv.block_randomization,
        "tokens_per_s": rate, "profile_years": w.profile.years,
        "refresh": {"policy": policy.trigger, **cost},
        "config": {"overrides": w.system_overrides},
        "groups": groups,
    })
    return rec


def lifetime(system: str, model: str, context: int, *, precision: str | None = None, mapping: str | None = None,
             profile="continuous", overrides: dict | None = None, tokens_per_s: float | None = None) -> dict:
    """What a design-space search ranks by, of reliability()'s record (the same values): `lifetime_years`,
    `max_reads_per_block`, `read_disturb_limit` and whether the point fits; the bit-error model (UBER, RBER,
    read retries of every group's worst block) is not run."""
    w, policy, rec = _start(system, model, context, precision, mapping, profile, overrides, tokens_per_s)
    out = {k: rec[k] for k in ("oom", "max_reads_per_block", "read_disturb_limit", "lifetime_years")}
    if not w.fit.oom:
        _, _, _, worst, kv_group = _wear(w, policy)
        out.update(max_reads_per_block=kv_group.kv.max() if kv_group else None,
                   lifetime_years=_finite(worst.lifetime_years))
    return out


def _start(system, model, context, precision, mapping, profile, overrides, tokens_per_s):
    """(the workload's stress on every die group, the refresh policy, the record's fields known before wear)."""
    from kvnand.reliability import refresh
    from kvnand.reliability.disturb import workload

    w = workload(system, model, context, precision=precision, mapping=mapping, overrides=overrides,
                 profile=profile, tokens_per_s=tokens_per_s)
    rec = {"system": system, "model": w.model.name, "context": context, "mapping": w.mapping,
           "precision": w.precision.name, "profile": w.profile.name, "oom": w.fit.oom, "oom_reason": w.fit.reason,
           "max_reads_per_block": None,
           "read_disturb_limit": _kv_cell(w.system).read_disturb_limit,
           "refreshes_per_day": None, "pe_cycles_per_year": None, "lifetime_years": None, "uber": None}
    return w, refresh.get_policy(overrides), rec


def _wear(w, policy) -> tuple:
    """(refresh plans, decode rate, wear of every group, the group that wears out first, the KV's group)."""
    from kvnand.reliability import endurance, refresh

    plans = refresh.plan(w, policy)
    rate = w.tokens_per_s()
    wears = endurance.wear(w, plans, rate)
    worst = max(wears, key=lambda x: x.pe_cycles_per_year / x.pe_budget)
    return plans, rate, wears, worst, next((g for g in w.groups if g.kv is not None), None)


def _group_record(w, g, p, wr, tokens_per_day: float) -> dict:
    """One die group: its blocks' reads, refreshes, wear, and the errors of its worst block state (end-of-
    profile P/E, reads up to the refresh threshold, the oldest data it holds)."""
    from kvnand.reliability import ecc
    from kvnand.reliability.profile import DAYS_PER_YEAR, SECONDS_PER_DAY

    reads = age = 0.0
    if g.kv is not None:  # a session's KV lives for its decode steps, idle hours included
        reads, age = min(p.threshold, g.kv.max()), w.session.decode_steps / tokens_per_day * SECONDS_PER_DAY
    if g.weights is not None:  # weights live until their next refresh (or for the whole profile)
        hot = g.weights.max()
        reads = max(reads, min(p.threshold, hot * tokens_per_day * DAYS_PER_YEAR * w.profile.years))
        age = max(age, min(p.threshold / hot / tokens_per_day * SECONDS_PER_DAY,
                           w.profile.years * ecc.SECONDS_PER_YEAR))
    pe = min(wr.pe_budget, wr.pe_cycles_per_year * w.profile.years)
    cell = g.group.die.cell
    errors = ecc.errors(cell, g.group.array.ecc, g.group.page_bytes, pe, reads, age)
    return {
        "group": g.group.name, "dies": g.group.dies,
        "holds": "+".join(x for x, b in (("weights", g.weights), ("kv", g.kv)) if b is not None),
        "cell": cell.mode, "read_disturb_limit": cell.read_disturb_limit, "refresh_threshold_reads": p.threshold,
        "kv_reads_per_block": g.kv.summary(cell.read_disturb_limit) if g.kv is not None else None,
        "weight_reads_per_block_per_token": g.weights.max() if g.weights is not None else None,
        "refreshes_per_day": p.refreshes_per_token * tokens_per_day,
        "blocks": wr.blocks, "pe_budget": wr.pe_budget, "pe_cycles_per_year": wr.pe_cycles_per_year,
        "write_erases_per_day": wr.write_erases_per_day, "refresh_erases_per_day": wr.refresh_erases_per_day,
        "gc_erases_per_day": wr.gc_erases_per_day,
        "lifetime_years": _finite(wr.lifetime_years),
        "worst_state": {"pe_cycles": pe, "reads": reads, "retention_s": age},
        **{k: _finite(v) for k, v in errors.items()},
    }


def refresh_overhead(system: str, model: str, context: int, precision: str | None = None,
                     overrides: dict | None = None, profile="continuous", tokens_per_s: float | None = None) -> dict:
    """Refresh cost per decode token (see kvnand.reliability.refresh.refresh_overhead)."""
    from kvnand.reliability.refresh import refresh_overhead as _overhead

    return _overhead(system, model, context, precision, overrides, profile, tokens_per_s)


def _kv_cell(cfg):
    """The cell mode of the dies that hold the KV cache (the weights' dies when the KV is elsewhere)."""
    return (cfg.nand if cfg.kv.store in ("nand", "csd") else cfg.flash).die.cell


def _finite(x):
    return x if x is None or math.isfinite(x) else None
