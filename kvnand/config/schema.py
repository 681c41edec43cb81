"""Pydantic schemas of every configurable part and of a system composition.

Quantities are written with units in YAML ("4 us", "4 KiB", "3 pJ/bit") and stored as SI floats (bytes,
seconds, J, J/bit, W, Hz, B/s, m^2). Bare numbers only where the field name carries the unit (`*_count`,
`planes`, ...). Every model forbids unknown keys. `source` fields hold where a number comes from.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

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


def _q(dimension: str):
    def check(v):
        try:
            return units.parse(v, dimension)
        except units.UnitParseError as exc:
            raise ConfigValueError(exc.reason, allowed=exc.allowed) from None

    return BeforeValidator(check)


Time = Annotated[float, _q("time"), Field(gt=0)]
TimeOrZero = Annotated[float, _q("time"), Field(ge=0)]
Bytes = Annotated[float, _q("bytes"), Field(gt=0)]
BytesOrZero = Annotated[float, _q("bytes"), Field(ge=0)]
Bandwidth = Annotated[float, _q("bandwidth"), Field(gt=0)]
Energy = Annotated[float, _q("energy"), Field(ge=0)]
EnergyPerBit = Annotated[float, _q("energy_per_bit"), Field(ge=0)]
Frequency = Annotated[float, _q("frequency"), Field(gt=0)]
Power = Annotated[float, _q("power"), Field(ge=0)]
Area = Annotated[float, _q("area"), Field(ge=0)]
OpsRate = Annotated[float, _q("ops_rate"), Field(gt=0)]
Price = Annotated[float, _q("money_per_byte"), Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str | None = None
    note: str | None = None


class CellMode(Part):
    mode: Literal["SLC", "MLC", "TLC", "QLC"]
    tR: Time
    tPROG: Time
    tBERS: Time
    pe_cycles: PosInt
    read_disturb_limit: PosInt
    # RBER(pe, reads, retention_s) = rber0 + a_pe*(pe/pe_cycles)^b_pe + a_rd*(reads/limit) + a_ret*(t/1 year)
    rber_fresh: Annotated[float, Field(ge=0, lt=1)] = 1e-9
    rber_pe_coeff: Annotated[float, Field(ge=0)] = 1e-4
    rber_pe_exponent: Annotated[float, Field(gt=0)] = 2.0
    rber_read_coeff: Annotated[float, Field(ge=0)] = 1e-4
    rber_retention_coeff_per_year: Annotated[float, Field(ge=0)] = 1e-5


class Geometry(Part):
    planes: PosInt
    blocks_per_plane: PosInt
    pages_per_block: PosInt
    page_size: Bytes
    spare_size: BytesOrZero = 0.0
    capacity: Bytes | None = None  # optional cross-check against the product above
    partial_programs_per_page: PosInt = 4  # NOP: how many partial programs one page accepts

    @model_validator(mode="after")
    def _capacity_consistent(self):
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
    register_per_bit: EnergyPerBit = 0.0  # data -> cache register move


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
    cache_register: bool = True         # two-stage register pipeline (sense next page while draining)
    multi_plane: bool = True            # all planes sense concurrently
    usd_per_byte: Price = 0.0
    static_power: Power = 0.0


class Ecc(Part):
    codeword_data: Bytes
    codeword_parity: Bytes
    t: PosInt                           # correctable bits per codeword
    location: Literal["on_die", "controller", "none"]
    decode_rate: Bandwidth              # per decoder (per plane on die) of codeword bits
    encode_rate: Bandwidth
    decode_energy_per_bit: EnergyPerBit = 0.0
    encode_energy_per_bit: EnergyPerBit = 0.0
    decoder_power: Power = 0.0
    encoder_power: Power = 0.0
    decoder_area: Area = 0.0
    encoder_area: Area = 0.0
    retry_time: TimeOrZero = 0.0        # one read retry (re-sense with shifted reference) costs ~tR


class IfcLogic(Part):
    """Compute logic on the hybrid-bonded CMOS die: per-plane PEs, per-plane KV buffer, per-die global buffer."""

    fmacs_per_plane: PosInt
    clock: Frequency
    pe_precision: Literal["bf16", "int8", "fp32"] = "bf16"
    kv_buffer: BytesOrZero = 0.0
    global_buffer: BytesOrZero = 0.0
    plane_power: Power = 0.0
    # per-plane logic area follows the PE configuration (see plane_area)
    plane_base_area: Area = 0.0         # control and datapath besides the FMACs and the KV buffer
    fmac_area: Area = 0.0               # one FMAC unit
    kv_buffer_area_per_kib: Area = 0.0  # SRAM of 1 KiB of per-plane KV buffer
    global_buffer_power: Power = 0.0
    global_buffer_area: Area = 0.0
    mac_energy: Energy = 0.0            # per MAC
    sram_energy_per_bit: EnergyPerBit = 0.0
    psum_bytes: Bytes = 2.0             # width of one partial sum sent off-die
    die_area: Area = 0.0                # array die footprint, for the logic area overhead check
    cores_per_die: int = 0              # >0: shared cores (Cambricon-LLM) instead of per-plane PEs
    core_rate: Annotated[float, _q("ops_rate"), Field(ge=0)] = 0.0  # MAC/s of one shared core

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
    channels: PosInt
    dies_per_channel: PosInt
    channel: Channel

    @property
    def dies(self) -> int:
        return self.channels * self.dies_per_channel


class Npu(Part):
    name: str
    peak_ops: dict[str, OpsRate]        # by precision: {"bf16": "32 TOPS", "int8": ...}; ops = 2 x MACs
    special_rate: OpsRate               # elements/s of softmax/norm/RoPE/activation
    sram: BytesOrZero = 0.0
    power: Power                        # average active power
    static_power: Power = 0.0
    sram_energy_per_bit: EnergyPerBit = 0.0
    energy_per_op: Energy = 0.0         # dynamic energy per op (2 per MAC)
    energy_per_element: Energy = 0.0    # dynamic energy per special-function element


class Dram(Part):
    name: str
    channels: PosInt
    rate_per_channel: Bandwidth
    energy_per_bit: EnergyPerBit
    capacity_per_channel: Bytes
    static_power: Power = 0.0
    usd_per_byte: Price = 0.0
    shares_flash_channels: bool = False  # Lincoln/Base-1: DRAM devices sit on the flash dies' LPDDR channels


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
    dram: BytesOrZero = 0.0


class KvPlacement(Part):
    store: Literal["colocated", "flash_group", "dram", "nand", "csd"]
    mapping: Literal["page", "naive"] = "page"
    g2_dies: int = 0                    # flash_group: dies (of flash.array) holding the KV cache
    buffer: SocBuffer | None = None     # SoC KV staging buffer (KVNAND-D)
    block_randomization: bool = True


class Placement(Part):
    weights: Literal["flash_pe", "flash_split", "host"]  # flash_split: READ_COMPUTE + READ_SLICE (Cambricon)
    attention: Literal["flash_pe", "npu", "csd"]
    prefill: Literal["npu", "host"] = "npu"


class Schedule(Part):
    hg_pipeline: bool = False           # overlap QKV of head-group i+1 with attention of head-group i
    head_parallel: bool = True          # all heads of a stage run at once on their planes
    # with hg_pipeline: the O-projection rows of head group i run on the weights' dies while head group i+1
    # is in attention (legal: O is a sum over head groups); the partial sums are gathered once per layer
    overlap_o_proj: bool = True


class System(Part):
    """A composition of parts; `kvnand report` evaluates one of these per point."""

    schema_version: Literal[1]
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
        if self.placement.weights == "host" and self.host_dram is None:
            raise ConfigValueError("placement.weights 'host' needs a 'host_dram' part", key="placement.weights",
                                   value="host", allowed="flash_pe or flash_split, or add a 'host_dram' part")
        w = self.placement.weights
        if w in ("flash_pe", "flash_split") and (self.flash is None or self.flash.logic is None):
            raise ConfigValueError(f"placement.weights '{w}' needs flash.logic (in-flash compute)",
                                   key="placement.weights", value=w,
                                   allowed="host (with a host_dram part), or add flash.logic")
        if self.placement.attention == "flash_pe" and store not in ("colocated", "flash_group"):
            raise ConfigValueError("placement.attention 'flash_pe' needs kv.store 'colocated' or 'flash_group'",
                                   key="placement.attention", value="flash_pe",
                                   allowed=f"npu or csd with kv.store '{store}'")
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
    value: float
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
    schema_version: Literal[1]
    constants: dict[str, CalibrationConstant]
