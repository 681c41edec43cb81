"""`kvnand reliability`: read disturb, refresh, P/E wear, UBER and lifetime over systems x models x contexts."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

app = typer.Typer()


class Format(StrEnum):
    table = "table"
    json = "json"


@app.command()
def reliability(
    systems: Annotated[str, typer.Option(help="comma-separated system presets")] = "kvnand-c16,kvnand-d",
    models: Annotated[str, typer.Option(help="comma-separated zoo names or paths to HF config.json")] = "llama3.1-8b",
    contexts: Annotated[str, typer.Option(help="context lengths, e.g. 10k,100k")] = "10k,100k",
    mapping: Annotated[str | None, typer.Option(help="KV mapping: naive or page (default: each system's)")] = None,
    profile: Annotated[str, typer.Option(help="usage profile: continuous, chat or long-doc")] = "continuous",
    precision: Annotated[str | None, typer.Option(help="bf16, w8a8 or w4a16 (default: each system's)")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="key.path=value (repeatable): system keys, profile.FIELD or refresh.FIELD")] = None,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
):
    """Max reads per KV block against the read-disturb limit, refreshes/day, P/E per year, lifetime and UBER.

    Profiles: continuous (24 h/day), chat (8-turn conversations, 2 h/day), long-doc (8 h/day); their decode
    rate is each point's own unless --set profile.tokens_per_s=N. Refresh: --set refresh.trigger=reads|rber,
    refresh.read_fraction, refresh.uber_target, refresh.retention_years.
    """
    from kvnand.cli import emit_json, parse_sets
    from kvnand.errors import InputError
    from kvnand.evaluation import evaluate_reliability as point
    from kvnand.reliability.disturb import MAPPINGS, system_overrides
    from kvnand.reliability.profile import get_profile
    from kvnand.reliability.refresh import get_policy
    from kvnand.report.sweep import check_inputs, parse_contexts, split_list

    overrides = parse_sets(set_)
    system_list, model_list = split_list(systems, "--systems"), split_list(models, "--models")
    context_list = parse_contexts(contexts)
    # fail on any bad input before the first point runs
    check_inputs(system_list, model_list, precision, system_overrides(overrides))
    get_profile(profile, overrides)
    get_policy(overrides)
    if mapping is not None and mapping not in MAPPINGS:
        raise InputError("unknown KV mapping", key="--mapping", value=mapping, allowed=", ".join(MAPPINGS))
    results = [point(s, m, c, precision=precision, mapping=mapping, profile=profile, overrides=overrides)
               for m in model_list for c in context_list for s in system_list]
    if format == Format.json:
        emit_json({"schema": "kvnand.reliability/1", "results": results})
        return
    _table(results, profile)


def _table(results: list[dict], profile: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    t = Table(title=f"flash reliability, profile '{profile}' (KV reads between erases; weights refreshed by reads)")
    for col in ("system", "model", "context", "mapping", "max reads/KV block", "limit", "weight reads/blk/token",
                "refreshes/day", "refresh time", "P/E per year", "lifetime (y)", "UBER"):
        t.add_column(col, justify="left" if col in ("system", "model", "mapping") else "right")
    for r in results:
        if r["oom"]:
            t.add_row(r["system"], r["model"], str(r["context"]), r["mapping"] or "-", "out of memory",
                      *["-"] * 7)
            continue
        weights = max((g["weight_reads_per_block_per_token"] or 0 for g in r["groups"]), default=0)
        t.add_row(r["system"], r["model"], str(r["context"]), r["mapping"] or "-",
                  num(r["max_reads_per_block"], ".3g"), num(r["read_disturb_limit"], ".0e"),
                  num(weights or None, ".0f"), num(r["refreshes_per_day"], ".3g"),
                  f"{r['refresh']['seconds_per_token'] * r['tokens_per_s']:.2%}",
                  num(r["pe_cycles_per_year"], ".3g"), num(r["lifetime_years"], ".3g"), num(r["uber"], ".1e"))
    console = Console()
    if not console.is_terminal:
        console.width = 200  # a redirected table should not wrap at 80 columns
    console.print(t)
