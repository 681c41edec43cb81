"""Pydantic schemas of every configurable part and of a system composition.

Quantities are written with units in YAML ("4 us", "4 KiB", "3 pJ/bit") and stored as SI floats (bytes,
seconds, J, J/bit, W, Hz, B/s, m^2). Bare numbers only where the field name carries the unit (`*_count`,
`planes`, ...). Every model forbids unknown keys. `source` fields hold where a number comes from.

Types are strict (a bool is not a count, a string is not a number: "8" and true are refused where 8 is
meant), every quantity has a physically sane range (config.units.RANGES) and every count a bound, both
stated in the field's description (`kvnand schema`), and cross-field checks refuse impossible hardware
(a page smaller than an ECC codeword, more parity than data, an attention engine that cannot reach the KV
store). Generous enough for any device we might model; narrow enough that no result overflows.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from kvnand.config import units


class ConfigValueError(ValueError):
    """A validation failure that knows its key (relative to the model raising it), value and what is allowed.

    The loader turns it into an InputError `FILE:LINE, key 'a.b.c': problem (got value); allowed: ...`.
    """

    _NO_VALUE = object()

    def __init__(self, problem: str, *, key: str | None = None, value: object = _NO_VALUE, allowed: str | None = None):
        self.problem, self.key, self.allowed = problem, key, allowed
        self.has_value = value is not ConfigValueError._NO_VALUE
        self.value = value if self.has_value else None
        super().__init__(problem + (f"; allowed: {allowed}" if allowed else ""))


def _q(dimension: str, zero: bool):
    lo, hi, text = units.RANGES[dimension]
    allowed = ("0 or " if zero else "") + f"{units.DIMENSIONS[dimension][1]}, {text}"

    def check(v):
        try:
            x = units.parse(v, dimension)
        except units.UnitParseError as exc:
            raise ConfigValueError(exc.reason, allowed=exc.allowed) from None
        if not (lo <= x <= hi or (zero and x == 0)):
            raise ConfigValueError("outside the physical range", allowed=allowed)
        return x

    return BeforeValidator(check), Field(description=allowed, json_schema_extra={"x-unit": dimension}), \
        units.Dimension(dimension)


def _count(lo: int, hi: int, what: str = "a count"):
    """An integer (strictly: not a bool, a string or a float) in [lo, hi]."""
    return Annotated[int, Strict(), Field(ge=lo, le=hi, description=f"{what}, an integer {lo} to {hi}")]


def _number(lo: float, hi: float, what: str, lo_open: bool = False, hi_open: bool = False):
    """A finite plain number (an int or a float, not a bool or a string) within bounds."""
    bounds = {"gt" if lo_open else "ge": lo, "lt" if hi_open else "le": hi}
    return Annotated[float, Strict(), Field(allow_inf_nan=False, description=what, **bounds)]


# Quantities with units; each has the physically sane range of units.RANGES (a zero only where stated).
Time = Annotated[float, *_q("time", False)]
TimeOrZero = Annotated[float, *_q("time", True)]
Bytes = Annotated[float, *_q("bytes", False)]
BytesOrZero = Annotated[float, *_q("bytes", True)]
Bandwidth = Annotated[float, *_q("bandwidth", False)]
Energy = Annotated[float, *_q("energy", True)]
EnergyPerBit = Annotated[float, *_q("energy_per_bit", True)]
Frequency = Annotated[float, *_q("frequency", False)]
Power = Annotated[float, *_q("power", True)]
Area = Annotated[float, *_q("area", True)]
OpsRate = Annotated[float, *_q("ops_rate", False)]
OpsRateOrZero = Annotated[float, *_q("ops_rate", True)]
Price = Annotated[float, *_q("money_per_byte", True)]
Flag = Annotated[bool, Strict()]  # true or false; not 1, 0 or the string 'true'


def _no_bool(v):
    if isinstance(v, bool):  # True == 1 in Python, so Literal[1] alone would take it
        raise ConfigValueError("unsupported format version", allowed="1")
    return v


SchemaVersion = Annotated[Literal[1], BeforeValidator(_no_bool)]


# where the attention over the KV cache runs, given where the cache is stored
ATTENTION_FOR_STORE = {"colocated": "flash_pe", "flash_group": "flash_pe", "dram": "npu", "nand": "npu", "csd": "csd"}
MAX_DIES = 4096  # flash dies in one array (a 4 TB drive of 1 Tbit dies has 32)
MAX_PAGES_PER_BLOCK = 10**5


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str | None = None
    note: str | None = None


class ModeFacts(BaseModel):
    """What a cell mode implies, so that `cell.mode` is checked against the die's other numbers."""

    model_config = ConfigDict(frozen=True)
    bits: int                          # bits per cell
    nop_max: int                       # partial programs of one page
    tR: tuple[float, float]            # s, page read
    pe_cycles: tuple[int, int]         # rated program/erase cycles
    rber_fresh_max: float              # raw bit error rate of a fresh cell, at most


