"""`kvnand graph`: the operator graph of a model's decode step, as a summary table or GraphML."""

from __future__ import annotations

import os
from typing import Annotated

import typer

app = typer.Typer()


@app.command()
def graph(
    model: Annotated[str, typer.Argument(help="Zoo name or path to a HF config.json")],
    precision: Annotated[str, typer.Option(help="bf16, w8a8 or w4a16")] = "bf16",
    context: Annotated[int, typer.Option(help="context length in tokens")] = 1000,
    output: Annotated[str | None, typer.Option(help="write the layer DAG as GraphML to this file")] = None,
):
    """Per-layer summary of the decode-step operator graph (FLOPs, bytes, kind), one table per layer kind, or
    GraphML for other tools."""
    from kvnand.errors import InputError
    from kvnand.io import atomic_path, check_output
    from kvnand.scenario import MAX_CONTEXT
    from kvnand.workload.graph import head_operators, layer_dag, layer_operators, prologue_operators, step_flops
    from kvnand.workload.model import load_model

    m = load_model(model)
    if not 1 <= context <= MAX_CONTEXT:
        raise InputError("not a context length", key="--context", value=context,
                         allowed=f"a number of tokens from 1 to {MAX_CONTEXT}")
    if output:
        import networkx as nx

        check_output(output, "--output")
        if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
            raise InputError("the output directory does not exist", key="--output", value=output,
                             allowed="a file path in an existing directory")
        g = layer_dag(m, precision, context)
        with atomic_path(output) as tmp:  # nothing half-written is left behind
            nx.write_graphml(g, tmp)
        first = "" if len(m.layer_kinds) == 1 else " of the first kind"
        typer.echo(f"wrote {output}: {g.number_of_nodes()} operators, {g.number_of_edges()} edges (one layer{first})")
        return
    from rich.table import Table

    from kvnand.present.terminal import show

    kinds = m.layer_kinds
    tables = []
    for i, (kind, n) in enumerate(kinds):  # one table per layer kind (window, MoE or dense FFN)
        what = "" if len(kinds) == 1 else " (" + ", ".join(
            x for x in ("full context" if kind.window is None else f"window {kind.window}",
                        "MoE" if kind.moe else "dense FFN")) + ")"
        t = Table(title=f"{m.name}: one decoder layer{what} of a decode step at {context} tokens ({precision}); "
                        f"x{n} layers")
        for col in ("operator", "kind", "MFLOP", "weights (MB)", "KV (MB)", "act in (KB)", "act out (KB)", "after"):
            t.add_column(col, justify="left" if col in ("operator", "kind", "after") else "right")
        ops = (prologue_operators(m, precision) if i == 0 else []) + layer_operators(m, precision, context, kind=kind) \
            + (head_operators(m, precision) if i == len(kinds) - 1 else [])
        for o in ops:
            t.add_row(o.name, o.kind, f"{o.flops / 1e6:.2f}", f"{o.weight_bytes / 1e6:.2f}",
                      f"{o.kv_bytes / 1e6:.2f}", f"{o.act_in_bytes / 1e3:.1f}", f"{o.act_out_bytes / 1e3:.1f}",
                      ", ".join(o.deps))
        tables.append(t)
    show(*tables, optional=("act out (KB)", "act in (KB)", "after"), text_columns=("after",))
    typer.echo(f"decode step: {step_flops(m, precision, context) / 1e9:.2f} GFLOP (2 x MACs)")
