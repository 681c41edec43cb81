"""Where attention runs: Logit (q.K^T), softmax and Attend (p.V) of a layer's head groups, lowered to tasks.

- `flash_pe`: in the IFC dies' per-plane PEs over the KV pages in place; logits go to the NPU for softmax
  and the probabilities come back (KVNAND-C and -D).
- `npu`: on the NPU, reading the KV from its home (DRAM as an operand stream, plain NAND by readout).
- `csd`: in a computational storage drive's attention engine (InstAttention); q and the output cross the link.

Each site also lowers a KV policy's selection (`select`): a Logit-like pass of the query over the policy's
summary vectors, read from the KV home like keys (stage `kv_select`), then the top-k of the scores per
query head. The attention phases read the pages `lw.kv_reads` gives (all pages, or the sparse model's), and
a quantizing policy's full-width residual window from the staging buffer (`lw.window_read_counts`).
"""

from __future__ import annotations

from kvnand.hw.units import link_time
from kvnand.lowering.registry import Registry
from kvnand.program import Pipe, Seq, Task, maximum, single_stage

ATTENTION_SITES: Registry = Registry("placement.attention")


class AttentionSite:
    name = ""

    def missing(self, system, kv_home) -> str | None:
        return None

    def lower(self, lw, kv_heads: int, q_heads: int, macs: float) -> Seq:
        """One sequence's attention: `q_heads` query heads for each of its `lw.queries` query tokens over the
        cached keys (`macs` per phase); the causal part among the query tokens is the lowering's."""
        raise NotImplementedError

    def select(self, lw, kv_heads: int, q_heads: int, macs: float, scores: int) -> Seq:
        """Selection over `lw.L` summary vectors per KV head (`macs` per head group), giving `scores` scores
        per query head, of which the top-k are picked."""
        raise NotImplementedError