# Generous bounds around published parts, not fitted to anything: SLC dies read in 3-25 us (Kioxia XL-Flash and
# Samsung Z-NAND about 4-5 us; KVNAND Table I 4 us; conventional SLC-mode 3D NAND up to ~25 us) and endure 10^4
# to 10^5+ cycles (KVNAND Table I: 100K); multi-bit modes program a page in one pass (NOP 1: MLC/TLC/QLC data
# sheets, e.g. Micron's 3D TLC parts), read in tens of us (TLC: Cambricon-LLM 30 us, Samsung 96-layer V-NAND
# ~50 us) and endure thousands (TLC ~3K, QLC ~1K) of cycles. A fresh multi-bit cell's RBER is far above an SLC
# cell's (fresh 3D TLC ~1e-4: Cambricon-LLM, AiF).
CELL_MODES = {
    "SLC": ModeFacts(bits=1, nop_max=8, tR=(1e-6, 50e-6), pe_cycles=(10_000, 10**7), rber_fresh_max=1e-5),
    "MLC": ModeFacts(bits=2, nop_max=1, tR=(10e-6, 150e-6), pe_cycles=(1_000, 100_000), rber_fresh_max=1e-2),
    "TLC": ModeFacts(bits=3, nop_max=1, tR=(20e-6, 200e-6), pe_cycles=(300, 30_000), rber_fresh_max=1e-2),
    "QLC": ModeFacts(bits=4, nop_max=1, tR=(40e-6, 400e-6), pe_cycles=(100, 10_000), rber_fresh_max=1e-1),
}


class CellMode(Part):
    mode: Literal[tuple(CELL_MODES)]
    tR: Time
    tPROG: Time
    tBERS: Time
    pe_cycles: _count(1, 10**9, "rated program/erase cycles")
    read_disturb_limit: _count(1, 10**15, "reads of a block before its data is at risk")
    # RBER(pe, reads, retention_s) = rber0 + a_pe*(pe/pe_cycles)^b_pe + a_rd*(reads/limit) + a_ret*(t/1 year)
    rber_fresh: _number(0, 1, "raw bit error rate of a fresh cell, 0 <= x < 1", hi_open=True) = 1e-9
    rber_pe_coeff: _number(0, 1, "RBER added at rated P/E, 0 to 1") = 1e-4
    rber_pe_exponent: _number(0, 10, "exponent of the P/E term, 0 < x <= 10", lo_open=True) = 2.0
    rber_read_coeff: _number(0, 1, "RBER added at the read-disturb limit, 0 to 1") = 1e-4
    rber_retention_coeff_per_year: _number(0, 1, "RBER added per year of retention, 0 to 1") = 1e-5


def _planes_ok(n: int) -> bool:
    return n & (n - 1) == 0 or n % 2 == 0


