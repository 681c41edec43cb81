"""KIVI's full-width residual window (kv_policy.residual): it waits in the KV home's staging buffer (or DRAM),
is read from there rather than sensed, is never programmed at full width, and must fit its buffer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kvnand
from kvnand.errors import InputError
from kvnand.lowering.step import Lowering, stores
from kvnand.mapping.capacity import check
from kvnand.scenario import Point, resolve

MODEL = "llama3.1-8b"

# LLaMA3.1-8B at 100k tokens under the shipped KIVI presets before they had a residual window (tokens/s, J/token,
# longest context): the window at 0 tokens must give these exactly
BEFORE_RESIDUAL = [
    ("kvnand-c16", "kivi-4bit", 17.238184874944345, 0.5733002984627199, 6567820),
    ("kvnand-c16", "kivi-2bit", 17.269147463914386, 0.52869960064768, 10946367),
    ("kvnand-d:auto", "kivi-4bit", 15.135168592916786, 0.5977511687949688, 3044966),
    ("kvnand-d:auto", "kivi-2bit", 14.825016822677824, 0.5534566352785919, 4349952),
    ("base1", "kivi-4bit", 8.731677913105496, 0.65434178813696, 419430),
    ("base1", "kivi-2bit", 11.245369157558592, 0.5625904706329601, 699050),
    ("base2", "kivi-4bit", 6.07669236597119, 0.695753274816, 3479961),
    ("base2", "kivi-2bit", 8.165595546591451, 0.5873819307187199, 5799936),
    ("csd-offload", "kivi-4bit", 0.23004644343695257, 24.46477074024054, 30198988),
    ("csd-offload", "kivi-2bit", 0.230046872369205, 24.141190840383224, 50331648),
    ("cxl-kv", "kivi-4bit", 5.082791672571973, 0.9416296667520001, 3479961),
    ("cxl-kv", "kivi-2bit", 6.91853901691849, 0.7348574342323201, 5799936),
]


@pytest.mark.parametrize("system, policy, tps, j, max_context", BEFORE_RESIDUAL)
def test_residual_zero_reproduces_the_kivi_numbers_before_the_window(system, policy, tps, j, max_context):
    r = kvnand.evaluate(system, MODEL, 100_000, kv_policy=policy, overrides={"kv_policy.residual": 0})
    assert r["tokens_per_s"] == pytest.approx(tps, rel=1e-12)
    assert r["energy_j_per_token"] == pytest.approx(j, rel=1e-12)
    assert r["max_context"] == max_context
    assert r["kv_policy"]["window_tokens"] == 0 and r["kv_policy"]["window_memory"] is None


def _lowering(system: str, residual: int, bits: int = 2, context: int = 20_000) -> Lowering:
    sc = resolve(Point(system, MODEL, context, None, {"kv_policy": "kivi-2bit", "kv_policy.bits": bits,
                                                      "kv_policy.residual": residual}))
    return Lowering(sc.system, sc.model, sc.precision, context, sc.policy)


STAGED = ["kvnand-c16", "kvnand-d", "base2", "cxl-kv", "csd-offload"]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(STAGED), st.integers(0, 256), st.integers(0, 256), st.sampled_from([2, 4, 8]))
def test_a_larger_residual_never_holds_less_in_the_buffer(system, r1, r2, bits):
    small, large = sorted((r1, r2))
    a, b = _lowering(system, small, bits), _lowering(system, large, bits)
    assert b.window_buffer_bytes >= a.window_buffer_bytes
    assert b.window_bytes() >= a.window_bytes()
    # what is left to stage programs in shrinks by exactly what the window takes
    assert a.layout.staging_bytes - b.layout.staging_bytes == pytest.approx(
        b.window_buffer_bytes - a.window_buffer_bytes, rel=1e-12)
    # only quantized groups are programmed: the bytes written per token do not depend on the window
    assert b.layout.written_bytes_per_token == a.layout.written_bytes_per_token
    # the window is read from the buffer: never more pages sensed while pages hold as many groups (a window
    # that squeezes the staging slots below a program mixes groups in pages, A, and reads more)
    if b.layout.read_amplification == a.layout.read_amplification:
        assert b.kv_reads(1)[1] <= a.kv_reads(1)[1]
    else:
        assert b.layout.read_amplification > a.layout.read_amplification


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 512), st.integers(0, 512), st.sampled_from([1_000, 100_000]))
def test_a_larger_residual_never_holds_less_in_dram(r1, r2, context):
    small, large = sorted((r1, r2))
    used = []
    for r in (small, large):
        sc = resolve(Point("base1", MODEL, context, None, {"kv_policy": "kivi-2bit", "kv_policy.residual": r}))
        fit = check(stores(sc.system, sc.model, sc.precision, sc.policy), context)
        used.append(fit.stores["DRAM (KV)"]["used_bytes"])
    assert used[1] >= used[0]


def test_the_dram_window_is_held_and_streamed_at_full_width():
    lw = _lowering("base1", 128, context=100_000)
    # 16-bit window of every layer's K and V, 128 tokens (LLaMA3.1-8B: 32 layers, 8 KV heads of 128)
    assert lw.window_bytes() == 128 * 32 * 2 * 8 * 128 * 2 and lw.window_memory() == "DRAM"
    q = kvnand.evaluate("base1", MODEL, 100_000, kv_policy="kivi-2bit", overrides={"kv_policy.residual": 0})
    w = kvnand.evaluate("base1", MODEL, 100_000, kv_policy="kivi-2bit")
    extra_bits = 32 * 2 * 8 * 128 * 128 * (2 - (0.25 + 4 / 32)) * 8  # per step: layers x K|V x heads x window
    assert w["actions"]["dram.bits"] - q["actions"]["dram.bits"] == pytest.approx(extra_bits, rel=1e-9)
    assert w["max_context"] < q["max_context"] and w["tokens_per_s"] < q["tokens_per_s"]


@pytest.mark.parametrize("system, buffer", [("kvnand-d", "SoC KV staging buffer"), ("base2", "SoC KV staging buffer"),
                                            ("kvnand-c16", "per-plane KV buffer")])
def test_a_window_the_buffer_cannot_hold_is_an_on_chip_error_naming_it(system, buffer):
    r = kvnand.evaluate(system, MODEL, 10_000, kv_policy="kivi-2bit")  # 128 tokens at 16 bit
    assert r["oom"] and r["tokens_per_s"] is None
    assert r["oom_reason"].startswith(buffer) and "kv_policy.residual" in r["oom_reason"]


def test_a_window_the_buffer_holds_is_read_from_it_not_sensed():
    q = kvnand.evaluate("cxl-kv", MODEL, 10_000, kv_policy="kivi-2bit", overrides={"kv_policy.residual": 0})
    w = kvnand.evaluate("cxl-kv", MODEL, 10_000, kv_policy="kivi-2bit")
    assert w["kv_policy"]["window_memory"] == "SoC KV staging buffer"
    assert w["kv_mapping"]["sensed_kv_bytes_per_token"] < q["kv_mapping"]["sensed_kv_bytes_per_token"]
    assert w["kv_policy"]["page_read_fraction"] < 1.0
    assert w["actions"]["socbuf.bits"] > q["actions"]["socbuf.bits"]
    assert w["kv_mapping"]["programs_per_token"] == q["kv_mapping"]["programs_per_token"]


def test_a_residual_at_the_precision_width_is_the_identity():
    base = kvnand.evaluate("cxl-kv", MODEL, 10_000, overrides={"kv_policy.bits": 16})
    win = kvnand.evaluate("cxl-kv", MODEL, 10_000, overrides={"kv_policy.bits": 16, "kv_policy.residual": 64})
    assert win["tokens_per_s"] == base["tokens_per_s"] and win["energy_j_per_token"] == base["energy_j_per_token"]


def test_a_residual_needs_quantized_kv():
    with pytest.raises(InputError) as e:
        kvnand.evaluate("base1", MODEL, 1000, overrides={"kv_policy.residual": 32})
    assert e.value.key == "kv_policy.residual"


def test_contexts_within_the_window_evaluate():
    for context in (1, 64, 128):
        r = kvnand.evaluate("cxl-kv", MODEL, context, kv_policy="kivi-2bit")
        assert r["tokens_per_s"] > 0 and r["kv_policy"]["window_tokens"] == context


# ------------------------------------------------------------------ read disturb under sparse reading
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), st.floats(0.5, 1e4), st.integers(1, 256)), min_size=1, max_size=6),
       st.floats(0.001, 1.0), st.floats(0.0, 1.0))
def test_sparse_reading_keeps_the_worst_block_and_scales_the_mean(kinds, useful, extra):
    import numpy as np

    from kvnand.reliability.disturb import Blocks, sparse_reading

    dense = Blocks(*(np.array(x, float) for x in zip(*kinds, strict=True)))
    page_read = useful + extra * (1 - useful)               # a step senses at least the useful tokens' pages
    got = sparse_reading(dense, useful, page_read)
    assert got.max() == dense.max()                          # hot blocks keep the dense count
    assert got.count.sum() == pytest.approx(dense.count.sum(), rel=1e-12)
    mean = float(np.average(dense.reads, weights=dense.count))
    assert float(np.average(got.reads, weights=got.count)) == pytest.approx(page_read * mean, rel=1e-9, abs=1e-9)
    if useful >= 1.0 or page_read >= 1.0:
        assert got is dense


def test_reliability_counts_the_pages_a_sparse_policy_senses():
    from kvnand.evaluation import evaluate_reliability

    def kv_reads(overrides):
        r = evaluate_reliability("kvnand-d", MODEL, 50_000, overrides=overrides)
        return next(g for g in r["groups"] if "kv" in g["holds"])["kv_reads_per_block"]

    dense, quest = kv_reads({}), kv_reads({"kv_policy": "quest"})
    assert quest["max"] == dense["max"]                      # persistent heavy hitters: the worst block stays
    assert quest["mean"] < dense["mean"] / 10                # Quest senses about 1/25 of the pages at 50k


def test_the_reliability_table_shows_the_mean_reads_per_kv_block(kvnand_cli):
    code, out, _ = kvnand_cli("reliability", "--systems", "kvnand-d", "--models", MODEL, "--contexts", "50k",
                              "--set", "kv_policy=quest")
    assert code == 0
    assert "mean reads/KV block" in out and "3.15e+04" in out and "7.68e+05" in out  # mean dropped, max kept
