"""Where the KV cache lives: its die groups and memories, how new K/V get there and how they are programmed.

- `colocated`: on the same IFC dies as the weights (KVNAND-C); staged in each plane's own buffer.
- `flash_group`: on a G2 group of IFC dies, the weights on G1 (KVNAND-D); staged in the SoC buffer.
- `dram`: in DRAM next to the NPU (Base-1, Cambricon-LLM).
- `nand`: on plain NAND dies read out over their interface (Base-2); staged in the SoC buffer. With a `link:`
  part the dies sit in a device behind that link (CXL- or PCIe-attached flash): KV crosses the link both
  ways, and the device's own channels and buffer (kv.buffer) stage and program it.
- `csd`: in a computational storage drive behind a link (InstAttention); staged in the drive's DRAM.
"""

from __future__ import annotations

from kvnand.hw.flash import FlashGroup
from kvnand.hw.units import dram_rate, link_time, npu_matmul_pipe, npu_peak
from kvnand.lowering.registry import Registry
from kvnand.mapping.capacity import KvGrowth, Store
from kvnand.program import Pipe, Seq, Task, ceil, maximum, pick, single_stage

KV_HOMES: Registry = Registry("kv.store")


def _dies_bytes(array, dies: int) -> float:
    return dies * array.die.geometry.die_bytes


def weight_groups(system) -> FlashGroup | None:
    """The die group holding the weights when they are in IFC flash and not split off (all dies)."""
    return FlashGroup("ifc", system.flash, system.flash.dies) if system.flash is not None else None