class Geometry(Part):
    # ONFI addresses planes with the low-order block-address bits (a power of two); Micron's 232-layer die
    # (Flash Memory Summit 2022) has 6 planes: so 1 or an even count, never 3 or 5
    planes: _count(1, 1024, "planes per die (1 or an even number: 1, 2, 4, 6, 8, ...)")
    blocks_per_plane: _count(1, 10**6, "blocks per plane")
    pages_per_block: _count(1, MAX_PAGES_PER_BLOCK, "pages per block")
    page_size: Bytes
    spare_size: BytesOrZero = 0.0
    capacity: Bytes | None = None  # optional cross-check against the product above
    partial_programs_per_page: _count(1, 64, "partial programs per page (NOP)") = 4

    @model_validator(mode="after")
    def _consistent(self):
        for key in ("page_size", "spare_size"):
            v = getattr(self, key)
            if v != int(v):
                raise ConfigValueError("a page holds a whole number of bytes", key=key, value=f"{v:g} B",
                                       allowed="a whole number of bytes such as '16 KiB'")
        n = int(self.page_size)
        if n & (n - 1):  # a page's data area is addressed by column-address bits: a power of two bytes
            lower = 1 << (n.bit_length() - 1)
            raise ConfigValueError("a page's data area is a power of two bytes (ONFI column addressing; "
                                   "the spare area holds the rest)", key="page_size", value=f"{n} B",
                                   allowed=f"a power of two such as {lower} B or {2 * lower} B")
        if not _planes_ok(self.planes):
            raise ConfigValueError("a die's planes come in pairs (a power of two as ONFI addresses them, or an even "
                                   "count as Micron's 6-plane 232-layer die)", key="planes", value=self.planes,
                                   allowed="1 or an even number: 1, 2, 4, 6, 8, 16, 32, ...")
        if self.spare_size > self.page_size:
            raise ConfigValueError("the spare area is larger than the page", key="spare_size",
                                   value=f"{self.spare_size:g} B", allowed=f"at most page_size ({self.page_size:g} B)")
        if self.capacity is not None:
            computed = self.page_size * self.pages_per_block * self.blocks_per_plane * self.planes
            if abs(computed - self.capacity) > 0.002 * self.capacity:
                raise ConfigValueError(
                    f"geometry inconsistent: page_size x pages_per_block x blocks_per_plane x planes = "
                    f"{computed:.6g} B but capacity = {self.capacity:.6g} B", key="capacity",
                    value=f"{self.capacity:.6g} B",
                    allowed=f"a capacity within 0.2 % of {computed:.6g} B ({computed * 8 / 2**30:.6g} Gibit), "
                            f"a geometry whose product matches, or no capacity")
        return self

    @property
    def die_bytes(self) -> float:
        return self.page_size * self.pages_per_block * self.blocks_per_plane * self.planes


class FlashEnergy(Part):
    read_per_bit: EnergyPerBit
    program_per_bit: EnergyPerBit
    erase_per_block: Energy = 0.0


class DieIO(Part):
    rate: Bandwidth
    energy_per_bit: EnergyPerBit


