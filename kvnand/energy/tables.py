"""The action table of a system (as Accelergy's ERT): every action the lowering counts, its energy, the
component it is charged to, and where the number comes from (the config path and its part's `source`).

Counting is separate from pricing: the engine only counts actions; this table prices them. An action
without a price is an error naming the action and the system, so a new action cannot silently cost nothing.
"""

from __future__ import annotations

from typing import NamedTuple

from kvnand.config.schema import System
from kvnand.errors import InputError
from kvnand.program import batched, every


class Price(NamedTuple):
    joules: float               # per unit of the action (a bit, a MAC, an op, a block)
    component: str              # the energy breakdown entry it is charged to
    source: str                 # config path of the number, then its part's source (or note)


def _src(path: str, part, how: str = "") -> str:
    origin = getattr(part, "source", None) or getattr(part, "note", None) or "no source given"
    return f"{path}{f' ({how})' if how else ''}: {origin}"


def action_prices(s: System) -> dict[str, Price]:
    """action -> Price."""
    prices: dict[str, Price] = {}
    if s.flash is not None:
        f = s.flash
        e, read = f.die.energy, f.die.energy.read_per_bit
        prices["flash.sense_bits"] = Price(read, "flash array read", _src("flash.die.energy.read_per_bit", e))
        prices["flash.kv_sense_bits"] = Price(read, "flash array read", _src("flash.die.energy.read_per_bit", e))
        prices["flash.program_bits"] = Price(e.program_per_bit, "flash program",
                                             _src("flash.die.energy.program_per_bit", e))
        prices["flash.program_ops"] = Price(0.0, "flash program", "counted for wear; the energy is in program_bits")
        prices["flash.erase_blocks"] = Price(e.erase_per_block, "flash erase",
                                             _src("flash.die.energy.erase_per_block", e))
        prices["flash.ecc_decode_bits"] = Price(f.ecc.decode_energy_per_bit, "ECC",
                                                _src("flash.ecc.decode_energy_per_bit", f.ecc))
        prices["flash.ecc_encode_bits"] = Price(f.ecc.encode_energy_per_bit, "ECC",
                                                _src("flash.ecc.encode_energy_per_bit", f.ecc))
        prices["flash.macs"] = Price(f.logic.mac_energy, "in-flash PE", _src("flash.logic.mac_energy", f.logic)) \
            if f.logic else Price(0.0, "in-flash PE", "no compute logic: no MACs are counted")
        prices["ch.bits"] = Price(f.channel.energy_per_bit, "flash channel / die I/O",
                                  _src("flash.channel.energy_per_bit", f.channel))
    if s.nand is not None:
        n = s.nand
        key = "csd" if s.kv.store == "csd" else "nand"
        e = n.die.energy
        prices[f"{key}.sense_bits"] = Price(e.read_per_bit, f"{key} array read",
                                            _src("nand.die.energy.read_per_bit", e))
        prices[f"{key}.io_bits"] = Price(n.die.io.energy_per_bit, f"{key} interface",
                                         _src("nand.die.io.energy_per_bit", n.die.io))
        prices[f"{key}.program_bits"] = Price(e.program_per_bit, f"{key} program",
                                              _src("nand.die.energy.program_per_bit", e))
        prices[f"{key}.program_ops"] = Price(0.0, f"{key} program", "counted for wear; the energy is in program_bits")
        prices[f"{key}.erase_blocks"] = Price(e.erase_per_block, f"{key} erase",
                                              _src("nand.die.energy.erase_per_block", e))
        prices.setdefault("ch.bits", Price(n.channel.energy_per_bit, "flash channel / die I/O",
                                           _src("nand.channel.energy_per_bit", n.channel)))
    ecc, where = (s.nand.ecc, "nand.ecc") if s.nand is not None else (s.flash.ecc, "flash.ecc")
    for action, field in (("ctrl.ecc_decode_bits", "decode_energy_per_bit"),
                          ("ctrl.ecc_encode_bits", "encode_energy_per_bit")):
        prices[action] = Price(getattr(ecc, field), "ECC", _src(f"{where}.{field}", ecc))
    prices["npu.ops"] = Price(s.npu.energy_per_op, "NPU", _src("npu.energy_per_op", s.npu))
    prices["npu.special"] = Price(s.npu.energy_per_element, "NPU", _src("npu.energy_per_element", s.npu))
    if s.dram is not None:
        prices["dram.bits"] = Price(s.dram.energy_per_bit, "DRAM", _src("dram.energy_per_bit", s.dram))
    if s.host_dram is not None:
        prices["host.bits"] = Price(s.host_dram.energy_per_bit, "host DRAM", _src("host_dram.energy_per_bit",
                                                                                  s.host_dram))
    if s.link is not None:
        prices["link.bits"] = Price(s.link.energy_per_bit, "PCIe link", _src("link.energy_per_bit", s.link))
    if s.csd is not None:
        prices["csd.macs"] = Price(s.csd.power / s.csd.macs_per_s, "CSD engine",
                                   _src("csd.power / csd.macs_per_s", s.csd, "derived"))
    if s.kv.buffer is not None:
        b = s.kv.buffer
        prices["socbuf.bits"] = Price(b.energy_per_bit, "SoC KV buffer", _src("kv.buffer.energy_per_bit", b))
        prices["csdbuf.bits"] = Price(b.energy_per_bit, "CSD DRAM buffer", _src("kv.buffer.energy_per_bit", b))
    return prices