class KvHome:
    name = ""
    staged_in_soc = False       # new K/V wait in the SoC buffer (kv.buffer) and cross the channel in chunks
    encodes_on_logic_die = False  # the ECC encoder of the IFC logic die encodes KV programs (else the controller)
    on_ifc_dies = False         # the IFC dies' PEs can attend over it in place
    in_drive = False            # a computational storage drive holds it (and can attend over it)
    npu_readable = False        # the NPU can read it (npu_phase)
    shares_weight_dies = False  # the weights' dies hold it too: no pipelining of head groups across units
    buffer_name = "SoC KV staging buffer"  # the shared buffer (kv.buffer) that stages KV writes, in errors
    window_read_action = None   # energy action of reading the residual window from that buffer
    window_in_home = False      # the residual window is held in the home itself (DRAM updates in place)

    def npu_phase(self, lw, name: str, kv_heads: int, macs: float, stage: str = "attention") -> Task | None:
        """One attention phase (Logit, Attend, or a KV policy's selection) on the NPU reading this home's KV
        (`lw.L` vectors per KV head), or None if the NPU cannot read it."""
        return None

    def missing(self, system) -> str | None:
        return None

    def groups(self, system) -> tuple[FlashGroup | None, FlashGroup | None]:
        """(weights' die group, KV's die group)."""
        return weight_groups(system), None

    def stores(self, system, weight_bytes: float, kv: KvGrowth, weights) -> list[Store]:
        """Memories and what they hold: (name, capacity, fixed bytes, KV growth with the context)."""
        return [weights.weight_store(system, weight_bytes), *self.kv_stores(system, kv)]

    def kv_stores(self, system, kv: KvGrowth) -> list[Store]:
        return []

    def append(self, lw, nbytes: float) -> Task:
        """New K and V of one layer's head groups (`nbytes`) on their way to the KV home."""
        raise NotImplementedError

    def program(self, lw) -> Seq:
        """Programs of the step's KV (one token per sequence, or its accepted tokens after a verification),
        amortized: staged bytes cross the channel when a program is full and each program holds its plane for
        tPROG (the busiest plane's share per token)."""
        g, lay = lw.kvgroup, lw.layout
        if g is None:
            return Seq(())
        tokens = lw.batch * lw.accepted
        per_plane, total_ops = (x * tokens for x in lay.programs_per_token())
        bytes_tok = lay.written_bytes_per_token * tokens
        t = per_plane * g.die.cell.tPROG
        on_die = self.encodes_on_logic_die and g.array.ecc.location == "on_die"
        part = lw.part(g)
        counts = [(f"{part}.program_bits", bytes_tok * 8),
                  ("flash.ecc_encode_bits" if on_die else "ctrl.ecc_encode_bits", bytes_tok * 8),
                  (f"{part}.program_ops", total_ops)]
        parts = []
        if self.staged_in_soc:
            parts.append(self.flush(lw, bytes_tok, ceil(total_ops / g.channels_used)))
            counts.append(("socbuf.bits", bytes_tok * 8))
        parts.append(Task("kv.program", "kv_write", (g.name,), single_stage("array program", t), 1, tuple(counts)))
        gc = lw.gc()
        if gc.copy_bytes_per_token:
            parts.append(self._gc_task(lw, gc, tokens))
        return Seq(tuple(parts))

    def _gc_task(self, lw, gc, tokens: float) -> Task:
        """Garbage collection of evicted KV slots, amortized per token (kvnand.mapping.gc) over the `tokens` the
        step writes: the copy-back of the still-valid data and the erases, spread by the FTL over the KV planes."""
        g = lw.kvgroup
        t, counts = g.copy_back(gc.copy_bytes_per_token * tokens / g.page_bytes, gc.erases_per_token * tokens,
                                lw.part(g), lw.kv_sense_action())
        return Task("kv.gc", "kv_gc", (g.name,), single_stage("GC copy-back + erase", t), 1, tuple(counts.items()))

    def flush(self, lw, bytes_tok: float, commands: int) -> Task:
        """A token's staged K/V from the buffer to the KV dies over the flash channels."""
        g = lw.kvgroup
        return lw.xfer("kv.flush", "kv_write", bytes_tok / g.channels_used, bytes_tok, commands=commands)

    def prefill_write(self, lw, kv_bytes: float) -> Task:
        """The prompt's KV written to its home after the prefill: transferred in, then programmed."""
        g = lw.kvgroup
        t_prog = ceil(kv_bytes / (g.page_bytes * g.planes)) * g.die.cell.tPROG
        resources, t_in, action = self._prefill_transfer(lw, kv_bytes)
        counts = ((f"{lw.part(g)}.program_bits", kv_bytes * 8), (action, kv_bytes * 8))
        return Task("kv.program", "prefill", resources, Pipe(("transfer in", "array program"), (t_in, t_prog),
                                                             (("bus",), ("array",))), 1, counts)

    def _prefill_transfer(self, lw, kv_bytes: float) -> tuple[tuple[str, ...], float, str]:
        """(resources held, transfer time, action counting the transferred bits) of the prompt's KV: over the
        flash channels of the KV group."""
        g = lw.kvgroup
        return (g.name, "ch"), kv_bytes / (g.channels_used * g.array.channel.rate), "ch.bits"


def _soc_append(lw, nbytes: float) -> Task:
    return Task("kv.soc_buffer", "kv_write", ("npu",), single_stage("SoC SRAM", 0.0), 1, (("socbuf.bits", nbytes * 8),))


def _link_append(lw, nbytes: float, buffer_bits: str, label: str) -> Task:
    """New K/V over the host link into the buffer of the device that holds the KV cache."""
    return Task("kv.link", "kv_write", ("link",), single_stage(label, link_time(lw.s.link, nbytes)), 1,
                (("link.bits", nbytes * 8), (buffer_bits, nbytes * 8)))


def _over_link(lw, kv_bytes: float, t_channels: float, device: str) -> tuple[tuple[str, ...], float, str]:
    """The prompt's KV over the link into the device, then its channels: the slower sets the time."""
    return (device, "link"), maximum(t_channels, link_time(lw.s.link, kv_bytes)), "link.bits"


