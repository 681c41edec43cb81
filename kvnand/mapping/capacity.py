"""Capacity: weights and KV(context) against every memory that holds them; OOM with its reason.

The placement (kvnand.lowering's weights and KV homes) names the memories and what each holds; this module
checks them. The result names the memory that ran out, by how much, and the longest context that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple


class Store(NamedTuple):
    name: str
    capacity_bytes: float
    fixed_bytes: float          # held whatever the context (weights)
    bytes_per_token: float      # KV cache


@dataclass(frozen=True)
class Fit:
    oom: bool
    reason: str | None
    max_context: int            # longest context that fits (0 when even the weights do not)
    stores: dict                # memory -> {"capacity_bytes", "used_bytes"}


def check(stores: list[Store], context: int) -> Fit:
    max_ctx = math.inf
    reason = None
    for name, cap, fixed, per_tok in stores:
        used = fixed + per_tok * context
        fits_ctx = math.floor((cap - fixed) / per_tok) if per_tok else (math.inf if fixed <= cap else -1)
        max_ctx = min(max_ctx, fits_ctx)
        if used > cap and reason is None:
            what = "weights" if fixed > cap else f"weights + KV at {context} tokens" if fixed else \
                f"KV cache at {context} tokens"
            reason = (f"{name}: {what} need {used / 1e9:.2f} GB > capacity {cap / 1e9:.2f} GB "
                      f"(short by {(used - cap) / 1e9:.2f} GB)")
    max_ctx = int(max(0, min(max_ctx, 10**12)))
    return Fit(reason is not None, reason, max_ctx,
               {s.name: {"capacity_bytes": s.capacity_bytes, "used_bytes": s.fixed_bytes + s.bytes_per_token * context}
                for s in stores})
