"""Hand-computed checks of the hardware model and both engines (issue 3)."""

from __future__ import annotations

import math

import pytest

from kvnand.config.loader import load_system, system_names
from kvnand.energy.tables import action_prices, price
from kvnand.hw.flash import FlashGroup
from kvnand.program import Par, Pipe, Pipeline, Seq, Task, count_actions, single_stage
from kvnand.sim import event, fast

US = 1e-6


def group(dies=1, overrides=None, name="ifc"):
    s = load_system("kvnand-c16", overrides or {})
    return FlashGroup(name, s.flash, dies), s


def test_die_capacity_matches_table_i():
    g, _ = group()
    assert g.die.geometry.die_bytes * 8 == pytest.approx(132.75 * 2**30, rel=1e-4)


def test_plane_reading_n_pages_with_cache_register():
    g, s = group()
    tR, tc = 4 * US, 0.1 * US
    ecc = 4 * (1024 + 112) / (14.6e9 / 8)          # four 1 KiB codewords per 4 KiB page
    pe = 2048 / (16 * 400e6)                       # bf16 weights: 2048 MACs per page
    pipe = g.compute_pipe(2048)
    assert pipe.times == pytest.approx((tR, tc, ecc, pe))
    n = 100
    # sense of page j+1 overlaps the drain of page j: the data register (sense + copy) sets the pace
    assert pipe.makespan(n) == pytest.approx(tR + tc + ecc + pe + (n - 1) * (tR + tc))
    assert event.step_items(pipe, n) == pytest.approx(pipe.makespan(n), rel=1e-12)


def test_plane_reading_n_pages_without_cache_register():
    g, _ = group(overrides={"flash.die.cache_register": False})
    tR = 4 * US
    ecc = 4 * (1024 + 112) / (14.6e9 / 8)
    pe = 2048 / (16 * 400e6)
    pipe = g.compute_pipe(2048)
    n = 100
    # the data register is held from sense until ECC has drained it: no overlap of sense and decode
    assert pipe.makespan(n) == pytest.approx(tR + ecc + pe + (n - 1) * (tR + ecc))
    assert event.step_items(pipe, n) == pytest.approx(pipe.makespan(n), rel=1e-12)


def test_pe_slower_than_array_becomes_the_bottleneck():
    g, _ = group(overrides={"fmacs_per_plane": 1})
    macs = 2048 * 8                                # GQA h/k = 8: each KV element serves 8 queries
    pipe = g.compute_pipe(macs)
    t_pe = macs / 400e6
    assert t_pe > 4 * US
    cycle, limiter = pipe.cycle()
    assert limiter == "PE" and cycle == pytest.approx(t_pe)
    t = Task("attend", "attention", ("ifc",), pipe, 50)
    assert t.bound_by == "PE"


def test_die_with_all_planes_busy_takes_the_busiest_plane_time():
    from kvnand.mapping.weights import tile_gemv

    g, _ = group(dies=1)
    til = tile_gemv(g, 4096, 4096, 2)               # 32 MiB of bf16 weights on one die
    assert til.pages_per_die == 4096 * 4096 * 2 // 4096
    assert til.pages_per_plane == til.pages_per_die // 32
    pipe = g.compute_pipe(til.weights_per_page)
    t = Task("gemv", "ffn", ("ifc",), pipe, til.pages_per_plane)
    assert fast.evaluate(t).time == pytest.approx(sum(pipe.times) + (til.pages_per_plane - 1) * pipe.cycle()[0])


def _xfer(name, seconds):
    return Task(name, "io", ("ch",), single_stage("channel bus", seconds), 1)


def test_two_dies_contending_for_one_channel_serialize():
    a, b = _xfer("die0.out", 3 * US), _xfer("die1.out", 3 * US)
    prog = Par((a, b))
    assert fast.evaluate(prog).time == pytest.approx(6 * US)
    tl = event.simulate(prog)
    assert tl.makespan == pytest.approx(6 * US)
    starts = sorted(s.start for s in tl.items)
    assert starts == pytest.approx([0, 3 * US])


