"""Pages to blocks: which KV streams share a block (page-level lanes), and the naive layout's page table (which
phases first touch each page of one period, and when). Placement only; kvnand.reliability.disturb counts the
reads these blocks take under a usage profile."""

from __future__ import annotations

import math

import numpy as np

from kvnand.mapping.kv import KvLayout


def streams_per_block(streams: int, pages: int, ppb: int, blocks: int) -> int:
    """Fewest streams sharing a block such that each lane has room for a session's pages plus its open
    block on the plane's `blocks` KV blocks."""
    for g in range(1, min(streams, ppb) + 1):
        if math.ceil(streams / g) * (math.ceil(pages / (ppb // g)) + 1) <= blocks:
            return g
    return min(streams, ppb)


def naive_page_table(lay: KvLayout, heads: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """One period of the generation-order layout (records and pages realign after `t0` tokens): for each
    of its `pp` pages, the token offsets at which phases first touch it and how many phases do.
    Returns (t0, pp, offsets pp x E, phases pp x E), zero-padded."""
    unit, page, k = int(lay.unit), int(lay.page), lay.kv_heads
    rec = lay.streams * unit
    t0 = page // math.gcd(rec, page)
    batches = np.arange(-(-k // heads))
    width = np.minimum(heads, k - batches * heads) * unit
    start = (np.arange(lay.streams_per_head * lay.layers)[:, None] * k * unit + batches * heads * unit).ravel()
    end = start + np.tile(width, lay.streams_per_head * lay.layers)
    tau = np.arange(t0)[:, None]
    first = ((tau * rec + start) // page).ravel()
    last = ((tau * rec + end - 1) // page).ravel()
    n = last - first + 1
    phase = np.tile(np.arange(start.size), t0)
    tok = np.repeat(np.arange(t0), start.size)
    idx = np.repeat(np.arange(first.size), n)
    pg = first[idx] + np.arange(idx.size) - np.repeat(np.cumsum(n) - n, n)
    # a (page, phase) is first read once its earliest token exists (entries are in token order)
    _, keep = np.unique(pg * start.size + phase[idx], return_index=True)
    pairs, phases = np.unique(pg[keep] * t0 + tok[idx][keep], return_counts=True)
    pp = t0 * rec // page
    kk, off = pairs // t0, pairs % t0
    slot = np.arange(kk.size) - np.searchsorted(kk, kk)
    offsets = np.zeros((pp, int(slot.max()) + 1), np.int64)
    counts = np.zeros_like(offsets)
    offsets[kk, slot], counts[kk, slot] = off, phases
    return t0, pp, offsets, counts
