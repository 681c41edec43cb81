"""`kvnand report`: sweep (system x model x context) points and present the results.

sweep.py runs the grid (with the on-disk cache of cache.py), table.py prints it and its geomean
speedups, figures.py draws the throughput/energy/breakdown figures, trace.py writes a Chrome trace of
an event-mode run, commands.py is the typer command. `atomic_path` is the one way this package writes a
file, so an output is either complete or absent; `json_text` is the one way it writes JSON, so the output is
standard JSON (an undefined number such as the objective of an infeasible design is null, never Infinity).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # created by the writer (not mkstemp), so the file gets the usual umask permissions, not 0600
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def finite(obj):
    """`obj` with every non-finite float (inf, nan) replaced by None, numpy scalars as Python numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalar
        return finite(obj.item())
    return obj


def json_text(obj, **kwargs) -> str:
    """Standard JSON (RFC 8259: no NaN or Infinity) of `obj`; other objects as their string."""
    return json.dumps(finite(obj), allow_nan=False, default=str, **kwargs)
