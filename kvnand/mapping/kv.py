"""KV-cache placement on flash planes: page-level (KVNAND Sec. IV-D) and naive (generation order).

A stream is the K (or V) of one (layer, KV head); a unit is one token of a stream (head_dim x bytes).

Page-level: each stream is striped over `planes_per_stream` planes, whole tokens round-robin, and
only that stream's tokens share a page. KVNAND-C (head parallelism): the KV planes form 2k sets, the K
of head h on one set and its V on another, so P = planes / 2k (the paper's
t = page_size * (dies * planes / 2k) / unit tokens per page fill). KVNAND-D and Base-2: every stream is
striped over all KV planes, so one head group's attention uses every plane of the group.
Layers: a plane holds the same (head, K|V) for every layer; its KV buffer is split into one slot per
stream it hosts, and a full slot is flushed by a partial-page program into the stream's open page
(ASSUMPTION, documented in validation/NOTES.md: the paper does not say how layers fit 8 KB; this costs
extra program operations, not extra reads; NOP limits are reported, not enforced).

Naive: the units of a token are written in generation order (layer, K|V, head), packed into pages,
pages striped round-robin over the KV planes. Reading one (layer, K|V) touches pages shared with
other streams: the read amplification the page-level mapping removes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class KvLayout:
    mapping: str                # "page" | "naive"
    planes: int                 # planes holding KV
    layers: int
    kv_heads: int
    unit: float                 # bytes of one token of one stream
    page: float                 # page data bytes
    split_kv_sets: bool         # page: K and V of a head on disjoint plane sets (head-parallel C)
    buffer_per_plane: float = 0.0   # per-plane KV buffer (C); 0 when writes are staged in the SoC
    soc_buffer: float = 0.0         # SoC staging buffer (D, Base-2, CSD)

    # ---- geometry of the page-level mapping ----
    @property
    def sets(self) -> int:
        """Plane sets a stream can be assigned to (2k for head-parallel C, 1 when striped over all)."""
        return min(2 * self.kv_heads, self.planes) if self.split_kv_sets else 1

    @property
    def planes_per_stream(self) -> int:
        return max(1, self.planes // self.sets)

    @property
    def tokens_per_page_fill(self) -> float:
        """Tokens after which every plane of a stream has filled one page (the paper's t)."""
        return self.page * self.planes_per_stream / self.unit

    @property
    def streams(self) -> int:
        return 2 * self.layers * self.kv_heads

    def streams_per_plane(self) -> float:
        if self.mapping == "naive":
            return 1.0  # generation order: one open page per plane at a time
        if self.split_kv_sets:
            # a set hosts ceil(2k / sets) (head, K|V) pairs, each for every layer
            return math.ceil(2 * self.kv_heads / self.sets) * self.layers
        return float(self.streams)

    # ---- reads ----
    def _pages(self, tokens: float) -> float:
        return math.ceil(tokens * self.unit / self.page - 1e-9) if tokens > 0 else 0

    def _stream_pages(self, context: int) -> tuple[int, int]:
        """(pages on the busiest plane, pages on all planes) of one page-level stream."""
        p = self.planes_per_stream
        q, r = divmod(context, p)
        busiest = self._pages(q + 1 if r else q)
        total = r * self._pages(q + 1) + (p - r) * self._pages(q)
        return busiest, total

    def phase_reads(self, context: int, heads: int) -> tuple[float, float]:
        """Page reads to fetch K (or V) of `heads` KV heads of one layer over `context` tokens:
        (pages on the busiest plane, pages in total)."""
        if context <= 0 or heads <= 0:
            return 0.0, 0.0
        if self.mapping == "page":
            busiest, total = self._stream_pages(context)
            k_sets = min(self.kv_heads, self.sets) if self.split_kv_sets else 1
            per_set = math.ceil(heads / k_sets)
            return float(per_set * busiest), float(heads * total)
        return naive_phase_reads(self.planes, self.layers, self.kv_heads, self.unit, self.page, context, heads)

    # ---- writes ----
    def program_chunk(self) -> float:
        """Bytes written by one program operation on a plane."""
        if self.mapping == "naive":
            return self.page
        per_stream = (self.buffer_per_plane / self.streams_per_plane() if self.buffer_per_plane
                      else self.soc_buffer / self.streams)
        return min(self.page, per_stream) if per_stream > 0 else self.page

    def programs_per_token(self) -> tuple[float, float]:
        """(program operations per token on the busiest plane, in total), amortized over page fills."""
        bytes_per_token = self.streams * self.unit
        total = bytes_per_token / self.program_chunk()
        return total / self.planes, total

    def partial_programs_per_page(self) -> float:
        return self.page / self.program_chunk()


def naive_phase_reads(planes, layers, kv_heads, unit, page, context, heads) -> tuple[float, float]:
    return _naive_cached(int(planes), int(layers), int(kv_heads), float(unit), float(page), int(context),
                         int(heads))


@lru_cache(maxsize=1024)
def _naive_cached(planes, layers, kv_heads, unit, page, context, heads):
    import numpy as np

    record = 2 * layers * kv_heads * unit           # bytes of one token's KV
    width = heads * unit                            # the phase reads `heads` contiguous units per token
    t = np.arange(context, dtype=np.float64)
    start = t * record                              # layer 0, K (any layer/K|V gives the same pattern)
    first = np.floor(start / page).astype(np.int64)
    last = np.floor((start + width - 1) / page).astype(np.int64)
    counts = last - first + 1
    # distinct pages: consecutive tokens may share a page when records are smaller than a page
    ids = np.concatenate([np.arange(a, b + 1) for a, b in zip(first, last, strict=True)]) if (
        context < 2048) else _page_ids(first, counts)
    ids = np.unique(ids)
    per_plane = np.bincount(ids % planes, minlength=planes)
    return float(per_plane.max()), float(ids.size)


def _page_ids(first, counts):
    import numpy as np

    total = int(counts.sum())
    offs = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(first, counts) + offs


def enumerate_layout(layout: KvLayout, context: int) -> dict:
    """Explicit placement of every (layer, head, kv, token) unit: {(l, h, kv, t): (plane, page_id, offset)}.

    For tests on small configurations: every byte mapped once, no page over-filled, and page reads per
    phase equal `phase_reads`.
    """
    out = {}
    if layout.mapping == "naive":
        pos = 0.0
        for t in range(context):
            for lyr in range(layout.layers):
                for kv in range(2):
                    for h in range(layout.kv_heads):
                        page_id = int(pos // layout.page)
                        out[(lyr, h, kv, t)] = (page_id % layout.planes, page_id, pos - page_id * layout.page)
                        pos += layout.unit
        return out
    p = layout.planes_per_stream
    per_page = layout.page / layout.unit
    for lyr in range(layout.layers):
        for h in range(layout.kv_heads):
            for kv in range(2):
                if layout.split_kv_sets:
                    pair = kv * layout.kv_heads + h          # K sets first, then V sets
                    s = pair % layout.sets
                    base_plane = s * p
                else:
                    base_plane = 0
                for t in range(context):
                    plane = base_plane + t % p
                    local = t // p                          # token index within this plane's stream
                    page_in_stream = int(local // per_page)
                    offset = (local - page_in_stream * per_page) * layout.unit
                    page_id = ("s", lyr, h, kv, plane, page_in_stream)
                    out[(lyr, h, kv, t)] = (plane, page_id, offset)
    return out
