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


@pytest.mark.parametrize("model", ["llama2-7b", "llama3.1-8b", "opt-30b", "mixtral-8x7b"])
def test_kv_in_dram_slows_down_with_context_faster_than_kvnand(model):
    base1 = _tps("base1", model, 128) / _tps("base1", model, 10_000)
    kvn = _tps("kvnand-c16", model, 128) / _tps("kvnand-c16", model, 10_000)
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


@pytest.mark.xfail(strict=True, reason=(
    "disagreement with the paper (validation/NOTES.md): our KVNAND-C uses all 16 dies in every stage while "
    "KVNAND-D idles G2 during O-proj/FFN, so C stays faster at long contexts; the paper reports D ahead"))
@pytest.mark.parametrize("model", ["llama3.1-8b", "llama3.1-70b"])
def test_kvnand_d_wins_at_long_context_for_gqa(model):
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
    off = kvnand.evaluate("kvnand-d", "llama3.1-70b", 10_000, overrides={"hg_pipeline": False})["tokens_per_s"]
    assert on > off
    page = _tps("kvnand-c16", "llama3.1-8b", 10_000)
    naive = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 10_000, overrides={"mapping": "naive"})["tokens_per_s"]
    assert page > naive


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
