"""Queries per step: batched and speculative decoding (kvnand.lowering.decode, Lowering(batch, queries)).

Properties: a batch of one with one query reproduces the plain record exactly; aggregate tokens/s never
falls and per-request tokens/s never rises as the batch grows while every query column fits the die's
global buffer in one pass; with an unbounded PE rate the weight pages' time per step does not depend on
the number of query columns. Plus capacity per sequence, the speculative step's parts, and bad input.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import kvnand
from kvnand.errors import InputError
from kvnand.lowering.step import Lowering
from kvnand.lowering.weights import WEIGHT_HOMES
from kvnand.mapping.weights import tile_gemv
from kvnand.scenario import Decode, Point, resolve
from kvnand.workload.graph import head_operators, layer_operators

SYSTEMS = ("kvnand-c16", "kvnand-d", "base1", "base2", "cambricon-llm-m", "csd-offload", "lincoln")
MODELS = ("llama3.1-8b", "llama2-7b", "mixtral-8x7b")
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# every field of a plain record; a batched one adds the batch fields and leaves the others alone
BATCH_FIELDS = {"batch", "queries_per_step", "tokens_per_step", "step_latency_s", "aggregate_tokens_per_s"}


@FEW
@given(system=st.sampled_from(SYSTEMS), model=st.sampled_from(MODELS), context=st.sampled_from([128, 1000, 10_000]))
def test_a_batch_of_one_is_the_plain_step_exactly(system, model, context):
    plain = kvnand.evaluate(system, model, context)
    one = kvnand.evaluate(system, model, context, batch=1)
    assert set(one) - set(plain) == BATCH_FIELDS
    assert {k: one[k] for k in plain} == plain
    if not plain["oom"]:
        assert one["aggregate_tokens_per_s"] == plain["tokens_per_s"]
        assert one["step_latency_s"] == plain["latency_s"]
        assert one["queries_per_step"] == 1 and one["tokens_per_step"] == 1.0


def _one_pass(system: str, model: str, context: int, batch: int) -> bool:
    """Every weight GEMM of the step takes its `batch` query columns in one pass over its pages."""
    sc = resolve(Point(system, model, context))
    lw = Lowering(sc.system, sc.model, sc.precision, context, batch=batch)
    home = WEIGHT_HOMES[sc.system.placement.weights]
    if home.name != "flash_pe":
        return True
    ops = [op for kind, _ in sc.model.layer_kinds for op in layer_operators(sc.model, sc.precision, 1, kind=kind)]
    return all(home.passes(lw, tile_gemv(lw.wgroup, op.in_dim, op.out_dim, sc.precision.weight_bytes)) == 1
               for op in (*ops, *head_operators(sc.model, sc.precision)) if op.kind == "gemv" and op.name != "router")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(system=st.sampled_from(SYSTEMS), model=st.sampled_from(MODELS), context=st.sampled_from([128, 1000, 4000]))
def test_aggregate_never_falls_and_per_request_never_rises_while_it_fits(system, model, context):
    fitting = []
    for b in (1, 2, 3, 4, 6, 8, 12, 16):
        r = kvnand.evaluate(system, model, context, batch=b)
        if r["oom"] or not _one_pass(system, model, context, b):
            break
        fitting.append(r)
    assume(len(fitting) >= 2)  # a point where not even two sequences fit says nothing here
    for prev, r in zip(fitting, fitting[1:], strict=False):
        assert r["aggregate_tokens_per_s"] >= prev["aggregate_tokens_per_s"] * (1 - 1e-12), (system, r["batch"])
        assert r["tokens_per_s"] <= prev["tokens_per_s"] * (1 + 1e-12), (system, r["batch"])


@FEW
@given(system=st.sampled_from(("kvnand-c16", "base1", "lincoln", "kvnand-d")),
       model=st.sampled_from(MODELS), batch=st.integers(1, 6), queries=st.integers(1, 4))
def test_with_unbounded_pe_rate_the_weight_pages_take_the_same_time_for_any_columns(system, model, batch, queries):
    sc = resolve(Point(system, model, 1000, overrides={"fmacs_per_plane": 10**6}))  # the schema's largest
    home = WEIGHT_HOMES[sc.system.placement.weights]
    one = Lowering(sc.system, sc.model, sc.precision, 1000)
    many = Lowering(sc.system, sc.model, sc.precision, 1000, batch=batch, queries=queries)
    ops = [op for kind, _ in sc.model.layer_kinds for op in layer_operators(sc.model, sc.precision, 1, kind=kind)]
    for op in ops:
        if op.kind != "gemv" or op.name == "router":
            continue
        til = tile_gemv(one.wgroup, op.in_dim, op.out_dim, sc.precision.weight_bytes)
        if home.passes(many, til) != 1:
            continue  # the global buffer re-reads the pages: not the PE rate's doing
        t1 = home.gemv_parts(one, op.name, "x", op.in_dim, op.out_dim)[1].duration
        tn = home.gemv_parts(many, op.name, "x", op.in_dim, op.out_dim)[1].duration
        # only the last page's PE time (picoseconds at 10^6 FMACs) is left in the pipeline fill
        assert tn == pytest.approx(t1, rel=1e-5), op.name


def test_more_query_columns_than_the_pes_finish_in_one_tr_make_the_step_pe_bound():
    """16 FMACs at 400 MHz finish a 4 KiB BF16 page for 12 columns within tR + register copy (4.1 us)."""
    low = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 1000, batch=4)
    high = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 1000, batch=16)
    assert not any(k.startswith("PE") for k in low["breakdown_by_resource_s"])
    assert high["breakdown_by_resource_s"]["PE (ifc)"] > 0.2 * high["step_latency_s"]


def test_capacity_holds_every_sequence_kv():
    one = kvnand.evaluate("base1", "llama3.1-8b", 1000, batch=1)
    four = kvnand.evaluate("base1", "llama3.1-8b", 1000, batch=4)
    per_token = 2 * 32 * 8 * 128 * 2  # bytes: K and V, layers, KV heads, head dim, BF16
    dram = four["capacity"]["DRAM (KV)"]
    assert dram["used_bytes"] == pytest.approx(4 * 1000 * per_token)
    assert four["max_context"] == math.floor(dram["capacity_bytes"] / (4 * per_token))
    assert one["max_context"] // 4 - four["max_context"] in (0, 1)
    big = kvnand.evaluate("base1", "llama3.1-8b", 10_000, batch=16)
    assert big["oom"] and "DRAM (KV)" in big["oom_reason"] and big["aggregate_tokens_per_s"] is None


def test_speculative_step_runs_the_draft_and_gains_the_expected_tokens():
    k, a = 3, 0.7
    r = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 1000, spec_draft="llama3.2-1b", spec_k=k, spec_accept=a)
    expected = (1 - a ** (k + 1)) / (1 - a)
    assert r["speculation"]["expected_tokens_per_step"] == pytest.approx(expected)
    assert r["queries_per_step"] == k + 1 and r["tokens_per_step"] == pytest.approx(expected)
    assert r["breakdown_s"]["draft"] > 0
    assert r["latency_s"] == pytest.approx(r["step_latency_s"] / expected)
    assert sum(r["breakdown_s"].values()) == pytest.approx(r["step_latency_s"])
    assert r["energy_j_per_token"] == pytest.approx(sum(r["energy_breakdown_j"].values()))
    # a draft that is never accepted only costs time
    never = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 1000, spec_draft="llama3.2-1b", spec_k=k, spec_accept=0.0)
    plain = kvnand.evaluate("kvnand-c16", "llama3.1-8b", 1000)
    assert never["tokens_per_s"] < plain["tokens_per_s"] < r["tokens_per_s"]


def test_draft_placement_on_the_npu_streams_its_weights_from_dram():
    on_npu = kvnand.evaluate("lincoln", "llama2-70b", 1000, spec_draft="llama3.2-1b", spec_k=4, spec_accept=0.7)
    in_flash = kvnand.evaluate("lincoln", "llama2-70b", 1000, spec_draft="llama3.2-1b", spec_k=4, spec_accept=0.7,
                               overrides={"placement.draft": "weights"})
    assert on_npu["speculation"]["draft_placement"] == "npu"
    assert in_flash["speculation"]["draft_placement"] == "weights"
    assert on_npu["actions"]["dram.bits"] > in_flash["actions"]["dram.bits"]
    # the draft's weights are in DRAM beside the KV cache
    assert on_npu["capacity"]["DRAM (KV)"]["used_bytes"] > in_flash["capacity"]["DRAM (KV)"]["used_bytes"]
    with pytest.raises(InputError, match="placement.draft"):
        kvnand.evaluate("kvnand-c16", "llama3.1-8b", 1000, spec_draft="llama3.2-1b", spec_k=2, spec_accept=0.5,
                        overrides={"placement.draft": "npu"})


@pytest.mark.parametrize(("kw", "key"), [
    ({"batch": 0}, "batch"), ({"batch": True}, "batch"), ({"batch": 2.5}, "batch"),
    ({"spec_k": 3}, "spec_k"), ({"spec_accept": 0.5}, "spec_accept"),
    ({"spec_draft": "llama3.2-1b", "spec_k": 0, "spec_accept": 0.5}, "spec_k"),
    ({"spec_draft": "llama3.2-1b", "spec_k": 3, "spec_accept": 1.0}, "spec_accept"),
    ({"spec_draft": "llama3.2-1b", "spec_k": 3, "spec_accept": -0.1}, "spec_accept"),
    ({"spec_draft": "llama3.2-1b", "spec_k": 3}, "spec_accept"),
])
def test_bad_decode_input_is_one_input_error(kw, key):
    with pytest.raises(InputError) as exc:
        Decode(**kw)
    assert exc.value.key == key
    with pytest.raises(InputError):
        kvnand.evaluate("base1", "llama3.1-8b", 1000, **kw)


@pytest.mark.parametrize("args", [
    ["--batch", "0"], ["--batch", "two"], ["--spec-k", "3"], ["--spec-draft", "nope", "--spec-k", "2",
                                                               "--spec-accept", "0.5"],
    ["--spec-draft", "llama3.2-1b", "--spec-k", "2", "--spec-accept", "1"],
    ["--batch", "2", "--refresh", "continuous"],
])
def test_bad_decode_options_exit_2_with_one_line(kvnand_cli, args):
    code, out, err = kvnand_cli("report", "--systems", "base1", "--models", "llama3.1-8b", "--contexts", "1k",
                                "--no-cache", *args)
    assert code == 2 and "Traceback" not in err
    assert "--" in err.strip().splitlines()[-1]


def test_report_sweeps_batches_and_draws_the_batch_figure(kvnand_cli, tmp_path):
    import json

    code, out, _ = kvnand_cli("report", "--systems", "kvnand-c16,base1", "--models", "llama3.1-8b", "--contexts",
                              "1k", "--batch", "1,4", "--format", "json", "--no-cache", "--plot",
                              str(tmp_path / "f.png"))
    assert code == 0
    rows = json.loads(out)["results"]
    assert sorted((r["system"], r["batch"]) for r in rows) == [("base1", 1), ("base1", 4), ("kvnand-c16", 1),
                                                                ("kvnand-c16", 4)]
    assert (tmp_path / "f-batch.png").stat().st_size > 0


def test_merged_stores_add_what_one_memory_holds():
    from kvnand.lowering.step import merge_stores
    from kvnand.mapping.capacity import Store

    target = [Store("IFC flash (weights)", 100.0, 60.0, 0.0), Store("DRAM (KV)", 50.0, 0.0, 2.0)]
    draft = [Store("DRAM (weights)", 50.0, 5.0, 0.0), Store("DRAM (KV)", 50.0, 0.0, 0.5)]
    merged = merge_stores(target, draft)
    assert merged == [Store("IFC flash (weights)", 100.0, 60.0, 0.0), Store("DRAM (KV)", 50.0, 5.0, 2.5)]
    assert merge_stores(target, [Store("host DRAM", 9.0, 1.0, 0.0)])[-1].name == "host DRAM"


def test_lincoln_cases_are_tracked_and_run_at_given_acceptance_rates():
    from kvnand.paths import VALIDATION_ROOT
    from kvnand.study import validate as v

    cases = v.load_cases([VALIDATION_ROOT / "cases" / "lincoln-2025.yaml"])
    assert cases and all(c.status == "tracked" for c in cases)
    assert sorted({c.decode["spec_accept"] for c in cases}) == [0.6, 0.7, 0.8]
    gain = next(c for c in cases if c.id == "lincoln2-spec-gain-opt66b-a07")
    (row,) = v.run([gain])
    assert row.simulated is not None and row.simulated > 1  # speculation speeds Lincoln up at a = 0.7


def test_a_dse_design_carries_batch_to_evaluate():
    from kvnand.paths import DSE_ROOT
    from kvnand.study.dse.objectives import evaluate_design
    from kvnand.study.dse.space import load_space

    space = load_space(DSE_ROOT / "batch-vs-fmacs.yaml")
    one = evaluate_design(space, {"batch": 1, "fmacs_per_plane": 16})
    four = evaluate_design(space, {"batch": 4, "fmacs_per_plane": 16})
    assert four.report["design"]["decode"] == {"batch": 4}
    assert four.metrics["aggregate_tokens_per_s"] > 3 * one.metrics["aggregate_tokens_per_s"]
    assert four.metrics["latency_s"] > one.metrics["latency_s"]
