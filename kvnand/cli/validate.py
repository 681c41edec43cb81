"""The `kvnand validate` command: published results (validation/cases) against the model, as a table or
JSON; parsing and printing only (the cases, the runner and the verdicts are kvnand.study.validate's)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from kvnand.cli.options import Format


def _fmt(v: Any, metric: str = "") -> str:
    from kvnand.study.validate import COST_METRICS

    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if metric in ("kv_bytes", "weight_bytes"):
        return f"{v / 1e9:.2f} GB"
    if metric in COST_METRICS and metric != "cost_ratio":
        return f"${v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}"


def _band(r) -> str:
    if r.tolerance is None:
        return "exact"
    sign = {"band": "+-", "at_least": ">= -", "at_most": "<= +"}[r.check]
    return f"{sign}{r.tolerance:.0%}"


def print_table(rows: list, summ: dict) -> None:
    from rich.table import Table

    from kvnand.present.terminal import show

    t = Table(title="kvnand validate: published results vs the model")
    for col in ("case", "metric", "expected", "simulated", "rel. err", "band", "status", "result", "detail"):
        t.add_column(col, justify="right" if col in ("expected", "simulated", "rel. err", "band") else "left",
                     overflow="fold")
    for r in rows:
        if r.status == "disagrees":
            res = "[red]AGREES[/red]" if r.passed else "[yellow]disagrees[/yellow]"
        else:
            res = "[green]pass[/green]" if r.passed else ("[red]FAIL[/red]" if r.status == "enforced" else
                                                           "[yellow]miss[/yellow]")
        err = f"{r.rel_error:+.1%}" if r.rel_error is not None else "-"
        t.add_row(r.id, r.metric, _fmt(r.expected, r.metric), _fmt(r.simulated, r.metric), err, _band(r), r.status,
                  res, r.detail)
    show(t, optional=("status", "band", "detail"), text_columns=("case", "detail"))
    m = summ["mape"]
    shown = "-" if m is None else f"{m:.1%}"
    typer.echo(f"enforced: {summ['enforced_passed']}/{summ['enforced']} passed; tracked: {summ['tracked_passed']}/"
               f"{summ['tracked']} passed; documented disagreements: {summ['disagrees']} (agreeing now: "
               f"{summ['disagrees_agreeing']}); MAPE (enforced numeric, disagreements included): {shown}; "
               f"calibration constants: {summ['calibration_constants']}")


app = typer.Typer()


@app.command()
def validate(
    format: Annotated[Format, typer.Option("--format")] = Format.table,
    cases: Annotated[list[str] | None, typer.Option(
        "--cases", help="case files or directories (default: validation/cases)")] = None,
):
    """Published results (validation/cases/*.yaml) against the model; exit 1 when an enforced case fails or a
    documented disagreement (validation/NOTES.md) agrees now."""
    from kvnand.study.validate import SCHEMA, calibration_constants, failed, load_cases, mark_fitted, run, summary

    loaded = load_cases([Path(p) for p in cases] if cases else None)
    rows = run(loaded)
    n_cal = calibration_constants()
    stale = mark_fitted(rows, loaded)
    if stale and not cases:
        typer.echo(f"kvnand: warning: arch_configs/calibration.yaml names fitted_on cases that do not exist: "
                   f"{', '.join(stale)}", err=True)
    summ = summary(rows, n_cal)
    if format == Format.json:
        from kvnand.io import emit_json

        emit_json({"schema": SCHEMA, "cases": [r.as_json() for r in rows], "mape": summ["mape"],
                   "calibration_constants": n_cal})
    else:
        print_table(rows, summ)
    if failed(summ):
        sys.exit(1)  # SystemExit: typer's Exit code would be dropped by cli.main (standalone_mode=False)
