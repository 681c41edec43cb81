"""Printing rich tables so that nothing is lost: the one way every `kvnand` command prints a table.

- Piped or redirected output is complete: the console is as wide as the widest table (or `COLUMNS`, if set,
  with text folded inside that width); nothing is cut with an ellipsis.
- A terminal narrower than a table gets a compact table: no box, one space between columns, and, if that
  is still too wide, the columns the caller marked as optional are dropped (named in a note below it).
- Numbers are never cut: every column except the free-text ones the caller names keeps its cells whole
  (no wrap, minimum width = its widest cell); free text folds.

`progress_bar` is the one progress bar of long commands (report, dse run, dse grid): on stderr, only on a
terminal, with elapsed time and an ETA.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

FOLDED_MIN = 12  # the narrowest a free-text column is folded to


def _width(console: Console, table: Table, least: bool = False, text: Iterable[str] = ()) -> int:
    """The table's natural width, or (`least`) its narrowest, free-text columns folded to FOLDED_MIN."""
    saved = [(c, c.max_width) for c in table.columns if least and str(c.header) in set(text)]
    for c, _ in saved:
        c.max_width = FOLDED_MIN
    try:
        m = Measurement.get(console, console.options.update(width=10_000), table)
    finally:
        for c, w in saved:
            c.max_width = w
    return m.minimum if least else m.maximum


def _cell_width(cell) -> int:
    text = Text.from_markup(cell) if isinstance(cell, str) else cell
    return max((len(line) for line in text.plain.splitlines()), default=0) if isinstance(text, Text) else 0


def protect(table: Table, text_columns: Iterable[str] = ()) -> Table:
    """Keep every cell of the columns not in `text_columns` on one line (headers may wrap between words);
    fold the text columns."""
    text = set(text_columns)
    for col in table.columns:
        col.overflow, col.no_wrap = "fold", False
        if str(col.header) not in text:
            col.min_width = max([len(w) for w in str(col.header).split()] + [_cell_width(c) for c in col.cells])
    return table


def compact(table: Table) -> Table:
    # one space of padding on the left only (rich mis-measures collapse_padding): two spaces between columns
    table.box, table.padding, table.pad_edge, table.show_edge = box.SIMPLE_HEAD, (0, 0, 0, 1), False, False
    return table


def drop_columns(table: Table, names: Iterable[str]) -> list[str]:
    """Remove the named columns (in place); returns the names removed."""
    names = set(names)
    gone = [str(c.header) for c in table.columns if str(c.header) in names]
    table.columns[:] = [c for c in table.columns if str(c.header) not in names]
    return gone


def show(*tables: Table, con: Console | None = None, optional: Iterable[str] = (),
         text_columns: Iterable[str] = ()) -> None:
    """Print tables without losing a number (see the module docstring). `optional`: column headers that
    may be dropped, least important last; `text_columns`: free-text headers that may fold."""
    con = con or Console()
    text_columns = list(text_columns)
    for t in tables:
        protect(t, text_columns)
    if not con.is_terminal and not os.environ.get("COLUMNS"):
        con.width = max([con.width, *(_width(con, t) for t in tables)])
        con.print(*tables)
        return
    for t in tables:
        if _width(con, t) > con.width:
            compact(t)
        full = list(t.columns)
        dropped: list[str] = []
        for name in reversed(list(optional)):
            if _width(con, t) <= con.width:
                break
            dropped += drop_columns(t, [name])
        if _width(con, t, least=True, text=text_columns) > con.width:  # even compact, no fit: a block per row
            t.columns[:] = full
            con.print(vertical(t))
            continue
        con.print(t)
        if dropped:
            con.print(f"({', '.join(dropped)} left out to fit {con.width} columns; widen the terminal or use "
                      "--format json)", style="dim")


def vertical(table: Table) -> Table:
    """The rows of `table` as blocks of `header  value` lines (for terminals too narrow for any table)."""
    out = Table(title=table.title, caption=table.caption, box=None, show_header=False, padding=(0, 1))
    out.add_column(no_wrap=True)
    out.add_column(overflow="fold")
    cells = [list(c.cells) for c in table.columns]
    for i in range(table.row_count):
        for col, column_cells in zip(table.columns, cells, strict=True):
            out.add_row(str(col.header), column_cells[i])
        out.add_row("", "")
    return out


@contextlib.contextmanager
def progress_bar(label: str, total: int | None = None) -> Iterator[Callable[..., None] | None]:
    """Yields update(done, total=None, description=None), or None when stderr is not a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    con = Console(stderr=True)
    if not con.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description:<36}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=con, transient=True) as bar:
        task = bar.add_task(label, total=total)

        def update(done: int, total: int | None = None, description: str | None = None) -> None:
            bar.update(task, completed=done, **({"total": total} if total is not None else {}),
                       **({"description": description} if description else {}))

        yield update
