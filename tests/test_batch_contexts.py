"""A batched decode step whose sequences have their own contexts (evaluate(..., batch_contexts=[...]),
`kvnand report --batch-contexts`).

Properties: equal contexts given as a list are the equal-context batch exactly, and a batch of one is the plain
step; a mix lies between the batch with every sequence at the shortest and at the longest context; each
sequence's KV is read (the sensed KV pages are the groups' shares of the all-short and all-long steps) and held
(the capacity is the sum; max_context scales the mix). Plus bad input and the CLI.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import kvnand
from kvnand.errors import InputError
from kvnand.lowering.step import fit
from kvnand.scenario import Decode, Point, cycle_contexts, resolve

SYSTEMS = ("kvnand-c16", "kvnand-d", "kvnand-d:auto", "base1", "base2", "cambricon-llm-m", "csd-offload", "lincoln")
MODELS = ("llama3.1-8b", "llama2-7b", "mixtral-8x7b", "gemma2-9b")
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FEW
@given(system=st.sampled_from(SYSTEMS), model=st.sampled_from(MODELS), context=st.sampled_from([128, 1000, 10_000]),
       batch=st.integers(1, 6), spec=st.booleans())
def test_equal_contexts_as_a_list_are_the_equal_context_batch_exactly(system, model, context, batch, spec):
    kw = {"spec_draft": "llama3.2-1b", "spec_k": 3, "spec_accept": 0.7} if spec else {}
    batched = kvnand.evaluate(system, model, context, batch=batch, **kw)
    listed = kvnand.evaluate(system, model, context, batch=batch, batch_contexts=[context] * batch, **kw)
    assert listed.pop("batch_contexts") == [context] * batch
    assert listed == batched


@FEW
@given(system=st.sampled_from(SYSTEMS), model=st.sampled_from(MODELS), context=st.sampled_from([128, 1000, 10_000]))
def test_a_batch_of_one_with_its_context_is_the_plain_step_exactly(system, model, context):
    plain = kvnand.evaluate(system, model, context)
    one = kvnand.evaluate(system, model, context, batch_contexts=[context])  # batch defaults to the list's length
    assert one["batch"] == 1 and one["batch_contexts"] == [context]
    assert {k: one[k] for k in plain} == plain


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(system=st.sampled_from(SYSTEMS), model=st.sampled_from(MODELS),
       short=st.sampled_from([128, 1000, 3000]), long=st.sampled_from([5000, 20_000, 60_000]),
       batch=st.integers(2, 6), data=st.data())
def test_a_mix_lies_between_the_all_short_and_the_all_long_batch(system, model, short, long, batch, data):
    n_long = data.draw(st.integers(1, batch - 1))
    contexts = data.draw(st.permutations([short] * (batch - n_long) + [long] * n_long))
    lo = kvnand.evaluate(system, model, short, batch=batch)
    hi = kvnand.evaluate(system, model, long, batch=batch)
    assume(not hi["oom"])  # (a mix fits whenever the all-long batch does: it holds less KV)
    mid = kvnand.evaluate(system, model, long, batch=batch, batch_contexts=contexts)
    assert not mid["oom"] and mid["batch_contexts"] == list(contexts)
    assert lo["step_latency_s"] * (1 - 1e-12) <= mid["step_latency_s"] <= hi["step_latency_s"] * (1 + 1e-12)
    assert lo["aggregate_tokens_per_s"] * (1 + 1e-12) >= mid["aggregate_tokens_per_s"] >= \
        hi["aggregate_tokens_per_s"] * (1 - 1e-12)
    used = [sum(s["used_bytes"] for s in r["capacity"].values()) for r in (lo, mid, hi)]  # (:auto splits differ)
    assert used[0] <= used[1] * (1 + 1e-12) and used[1] <= used[2] * (1 + 1e-12)
    assert mid["ttft_s"] <= hi["ttft_s"] * (1 + 1e-12)


@pytest.mark.parametrize("system", ["kvnand-c16", "kvnand-d", "base2", "csd-offload"])
def test_each_sequence_reads_its_own_kv_pages(system):
    """The KV pages sensed per step are the short sequences' share of the all-short step plus the long ones'
    share of the all-long step (the weights' pages and the KV writes are the same in all three)."""
    short, long, contexts = 1000, 30_000, [1000, 30_000, 1000, 1000]
    mix = kvnand.evaluate(system, "llama3.1-8b", long, batch=4, batch_contexts=contexts)
    lo = kvnand.evaluate(system, "llama3.1-8b", short, batch=4)
    hi = kvnand.evaluate(system, "llama3.1-8b", long, batch=4)
    for key in ("page_reads_per_token", "busiest_plane_page_reads_per_token", "useful_kv_bytes_per_token"):
        expect = 3 / 4 * lo["kv_mapping"][key] + 1 / 4 * hi["kv_mapping"][key]
        assert mix["kv_mapping"][key] == pytest.approx(expect, rel=1e-9), key
    assert 0 < lo["kv_mapping"]["page_reads_per_token"] < mix["kv_mapping"]["page_reads_per_token"]


def test_the_capacity_holds_the_sum_of_the_sequences_kv():
    per_token = 2 * 32 * 8 * 128 * 2  # bytes: K and V, layers, KV heads, head dim, BF16 (LLaMA3.1-8B)
    contexts = [1000, 1000, 1000, 100_000]
    r = kvnand.evaluate("base1", "llama3.1-8b", 100_000, batch=4, batch_contexts=contexts)
    dram = r["capacity"]["DRAM (KV)"]
    assert dram["used_bytes"] == pytest.approx(per_token * sum(contexts), rel=1e-12)
    # max_context: the longest sequence's, with the others scaled in proportion (1 % of it each)
    t = r["max_context"]
    assert per_token * t * 1.03 <= dram["capacity_bytes"] < per_token * (t + 1) * 1.03
    equal = kvnand.evaluate("base1", "llama3.1-8b", 1000, batch=4)
    assert t > equal["max_context"]  # the short sequences leave room for the long one
    full = kvnand.evaluate("base1", "llama3.1-8b", 100_000, batch=4, batch_contexts=[100_000] * 3 + [1000])
    assert full["oom"] and full["oom_reason"].startswith(
        "DRAM (KV): KV cache at batch_contexts (4 sequences, up to 100000 tokens) need 39.45 GB")


def test_windowed_layers_hold_each_sequence_up_to_its_window():
    """Gemma-2: every other layer keeps only its last 4096 tokens, per sequence."""
    contexts = [1000, 20_000]
    sc = resolve(Point("base1", "gemma2-9b", 20_000, decode=Decode(contexts=tuple(contexts))))
    per_layer = 2 * sc.model.kv_heads * sc.model.head_dim * sc.precision.kv_bytes
    held = fit(sc.system, sc.model, sc.precision, 20_000, batch=2, mix=sc.point.decode.mix)
    expect = 21 * per_layer * (1000 + 20_000) + 21 * per_layer * (1000 + 4096)
    assert held.stores["DRAM (KV)"]["used_bytes"] == pytest.approx(expect, rel=1e-12)
    # at max_context the scaled mix fits, one token more does not
    t = held.max_context
    scaled = [c * t / 20_000 for c in contexts]
    used = sum(21 * per_layer * (c + min(c, 4096)) for c in scaled)
    assert used <= held.stores["DRAM (KV)"]["capacity_bytes"]
    over = sum(21 * per_layer * (c + min(c, 4096)) for c in (x * (t + 1) / 20_000 for x in contexts))
    assert over > held.stores["DRAM (KV)"]["capacity_bytes"]


def test_the_long_sequence_dominates_the_step_on_both_in_flash_designs():
    """The README's example: three 1k sequences beside one of 100k."""
    for system in ("kvnand-c16", "kvnand-d"):
        mix = kvnand.evaluate(system, "llama3.1-8b", 100_000, batch=4, batch_contexts=["1k", "1k", "1k", "100k"])
        short = kvnand.evaluate(system, "llama3.1-8b", 1000, batch=4)
        assert mix["breakdown_s"]["attention"] > 10 * short["breakdown_s"]["attention"]
        assert mix["step_latency_s"] > 1.5 * short["step_latency_s"]


def test_event_mode_takes_a_mix():
    fast = kvnand.evaluate("kvnand-d", "llama3.1-8b", 10_000, batch=3, batch_contexts=[1000, 10_000, 1000])
    event = kvnand.evaluate("kvnand-d", "llama3.1-8b", 10_000, batch=3, batch_contexts=[1000, 10_000, 1000],
                            mode="event")
    assert event["step_latency_s"] == pytest.approx(fast["step_latency_s"], rel=0.05)


@pytest.mark.parametrize(("kw", "key"), [
    ({"batch": 3, "batch_contexts": [1000, 1000]}, "batch_contexts"),
    ({"batch_contexts": [1000, "abc"]}, "batch_contexts"),
    ({"batch_contexts": [1000, 0]}, "batch_contexts"),
    ({"batch_contexts": [1000, -5]}, "batch_contexts"),
    ({"batch_contexts": [1000, True]}, "batch_contexts"),
    ({"batch_contexts": [1000, 1.5]}, "batch_contexts"),
    ({"batch_contexts": []}, "batch_contexts"),
    ({"batch_contexts": "1000"}, "batch_contexts"),
    ({"batch_contexts": 1000}, "batch_contexts"),
    ({"batch_contexts": [500, 2000]}, "context"),  # the context (1000) must be the longest
    ({"batch_contexts": [500, 800]}, "context"),
    ({"batch_contexts": [1000, 500], "kv_policy": "quest"}, "batch_contexts"),
])
def test_bad_batch_contexts_are_one_clear_error(kw, key):
    with pytest.raises(InputError) as exc:
        kvnand.evaluate("base1", "llama3.1-8b", 1000, **kw)
    assert exc.value.key == key


def test_equal_contexts_under_a_kv_policy_are_the_equal_batch():
    r = kvnand.evaluate("kvnand-d", "llama3.1-8b", 10_000, batch=2, batch_contexts=[10_000, 10_000], kv_policy="quest")
    b = kvnand.evaluate("kvnand-d", "llama3.1-8b", 10_000, batch=2, kv_policy="quest")
    r.pop("batch_contexts")
    assert r == b


def test_cycled_contexts():
    assert cycle_contexts((1000, 100_000), 5) == (1000, 100_000, 1000, 100_000, 1000)


def test_report_cycles_batch_contexts_over_each_batch(kvnand_cli, tmp_path):
    code, out, err = kvnand_cli("report", "--systems", "kvnand-c16", "--models", "llama3.1-8b", "--batch", "2,4",
                                "--batch-contexts", "1k,10k", "--format", "json", "--no-cache")
    assert code == 0, err
    recs = json.loads(out)["results"]
    assert [(r["batch"], r["context"], r["batch_contexts"]) for r in recs] == [
        (2, 10_000, [1000, 10_000]), (4, 10_000, [1000, 10_000, 1000, 10_000])]
    direct = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 10_000, batch_contexts=[1000, 10_000, 1000, 10_000])
    assert recs[1]["step_latency_s"] == direct["step_latency_s"]
    # without --batch, one sequence per listed context
    code, out, _ = kvnand_cli("report", "--systems", "base1", "--models", "llama3.1-8b", "--batch-contexts", "1k,2k,1k",
                              "--format", "json", "--no-cache")
    assert code == 0 and json.loads(out)["results"][0]["batch_contexts"] == [1000, 2000, 1000]


