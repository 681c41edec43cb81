"""Attention variants and MoE families read from config.json: parameter counts and KV bytes per token against
the published sizes, layer kinds (sliding windows, MLA, dense and MoE layers), honest limits, and two
properties: a window covering the context is full attention, and MLA's cost is that of its latent."""

from __future__ import annotations

import json

import pytest
from test_models import PUBLISHED as PAPER_ZOO

import kvnand
from kvnand.errors import InputError
from kvnand.workload.graph import layer_operators
from kvnand.workload.model import LayerKind, load_model, zoo_names

B, KiB = 1e9, 1024

# name: (HF repo, published total params and the band it is given to, published active or None,
#        exact total params hand-derived from the shapes, KV bytes per token at 16 bit, attention kind)
# Published sizes: the model cards (Qwen2.5-7B 7.61 B, Qwen3-8B 8.2 B, Qwen3-30B-A3B 30.5 B / 3.3 B
# activated, Phi-3-mini 3.8 B, DeepSeek-V2-Lite 15.7 B / 2.4 B activated, Llama-3.2-1B 1.23 B, Mistral-7B 7.24 B
# as HF reports it), Gemma 2's report (Table 2: 917,504,000 embedding + 8,324,201,984 non-embedding).
FAMILY_ZOO = {
    "qwen2.5-7b": ("Qwen/Qwen2.5-7B", 7.61 * B, 0.001, None, 7_615_616_512, 56 * KiB, "GQA-7"),
    "qwen3-8b": ("Qwen/Qwen3-8B", 8.2 * B, 0.01, None, 8_190_735_360, 144 * KiB, "GQA-4"),
    "qwen3-30b-a3b": ("Qwen/Qwen3-30B-A3B", 30.5 * B, 0.002, 3.3 * B, 30_532_122_624, 96 * KiB, "GQA-8"),
    "gemma2-9b": ("google/gemma-2-9b", 9_241_705_984, 0.0, None, 9_241_705_984, 336 * KiB,
                  "GQA-2, window 4096 on 21/42 layers"),
    "phi3-mini-4k": ("microsoft/Phi-3-mini-4k-instruct", 3.8 * B, 0.01, None, 3_821_079_552, 384 * KiB,
                     "MHA, window 2047 on 32/32 layers"),
    "deepseek-v2-lite": ("deepseek-ai/DeepSeek-V2-Lite", 15.7 * B, 0.001, 2.4 * B, 15_706_484_224, 31_104, "MLA"),
    "llama3.2-1b": ("meta-llama/Llama-3.2-1B", 1.23 * B, 0.005, None, 1_235_814_400, 32 * KiB, "GQA-4"),
    "mistral-7b-v0.1": ("mistralai/Mistral-7B-v0.1", 7.24 * B, 0.001, None, 7_241_732_096, 128 * KiB,
                        "GQA-4, window 4096 on 32/32 layers"),
}
# DeepSeek counts its activated parameters without the input embedding (a lookup); kvnand's active_params keep
# it in full, as for Mixtral's 12.9 B. Qwen's 3.3 B includes it.
ACTIVE_WITHOUT_EMBEDDING = {"deepseek-v2-lite"}


def write_config(tmp_path, cfg: dict, name: str = "config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg, indent=2))
    return path


def zoo_config(name: str) -> dict:
    return json.loads(load_model(name).source and open(load_model(name).source).read())


def test_zoo_is_the_published_set():
    assert zoo_names() == sorted(set(PAPER_ZOO) | set(FAMILY_ZOO))


@pytest.mark.parametrize("name", sorted(FAMILY_ZOO))
def test_family_zoo_matches_published_sizes(name):
    repo, published, band, active, exact, kv, attention = FAMILY_ZOO[name]
    spec = load_model(name)
    assert zoo_config(name)["_name_or_path"] == repo
    assert spec.params == exact
    assert spec.params == pytest.approx(published, rel=band)
    assert spec.kv_bytes_per_token("bf16") == kv
    assert spec.attention_kind == attention
    if active is None:
        assert spec.active_params == spec.params
    else:
        embedding = spec.vocab * spec.hidden if name in ACTIVE_WITHOUT_EMBEDDING else 0
        assert spec.active_params - embedding == pytest.approx(active, rel=0.025)


def test_qwen3_moe_many_small_experts():
    spec = load_model("qwen3-30b-a3b")
    assert (spec.experts, spec.top_k, spec.ffn) == (128, 8, 768)
    assert spec.layer_kinds == ((LayerKind(None, True), 48),)
    assert spec.active_params == 3_353_032_704
    # per-head q/k norms: 2 x head_dim weights per layer
    assert spec.qk_norm and spec.head_dim == 128 and spec.hidden == 2048


def test_deepseek_v2_lite_mla_and_moe_layers():
    spec = load_model("deepseek-v2-lite")
    assert spec.layer_kinds == ((LayerKind(None, False), 1), (LayerKind(None, True), 26))
    # the cache: one latent of kv_lora_rank + qk_rope_head_dim = 576 values per layer, for all 16 heads
    assert (spec.kv_heads, spec.head_dim, spec.kv_streams) == (1, 576, 1)
    assert spec.kv_bytes_per_token_layer("bf16") == 576 * 2
    by_name = {m.name: m for m in spec.matrices()}
    assert [m.name for m in spec.matrices()] == ["q", "kv_a", "k_up", "v_up", "o", "router", "shared_gate",
                                                  "shared_up", "shared_down", "gate", "up", "down"]
    assert (by_name["shared_up"].out_dim, by_name["up"].experts, by_name["up"].active) == (2 * 1408, 64, 6)
    assert [m.name for m in spec.matrices(moe=False)][-3:] == ["gate", "up", "down"]
    assert spec.matrices(moe=False)[-1].in_dim == 10944


# DeepSeek-V3 (deepseek-ai/DeepSeek-V3 config.json, the fields the loader reads): not shipped, 1.3 TB at 16 bit
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
    "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256, "num_experts_per_tok": 8,
    "first_k_dense_replace": 3, "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "topk_method": "noaux_tc",
    "vocab_size": 129280, "max_position_embeddings": 163840, "tie_word_embeddings": False,
    "num_nextn_predict_layers": 1, "torch_dtype": "bfloat16",
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
}


