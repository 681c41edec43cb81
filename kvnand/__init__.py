"""kvnand: a cycle-approximate model of in-flash computing (3D NAND + logic die) for LLM inference.

`kvnand.evaluate(system, model, context, precision=..., mode="fast"|"event", overrides={})` returns one
result record (a `kvnand.Result`: the record dict, with typed numbers and `.to_json()`);
`kvnand.evaluate_many(system, model, contexts, precisions=..., overrides=...)` the same fields as columns over
many points (`kvnand.records(columns)`: the records); the `kvnand` command (kvnand.cli)
prints reports, validation, reliability and DSE.
Heavy dependencies are imported lazily so that `import kvnand` stays fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`kvnand.evaluate` (kvnand.evaluation's), `evaluate_many` and `records` (kvnand.columnar's) are imported on
    first access, so help() and inspect show their real signatures and docstrings."""
    if name == "evaluate":
        from kvnand.evaluation import evaluate

        globals()[name] = evaluate
        return evaluate
    if name in ("evaluate_many", "records"):
        from kvnand import columnar

        globals()[name] = getattr(columnar, name)
        return globals()[name]
    if name == "Result":
        from kvnand.result import Result

        globals()[name] = Result
        return Result
    raise AttributeError(f"module 'kvnand' has no attribute {name!r}")
