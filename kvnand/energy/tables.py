"""Per-action energy table of a system, built from its parts' YAML (each number carries its source there).

Counting is separate from pricing: the engine only counts actions; this table prices them. An action
without a price is an error, so a new action cannot silently cost nothing.
"""

from __future__ import annotations

from kvnand.config.schema import System


def action_prices(s: System) -> dict[str, tuple[float, str]]:
    """action -> (joules per unit, component it is charged to)."""
    prices: dict[str, tuple[float, str]] = {}
    if s.flash is not None:
        f = s.flash
        prices["flash.sense_bits"] = (f.die.energy.read_per_bit, "flash array read")
        prices["flash.kv_sense_bits"] = (f.die.energy.read_per_bit, "flash array read")
        prices["flash.program_bits"] = (f.die.energy.program_per_bit, "flash program")
        prices["flash.program_ops"] = (0.0, "flash program")
        prices["flash.ecc_decode_bits"] = (f.ecc.decode_energy_per_bit, "ECC")
        prices["flash.ecc_encode_bits"] = (f.ecc.encode_energy_per_bit, "ECC")
        prices["flash.macs"] = (f.logic.mac_energy if f.logic else 0.0, "in-flash PE")
        prices["ch.bits"] = (f.channel.energy_per_bit, "flash channel / die I/O")
    if s.nand is not None:
        n = s.nand
        key = "csd" if s.kv.store == "csd" else "nand"
        prices[f"{key}.sense_bits"] = (n.die.energy.read_per_bit, f"{key} array read")
        prices[f"{key}.io_bits"] = (n.die.io.energy_per_bit, f"{key} interface")
        prices[f"{key}.program_bits"] = (n.die.energy.program_per_bit, f"{key} program")
        prices[f"{key}.program_ops"] = (0.0, f"{key} program")
        prices.setdefault("ch.bits", (n.channel.energy_per_bit, "flash channel / die I/O"))
    ecc = s.nand.ecc if s.nand is not None else s.flash.ecc
    prices["ctrl.ecc_decode_bits"] = (ecc.decode_energy_per_bit, "ECC")
    prices["ctrl.ecc_encode_bits"] = (ecc.encode_energy_per_bit, "ECC")
    prices["npu.ops"] = (s.npu.energy_per_op, "NPU")
    prices["npu.special"] = (s.npu.energy_per_element, "NPU")
    if s.dram is not None:
        prices["dram.bits"] = (s.dram.energy_per_bit, "DRAM")
    if s.host_dram is not None:
        prices["host.bits"] = (s.host_dram.energy_per_bit, "host DRAM")
    if s.link is not None:
        prices["link.bits"] = (s.link.energy_per_bit, "PCIe link")
    if s.csd is not None:
        prices["csd.macs"] = (s.csd.power / s.csd.macs_per_s, "CSD engine")
    if s.kv.buffer is not None:
        prices["socbuf.bits"] = (s.kv.buffer.energy_per_bit, "SoC KV buffer")
        prices["csdbuf.bits"] = (s.kv.buffer.energy_per_bit, "CSD DRAM buffer")
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
    if s.kv.buffer is not None:
        out["SoC KV buffer"] = s.kv.buffer.power
    return {k: v for k, v in out.items() if v > 0}


# id(system) -> (system, action prices, static power). Systems are frozen and the loader hands out one object per
# (preset, overrides), so the tables are built once per configuration; the entry keeps the system alive, so
# its id cannot be reused while cached.
_TABLES: dict[int, tuple[System, dict[str, tuple[float, str]], dict[str, float]]] = {}


def tables(s: System) -> tuple[dict[str, tuple[float, str]], dict[str, float]]:
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
            raise KeyError(f"action '{action}' has no energy price in system '{s.name}'")
        e, comp = prices[action]
        by[comp] = by.get(comp, 0.0) + n * e
    for comp, w in static.items():
        by[comp] = by.get(comp, 0.0) + w * seconds
    return sum(by.values()), by