class FlashDie(Part):
    """A 3D NAND array die: cell mode, geometry, timing, energy and its external I/O."""

    name: str
    cell: CellMode
    geometry: Geometry
    energy: FlashEnergy
    io: DieIO
    t_register: TimeOrZero = 0.0        # data register -> cache register copy of one page
    cache_register: Flag = True         # two-stage register pipeline (sense next page while draining)
    usd_per_byte: Price = 0.0
    static_power: Power = 0.0

    @model_validator(mode="after")
    def _numbers_match_the_cell_mode(self):
        c, facts = self.cell, CELL_MODES[self.cell.mode]
        tip = (f"the {c.mode} numbers of cell.tR, cell.pe_cycles, cell.rber_*, geometry.partial_programs_per_page, "
               "energy and usd_per_byte (a die preset of that mode, e.g. die: {preset: commodity-tlc} for TLC or "
               "{preset: kvnand-ifc-die} for SLC), or the cell.mode these numbers belong to")
        checks = (("geometry.partial_programs_per_page", self.geometry.partial_programs_per_page,
                   1, facts.nop_max, "{:d}"),
                  ("cell.tR", c.tR, *facts.tR, "{:.3g} s"),
                  ("cell.pe_cycles", c.pe_cycles, *facts.pe_cycles, "{:d}"),
                  ("cell.rber_fresh", c.rber_fresh, 0.0, facts.rber_fresh_max, "{:.3g}"))
        for key, value, lo, hi, fmt in checks:
            if not lo <= value <= hi:
                bounds = fmt.format(lo) if lo == hi else f"{fmt.format(lo)} to {fmt.format(hi)}"
                raise ConfigValueError(f"{key} {fmt.format(value)} is not a {c.mode} value ({c.mode}: {bounds})",
                                       key=key, value=value, allowed=tip)
        return self


class Ecc(Part):
    codeword_data: Bytes
    codeword_parity: Bytes
    t: _count(1, 10**5, "correctable bits per codeword")
    location: Literal["on_die", "controller", "none"]
    decode_rate: Bandwidth              # per decoder (per plane on die) of codeword bits
    encode_rate: Bandwidth
    decode_energy_per_bit: EnergyPerBit = 0.0
    encode_energy_per_bit: EnergyPerBit = 0.0

    @model_validator(mode="after")
    def _code_is_possible(self):
        if self.codeword_parity > self.codeword_data:
            raise ConfigValueError("more parity than data in a codeword (code rate below 1/2)", key="codeword_parity",
                                   value=f"{self.codeword_parity:g} B",
                                   allowed=f"at most codeword_data ({self.codeword_data:g} B)")
        if self.t > 8 * self.codeword_parity:
            raise ConfigValueError("corrects more bits than the codeword has parity bits", key="t", value=self.t,
                                   allowed=f"at most 8 x codeword_parity = {8 * self.codeword_parity:g}")
        return self


class IfcLogic(Part):
    """Compute logic on the hybrid-bonded CMOS die: per-plane PEs, per-plane KV buffer, per-die global buffer."""

    fmacs_per_plane: _count(1, 10**6, "MAC units per plane")
    clock: Frequency
    kv_buffer: BytesOrZero = 0.0
    global_buffer: BytesOrZero = 0.0
    # per-plane logic area follows the PE configuration (see plane_area)
    plane_base_area: Area = 0.0         # control and datapath besides the FMACs and the KV buffer
    fmac_area: Area = 0.0               # one FMAC unit
    kv_buffer_area_per_kib: Area = 0.0  # SRAM of 1 KiB of per-plane KV buffer
    global_buffer_area: Area = 0.0
    mac_energy: Energy = 0.0            # per MAC
    psum_bytes: Bytes = 2.0             # width of one partial sum sent off-die
    die_area: Area = 0.0                # array die footprint, for the logic area overhead check
    cores_per_die: _count(0, 1024, "shared cores per die (0: per-plane PEs)") = 0  # >0: Cambricon-LLM cores
    core_rate: OpsRateOrZero = 0.0      # MAC/s of one shared core

    @property
    def plane_area(self) -> float:
        """Logic area of one plane (m^2): base + FMACs x FMAC area + KV buffer x SRAM area per KiB."""
        return (self.plane_base_area + self.fmacs_per_plane * self.fmac_area
                + self.kv_buffer / 1024 * self.kv_buffer_area_per_kib)

    @model_validator(mode="after")
    def _cores_have_a_rate(self):
        if self.cores_per_die > 0 and self.core_rate <= 0:
            raise ConfigValueError("core_rate (MAC/s of a shared core) must be set when cores_per_die > 0 "
                                   "(for Cambricon-LLM it comes from arch_configs/calibration.yaml)",
                                   key="core_rate", value=self.core_rate,
                                   allowed="a rate > 0 such as '5.31e8 / s', or cores_per_die: 0")
        return self


