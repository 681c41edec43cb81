"""Memory cost: capacity x $/byte of every memory a system carries, and the same capacity priced as DRAM.

Prices are inputs from the configs (`usd_per_byte` on flash die and DRAM presets, each with its source:
IFC die $0.72/GB, plain SLC NAND $0.52/GB, TLC $0.11/GB, LPDDR5 $4.62/GB; KVNAND Sec. V-C, whose GB are
binary like its other units). Capacity is what the configuration holds: dies x die geometry (pages x blocks
x planes x page size) for flash, channels x capacity per channel for DRAM. The DRAM comparison prices the
KV cache's capacity, what a DRAM-backed design must provision for the same KV. Nothing here is fitted;
validation/NOTES.md discusses the paper's cost claim.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from kvnand.errors import InputError


def capacity_cost(capacity_bytes: float, usd_per_byte: float) -> float:
    """Dollars of `capacity_bytes` at `usd_per_byte`."""
    if capacity_bytes < 0 or usd_per_byte < 0:
        raise InputError("capacity and price must not be negative", key="capacity/usd_per_byte",
                         value=(capacity_bytes, usd_per_byte))
    return capacity_bytes * usd_per_byte


def _flash_item(name: str, array) -> dict:
    cap = array.dies * array.die.geometry.die_bytes
    price = array.die.usd_per_byte
    return {"memory": name, "part": array.die.name, "units": array.dies, "capacity_bytes": cap,
            "usd_per_byte": price, "cost_usd": capacity_cost(cap, price)}


def _dram_item(name: str, dram) -> dict:
    cap = dram.channels * dram.capacity_per_channel
    return {"memory": name, "part": dram.name, "units": dram.channels, "capacity_bytes": cap,
            "usd_per_byte": dram.usd_per_byte, "cost_usd": capacity_cost(cap, dram.usd_per_byte)}


def kv_capacity(s) -> float:
    """Bytes of the memory that holds the KV cache (G2 dies of KVNAND-D, all dies of KVNAND-C, DRAM, NAND)."""
    store = s.kv.store
    if store == "flash_group":
        return s.kv.g2_dies * s.flash.die.geometry.die_bytes
    if store == "colocated":
        return s.flash.dies * s.flash.die.geometry.die_bytes
    if store == "dram":
        return s.dram.channels * s.dram.capacity_per_channel
    return s.nand.dies * s.nand.die.geometry.die_bytes


def memory_cost(system: str, overrides: dict[str, Any] | None = None) -> dict:
    """{"system", "memories": [{memory, part, units, capacity_bytes, usd_per_byte, cost_usd}], "capacity_bytes",
    "kv_capacity_bytes", "cost_usd"} of a system preset (with --set style overrides, e.g. {"dies": 8})."""
    from kvnand.config.loader import load_system

    return memories_of(load_system(system.removesuffix(":auto"), overrides or {}))


def memories_of(s) -> dict:
    """memory_cost() of a loaded system."""
    items = []
    if s.flash is not None:
        items.append(_flash_item("IFC flash" if s.flash.logic is not None else "flash", s.flash))
    if s.nand is not None:
        items.append(_flash_item("plain NAND" if s.kv.store == "nand" else "CSD flash", s.nand))
    if s.dram is not None:
        items.append(_dram_item("DRAM", s.dram))
    if s.host_dram is not None:
        items.append(_dram_item("host DRAM", s.host_dram))
    return {"system": s.name, "memories": items, "capacity_bytes": sum(i["capacity_bytes"] for i in items),
            "kv_capacity_bytes": kv_capacity(s), "cost_usd": sum(i["cost_usd"] for i in items)}


@lru_cache(maxsize=16)
def dram_price(device: str = "lpddr5x") -> float:
    """usd_per_byte of a DRAM device preset (arch_configs/devices/<device>.yaml)."""
    from kvnand.config.loader import load_device
    from kvnand.config.schema import Dram

    return load_device(device, Dram, "dram").usd_per_byte


def dram_equivalent_cost(capacity_bytes: float, device: str = "lpddr5x") -> float:
    """`capacity_bytes` bought as `device` DRAM (KVNAND Sec. V-C compares against LPDDR5 at $4.62/GB)."""
    return capacity_cost(capacity_bytes, dram_price(device))
