"""KV-cache policies (kvnand.workload.kv_policy): the dense policy is the identity, sparse page reads and
garbage collection follow the page layout, more budget or top-k is never faster, bad input is one error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kvnand
from kvnand.config.schema import KvPolicy
from kvnand.errors import InputError
from kvnand.mapping.gc import gc_per_token
from kvnand.mapping.kv import KvLayout, enumerate_layout
from kvnand.workload import kv_policy as kvp
from kvnand.workload.precision import get_precision

SYSTEMS = ["kvnand-c16", "kvnand-d", "base1", "base2", "cambricon-llm-l", "csd-offload"]
# what a policy adds to the record; every other field must be equal under the dense policy
POLICY_ONLY = ("kv_policy",)


def _numbers(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in POLICY_ONLY and k != "config"}
    out["config"] = {k: v for k, v in record["config"].items() if k not in ("kv_policy", "overrides")}
    return out


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(SYSTEMS), st.sampled_from(["llama2-7b", "llama3.1-8b", "gemma2-9b"]),
       st.sampled_from([128, 1000, 10_000, 100_000]))
def test_dense_policy_reproduces_todays_results_exactly(system, model, context):
    base = kvnand.evaluate(system, model, context)
    dense = kvnand.evaluate(system, model, context, kv_policy="dense")
    assert _numbers(dense) == _numbers(base)
    # every field at its default, given one by one, is the identity too
    explicit = kvnand.evaluate(system, model, context, overrides={"kv_policy.bits": None, "kv_policy.group": 32})
    assert _numbers(explicit) == _numbers(base)
    if not base["oom"]:
        assert dense["kv_policy"]["useful_fraction"] == 1.0
        assert dense["kv_policy"]["gc"]["erases_per_token"] == 0.0


def test_bits_at_the_precision_width_are_the_identity():
    base = kvnand.evaluate("kvnand-d", "llama2-7b", 10_000)
    assert _numbers(kvnand.evaluate("kvnand-d", "llama2-7b", 10_000, overrides={"kv_policy.bits": 16})) == \
        _numbers(base)


def test_quantized_kv_shrinks_bytes_and_grows_capacity():
    p = get_precision("bf16")
    assert kvp.kv_width_bytes(KvPolicy(bits=2, group=32, metadata_bytes=4), p) == 0.25 + 4 / 32
    assert kvp.kv_width_bytes(KvPolicy(bits=16), p) == 2.0  # no metadata at the precision's own width
    dense = kvnand.evaluate("kvnand-c16", "llama2-7b", 10_000)
    q4 = kvnand.evaluate("kvnand-c16", "llama2-7b", 10_000, overrides={"kv_policy.bits": 4})
    assert q4["kv_policy"]["kv_bytes_per_element"] == 0.5 + 4 / 32
    # capacity: the KV per token is 0.625 / 2 of dense, so the KV room holds 3.2x the tokens
    assert q4["max_context"] > 3 * dense["max_context"]
    assert q4["kv_mapping"]["tokens_per_page_fill"] == pytest.approx(dense["kv_mapping"]["tokens_per_page_fill"] * 3.2)
    assert q4["kv_mapping"]["page_reads_per_token"] < dense["kv_mapping"]["page_reads_per_token"] / 3


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(SYSTEMS), st.sampled_from([1000, 30_000]), st.integers(1, 20_000), st.integers(1, 20_000))
def test_more_budget_is_never_faster(system, context, b1, b2):
    lo, hi = sorted((b1, b2))
    r_lo = kvnand.evaluate(system, "llama2-7b", context, overrides={"kv_policy.budget": lo})
    r_hi = kvnand.evaluate(system, "llama2-7b", context, overrides={"kv_policy.budget": hi})
    if r_hi["oom"]:
        return
    assert not r_lo["oom"]
    assert r_lo["latency_s"] <= r_hi["latency_s"] * (1 + 1e-12)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(SYSTEMS), st.sampled_from([4000, 50_000]), st.integers(1, 8000), st.integers(1, 8000),
       st.sampled_from([1, 4, 16, 64]), st.sampled_from(["minmax", "channels"]))
def test_larger_top_k_is_never_faster(system, context, k1, k2, granularity, selector):
    lo, hi = sorted((k1, k2))
    over = {"kv_policy.granularity": granularity, "kv_policy.selector": selector}
    if selector == "channels":
        over["kv_policy.selector_channels"] = 16
    r_lo = kvnand.evaluate(system, "llama2-7b", context, overrides={**over, "kv_policy.top_k": lo})
    r_hi = kvnand.evaluate(system, "llama2-7b", context, overrides={**over, "kv_policy.top_k": hi})
    if r_lo["oom"]:
        return
    assert r_lo["latency_s"] <= r_hi["latency_s"] * (1 + 1e-12)
    if r_lo["kv_policy"]["page_read_fraction"] is not None:  # KV in flash
        assert r_lo["kv_policy"]["page_read_fraction"] <= r_hi["kv_policy"]["page_read_fraction"] + 1e-12
        for r in (r_lo, r_hi):  # the step senses at least the bytes it uses
            assert r["kv_mapping"]["sensed_kv_bytes_per_token"] >= r["kv_mapping"]["useful_kv_bytes_per_token"]


def _layout(mapping, planes, layers, kv_heads, unit, page_units, split, all_heads):
    page = unit * page_units
    return KvLayout(mapping, planes, layers, kv_heads, unit, page, split,
                    heads_per_phase=kv_heads if all_heads else 1)


layouts = st.builds(_layout, st.sampled_from(["page", "naive"]), st.sampled_from([1, 2, 4, 8, 16]),
                    st.integers(1, 4), st.sampled_from([1, 2, 4, 8]), st.sampled_from([24.0, 40.0, 64.0, 128.0, 256.0]),
                    st.sampled_from([1, 4, 16, 64]), st.booleans(), st.booleans())


@settings(max_examples=120, deadline=None)
@given(layouts, st.integers(1, 200_000), st.floats(0.001, 1.0), st.sampled_from([1, 2, 16, 64, 1024]))
def test_sparse_page_reads_cover_the_useful_bytes(lay, held, fraction, granularity):
    attended = max(1, min(held, math.ceil(fraction * held / granularity) * granularity))
    heads = lay.heads_per_phase
    busiest, total = lay.sparse_phase_reads(held, attended, granularity, heads)
    dense_busiest, dense_total = lay.phase_reads(held, heads)
    useful_bytes = attended * lay.unit * heads
    assert total * lay.page >= useful_bytes * (1 - 1e-9)       # pages read >= useful bytes / page size
    assert total <= dense_total + 1e-9 and busiest <= dense_busiest + 1e-9
    assert busiest >= total / lay.planes - 1e-9                 # the busiest plane holds at least the mean
    assert total / dense_total >= attended / held - 1e-9        # page-read fraction >= useful fraction


def test_selection_finer_than_a_page_senses_whole_pages():
    # 64 tokens of one stream per page: picking 1/8 of the tokens one by one senses almost every page,
    # picking whole pages (units of 64 tokens) senses 1/8 of them
    lay = KvLayout("page", 16, 1, 1, 256.0, 16384.0, False)
    held = 64 * 16 * 100
    _, fine = lay.sparse_phase_reads(held, held // 8, 1, 1)
    _, coarse = lay.sparse_phase_reads(held, held // 8, 64, 1)
    _, dense = lay.phase_reads(held, 1)
    assert fine / dense == pytest.approx(1 - (7 / 8) ** 64)
    assert coarse / dense == pytest.approx(1 / 8)


def test_sparse_page_model_matches_a_monte_carlo_over_the_enumerated_layout():
    """Expected pages (total, busiest plane) of the analytic model against random unit selections on the
    explicit placement (units of 4 tokens, 8 tokens per page: two units per page)."""
    lay = KvLayout("page", 4, 1, 1, 2.0, 16.0, False)
    held, g, s = 256, 4, 0.25
    placed = enumerate_layout(lay, held)
    rng = np.random.default_rng(0)
    totals, busiest = [], []
    units = held // g
    for _ in range(4000):
        chosen = rng.random(units) < s
        pages = {placed[(0, 0, 0, t)][:2] for t in range(held) if chosen[t // g]}
        per_plane = np.bincount([plane for plane, _ in pages], minlength=lay.planes)
        totals.append(len(pages))
        busiest.append(per_plane.max())
    model_busiest, model_total = lay.sparse_phase_reads(held, int(s * held), g, 1)
    assert model_total == pytest.approx(np.mean(totals), rel=0.03)
    assert model_busiest == pytest.approx(np.mean(busiest), rel=0.05)


@settings(max_examples=60, deadline=None)
@given(layouts, st.integers(1, 30), st.sampled_from([16, 8, 4, 2]), st.integers(1, 40))
def test_every_kept_kv_byte_is_mapped_once(lay, context, bits, budget):
    """Quantized units and an eviction budget: the held tokens' units are placed once, without overlap."""
    width = kvp.kv_width_bytes(KvPolicy(bits=bits), get_precision("bf16"))
    unit = lay.unit / 2.0 * width
    q = KvLayout(lay.mapping, lay.planes, lay.layers, lay.kv_heads, unit, lay.page, lay.split_kv_sets,
                 heads_per_phase=lay.heads_per_phase)
    kept = kvp.held(KvPolicy(budget=budget), context)
    placed = enumerate_layout(q, kept)
    assert len(placed) == q.layers * q.kv_heads * 2 * kept
    assert len({(page, off) for (_, page, off) in placed.values()}) == len(placed)
    assert all(0 <= off < q.page for (_, _, off) in placed.values())


