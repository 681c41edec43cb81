"""Result: the record of one evaluated point (the fields DESIGN.md and `kvnand fields` list), typed.

A Result is the record dict itself, so every consumer of `evaluate()` reads it as before
(`r["tokens_per_s"]`), with typed attributes for the numbers an architect reads most, the engine's artifacts
(`timeline`, `program`) kept beside the record instead of in it, and `to_json()` for standard JSON (no NaN
or Infinity: a point that does not fit has null speed).
"""

from __future__ import annotations

import json
from typing import Any


def _number(key: str, doc: str) -> property:
    """A typed read of one numeric field (None where the point does not fit)."""
    return property(lambda self: None if self.get(key) is None else float(self[key]), doc=doc)


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

    oom = property(lambda self: bool(self["oom"]), doc="the point does not fit a memory")
    oom_reason = property(lambda self: self.get("oom_reason"), doc="the memory it overflows, and by how much")
    tokens_per_s = _number("tokens_per_s", "decode tokens/s of one request")
    latency_s = _number("latency_s", "decode latency per token, s")
    energy_j_per_token = _number("energy_j_per_token", "decode energy per token, J")
    power_w = _number("power_w", "average decode power, W")
    ttft_s = _number("ttft_s", "time to first token (the prompt's prefill), s")
    cost_usd = _number("cost_usd", "memory cost, USD")
    breakdown_s = property(lambda self: dict(self.get("breakdown_s") or {}), doc="step time by stage, s")

    def to_json(self) -> dict:
        """The record as JSON data: tuples become lists, numpy scalars floats; NaN or Infinity is an error."""
        return json.loads(json.dumps(self, default=float, allow_nan=False))