def test_deepseek_v3_sizes_and_latent_kv(tmp_path):
    spec = load_model(write_config(tmp_path, DEEPSEEK_V3))
    # 671 B main model (the 14 B multi-token-prediction module is not part of decoding): hand count
    # embedding + head 2 x 129280 x 7168, 3 dense layers of 583,483,392, 58 MoE layers of 11,507,286,272
    # (router with its e_score_correction_bias), final norm
    assert spec.params == 1_853_358_080 + 3 * 583_483_392 + 58 * 11_507_286_272 + 7168
    assert spec.params == pytest.approx(671 * B, rel=0.001)
    assert spec.active_params - spec.vocab * spec.hidden == pytest.approx(37 * B, rel=0.025)
    # DeepSeek-V2 paper: (d_c + d_h^R) x l elements per token = (512 + 64) x 61
    assert spec.kv_bytes_per_token("bf16") == 576 * 61 * 2 == 70_272
    assert {m.name for m in spec.matrices()} >= {"q_a", "q_b", "kv_a", "k_up", "v_up"}
    assert spec.attention_kind == "MLA" and spec.max_context == 163840


def test_gemma2_alternates_local_and_global_layers():
    spec = load_model("gemma2-9b")
    assert spec.windows[:4] == (4096, None, 4096, None)  # even layers slide (HF Gemma2: not layer_idx % 2)
    assert (spec.tied_embeddings, spec.head_dim, spec.hidden // spec.heads) == (True, 256, 224)
    unit = 2 * 8 * 256 * 2
    assert spec.kv_bytes_per_token_layer("bf16") == unit
    # at 100K the 21 local layers keep 4096 tokens, the 21 global ones all of them
    assert spec.kv_bytes("bf16", 100_000) == 21 * unit * 100_000 + 21 * unit * 4096
    assert spec.kv_bytes("bf16", 4096) == spec.kv_bytes_per_token("bf16") * 4096


def test_sliding_window_per_family(tmp_path):
    mistral = zoo_config("mistral-7b-v0.1")
    assert load_model("mistral-7b-v0.1").windows == (4096,) * 32
    assert load_model(write_config(tmp_path, {**mistral, "sliding_window": None})).windows == ()
    # Qwen: the window applies only with use_sliding_window, from max_window_layers on
    qwen = zoo_config("qwen2.5-7b")
    assert load_model("qwen2.5-7b").windows == ()
    spec = load_model(write_config(tmp_path, {**qwen, "use_sliding_window": True, "sliding_window": 4096,
                                              "max_window_layers": 20}))
    assert spec.windows == (None,) * 20 + (4096,) * 8
    # layer_types, when the config lists them, win over the family's rule
    types = ["full_attention", "sliding_attention"] * 16
    spec = load_model(write_config(tmp_path, {**mistral, "layer_types": types}))
    assert spec.windows == (None, 4096) * 16
    # Gemma-3: every sliding_window_pattern-th layer is global
    gemma3 = {**zoo_config("gemma2-9b"), "model_type": "gemma3_text", "num_hidden_layers": 12,
              "sliding_window": 1024, "sliding_window_pattern": 6}
    spec = load_model(write_config(tmp_path, gemma3))
    assert spec.windows == ((1024,) * 5 + (None,)) * 2 and spec.qk_norm


def test_phi3_reads_like_its_fused_checkpoint():
    # qkv_proj and gate_up_proj are fused in the checkpoint: the same weights as q|k|v and gate|up
    spec = load_model("phi3-mini-4k")
    assert [m.name for m in spec.matrices()] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert not spec.bias and spec.max_context == 4096


def test_context_limits():
    assert load_model("llama3.2-1b").max_context == 131072  # llama3 scaling: max_position_embeddings says it
    assert load_model("deepseek-v2-lite").max_context == 40 * 4096  # YaRN factor x original
    assert load_model("gemma2-9b").max_context == 8192


def test_context_beyond_the_model_is_flagged(kvnand_cli):
    r = kvnand.evaluate("kvnand-c16", "mistral-7b-v0.1", 100_000)
    assert r["beyond_model_context"] and r["model_max_context"] == 32768
    assert not kvnand.evaluate("kvnand-c16", "mistral-7b-v0.1", 32768)["beyond_model_context"]
    code, out, _ = kvnand_cli("report", "--systems", "kvnand-c16", "--models", "mistral-7b-v0.1,qwen2.5-7b",
                              "--contexts", "1k,100k")
    assert code == 0
    assert "warning: beyond the model's max_position_embeddings" in out
    assert "  mistral-7b-v0.1 (max 32768) at 100k\n" in out and "qwen2.5-7b (max" not in out


def test_models_command_lists_attention_and_kv(kvnand_cli):
    code, out, _ = kvnand_cli("models", "--format", "json")
    records = {r["name"]: r for r in json.loads(out)["models"]}
    assert code == 0 and records["deepseek-v2-lite"]["attention"] == "MLA"
    assert records["gemma2-9b"]["windows"] == [4096] and records["gemma2-9b"]["kv_bytes_per_token_layer"] == 8 * KiB
    code, out, _ = kvnand_cli("models")
    for name in FAMILY_ZOO:
        assert name in out
    assert "MLA" in out and "window 4096" in out


BAD = {
    "MLA without its latent": ({"kv_lora_rank": None}, "kv_lora_rank"),
    "MoE without expert width": ({"moe_intermediate_size": None}, "moe_intermediate_size"),
    "negative dense layers": ({"first_k_dense_replace": -1}, "first_k_dense_replace"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_family_config_names_the_key(tmp_path, case):
    change, key = BAD[case]
    path = write_config(tmp_path, {**zoo_config("deepseek-v2-lite"), **change})
    with pytest.raises(InputError) as err:
        load_model(path)
    assert err.value.key == key and str(path) in str(err.value)


def test_layer_types_must_cover_every_layer(tmp_path):
    path = write_config(tmp_path, {**zoo_config("mistral-7b-v0.1"), "layer_types": ["full_attention"] * 3})
    with pytest.raises(InputError) as err:
        load_model(path)
    assert err.value.key == "layer_types" and "per layer (32)" in str(err.value)


def test_unknown_family_names_what_is_known(tmp_path):
    path = write_config(tmp_path, {**zoo_config("mistral-7b-v0.1"), "model_type": "falcon_h1"})
    with pytest.raises(InputError) as err:
        load_model(path)
    assert "'falcon_h1'" in str(err.value) and "deepseek_v2" in err.value.allowed


# ---- properties ----

# every cost of the point (max_context differs: a windowed model's cache stops growing at its window)
NUMBERS = ("latency_s", "energy_j_per_token", "ttft_s", "breakdown_s", "busy_s", "capacity", "actions")


@pytest.mark.parametrize("system", ["kvnand-c16", "kvnand-d", "base1", "base2", "csd-offload"])
@pytest.mark.parametrize("context", [1000, 4096])
def test_window_covering_the_context_is_full_attention(tmp_path, system, context):
    cfg = zoo_config("mistral-7b-v0.1")
    full = write_config(tmp_path, {**cfg, "sliding_window": None}, "full.json")
    windowed = write_config(tmp_path, {**cfg, "sliding_window": context}, "windowed.json")
    a, b = kvnand.evaluate(system, str(full), context), kvnand.evaluate(system, str(windowed), context)
    assert {k: a[k] for k in NUMBERS} == {k: b[k] for k in NUMBERS}
    assert a.get("kv_mapping") == b.get("kv_mapping")


def test_window_shorter_than_the_context_reads_only_the_window(tmp_path):
    cfg = zoo_config("mistral-7b-v0.1")
    windowed = str(write_config(tmp_path, cfg, "windowed.json"))
    at_window = str(write_config(tmp_path, {**cfg, "sliding_window": None}, "full.json"))
    a, b = kvnand.evaluate("kvnand-d", windowed, 100_000), kvnand.evaluate("kvnand-d", at_window, 4096)
    # the step at 100K reads what the full model reads at 4096 tokens; only capacity and prefill differ
    assert a["latency_s"] == pytest.approx(b["latency_s"], rel=1e-12)
    assert a["kv_mapping"]["useful_kv_bytes_per_token"] == b["kv_mapping"]["useful_kv_bytes_per_token"]
    assert a["capacity"] == b["capacity"]  # a windowed layer holds at most the window


def test_mla_attention_is_mqa_over_the_latent():
    """Absorbed MLA reads one latent per token for all heads: its Logit is an MQA Logit of head_dim = latent,
    its Attend multiplies the probabilities with the compressed part only; both read the latent."""
    spec = load_model("deepseek-v2-lite")
    ops = {o.name: o for o in layer_operators(spec, "bf16", 1000)}
    assert ops["logit"].macs == 16 * 576 * 1000 and ops["attend"].macs == 16 * 512 * 1000
    assert ops["logit"].kv_bytes == ops["attend"].kv_bytes == 576 * 2 * 1000
    assert ops["kv_append"].kv_bytes == 576 * 2
    # absorbed projections: the weights of kv_b_proj, once per token
    assert ops["q_absorb"].macs + ops["v_absorb"].macs == 512 * 16 * (128 + 128)
    # a prefill makes per-head K and V once per prompt token and attends expanded
    assert spec.prefill_macs_per_key == 16 * (128 + 64 + 128) < spec.attn_macs_per_key == 16 * (576 + 512)


@pytest.mark.parametrize("system", ["kvnand-c16", "kvnand-d", "base1", "base2", "csd-offload"])
def test_mla_latent_expanded_to_heads_costs_what_mha_costs(tmp_path, system):
    """With the latent expanded to per-head K and V (the non-absorbed cache), MLA's attention is the attention
    of the MHA model of that geometry: the same KV layout, capacity growth, page reads, time and actions. The
    absorbed latent is 7x smaller, read 3.6x less, at 4.25x the MACs. (K and V heads of one width: qk_nope 64 +
    rope 64 = v 128.)"""
    from kvnand.config.loader import load_system
    from kvnand.lowering.step import Lowering, heads_per_phase
    from kvnand.program import Loop, count_actions
    from kvnand.sim import fast
    from kvnand.workload.precision import get_precision

    cfg = {**zoo_config("deepseek-v2-lite"), "qk_nope_head_dim": 64}
    mla = load_model(write_config(tmp_path, cfg, "mla.json"))
    mha = load_model(write_config(tmp_path, {
        **zoo_config("mistral-7b-v0.1"), "sliding_window": None, "num_hidden_layers": 27, "hidden_size": 2048,
        "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 128}, "mha.json"))
    s, p, ctx = load_system(system), get_precision("bf16"), 10_000

    def attention(spec):
        """KV layout, and time, actions and NPU rounds of the attention of one layer (all its head groups)"""
        lw = Lowering(s, spec, p, ctx)
        hp = heads_per_phase(s, spec)
        prog = Loop(lw.attention(hp), spec.kv_heads // hp)
        return lw.layout, fast.evaluate(prog).time, count_actions(prog).actions, lw.logit_rounds()

    expanded = mla.expanded()
    assert expanded.kv_growth(p) == mha.kv_growth(p) and expanded.attention_kind == "MLA expanded to MHA"
    assert attention(expanded) == attention(mha)
    # absorbed: 576 values per token and layer instead of 16 x 2 x 128
    assert mha.kv_bytes_per_token(p) / mla.kv_bytes_per_token(p) == pytest.approx(16 * 2 * 128 / 576)
    # ... but Logit and Attend each read the latent (softmax sits between them), where MHA reads K once and V
    # once: 2 x 576 against 2 x 16 x 128 values read, at 16 x (576 + 512) MACs per token instead of 16 x 2 x 128
    read = ("flash.kv_sense_bits", "dram.bits", "nand.sense_bits", "csd.sense_bits")
    macs = ("flash.macs", "npu.ops", "csd.macs")
    a, b = attention(mla)[2], attention(mha)[2]
    assert sum(a.get(k, 0) for k in read) / sum(b.get(k, 0) for k in read) == pytest.approx(576 / 2048, rel=0.01)
    assert sum(a.get(k, 0) for k in macs) / sum(b.get(k, 0) for k in macs) == pytest.approx(1088 / 256, rel=0.01)


def test_graph_shows_each_layer_kind(kvnand_cli, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = kvnand_cli("graph", "gemma2-9b", "--context", "100000")
    assert code == 0 and out.count("x21 layers") == 2
    assert "(window 4096, dense FFN)" in out and "(full context, dense FFN)" in out
    code, out, _ = kvnand_cli("graph", "llama3.1-8b")
    assert code == 0 and "x32 layers" in out and "dense FFN" not in out
