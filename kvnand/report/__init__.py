"""`kvnand report`: sweep (system x model x context) points and present the results.

sweep.py runs the grid (with the on-disk cache of cache.py), table.py prints it and its geomean
speedups, figures.py draws the throughput/energy/breakdown figures, trace.py writes a Chrome trace of
an event-mode run, commands.py is the typer command. `atomic_path` is the one way this package writes a
file, so an output is either complete or absent.
"""

from __future__ import annotations

import contextlib
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
