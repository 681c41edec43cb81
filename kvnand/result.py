"""Result: the record of one evaluated point (the fields DESIGN.md and `kvnand fields` list), typed.

A Result is the record dict itself, so every consumer of `evaluate()` reads it as before
(`r["tokens_per_s"]`), with typed attributes for the numbers an architect reads most, the engine's artifacts
(`timeline`, `program`) kept beside the record instead of in it, and `to_json()` for standard JSON (no NaN
or Infinity: a point that does not fit has null speed).
"""

from __future__ import annotations

import json
from typing import Any


class Result(dict):
    """One point's record; `timeline` (event modes) and `program` are set when evaluate() was asked for them."""

    timeline: Any = None
    program: Any = None

    @classmethod
    def of(cls, record: dict) -> Result:
        """`record` as a Result (a Result keeps its timeline and program)."""
        if isinstance(record, Result):
            return record
        return cls(record)

    def _number(self, key: str) -> float | None:
        v = self.get(key)
        return None if v is None else float(v)

    @property
    def oom(self) -> bool:
        return bool(self["oom"])

    @property
    def oom_reason(self) -> str | None:
        return self.get("oom_reason")

    @property
    def tokens_per_s(self) -> float | None:
        return self._number("tokens_per_s")

    @property
    def latency_s(self) -> float | None:
        return self._number("latency_s")

    @property
    def energy_j_per_token(self) -> float | None:
        return self._number("energy_j_per_token")

    @property
    def power_w(self) -> float | None:
        return self._number("power_w")

    @property
    def ttft_s(self) -> float | None:
        return self._number("ttft_s")

    @property
    def cost_usd(self) -> float | None:
        return self._number("cost_usd")

    @property
    def breakdown_s(self) -> dict[str, float]:
        return dict(self.get("breakdown_s") or {})

    def to_json(self) -> dict:
        """The record as JSON data: tuples become lists, numpy scalars floats; NaN or Infinity is an error."""
        return json.loads(json.dumps(self, default=float, allow_nan=False))