class Channel(Part):
    rate: Bandwidth
    energy_per_bit: EnergyPerBit
    command_overhead: TimeOrZero = 0.0  # command/address cycles per flash command


class FlashArray(Part):
    """A set of identical dies on shared channels."""

    die: FlashDie
    logic: IfcLogic | None = None
    ecc: Ecc
    channels: _count(1, 1024, "flash channels")
    dies_per_channel: _count(1, 1024, "dies per channel")
    channel: Channel

    @property
    def dies(self) -> int:
        return self.channels * self.dies_per_channel

    @model_validator(mode="after")
    def _geometry_fits_the_code(self):
        g, cw = self.die.geometry, self.ecc.codeword_data
        if g.page_size < cw:
            raise ConfigValueError("a page is smaller than one ECC codeword", key="die.geometry.page_size",
                                   value=f"{g.page_size:g} B", allowed=f"at least ecc.codeword_data ({cw:g} B)")
        if self.ecc.location != "none":
            codewords = g.page_size / cw
            if codewords != int(codewords):
                raise ConfigValueError(f"a page holds {codewords:.4g} ECC codewords of {cw:g} B",
                                       key="die.geometry.page_size", value=f"{g.page_size:g} B",
                                       allowed=f"a whole number of ecc.codeword_data ({cw:g} B), e.g. "
                                               f"{int(max(1, round(codewords))) * cw:g} B")
            parity = int(codewords) * self.ecc.codeword_parity
            if g.spare_size < parity:
                raise ConfigValueError(
                    f"the spare area cannot hold the ECC parity: {int(codewords)} codewords x "
                    f"{self.ecc.codeword_parity:g} B = {parity:g} B", key="die.geometry.spare_size",
                    value=f"{g.spare_size:g} B",
                    allowed=f"at least {parity:g} B, a code with less parity per codeword (ecc.codeword_parity), "
                            "or the short key page_size, which scales the spare with the page")
        if self.dies > MAX_DIES:
            raise ConfigValueError(f"{self.dies} dies in one array", key="dies_per_channel",
                                   value=self.dies_per_channel,
                                   allowed=f"channels x dies_per_channel at most {MAX_DIES}")
        return self


class Npu(Part):
    name: str
    # by MAC kind: {"bf16": "32 TOPS", "int8": ...}; ops = 2 x MACs; int8 defaults to 2 x bf16
    peak_ops: Annotated[dict[Literal["bf16", "int8"], OpsRate], Field(min_length=1)]
    special_rate: OpsRate               # elements/s of softmax/norm/RoPE/activation
    sram: BytesOrZero = 0.0
    static_power: Power = 0.0
    energy_per_op: Energy = 0.0         # dynamic energy per op (2 per MAC)
    energy_per_element: Energy = 0.0    # dynamic energy per special-function element


class Dram(Part):
    name: str
    channels: _count(1, 1024, "DRAM channels")
    rate_per_channel: Bandwidth
    energy_per_bit: EnergyPerBit
    capacity_per_channel: Bytes
    static_power: Power = 0.0
    usd_per_byte: Price = 0.0
    shares_flash_channels: Flag = False  # Lincoln/Base-1: DRAM devices sit on the flash dies' LPDDR channels


class Link(Part):
    name: str
    rate: Bandwidth
    energy_per_bit: EnergyPerBit
    latency: TimeOrZero = 0.0


class SocBuffer(Part):
    size: Bytes
    power: Power = 0.0
    energy_per_bit: EnergyPerBit = 0.0


class CsdEngine(Part):
    """The attention engine inside a computational storage drive."""

    macs_per_s: OpsRate
    power: Power = 0.0