@settings(max_examples=200, deadline=None)
@given(st.floats(1.0, 1e7), st.floats(1e5, 1e8), st.integers(1, 10**6), st.integers(1, 10**6),
       st.floats(0, 1))
def test_gc_is_zero_without_eviction_and_grows_as_the_budget_nears_the_context(written, block, context, held,
                                                                             recent_share):
    recent = round(recent_share * held)
    cost = gc_per_token(written, block, context, held, recent)
    if held >= context:
        assert cost.copy_bytes_per_token == 0 and cost.erases_per_token == 0 and cost.write_amplification == 1
        return
    assert cost.write_amplification >= 1
    assert cost.copy_bytes_per_token == pytest.approx(written * (cost.write_amplification - 1), rel=1e-9)
    assert cost.erases_per_token == pytest.approx(cost.copy_bytes_per_token / block, rel=1e-9)
    assert (cost.copy_bytes_per_token > 0) == (recent < held)  # a pure window frees whole blocks
    if held < context - 1:  # one more token held leaves more valid data in a reclaimed block
        more = gc_per_token(written, block, context, held + 1, recent)
        assert more.copy_bytes_per_token >= cost.copy_bytes_per_token * (1 - 1e-12)


def test_gc_shows_in_the_step_only_with_eviction():
    keep_all = kvnand.evaluate("kvnand-d", "llama2-7b", 10_000, overrides={"kv_policy.budget": 10_000})
    assert "kv_gc" not in keep_all["breakdown_s"]
    assert keep_all["kv_policy"]["gc"]["copy_bytes_per_token"] == 0
    h2o = kvnand.evaluate("kvnand-d", "llama2-7b", 10_000, kv_policy="h2o", overrides={"kv_policy.reclaim": "gc"})
    assert h2o["breakdown_s"]["kv_gc"] > 0 and h2o["actions"]["flash.erase_blocks"] > 0
    # DRAM overwrites in place: no GC
    dram = kvnand.evaluate("base1", "llama2-7b", 10_000, kv_policy="h2o")
    assert "kv_gc" not in dram["breakdown_s"] and dram["kv_policy"]["gc"]["erases_per_token"] == 0
    # compacted, the budget caps capacity: a 20 % budget holds about 5x the context
    dense = kvnand.evaluate("kvnand-d", "llama2-7b", 10_000)
    assert h2o["max_context"] == pytest.approx(5 * dense["max_context"], rel=1e-3)
    # left in place, evicted slots keep the whole conversation in flash and scatter the held tokens
    lazy = kvnand.evaluate("kvnand-d", "llama2-7b", 10_000, kv_policy="h2o",
                           overrides={"kv_policy.reclaim": "none"})
    assert lazy["max_context"] == dense["max_context"] and "kv_gc" not in lazy["breakdown_s"]
    assert 0.2 < lazy["kv_policy"]["page_read_fraction"] <= 1.0
    assert h2o["kv_policy"]["page_read_fraction"] == pytest.approx(0.2, rel=1e-3)
    auto = kvnand.evaluate("kvnand-d", "llama2-7b", 10_000, kv_policy="h2o")
    assert auto["latency_s"] == min(h2o["latency_s"], lazy["latency_s"])
    assert auto["config"]["overrides"] == {"kv_policy": "h2o"}


