"""Output files and JSON for every command: `check_output` refuses an unwritable path before any work,
`atomic_path` is the one way a file is written (complete or absent), `json_text` the one way JSON is written
(standard JSON: an undefined number such as the objective of an infeasible design is null, never Infinity)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from kvnand.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed (with any
    directory made for it). A file system error (disk full, permissions) becomes an InputError naming the file."""
    path = Path(path)
    made = [d for d in (path.parent, *path.parent.parents) if not os.path.exists(d)]  # never raises
    # created by the writer (not mkstemp), so the file gets the usual umask permissions, not 0600
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"))
    ok = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
        ok = True
    except OSError as exc:
        raise InputError(f"cannot write the file ({exc.strerror or exc})", file=str(path),
                         allowed="a path in a directory you can write to, with space left") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        if not ok:
            for d in made:  # innermost first; a directory something else filled meanwhile stays
                with contextlib.suppress(OSError):
                    d.rmdir()


_NAME_MAX = 255 - 32  # a file name's bytes, leaving room for atomic_path's temporary name and "-breakdown"


def check_output(path: str | Path | None, option: str, *, suffixes: tuple[str, ...] = (),
                 directory: bool = False) -> None:
    """Refuse, before any work is done, an output path that cannot be written (one InputError naming the
    option): an existing directory where a file goes (or the reverse), a name too long for the file system,
    a place where no file can be created (/proc, a read-only mount, a file on the way). Nothing is created."""
    if path is None:
        return
    p = Path(os.path.abspath(path))
    where = "a directory you can write to (existing or new)" if directory else \
        "a file path in a directory you can write to"

    def bad(problem: str) -> InputError:
        return InputError(problem, key=option, value=str(path), allowed=where
                          + (f", ending in {', '.join(suffixes)}" if suffixes else ""))

    if suffixes and p.suffix.lower() not in suffixes:
        raise bad("unsupported file type")
    if any(len(part.encode(errors="surrogateescape")) > _NAME_MAX for part in p.parts):
        raise bad(f"a name in the path is longer than {_NAME_MAX} bytes")
    try:
        if p.is_dir() != directory and p.exists():
            raise bad("is a directory" if p.is_dir() else "exists and is not a directory")
        existing = next(a for a in ([p] if directory else []) + list(p.parents) if a.exists())
        if not existing.is_dir():
            raise bad(f"{existing} is not a directory")
        probe = existing / f".kvnand-probe-{uuid.uuid4().hex[:12]}"
        probe.touch(exist_ok=False)  # the only sure test: /proc, read-only mounts and ACLs all say no here
        probe.unlink()
    except OSError as exc:
        raise bad(f"cannot write there ({exc.strerror or exc})") from None


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


def emit_json(obj) -> None:
    """A command's JSON output on stdout (standard JSON, indented)."""
    import typer

    typer.echo(json_text(obj, indent=2))