class KvPlacement(Part):
    store: Literal["colocated", "flash_group", "dram", "nand", "csd"]
    mapping: Literal["page", "naive"] = "page"
    g2_dies: _count(0, 4096, "dies holding the KV cache (flash_group only)") = 0
    buffer: SocBuffer | None = None     # SoC KV staging buffer (KVNAND-D)
    block_randomization: Flag = True


class Placement(Part):
    # flash_split: READ_COMPUTE + READ_SLICE (Cambricon); dram: in the system's DRAM, GEMVs on the NPU
    weights: Literal["flash_pe", "flash_split", "host", "dram"]
    attention: Literal["flash_pe", "npu", "csd"]
    # where a speculative draft model runs: "weights" = like the target (its weights and KV in the target's
    # homes, on the same units); "npu" = its weights and KV in DRAM, its GEMVs and attention on the NPU
    draft: Literal["weights", "npu"] = "weights"


class Schedule(Part):
    hg_pipeline: Flag = False           # overlap QKV of head-group i+1 with attention of head-group i
    head_parallel: Flag = True          # all heads of a stage run at once on their planes
    # with hg_pipeline: the O-projection rows of head group i run on the weights' dies while head group i+1
    # is in attention (legal: O is a sum over head groups); the partial sums are gathered once per layer
    overlap_o_proj: Flag = True


