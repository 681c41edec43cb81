"""`kvnand dse run|pareto|grid|show`: the design-space exploration commands (see kvnand/study/dse/__init__.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from kvnand.cli.options import TableFormat

app = typer.Typer()
dse = typer.Typer(no_args_is_help=True, help="Design-space exploration: constrained multi-objective search "
                  "(optuna) or an exhaustive grid over a YAML search space; Pareto front vs published designs.")
app.add_typer(dse, name="dse")

SpaceArg = Annotated[Path, typer.Argument(help="Search space YAML (e.g. dse/kvnand-8die-70b.yaml)")]


def _out(out: Path | None, space) -> Path:
    return out if out is not None else Path("out") / "dse" / space.name


@dse.command("run")
def run(
    space_file: SpaceArg,
    trials: Annotated[int | None, typer.Option(help="Global trial budget of the study (default: the space's)")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine")] = 1,
    storage: Annotated[str | None, typer.Option(help="Study storage: a journal file (processes on one machine) "
                                                "or a URL, e.g. postgresql://user@host/db (many machines); "
                                                "default: study.journal in --out")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the space's name)")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler seed (worker i uses seed + i)")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: out/dse/<space name>)")] = None,
):
    """Search the space with optuna (resumable; several workers or machines may share one study)."""
    from kvnand.present.terminal import progress_bar
    from kvnand.study.dse.space import load_space
    from kvnand.study.dse.study import run as run_study

    space = load_space(space_file)
    with progress_bar("dse run: trials") as update:
        summary = run_study(space, _out(out, space), trials=trials, workers=workers, storage=storage,
                            study_name=study, seed=seed, log=typer.echo, progress=update)
    _print_summary(summary)
    rate = summary["trials_per_s"]
    typer.echo(f"{summary['trials_this_run']} trials this run in {summary['elapsed_s']:.1f} s"
               + (f" ({rate:.1f} trials/s with {summary['workers']} worker(s))" if rate else ""))
    typer.echo(f"open the study: {summary['dashboard']}")
    if summary["trials"] and summary["failed"] == summary["trials"]:
        raise typer.Exit(1)


@dse.command("grid")
def grid(
    space_file: SpaceArg,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: out/dse/<space name>-grid)")] = None,
    workers: Annotated[int, typer.Option(help="Evaluation processes (the grid's chunks are split between them)")] = 1,
    study: Annotated[bool, typer.Option(help="Also store every design as an optuna study (study.db), for `dse "
                                        "pareto` and optuna-dashboard; --no-study for large grids (grid.npz and "
                                        "trials.csv hold every design)")] = True,
    plot: Annotated[bool, typer.Option("--plot", help="Also draw pareto.png and the Fig. 15 heatmap "
                                       "(heatmap.png); without it no plotting library is loaded")] = False,
):
    """Evaluate every design of a discrete space; the outputs of `run` and grid.npz (compressed columns of
    every design); with --plot also the Pareto scatter and the Fig. 15 heatmap."""
    from kvnand.present.terminal import progress_bar
    from kvnand.study.dse.grid import run_grid
    from kvnand.study.dse.space import load_space

    space = load_space(space_file)
    with progress_bar("dse grid: designs") as update:
        summary = run_grid(space, out if out is not None else Path("out") / "dse" / f"{space.name}-grid", workers,
                           log=typer.echo, progress=update, study=study, figures=plot)
    _print_summary(summary)
    typer.echo(f"{summary['designs']} designs in {summary['elapsed_s']:.1f} s ({summary['designs_per_s']:.1f}/s)")
    if summary["storage"]:
        typer.echo(f"open the study: {summary['dashboard']} (or kvnand dse pareto --storage {summary['storage']} "
                   f"--study {summary['study']})")


@dse.command("pareto")
def pareto(
    storage: Annotated[str, typer.Option(help="Study storage: a study.journal file, sqlite:///PATH.db or "
                                         "postgresql://...")],
    study: Annotated[str, typer.Option(help="Study name")],
    format: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
    plot: Annotated[Path | None, typer.Option(help="Pareto scatter FILE.png|svg|pdf")] = None,
):
    """The feasible Pareto front of a stored study, from `dse run` or `dse grid` (and how the published
    designs compare)."""
    from kvnand.io import check_output
    from kvnand.present.figures import SUFFIXES
    from kvnand.study.dse import export
    from kvnand.study.dse.study import load_existing, objective_directions

    check_output(plot, "--plot", suffixes=SUFFIXES)
    st = load_existing(storage, study)
    objectives, dirs = objective_directions(st)
    rows = export.rows_from_study(st, objectives)
    front = export.pareto(rows, dirs)
    if plot is not None:
        export.pareto_figure(plot, rows, front, objectives)
    if format == TableFormat.table:
        _front_table(rows, front, objectives, dirs)
    elif format == TableFormat.csv:
        typer.echo(export.rows_csv(front, objectives), nl=False)
    else:
        _pareto_json(study, rows, front, objectives, dirs)
    if plot is not None:
        typer.echo(f"wrote {plot}", err=True)


@dse.command("show")
def show(
    trial: Annotated[int, typer.Argument(help="Trial number")],
    storage: Annotated[str, typer.Option(help="Study storage: a study.journal file, sqlite:///PATH.db or "
                                         "postgresql://...")],
    study: Annotated[str, typer.Option(help="Study name")],
):
    """The full report of one trial's design as JSON (re-evaluated from its parameters: every workload point's
    record; a stored trial keeps only metrics, constraints and which points ran out of memory)."""
    from kvnand.io import emit_json
    from kvnand.study.dse.objectives import jsonable
    from kvnand.study.dse.study import trial_report

    emit_json(jsonable(trial_report(storage, study, trial)))


def _front_table(rows, front, objectives: list[str], dirs: list[str]) -> None:
    from rich.table import Table

    from kvnand.present.terminal import show

    feasible = sum(r.feasible for r in rows)
    t = Table(title=f"Pareto front: {len(front)} of {feasible} feasible designs ({len(rows)} trials)")
    t.add_column("trial", justify="right")
    t.add_column("published design")
    for o, d in zip(objectives, dirs, strict=True):
        t.add_column(f"{o} ({d[:3]})", justify="right")
    t.add_column("parameters")
    for r in front:
        t.add_row(str(r.number), r.label or "", *(_fmt(v) for v in r.values),
                  ", ".join(f"{k}={v}" for k, v in r.params.items()))
    show(t, optional=("published design",), text_columns=("parameters",))


def _pareto_json(study, rows, front, objectives, dirs) -> None:
    from kvnand.io import emit_json
    from kvnand.study.dse import export
    from kvnand.study.dse.objectives import jsonable

    emit_json(jsonable({"schema": "kvnand.dse.pareto/1", "study": study, "objectives": objectives, "directions": dirs,
               "trials": len(rows), "pareto": [{"number": r.number, "label": r.label,
                                                "values": dict(zip(objectives, r.values, strict=True)),
                                                "metrics": r.metrics, "params": r.params} for r in front],
               "known_designs": export.compare_known(rows, front, objectives, dirs)}))


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"


def _print_summary(s: dict) -> None:
    objs = s["objectives"]
    typer.echo(f"{s['trials']} designs: {s['feasible']} feasible, {s['infeasible']} infeasible, {s['failed']} failed")
    if s["infeasible"] and s["infeasible"] >= s["feasible"]:
        typer.echo(f"warning: most of this space is infeasible ({s['infeasible']} of {s['trials']} designs); "
                   "loosen the constraints or change the workload or the parameter ranges")
    for w in s["infeasible_why"]:
        points = ", ".join(f"{p} in {n}" for p, n in list(w["points"].items())[:4])
        typer.echo(f"  {w['constraint']}: {w['designs']} design(s)" + (f" (out of memory at {points})" if points
                                                                       else ""))
    goals = ", ".join(f"{o} ({d[:3]})" for o, d in zip(objs, s["directions"], strict=True))
    typer.echo(f"Pareto front ({len(s['pareto'])} designs; {goals}):")
    for p in s["pareto"]:
        name = f"#{p['number']}" + (f" {p['label']}" if p["label"] else "")
        vals = "  ".join(f"{o}={_fmt(p['values'][o])}" for o in objs)
        params = ", ".join(f"{k}={v}" for k, v in p["params"].items())
        typer.echo(f"  {name}: {vals}  [{params}]")
    if s["known_designs"]:
        typer.echo("published designs:")
    for k in s["known_designs"]:
        if k["status"] == "dominated":
            by = f"#{k['dominated_by']}" + (f" {k['dominated_by_label']}" if k["dominated_by_label"] else "")
            change = ", ".join(f"{o} {(-g if d == 'minimize' else g) + 0.0:+.1%}"
                               for (o, g), d in zip(k["gain"].items(), s["directions"], strict=True))
            typer.echo(f"  {k['label']} (#{k['number']}): dominated by {by} ({change})")
        elif k["status"] in ("infeasible", "failed"):
            typer.echo(f"  {k['label']} (#{k['number']}): {k['status']}: {'; '.join(k['violated'])}")
        else:
            typer.echo(f"  {k['label']} (#{k['number']}): on the Pareto front")
    typer.echo("files: " + ", ".join(str(Path(s["out"]) / f) for f in s["files"]))
