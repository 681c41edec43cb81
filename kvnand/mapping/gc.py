"""Garbage collection of the KV slots that eviction under a token budget invalidates, from the page layout.

A flash page cannot be rewritten and a block is erased whole, so an evicted token's unit stays in its page
as an invalid slot until the FTL reclaims the block: it copies the block's still-valid units into fresh pages
(a page read and a program each), then erases it. DRAM overwrites in place and needs none of this.

Steady state at a conversation of `context` tokens with `held` kept (context > held): every new token
evicts one, so space must be reclaimed at the rate it is written. The kept tokens are a recent window
(`recent` tokens, never evicted) and `held - recent` heavy hitters. A block is reclaimed once all its
tokens have left the recent window (reclaiming it earlier would copy tokens that are still certain to be
kept); its valid fraction is then the heavy hitters' share of the tokens beyond the window,
u = (held - recent) / (context - recent), assuming heavy hitters are spread evenly over the old tokens.
Reclaiming a block frees (1 - u) of it and copies u of it, so per byte written the FTL copies u / (1 - u)
bytes (write amplification 1 / (1 - u)) and erases 1 / ((1 - u) x block bytes) blocks. Copies are assumed
to be reclaimed again only when their own tokens are evicted, which the same rate already counts. The FTL
reclaims as soon as a block qualifies, which keeps the flash the KV occupies at the budget.

What is charged is what eviction adds: every block of KV written is erased once in any case (when its
tokens are evicted, or when the session's cache is dropped, which the dense cache is not charged for
either), so GC adds the copied bytes and the erases of the blocks they fill, u / (1 - u) x bytes written
/ block bytes. With no heavy hitters (a pure sliding window) u = 0: whole blocks turn invalid and GC adds
nothing.
"""

from __future__ import annotations

from typing import NamedTuple


class GcCost(NamedTuple):
    write_amplification: float     # bytes programmed per byte of new KV (1: no GC)
    copy_bytes_per_token: float    # valid KV read back and programmed again per decode token
    erases_per_token: float        # blocks erased per decode token beyond the one erase all KV needs


NO_GC = GcCost(1.0, 0.0, 0.0)


def gc_per_token(written_bytes_per_token: float, block_bytes: float, context: int, held: int,
                 recent: int) -> GcCost:
    """GC of layers whose caches write `written_bytes_per_token` per token and keep `held` of `context`."""
    if held >= context or written_bytes_per_token <= 0:
        return NO_GC
    recent = min(recent, held)
    u = (held - recent) / (context - recent)
    copied = written_bytes_per_token * u / (1.0 - u)
    return GcCost(1.0 / (1.0 - u), copied, copied / block_bytes)


def combine(costs: list[tuple[float, GcCost]]) -> GcCost:
    """Several layer kinds' GC added up; `costs` = [(bytes written per token, cost)], write amplification
    weighted by the bytes written."""
    written = sum(w for w, _ in costs)
    if not written:
        return NO_GC
    return GcCost(sum(w * c.write_amplification for w, c in costs) / written,
                  sum(c.copy_bytes_per_token for _, c in costs), sum(c.erases_per_token for _, c in costs))
