"""Output formats the commands share."""

from __future__ import annotations

from enum import StrEnum


class Format(StrEnum):
    """A command that prints a table or a JSON document."""

    table = "table"
    json = "json"


class TableFormat(StrEnum):
    """A command that prints rows: a table, a JSON document or CSV."""

    table = "table"
    json = "json"
    csv = "csv"