@pytest.mark.parametrize("args", [
    ("--batch-contexts", "1k,zz"),
    ("--batch-contexts", "1k,10k", "--contexts", "1k"),
    ("--batch-contexts", "1k,10k,100k", "--batch", "2"),
    ("--batch-contexts", "1k,10k", "--kv-policy", "quest"),
    ("--batch-contexts", ","),
])
def test_report_refuses_bad_batch_contexts_with_exit_2(kvnand_cli, args):
    code, _, err = kvnand_cli("report", "--systems", "kvnand-c16", "--models", "llama3.1-8b", *args, "--no-cache")
    assert code == 2 and "Traceback" not in err and "error" in err


def test_the_report_cache_keys_a_point_by_its_batch_contexts(kvnand_cli):
    def step(mix):
        code, out, err = kvnand_cli("report", "--systems", "kvnand-c16", "--models", "llama3.1-8b",
                                    "--batch-contexts", mix, "--format", "json")
        assert code == 0, err
        return json.loads(out)["results"][0]

    first, other, again = step("1k,10k"), step("5k,10k"), step("1k,10k")
    assert other["step_latency_s"] > first["step_latency_s"] == again["step_latency_s"]
    assert other["batch_contexts"] == [5000, 10_000] and again["batch_contexts"] == [1000, 10_000]


def test_the_batch_figure_names_the_sequences_contexts():
    from kvnand.present.figures import figures

    results = [kvnand.evaluate("kvnand-c16", "llama3.1-8b", 50_000, batch_contexts=cycle_contexts((1000, 50_000), b))
               for b in (2, 4)]
    fig = figures(results)["batch"]
    assert fig.axes[0].get_title() == "llama3.1-8b, sequences of 1k, 50k tokens"
