"""Capacity: weights and KV(context) against every memory that holds them; OOM with its reason.

The placement (kvnand.lowering's weights and KV homes) names the memories and what each holds; this module
checks them. The result names the memory that ran out, by how much, and the longest context that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from kvnand.program import minimum


class KvGrowth(NamedTuple):
    """How a KV cache grows with the context: bytes per token for good, plus (bytes per token, window) of
    layers that keep only their last `window` tokens."""

    per_token: float
    windowed: tuple[tuple[float, int], ...] = ()

    def at(self, context: int) -> float:
        return self.per_token * context + sum(b * minimum(context, w) for b, w in self.windowed)

    def mixed(self, mix: tuple[tuple[int, int], ...]) -> KvGrowth:
        """The KV of a batch whose sequences have different contexts (`mix`: (context, sequences) pairs) as a
        growth in the longest one's context t, every sequence at its share of t (this mix, scaled): at the
        longest context it is the sum of every sequence's KV. A window w of a sequence at c / T of t stops
        growing at t = w T / c."""
        longest = max(c for c, _ in mix)
        tokens = sum(c * n for c, n in mix)
        windowed = tuple((b * n * (c / longest), w * longest / c) for c, n in mix for b, w in self.windowed)
        return KvGrowth(self.per_token * tokens / longest, windowed)


class Store(NamedTuple):
    name: str
    capacity_bytes: float
    fixed_bytes: float          # held whatever the context (weights)
    bytes_per_token: float      # KV cache of the full-context layers
    windowed: tuple[tuple[float, int], ...] = ()  # (bytes per token, window) of windowed layers

    @staticmethod
    def of_kv(name: str, capacity: float, fixed: float, kv: KvGrowth) -> Store:
        return Store(name, capacity, fixed, kv.per_token, kv.windowed)

    def used(self, context: int) -> float:
        return self.fixed_bytes + KvGrowth(self.bytes_per_token, self.windowed).at(context)


@dataclass(frozen=True)
class Fit:
    oom: bool
    reason: str | None
    max_context: int            # longest context that fits (0 when even the weights do not)
    stores: dict                # memory -> {"capacity_bytes", "used_bytes"}


def check(stores: list[Store], context: int, at: str | None = None) -> Fit:
    """Every store at `context` tokens (`at`: how the reason names the KV's extent, "N tokens" by default)."""
    max_ctx = math.inf
    reason = None
    for store in stores:
        name, cap, fixed, per_tok, windowed = store
        used = store.used(context)
        if windowed:
            fits_ctx = _longest(cap - fixed, per_tok, windowed)
        else:
            fits_ctx = math.floor((cap - fixed) / per_tok) if per_tok else (math.inf if fixed <= cap else -1)
        max_ctx = min(max_ctx, fits_ctx)
        if used > cap and reason is None:
            reason = _reason(name, cap, fixed, used, at or f"{context} tokens")
    max_ctx = int(max(0, min(max_ctx, 10**12)))
    return Fit(reason is not None, reason, max_ctx,
               {s.name: {"capacity_bytes": s.capacity_bytes, "used_bytes": s.used(context)} for s in stores})


def _reason(name: str, cap: float, fixed: float, used: float, extent: str) -> str:
    """What ran out in memory `name`, and by how much."""
    what = "weights" if fixed > cap else f"weights + KV at {extent}" if fixed else f"KV cache at {extent}"
    return (f"{name}: {what} need {used / 1e9:.2f} GB > capacity {cap / 1e9:.2f} GB "
            f"(short by {(used - cap) / 1e9:.2f} GB)")


def _longest(room: float, per_tok: float, windowed: tuple[tuple[float, int], ...]) -> float:
    """Longest context whose KV fits `room` bytes: the growth is piecewise linear, each window's layers
    stop growing at their window."""
    if room < 0:
        return -1
    c, used, slope = 0, 0.0, per_tok + sum(b for b, _ in windowed)
    for b, w in sorted(windowed, key=lambda x: x[1]):
        if used + slope * (w - c) > room:
            break
        used, c, slope = used + slope * (w - c), w, slope - b
    return math.inf if slope <= 0 else math.floor(c + (room - used) / slope)


def check_many(stores: list[Store], contexts, names: list[list[str]]) -> tuple:
    """check() at every point of a (designs, contexts) array of contexts, the stores' numbers plain or arrays
    over stacked designs (a design a row): (OOM per point, check()'s reason per point (an object array, None
    where it fits), used bytes per point of each store in order). `names`: each row's store names (a stacked
    store's own name may count dies that differ between its designs)."""
    import numpy as np

    shape = np.shape(contexts)
    used = [np.broadcast_to(s.used(contexts), shape) for s in stores]
    caps = [np.broadcast_to(s.capacity_bytes, shape) for s in stores]
    oom = np.zeros(shape, dtype=bool)
    first = np.full(shape, -1)                      # the first store that overflows, as check() names it
    for i, (u, cap) in enumerate(zip(used, caps, strict=True)):
        over = u > cap
        first[over & ~oom] = i
        oom |= over
    reasons = np.full(shape, None, dtype=object)
    for i, s in enumerate(stores):  # the points each store is the first to overflow, worded together
        at = np.nonzero(first == i)
        if not at[0].size:
            continue
        words = [_reason(names[r][i], cap, fixed, u, f"{c} tokens")
                 for r, cap, fixed, u, c in zip(at[0].tolist(), caps[i][at].tolist(),
                                                np.broadcast_to(s.fixed_bytes, shape)[at].tolist(),
                                                used[i][at].tolist(), np.asarray(contexts)[at].tolist(),
                                                strict=True)]
        reasons[at] = np.array(words, dtype=object)
    return oom, reasons, used
