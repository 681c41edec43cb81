"""evaluate_many (the array path of the fast engine) against evaluate(), point by point."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvnand.columnar import evaluate_many, records
from kvnand.errors import InputError
from kvnand.evaluation import evaluate
from kvnand.lowering.step import Lowering

SYSTEMS = ["kvnand-c16", "kvnand-d", "kvnand-d:auto", "base1", "base2", "cambricon-llm-s", "cambricon-llm-m",
           "cambricon-llm-l", "csd-offload", "lincoln", "cxl-kv"]
# dense, GQA, MoE, sliding-window (gemma2, mistral), MLA + MoE (deepseek-v2-lite)
MODELS = ["llama3.1-70b", "llama3.1-8b", "opt-6.7b", "mixtral-8x7b", "gemma2-9b", "mistral-7b-v0.1",
          "deepseek-v2-lite", "qwen3-30b-a3b"]
OVERRIDES = [{}, {"dies": 16}, {"mapping": "naive"}, {"hg_pipeline": False}, {"page_size": "4 KiB"}]
REL = 1e-12


def differences(a, b, path="") -> list[str]:
    """Where two records differ: keys, strings, flags exactly; numbers at REL relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b) and set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or isinstance(a, bool) or \
                isinstance(b, bool) or not math.isclose(a, b, rel_tol=REL, abs_tol=0.0):
            return [f"{path}: {a!r} != {b!r}"]
        return []
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def check_equal(system, model, contexts, precision=None, overrides=None, **kw):
    cols = evaluate_many(system, model, contexts, precisions=precision, overrides=[overrides or {}], **kw)
    for c, rec in zip(contexts, records(cols), strict=True):
        ref = evaluate(system, model, c, precision=precision, overrides=overrides or {}, **kw)
        diff = differences(ref, rec)
        assert not diff, f"{system} {model} {c} {precision} {overrides}: {diff[:5]}"
    return cols


contexts_st = st.lists(st.integers(min_value=0, max_value=60).map(lambda e: max(1, int(10 ** (e / 10)))),
                       min_size=1, max_size=6)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(system=st.sampled_from(SYSTEMS), model=st.sampled_from(MODELS), contexts=contexts_st,
       precision=st.sampled_from([None, "bf16", "w8a8", "w4a16"]), overrides=st.sampled_from(OVERRIDES))
def test_evaluate_many_equals_evaluate(system, model, contexts, precision, overrides):
    if overrides and not system.startswith("kvnand"):
        overrides = {}  # the flash layout keys belong to the IFC systems
    if overrides.get("mapping") == "naive":
        contexts = [min(c, 100_000) for c in contexts]  # the naive log is enumerated page by page
    cols = check_equal(system, model, contexts, precision, overrides)
    assert not cols["fallback"].any()  # every preset takes the array path
    assert list(cols["oom"]) == [r["oom"] for r in records(cols)]


def test_columns_hold_every_point_in_order():
    cols = evaluate_many(["kvnand-c16", "base1"], "llama3.1-8b", [128, 100_000, 10**9],
                         precisions=[None, "w4a16"], overrides={"dies": [8, 16]})
    n = 2 * 2 * 2 * 3
    assert len(cols["context"]) == n and list(cols["context"][:3]) == [128, 100_000, 10**9]
    assert cols["system"][:12] == ["kvnand-c16"] * 12 and cols["overrides"][6] == {"dies": 16}
    assert cols["oom"][2] and cols["oom_reason"][2] and math.isnan(cols["tokens_per_s"][2])
    assert not cols["oom"][0] and cols["tokens_per_s"][0] > 0 and cols["oom_reason"][0] is None
    assert all(len(v) == n for v in cols["breakdown_s"].values())
    assert cols["cost_usd"][0] > 0 and not cols["fallback"].any()


def test_auto_split_ranks_every_split_like_evaluate():
    cols = check_equal("kvnand-d:auto", "llama3.1-70b", [1, 1000, 30_000, 300_000, 3_000_000],
                       overrides={"dies": 16})
    assert len({c["split"] for c in cols["config"] if "split" in c}) >= 1


def test_a_lowering_the_array_path_cannot_take_falls_back_to_evaluate(monkeypatch):
    softmax = Lowering.softmax

    def scalar_only(self, q_heads):  # a branch on the context, as a new feature might add
        return softmax(self, q_heads) if self.L > 0 else None

    monkeypatch.setattr(Lowering, "softmax", scalar_only)
    cols = check_equal("kvnand-c16", "llama3.1-8b", [128, 4096, 100_000])
    assert cols["fallback"].all()