def static_power(s: System) -> dict[str, float]:
    """component -> watts drawn for the whole step regardless of activity."""
    out = {"SoC static": s.soc_static_power, "NPU static": s.npu.static_power}
    if s.flash is not None:
        out["flash static"] = s.flash.dies * s.flash.die.static_power
    if s.nand is not None:
        out["nand static"] = s.nand.dies * s.nand.die.static_power
    if s.dram is not None:
        out["DRAM static"] = s.dram.channels * s.dram.static_power
    if s.host_dram is not None:
        out["host DRAM static"] = s.host_dram.channels * s.host_dram.static_power
    if s.kv.buffer is not None:
        out["SoC KV buffer"] = s.kv.buffer.power
    return {k: v for k, v in out.items() if _draws(k, v)}


def _draws(component: str, watts) -> bool:
    """Whether a component draws static power (at every design of a stacked system; one that draws at some of
    them only would have an entry at some points only, so such designs are evaluated one by one)."""
    if not batched(watts):
        return watts > 0
    if every(watts > 0) or not (watts > 0).any():
        return every(watts > 0)
    raise ValueError(f"static power of {component} is zero at some stacked designs only")


# id(system) -> (system, action prices, static power). Systems are frozen and the loader hands out one object per
# (preset, overrides), so the tables are built once per configuration; the entry keeps the system alive, so
# its id cannot be reused while cached.
_TABLES: dict[int, tuple[System, dict[str, Price], dict[str, float]]] = {}


def tables(s: System) -> tuple[dict[str, Price], dict[str, float]]:
    """(action_prices(s), static_power(s)), cached per system object. Treat them as read-only."""
    hit = _TABLES.get(id(s))
    if hit is not None and hit[0] is s:
        return hit[1], hit[2]
    if len(_TABLES) >= 4096:
        _TABLES.clear()
    entry = (s, action_prices(s), static_power(s))
    _TABLES[id(s)] = entry
    return entry[1], entry[2]


def price(counts: dict[str, float], s: System, seconds: float) -> tuple[float, dict[str, float]]:
    """Total joules and joules by component: sum of priced actions + static power x time."""
    prices, static = tables(s)
    by: dict[str, float] = {}
    for action, n in counts.items():
        if action not in prices:
            raise InputError(f"system '{s.name}': the lowering counts '{action}', which no part of the system "
                             "prices", key=action.split(".")[0], allowed=", ".join(sorted(prices)))
        e, comp, _ = prices[action]
        by[comp] = by.get(comp, 0.0) + n * e
    for comp, w in static.items():
        by[comp] = by.get(comp, 0.0) + w * seconds
    return sum(by.values()), by