def test_selection_is_its_own_stage_and_reads_summaries():
    r = kvnand.evaluate("kvnand-c16", "llama2-7b", 100_000, kv_policy="quest")
    assert r["breakdown_s"]["kv_select"] > 0
    pol = r["kv_policy"]
    assert pol["attended_tokens"] == 2048 and pol["useful_fraction"] == pytest.approx(0.02048)
    assert pol["selection_page_reads_per_token"] > 0
    assert pol["page_read_fraction"] >= pol["useful_fraction"]
    assert r["config"]["kv_policy"]["granularity"] == 16


def test_sparf_on_the_csd_stores_keys_twice():
    dense = kvnand.evaluate("csd-offload", "llama2-7b", 10_000)
    sparf = kvnand.evaluate("csd-offload", "llama2-7b", 10_000, kv_policy="sparf")
    assert sparf["kv_policy"]["stored_kv_bytes_per_token"] == pytest.approx(1.5 * dense["capacity"]["CSD flash (KV)"]
                                                                           ["used_bytes"] / 10_000)
    assert sparf["kv_policy"]["useful_fraction"] == pytest.approx(0.125)
    assert sparf["breakdown_s"]["kv_select"] > 0


@pytest.mark.parametrize("args, key", [
    (["--kv-policy", "nope"], "kv_policy"),
    (["--set", "kv_policy.bits=3"], "kv_policy.bits"),
    (["--set", "kv_policy.top_k=100"], "kv_policy.selector"),
    (["--kv-policy", "quest", "--set", "kv_policy.granularity=0"], "kv_policy.granularity"),
    (["--set", "kv_policy.budget=-5"], "kv_policy.budget"),
    (["--set", "kv_policy.colour=1"], "kv_policy.colour"),
])
def test_bad_policy_input_is_one_error_exit_2(kvnand_cli, args, key):
    code, out, err = kvnand_cli("report", "--systems", "kvnand-d", "--models", "llama2-7b", "--contexts", "1k", *args)
    assert code == 2 and out == ""
    assert f"key '{key}'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_json_carries_the_policy(kvnand_cli):
    code, out, _ = kvnand_cli("report", "--systems", "base1", "--models", "llama2-7b", "--contexts", "10k",
                              "--kv-policy", "kivi-2bit", "--format", "json")
    assert code == 0
    rec = json.loads(out)["results"][0]
    assert rec["config"]["kv_policy"]["bits"] == 2 and rec["kv_policy"]["name"] == "kivi-2bit"
    # KIVI's full-width window of 128 tokens waits in DRAM on Base-1: every layer's K and V at 16 bit
    assert rec["kv_policy"]["window_tokens"] == 128 and rec["kv_policy"]["window_memory"] == "DRAM"
    assert rec["kv_policy"]["window_bytes"] == 128 * 32 * 2 * 32 * 128 * 2


