"""Compose the program of one decode step (or one prefill) from a system's placement choices.

One mechanism per concept: where weights live (flash PEs, READ_COMPUTE/READ_SLICE split, host
DRAM), where KV lives (co-located, a G2 die group, DRAM, plain NAND, a CSD), whether head groups are
pipelined (QKV of HG i+1 overlaps attention of HG i) and whether heads run in parallel. Every task
names the physical resources it holds; the engines only schedule.

System resources: "ifc" (the weight dies of a co-located design), "g1"/"g2" (KVNAND-D groups), "ch"
(the flash channels), "npu", "dram", "nand" (plain NAND dies), "link" (PCIe), "csd" (the drive),
"host" (host DRAM).
"""

from __future__ import annotations

import math

from kvnand.config.schema import System
from kvnand.hw.flash import FlashGroup
from kvnand.hw.units import dram_rate, link_time, npu_matmul_pipe, npu_peak, npu_special_pipe
from kvnand.mapping.kv import KvLayout, attention_working_set
from kvnand.mapping.weights import tile_gemv
from kvnand.program import Loop, Pipe, Pipeline, Seq, Task, single_stage
from kvnand.workload.model import ModelSpec
from kvnand.workload.precision import Precision


def heads_per_phase(system: System, model: ModelSpec) -> int:
    """KV heads one attention phase works on: one head group at a time when head groups are pipelined
    (or run serially), every KV head at once with head parallelism."""
    if system.schedule.hg_pipeline and system.kv.store != "colocated":
        return 1
    return model.kv_heads if system.schedule.head_parallel else 1


