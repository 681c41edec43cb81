"""Reliability: block read counts against a brute-force simulation, P/E from a write rate, the BCH tail,
mapping effects on read disturb, refresh cost, the 5-year wear of an 8-die KVNAND-D, and the CLI."""

from __future__ import annotations

import json
import math
from collections import Counter
from fractions import Fraction

import pytest

from kvnand.config.loader import load_system
from kvnand.errors import InputError
from kvnand.mapping.blocks import streams_per_block
from kvnand.mapping.kv import KvLayout, enumerate_layout, naive_plane
from kvnand.reliability import ecc, refresh_overhead, reliability
from kvnand.reliability.disturb import heads_per_phase, kv_blocks, workload
from kvnand.reliability.profile import DAYS_PER_YEAR, SECONDS_PER_DAY, Session, get_profile, session
from kvnand.workload.model import load_model

RATE = {"profile.tokens_per_s": 10}  # a fixed decode rate keeps these tests off the performance model


# ------------------------------------------------------------------ read counts vs brute force
def _brute_force(lay: KvLayout, ppb: int, g: int, s: Session, heads: int) -> tuple[Counter, int]:
    """Per-block read counts of repeated sessions, stepping through every decode step and phase. Lanes
    append their pages to blocks; enough sessions run for every lane to complete whole cycles of block
    windows, and only blocks whose pages were all written are counted. -> (counts, sessions)."""
    units = enumerate_layout(lay, s.context)
    if lay.mapping == "naive":
        block = ppb

        def pages_of(plane, pid, offset):  # a unit may straddle two pages of the generation-order stream
            end = (pid * lay.page + offset + lay.unit - 1) // lay.page
            return [(naive_plane(q, lay.planes), q) for q in range(pid, int(end) + 1)]

        def lane_index(plane, pid):
            return plane, pid // lay.planes
    else:
        block = ppb // g
        assert lay.group_bytes_per_page % lay.unit == 0  # these cases keep units inside one page

        def pages_of(plane, pid, offset):
            return [(plane, pid)]

        def lane_index(plane, pid):
            # a lane: g shares whose pages sit at the same position j of their stripe on this plane (their
            # page sequences are alike), sharing blocks; the page is the k-th of its share on the plane
            _, _, share, i = pid
            p = lay.planes_per_stream
            return (plane, i % p, share // p // g), i // p
    phases: dict = {}
    for (l_, h, kv, t), where in units.items():
        for plane, pid in pages_of(*where):
            phases.setdefault((l_, kv, h // heads), []).append((t, plane, pid))
    pages: dict = {}  # lane -> pages each stream of the lane writes per session
    for plane, pid in {x[1:] for members in phases.values() for x in members}:
        lane, idx = lane_index(plane, pid)
        pages[lane] = max(pages.get(lane, 0), idx + 1)
    sessions = math.lcm(*(block // math.gcd(n, block) for n in pages.values()))
    counts: Counter = Counter()
    for n in range(sessions):
        for a, b in s.turns:
            for c in range(a, b):
                for members in phases.values():
                    for plane, pid in {(plane, pid) for t, plane, pid in members if t < c}:
                        lane, idx = lane_index(plane, pid)
                        counts[(lane, (n * pages[lane] + idx) // block)] += 1
    full = Counter(v for (lane, k), v in counts.items() if (k + 1) * block <= sessions * pages[lane])
    return full, sessions


CASES = {  # layout, pages per block, blocks per plane (sets streams per block), heads per phase, (output, turns)
    "page, head-parallel sets (C)": (KvLayout("page", 8, 2, 2, 64, 256, split_kv_sets=True), 4, 64, 2, (3, 2)),
    "page, streams share blocks (D)": (KvLayout("page", 4, 2, 2, 64, 256, split_kv_sets=False), 4, 10, 1, (2, 1)),
    "naive, all heads per phase (C)": (KvLayout("naive", 4, 2, 2, 64, 256, split_kv_sets=True), 4, 64, 2, (3, 2)),
    "naive, units straddle pages (D)": (KvLayout("naive", 3, 2, 3, 96, 256, split_kv_sets=False), 5, 64, 1, (4, 2)),
}


@pytest.mark.parametrize("case", CASES)
def test_block_reads_equal_decode_steps_that_touch_them(case):
    lay, ppb, blocks_per_plane, heads, (out, turns) = CASES[case]
    s = session(get_profile("chat", {"profile.output_tokens": out, "profile.turns": turns}), 24)
    blocks, _ = kv_blocks(lay, ppb, blocks_per_plane, s, heads)
    n, p = lay.group_pages(24), lay.planes_per_stream
    hosted = math.ceil(math.ceil(lay.groups_per_set / lay.read_amplification) * min(p, n) / p)
    g = streams_per_block(hosted, math.ceil(n / p), ppb, blocks_per_plane) if lay.mapping == "page" else 1
    assert (g > 1) == ("share" in case)
    brute, sessions = _brute_force(lay, ppb, g, s, heads)
    expected: Counter = Counter()
    for r, c in zip(blocks.reads, blocks.count, strict=True):
        expected[int(r)] += Fraction(c).limit_denominator(1000) * sessions
    assert dict(brute) == {k: v for k, v in expected.items() if v}
    assert blocks.max() == max(brute)


# ------------------------------------------------------------------ endurance
def test_pe_per_year_from_a_constant_write_rate(tmp_path):
    # refresh disabled: G2 wears only from KV writes; 40960 tokens fill whole pages on all 256 G2 planes
    ctx, rate = 40960, 10.0
    over = {"profile.tokens_per_s": rate, "refresh.read_fraction": 1e9}
    r = reliability("kvnand-d", "llama3.1-8b", ctx, overrides=over)
    g2 = next(g for g in r["groups"] if g["group"] == "g2")
    s = load_system("kvnand-d")
    bytes_per_s = ctx * 128 * 1024 * rate / get_profile("continuous").output_tokens
    g2_bytes = s.kv.g2_dies * s.flash.die.geometry.die_bytes
    assert g2["pe_cycles_per_year"] == pytest.approx(bytes_per_s * DAYS_PER_YEAR * SECONDS_PER_DAY / g2_bytes)
    assert g2["refresh_erases_per_day"] == 0
    # without block randomization the same ring of blocks takes every session's erases
    static = tmp_path / "kvnand-d-static.yaml"
    static.write_text("schema_version: 1\nextends: kvnand-d\nkv: {block_randomization: false}\n")
    fixed = reliability(str(static), "llama3.1-8b", ctx, overrides=over)
    assert fixed["pe_cycles_per_year"] >= r["pe_cycles_per_year"]


def test_five_years_of_continuous_decoding_on_an_8_die_kvnand_d():
    over = {"dies": 8, "g2_dies": 4, **RATE}
    r = reliability("kvnand-d", "llama3.1-8b", 10_000, overrides=over)
    g1, g2 = r["groups"]
    print(f"\n8-die KVNAND-D (4+4), llama3.1-8b, 10k, 10 tokens/s, 24 h/day: P/E over 5 years "
          f"G1 {g1['pe_cycles_per_year'] * 5:.0f} (weight refresh), G2 {g2['pe_cycles_per_year'] * 5:.0f} "
          f"(KV writes); lifetime {r['lifetime_years']:.2f} years")
    assert r["pe_cycles_over_profile"] == pytest.approx(5 * r["pe_cycles_per_year"])
    # G1 wears only by refreshing its weights: every weight page is read ~once per token
    assert g1["write_erases_per_day"] == 0 and g1["refresh_erases_per_day"] > 0
    assert g2["refresh_erases_per_day"] == 0  # a KV block (768 pages x 1000 steps) stays under 10^6 reads
    assert r["lifetime_years"] == pytest.approx(100_000 / max(g1["pe_cycles_per_year"], g2["pe_cycles_per_year"]))


# ------------------------------------------------------------------ ECC
def test_binomial_tail_equals_a_direct_sum():
    for n, t, p in ((31, 3, 0.02), (63, 6, 0.05), (15, 1, 1e-3)):
        direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(t + 1, n + 1))
        assert ecc.codeword_failure(n, t, p) == pytest.approx(direct, rel=1e-9)
    code = load_system("kvnand-d").flash.ecc
    assert ecc.codeword_bits(code) == (9088, 8192)
    p = ecc.rber_limit(code, 1e-15)
    assert ecc.uber(code, p) == pytest.approx(1e-15, rel=1e-6)
    assert ecc.expected_retries(code, 4096, p) == pytest.approx(4 * 8192e-15, rel=1e-3)
    cell = load_system("kvnand-d").flash.die.cell  # rber grows with each stress term
    assert ecc.rber(cell, 0, 0, 0) == cell.rber_fresh
    assert ecc.rber(cell, cell.pe_cycles, cell.read_disturb_limit, 0) == pytest.approx(
        cell.rber_fresh + cell.rber_pe_coeff + cell.rber_read_coeff)


# ------------------------------------------------------------------ mapping and the D split
def test_page_mapping_and_d_split_reduce_max_reads_per_block_llama31_8b_50k():
    reads = {(s, m): reliability(s, "llama3.1-8b", 50_000, mapping=m, overrides=RATE)["max_reads_per_block"]
             for s in ("kvnand-c16", "kvnand-d") for m in ("naive", "page")}
    naive_c, page_c = reads[("kvnand-c16", "naive")], reads[("kvnand-c16", "page")]
    naive_d, page_d = reads[("kvnand-d", "naive")], reads[("kvnand-d", "page")]
    print(f"\nmax reads per KV block, llama3.1-8b @50k, continuous: C naive {naive_c:.4g}, C page {page_c:.4g}, "
          f"D naive {naive_d:.4g}, D page {page_d:.4g}; naive-C/page-C {naive_c / page_c:.2f}x, "
          f"naive-C/D {naive_c / page_d:.2f}x, naive-D/D {naive_d / page_d:.1f}x")
    # head-parallel C reads a naive page once per (layer, K|V): 2 phases share each 16-unit page
    assert naive_c == 768 * 2 * 1000
    assert naive_c / page_c == pytest.approx(2.0, rel=0.02) and naive_c / page_d == pytest.approx(2.0, rel=0.02)
    # head-group pipelining reads a naive page once per head: 16 per step
    assert naive_d / page_d == pytest.approx(16.0, rel=0.02)
    # a page-level block never exceeds pages_per_block x decode steps
    assert max(page_c, page_d) <= 768 * 1000


def test_refresh_overhead_per_token():
    for system in ("kvnand-c16", "kvnand-d"):
        o = refresh_overhead(system, "llama3.1-8b", 10_000, overrides=RATE)
        assert set(o) >= {"seconds_per_token", "joules_per_token", "programs_per_token", "refreshes_per_day"}
        # no KV block reaches 10^6 reads; a weight block of 768 pages read (1 + 1/1000) times per token is
        # rewritten every 10^6 / 768.8 tokens (partial blocks at each plane's end: within 3 %)
        m = load_model("llama3.1-8b")
        weight_pages = (m.params - m.vocab * m.hidden) * 2 / 4096  # all but the (untied, cold) embedding
        assert o["programs_per_token"] == pytest.approx(weight_pages * 768 * 1.001 / 1e6, rel=0.03)
        assert o["refreshes_per_day"] == pytest.approx(o["erases_per_token"] * 10 * SECONDS_PER_DAY)
        assert 0 < o["seconds_per_token"] < 0.01 and 0 < o["joules_per_token"] < 0.1


def test_weight_blocks_follow_expert_routing():
    w = workload("kvnand-c16", "mixtral-8x7b", 1000, overrides=RATE)
    weights = w.groups[0].weights
    rates = sorted({round(r / p - 1 / 1000, 6) for r, p in zip(weights.reads, weights.pages, strict=True)})
    assert rates == [0.25, 1.0]  # expert pages at top_k/experts = 2/8, the rest every step
    assert heads_per_phase(w.system, w.model) == 8


def test_profiles_and_sessions():
    s = session(get_profile("chat"), 8000)
    assert s.turns[0] == (700, 1000) and s.turns[-1] == (7700, 8000) and s.decode_steps == 8 * 300
    assert session(get_profile("continuous"), 128).turns == ((0, 128),)  # output capped at the context
    for bad in ({"profile.turns": 0}, {"profile.nope": 1}, {"profile.years": "x"}):
        with pytest.raises(InputError):
            get_profile("chat", bad)


# ------------------------------------------------------------------ CLI
@pytest.fixture
def run(kvnand_cli):
    return lambda *args: kvnand_cli("reliability", *args)


def test_cli_json(run):
    code, out, err = run("--systems", "kvnand-d,base1", "--contexts", "10k", "--set", "profile.tokens_per_s=10",
                         "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "kvnand.reliability/1"
    keys = {"system", "model", "context", "mapping", "max_reads_per_block", "read_disturb_limit",
            "refreshes_per_day", "pe_cycles_per_year", "lifetime_years", "uber"}
    d, base1 = doc["results"]
    assert keys <= set(d) and d["mapping"] == "page" and d["max_reads_per_block"] > 0
    assert base1["mapping"] is None and base1["max_reads_per_block"] is None  # KV in DRAM
    assert base1["pe_cycles_per_year"] > 0  # its weights still wear by refresh
    code, out, _ = run("--systems", "kvnand-c16", "--contexts", "1k", "--set", "profile.tokens_per_s=10")
    assert code == 0 and "kvnand-c16" in out


@pytest.mark.parametrize("args, key", [
    (("--profile", "weekend"), "profile"),
    (("--mapping", "random"), "--mapping"),
    (("--systems", "kvnand-x"), "--systems"),
    (("--set", "refresh.trigger=sometimes"), "refresh.trigger"),
])
def test_cli_bad_input_exits_2_naming_the_key(run, args, key):
    code, out, err = run(*args)
    assert code == 2 and f"key '{key}'" in err and "Traceback" not in err


# ------------------------------------------------------------------ one count of KV page reads
@pytest.mark.parametrize("system", ["kvnand-c16", "kvnand-d", "base2", "csd-offload"])
@pytest.mark.parametrize("mapping", ["page", "naive"])
def test_timing_energy_and_read_disturb_use_the_same_kv_page_reads(system, mapping):
    """The page reads of one decode step at context L, counted three ways: the attention tasks' items (time),
    the sensed KV bits (energy) and the per-block reads of a one-step session (read disturb)."""
    import kvnand
    from kvnand.evaluation import kv_page_reads
    from kvnand.lowering.step import Lowering
    from kvnand.program import Task
    from kvnand.reliability.disturb import _groups
    from kvnand.workload.precision import get_precision

    L, model = 3000, "llama3.1-8b"
    r = kvnand.evaluate(system, model, L, overrides={"mapping": mapping})
    km = r["kv_mapping"]
    cfg = load_system(system, {"mapping": mapping})
    spec, prec = load_model(model), get_precision(cfg.default_precision)
    b = Lowering(cfg, spec, prec, L)
    page_bits = 8 * b.kvgroup.page_bytes
    # energy: the priced sensed-bit action
    assert r["actions"][b.kv_sense_action()] / page_bits == pytest.approx(km["page_reads_per_token"], rel=1e-12)
    assert kv_page_reads(r["actions"], b) == {k: km[k] for k in kv_page_reads(r["actions"], b)}
    # time: the busiest-plane items of the attention tasks, summed over the step
    items: list = []

    def walk(node, k):
        if isinstance(node, Task):
            if node.stage == "attention" and node.name in ("logit", "attend", "csd.attention"):
                items.append(node.items * k)
        elif hasattr(node, "parts"):
            for p in node.parts:
                walk(p, k)
        elif hasattr(node, "body"):
            walk(node.body, k * node.n)
        else:
            walk(node.a, k * node.n)
            walk(node.b, k * node.n)

    walk(b.decode_step(), 1)
    if system != "csd-offload":  # the drive streams K and V as one burst of 2 x busiest pages
        assert sum(items) == pytest.approx(km["busiest_plane_page_reads_per_token"], rel=1e-12)
    # read disturb: every KV block's reads in a session of one decode step at context L
    one_step = Session(((L, L + 1),), L + 1)
    kv = next(g.kv for g in _groups(Lowering(cfg, spec, prec, one_step.context), cfg, spec, prec, one_step)
              if g.kv is not None)
    assert float((kv.reads * kv.count).sum()) == pytest.approx(km["page_reads_per_token"], rel=1e-9)