def test_broadcast_of_input_vector_costs_one_transfer_per_channel():
    from kvnand.lowering.step import Lowering
    from kvnand.workload.model import load_model
    from kvnand.workload.precision import get_precision

    for dpc in (1, 2, 4):
        s = load_system("kvnand-c16", {"dies": 8 * dpc})
        b = Lowering(s, load_model("llama3.1-8b"), get_precision("bf16"), 128)
        bcast, _, _ = b.weights.gemv_parts(b, "qkv", "qkv", 4096, 6144)
        # 4096 bf16 activations to every die of a channel at once: independent of dies per channel
        assert bcast.duration == pytest.approx(0.1 * US + 4096 * 2 / 4.8e9)
        assert dict(bcast.counts)["ch.bits"] == pytest.approx(4096 * 2 * 8 * 8)


def test_back_to_back_bursts_overlap_fill():
    pipe = Pipe(("sense", "drain"), (4 * US, 2 * US), (("reg",), ("pe",)))
    a = Task("a", "x", ("g",), pipe, 10)
    b = Task("b", "x", ("g",), pipe, 10)
    tl = event.simulate(Pipeline(a, Seq(()), 1))
    assert tl.makespan == pytest.approx(6 * US + 9 * 4 * US)
    # two independent iterations on one array: as one burst of 20 pages
    prog = Pipeline(a, Seq(()), 2)
    assert event.simulate(prog).makespan == pytest.approx(6 * US + 19 * 4 * US)
    assert fast.evaluate(prog).time == pytest.approx(6 * US + 19 * 4 * US)
    del b


def test_energy_of_known_action_mix():
    s = load_system("kvnand-c16")
    counts = {"flash.sense_bits": 1e9, "ch.bits": 2e9, "flash.macs": 1e6, "npu.ops": 1e9}
    total, by = price(counts, s, seconds=0.0)
    expected = 1e9 * 3e-12 + 2e9 * 4.9e-12 + 1e6 * 1.09e-12 + 1e9 * 0.144e-12
    assert total == pytest.approx(expected)
    assert by["flash array read"] == pytest.approx(3e-3)


def test_static_power_is_charged_for_the_whole_step():
    s = load_system("kvnand-d")
    total, by = price({}, s, seconds=0.5)
    assert by["SoC KV buffer"] == pytest.approx(0.36 * 0.5)
    assert total == pytest.approx(sum(by.values()))


def test_every_counted_action_has_a_price():
    import kvnand
    from kvnand.config.loader import system_names

    for name in system_names():
        r = kvnand.evaluate(name, "llama3.1-8b", 1000)
        if r["oom"]:
            continue
        prices = action_prices(load_system(name))
        assert set(r["actions"]) <= set(prices), name


def test_counts_multiply_through_loops_and_pipelines():
    from kvnand.program import Loop

    t = Task("t", "x", ("g",), single_stage("s", 1.0), 1, (("flash.sense_bits", 5.0),))
    prog = Loop(Seq((t, Pipeline(t, t, 3))), 4)
    assert count_actions(prog).actions["flash.sense_bits"] == pytest.approx(4 * 5 * (1 + 3 + 3))


def test_plane_logic_area_reproduces_table_i_and_follows_the_pe_configuration():
    mm2 = 1e-6
    assert load_system("kvnand-c16").flash.logic.plane_area == pytest.approx(0.0737 * mm2)   # KVNAND Table I
    assert load_system("base1").flash.logic.plane_area == pytest.approx(0.0708 * mm2)        # Lincoln
    more_pes = load_system("kvnand-c16", {"fmacs_per_plane": 32}).flash.logic
    bigger_buffer = load_system("kvnand-c16", {"flash.logic.kv_buffer": "16 KiB"}).flash.logic
    assert more_pes.plane_area == pytest.approx((0.0737 + 16 * 0.003) * mm2)
    assert bigger_buffer.plane_area == pytest.approx((0.0737 + 8 * 0.0025) * mm2)


@pytest.mark.parametrize("name", system_names())
def test_every_price_names_its_config_path_and_source(name):
    for action, p in action_prices(load_system(name)).items():
        assert p.component and p.source, action
        assert ":" in p.source or p.joules == 0, action  # "config.path: source", or why it costs nothing
        assert p.joules >= 0 and math.isfinite(p.joules), action