@ATTENTION_SITES.register("flash_pe")
class InFlash(AttentionSite):
    def missing(self, system, kv_home):
        if not kv_home.on_ifc_dies:
            return "the KV cache on IFC dies (kv.store colocated or flash_group)"
        if system.flash.logic is None:
            return "compute logic on the IFC dies (flash.logic)"
        return None

    @staticmethod
    def _phase(lw, name: str, stage: str, kv_heads: int, macs: float) -> Task:
        """The plane PEs of the KV planes over the pages a phase reads."""
        g, m = lw.kvgroup, lw.m
        busiest, total = lw.kv_reads(kv_heads)
        # every query token's heads against each sensed page (passes over the register when they do not fit)
        macs_per_page = (g.page_bytes / lw.p.kv_bytes) * (m.heads // m.kv_heads) * lw.queries
        return Task(name, stage, (g.name,), g.compute_pipe(macs_per_page), busiest,
                    lw.sense_counts(g, total, macs, kv=True) + lw.window_read_counts(kv_heads))

    def select(self, lw, kv_heads, q_heads, macs, scores):
        """The plane PEs score the summaries; the scores go to the NPU, which picks the top-k."""
        ch, a = lw.kvgroup.channels_used, lw.p.act_bytes
        q_bytes = q_heads * lw.m.head_dim * a * lw.queries
        score_bytes = q_heads * scores * a * lw.queries
        return Seq((lw.xfer("q.bcast", "kv_select", q_bytes, q_bytes * ch),
                    self._phase(lw, "select", "kv_select", kv_heads, macs),
                    lw.xfer("scores.out", "kv_select", score_bytes / ch, score_bytes),
                    lw.npu_vec("top-k", "kv_select", q_heads * scores * lw.queries)))

    def lower(self, lw, kv_heads, q_heads, macs):
        g, lay, a = lw.kvgroup, lw.layout, lw.p.act_bytes
        m, L, nq = lw.m, lw.L, lw.queries
        psum = lw.s.flash.logic.psum_bytes
        ch = g.channels_used

        def phase(name):
            return self._phase(lw, name, "attention", kv_heads, macs)

        q_bytes = q_heads * m.head_dim * a * nq
        logits = q_heads * L * a * nq
        # each plane of a stream returns (h/k) x d partial outputs per query token, reduced per die in the
        # global buffer
        dies_per_stream = maximum(1, lay.planes_per_stream // g.die.geometry.planes)
        out = kv_heads * dies_per_stream * (m.heads // m.kv_heads) * m.head_dim * psum * nq
        return Seq((lw.xfer("q.bcast", "attention", q_bytes, q_bytes * ch), phase("logit"),
                    lw.xfer("logits.out", "attention", logits / ch, logits), lw.softmax(q_heads),
                    lw.xfer("probs.in", "attention", logits / ch, logits), phase("attend"),
                    lw.xfer("attn.out", "attention", out / ch, out)))


@ATTENTION_SITES.register("npu")
class OnNpu(AttentionSite):
    def missing(self, system, kv_home):
        if not kv_home.npu_readable:
            return "a KV home the NPU can read (kv.store dram or nand)"
        return None

    def lower(self, lw, kv_heads, q_heads, macs):
        home = lw.kv_home
        return Seq((home.npu_phase(lw, "logit", kv_heads, macs), lw.softmax(q_heads),
                    home.npu_phase(lw, "attend", kv_heads, macs)))

    def select(self, lw, kv_heads, q_heads, macs, scores):
        return Seq((lw.kv_home.npu_phase(lw, "select", kv_heads, macs, stage="kv_select"),
                    lw.npu_vec("top-k", "kv_select", q_heads * scores * lw.queries)))


@ATTENTION_SITES.register("csd")
class InDrive(AttentionSite):
    def missing(self, system, kv_home):
        if not kv_home.in_drive:
            return "the KV cache in the drive (kv.store csd)"
        if system.csd is None:
            return "the drive's attention engine (csd:)"
        return None

    def lower(self, lw, kv_heads, q_heads, macs):
        """InstAttention-style: the drive streams K then V pages of the head group through its channels into
        its attention engine; consecutive head groups stream back to back, so only the first pays the
        read pipeline's fill (the task's drain overlaps the next one's first pages)."""
        link, qv = lw.s.link, q_heads * lw.m.head_dim * lw.p.act_bytes * lw.queries
        # K then V pages through the drive's channels into the engine, which spends its share of the Logit and
        # Attend MACs and of the softmax (at its MAC rate: an assumption) on each page
        return Seq((Task("q.link", "attention", ("link",), single_stage("PCIe link", link_time(link, 3 * qv)), 1,
                         (("link.bits", 3 * qv * 8),)),
                    self._engine(lw, "csd.attention", "attention", kv_heads, 2, 2 * macs, lw.L * q_heads * lw.queries),
                    Task("o.link", "attention", ("link",), single_stage("PCIe link", link_time(link, qv)), 1,
                         (("link.bits", qv * 8),))))

    @staticmethod
    def _engine(lw, name: str, stage: str, kv_heads: int, phases: int, macs: float, other_ops: float) -> Task:
        """`phases` phases' pages streamed through the drive's channels into its engine, which spends `macs`
        MACs and `other_ops` further operations (softmax, top-k: at its MAC rate) on them."""
        g = lw.kvgroup
        busiest, total = lw.kv_reads(kv_heads)
        items = phases * busiest
        read = g.readout_pipe()
        engine_t = (macs + other_ops) / lw.s.csd.macs_per_s / items
        pipe = Pipe(read.names + ("CSD attention engine",), read.times + (engine_t,),
                    read.holds + (("attention engine",),))
        bits = phases * total * g.page_bytes * 8
        window = tuple((a, phases * b) for a, b in lw.window_read_counts(kv_heads))
        counts = (("csd.sense_bits", bits), ("csd.io_bits", bits), ("csd.macs", macs),
                  ("ctrl.ecc_decode_bits", bits), *window)
        return Task(name, stage, ("csd",), pipe, items, counts)

    def select(self, lw, kv_heads, q_heads, macs, scores):
        """Scoring and top-k in the drive's engine (the top-k at its MAC rate, an assumption); q crosses the
        link once, with the attention's."""
        return Seq((self._engine(lw, "csd.select", "kv_select", kv_heads, 1, macs, q_heads * scores * lw.queries),))