def test_event_mode_is_evaluated_point_by_point():
    cols = check_equal("kvnand-c16", "llama3.1-8b", [128, 1000], mode="event")
    assert cols["fallback"].all() and cols["mode"] == ["event", "event"]


def test_bad_contexts_are_one_input_error():
    for bad in ([0, 5], [1.5], [True], "1k"):
        with pytest.raises(InputError):
            evaluate_many("kvnand-c16", "llama3.1-8b", bad)
    assert np.isnan(evaluate_many("kvnand-c16", "llama3.1-70b", [10**9])["latency_s"][0])


@pytest.mark.slow  # two grids, one of them over a pool of two processes
def test_dse_grid_with_two_workers_equals_one(tmp_path):
    from pathlib import Path

    from kvnand.study.dse.grid import run_grid
    from kvnand.study.dse.space import load_space

    space = load_space(Path(__file__).resolve().parent.parent / "dse" / "smoke.yaml")
    one = run_grid(space, tmp_path / "1", workers=1, log=lambda *a: None, study=False)
    two = run_grid(space, tmp_path / "2", workers=2, log=lambda *a: None, study=False)
    assert one["designs"] == two["designs"] > 0 and "study.db" not in one["files"]
    assert (tmp_path / "1" / "trials.csv").read_text() == (tmp_path / "2" / "trials.csv").read_text()
    a, b = np.load(tmp_path / "1" / "grid.npz"), np.load(tmp_path / "2" / "grid.npz")
    assert sorted(a.files) == sorted(b.files) and "objective.latency_s" in a.files
    for k in a.files:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    assert len(a["number"]) == one["designs"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, math.inf]), min_size=3, max_size=3), max_size=25),
       st.lists(st.sampled_from(["minimize", "maximize"]), min_size=3, max_size=3))
def test_pareto_front_is_every_point_no_other_dominates(values, directions):
    from kvnand.study.dse.objectives import dominates, non_dominated

    expected = [not any(dominates(q, p, directions) for q in values) for p in values]
    assert non_dominated(values, directions) == expected


def test_heatmap_draws_a_panel_whose_every_point_is_out_of_memory():
    from kvnand.study.dse.export import TrialRow, heatmap_figure

    def point(model, context, oom):
        return {"model": model, "precision": "bf16", "context": context, "oom": oom,
                "latency_s": None if oom else 0.01 * context, "config": {"kv_store": "flash_group", "g1_dies": 7,
                                                                         "g2_dies": 1}}

    points = [point("big", 1000, True), point("big", 2000, True), point("small", 1000, False)]
    rows = [TrialRow(0, "COMPLETE", {}, [1.0], True, report={"points": points})]
    fig = heatmap_figure(None, rows)
    assert fig is not None and len(fig.axes) >= 2


def test_policy_points_fall_back_to_evaluate():
    """A KV policy (eviction and selection branch on the context) is evaluated point by point, and equals
    evaluate()."""
    cols = evaluate_many("kvnand-c16", "llama3.1-8b", [1000, 20_000], overrides=[{"kv_policy": "h2o"}])
    assert cols["fallback"].all()
    for rec, c in zip(records(cols), (1000, 20_000), strict=True):
        assert rec["latency_s"] == evaluate("kvnand-c16", "llama3.1-8b", c, kv_policy="h2o")["latency_s"]


def count_walks(monkeypatch) -> list:
    """A list that gets an entry for every stacked walk evaluate_many makes."""
    from kvnand import columnar

    walks: list = []
    walk = columnar._walk_stack
    monkeypatch.setattr(columnar, "_walk_stack", lambda *a, **k: walks.append(1) or walk(*a, **k))
    return walks


# designs that differ in numbers only: one stacked walk over designs x contexts
STACKED = [("kvnand-d", {"dies": [8, 16, 32], "g2_dies": [1, 3, 7]}),
           ("kvnand-c16", {"dies": [8, 16, 32, 64]}),
           ("kvnand-d:auto", {"dies": [8, 16]}),
           ("cambricon-llm-m", {"dies": [16, 32]}),
           ("base2", {"channels": [4, 8]})]