def test_every_shipped_policy_cites_its_source():
    for name in kvp.policy_names():
        pol = kvp.resolve_policy({"kv_policy": name})
        assert pol.name == name
        assert name == "dense" or (pol.source and "arXiv" in pol.source)


def test_a_bad_policy_field_names_its_key():
    with pytest.raises(InputError, match="kv_policy.top_k_fraction"):
        kvp.resolve_policy({"kv_policy.top_k_fraction": 1.5, "kv_policy.selector": "minmax"})


def test_policy_is_a_dse_parameter_with_the_useful_fraction_as_objective():
    from kvnand.paths import DSE_ROOT
    from kvnand.study.dse.objectives import evaluate_design
    from kvnand.study.dse.space import load_space

    space = load_space(DSE_ROOT / "kv-policy.yaml")
    dense = evaluate_design(space, {"g2_dies": 4, "policy": "dense"})
    quest = evaluate_design(space, {"g2_dies": 4, "policy": "quest", "top_k": 4096})
    assert dense.metrics["kv_useful_fraction"] == 1.0
    assert quest.metrics["kv_useful_fraction"] == pytest.approx(4096 / 128_000)  # the worst point: 128k
    assert quest.metrics["latency_s"] < dense.metrics["latency_s"]
    assert not quest.violated
    # KIVI's window is searched too: 128 tokens at 16 bit overflow D's SoC buffer, 32 fit it
    held = evaluate_design(space, {"g2_dies": 4, "policy": "kivi-2bit", "residual": 32})
    overflow = evaluate_design(space, {"g2_dies": 4, "policy": "kivi-2bit", "residual": 128})
    assert not held.violated and held.metrics["latency_s"] < dense.metrics["latency_s"]
    assert overflow.violated and "SoC KV staging buffer" in overflow.violated[0]


def test_a_space_with_an_unknown_policy_field_is_an_error(tmp_path):
    from kvnand.paths import DSE_ROOT
    from kvnand.study.dse.space import load_space

    text = (DSE_ROOT / "kv-policy.yaml").read_text().replace("set: kv_policy.top_k", "set: kv_policy.topk")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(InputError, match="kv_policy.topk"):
        load_space(tmp_path / "bad.yaml")


def test_policy_plot_is_written(kvnand_cli, tmp_path):
    fig = tmp_path / "policies.png"
    code, _, err = kvnand_cli("report", "--systems", "kvnand-c16,base1", "--models", "llama2-7b", "--contexts",
                              "1k,100k", "--kv-policy", "quest", "--policy-plot", str(fig), "--format", "json")
    assert code == 0, err
    assert fig.stat().st_size > 10_000 and fig.read_bytes()[:4] == b"\x89PNG"


