"""kvnand: a cycle-approximate model of in-flash computing (3D NAND + logic die) for LLM inference.

`kvnand.evaluate(system, model, context, precision=..., mode="fast"|"event", overrides={})` returns one
result record; the `kvnand` command (kvnand.cli) prints reports, validation, reliability and DSE.
Heavy dependencies are imported lazily so that `import kvnand` stays fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`kvnand.evaluate` is kvnand.evaluation.evaluate itself (imported on first access), so help() and
    inspect show its real signature and docstring."""
    if name == "evaluate":
        from kvnand.evaluation import evaluate

        globals()["evaluate"] = evaluate
        return evaluate
    raise AttributeError(f"module 'kvnand' has no attribute {name!r}")