class System(Part):
    """A composition of parts; `kvnand report` evaluates one of these per point."""

    schema_version: SchemaVersion
    name: str
    description: str = ""
    flash: FlashArray | None = None     # IFC dies holding weights (absent when weights live on a host)
    nand: FlashArray | None = None      # plain NAND dies holding KV (Base-2) or the CSD's flash
    dram: Dram | None = None
    host_dram: Dram | None = None       # weights' memory when weights live on a host accelerator
    link: Link | None = None
    csd: CsdEngine | None = None
    npu: Npu
    kv: KvPlacement
    placement: Placement
    schedule: Schedule = Schedule()
    default_precision: Literal["bf16", "w8a8", "w4a16"] = "bf16"
    soc_static_power: Power = 0.0

    @model_validator(mode="after")
    def _references_resolve(self):
        parts = {"flash": self.flash, "nand": self.nand, "dram": self.dram, "host_dram": self.host_dram,
                 "link": self.link, "csd": self.csd}
        needs = {"dram": "dram", "nand": "nand", "csd": "csd", "colocated": "flash", "flash_group": "flash"}
        usable = [s for s, p in needs.items() if parts[p] is not None and (s != "csd" or
                                                                            (self.link and self.nand))]
        store = self.kv.store
        if parts[needs[store]] is None:
            raise ConfigValueError(f"kv.store is '{store}' but no '{needs[store]}' part is configured",
                                   key="kv.store", value=store,
                                   allowed=(", ".join(usable) or "none of the stores") +
                                   f" with the parts present, or add a '{needs[store]}' part")
        if store == "csd" and self.link is None:
            raise ConfigValueError("kv.store 'csd' needs a 'link' (host interface) part", key="link",
                                   allowed="a link part, e.g. link: {preset: pcie4x4}")
        if store == "csd" and self.nand is None:
            raise ConfigValueError("kv.store 'csd' needs a 'nand' part (the drive's flash holding the KV cache)",
                                   key="nand", allowed="a nand part, e.g. as in the csd-offload preset")
        if self.placement.weights == "host" and self.host_dram is None:
            raise ConfigValueError("placement.weights 'host' needs a 'host_dram' part", key="placement.weights",
                                   value="host", allowed="flash_pe or flash_split, or add a 'host_dram' part")
        w = self.placement.weights
        if w == "dram" and self.dram is None:
            raise ConfigValueError("placement.weights 'dram' needs a 'dram' part", key="placement.weights",
                                   value="dram", allowed="flash_pe, flash_split or host, or add a 'dram' part")
        if w in ("flash_pe", "flash_split") and (self.flash is None or self.flash.logic is None):
            raise ConfigValueError(f"placement.weights '{w}' needs flash.logic (in-flash compute)",
                                   key="placement.weights", value=w,
                                   allowed="host (with a host_dram part), or add flash.logic")
        if self.placement.draft == "npu" and self.dram is None:
            raise ConfigValueError("placement.draft 'npu' keeps the draft model in DRAM and needs a 'dram' part",
                                   key="placement.draft", value="npu", allowed="weights, or add a 'dram' part")
        attention = self.placement.attention
        if attention != ATTENTION_FOR_STORE[store]:  # the engine has no other data path (nor energy price)
            raise ConfigValueError(f"placement.attention '{attention}' cannot read a KV cache in kv.store '{store}'",
                                   key="placement.attention", value=attention,
                                   allowed=f"{ATTENTION_FOR_STORE[store]} with kv.store '{store}' (flash_pe with "
                                   "colocated or flash_group, npu with dram or nand, csd with csd)")
        if self.link is not None and store not in ("csd", "nand"):  # nothing would cross it: say so, not ignore it
            raise ConfigValueError(f"a 'link' part reaches a KV cache in flash behind it; kv.store '{store}' does "
                                   "not use one", key="link", value=self.link.name,
                                   allowed="kv.store nand (plain NAND behind the link) or csd, or no link part")
        if self.nand is not None and self.nand.ecc.location == "on_die":
            raise ConfigValueError("plain NAND dies (the 'nand' part) have no on-die ECC decoder",
                                   key="nand.ecc.location", value="on_die", allowed="controller or none")
        if store != "flash_group" and self.kv.g2_dies:
            raise ConfigValueError(f"kv.g2_dies applies to kv.store 'flash_group' only (here '{store}')",
                                   key="kv.g2_dies", value=self.kv.g2_dies,
                                   allowed="0 (or leave it out), or kv.store: flash_group")
        if w == "flash_split" and self.flash.logic.cores_per_die < 1:
            raise ConfigValueError("placement.weights 'flash_split' runs on shared cores",
                                   key="flash.logic.cores_per_die", value=self.flash.logic.cores_per_die,
                                   allowed="1 to 1024 (with a core_rate), or placement.weights: flash_pe")
        if store == "flash_group":
            dies = self.flash.dies
            if not 0 < self.kv.g2_dies < dies:
                raise ConfigValueError(
                    f"kv.g2_dies must leave at least one die for each group (flash has {dies} dies)",
                    key="kv.g2_dies", value=self.kv.g2_dies,
                    allowed=f"1 to {dies - 1}" if dies > 1 else "none: flash_group needs at least 2 dies")
        if self.flash is not None and self.flash.logic is not None and self.flash.logic.die_area > 0:
            logic = self.flash.die.geometry.planes * self.flash.logic.plane_area + self.flash.logic.global_buffer_area
            if logic <= 0:
                raise ConfigValueError("flash.logic areas must be set when die_area is",
                                       key="flash.logic.fmac_area", value=self.flash.logic.fmac_area,
                                       allowed="areas > 0 such as fmac_area '0.003 mm^2', or die_area 0")
        return self


class CalibrationConstant(Part):
    value: Annotated[float, Strict(), Field(allow_inf_nan=False)]
    unit: str                           # unit of `value` as written into `path` (SI)
    meaning: str
    path: str                           # dotted config path the constant sets
    applies_to: list[str]               # system names (or name prefixes ending in '*') it applies to
    fitted_on: list[str] = []           # validation case ids, or [] for a value taken from a source
    procedure: str = ""                 # how it was fitted

    def applies(self, system: str) -> bool:
        return any(system == a or (a.endswith("*") and system.startswith(a[:-1])) for a in self.applies_to)


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: SchemaVersion
    constants: dict[str, CalibrationConstant]


