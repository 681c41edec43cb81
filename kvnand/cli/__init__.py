"""The `kvnand` command: one module per command group (report, validate, reliability, dse, workload), each a
typer app merged here, plus the small commands (version, models, show-config, schema); parsing and printing
only.

Bad input anywhere (InputError) becomes one message on stderr and exit code 2, never a traceback.
Heavy modules (numpy, pint, matplotlib, optuna) are imported inside the commands, so `--help` is quick.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from kvnand.cli.options import Format
from kvnand.errors import InputError
from kvnand.io import emit_json

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Cycle-approximate model of in-flash computing (3D NAND + logic die) for LLM inference.")


def _version(value: bool) -> None:
    if value:
        from kvnand import __version__

        typer.echo(f"kvnand {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False):
    """Cycle-approximate model of in-flash computing (3D NAND + logic die) for LLM inference."""


@app.command()
def models(
    names: Annotated[list[str] | None,
                     typer.Argument(help="Zoo names or paths to HF config.json (default: the zoo)")] = None,
    precision: Annotated[str, typer.Option(help="bf16, w8a8 or w4a16")] = "bf16",
    format: Annotated[Format, typer.Option("--format")] = Format.table,
):
    """The model zoo (or the models named): parameters, active parameters, KV bytes per token (and per layer),
    attention kind (MHA/GQA/MQA/MLA, sliding windows) and the longest trained context."""
    from kvnand.workload.model import load_model, models_record, zoo_names

    records = [models_record(load_model(n), precision) for n in (names or zoo_names())]
    if format == Format.json:
        emit_json({"schema": "kvnand.models/1", "models": records})
        return
    from rich.table import Table

    from kvnand.present.terminal import show

    t = Table(title=f"models ({precision}); KV/token: every layer keeps the token (within every window)")
    for col in ("name", "family", "params (B)", "active (B)", "layers", "heads/kv", "head_dim",
                "weights (GB)", "KV/token (KiB)", "KV/token/layer (KiB)", "attention", "max context"):
        t.add_column(col, justify="left" if col in ("name", "family", "attention") else "right")
    for r in records:
        t.add_row(r["name"], r["family"], f"{r['params'] / 1e9:.2f}", f"{r['active_params'] / 1e9:.2f}",
                  str(r["layers"]), f"{r['heads']}/{r['kv_heads']}", str(r["head_dim"]),
                  f"{r['weight_bytes'] / 1e9:.2f}", f"{r['kv_bytes_per_token'] / 1024:.4g}",
                  f"{r['kv_bytes_per_token_layer'] / 1024:.4g}", r["attention"], str(r["max_context"]))
    show(t, optional=("head_dim", "heads/kv", "layers", "KV/token/layer (KiB)", "max context", "family"),
         text_columns=("attention",))


@app.command("show-config")
def show_config(
    system: Annotated[str, typer.Argument(help="A system preset name or a path to a system YAML")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="key.path=value overrides")] = None,
):
    """The resolved (merged, overridden, validated) configuration of a system as a loadable system file:
    quantities with units; comment lines mark inherited, overridden (--set) and calibrated values."""
    from kvnand.config.dump import render
    from kvnand.config.loader import load_system, system_origins
    from kvnand.scenario import parse_sets

    overrides = parse_sets(set_)
    typer.echo(render(load_system(system, overrides), system_origins(system, overrides)), nl=False)


@app.command()
def schema():
    """JSON Schema of a system or device preset file as written (for editors): `extends`, `preset`,
    quantities as strings with units."""
    from kvnand.config.authoring import authoring_schema

    emit_json(authoring_schema())


def _register() -> None:
    """Command groups owned by other modules (each a typer app whose commands merge into this one)."""
    import importlib

    for mod in ("kvnand.cli.report", "kvnand.cli.validate", "kvnand.cli.reliability", "kvnand.cli.dse",
                "kvnand.cli.workload"):
        app.add_typer(importlib.import_module(mod).app)


_register()


def main() -> None:
    """Entry point: typer's standalone mode handles usage errors (exit 2) and typer.Exit codes; our own
    bad-input errors get one line and exit 2."""
    try:
        app()
    except InputError as exc:
        typer.echo(f"kvnand: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("kvnand: interrupted", err=True)
        sys.exit(130)

