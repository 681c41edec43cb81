"""KV-cache placement on flash planes under the device's write granularity.

A stream is the K (or V) of one (layer, KV head), or an MLA layer's latent (one stream that both Logit and
Attend read); a unit is one token of a stream (head_dim x bytes).

**Write granularity (device physics).** A program cannot be smaller than one ECC codeword (parity is
computed over the whole codeword and cannot be rewritten: programming only moves cells out of the erased
state) nor than page / NOP (a page accepts at most NOP partial programs). So the minimum program is
`min_program = codeword x ceil(max(page / NOP, codeword) / codeword)`.

**Page-level mapping (KVNAND Sec. IV-D).** Each stream lives on a plane set: with head parallelism
(KVNAND-C) the KV planes form 2k sets, K of head h on one set and its V on another, P = planes / 2k
planes per set (the paper's t = page x (dies x planes / 2k) / unit tokens per page fill); otherwise
(KVNAND-D, Base-2, CSD) one set of all KV planes. The FTL stripes a stream over its set at page
granularity (page i of a stream on plane (offset + i) mod P, offsets staggered over layers), as flash
striping is done: a plane buffers a stream's data only while it is that stream's target, so a plane's
buffer serves ceil(streams of its set / P) streams at a time, not all of them.
Streams that one attention phase reads together on one set (e.g. all KV heads of a layer when a
non-pipelined design reads them at once) form a *co-read group*: sharing a page costs them nothing.

**Slot and read amplification A.** The staging buffer (the per-plane KV buffer for KVNAND-C; the SoC
buffer for D, Base-2 and the CSD's DRAM) is split into equal static slots, one per co-read group that
can be receiving data at once. When a slot holds at least one minimum program, a group fills its own
pages (A = 1) with programs of min(page, slot rounded down to codewords). When it does not, a program
must carry A = ceil(min_program / slot) groups (consecutive layers of the same heads): each page then
holds A groups, and an attention phase senses A pages for every page's worth of data it uses. The FTL
mixes rather than pads: padding a group's slot up to a program would reach min_program / slot instead
of its ceiling (equal whenever slot divides the program, as in every shipped configuration where A > 1)
at the cost of the same fraction of KV capacity, and capacity sets the longest context of a DRAM-free
device. A is applied to page reads (busiest plane and total), hence sensed bits, ECC decodes, energy
and read disturb (a mixed page is read once per phase of each group it holds); programs per token
follow from the program size.

**Naive mapping (the ablation).** A log-structured FTL appends each token's units in generation order
(layer, K|V, head) to one log and fills whole pages; each new page goes to the next plane of a rotated
round-robin (the starting plane of every stripe advances by one, as FTLs do so that a fixed record
stride does not alias onto a few planes). Reading one (layer, K|V) touches pages shared with other
streams: the read amplification the page-level mapping removes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

from kvnand.program import batched, ceil, floor, maximum, minimum, uniform, where


def min_program_bytes(page: float, nop: int, codeword: float) -> float:
    """Smallest legal program: whole codewords, at least page / NOP."""
    return codeword * math.ceil(max(page / nop, codeword) / codeword - 1e-12)


@dataclass(frozen=True)
class KvLayout:
    mapping: str                # "page" | "naive"
    planes: int                 # planes holding KV
    layers: int
    kv_heads: int
    unit: float                 # bytes of one token of one stream
    page: float                 # page data bytes
    split_kv_sets: bool         # page: K and V of a head on disjoint plane sets (head-parallel C), when the
                                # group has at least one plane per (head, K|V); else striped over all planes
    staging_bytes: float = math.inf   # bytes of one staging buffer available to KV writes
    per_plane_staging: bool = False   # True: one buffer per plane (C); False: one shared buffer (SoC)
    codeword: float = 0.0             # ECC codeword data bytes (0: programs limited by NOP only)
    nop: int = 1 << 30                # partial programs a page accepts
    heads_per_phase: int = 1          # KV heads one attention phase reads together
    streams_per_head: int = 2         # K and V; 1 for an MLA latent
    summary_units: float = 0.0        # K-sized vectors per (layer, KV head) and token stored beside K and V
                                      # (a KV policy's selection summaries), written with them

    # ---- geometry of the page-level mapping ----
    @property
    def split(self) -> bool:
        return self.split_kv_sets and uniform(self.planes >= self.streams_per_head * self.kv_heads)

    @property
    def sets(self) -> int:
        """Plane sets a stream can be assigned to (2k for head-parallel C, 1 when striped over all)."""
        return self.streams_per_head * self.kv_heads if self.split else 1

    @property
    def planes_per_stream(self) -> int:
        return maximum(1, self.planes // self.sets)

    @property
    def streams(self) -> int:
        return self.streams_per_head * self.layers * self.kv_heads

    @property
    def co_read(self) -> int:
        """Streams of one (layer, K|V) that a phase reads together on one set."""
        return 1 if self.split else max(1, min(self.heads_per_phase, self.kv_heads))

    @property
    def groups(self) -> int:
        """Co-read groups (the units the FTL writes and a phase reads)."""
        return self.streams_per_head * self.layers * math.ceil(self.kv_heads / self.co_read)

    @property
    def groups_per_set(self) -> int:
        return math.ceil(self.groups / self.sets)

    # ---- write granularity ----
    @cached_property
    def min_program(self) -> float:
        return min_program_bytes(self.page, self.nop, self.codeword or self.page / min(self.nop, 1 << 20))

    @cached_property
    def _sharing(self) -> tuple[int, int]:
        """(A, groups one staging buffer holds at a time). A program needs min_program bytes of buffer.
        One shared buffer (SoC) holds every group: A groups' slots must make a program. A per-plane
        buffer holds the shares (A groups mixed in one page) that target its plane: each needs a
        program's worth, so A is the fewest groups per share that fit the plane's buffer."""
        m, g = self.min_program, self.groups
        if self.mapping == "naive":
            return 1, 1
        if not self.per_plane_staging:
            if self.staging_bytes >= m * g:
                return 1, g
            if self.staging_bytes <= 0:  # nothing left to stage in (an on-chip error): every group shares
                return g, g
            return min(g, math.ceil(m * g / self.staging_bytes - 1e-9)), g
        fits = floor(self.staging_bytes / m + 1e-9)   # shares one plane buffer can stage
        per_set, p = self.groups_per_set, self.planes_per_stream
        if not (batched(p) or batched(fits)):
            a = next((a for a in range(1, per_set + 1) if math.ceil(per_set / (a * p)) <= fits), per_set)
            return a, a * math.ceil(per_set / (a * p))
        import numpy as np  # stacked designs: each its own fewest groups per share

        a = np.full(np.broadcast(p, fits).shape, per_set)
        found = np.zeros(a.shape, dtype=bool)
        for tried in range(1, per_set + 1):
            ok = ~found & (np.ceil(per_set / (tried * p)) <= fits)
            a[ok], found = tried, found | ok
            if found.all():
                break
        return a, a * np.ceil(per_set / (a * p))

    @property
    def staging_fits(self) -> bool:
        """Whether the staging buffer can hold the programs the layout needs (else: a capacity error)."""
        if self.mapping == "naive":
            return True
        return self.read_amplification * self.slot >= self.min_program * (1 - 1e-9)

    @property
    def active_groups(self) -> int:
        """Groups whose data one staging buffer holds at a time."""
        return self._sharing[1]

    @property
    def slot(self) -> float:
        return self.staging_bytes / self.active_groups

    @property
    def read_amplification(self) -> int:
        """A: co-read groups that share every page (1 when a slot holds a minimum program)."""
        return self._sharing[0]

    @property
    def layout(self) -> str:
        if self.mapping == "naive":
            return "generation-order log (naive)"
        a = self.read_amplification
        return "one group per page" if a == 1 else f"{a} layers per page (mixed)"

    @cached_property
    def program_bytes(self) -> float:
        """Bytes one program operation writes: a minimum program when groups share pages, else a page or what a
        slot holds in whole codewords."""
        if self.mapping == "naive":
            return self.page
        cw = self.codeword or self.min_program
        slot = minimum(self.slot, self.page)  # (an unbounded slot programs pages)
        chunk = where(self.slot >= self.page, self.page, maximum(self.min_program, floor(slot / cw + 1e-12) * cw))
        return where(self.read_amplification > 1, self.min_program, chunk)

    @property
    def group_bytes_per_page(self) -> float:
        return self.page / self.read_amplification

    @property
    def tokens_per_page_fill(self) -> float:
        """Tokens after which every plane of a set has filled one page (the paper's t when A = 1)."""
        return self.group_bytes_per_page * self.planes_per_stream / (self.unit * self.co_read)

    # ---- reads ----
    def group_pages(self, context: int) -> int:
        """Pages sensed to read one co-read group over `context` tokens."""
        if not batched(context) and context <= 0:
            return 0
        return ceil(self.co_read * context * self.unit / self.group_bytes_per_page - 1e-9)

    def phase_reads(self, context: int, heads: int) -> tuple[float, float]:
        """Page reads to fetch K (or V) of `heads` KV heads of one layer over `context` tokens:
        (pages on the busiest plane, pages in total)."""
        if not (batched(context) or batched(heads)) and (context <= 0 or heads <= 0):
            return 0.0, 0.0
        if self.mapping == "page":
            n = self.group_pages(context)
            return 1.0 * ceil(n / self.planes_per_stream), 1.0 * (ceil(heads / self.co_read) * n)
        if batched(context) or batched(heads) or batched(self.planes):
            # a batch (contexts, or stacked designs' planes): each distinct point once (the reads are enumerated)
            import numpy as np

            arrays = np.broadcast_arrays(self.planes, context, heads)
            points = list(zip(*(a.ravel().tolist() for a in arrays), strict=True))
            layer_streams = self.streams_per_head * self.layers
            got = {p: naive_phase_reads(p[0], layer_streams, self.kv_heads, self.unit, self.page, p[1], p[2])
                   if p[1] > 0 and p[2] > 0 else (0.0, 0.0) for p in set(points)}
            return tuple(np.array([got[p][j] for p in points]).reshape(arrays[0].shape) for j in (0, 1))
        return naive_phase_reads(self.planes, self.streams_per_head * self.layers, self.kv_heads, self.unit,
                                 self.page, context, heads)

    def sparse_phase_reads(self, held: int, attended: int, granularity: int, heads: int) -> tuple[float, float]:
        """Expected page reads of one phase when each KV head attends to `attended` of its `held` tokens, chosen
        in units of `granularity` tokens: (busiest plane, total).

        A page is sensed whole for any selected unit on it. Assumption: each KV head's units are selected
        independently and spread uniformly over the stream (Quest's and SparF's choices depend on the query,
        not on the position; heavy hitters persist, but where they fall is not known). A page carrying k
        selection units (of every co-read head) is then read with probability phi = 1 - (1 - s)^k, s = the
        fraction of units selected, so the page-read fraction phi exceeds the useful fraction s whenever a
        page holds more than one unit. The busiest plane is the expected maximum over the planes the phase's
        pages are striped on of their selected pages (balls in bins: each plane's dense pages are each read
        with probability phi), not the balanced share, because the selected pages cluster at random."""
        busiest, total = self.phase_reads(held, heads)
        if attended >= held or total == 0:
            return busiest, total
        s = attended / held
        if self.mapping == "page":
            tokens_per_page = self.group_bytes_per_page / (self.unit * self.co_read)
            units_per_page = self.co_read * max(1.0, tokens_per_page / granularity)
            bins = self.planes_per_stream * (math.ceil(heads / self.co_read) if self.split else 1)
        else:  # a log page holds `page / record` tokens of every stream; the phase reads `heads` of them
            tokens_per_page = self.page / (self.streams * self.unit)
            units_per_page = heads * max(1.0, tokens_per_page / granularity)
            bins = min(self.planes, int(total))
        phi = 1.0 - (1.0 - s) ** units_per_page
        # at least one page is read: the independent-page model would otherwise allow none
        busy = max(1.0, expected_max_binomial(int(busiest), phi, bins))
        return busy, max(busy, total * phi)

    # ---- writes ----
    @property
    def written_bytes_per_token(self) -> float:
        """Bytes one token adds to the KV home: its K and V (or latent) units and the policy's summaries."""
        return (self.streams + self.layers * self.kv_heads * self.summary_units) * self.unit

    def programs_per_token(self) -> tuple[float, float]:
        """(program operations per token on the busiest plane, in total), amortized over page fills."""
        total = self.written_bytes_per_token / self.program_bytes
        return total / self.planes, total

    def partial_programs_per_page(self) -> float:
        return ceil(self.page / self.program_bytes - 1e-9)

    def summary(self) -> dict:
        """The `kv_mapping` record of a result."""
        return {"mapping": self.mapping, "planes": self.planes, "planes_per_stream": self.planes_per_stream,
                "tokens_per_page_fill": self.tokens_per_page_fill, "min_program_bytes": self.min_program,
                "staging_slot_bytes": self.slot if self.mapping == "page" else None,
                "read_amplification": self.read_amplification, "layout": self.layout,
                "program_chunk_bytes": self.program_bytes, "programs_per_token": self.programs_per_token()[1],
                "partial_programs_per_page": self.partial_programs_per_page(), "nop": min(self.nop, 1 << 20)}


@lru_cache(maxsize=4096)
def expected_max_binomial(n: int, p: float, bins: int) -> float:
    """E[max of `bins` independent Binomial(n, p)]: sum over c of P(max > c) = 1 - F(c)^bins."""
    if n <= 0 or p <= 0:
        return 0.0
    if p >= 1 or bins <= 1:
        return n * min(p, 1.0)
    import numpy as np
    from scipy.stats import binom

    cdf = binom.cdf(np.arange(n), n, p)
    return float(np.sum(1.0 - cdf ** bins))


def attention_working_set(q_per_kv: int, head_dim: int, act_bytes: float, psum_bytes: float, page: float,
                          kv_bytes: float, pairs_per_plane: int) -> float:
    """Bytes a plane's buffer holds for in-flash attention besides KV staging: per hosted (head, K|V)
    stream set, the query vectors (K planes), the partial outputs (V planes) and two chunks (double
    buffered) of logits / probabilities for the tokens of one page, for the h/k query heads."""
    q = q_per_kv * head_dim * act_bytes
    out = q_per_kv * head_dim * psum_bytes
    chunk = 2 * (page / (head_dim * kv_bytes)) * q_per_kv * act_bytes
    return pairs_per_plane * (max(q, out) + chunk)


def naive_phase_reads(planes, layer_streams, kv_heads, unit, page, context, heads) -> tuple[float, float]:
    """`layer_streams`: streams per KV head over all layers (2 x layers for K and V, layers for MLA)."""
    return _naive_cached(int(planes), int(layer_streams), int(kv_heads), float(unit), float(page), int(context),
                         int(heads))


def naive_plane(page_id, planes: int):
    """Plane of a log page: round-robin, the starting plane of each stripe advanced by one."""
    return (page_id + page_id // planes) % planes


@lru_cache(maxsize=1024)
def _naive_cached(planes, layer_streams, kv_heads, unit, page, context, heads):
    import numpy as np

    record = layer_streams * kv_heads * unit        # bytes of one token's KV
    width = heads * unit                            # the phase reads `heads` contiguous units per token
    t = np.arange(context, dtype=np.float64)
    start = t * record                              # layer 0, K (any layer/K|V gives the same pattern)
    first = np.floor(start / page).astype(np.int64)
    last = np.floor((start + width - 1) / page).astype(np.int64)
    counts = last - first + 1
    ids = np.unique(_page_ids(first, counts))
    per_plane = np.bincount(naive_plane(ids, planes), minlength=planes)
    return float(per_plane.max()), float(ids.size)


def _page_ids(first, counts):
    import numpy as np

    total = int(counts.sum())
    offs = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(first, counts) + offs


def enumerate_layout(layout: KvLayout, context: int) -> dict:
    """Explicit placement of every (layer, head, kv, token) unit: {(l, h, kv, t): (plane, page_id, offset)}.

    For tests on small configurations: every byte mapped once, no page over-filled, and page reads per
    phase equal `phase_reads`. Page-level page ids are ("g", set, group-of-A, page index); a unit may
    straddle two pages of its group (offset + unit > group bytes per page), as in the naive log.
    """
    out = {}
    if layout.mapping == "naive":
        pos = 0.0
        for t in range(context):
            for lyr in range(layout.layers):
                for kv in range(layout.streams_per_head):
                    for h in range(layout.kv_heads):
                        page_id = int(pos // layout.page)
                        out[(lyr, h, kv, t)] = (naive_plane(page_id, layout.planes), page_id,
                                                pos - page_id * layout.page)
                        pos += layout.unit
        return out
    p, a, g = layout.planes_per_stream, layout.read_amplification, layout.co_read
    where = {}                                               # stream -> (set, group key, member)
    for lyr in range(layout.layers):
        for kv in range(layout.streams_per_head):
            for h in range(layout.kv_heads):
                s = kv * layout.kv_heads + h if layout.split else 0  # K sets first, then V sets
                where[(lyr, h, kv)] = (s, (lyr, kv, h // g), h % g)  # co-read group and position in it
    ranks: dict = {}                                         # groups of a set in write order (layer first)
    for s, key, _ in sorted(where.values()):
        ranks.setdefault(s, {}).setdefault(key, len(ranks[s]))
    for (lyr, h, kv), (s, key, member) in where.items():
        share, slot_in_page = divmod(ranks[s][key], a)       # A consecutive groups share pages
        for t in range(context):
            pos = (t * g + member) * layout.unit             # byte position in the group's data
            # in units of page / A (whole numbers, so no rounding puts a unit at the end of a page)
            i = int(pos * a // layout.page)
            plane = s * p + (share + i) % p                  # page-granular striping, staggered by share
            offset = (slot_in_page * layout.page + pos * a - i * layout.page) / a
            out[(lyr, h, kv, t)] = (plane, ("g", s, share, i), offset)
    return out