def test_gc_adds_pe_cycles_in_the_reliability_model():
    from kvnand.evaluation import evaluate_reliability

    def kv_group(overrides):
        r = evaluate_reliability("kvnand-d", "llama3.1-8b", 50_000, overrides=overrides)
        return next(g for g in r["groups"] if "kv" in g["holds"])

    dense = kv_group({})
    assert dense["gc_erases_per_day"] == 0
    compacted = kv_group({"kv_policy": "h2o", "kv_policy.reclaim": "gc"})
    assert compacted["gc_erases_per_day"] > 0
    assert compacted["write_erases_per_day"] > compacted["gc_erases_per_day"]
    # quantized KV fills fewer blocks per token: fewer write erases at a similar decode rate
    # (with a 32-token full-width window, which the SoC buffer holds: KIVI's 128 tokens do not fit it)
    assert kv_group({"kv_policy": "kivi-2bit", "kv_policy.residual": 32})["write_erases_per_day"] < \
        dense["write_erases_per_day"] / 3


def test_a_bad_policy_file_names_file_and_key(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nbits: 3\n")
    with pytest.raises(InputError) as exc:
        kvnand.evaluate("kvnand-d", "llama2-7b", 1000, kv_policy=str(bad))
    assert "mine.yaml" in str(exc.value) and "bits" in str(exc.value)
    good = tmp_path / "q8.yaml"
    good.write_text("name: q8\nbits: 8\n")
    assert kvnand.evaluate("kvnand-d", "llama2-7b", 1000, kv_policy=str(good))["kv_policy"]["kv_bytes_per_element"] \
        == 1.0 + 4 / 32


@pytest.mark.parametrize("system", ["kvnand-c16", "kvnand-d", "base1", "csd-offload"])
def test_policy_composes_with_batch_and_speculation(system):
    """A KV policy and queries per step compose: batch 1 with a policy is the policy alone, and a batched,
    speculative step under a policy is finite, with the policy's selection in its breakdown."""
    alone = kvnand.evaluate(system, "llama3.1-8b", 10_000, kv_policy="quest")
    one = kvnand.evaluate(system, "llama3.1-8b", 10_000, kv_policy="quest", batch=1)
    assert one["latency_s"] == pytest.approx(alone["latency_s"], rel=1e-12)
    # the CSD's host DRAM cannot hold a draft model beside the target's weights: batched only there
    spec = {} if system == "csd-offload" else {"spec_draft": "llama3.2-1b", "spec_k": 3, "spec_accept": 0.7}
    many = kvnand.evaluate(system, "llama3.1-8b", 10_000, kv_policy="quest", batch=4, **spec)
    assert not many["oom"] and math.isfinite(many["aggregate_tokens_per_s"])
    assert many["aggregate_tokens_per_s"] > alone["tokens_per_s"]
    assert many["breakdown_s"].get("kv_select", 0.0) > 0.0


def test_report_cache_key_follows_a_policy_files_contents(tmp_path):
    """A policy given as a YAML path is keyed by what it says, not by its path: editing the file is a miss."""
    from kvnand.study.cache import Cache

    path = tmp_path / "mine.yaml"
    cache = Cache(root=tmp_path / "cache")
    keys = []
    for fraction in (0.2, 0.3):
        path.write_text(f"name: mine\nbudget_fraction: {fraction}\nrecent_fraction: 0.5\n")
        kvp._load.cache_clear()  # a process reads a policy file once; a new run reads it again
        keys.append(cache.key("kvnand-c16", "llama3.1-8b", 1000, None, "fast", {"kv_policy": str(path)}))
    assert keys[0] != keys[1]


def test_garbage_collection_scales_with_the_tokens_a_batched_step_writes():
    """Eviction's GC is amortized per token written: a step of B sequences writes B tokens, so it pays B times
    one sequence's copy-back and erases."""
    over = {"kv_policy.reclaim": "gc"}
    one = kvnand.evaluate("kvnand-d", "llama3.1-8b", 20_000, kv_policy="h2o", overrides=over)
    four = kvnand.evaluate("kvnand-d", "llama3.1-8b", 20_000, kv_policy="h2o", overrides=over, batch=4)
    assert one["breakdown_s"]["kv_gc"] > 0
    assert four["breakdown_s"]["kv_gc"] == pytest.approx(4 * one["breakdown_s"]["kv_gc"], rel=1e-12)
