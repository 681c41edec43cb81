"""kvnand: a cycle-approximate model of in-flash computing (3D NAND + logic die) for LLM inference.

`kvnand.evaluate(system, model, context, precision=..., mode="fast"|"event", overrides={})` returns one
result record; the `kvnand` command (kvnand.cli) prints reports, validation, reliability and DSE.
Heavy dependencies are imported lazily so that `import kvnand` stays fast.
"""

__version__ = "0.1.0"


def evaluate(*args, **kwargs):
    """kvnand.evaluation.evaluate (imported on first use; then `kvnand.evaluate` is that function itself)."""
    from kvnand.evaluation import evaluate as _evaluate

    globals()["evaluate"] = _evaluate  # later calls skip this wrapper and its import statement
    return _evaluate(*args, **kwargs)