@KV_HOMES.register("colocated")
class Colocated(KvHome):
    encodes_on_logic_die = True
    on_ifc_dies = True
    shares_weight_dies = True

    def missing(self, system):
        if system.flash is None or system.placement.weights not in ("flash_pe", "flash_split"):
            return "weights in IFC flash to share its dies with (placement.weights flash_pe or flash_split)"
        return None

    def groups(self, system):
        g = weight_groups(system)
        return g, g

    def stores(self, system, weight_bytes, kv, weights):
        return [Store.of_kv("IFC flash (weights + KV)", _dies_bytes(system.flash, system.flash.dies), weight_bytes,
                            kv)]

    def append(self, lw, nbytes):
        return lw.xfer("kv.to_planes", "kv_write", nbytes / lw.kvgroup.channels_used, nbytes)


@KV_HOMES.register("flash_group")
class G2Group(KvHome):
    staged_in_soc = True
    on_ifc_dies = True
    window_read_action = "socbuf.bits"

    def missing(self, system):
        if system.flash is None or system.placement.weights not in ("flash_pe", "flash_split"):
            return "weights in IFC flash on the G1 dies (placement.weights flash_pe or flash_split)"
        if system.kv.buffer is None:
            return "an SoC buffer that stages new K/V before they are programmed (kv.buffer)"
        return None

    def groups(self, system):
        g2 = system.kv.g2_dies
        return FlashGroup("g1", system.flash, system.flash.dies - g2), FlashGroup("g2", system.flash, g2)

    def stores(self, system, weight_bytes, kv, weights):
        g2 = system.kv.g2_dies
        g1 = system.flash.dies - g2
        return [Store(f"G1 flash ({g1} dies, weights)", _dies_bytes(system.flash, g1), weight_bytes, 0.0),
                Store.of_kv(f"G2 flash ({g2} dies, KV)", _dies_bytes(system.flash, g2), 0.0, kv)]

    def append(self, lw, nbytes):
        return _soc_append(lw, nbytes)


@KV_HOMES.register("dram")
class DramHome(KvHome):
    npu_readable = True
    window_in_home = True

    def missing(self, system):
        return None if system.dram is not None else "DRAM for the KV cache (dram:)"

    def kv_stores(self, system, kv):
        return [Store.of_kv("DRAM (KV)", system.dram.channels * system.dram.capacity_per_channel, 0.0, kv)]

    def npu_phase(self, lw, name, kv_heads, macs, stage="attention"):
        """The NPU streams the KV of the phase's heads out of DRAM as its matmul operand (a quantizing policy's
        residual window at the full width)."""
        dram = lw.s.dram
        kv_bytes = kv_heads * lw.L * lw.m.head_dim * lw.p.kv_bytes
        if lw.window:
            kv_bytes += kv_heads * lw.window * lw.m.head_dim * (lw.p.act_bytes - lw.p.kv_bytes)
        res = ("npu", "dram") + (("ch",) if dram.shares_flash_channels else ())
        pipe = npu_matmul_pipe(lw.s.npu, macs, lw.p.mac_kind, kv_bytes, dram_rate(dram), label="NPU PE array")
        return Task(name, stage, res, pipe, 1, (("dram.bits", kv_bytes * 8), ("npu.ops", 2 * macs)))

    def append(self, lw, nbytes):
        res = ("dram",) + (("ch",) if lw.s.dram.shares_flash_channels else ())
        return Task("kv.dram", "kv_write", res, single_stage("DRAM", nbytes / dram_rate(lw.s.dram)), 1,
                    (("dram.bits", nbytes * 8),))

    def prefill_write(self, lw, kv_bytes):
        return Task("kv.dram", "prefill", ("dram",), single_stage("DRAM", kv_bytes / dram_rate(lw.s.dram)), 1,
                    (("dram.bits", kv_bytes * 8),))


