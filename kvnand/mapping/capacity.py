"""Capacity: weights and KV(context) against every memory that holds them; OOM with its reason.

Each store is checked in page units (a partly used page is spent). The result names the memory that ran
out, by how much, and the longest context that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvnand.config.schema import System
from kvnand.workload.model import ModelSpec
from kvnand.workload.precision import Precision


@dataclass(frozen=True)
class Fit:
    oom: bool
    reason: str | None
    max_context: int            # longest context that fits (0 when even the weights do not)
    stores: dict                # memory -> {"capacity_bytes", "used_bytes"}


def _dies_bytes(array, dies: int) -> float:
    return dies * array.die.geometry.die_bytes


def check(system: System, model: ModelSpec, precision: Precision, context: int) -> Fit:
    s = system
    w = model.weight_bytes(precision)
    kv_tok = model.kv_bytes_per_token(precision)
    stores: dict[str, tuple[float, float, float]] = {}   # name -> (capacity, fixed bytes, bytes per token)
    kv = s.kv.store
    if s.placement.weights == "host":
        stores["host DRAM"] = (s.host_dram.channels * s.host_dram.capacity_per_channel, w, 0.0)
    elif kv == "colocated":
        stores["IFC flash (weights + KV)"] = (_dies_bytes(s.flash, s.flash.dies), w, kv_tok)
    elif kv == "flash_group":
        g1 = s.flash.dies - s.kv.g2_dies
        stores[f"G1 flash ({g1} dies, weights)"] = (_dies_bytes(s.flash, g1), w, 0.0)
        stores[f"G2 flash ({s.kv.g2_dies} dies, KV)"] = (_dies_bytes(s.flash, s.kv.g2_dies), 0.0, kv_tok)
    else:
        stores["IFC flash (weights)"] = (_dies_bytes(s.flash, s.flash.dies), w, 0.0)
    if kv == "dram":
        stores["DRAM (KV)"] = (s.dram.channels * s.dram.capacity_per_channel, 0.0, kv_tok)
    elif kv in ("nand", "csd"):
        name = "plain NAND (KV)" if kv == "nand" else "CSD flash (KV)"
        stores[name] = (_dies_bytes(s.nand, s.nand.dies), 0.0, kv_tok)
    max_ctx = math.inf
    reason = None
    for name, (cap, fixed, per_tok) in stores.items():
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
               {k: {"capacity_bytes": c, "used_bytes": f + t * context} for k, (c, f, t) in stores.items()})
