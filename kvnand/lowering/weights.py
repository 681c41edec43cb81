"""Where the weights live: how a GEMV y = x W and the prefill's weight stream are lowered to tasks.

- `flash_pe`: in-flash compute on per-plane PEs (or die cores): input broadcast per channel, page
  pipeline sense -> register -> ECC -> PE on every plane, partial sums back (KVNAND, Base-1/2).
- `flash_split`: Cambricon-LLM's READ_COMPUTE (die cores) / READ_SLICE (raw pages to the NPU) split,
  balanced so both paths finish together, under the array's own read rate.
- `host`: weights in host DRAM streamed into the NPU (the CSD-offload system).
- `dram`: weights in the system's DRAM streamed into the NPU (a speculative draft model placed on the NPU,
  placement.draft 'npu'; sharing the flash channels when the DRAM does).
"""

from __future__ import annotations

from kvnand.hw.units import dram_rate, npu_matmul_pipe, npu_peak
from kvnand.lowering.registry import Registry
from kvnand.mapping.capacity import Store
from kvnand.mapping.weights import tile_gemv
from kvnand.program import Seq, Task, ceil, maximum, minimum, pick, single_stage, sqrt, top, where

WEIGHT_HOMES: Registry = Registry("placement.weights")


class WeightHome:
    name = ""

    def missing(self, system) -> str | None:
        """What the system lacks for this home (None when it can be lowered)."""
        return None

    def gemv_parts(self, lw, name: str, stage: str, in_dim: int, out_dim: int) -> tuple:
        """(input broadcast, compute, output gather) of Y = X W, X with `lw.cols` rows (one per query
        column: sequences x query tokens), every weight read once for all of them."""
        raise NotImplementedError

    def prefill_stream(self, lw, macs: float, wbytes: float) -> Task:
        """One layer's weights streamed once through the NPU for a prefill GEMM of `macs` MACs."""
        raise NotImplementedError

    def weight_store(self, system, weight_bytes: float) -> Store:
        """The memory that holds the weights when the KV cache lives elsewhere."""
        raise NotImplementedError


def host_gemm(lw, name: str, stage: str, macs: float, wbytes: float) -> Task:
    return _streamed_gemm(lw, name, stage, macs, wbytes, lw.s.host_dram, ("npu", "host"), "host.bits")


def _streamed_gemm(lw, name, stage, macs, wbytes, dram, resources, action) -> Task:
    """A GEMM on the NPU whose weights stream in once from `dram`: the slower of compute and stream."""
    pipe = npu_matmul_pipe(lw.s.npu, macs, lw.p.mac_kind, wbytes, dram_rate(dram))
    return Task(name, stage, resources, pipe, 1, (("npu.ops", 2 * macs), (action, wbytes * 8)))


class _Flash(WeightHome):
    def weight_store(self, system, weight_bytes):
        return Store("IFC flash (weights)", system.flash.dies * system.flash.die.geometry.die_bytes, weight_bytes, 0.0)

    def gemv_parts(self, lw, name, stage, in_dim, out_dim):
        g, a = lw.wgroup, lw.p.act_bytes
        til = tile_gemv(g, in_dim, out_dim, lw.p.weight_bytes)
        psum = lw.s.flash.logic.psum_bytes
        n = lw.cols
        in_bytes = in_dim * a * n
        out_per_channel = til.cols_per_die * psum * g.dies_per_channel * n
        return (lw.xfer(f"{name}.in", stage, in_bytes, in_bytes * g.channels_used),
                self.compute(lw, name, stage, til, in_dim * out_dim * n, self.passes(lw, til)),
                lw.xfer(f"{name}.out", stage, out_per_channel, out_dim * psum * n))

    def passes(self, lw, til) -> int:
        """Passes over the weight pages a GEMM of `lw.cols` query columns takes (1: every column at once)."""
        return 1

    def compute(self, lw, name, stage, til, macs, passes) -> Task:
        raise NotImplementedError

    def prefill_stream(self, lw, macs, wbytes):
        g = lw.wgroup
        pages = ceil(wbytes / (g.page_bytes * g.planes))
        read_t = g.readout_pipe().makespan(pages)
        npu_t = 2 * macs / npu_peak(lw.s.npu, lw.p.mac_kind)
        pipe = pick(read_t >= npu_t, single_stage("flash readout", read_t), single_stage("NPU PE array", npu_t))
        return Task("layer.gemm", "prefill", (g.name, "ch", "npu"), pipe, 1,
                    (("flash.sense_bits", wbytes * 8), ("ch.bits", wbytes * 8), ("npu.ops", 2 * macs)))


@WEIGHT_HOMES.register("flash_pe")
class FlashPe(_Flash):
    def missing(self, system):
        if system.flash is None or system.flash.logic is None:
            return "a flash array with compute logic (flash.logic)"
        lg = system.flash.logic
        if lg.cores_per_die <= 0 and lg.fmacs_per_plane * lg.clock <= 0:
            return "per-plane FMACs (flash.logic.fmacs_per_plane, clock) or die cores (cores_per_die)"
        return None

    def passes(self, lw, til):
        """The die's global buffer holds the input vector and the partial sums of every query column it works
        on; columns that do not fit together are taken in passes, each sensing the pages again (a single
        column that does not fit is an on-chip OOM: Lowering.on_chip_error)."""
        logic = lw.s.flash.logic
        per_column = til.in_dim * lw.p.act_bytes + til.cols_per_die * logic.psum_bytes
        if lw.cols == 1 or logic.global_buffer <= 0:
            return 1
        fits = logic.global_buffer // per_column
        return where(fits > 0, ceil(lw.cols / maximum(fits, 1)), 1)

    def compute(self, lw, name, stage, til, macs, passes):
        g = lw.wgroup
        pages = til.pages_per_die * g.dies * passes
        # the plane's PEs apply every weight of the page to each query column of the pass
        pipe = g.compute_pipe(til.weights_per_page * ceil(lw.cols / passes))
        return Task(name, stage, (g.name,), pipe, til.pages_per_plane * passes, lw.sense_counts(g, pages, macs))


