"""`kvnand report`: the paper's comparison (or any grid) as a table, JSON or CSV, figures and a Chrome trace.

Everything the user typed is checked before the first point runs, and every output is computed before
the first file is written, so bad input leaves no file behind; each file is written atomically.
"""

from __future__ import annotations

import csv
import io
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kvnand.cli.options import TableFormat
from kvnand.errors import InputError
from kvnand.io import check_output, json_text, write_text
from kvnand.present.figures import SUFFIXES
from kvnand.present.terminal import progress_bar
from kvnand.scenario import CONTEXT_HELP, context_label, parse_contexts, split_list
from kvnand.study import sweep
from kvnand.study.cache import Cache

app = typer.Typer()


class Mode(StrEnum):
    fast = "fast"
    event = "event"


def _as_json(results: list[dict]) -> str:
    return json_text({"schema": "kvnand.report/1", "results": results}, indent=2)


def _as_csv(results: list[dict]) -> str:
    from kvnand.present.table import csv_rows

    columns, rows = csv_rows(results)
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _trace(points: list[sweep.SweepPoint], results: list[dict], precision, overrides) -> str:
    """Chrome trace (JSON text) of the first point that fits, re-run in event mode with its timeline."""
    from kvnand.evaluation import evaluate
    from kvnand.present.trace import chrome_trace

    p = next((p for p, r in zip(points, results, strict=True) if not r["oom"]), None)
    if p is None:
        raise InputError("nothing to trace: every point is out of memory", key="--trace")
    r = evaluate(p.system, p.model, p.context, precision=precision, mode="event", overrides=overrides,
                 with_timeline=True)
    label = f"{r['system']} | {r['model']} | {context_label(r['context'])} tokens | {r['precision']}"
    return json_text(chrome_trace([(label, r.timeline)]), separators=(",", ":"))


def _references(results: list[dict], mode: str, overrides: dict, cache: Cache, refresh: str | None) -> list[dict]:
    """The reference systems at the precisions other systems ran at, so every speedup is at equal precision."""
    from kvnand.present.table import missing_references

    out = []
    for prec, pts in missing_references(results).items():
        out += sweep.run(pts, precision=prec, mode=mode, overrides=overrides, cache=cache, refresh=refresh,
                         progress=progress_bar)
    return out


def _policy_sweeps(points, results, precision, mode, overrides, cache, refresh, named,
                   spec: dict) -> dict[str, list[dict]]:
    """The grid under the dense policy and each policy the figure compares (the sweep's own results stand for
    the policy it ran with)."""
    from kvnand.config.loader import is_policy_key
    from kvnand.workload.kv_policy import policy_names

    ran = named or "dense"
    base = {k: v for k, v in overrides.items() if not is_policy_key(k)}  # each policy as shipped
    out = {}
    for name in ["dense", *([named] if named else [p for p in policy_names() if p != "dense"])]:
        out[name] = results if name == ran else sweep.run(points, precision=precision, mode=mode,
                                                          overrides={**base, "kv_policy": name}, cache=cache,
                                                          refresh=refresh, spec=spec, progress=progress_bar)
    return out


