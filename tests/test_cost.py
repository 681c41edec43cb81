"""Memory cost (KVNAND Sec. V-C): the $92.16 / $295.68 arithmetic from the configs' $/GB, and what our
configured capacities cost (validation/NOTES.md explains why the two differ)."""

from __future__ import annotations

import pytest

from kvnand import cost
from kvnand.config.loader import load_system
from kvnand.errors import InputError

GB = 2**30                                # the paper's GB are binary (validation/NOTES.md)
DIE_BYTES = 768 * 177 * 32 * 4096        # Table I: pages/block x blocks/plane x planes x 4 KiB = 132.75 Gibit


def test_prices_come_from_the_configs():
    assert load_system("kvnand-d").flash.die.usd_per_byte == pytest.approx(0.72 / GB)   # IFC die, Sec. V-C
    assert cost.dram_price("lpddr5x") == pytest.approx(4.62 / GB)                       # LPDDR5, Sec. V-C


def test_paper_arithmetic_92_16_and_295_68():
    """$92.16 = 128 GB of IFC flash at $0.72/GB; $295.68 = 64 GB of LPDDR5 at $4.62/GB (-69 %)."""
    ifc = load_system("kvnand-d").flash.die.usd_per_byte
    kvnand = cost.capacity_cost(128 * GB, ifc)
    lpddr5 = cost.dram_equivalent_cost(64 * GB, "lpddr5x")
    assert kvnand == pytest.approx(92.16)
    assert lpddr5 == pytest.approx(295.68)
    assert 1 - kvnand / lpddr5 == pytest.approx(0.69, abs=0.005)


def test_kvnand_d_4_plus_4_from_the_configured_geometry():
    r = cost.memory_cost("kvnand-d", {"dies": 8, "g2_dies": 4})
    assert len(r["memories"]) == 1
    m = r["memories"][0]
    assert m["units"] == 8 and m["part"] == "kvnand-ifc-die"
    assert r["capacity_bytes"] == pytest.approx(8 * DIE_BYTES)
    assert r["kv_capacity_bytes"] == pytest.approx(4 * DIE_BYTES)            # G2 holds the KV cache
    assert r["cost_usd"] == pytest.approx(8 * DIE_BYTES * 0.72 / GB)         # $95.58 (Table I die = 16.6 GiB)
    lpddr5 = cost.dram_equivalent_cost(r["kv_capacity_bytes"])
    assert lpddr5 == pytest.approx(4 * DIE_BYTES * 4.62 / GB)                # $306.65
    assert r["cost_usd"] / lpddr5 == pytest.approx(92.16 / 295.68)           # the paper's -69 %


def test_split_does_not_change_cost():
    a = cost.memory_cost("kvnand-d", {"dies": 64, "g2_dies": 32})["cost_usd"]
    b = cost.memory_cost("kvnand-d:auto", {"dies": 64, "g2_dies": 8})["cost_usd"]
    assert a == pytest.approx(b)


def test_base1_counts_flash_and_dram():
    r = cost.memory_cost("base1")
    parts = {m["memory"]: m for m in r["memories"]}
    assert parts["DRAM"]["capacity_bytes"] == pytest.approx(8 * 16 * 2**30 / 8)   # 8 x 16 Gibit = 16 GiB
    assert parts["DRAM"]["cost_usd"] == pytest.approx(16 * 2**30 * 4.62 / GB)
    assert parts["IFC flash"]["capacity_bytes"] == pytest.approx(8 * DIE_BYTES)
    assert r["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in r["memories"]))


def test_bad_inputs():
    with pytest.raises(InputError):
        cost.capacity_cost(-1.0, 1e-9)
    with pytest.raises(InputError):
        cost.dram_price("no-such-device")
    with pytest.raises(InputError):
        cost.dram_price("kvnand-ifc-die")   # a flash die is not a DRAM preset
