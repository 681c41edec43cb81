"""KV page mapping, weight tiling and the operator graph (issue 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnand.mapping.kv import KvLayout, enumerate_layout
from kvnand.mapping.weights import weight_slices

layouts = st.builds(
    lambda mapping, planes, layers, kv_heads, unit_elems, page_units, split: KvLayout(
        mapping, planes, layers, kv_heads, unit_elems * 2.0, unit_elems * 2.0 * page_units, split, 8192.0),
    st.sampled_from(["page", "naive"]), st.sampled_from([2, 4, 8, 16]), st.integers(1, 3), st.sampled_from([1, 2, 4]),
    st.sampled_from([4, 8]), st.sampled_from([1, 2, 4, 8]), st.booleans())


@settings(max_examples=60, deadline=None)
@given(layouts, st.integers(1, 40))
def test_every_kv_byte_is_mapped_exactly_once_and_no_page_overflows(lay, context):
    placed = enumerate_layout(lay, context)
    assert len(placed) == lay.layers * lay.kv_heads * 2 * context
    slots = {(page, off) for (_, page, off) in placed.values()}
    assert len(slots) == len(placed)                         # no two units share bytes
    for (_, _, off) in placed.values():
        assert 0 <= off and off + lay.unit <= lay.page + 1e-9  # no page over-filled
    pages_to_plane = {}
    for (plane, page, _) in placed.values():
        assert pages_to_plane.setdefault(page, plane) == plane  # a page lives on one plane


@settings(max_examples=60, deadline=None)
@given(layouts, st.integers(1, 40))
def test_page_reads_of_a_decode_step_equal_the_analytic_count(lay, context):
    placed = enumerate_layout(lay, context)
    heads = lay.kv_heads
    # K of layer 0, all heads: the pages touched, and how many on the busiest plane
    pages = {placed[(0, h, 0, t)][1]: placed[(0, h, 0, t)][0] for h in range(heads) for t in range(context)}
    per_plane = np.bincount(list(pages.values()), minlength=lay.planes)
    busiest, total = lay.phase_reads(context, heads)
    assert total == len(pages)
    assert busiest == per_plane.max()


def test_page_mapping_reads_fewer_pages_than_naive():
    page = KvLayout("page", 512, 32, 8, 256, 4096, True, 8192)
    naive = KvLayout("naive", 512, 32, 8, 256, 4096, True, 8192)
    pb, pt = page.phase_reads(10_000, 8)
    nb, nt = naive.phase_reads(10_000, 8)
    assert pt < nt and pb < nb
    # the useful bytes are the same: 10k tokens x 8 heads x 256 B
    assert pt * 4096 >= 10_000 * 8 * 256


@pytest.mark.parametrize("kv_heads,expected", [(8, 512), (32, 128)])
def test_tokens_per_page_fill_formula_on_kvnand_c16(kv_heads, expected):
    # t = page_size * (num_die * num_plane / 2k) / (precision_bytes * head_dim), 16 dies x 32 planes
    lay = KvLayout("page", 16 * 32, 32, kv_heads, 2 * 128, 4096, True, 8192)
    assert lay.tokens_per_page_fill == expected


def test_tokens_per_page_fill_reported_by_evaluate():
    import kvnand

    assert kvnand.evaluate("kvnand-c16", "llama3.1-8b", 1000)["kv_mapping"]["tokens_per_page_fill"] == 512
    assert kvnand.evaluate("kvnand-c16", "llama2-7b", 1000)["kv_mapping"]["tokens_per_page_fill"] == 128


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 5), st.integers(1, 6), st.integers(1, 64),
       st.integers(1, 64))
def test_weight_slices_cover_each_matrix_exactly_once(in_dim, out_dim, dies, planes, rows, cols):
    cover = np.zeros((in_dim, out_dim), dtype=np.int32)
    for (_, plane, _), (r0, r1, c0, c1) in weight_slices(in_dim, out_dim, dies, planes, rows, cols).items():
        assert 0 <= plane < planes
        cover[r0:r1, c0:c1] += 1
    assert (cover == 1).all()


def _write_config(tmp_path, kv_heads):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
           "intermediate_size": 5632, "num_attention_heads": 16, "num_key_value_heads": kv_heads,
           "num_hidden_layers": 8, "vocab_size": 32000, "max_position_embeddings": 4096,
           "tie_word_embeddings": False, "rms_norm_eps": 1e-5}
    p = tmp_path / f"kv{kv_heads}" / "config.json"
    p.parent.mkdir()
    p.write_text(json.dumps(cfg))
    return str(p)


@pytest.mark.parametrize("kv_heads", [16, 4, 2, 1])  # GQA ratios 1, 4, 8 and MQA
def test_gqa_and_mqa_run_on_every_kv_placement(tmp_path, kv_heads):
    import kvnand

    path = _write_config(tmp_path, kv_heads)
    for system in ("kvnand-c16", "kvnand-d", "base1", "base2"):
        r = kvnand.evaluate(system, path, 4096)
        assert not r["oom"] and r["tokens_per_s"] > 0
        assert sum(r["breakdown_s"].values()) == pytest.approx(r["latency_s"], rel=1e-9)


def test_decode_flops_of_llama31_8b():
    from kvnand.workload.graph import step_flops
    from kvnand.workload.model import load_model

    m = load_model("llama3.1-8b")
    L = 10_000
    embedding = m.vocab * m.hidden                     # looked up, not multiplied
    norms = (2 * m.layers + 1) * m.hidden
    attention = 2 * 2 * m.layers * m.heads * m.head_dim * L   # q.K^T and p.V
    assert step_flops(m, "bf16", L) == pytest.approx(2 * (m.active_params - embedding - norms) + attention,
                                                     rel=1e-9)


def test_operator_graph_is_a_dag_with_the_expected_nodes():
    import networkx as nx

    from kvnand.workload.graph import layer_dag
    from kvnand.workload.model import load_model

    g = layer_dag(load_model("mixtral-8x7b"), "bf16", 1000)
    assert nx.is_directed_acyclic_graph(g)
    for node in ("qkv", "rope", "kv_append", "logit", "softmax", "attend", "o_proj", "router", "ffn_up",
                 "ffn_down"):
        assert node in g
    assert g.nodes["ffn_up"]["kind"] == "gemv"