@app.command()
def report(
    systems: Annotated[str, typer.Option(help="comma-separated system presets (kvnand-d:auto picks the best "
                                              "G1/G2 split)")] = ",".join(sweep.PAPER_SYSTEMS),
    models: Annotated[str, typer.Option(help="comma-separated zoo names or paths to HF config.json")]
    = ",".join(sweep.PAPER_MODELS),
    contexts: Annotated[str | None, typer.Option(help=CONTEXT_HELP + " (default 128,1k,10k,100k)")] = None,
    precision: Annotated[str | None, typer.Option(help="bf16, w8a8 or w4a16 (default: each system's)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key.path=value override (repeatable)")] = None,
    format: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
    plot: Annotated[Path | None, typer.Option(help="figure FILE.png|svg|pdf: tokens/s (+ FILE-speedup, FILE-energy, "
                                                   "FILE-breakdown)")] = None,
    trace: Annotated[Path | None, typer.Option(help="Chrome trace JSON (Perfetto) of the first point that fits, "
                                                    "in event mode")] = None,
    mode: Annotated[Mode, typer.Option(help="fast (analytic) or event (scheduled timeline)")] = Mode.fast,
    out: Annotated[Path | None, typer.Option(help="also write report.json and report.csv into this directory")]
    = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="recompute every point (and store nothing)")] = False,
    refresh: Annotated[str | None, typer.Option(help="add the read-disturb refresh a usage profile needs "
                                                     "(e.g. continuous, chat) to latency and energy")] = None,
    batch: Annotated[str | None, typer.Option(help="sequences decoded together per step, comma-separated for a "
                                                   "sweep (e.g. 1,2,4,8; with --plot also FILE-batch)")] = None,
    batch_contexts: Annotated[str | None, typer.Option(help="each sequence's own context, comma-separated and "
                                                            "cycled over the batch (sequence i has the (i mod n)-th; "
                                                            "every --batch at least n, default n); the point's "
                                                            "context is the longest (no --contexts)")] = None,
    spec_draft: Annotated[str | None, typer.Option(help="speculative decoding: the draft model (zoo name or "
                                                        "config.json)")] = None,
    spec_k: Annotated[int | None, typer.Option(help="draft tokens verified per step")] = None,
    spec_accept: Annotated[float | None, typer.Option(help="probability a draft token is accepted (0 <= a < 1; "
                                                           "from a source, never fitted)")] = None,
    kv_policy: Annotated[str | None, typer.Option("--kv-policy", help="KV-cache policy: a shipped one (dense, "
                                                  "kivi-2bit, kivi-4bit, quest, h2o, sparf) or a YAML path; "
                                                  "--set kv_policy.FIELD=... changes its fields")] = None,
    policy_plot: Annotated[Path | None, typer.Option(help="figure FILE.png|svg|pdf: tokens/s and J/token vs "
                                                          "context per system, dense vs each shipped KV policy "
                                                          "(vs the --kv-policy one only, when given)")] = None,
):
    """Decode tokens/s, ms/token, J/token, speedups, TTFT and bottleneck over systems x models x contexts.

    With no options: the KVNAND paper's comparison (Fig. 12), with geomean speedups per context.
    """
    from kvnand.scenario import parse_sets

    system_list = split_list(systems, "--systems")
    model_list = split_list(models, "--models")
    if batch_contexts is not None and contexts is not None:
        raise InputError("the point's context is the longest of --batch-contexts", key="--contexts", value=contexts,
                         allowed="--contexts or --batch-contexts, not both")
    context_list = parse_contexts(contexts or "128,1k,10k,100k")
    overrides = parse_sets(set_)
    if kv_policy is not None:
        overrides["kv_policy"] = kv_policy
    sweep.check_inputs(system_list, model_list, precision, overrides)
    if refresh is not None:
        from kvnand.reliability.profile import get_profile

        get_profile(refresh)  # an unknown profile is an InputError before any point runs
    batches, spec = _decode_options(batch, spec_draft, spec_k, spec_accept, refresh)
    mix = _batch_contexts(batch_contexts, batches, overrides, policy_plot is not None)
    if mix is not None and batches == [None]:
        batches = [len(mix)]
    check_output(plot, "--plot", suffixes=SUFFIXES)
    check_output(policy_plot, "--policy-plot", suffixes=SUFFIXES)
    check_output(trace, "--trace")
    check_output(out, "--out", directory=True)
    if trace is not None and (batches != [None] or spec):
        raise InputError("the trace is of a plain decode step", key="--trace",
                         allowed="--trace without --batch and --spec-draft")

    points = sweep.grid(system_list, model_list, context_list, batches, mix)
    cache = Cache(enabled=not no_cache)
    results = sweep.run(points, precision=precision, mode=mode.value, overrides=overrides, cache=cache,
                        refresh=refresh, spec=spec, progress=progress_bar)
    references = _references(results, mode.value, overrides, cache, refresh)
    trace_json = _trace(points, results, precision, overrides) if trace else None
    by_policy = _policy_sweeps(points, results, precision, mode.value, overrides, cache, refresh, kv_policy,
                               spec) \
        if policy_plot else None

    if format == TableFormat.json:
        typer.echo(_as_json(results))
    elif format == TableFormat.csv:
        typer.echo(_as_csv(results), nl=False)
    else:
        from kvnand.present.table import OPTIONAL_COLUMNS, TEXT_COLUMNS, render
        from kvnand.present.terminal import show

        tables, note = render(results, references)
        show(*tables, optional=OPTIONAL_COLUMNS, text_columns=TEXT_COLUMNS)
        if note:
            typer.echo(note)

    written: list[Path] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("report.json", _as_json(results)), ("report.csv", _as_csv(results))):
            write_text(out / name, text)
            written.append(out / name)
    if plot is not None:
        from kvnand.present.figures import write_figures

        written += write_figures(results, plot, references)
    if by_policy is not None:
        from kvnand.present.figures import write_policy_figure

        written += write_policy_figure(by_policy, policy_plot)
    if trace_json is not None:
        write_text(trace, trace_json)
        written.append(trace)
    if cache.enabled:
        from kvnand.study.cache import prune

        prune()
    cached = f", {cache.hits} from cache" if cache.hits else ""
    typer.echo(f"kvnand report: {len(results)} point{'s' * (len(results) != 1)}{cached}"
               + (f"; wrote {', '.join(map(str, written))}" if written else ""), err=True)


