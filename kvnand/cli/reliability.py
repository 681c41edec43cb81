"""`kvnand reliability`: read disturb, refresh, P/E wear, UBER and lifetime over systems x models x contexts.

Lifetime in years depends on how fast a design decodes (a slow design wears slowly), so next to each
point's own rate the table shows tokens/s, the tokens decoded over the lifetime (rate-independent when
writes dominate the wear) and the lifetime at one common decode rate for every design: the slowest
point's rate unless `--rate` says otherwise (each design can sustain it).
"""

from __future__ import annotations

import math
from typing import Annotated

import typer

from kvnand.cli.options import Format

app = typer.Typer()


@app.command()
def reliability(
    systems: Annotated[str, typer.Option(help="comma-separated system presets")] = "kvnand-c16,kvnand-d",
    models: Annotated[str, typer.Option(help="comma-separated zoo names or paths to HF config.json")] = "llama3.1-8b",
    contexts: Annotated[str, typer.Option(help="context lengths, e.g. 10k,100k")] = "10k,100k",
    mapping: Annotated[str | None, typer.Option(help="KV mapping: naive, page or both as naive,page "
                                                     "(default: each system's)")] = None,
    profile: Annotated[str, typer.Option(help="usage profile: continuous, chat or long-doc")] = "continuous",
    precision: Annotated[str | None, typer.Option(help="bf16, w8a8 or w4a16 (default: each system's)")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="key.path=value (repeatable): system keys, profile.FIELD or refresh.FIELD")] = None,
    rate: Annotated[float | None, typer.Option(help="common decode rate (tokens/s) for the fair lifetime column "
                                                   "(default: the slowest point's own rate)")] = None,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
):
    """Max reads per KV block against the read-disturb limit, refreshes/day, P/E per year, lifetime and UBER.

    Profiles: continuous (24 h/day), chat (8-turn conversations, 2 h/day), long-doc (8 h/day); their decode
    rate is each point's own unless --set profile.tokens_per_s=N. Refresh: --set refresh.trigger=reads|rber,
    refresh.read_fraction, refresh.uber_target, refresh.retention_years.
    """
    from kvnand.errors import InputError
    from kvnand.evaluation import evaluate_reliability as point
    from kvnand.io import emit_json
    from kvnand.reliability.disturb import MAPPINGS, system_overrides
    from kvnand.reliability.profile import get_profile
    from kvnand.reliability.refresh import get_policy
    from kvnand.scenario import parse_contexts, parse_sets, split_list
    from kvnand.study.sweep import check_inputs

    overrides = parse_sets(set_)
    system_list, model_list = split_list(systems, "--systems"), split_list(models, "--models")
    context_list = parse_contexts(contexts)
    # fail on any bad input before the first point runs
    check_inputs(system_list, model_list, precision, system_overrides(overrides))
    get_profile(profile, overrides)
    get_policy(overrides)
    mappings = [None] if mapping is None else split_list(mapping, "--mapping")
    for m in mappings:
        if m is not None and m not in MAPPINGS:
            raise InputError("unknown KV mapping", key="--mapping", value=m, allowed=", ".join(MAPPINGS))
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise InputError("a decode rate is a positive number of tokens/s", key="--rate", value=rate)
    results = [point(s, m, c, precision=precision, mapping=km, profile=profile, overrides=overrides)
               for m in model_list for c in context_list for s in system_list for km in mappings]
    common = _common_rate(results, rate)
    hours = get_profile(profile, overrides).hours_per_day
    for r in results:
        if r["oom"]:
            continue
        at = r if math.isclose(r["tokens_per_s"], common) else point(
            r["system"], r["model"], r["context"], precision=precision, mapping=r["mapping"], profile=profile,
            overrides={**overrides, **r["config"]["overrides"], "profile.tokens_per_s": common})  # the split aged
        r["tokens_per_lifetime"] = _tokens(r["lifetime_years"], r["tokens_per_s"], hours)
        r["at_common_rate"] = {"tokens_per_s": common, "lifetime_years": at["lifetime_years"],
                               "tokens_per_lifetime": _tokens(at["lifetime_years"], common, hours),
                               "pe_cycles_per_year": at["pe_cycles_per_year"], "uber": at["uber"]}
    if format == Format.json:
        emit_json({"schema": "kvnand.reliability/1", "common_tokens_per_s": common, "results": results})
        return
    _table(results, profile, common, rate is None)


def _common_rate(results: list[dict], rate: float | None) -> float | None:
    """The decode rate every design is compared at: --rate, else the slowest point's own rate."""
    if rate is not None:
        return rate
    return min((r["tokens_per_s"] for r in results if not r["oom"]), default=None)


def _tokens(lifetime_years: float | None, tokens_per_s: float, hours_per_day: float) -> float | None:
    """Tokens decoded over a lifetime (None: the flash outlives any horizon)."""
    from kvnand.reliability.profile import DAYS_PER_YEAR

    if lifetime_years is None:
        return None
    return lifetime_years * DAYS_PER_YEAR * hours_per_day * 3600 * tokens_per_s


def _table(results: list[dict], profile: str, common: float | None, slowest: bool) -> None:
    from rich.table import Table

    from kvnand.present.terminal import show

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    fair = f"lifetime @{num(common, '.3g')} tok/s (y)"
    t = Table(title=f"flash reliability, profile '{profile}' (KV reads between erases; weights refreshed by reads)",
              caption=f"lifetime (y) and P/E at each point's own decode rate; tokens/lifetime and '{fair}' compare "
                      f"designs fairly ({'the slowest point' if slowest else '--rate'}: every design runs "
                      f"{num(common, '.3g')} tok/s)")
    columns = ("system", "model", "context", "mapping", "tokens/s", "max reads/KV block", "mean reads/KV block",
               "limit",
               "weight reads/blk/token", "refreshes/day", "refresh time", "P/E per year", "lifetime (y)",
               "tokens/lifetime", fair, "UBER")
    for col in columns:
        t.add_column(col, justify="left" if col in ("system", "model", "mapping") else "right")
    for r in results:
        if r["oom"]:
            t.add_row(r["system"], r["model"], str(r["context"]), r["mapping"] or "-", "out of memory",
                      *["-"] * (len(columns) - 5))
            continue
        weights = max((g["weight_reads_per_block_per_token"] or 0 for g in r["groups"]), default=0)
        # the mean drops with a sparse KV policy's page-read fraction; the max stays (persistent heavy hitters)
        kv_mean = next((g["kv_reads_per_block"]["mean"] for g in r["groups"] if g["kv_reads_per_block"]), None)
        t.add_row(r["system"], r["model"], str(r["context"]), r["mapping"] or "-", num(r["tokens_per_s"], ".3g"),
                  num(r["max_reads_per_block"], ".3g"), num(kv_mean, ".3g"), num(r["read_disturb_limit"], ".0e"),
                  num(weights or None, ".0f"), num(r["refreshes_per_day"], ".3g"),
                  f"{r['refresh']['seconds_per_token'] * r['tokens_per_s']:.2%}",
                  num(r["pe_cycles_per_year"], ".3g"), num(r["lifetime_years"], ".3g"),
                  num(r["tokens_per_lifetime"], ".3g"), num(r["at_common_rate"]["lifetime_years"], ".3g"),
                  num(r["uber"], ".1e"))
    show(t, optional=("P/E per year", "UBER", "max reads/KV block", "mean reads/KV block", "refreshes/day",
                      "refresh time", "limit", "weight reads/blk/token"))