@pytest.mark.parametrize("system,overrides", STACKED, ids=[s for s, _ in STACKED])
def test_stacked_designs_walk_once_and_equal_evaluate(system, overrides, monkeypatch):
    walks = count_walks(monkeypatch)
    contexts = [1, 2000, 70_000, 3_000_000]
    cols = evaluate_many(system, "llama3.1-8b", contexts, precisions=[None, "w4a16"], overrides=overrides)
    assert len(walks) == 2 and not cols["fallback"].any()  # one walk per precision, every design in it
    variants = [dict(zip(overrides, v, strict=True)) for v in __import__("itertools").product(*overrides.values())]
    recs = records(cols)
    i = 0
    for ov in variants:
        for p in (None, "w4a16"):
            for c in contexts:
                diff = differences(evaluate(system, "llama3.1-8b", c, precision=p, overrides=ov), recs[i])
                assert not diff, f"{system} {ov} {p} {c}: {diff[:3]}"
                i += 1
    assert cols["oom"].any() and not cols["oom"].all()


def test_a_number_that_changes_the_lowering_falls_back_design_by_design(monkeypatch):
    """Planes per die decide whether a head-parallel KVNAND-C gives every (KV head, K|V) its own plane set (a
    structural choice): designs on both sides cannot be walked together, so each is walked alone, still over
    all its contexts."""
    walks = count_walks(monkeypatch)
    overrides = [{"dies": 8, "planes_per_die": p} for p in (1, 4)]
    cols = evaluate_many("kvnand-c16", "llama3.1-8b", [500, 50_000], overrides=overrides)
    assert len(walks) == 3 and not cols["fallback"].any()  # the stack, then each design
    for rec, (ov, c) in zip(records(cols), [(o, c) for o in overrides for c in (500, 50_000)], strict=True):
        assert not differences(evaluate("kvnand-c16", "llama3.1-8b", c, overrides=ov), rec)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dies=st.lists(st.sampled_from([8, 16, 24, 32, 64]), min_size=1, max_size=4, unique=True),
       split=st.floats(0.05, 0.95), contexts=contexts_st, model=st.sampled_from(MODELS[:4]),
       precision=st.sampled_from([None, "bf16", "w4a16"]))
def test_stacked_kvnand_d_sweeps_equal_evaluate(dies, split, contexts, model, precision):
    overrides = [{"dies": d, "g2_dies": max(1, min(d - 1, round(split * d)))} for d in dies]
    cols = evaluate_many("kvnand-d", model, contexts, precisions=precision, overrides=overrides)
    for rec, (ov, c) in zip(records(cols), [(o, c) for o in overrides for c in contexts], strict=True):
        diff = differences(evaluate("kvnand-d", model, c, precision=precision, overrides=ov), rec)
        assert not diff, f"{model} {ov} {precision} {c}: {diff[:3]}"


def test_columns_without_breakdowns_hold_the_same_numbers():
    kw = dict(precisions=["w8a8"], overrides={"dies": [8, 16], "g2_dies": [1, 5]})
    full = evaluate_many("kvnand-d", "llama3.1-70b", [1000, 100_000, 3_000_000], **kw)
    lean = evaluate_many("kvnand-d", "llama3.1-70b", [1000, 100_000, 3_000_000], breakdowns=False, **kw)
    for f in ("tokens_per_s", "energy_j_per_token", "ttft_s", "capacity_use", "oom"):
        assert np.array_equal(full[f], lean[f], equal_nan=f != "oom"), f
    assert full["bottleneck"] == lean["bottleneck"] and full["oom_reason"] == lean["oom_reason"]
    assert all(lean[f] == {} for f in ("breakdown_s", "actions")) and full["breakdown_s"]
    with pytest.raises(InputError, match="without breakdowns"):
        records(lean)


def test_breakdown_columns_are_a_mapping_built_on_read():
    cols = evaluate_many("kvnand-d", "llama3.1-8b", [1000, 3_000_000], overrides={"dies": [8, 16], "g2_dies": [1, 3]})
    stages = cols["breakdown_s"]
    assert len(stages) == len(list(stages)) > 0 and "attention" in stages
    first = stages["attention"]
    assert first is stages["attention"] and len(first) == 8  # built once, one entry per point
    assert first[1] == 0.0 and first[0] > 0  # out of memory at 3M tokens
    assert dict(stages.items()).keys() == set(stages)
    with pytest.raises(KeyError):
        stages["no such stage"]


def test_load_systems_equals_load_system():
    from kvnand.config.loader import load_system, load_systems

    ovs = [{"dies": 8, "g2_dies": 2}, {"dies": 16, "g2_dies": 9}, {}]
    assert all(a is b for a, b in zip(load_systems("kvnand-d", ovs), [load_system("kvnand-d", o) for o in ovs],
                                      strict=True))
