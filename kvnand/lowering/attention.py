"""Where attention runs: Logit (q.K^T), softmax and Attend (p.V) of a layer's head groups, lowered to tasks.

- `flash_pe`: in the IFC dies' per-plane PEs over the KV pages in place; logits go to the NPU for softmax
  and the probabilities come back (KVNAND-C and -D).
- `npu`: on the NPU, reading the KV from its home (DRAM as an operand stream, plain NAND by readout).
- `csd`: in a computational storage drive's attention engine (InstAttention); q and the output cross the link.
"""

from __future__ import annotations

from kvnand.hw.units import link_time
from kvnand.lowering.registry import Registry
from kvnand.program import Pipe, Seq, Task, single_stage

ATTENTION_SITES: Registry = Registry("placement.attention")


class AttentionSite:
    name = ""

    def missing(self, system, kv_home) -> str | None:
        return None

    def lower(self, lw, kv_heads: int, q_heads: int, macs: float) -> Seq:
        """One sequence's attention: `q_heads` query heads for each of its `lw.queries` query tokens over the
        cached keys (`macs` per phase); the causal part among the query tokens is the lowering's."""
        raise NotImplementedError


@ATTENTION_SITES.register("flash_pe")
class InFlash(AttentionSite):
    def missing(self, system, kv_home):
        if not kv_home.on_ifc_dies:
            return "the KV cache on IFC dies (kv.store colocated or flash_group)"
        if system.flash.logic is None:
            return "compute logic on the IFC dies (flash.logic)"
        return None

    def lower(self, lw, kv_heads, q_heads, macs):
        g, lay, a = lw.kvgroup, lw.layout, lw.p.act_bytes
        m, L, nq = lw.m, lw.L, lw.queries
        busiest, total = lay.phase_reads(L, kv_heads)
        # every query token's heads against each sensed page (passes over the register when they do not fit)
        macs_per_page = (g.page_bytes / lw.p.kv_bytes) * (m.heads // m.kv_heads) * nq
        psum = lw.s.flash.logic.psum_bytes
        ch = g.channels_used

        def phase(name):
            return Task(name, "attention", (g.name,), g.compute_pipe(macs_per_page), busiest,
                        lw.sense_counts(g, total, macs, kv=True))

        q_bytes = q_heads * m.head_dim * a * nq
        logits = q_heads * L * a * nq
        # each plane of a stream returns (h/k) x d partial outputs per query token, reduced per die in the
        # global buffer
        dies_per_stream = max(1, lay.planes_per_stream // g.die.geometry.planes)
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
        g, a, m = lw.kvgroup, lw.p.act_bytes, lw.m
        busiest, total = lw.layout.phase_reads(lw.L, kv_heads)
        link, rate = lw.s.link, lw.s.csd.macs_per_s
        qv = q_heads * m.head_dim * a * lw.queries
        # K then V pages through the drive's channels into the engine, which spends its share of the Logit and
        # Attend MACs and of the softmax (at its MAC rate: an assumption) on each page
        items = 2 * busiest
        engine_t = (2 * macs + lw.L * q_heads * lw.queries) / rate / items
        read = g.readout_pipe()
        pipe = Pipe(read.names + ("CSD attention engine",), read.times + (engine_t,),
                    read.holds + (("attention engine",),))
        bits = 2 * total * g.page_bytes * 8
        counts = (("csd.sense_bits", bits), ("csd.io_bits", bits), ("csd.macs", 2 * macs),
                  ("ctrl.ecc_decode_bits", bits))
        return Seq((Task("q.link", "attention", ("link",), single_stage("PCIe link", link_time(link, 3 * qv)), 1,
                         (("link.bits", 3 * qv * 8),)),
                    Task("csd.attention", "attention", ("csd",), pipe, items, counts),
                    Task("o.link", "attention", ("link",), single_stage("PCIe link", link_time(link, qv)), 1,
                         (("link.bits", qv * 8),))))
