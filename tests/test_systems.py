"""Systems under comparison: coverage, agreement of the engines, qualitative physics (issues 3 and 5)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kvnand
from kvnand.config.loader import load_system, system_names
from kvnand.energy.tables import action_prices, static_power
from kvnand.workload.model import zoo_names

CONTEXTS = (128, 1000, 10_000, 100_000)


@pytest.mark.parametrize("system", system_names())
def test_every_system_runs_every_zoo_model_or_says_oom(system):
    for model in zoo_names():
        for ctx in CONTEXTS:
            r = kvnand.evaluate(system, model, ctx)
            if r["oom"]:
                assert r["tokens_per_s"] is None and r["oom_reason"] and "GB" in r["oom_reason"]
                assert r["max_context"] < ctx
                continue
            assert r["tokens_per_s"] > 0 and r["energy_j_per_token"] > 0 and r["ttft_s"] > 0
            assert sum(r["breakdown_s"].values()) == pytest.approx(r["latency_s"], rel=1e-9)
            assert sum(r["breakdown_by_resource_s"].values()) == pytest.approx(r["latency_s"], rel=1e-9)
            assert r["bottleneck"]
            json.dumps({k: v for k, v in r.items() if not k.startswith("_")})


# slow: the event engine over the whole zoo (the golden records keep event mode in the quick loop)
@pytest.mark.slow
@pytest.mark.parametrize("system", system_names())
def test_every_system_runs_every_zoo_model_in_event_mode(system):
    fitted = 0
    for model in zoo_names():
        for ctx in (128, 100_000):
            r = kvnand.evaluate(system, model, ctx, mode="event")
            if r["oom"]:
                assert r["tokens_per_s"] is None and r["oom_reason"]
                continue
            fitted += 1
            assert r["tokens_per_s"] > 0 and math.isfinite(r["latency_s"]) and r["energy_j_per_token"] > 0
            assert sum(r["breakdown_s"].values()) == pytest.approx(r["latency_s"], rel=1e-6)
    assert fitted > 0, f"no zoo model fits {system} at all: the event engine was never exercised"


AGREEMENT = {"system": ["base1", "base2", "kvnand-c16", "kvnand-d", "csd-offload", "cambricon-llm-s"],
             "model": ["llama2-7b", "llama3.1-8b", "mixtral-8x7b"], "context": [128, 10_000, 100_000]}


def test_event_and_fast_agreement_covers_most_of_its_grid():
    """The agreement test below is only as good as the points that fit: most of its grid must."""
    fits = [not kvnand.evaluate(s, m, c)["oom"] for s in AGREEMENT["system"] for m in AGREEMENT["model"]
            for c in AGREEMENT["context"]]
    assert sum(fits) >= 0.75 * len(fits), f"only {sum(fits)} of {len(fits)} agreement points fit"
    assert all(any(not kvnand.evaluate(s, m, c)["oom"] for m in AGREEMENT["model"] for c in AGREEMENT["context"])
               for s in AGREEMENT["system"]), "a system of the agreement grid never fits"


@pytest.mark.parametrize("system", AGREEMENT["system"])
@pytest.mark.parametrize("model", AGREEMENT["model"])
@pytest.mark.parametrize("context", AGREEMENT["context"])
def test_event_and_fast_modes_agree_within_3_percent(system, model, context):
    f = kvnand.evaluate(system, model, context)
    e = kvnand.evaluate(system, model, context, mode="event")
    if f["oom"]:  # the modes share the capacity check: they must agree on that too (not a skipped case)
        assert e["oom"] and e["oom_reason"] == f["oom_reason"] and e["latency_s"] is None
        return
    assert e["latency_s"] == pytest.approx(f["latency_s"], rel=0.03)
    assert sum(e["breakdown_s"].values()) == pytest.approx(e["latency_s"], rel=1e-6)
    assert e["energy_j_per_token"] == pytest.approx(f["energy_j_per_token"], rel=0.03)


def _tiny_model(tmp_path):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512, "intermediate_size": 1024,
           "num_attention_heads": 8, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1000,
           "max_position_embeddings": 2048, "tie_word_embeddings": True}
    p = tmp_path / "tiny" / "config.json"
    p.parent.mkdir()
    p.write_text(json.dumps(cfg))
    return str(p)


@pytest.mark.parametrize("system", ["kvnand-c16", "kvnand-d", "base2"])
def test_page_level_and_burst_coalesced_event_modes_agree(tmp_path, system):
    model = _tiny_model(tmp_path)
    ov = {"dies": 8, "planes_per_die": 4} if system != "base2" else {"planes_per_die": 4}
    if system == "kvnand-d":
        ov["g2_dies"] = 2
    burst = kvnand.evaluate(system, model, 2048, mode="event", overrides=ov)
    page = kvnand.evaluate(system, model, 2048, mode="page", overrides=ov)
    assert page["latency_s"] == pytest.approx(burst["latency_s"], rel=1e-3)


def _tps(system, model, ctx):
    return kvnand.evaluate(system, model, ctx)["tokens_per_s"]


@pytest.mark.parametrize("model,long", [("llama2-7b", 30_000), ("llama3.1-8b", 100_000), ("mixtral-8x7b", 100_000)])
def test_kv_in_dram_slows_down_with_context_faster_than_kvnand(model, long):
    # at the longest context Base-1's DRAM holds (at 10K, GQA attention still hides behind Base-1's
    # pipelined QKV and O-projection on the flash dies). Not OPT-30B: on KVNAND-C-16 its 48 layers x 56 heads
    # put 12 streams on each 8 KiB plane buffer, 2 layers per page, so C's attention reads twice the pages
    base1 = _tps("base1", model, 128) / _tps("base1", model, long)
    kvn = _tps("kvnand-c16", model, 128) / _tps("kvnand-c16", model, long)
    assert base1 > kvn


@pytest.mark.parametrize("model", ["llama2-7b", "llama3.1-8b", "llama3.1-70b", "opt-30b", "mixtral-8x7b"])
def test_base2_is_slower_than_base1_wherever_base1_fits(model):
    for ctx in CONTEXTS:
        b1 = kvnand.evaluate("base1", model, ctx)
        if not b1["oom"]:
            assert _tps("base2", model, ctx) < b1["tokens_per_s"]


@pytest.mark.parametrize("model", ["llama3.1-8b", "llama3.1-70b", "mixtral-8x7b"])
def test_kvnand_c_wins_at_short_context(model):
    assert _tps("kvnand-c16", model, 128) > _tps("kvnand-d:auto", model, 128)


@pytest.mark.parametrize("model", ["opt-30b", "llama2-7b", "llama3.1-70b"])
def test_kvnand_d_wins_at_long_context(model):
    # MHA: C's 8 KiB plane buffers stage many layers per plane (OPT-30B: 2 layers per page); LLaMA3.1-70B: the
    # logits of all 64 query heads at 100K (12.8 MB) need two rounds through the 8 MiB NPU SRAM on C
    assert _tps("kvnand-d:auto", model, 100_000) > _tps("kvnand-c16", model, 100_000)


@pytest.mark.xfail(strict=True, reason=(
    "disagreement with the paper (validation/NOTES.md): for GQA-4 models KVNAND-C keeps one layer per page and "
    "its 32 query heads' logits fit the NPU SRAM at 100K, so nothing slows C's attention; the paper has D ahead"))
@pytest.mark.parametrize("model", ["llama3.1-8b", "mixtral-8x7b"])
def test_kvnand_d_wins_at_long_context_for_gqa4(model):
    assert _tps("kvnand-d:auto", model, 100_000) > _tps("kvnand-c16", model, 100_000)


def test_auto_split_reports_its_choice_and_is_the_fastest():
    r = kvnand.evaluate("kvnand-d:auto", "llama3.1-8b", 100_000)
    g2 = r["config"]["g2_dies"]
    assert r["config"]["split"] == f"{16 - g2}+{g2}"
    for other in range(1, 16):
        o = kvnand.evaluate("kvnand-d", "llama3.1-8b", 100_000, overrides={"g2_dies": other})
        assert o["oom"] or o["latency_s"] >= r["latency_s"] * (1 - 1e-12)


def test_head_group_pipelining_helps_kvnand_d_and_page_mapping_beats_naive():
    on = _tps("kvnand-d", "llama3.1-70b", 10_000)
    # without the pipeline the head groups run one after another (all at once would not fit the plane buffers)
    off = kvnand.evaluate("kvnand-d", "llama3.1-70b", 10_000,
                          overrides={"hg_pipeline": False, "schedule.head_parallel": False})["tokens_per_s"]
    assert on > off
    # head-parallel C reads all 8 KV heads of a layer at once: the naive log senses twice the pages (K and V
    # of a layer share them) but spreads them over all planes, so its busiest plane, and the time, are no worse;
    # the energy is. KVNAND-D reads one head group at a time: naive pages hold 1/16 of what it needs.
    page = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 10_000)
    naive = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 10_000, overrides={"mapping": "naive"})
    assert page["tokens_per_s"] >= naive["tokens_per_s"] * (1 - 1e-12)
    assert page["kv_mapping"]["page_reads_per_token"] < naive["kv_mapping"]["page_reads_per_token"]
    assert page["energy_j_per_token"] < naive["energy_j_per_token"]
    d_naive = kvnand.evaluate("kvnand-d", "llama3.1-8b", 10_000, overrides={"mapping": "naive"})["tokens_per_s"]
    assert _tps("kvnand-d", "llama3.1-8b", 10_000) > d_naive


# ---------------------------------------------------------------- properties
KNOBS = {
    "channels": [2, 4, 8, 16],
    "planes_per_die": [8, 16, 32, 64],
    "fmacs_per_plane": [1, 2, 4, 8, 16, 32],
    "flash.channel.rate": ["1 GB/s", "2.4 GB/s", "4.8 GB/s", "9.6 GB/s"],
    "flash.die.io.rate": ["1 GB/s", "4.8 GB/s", "9.6 GB/s"],
    "flash.ecc.decode_rate": ["2 Gbit/s", "8 Gbit/s", "14.6 Gbit/s", "30 Gbit/s"],
}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(KNOBS)), st.sampled_from(["kvnand-c16", "kvnand-d", "base1", "base2"]),
       st.sampled_from(["llama3.1-8b", "llama2-7b"]), st.sampled_from([128, 10_000, 50_000]), st.data())
def test_more_planes_fmacs_or_bandwidth_is_never_slower(knob, system, model, context, data):
    values = KNOBS[knob]
    i = data.draw(st.integers(0, len(values) - 2))
    extra = {"g2_dies": 2} if system == "kvnand-d" else {}  # a split every channel count can hold
    lo = kvnand.evaluate(system, model, context, overrides={knob: values[i], **extra})
    hi = kvnand.evaluate(system, model, context, overrides={knob: values[i + 1], **extra})
    if lo["oom"] or hi["oom"]:
        return
    assert hi["latency_s"] <= lo["latency_s"] * (1 + 1e-9)


BUFFERS = {  # on-chip memories: more of any is never slower, and never turns a fitting point into an OOM
    "flash.logic.kv_buffer": (["kvnand-c16", "kvnand-d"], ["2 KiB", "4 KiB", "8 KiB", "16 KiB", "64 KiB"]),
    "kv.buffer.size": (["kvnand-d", "base2"], ["1 MB", "2 MB", "5 MB", "10 MB", "50 MB"]),
    "npu.sram": (["kvnand-c16", "kvnand-d", "base1"], ["1 MiB", "4 MiB", "8 MiB", "32 MiB"]),
}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(BUFFERS)), st.sampled_from(["llama3.1-8b", "llama2-7b", "opt-30b", "llama3.1-70b"]),
       st.sampled_from([128, 10_000, 100_000]), st.data())
def test_more_buffer_is_never_slower(knob, model, context, data):
    systems, values = BUFFERS[knob]
    system = data.draw(st.sampled_from(systems))
    i = data.draw(st.integers(0, len(values) - 2))
    lo = kvnand.evaluate(system, model, context, overrides={knob: values[i]})
    hi = kvnand.evaluate(system, model, context, overrides={knob: values[i + 1]})
    assert not hi["oom"] or lo["oom"]
    if not lo["oom"]:
        assert hi["latency_s"] <= lo["latency_s"] * (1 + 1e-9)
        reads = [r.get("kv_mapping", {}).get("page_reads_per_token", 0) for r in (hi, lo)]
        assert reads[0] <= reads[1]


@pytest.mark.parametrize("system,over,memory", [
    ("kvnand-c16", {"flash.logic.kv_buffer": "1 KiB"}, "per-plane KV buffer"),
    ("kvnand-d", {"kv.buffer.size": "512 B"}, "SoC KV staging buffer"),
    ("kvnand-d", {"npu.sram": "1 MiB"}, "NPU SRAM"),
    ("kvnand-c16", {"flash.logic.global_buffer": "16 KiB"}, "die global buffer"),
])
def test_on_chip_overflow_is_reported_like_an_oom(system, over, memory):
    r = kvnand.evaluate(system, "llama3.1-70b", 100_000, overrides=over)
    assert r["oom"] and r["tokens_per_s"] is None and r["power_w"] is None
    assert r["oom_reason"].startswith(memory) and "\n" not in r["oom_reason"]


def test_head_parallel_logits_take_rounds_through_the_npu_sram():
    # 64 query heads x 100K x 2 B = 12.8 MB of logits: two rounds in 8 MiB, one in 32 MiB
    two = kvnand.evaluate("kvnand-c16", "llama3.1-70b", 100_000)
    one = kvnand.evaluate("kvnand-c16", "llama3.1-70b", 100_000, overrides={"npu.sram": "32 MiB"})
    assert two["kv_mapping"]["page_reads_per_token"] == one["kv_mapping"]["page_reads_per_token"]
    assert two["kv_mapping"]["busiest_plane_page_reads_per_token"] == \
        2 * one["kv_mapping"]["busiest_plane_page_reads_per_token"]
    assert two["latency_s"] > one["latency_s"]


def test_power_is_energy_times_rate_per_component():
    r = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 10_000)
    assert r["power_w"] == pytest.approx(r["energy_j_per_token"] * r["tokens_per_s"], rel=1e-12)
    assert sum(r["power_breakdown_w"].values()) == pytest.approx(r["power_w"], rel=1e-12)
    assert set(r["power_breakdown_w"]) == set(r["energy_breakdown_j"])


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["kvnand-c16", "kvnand-d", "base1", "base2"]), st.sampled_from([1, 2, 4]),
       st.sampled_from([128, 20_000]))
def test_more_dies_per_channel_is_never_slower(system, dpc, context):
    ch = load_system(system).flash.channels

    def ov(dies):  # KVNAND-D keeps a half/half split as it grows
        return {"dies": dies, **({"g2_dies": dies // 2} if system == "kvnand-d" else {})}

    lo = kvnand.evaluate(system, "llama3.1-8b", context, overrides=ov(ch * dpc))
    hi = kvnand.evaluate(system, "llama3.1-8b", context, overrides=ov(ch * dpc * 2))
    if not (lo["oom"] or hi["oom"]):
        assert hi["latency_s"] <= lo["latency_s"] * (1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(system_names()), st.sampled_from(["llama3.1-8b", "llama2-7b"]),
       st.sampled_from([128, 5_000, 30_000]))
def test_energy_equals_sum_of_priced_actions_plus_static(system, model, context):
    r = kvnand.evaluate(system, model, context)
    if r["oom"]:
        return
    s = load_system(system)
    prices = action_prices(s)
    dynamic = sum(n * prices[a][0] for a, n in r["actions"].items())
    static = sum(static_power(s).values()) * r["latency_s"]
    assert r["energy_j_per_token"] == pytest.approx(dynamic + static, rel=1e-12)
    assert sum(r["energy_breakdown_j"].values()) == pytest.approx(r["energy_j_per_token"], rel=1e-12)
    assert math.isfinite(r["energy_j_per_token"])


@pytest.mark.parametrize("system", ["kvnand-c16", "kvnand-d:auto", "base1", "cambricon-llm-s"])
def test_refresh_profile_adds_its_cost_and_breakdowns_still_add_up(system):
    plain = kvnand.evaluate(system, "llama3.1-8b", 10_000)
    r = kvnand.evaluate(system, "llama3.1-8b", 10_000, refresh="continuous")
    extra = r["refresh"]["seconds_per_token"]
    assert extra > 0 and r["latency_s"] == pytest.approx(plain["latency_s"] + extra, rel=1e-12)
    assert r["energy_j_per_token"] == pytest.approx(plain["energy_j_per_token"] + r["refresh"]["joules_per_token"])
    assert sum(r["breakdown_s"].values()) == pytest.approx(r["latency_s"], rel=1e-9)
    assert sum(r["energy_breakdown_j"].values()) == pytest.approx(r["energy_j_per_token"], rel=1e-9)


def test_tlc_weight_reads_make_refresh_the_bottleneck():
    # Cambricon-LLM's TLC dies (10^4 reads per block) re-read every weight page each token
    r = kvnand.evaluate("cambricon-llm-s", "llama2-7b", 1000, refresh="continuous")
    assert "refresh" in r["bottleneck"]


# ---------------------------------------------------------------- the paper's ablations (Fig. 14)
def _gain(system, model, ctx, off):
    return _tps(system, model, ctx) / kvnand.evaluate(system, model, ctx, overrides=off)["tokens_per_s"]


SERIAL = {"hg_pipeline": False, "schedule.head_parallel": False}


@pytest.mark.parametrize("model", ["opt-30b", "llama2-7b"])
def test_hg_pipelining_gain_peaks_at_10k_for_mha(model):
    g = [_gain("kvnand-d", model, ctx, SERIAL) for ctx in (1000, 10_000, 100_000)]
    assert g[1] > g[0] > 1 and g[1] > g[2] > 1


@pytest.mark.xfail(strict=True, reason=(
    "disagreement with the paper (validation/NOTES.md): for GQA models our KVNAND-D's pipelining gain keeps "
    "growing to 100K, where attention of one head group takes as long as G1's QKV + O slice"))
@pytest.mark.parametrize("model", ["llama3.1-8b", "llama3.1-70b"])
def test_hg_pipelining_gain_peaks_at_10k_for_gqa(model):
    g = [_gain("kvnand-d", model, ctx, SERIAL) for ctx in (1000, 10_000, 100_000)]
    assert g[1] > g[2]


def test_page_mapping_gain_grows_with_context_and_is_smaller_for_gqa():
    naive = {"mapping": "naive"}
    for model in ("opt-30b", "llama2-7b", "llama3.1-8b", "llama3.1-70b", "mixtral-8x7b"):
        g = [_gain("kvnand-d", model, ctx, naive) for ctx in (1000, 10_000, 100_000)]
        assert g[0] <= g[1] < g[2], model
    mha = min(_gain("kvnand-d", m, 100_000, naive) for m in ("opt-30b", "llama2-7b"))
    gqa8 = _gain("kvnand-d", "llama3.1-70b", 100_000, naive)
    assert gqa8 < mha


# Event mode list-schedules greedily, and list scheduling is not monotone: a slower part can reorder the
# contenders for a freed resource and end the step slightly earlier (a slower channel command once made a
# point 0.1 % faster). Its never-slower property therefore holds up to a documented 1 % tolerance.
EVENT_TOLERANCE = 0.01


@pytest.mark.parametrize("knob, lo, hi", [
    ("flash.channel.rate", "2.4 GB/s", "4.8 GB/s"), ("planes_per_die", 8, 16), ("fmacs_per_plane", 4, 8),
    ("flash.channel.command_overhead", "200 ns", "100 ns"),
])
@pytest.mark.parametrize("system", ["kvnand-c16", "kvnand-d"])
def test_event_mode_is_never_slower_with_more_resources_up_to_its_tolerance(system, knob, lo, hi):
    extra = {"g2_dies": 2} if system == "kvnand-d" else {}
    slow = kvnand.evaluate(system, "llama3.1-8b", 10_000, mode="event", overrides={knob: lo, **extra})
    fast = kvnand.evaluate(system, "llama3.1-8b", 10_000, mode="event", overrides={knob: hi, **extra})
    assert not (slow["oom"] or fast["oom"])
    assert fast["latency_s"] <= slow["latency_s"] * (1 + EVENT_TOLERANCE)