def _bits(v):
    if isinstance(v, bool) or v not in (16, 8, 4, 2) or not isinstance(v, int):
        raise ConfigValueError("not a KV element width", allowed="16, 8, 4 or 2 (bits), or null")
    return v


class KvPolicy(Part):
    """A KV-cache management policy (part of the workload, kvnand.workload.kv_policy applies it): quantized
    KV, sparse retrieval of the top-k tokens in units of `granularity` tokens, eviction to a token budget.
    Every field at its default keeps today's dense cache (every token, the precision's width, all read)."""

    name: str = "dense"
    bits: Annotated[Literal[16, 8, 4, 2], BeforeValidator(_bits)] | None = Field(
        None, description="bits per stored KV element: 16, 8, 4 or 2 (null: the precision's KV width)")
    group: _count(1, 1 << 20, "elements sharing one scale and zero point") = 32
    metadata_bytes: _number(0, 64, "bytes of scale + zero point per group (stored only when bits < the "
                            "precision's KV width)") = 4.0
    top_k: _count(1, 10**9, "tokens attended per step (null: all held)") | None = None
    top_k_fraction: _number(0, 1, "fraction of the held tokens attended per step", lo_open=True) | None = None
    granularity: _count(1, 1 << 20, "tokens per selection unit (scored and read together)") = 1
    selector: Literal["minmax", "channels"] | None = Field(
        None, description="how units are scored: minmax (per-unit min/max keys, Quest) or channels (a channel-"
        "major copy of K, a few channels of every key read, SparF); null without top-k")
    selector_channels: _count(1, 4096, "key channels the channels selector reads per token") | None = None
    budget: _count(1, 10**9, "tokens held after eviction (null: all)") | None = None
    budget_fraction: _number(0, 1, "fraction of the context held after eviction", lo_open=True) | None = None
    recent_fraction: _number(0, 1, "share of the held tokens that is the recent window (never evicted); "
                             "the rest are heavy hitters") = 0.5
    reclaim: Literal["auto", "gc", "none"] = Field(
        "auto", description="what the FTL does with evicted slots: gc (compact: copy the valid units out, erase; "
        "the KV stays at the budget), none (leave them in place: the whole conversation stays in flash and "
        "the held tokens are scattered over its pages), auto (the faster that fits)")

    @model_validator(mode="after")
    def _consistent(self):
        sparse = self.top_k is not None or self.top_k_fraction is not None
        if self.top_k is not None and self.top_k_fraction is not None:
            raise ConfigValueError("give top_k or top_k_fraction, not both", key="top_k_fraction",
                                   value=self.top_k_fraction, allowed="null when top_k is set")
        if sparse and self.selector is None:
            raise ConfigValueError("a top-k selection needs a selector that scores the units", key="selector",
                                   allowed="minmax, channels")
        if not sparse and (self.selector is not None or self.granularity != 1):
            raise ConfigValueError("selector and granularity only apply with top_k or top_k_fraction",
                                   key="selector" if self.selector is not None else "granularity",
                                   value=self.selector if self.selector is not None else self.granularity,
                                   allowed="set top_k or top_k_fraction, or leave them at null and 1")
        if (self.selector == "channels") != (self.selector_channels is not None):
            raise ConfigValueError("selector_channels goes with selector 'channels' (and only with it)",
                                   key="selector_channels", value=self.selector_channels,
                                   allowed="an integer with selector channels, else null")
        if self.reclaim != "auto" and self.budget is None and self.budget_fraction is None:
            raise ConfigValueError("reclaim only applies with eviction", key="reclaim", value=self.reclaim,
                                   allowed="auto, or set budget or budget_fraction")
        if self.budget is not None and self.budget_fraction is not None:
            raise ConfigValueError("give budget or budget_fraction, not both", key="budget_fraction",
                                   value=self.budget_fraction, allowed="null when budget is set")
        return self
