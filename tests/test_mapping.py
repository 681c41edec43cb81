"""KV page mapping, weight tiling and the operator graph (issue 4)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kvnand.mapping.kv import KvLayout, enumerate_layout, naive_plane
from kvnand.mapping.weights import weight_slices


def _layout(mapping, planes, layers, kv_heads, unit_elems, page_units, split, staging_kib, per_plane, cw_units, nop,
            all_heads):
    unit = unit_elems * 2.0
    page = unit * page_units
    return KvLayout(mapping, planes, layers, kv_heads, unit, page, split, staging_bytes=staging_kib * 1024.0,
                    per_plane_staging=per_plane, codeword=min(page, unit * cw_units), nop=nop,
                    heads_per_phase=kv_heads if all_heads else 1)


layouts = st.builds(
    _layout, st.sampled_from(["page", "naive"]), st.sampled_from([1, 2, 4, 8, 16]), st.integers(1, 4),
    st.sampled_from([1, 2, 3, 4]), st.sampled_from([4, 8, 12]), st.sampled_from([1, 2, 4, 8]), st.booleans(),
    st.sampled_from([0.25, 0.5, 1, 2, 4, 64]), st.booleans(), st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4, 8]),
    st.booleans()).filter(lambda lay: lay.staging_fits)


def _unit_pages(lay, placed, key):
    """(plane, page) pairs a unit's bytes occupy: a page-level unit may run into its group's next pages (more
    than one when the group's share of a page, page / A, is smaller than a unit)."""
    plane, pid, off = placed[key]
    if lay.mapping == "naive":
        last = int((pid * lay.page + off + lay.unit - 1) // lay.page)
        return [(naive_plane(q, lay.planes), q) for q in range(pid, last + 1)]
    per = lay.group_bytes_per_page
    spans = math.ceil((off % per + lay.unit) / per - 1e-9)  # group pages the unit's bytes run over
    _, s_, share, i = pid
    p = lay.planes_per_stream
    return [(plane, pid)] + [(s_ * p + (share + i + k) % p, ("g", s_, share, i + k)) for k in range(1, spans)]


@settings(max_examples=80, deadline=None)
@given(layouts, st.integers(1, 40))
# A = 5 layers share a 64 B page (12.8 B each): a float floor of byte / 12.8 once put a unit at offset 64
@example(_layout("page", 1, 3, 3, 4, 8, True, 0.25, True, 1, 1, False), 9)
def test_every_kv_byte_is_mapped_exactly_once_and_no_page_overflows(lay, context):
    placed = enumerate_layout(lay, context)
    assert len(placed) == lay.layers * lay.kv_heads * 2 * context
    assert len({(page, off) for (_, page, off) in placed.values()}) == len(placed)  # no two units share bytes
    fill: dict = {}
    for key, (_, _, off) in placed.items():
        assert 0 <= off < lay.page
        for _, q in _unit_pages(lay, placed, key):
            fill[q] = fill.get(q, 0.0) + lay.unit
    # bytes per page never exceed the page (a unit split over two pages counts in both here: an upper bound
    # that must still fit when units tile the page exactly)
    if lay.mapping == "page" and lay.group_bytes_per_page % lay.unit == 0:
        assert max(fill.values()) <= lay.page + 1e-9
    pages_to_plane = {}
    for key in placed:
        for plane, q in _unit_pages(lay, placed, key):
            assert pages_to_plane.setdefault(q, plane) == plane  # a page lives on one plane


@settings(max_examples=80, deadline=None)
@given(layouts, st.integers(1, 40))
def test_page_reads_of_a_phase_equal_the_analytic_count(lay, context):
    placed = enumerate_layout(lay, context)
    heads = lay.heads_per_phase
    # K of layer 0, the heads one phase reads: the pages touched, and how many on the busiest plane
    pages = {q: plane for h in range(heads) for t in range(context)
             for plane, q in _unit_pages(lay, placed, (0, h, 0, t))}
    per_plane = np.bincount([plane for plane in pages.values()], minlength=lay.planes)
    busiest, total = lay.phase_reads(context, heads)
    assert total == len(pages)
    assert busiest == per_plane.max()


@settings(max_examples=200, deadline=None)
@given(layouts)
def test_programs_respect_the_device_write_granularity(lay):
    """No page takes more partial programs than its NOP; no program is smaller than the minimum (whole ECC
    codewords, at least page / NOP)."""
    assert lay.partial_programs_per_page() <= lay.nop
    if lay.mapping == "page":
        m = lay.min_program
        assert m >= lay.page / lay.nop - 1e-9 and m >= min(lay.codeword, lay.page) - 1e-9
        assert lay.program_bytes >= m - 1e-9
        assert abs(lay.program_bytes / lay.codeword - round(lay.program_bytes / lay.codeword)) < 1e-9
        # a program carries A groups' slots: the buffer really stages it
        assert lay.read_amplification * lay.slot >= m * (1 - 1e-9)


@settings(max_examples=200, deadline=None)
@given(layouts, st.integers(1, 100_000))
def test_no_fewer_groups_per_page_fits_the_same_buffer(lay, context):
    """The read bound. In any page-striped layout that keeps programs full, a page holding A' co-read groups
    needs each plane's (or the SoC's) buffer to stage, at once, one program for every share of A' groups
    that targets it; A' below the implemented A does not fit, so no such layout senses fewer pages per
    phase than A x (the group's bytes / page)."""
    if lay.mapping != "page":
        return
    a = lay.read_amplification
    for fewer in range(1, a):
        if lay.per_plane_staging:
            shares_per_plane = math.ceil(lay.groups_per_set / (fewer * lay.planes_per_stream))
            assert shares_per_plane * lay.min_program > lay.staging_bytes
        else:
            assert lay.groups * lay.min_program / fewer > lay.staging_bytes
    data = lay.co_read * context * lay.unit
    assert lay.group_pages(context) >= math.ceil(data * a / lay.page - 1e-9)
    assert lay.group_pages(context) == math.ceil(data / lay.group_bytes_per_page - 1e-9)


@settings(max_examples=200, deadline=None)
@given(layouts, st.integers(1, 100_000), st.sampled_from([1.5, 2, 4, 16]))
def test_more_staging_buffer_never_reads_more(lay, context, factor):
    bigger = dataclasses.replace(lay, staging_bytes=lay.staging_bytes * factor)
    assert bigger.read_amplification <= lay.read_amplification
    for heads in (1, lay.kv_heads):
        b0, t0 = lay.phase_reads(context, heads)
        b1, t1 = bigger.phase_reads(context, heads)
        assert b1 <= b0 and t1 <= t0


def test_page_mapping_reads_fewer_pages_than_naive():
    kw = dict(staging_bytes=8192, per_plane_staging=True, codeword=1024, nop=4, heads_per_phase=8)
    page = KvLayout("page", 512, 32, 8, 256, 4096, True, **kw)
    naive = KvLayout("naive", 512, 32, 8, 256, 4096, True, **kw)
    pb, pt = page.phase_reads(10_000, 8)
    nb, nt = naive.phase_reads(10_000, 8)
    # the generation-order log mixes K and V of a layer in a page: twice the pages; spread over all planes by
    # the rotated stripes, its busiest plane is no better than the page-level K sets (half the planes)
    assert pt < nt and pb <= nb
    # the useful bytes are the same: 10k tokens x 8 heads x 256 B
    assert pt * 4096 >= 10_000 * 8 * 256


@pytest.mark.parametrize("kv_heads,expected", [(8, 512), (32, 128)])
def test_tokens_per_page_fill_formula_on_kvnand_c16(kv_heads, expected):
    # t = page_size * (num_die * num_plane / 2k) / (precision_bytes * head_dim), 16 dies x 32 planes, A = 1
    lay = KvLayout("page", 16 * 32, 32, kv_heads, 2 * 128, 4096, True, staging_bytes=8192, per_plane_staging=True,
                   codeword=1024, nop=4, heads_per_phase=kv_heads)
    assert lay.read_amplification == 1
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