@WEIGHT_HOMES.register("flash_split")
class FlashSplit(_Flash):
    def missing(self, system):
        if system.flash is None or system.flash.logic is None:
            return "a flash array with die cores (flash.logic)"
        lg = system.flash.logic
        if lg.cores_per_die <= 0 or lg.core_rate <= 0:
            return "die cores for READ_COMPUTE (flash.logic.cores_per_die > 0, core_rate > 0)"
        return None

    def compute(self, lw, name, stage, til, macs, passes):
        """A fraction alpha of the pages is computed by the die cores (READ_COMPUTE), the rest is shipped raw
        to the NPU (READ_SLICE); alpha balances the two so both finish together, under the array's own read
        rate."""
        g = lw.wgroup
        logic, die = lw.s.flash.logic, g.die
        pages = til.pages_per_plane * die.geometry.planes * g.dies_per_channel  # per channel, busiest
        page = g.page_bytes
        core_rate = logic.cores_per_die * logic.core_rate * g.dies_per_channel
        # weight bytes/s the channel's cores consume (each weight serves every query column)
        rc_bytes_per_s = core_rate * lw.p.weight_bytes / lw.cols
        ch_rate = lw.s.flash.channel.rate
        array_rate = g.dies_per_channel * die.geometry.planes * page / (die.cell.tR + die.t_register)
        # channel bytes per READ_COMPUTE page: hardware-aware tile (h inputs broadcast to the channel's
        # cores, w partial sums back), minimized at h = sqrt(cores * page): 2 * sqrt(page / cores)
        cores = logic.cores_per_die * g.dies_per_channel
        rc_ch_per_byte = 2 * sqrt(page / cores) / page * lw.cols
        # both paths finish together: alpha*B/rc_rate = ((1-alpha)*B + alpha*B*rc_ch)/ch_rate = T
        alpha = rc_bytes_per_s / (ch_rate + rc_bytes_per_s * (1 - rc_ch_per_byte))
        alpha = minimum(1.0, maximum(0.0, alpha))
        total = pages * page
        t_split = alpha * total / rc_bytes_per_s
        t_array = total / array_rate
        # the NPU computes the READ_SLICE pages (for every query column)
        t_npu = 2 * macs * (1 - alpha) / npu_peak(lw.s.npu, lw.p.mac_kind)
        limiter, t_bound = top((("READ_COMPUTE cores + READ_SLICE channel", t_split), ("array sense", t_array),
                                ("NPU PE array (READ_SLICE pages)", t_npu)))
        t = t_bound + die.cell.tR
        lw.split_alpha = alpha
        all_pages = til.pages_per_die * g.dies
        shipped = (1 - alpha) * all_pages * page
        counts = lw.sense_counts(g, all_pages, macs * alpha) + (
            ("ch.bits", 8 * (shipped + alpha * all_pages * page * rc_ch_per_byte)),
            ("npu.ops", 2 * macs * (1 - alpha)))
        return Task(name, stage, (g.name, "ch"), single_stage(limiter, t), 1, counts, limiter=limiter)


@WEIGHT_HOMES.register("host")
class HostDram(WeightHome):
    def missing(self, system):
        return None if system.host_dram is not None else "host DRAM (host_dram:)"

    def gemv_parts(self, lw, name, stage, in_dim, out_dim):
        wbytes = in_dim * out_dim * lw.p.weight_bytes
        return Seq(()), host_gemm(lw, name, stage, in_dim * out_dim * lw.cols, wbytes), Seq(())

    def prefill_stream(self, lw, macs, wbytes):
        return host_gemm(lw, "layer.gemm", "prefill", macs, wbytes)

    def weight_store(self, system, weight_bytes):
        d = system.host_dram
        return Store("host DRAM", d.channels * d.capacity_per_channel, weight_bytes, 0.0)


@WEIGHT_HOMES.register("dram")
class SystemDram(WeightHome):
    def missing(self, system):
        return None if system.dram is not None else "DRAM for the weights (dram:)"

    def _gemm(self, lw, name, stage, macs, wbytes):
        res = ("npu", "dram") + (("ch",) if lw.s.dram.shares_flash_channels else ())
        return _streamed_gemm(lw, name, stage, macs, wbytes, lw.s.dram, res, "dram.bits")

    def gemv_parts(self, lw, name, stage, in_dim, out_dim):
        wbytes = in_dim * out_dim * lw.p.weight_bytes
        return Seq(()), self._gemm(lw, name, stage, in_dim * out_dim * lw.cols, wbytes), Seq(())

    def prefill_stream(self, lw, macs, wbytes):
        return self._gemm(lw, "layer.gemm", "prefill", macs, wbytes)

    def weight_store(self, system, weight_bytes):
        d = system.dram
        return Store("DRAM (weights)", d.channels * d.capacity_per_channel, weight_bytes, 0.0)