class Builder:
    def __init__(self, system: System, model: ModelSpec, precision: Precision, context: int):
        self.s, self.m, self.p, self.L = system, model, precision, context
        self.split_alpha: float | None = None  # READ_COMPUTE fraction chosen by _split_gemv, for the record
        s = system
        self.wgroup = self.kvgroup = None
        if s.flash is not None:
            if s.kv.store == "flash_group":
                self.wgroup = FlashGroup("g1", s.flash, s.flash.dies - s.kv.g2_dies)
                self.kvgroup = FlashGroup("g2", s.flash, s.kv.g2_dies)
            else:
                self.wgroup = FlashGroup("ifc", s.flash, s.flash.dies)
                if s.kv.store == "colocated":
                    self.kvgroup = self.wgroup
        if s.kv.store in ("nand", "csd"):
            self.kvgroup = FlashGroup("nand" if s.kv.store == "nand" else "csd", s.nand, s.nand.dies)
        self.layout = self._kv_layout()

    # ------------------------------------------------------------------ helpers
    def _kv_layout(self) -> KvLayout | None:
        g = self.kvgroup
        if g is None:
            return None
        s, m = self.s, self.m
        colocated = s.kv.store == "colocated"
        # head parallelism gives every (head, K|V) its own plane set when there are enough planes
        split = colocated and s.schedule.head_parallel and g.planes >= 2 * m.kv_heads
        hp = heads_per_phase(s, m)
        kw = {}
        if colocated and s.flash.logic is not None:
            # KV is staged in the plane's own buffer, beside what in-flash attention keeps there
            kw = {"staging_bytes": s.flash.logic.kv_buffer - self.plane_working_set(split, hp),
                  "per_plane_staging": True}
        elif s.kv.buffer is not None:
            kw = {"staging_bytes": s.kv.buffer.size}
        return KvLayout(s.kv.mapping, g.planes, m.layers, m.kv_heads, m.head_dim * self.p.kv_bytes, g.page_bytes,
                        split_kv_sets=split, codeword=g.array.ecc.codeword_data,
                        nop=g.die.geometry.partial_programs_per_page, heads_per_phase=hp, **kw)

    def plane_working_set(self, split: bool, hp: int) -> float:
        """Bytes of a KV plane's buffer that in-flash attention needs (query, partial outputs, chunks)."""
        m, g = self.m, self.kvgroup
        pairs = 1 if split else hp
        return attention_working_set(m.heads // m.kv_heads, m.head_dim, self.p.act_bytes,
                                     self.s.flash.logic.psum_bytes, g.page_bytes, self.p.kv_bytes, pairs)

    def on_chip_error(self) -> str | None:
        """The first on-chip memory the dataflow overflows (reported like an OOM), or None."""
        s, m, lay = self.s, self.m, self.layout
        logic = s.flash.logic if s.flash is not None else None
        if lay is not None and s.placement.attention == "flash_pe" and logic is not None:
            split = lay.split
            need = self.plane_working_set(split, lay.heads_per_phase)
            if need > logic.kv_buffer:
                return (f"per-plane KV buffer: in-flash attention needs {need / 1024:.2f} KiB (query, partial "
                        f"outputs, logit chunks) > {logic.kv_buffer / 1024:.2f} KiB")
        if lay is not None and lay.mapping == "page" and not lay.staging_fits:
            where = "per-plane KV buffer" if lay.per_plane_staging else "SoC KV staging buffer"
            return (f"{where}: {max(lay.staging_bytes, 0) / 1024:.2f} KiB left for KV writes cannot stage one "
                    f"minimum program ({lay.min_program:.0f} B) per active page")
        if logic is not None and logic.global_buffer > 0 and s.placement.weights == "flash_pe":
            for name, in_dim, out_dim in self._gemvs():
                til = tile_gemv(self.wgroup, in_dim, out_dim, self.p.weight_bytes)
                need = in_dim * self.p.act_bytes + til.cols_per_die * logic.psum_bytes
                if need > logic.global_buffer:
                    return (f"die global buffer: GEMV {name} needs {need / 1024:.1f} KiB (input vector + partial "
                            f"sums of {til.cols_per_die} columns) > {logic.global_buffer / 1024:.1f} KiB")
        if self.logit_rounds() > heads_per_phase(s, m):  # not even one KV head's logits fit
            return (f"NPU SRAM: the logits of one head group at {self.L} tokens "
                    f"({self._logit_bytes(1) / 2**20:.2f} MiB) exceed {s.npu.sram / 2**20:.2f} MiB")
        return None

    def _gemvs(self):
        m = self.m
        up = (2 if m.mlp == "swiglu" else 1) * m.ffn * m.top_k
        yield "qkv", m.hidden, (m.heads + 2 * m.kv_heads) * m.head_dim
        yield "o_proj", m.heads * m.head_dim, m.hidden
        yield "ffn_up", m.hidden, up
        yield "ffn_down", m.ffn * m.top_k, m.hidden
        for mat in m.outer_matrices():
            yield mat.name, mat.in_dim, mat.out_dim

    def _logit_bytes(self, kv_heads: int) -> float:
        return kv_heads * (self.m.heads // self.m.kv_heads) * self.L * self.p.act_bytes

    def logit_rounds(self) -> int:
        """Rounds an attention phase needs so that the logits row of every query head softmax works on at
        once fits the NPU SRAM (head-parallel C otherwise holds every head's row of a layer at once)."""
        sram = self.s.npu.sram
        if not sram or self.s.placement.attention == "csd":
            return 1
        return max(1, math.ceil(self._logit_bytes(heads_per_phase(self.s, self.m)) / sram - 1e-12))

    def xfer(self, name: str, stage: str, bytes_per_channel: float, total_bytes: float,
             commands: int = 1) -> Task:
        """A transfer over the flash channels (all channels in parallel, busiest channel's bytes)."""
        ch = self.s.flash.channel if self.s.flash else self.s.nand.channel
        t = commands * ch.command_overhead + bytes_per_channel / ch.rate
        return Task(name, stage, ("ch",), single_stage("channel bus", t), 1, (("ch.bits", total_bytes * 8),))

    def npu_vec(self, name: str, stage: str, elements: float) -> Task:
        return Task(name, stage, ("npu",), npu_special_pipe(self.s.npu, elements), 1,
                    (("npu.special", elements),))

    @staticmethod
    def part(g: FlashGroup) -> str:
        """Energy-table prefix of a die group: IFC dies price as 'flash', plain dies as 'nand' or 'csd'."""
        return "flash" if g.name in ("ifc", "g1", "g2") else g.name

    def kv_sense_action(self) -> str:
        """The action that counts sensed KV bits (IFC dies also sense weights, counted apart)."""
        prefix = self.part(self.kvgroup)
        return "flash.kv_sense_bits" if prefix == "flash" else f"{prefix}.sense_bits"

    def _sense_counts(self, g: FlashGroup, pages: float, macs: float, kv: bool = False) -> tuple:
        prefix = self.part(g)
        ecc_bits = pages * g.page_bytes * 8 * (1 + g.array.ecc.codeword_parity / g.array.ecc.codeword_data)
        sense = self.kv_sense_action() if kv else f"{prefix}.sense_bits"
        c = [(sense, pages * g.page_bytes * 8), (f"{prefix}.macs", macs)]
        c.append((f"{prefix}.ecc_decode_bits" if g.array.ecc.location == "on_die" else "ctrl.ecc_decode_bits",
                  ecc_bits))
        return tuple(c)

    # ------------------------------------------------------------------ weights
    def gemv(self, name: str, stage: str, in_dim: int, out_dim: int) -> Seq:
        return Seq(self.gemv_parts(name, stage, in_dim, out_dim))

    def gemv_parts(self, name: str, stage: str, in_dim: int, out_dim: int) -> tuple:
        """y = x W on the weights' home (flash PEs, READ_COMPUTE/READ_SLICE split, or the host), as
        (input broadcast, compute, output gather)."""
        a, wb = self.p.act_bytes, self.p.weight_bytes
        macs = in_dim * out_dim
        where = self.s.placement.weights
        if where == "host":
            return Seq(()), self._host_gemv(name, stage, macs, macs * wb), Seq(())
        g = self.wgroup
        til = tile_gemv(g, in_dim, out_dim, wb)
        psum = self.s.flash.logic.psum_bytes
        in_bytes = in_dim * a
        out_per_channel = til.cols_per_die * psum * g.dies_per_channel
        parts = [self.xfer(f"{name}.in", stage, in_bytes, in_bytes * g.channels_used)]
        if where == "flash_pe":
            pages = til.pages_per_die * g.dies
            parts.append(Task(name, stage, (g.name,), g.compute_pipe(til.weights_per_page), til.pages_per_plane,
                              self._sense_counts(g, pages, macs)))
        else:
            parts.append(self._split_gemv(name, stage, g, til, macs))
        parts.append(self.xfer(f"{name}.out", stage, out_per_channel, out_dim * psum))
        return tuple(parts)

    def _host_gemv(self, name, stage, macs, wbytes):
        d = self.s.host_dram
        pipe = npu_matmul_pipe(self.s.npu, macs, self.p.mac_kind, wbytes, dram_rate(d))
        return Task(name, stage, ("npu", "host"), pipe, 1, (("npu.ops", 2 * macs), ("host.bits", wbytes * 8)))

    def _split_gemv(self, name, stage, g: FlashGroup, til, macs) -> Task:
        """Cambricon-LLM: a fraction alpha of the pages is computed by the die cores (READ_COMPUTE), the rest
        is shipped raw to the NPU (READ_SLICE); alpha balances the two so both finish together, under the
        array's own read rate."""
        logic, die = self.s.flash.logic, g.die
        pages = til.pages_per_plane * die.geometry.planes * g.dies_per_channel  # per channel, busiest
        page = g.page_bytes
        core_rate = logic.cores_per_die * logic.core_rate * g.dies_per_channel
        rc_bytes_per_s = core_rate * self.p.weight_bytes  # weight bytes/s the channel's cores consume
        ch_rate = self.s.flash.channel.rate
        array_rate = g.dies_per_channel * die.geometry.planes * page / (die.cell.tR + die.t_register)
        # channel bytes per READ_COMPUTE page: hardware-aware tile (h inputs broadcast to the channel's
        # cores, w partial sums back), minimized at h = sqrt(cores * page): 2 * sqrt(page / cores)
        cores = logic.cores_per_die * g.dies_per_channel
        rc_ch_per_byte = 2 * math.sqrt(page / cores) / page
        # both paths finish together: alpha*B/rc_rate = ((1-alpha)*B + alpha*B*rc_ch)/ch_rate = T
        alpha = rc_bytes_per_s / (ch_rate + rc_bytes_per_s * (1 - rc_ch_per_byte))
        alpha = min(1.0, max(0.0, alpha))
        total = pages * page
        t_split = alpha * total / rc_bytes_per_s
        t_array = total / array_rate
        limiter = "READ_COMPUTE cores + READ_SLICE channel" if t_split >= t_array else "array sense"
        t = max(t_split, t_array) + die.cell.tR
        self.split_alpha = alpha
        all_pages = til.pages_per_die * g.dies
        shipped = (1 - alpha) * all_pages * page
        counts = self._sense_counts(g, all_pages, macs * alpha) + (
            ("ch.bits", 8 * (shipped + alpha * all_pages * page * rc_ch_per_byte)),
            ("npu.ops", 2 * macs * (1 - alpha)))
        return Task(name, stage, (g.name, "ch"), single_stage(limiter, t), 1, counts, limiter=limiter)

    # ------------------------------------------------------------------ attention
    def attention(self, kv_heads: int):
        """Logit, softmax, attend for `kv_heads` KV heads (and their query heads) of one layer."""
        m = self.m
        q_heads = kv_heads * (m.heads // m.kv_heads)
        L, d = self.L, m.head_dim
        macs = q_heads * L * d
        softmax = self.npu_vec("softmax", "softmax", q_heads * L)
        where = self.s.placement.attention
        if where == "flash_pe":
            return self._flash_attention(kv_heads, q_heads, macs, softmax)
        kv_bytes = kv_heads * L * d * self.p.kv_bytes
        if where == "npu" and self.s.kv.store == "dram":
            dram = self.s.dram
            res = ("npu", "dram") + (("ch",) if dram.shares_flash_channels else ())
            def phase(name):
                pipe = npu_matmul_pipe(self.s.npu, macs, self.p.mac_kind, kv_bytes, dram_rate(dram),
                                       label="NPU PE array")
                return Task(name, "attention", res, pipe, 1, (("dram.bits", kv_bytes * 8), ("npu.ops", 2 * macs)))
            return Seq((phase("logit"), softmax, phase("attend")))
        if where == "npu":  # KV read out of plain NAND dies
            return Seq((self._readout_phase("logit", kv_heads, macs), softmax,
                        self._readout_phase("attend", kv_heads, macs)))
        return self._csd_attention(kv_heads, q_heads, macs, kv_bytes)

    def _flash_attention(self, kv_heads, q_heads, macs, softmax):
        g, lay, a = self.kvgroup, self.layout, self.p.act_bytes
        m, L = self.m, self.L
        busiest, total = lay.phase_reads(L, kv_heads)
        macs_per_page = (g.page_bytes / self.p.kv_bytes) * (m.heads // m.kv_heads)
        psum = self.s.flash.logic.psum_bytes
        ch = g.channels_used

        def phase(name):
            return Task(name, "attention", (g.name,), g.compute_pipe(macs_per_page), busiest,
                        self._sense_counts(g, total, macs, kv=True))

        q_bytes = q_heads * m.head_dim * a
        logits = q_heads * L * a
        # each plane of a stream returns (h/k) x d partial outputs, reduced per die in the global buffer
        dies_per_stream = max(1, lay.planes_per_stream // g.die.geometry.planes)
        out = kv_heads * dies_per_stream * (m.heads // m.kv_heads) * m.head_dim * psum
        return Seq((self.xfer("q.bcast", "attention", q_bytes, q_bytes * ch), phase("logit"),
                    self.xfer("logits.out", "attention", logits / ch, logits), softmax,
                    self.xfer("probs.in", "attention", logits / ch, logits), phase("attend"),
                    self.xfer("attn.out", "attention", out / ch, out)))

    def _readout_phase(self, name, kv_heads, macs) -> Task:
        g = self.kvgroup
        busiest, total = self.layout.phase_reads(self.L, kv_heads)
        pipe = g.readout_pipe()
        items = busiest  # one page per plane per multi-plane batch
        npu_t = 2 * macs / npu_peak(self.s.npu, self.p.mac_kind)
        if npu_t > pipe.makespan(items):
            pipe, items = single_stage("NPU PE array", npu_t), 1
        # the bits cross the channel once: charged at the die's interface energy, not again as channel bits
        counts = (("nand.sense_bits", total * g.page_bytes * 8), ("nand.io_bits", total * g.page_bytes * 8),
                  ("npu.ops", 2 * macs),
                  ("ctrl.ecc_decode_bits", total * g.page_bytes * 8))
        return Task(name, "attention", ("nand", "ch"), pipe, items, counts)

    def _csd_attention(self, kv_heads, q_heads, macs, kv_bytes):
        """InstAttention-style: the drive streams K then V pages of the head group through its channels into
        its attention engine; consecutive head groups stream back to back, so only the first pays the
        read pipeline's fill (the task's drain overlaps the next one's first pages)."""
        g, a, m = self.kvgroup, self.p.act_bytes, self.m
        busiest, total = self.layout.phase_reads(self.L, kv_heads)
        link, rate = self.s.link, self.s.csd.macs_per_s
        qv = q_heads * m.head_dim * a
        # K then V pages through the drive's channels into the engine, which spends its share of the Logit and
        # Attend MACs and of the softmax (at its MAC rate: an assumption) on each page
        items = 2 * busiest
        engine_t = (2 * macs + self.L * q_heads) / rate / items
        read = g.readout_pipe()
        pipe = Pipe(read.names + ("CSD attention engine",), read.times + (engine_t,),
                    read.holds + (("attention engine",),))
        counts = (("csd.sense_bits", 2 * total * g.page_bytes * 8), ("csd.io_bits", 2 * total * g.page_bytes * 8),
                  ("csd.macs", 2 * macs), ("ctrl.ecc_decode_bits", 2 * total * g.page_bytes * 8))
        return Seq((Task("q.link", "attention", ("link",), single_stage("PCIe link", link_time(link, 3 * qv)), 1,
                         (("link.bits", 3 * qv * 8),)),
                    Task("csd.attention", "attention", ("csd",), pipe, items, counts),
                    Task("o.link", "attention", ("link",), single_stage("PCIe link", link_time(link, qv)), 1,
                         (("link.bits", qv * 8),))))

    # ------------------------------------------------------------------ KV writes
    def kv_append(self, kv_heads: int):
        """New K and V of `kv_heads` heads of one layer go to the KV home (programs amortized in kv_program)."""
        b = 2 * kv_heads * self.m.head_dim * self.p.kv_bytes
        store = self.s.kv.store
        if store == "colocated":
            return self.xfer("kv.to_planes", "kv_write", b / self.kvgroup.channels_used, b)
        if store == "dram":
            res = ("dram",) + (("ch",) if self.s.dram.shares_flash_channels else ())
            return Task("kv.dram", "kv_write", res, single_stage("DRAM", b / dram_rate(self.s.dram)), 1,
                        (("dram.bits", b * 8),))
        if store == "csd":
            return Task("kv.link", "kv_write", ("link",), single_stage("PCIe link", link_time(self.s.link, b)),
                        1, (("link.bits", b * 8), ("csdbuf.bits", b * 8)))
        return Task("kv.soc_buffer", "kv_write", ("npu",), single_stage("SoC SRAM", 0.0), 1,
                    (("socbuf.bits", b * 8),))

    def kv_program(self):
        """Programs of one token's KV, amortized: staged bytes cross the channel when a chunk is full and
        each program holds its plane for tPROG (the busiest plane's share per token)."""
        g, lay = self.kvgroup, self.layout
        if g is None:
            return Seq(())
        per_plane, total_ops = lay.programs_per_token()
        bytes_tok = lay.streams * lay.unit
        die = g.die
        t = per_plane * die.cell.tPROG
        on_die = self.s.kv.store == "colocated" and g.array.ecc.location == "on_die"
        counts = [(f"{self.part(g)}.program_bits", bytes_tok * 8),
                  ("flash.ecc_encode_bits" if on_die else "ctrl.ecc_encode_bits", bytes_tok * 8),
                  (f"{self.part(g)}.program_ops", total_ops)]
        parts = []
        if self.s.kv.store in ("flash_group", "nand"):
            parts.append(self.xfer("kv.flush", "kv_write", bytes_tok / g.channels_used, bytes_tok,
                                   commands=math.ceil(total_ops / g.channels_used)))
            counts.append(("socbuf.bits", bytes_tok * 8))
        parts.append(Task("kv.program", "kv_write", (g.name,), single_stage("array program", t), 1, tuple(counts)))
        return Seq(tuple(parts))

    # ------------------------------------------------------------------ a layer, a step
    def _qkv(self, kv_heads: int):
        """QKV GEMV of `kv_heads` head groups, split into (input broadcast, compute, rest)."""
        m = self.m
        q_heads = kv_heads * (m.heads // m.kv_heads)
        bcast, compute, out = self.gemv_parts("qkv", "qkv", m.hidden, (q_heads + 2 * kv_heads) * m.head_dim)
        tail = (out, self.npu_vec("rope", "npu_vector", (q_heads + kv_heads) * m.head_dim),
                self.kv_append(kv_heads))
        return bcast, compute, Seq(tail)

    def _attention_block(self):
        """QKV and attention of a layer, plus the O-projection when it joins the head-group pipeline."""
        m, sch = self.m, self.s.schedule
        heads = heads_per_phase(self.s, m)
        bcast, compute, rest = self._qkv(heads)
        if heads == m.kv_heads:
            r = self.logit_rounds()
            attn = self.attention(heads) if r == 1 else Loop(self.attention(math.ceil(heads / r)), r,
                                                             name="attention rounds (NPU SRAM)")
            return [bcast, compute, rest, attn, self.gemv("o_proj", "o_proj", m.heads * m.head_dim, m.hidden)]
        if sch.hg_pipeline and self.s.kv.store != "colocated":
            # discrete designs: QKV of HG i+1 (weights' dies) overlaps attention of HG i (KV's home); the QKV
            # input vector is the same for every head group, so it is broadcast once
            if not sch.overlap_o_proj:
                return [bcast, Pipeline(compute, Seq((rest, self.attention(1))), m.kv_heads, name="head groups"),
                        self.gemv("o_proj", "o_proj", m.heads * m.head_dim, m.hidden)]
            # O-projection rows of HG i run on the weights' dies as soon as its attention output is back; the
            # partial sums accumulate in the dies' global buffers and leave once per layer
            o_in, o_compute, o_out = self.gemv_parts("o_proj", "o_proj", (m.heads // m.kv_heads) * m.head_dim,
                                                     m.hidden)
            return [bcast, Pipeline(compute, Seq((rest, self.attention(1), o_in, o_compute)), m.kv_heads,
                                    name="head groups"), o_out]
        return [bcast, Loop(Seq((compute, rest, self.attention(1))), m.kv_heads, name="head groups (serial)"),
                self.gemv("o_proj", "o_proj", m.heads * m.head_dim, m.hidden)]

    def layer(self):
        m = self.m
        parts = [self.npu_vec("attn_norm", "npu_vector", m.hidden), *self._attention_block(),
                 self.npu_vec("residual", "npu_vector", 2 * m.hidden)]
        if m.is_moe:
            parts.append(Task("router", "ffn", ("npu",),
                              npu_matmul_pipe(self.s.npu, m.hidden * m.experts, self.p.mac_kind), 1,
                              (("npu.ops", 2 * m.hidden * m.experts),)))
        up_cols = (2 if m.mlp == "swiglu" else 1) * m.ffn * m.top_k
        parts += [self.gemv("ffn_up", "ffn", m.hidden, up_cols),
                  self.npu_vec("ffn_act", "npu_vector", up_cols),
                  self.gemv("ffn_down", "ffn", m.ffn * m.top_k, m.hidden),
                  self.npu_vec("residual", "npu_vector", m.hidden)]
        return Seq(tuple(parts), name="layer")

    def decode_step(self):
        m = self.m
        head = [self.npu_vec("final_norm", "npu_vector", m.hidden)]
        for mat in m.outer_matrices():
            if mat.name != "project_in":
                head.append(self.gemv(mat.name, "lm_head", mat.in_dim, mat.out_dim))
        if any(x.name == "project_in" for x in m.outer_matrices()):
            mat = next(x for x in m.outer_matrices() if x.name == "project_in")
            head.insert(0, self.gemv("project_in", "lm_head", mat.in_dim, mat.out_dim))
        head.append(self.npu_vec("sample", "npu_vector", m.vocab))
        return Seq((Loop(self.layer(), m.layers, name="layers"), *head, self.kv_program()), name="decode step")

    # ------------------------------------------------------------------ prefill
    def prefill(self, n: int):
        """Prefill of n prompt tokens: GEMMs on the NPU (or host) with weights streamed once per layer,
        causal attention on the NPU, the prompt's KV written to its home."""
        m, p = self.m, self.p
        per_layer_w = sum(x.in_dim * x.out_dim * x.active for x in m.matrices())
        macs = per_layer_w * n
        wbytes = per_layer_w * p.weight_bytes
        if self.s.placement.weights == "host":
            stream = self._host_gemv("layer.gemm", "prefill", macs, wbytes)
        else:
            g = self.wgroup
            pages = math.ceil(wbytes / (g.page_bytes * g.planes))
            read_t = g.readout_pipe().makespan(pages)
            npu_t = 2 * macs / npu_peak(self.s.npu, p.mac_kind)
            pipe = single_stage("flash readout", read_t) if read_t >= npu_t else single_stage("NPU PE array", npu_t)
            stream = Task("layer.gemm", "prefill", (g.name, "ch", "npu"), pipe, 1,
                          (("flash.sense_bits", wbytes * 8), ("ch.bits", wbytes * 8), ("npu.ops", 2 * macs)))
        attn_macs = m.heads * m.head_dim * n * (n + 1) / 2 * 2
        attn = Task("layer.attention", "prefill", ("npu",), npu_matmul_pipe(self.s.npu, attn_macs, p.mac_kind), 1,
                    (("npu.ops", 2 * attn_macs),))
        soft = self.npu_vec("layer.softmax", "prefill", m.heads * n * (n + 1) / 2)
        layer = Seq((stream, attn, soft))
        kv_bytes = m.kv_bytes_per_token(p) * n
        write = self._prefill_kv_write(kv_bytes)
        return Seq((Loop(layer, m.layers, name="layers"), write), name="prefill")

    def _prefill_kv_write(self, kv_bytes):
        store = self.s.kv.store
        if store == "dram":
            return Task("kv.dram", "prefill", ("dram",), single_stage("DRAM", kv_bytes / dram_rate(self.s.dram)), 1,
                        (("dram.bits", kv_bytes * 8),))
        g = self.kvgroup
        pages_per_plane = math.ceil(kv_bytes / (g.page_bytes * g.planes))
        t_prog = pages_per_plane * g.die.cell.tPROG
        t_in = kv_bytes / (g.channels_used * g.array.channel.rate)
        res = (g.name, "ch") if store != "csd" else ("csd", "link")
        if store == "csd":
            t_in = max(t_in, link_time(self.s.link, kv_bytes))
        counts = ((f"{self.part(g)}.program_bits", kv_bytes * 8),
                  ("ch.bits" if store != "csd" else "link.bits", kv_bytes * 8))
        return Task("kv.program", "prefill", res, Pipe(("transfer in", "array program"), (t_in, t_prog),
                                                        (("bus",), ("array",))), 1, counts)