@KV_HOMES.register("nand")
class PlainNand(KvHome):
    staged_in_soc = True
    npu_readable = True
    window_read_action = "socbuf.bits"

    def missing(self, system):
        if system.nand is None:
            return "plain NAND dies for the KV cache (nand:)"
        if system.kv.buffer is None:
            return "an SoC buffer that stages new K/V before they are programmed (kv.buffer)"
        return None

    def groups(self, system):
        return weight_groups(system), FlashGroup("nand", system.nand, system.nand.dies)

    def kv_stores(self, system, kv):
        where = f" behind {system.link.name}" if system.link is not None else ""
        return [Store.of_kv(f"plain NAND{where} (KV)", _dies_bytes(system.nand, system.nand.dies), 0.0, kv)]

    def npu_phase(self, lw, name, kv_heads, macs, stage="attention"):
        """The phase's KV pages read out of the plain dies (multi-plane batches over die I/O and the channel,
        then the host link when the dies sit behind one) into the NPU; the slower of readout and NPU compute
        sets the time."""
        g, link = lw.kvgroup, lw.s.link
        busiest, total = lw.kv_reads(kv_heads)
        read = g.readout_pipe()  # one page per plane per multi-plane batch
        bits = total * g.page_bytes * 8
        resources, link_counts = ("nand", "ch"), ()
        if link is not None:  # each batch of every die crosses the one link as one transfer
            read = Pipe(read.names + (f"{link.name} link",), read.times + (link_time(link, bits / 8 / busiest),),
                        read.holds + (("link",),))
            resources, link_counts = ("nand", "link"), (("link.bits", bits),)
        npu_t = 2 * macs / npu_peak(lw.s.npu, lw.p.mac_kind)
        # the bits cross the channel once: charged at the die's interface energy, not again as channel bits
        counts = (("nand.sense_bits", bits), ("nand.io_bits", bits), ("npu.ops", 2 * macs),
                  ("ctrl.ecc_decode_bits", bits), *link_counts, *lw.window_read_counts(kv_heads))
        return pick(npu_t > read.makespan(busiest),
                    Task(name, stage, resources, single_stage("NPU PE array", npu_t), 1, counts),
                    Task(name, stage, resources, read, busiest, counts))

    def append(self, lw, nbytes):
        if lw.s.link is not None:
            return _link_append(lw, nbytes, "socbuf.bits", f"{lw.s.link.name} link")
        return _soc_append(lw, nbytes)

    def flush(self, lw, bytes_tok, commands):
        """Behind a link the device's buffer drains over the device's own channels (held as 'nand', not the
        SoC's 'ch'), at its dies' interface energy."""
        if lw.s.link is None:
            return super().flush(lw, bytes_tok, commands)
        g, ch = lw.kvgroup, lw.s.nand.channel
        t = commands * ch.command_overhead + bytes_tok / g.channels_used / ch.rate
        return Task("kv.flush", "kv_write", ("nand",), single_stage("device channels", t), 1,
                    (("nand.io_bits", bytes_tok * 8),))

    def _prefill_transfer(self, lw, kv_bytes):
        resources, t_channels, action = super()._prefill_transfer(lw, kv_bytes)
        if lw.s.link is None:
            return resources, t_channels, action
        return _over_link(lw, kv_bytes, t_channels, "nand")


@KV_HOMES.register("csd")
class Csd(KvHome):
    in_drive = True
    buffer_name = "drive DRAM buffer"
    window_read_action = "csdbuf.bits"

    def missing(self, system):
        if system.nand is None or system.link is None:
            return "the drive's flash (nand:) and its link to the host (link:)"
        if system.kv.buffer is None:
            return "the drive's DRAM buffer that stages KV writes (kv.buffer)"
        return None

    def groups(self, system):
        return weight_groups(system), FlashGroup("csd", system.nand, system.nand.dies)

    def kv_stores(self, system, kv):
        return [Store.of_kv("CSD flash (KV)", _dies_bytes(system.nand, system.nand.dies), 0.0, kv)]

    def append(self, lw, nbytes):
        return _link_append(lw, nbytes, "csdbuf.bits", "PCIe link")

    def _prefill_transfer(self, lw, kv_bytes):
        _, t_channels, _ = super()._prefill_transfer(lw, kv_bytes)
        return _over_link(lw, kv_bytes, t_channels, "csd")