def _decode_options(batch: str | None, draft: str | None, k: int | None, accept: float | None,
                    refresh: str | None) -> tuple[list[int | None], dict]:
    """(batch sizes of the sweep, [None] when not batched; speculative decoding keywords of evaluate()), every
    value checked before any point runs, errors naming the option."""
    from kvnand.scenario import Decode
    from kvnand.workload.model import load_model

    batches: list[int | None] = [None]
    if batch is not None:
        batches = []
        for item in split_list(batch, "--batch"):
            if not item.isdigit():
                raise InputError("not a batch size", key="--batch", value=item, allowed="whole numbers >= 1")
            batches.append(int(item))
        batches = list(dict.fromkeys(batches))
    spec = {"spec_draft": draft, "spec_k": k, "spec_accept": accept} if (draft, k, accept) != (None,) * 3 else {}
    for b in batches:
        try:
            Decode(b, draft, k, accept)
        except InputError as exc:
            raise InputError(exc.detail, key=f"--{exc.key.replace('_', '-')}", value=exc.value,
                             allowed=exc.allowed) from None
    if draft is not None:
        try:
            load_model(draft)
        except InputError as exc:
            raise InputError(exc.detail, key="--spec-draft", value=draft, allowed=exc.allowed) from None
    if refresh is not None and (batch is not None or spec):
        raise InputError("the read-disturb refresh is modelled for single-sequence decoding only", key="--refresh",
                         value=refresh, allowed="no --refresh with --batch or --spec-draft")
    return batches, spec


def _batch_contexts(text: str | None, batches: list[int | None], overrides: dict,
                    policy_plot: bool) -> tuple[int, ...] | None:
    """The --batch-contexts list, checked against every --batch (none drops a listed context) and the KV policy
    before any point runs."""
    from kvnand.scenario import Decode, cycle_contexts, parse_batch_contexts
    from kvnand.workload.kv_policy import is_dense, resolve_policy

    if text is None:
        return None
    mix = parse_batch_contexts(text)
    for b in batches:
        if b is not None and b < len(mix):
            raise InputError(f"--batch {b} would drop some of the {len(mix)} contexts of --batch-contexts",
                             key="--batch", value=b, allowed=f"batch sizes of at least {len(mix)}")
        Decode(b or len(mix), contexts=cycle_contexts(mix, b or len(mix)))
    if len(set(mix)) > 1 and (policy_plot or not is_dense(resolve_policy(overrides))):
        raise InputError("sequences of different contexts are modelled without a KV policy only",
                         key="--batch-contexts", value=text,
                         allowed="equal contexts, or no --kv-policy / --policy-plot")
    return mix


@app.command()
def fields(format: Annotated[TableFormat, typer.Option("--format", help="table, json or csv")] = TableFormat.table):
    """Every field of a result record (kvnand.evaluate, report --format json/csv): unit and meaning."""
    from kvnand.present.fields import FIELDS

    if format == TableFormat.json:
        typer.echo(json_text({"schema": "kvnand.fields/1", "fields": [
            {"field": k, "unit": u, "meaning": m} for k, (u, m) in FIELDS.items()]}, indent=2))
        return
    if format == TableFormat.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerows([("field", "unit", "meaning"), *((k, u, m) for k, (u, m) in FIELDS.items())])
        typer.echo(buf.getvalue(), nl=False)
        return
    from rich.table import Table

    from kvnand.present.terminal import show

    t = Table(title="result record of kvnand.evaluate() and `kvnand report --format json` (<x>: varying keys)")
    for col in ("field", "unit", "meaning"):
        t.add_column(col)
    for k, (u, m) in FIELDS.items():
        t.add_row(k, u, m)
    show(t, text_columns=("meaning",))


cache_app = typer.Typer(no_args_is_help=True, help="The point cache of `kvnand report` (see `kvnand cache info`).")
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info():
    """Where the point cache is, how many points it holds and its size against its limit."""
    from kvnand.study.cache import cache_root, max_bytes, usage

    n, size = usage()
    typer.echo(f"{cache_root()}: {n} point(s), {size / 1e6:.1f} MB of {max_bytes() / 1e6:.0f} MB "
               "(KVNAND_CACHE_DIR moves it, KVNAND_CACHE_MAX_MB bounds it)")


@cache_app.command("clear")
def cache_clear():
    """Delete every cached point."""
    from kvnand.study.cache import cache_root, clear

    n = clear()
    typer.echo(f"removed {n} cached point(s) from {cache_root()}")
