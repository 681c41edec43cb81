"""The model zoo and config.json loader: published sizes, KV per token, precisions, GQA/MQA, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvnand.errors import InputError
from kvnand.workload.model import FAMILIES, load_model, models_record, zoo_names
from kvnand.workload.precision import PRECISIONS, get_precision

B, KiB = 1e9, 1024

# each model's published config.json: params, layers, heads, kv heads, head dim, KV per token at 16 bit.
PUBLISHED = {
    "llama2-7b": (6.74 * B, 32, 32, 32, 128, 512 * KiB),
    "llama2-13b": (13.0 * B, 40, 40, 40, 128, 800 * KiB),
    "llama2-70b": (69.0 * B, 80, 64, 8, 128, 320 * KiB),
    "llama3.1-8b": (8.03 * B, 32, 32, 8, 128, 128 * KiB),
    "llama3.1-70b": (70.6 * B, 80, 64, 8, 128, 320 * KiB),
    "mixtral-8x7b": (46.7 * B, 32, 32, 8, 128, 128 * KiB),
    "opt-6.7b": (6.7 * B, 32, 32, 32, 128, 512 * KiB),
    "opt-13b": (13 * B, 40, 40, 40, 128, 800 * KiB),
    "opt-30b": (30 * B, 48, 56, 56, 128, 1344 * KiB),
    "opt-66b": (66 * B, 64, 72, 72, 128, 2304 * KiB),
    "opt-1.3b": (1.3 * B, 24, 32, 32, 64, 192 * KiB),  # facebook/opt-1.3b config.json (the Lincoln draft stand-in)
}

# "13 B" is OPT's nominal name (two significant digits); the checkpoint holds 12.85 B parameters, which
# the exact pin below asserts. Everything else is held to 1 %.
PARAMS_TOLERANCE = {"opt-13b": 0.012, "opt-1.3b": 0.015}

# Exact counts, hand-derived from the shapes (and matching the counts HF reports for these checkpoints).
EXACT_PARAMS = {
    "llama2-7b": 6_738_415_616,
    "llama3.1-8b": 8_030_261_248,
    "mixtral-8x7b": 46_702_792_704,
    "opt-6.7b": 6_658_473_984,
    "opt-13b": 12_853_473_280,
    "opt-1.3b": 1_315_758_080,  # 50272 x 2048 + 2050 x 2048 + 24 x 50_358_272 + 4096
}


def write_config(tmp_path, cfg: dict, name: str = "config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg, indent=2))
    return path


def test_zoo_holds_the_paper_set():
    # the attention-variant and MoE families are checked in test_model_families.py
    assert set(PUBLISHED) <= set(zoo_names())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_zoo_model_matches_published_sizes(name):
    params, layers, heads, kv_heads, head_dim, kv_bytes = PUBLISHED[name]
    spec = load_model(name)
    assert spec.name == name
    assert spec.params == pytest.approx(params, rel=PARAMS_TOLERANCE.get(name, 0.01))
    assert (spec.layers, spec.heads, spec.kv_heads, spec.head_dim) == (layers, heads, kv_heads, head_dim)
    assert spec.kv_bytes_per_token("bf16") == kv_bytes
    if name in EXACT_PARAMS:
        assert spec.params == EXACT_PARAMS[name]
    if not spec.is_moe:
        assert spec.active_params == spec.params


def test_mixtral_active_params_and_experts():
    spec = load_model("mixtral-8x7b")
    assert spec.active_params == pytest.approx(12.9 * B, rel=0.01)
    assert spec.active_params == 12_879_925_248
    assert (spec.family, spec.experts, spec.top_k) == ("mixtral", 8, 2)
    by_name = {m.name: m for m in spec.matrices()}
    assert [m.name for m in spec.matrices()] == ["q", "k", "v", "o", "router", "gate", "up", "down"]
    for expert in ("gate", "up", "down"):
        assert (by_name[expert].experts, by_name[expert].active) == (8, 2)
    assert (by_name["router"].in_dim, by_name["router"].out_dim, by_name["router"].experts) == (4096, 8, 1)
    assert (by_name["k"].out_dim, by_name["q"].out_dim) == (8 * 128, 32 * 128)


def test_layer_matrices_dense_families():
    llama = load_model("llama3.1-8b")
    assert [(m.name, m.in_dim, m.out_dim, m.bias) for m in llama.matrices()] == [
        ("q", 4096, 4096, False), ("k", 4096, 1024, False), ("v", 4096, 1024, False),
        ("o", 4096, 4096, False), ("gate", 4096, 14336, False), ("up", 4096, 14336, False),
        ("down", 14336, 4096, False)]
    opt = load_model("opt-6.7b")
    assert [(m.name, m.in_dim, m.out_dim, m.bias) for m in opt.matrices()] == [
        ("q", 4096, 4096, True), ("k", 4096, 4096, True), ("v", 4096, 4096, True),
        ("o", 4096, 4096, True), ("fc1", 4096, 16384, True), ("fc2", 16384, 4096, True)]
    assert (opt.mlp, opt.tied_embeddings, opt.max_positions) == ("relu", True, 2048)
    assert [m.name for m in opt.outer_matrices()] == ["lm_head"]


def test_zoo_configs_are_hf_shaped():
    # The zoo files are plain HF config.json files: the fields HF itself would read are there.
    for name in zoo_names():
        cfg = json.loads(Path(load_model(name).source).read_text())
        assert cfg["model_type"] in FAMILIES and cfg["architectures"] and "torch_dtype" in cfg


# ---- configs outside the zoo, written here (hand-checked counts in the comments) ----

QWEN2_05B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
    "intermediate_size": 4864, "num_attention_heads": 14, "num_key_value_heads": 2,
    "num_hidden_layers": 24, "vocab_size": 151936, "max_position_embeddings": 32768,
    "tie_word_embeddings": True, "rope_theta": 1000000.0, "torch_dtype": "bfloat16",
}
MISTRAL_7B = {
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "vocab_size": 32000, "max_position_embeddings": 32768,
    "sliding_window": 4096, "tie_word_embeddings": False, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
}
OPT_350M = {  # post-LN, 512-wide embeddings with project_in/out
    "architectures": ["OPTForCausalLM"], "model_type": "opt", "hidden_size": 1024, "ffn_dim": 4096,
    "num_attention_heads": 16, "num_hidden_layers": 24, "vocab_size": 50272,
    "word_embed_proj_dim": 512, "max_position_embeddings": 2048, "do_layer_norm_before": False,
    "activation_function": "relu", "torch_dtype": "float16",
}


def test_qwen2_has_qkv_biases_and_tied_embeddings(tmp_path):
    spec = load_model(write_config(tmp_path, QWEN2_05B))
    assert (spec.family, spec.head_dim, spec.kv_heads, spec.tied_embeddings) == ("qwen2", 64, 2, True)
    assert {m.name for m in spec.matrices() if m.bias} == {"q", "k", "v"}
    # embed 151936*896 = 136,134,656 (tied: once); per layer q 896*896+896, k,v 896*128+128 each,
    # o 896*896, MLP 3*896*4864, two RMSNorms 2*896 -> 14,912,384; 24 layers; final norm 896.
    assert spec.params == 136_134_656 + 24 * 14_912_384 + 896 == 494_032_768
    assert spec.kv_bytes_per_token("bf16") == 2 * 24 * 2 * 64 * 2


def test_mistral_7b(tmp_path):
    spec = load_model(write_config(tmp_path, MISTRAL_7B))
    # embed + LM head 2*32000*4096; per layer 41,943,040 attention + 176,160,768 MLP + 8192 norms.
    assert spec.params == 262_144_000 + 32 * 218_112_000 + 4096 == 7_241_732_096
    assert not spec.bias and spec.kv_bytes_per_token("bf16") == 128 * KiB


def test_opt_project_in_out_and_post_ln(tmp_path):
    spec = load_model(write_config(tmp_path, OPT_350M))
    assert [m.name for m in spec.outer_matrices()] == ["project_in", "project_out", "lm_head"]
    assert spec.outer_matrices()[-1].in_dim == 512 and not spec.final_norm
    # tokens 50272*512, positions 2050*1024, project_in/out 2*512*1024 (no bias), per layer:
    # 4*(1024^2+1024) + (1024*4096+4096) + (4096*1024+1024) + two LayerNorms 4*1024 = 12,596,224.
    assert spec.params == 25_739_264 + 2_099_200 + 1_048_576 + 24 * 12_596_224 == 331_196_416


def test_a_folder_holding_config_json_is_named_after_the_folder(tmp_path):
    folder = tmp_path / "Mistral-7B-v0.1"
    folder.mkdir()
    write_config(folder, MISTRAL_7B)
    assert load_model(folder).name == "Mistral-7B-v0.1"
    assert load_model(str(folder / "config.json")).name == "Mistral-7B-v0.1"
    assert load_model(write_config(tmp_path, MISTRAL_7B, "my-mistral.json")).name == "my-mistral"


def test_explicit_head_dim_wins(tmp_path):
    # Mistral-NeMo style: head_dim is not hidden / heads.
    spec = load_model(write_config(tmp_path, {**MISTRAL_7B, "hidden_size": 5120, "head_dim": 128}))
    q = spec.matrices()[0]
    assert (spec.head_dim, q.in_dim, q.out_dim) == (128, 5120, 4096)


@pytest.mark.parametrize("kv_heads", [1, 4, 32])
def test_gqa_and_mqa(tmp_path, kv_heads):
    cfg = {**MISTRAL_7B, "num_key_value_heads": kv_heads}
    spec = load_model(write_config(tmp_path, cfg))
    k = spec.matrices()[1]
    assert (spec.kv_heads, k.out_dim) == (kv_heads, kv_heads * 128)
    assert spec.kv_bytes_per_token("bf16") == 2 * 32 * kv_heads * 128 * 2
    # only k and v shrink with fewer KV heads
    assert spec.params == 7_241_732_096 - 32 * 2 * 4096 * (8 - kv_heads) * 128


def test_kv_heads_default_to_heads(tmp_path):
    cfg = {k: v for k, v in MISTRAL_7B.items() if k != "num_key_value_heads"}
    assert load_model(write_config(tmp_path, cfg)).kv_heads == 32
    assert load_model(write_config(tmp_path, {**cfg, "num_key_value_heads": None})).kv_heads == 32


# ---- precisions ----

@pytest.mark.parametrize("name", ["llama2-7b", "mixtral-8x7b", "opt-30b"])
def test_precision_scales_weights_and_kv(name):
    spec = load_model(name)
    bf16, w8a8, w4a16 = (PRECISIONS[p] for p in ("bf16", "w8a8", "w4a16"))
    assert spec.weight_bytes(bf16) == 2 * spec.params
    assert spec.weight_bytes(w8a8) == spec.weight_bytes(bf16) / 2
    assert spec.kv_bytes_per_token(w8a8) == spec.kv_bytes_per_token(bf16) / 2
    assert spec.weight_bytes(w4a16) == spec.weight_bytes(bf16) / 4
    assert spec.kv_bytes_per_token(w4a16) == spec.kv_bytes_per_token(bf16)


def test_precision_table_and_lookup():
    assert get_precision("w8a8").mac_kind == "int8"
    assert get_precision("W4A16") is PRECISIONS["w4a16"]
    assert get_precision(PRECISIONS["bf16"]) is PRECISIONS["bf16"]
    with pytest.raises(InputError) as err:
        get_precision("fp8")
    assert err.value.key == "precision" and err.value.allowed == "bf16, w8a8, w4a16"


def test_models_record():
    record = models_record(load_model("llama3.1-8b"), "w8a8")
    assert record == {
        "name": "llama3.1-8b", "family": "llama", "params": 8_030_261_248, "active_params": 8_030_261_248,
        "layers": 32, "heads": 32, "kv_heads": 8, "head_dim": 128, "weight_bytes": 8_030_261_248,
        "kv_bytes_per_token": 64 * KiB, "attention": "GQA-4", "kv_bytes_per_token_layer": 2 * KiB, "windows": [],
        "max_context": 131072,
    }
    json.dumps(record)  # the CLI emits it as is


# ---- errors: always InputError naming the file and the key ----

def test_unknown_zoo_name_lists_the_zoo():
    with pytest.raises(InputError) as err:
        load_model("llama9-1t")
    assert err.value.key == "model" and "llama2-7b" in str(err.value) and "mixtral-8x7b" in str(err.value)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope" / "config.json"
    with pytest.raises(InputError, match="not found") as err:
        load_model(str(missing))
    assert str(missing) in str(err.value)


def test_malformed_json_gives_line_and_column(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096\n  "vocab_size": 32000\n}\n')
    with pytest.raises(InputError) as err:
        load_model(path)
    assert err.value.line == 4 and f"{path}:4" in str(err.value) and "column 3" in str(err.value)


def test_json_that_is_not_an_object(tmp_path):
    with pytest.raises(InputError, match="JSON object"):
        load_model(write_config(tmp_path, [1, 2, 3]))


BAD_CONFIGS = {
    "unknown model_type": ({**MISTRAL_7B, "model_type": "gpt2"}, "model_type"),
    "missing model_type": ({k: v for k, v in MISTRAL_7B.items() if k != "model_type"}, "model_type"),
    "missing key": ({k: v for k, v in MISTRAL_7B.items() if k != "intermediate_size"}, "intermediate_size"),
    "missing OPT ffn": ({k: v for k, v in OPT_350M.items() if k != "ffn_dim"}, "ffn_dim"),
    "missing experts": ({**MISTRAL_7B, "model_type": "mixtral"}, "num_local_experts"),
    "zero layers": ({**MISTRAL_7B, "num_hidden_layers": 0}, "num_hidden_layers"),
    "negative hidden": ({**MISTRAL_7B, "hidden_size": -4096}, "hidden_size"),
    "size as string": ({**MISTRAL_7B, "vocab_size": "32000"}, "vocab_size"),
    "size as bool": ({**MISTRAL_7B, "num_attention_heads": True}, "num_attention_heads"),
    "fractional size": ({**MISTRAL_7B, "intermediate_size": 14336.5}, "intermediate_size"),
    "heads not divisible": ({**MISTRAL_7B, "num_key_value_heads": 5}, "num_key_value_heads"),
    "hidden not divisible": ({**MISTRAL_7B, "num_attention_heads": 30, "num_key_value_heads": 30},
                             "num_attention_heads"),
    "top_k above experts": ({**MISTRAL_7B, "model_type": "mixtral", "num_local_experts": 2,
                             "num_experts_per_tok": 4}, "num_experts_per_tok"),
    "flag not bool": ({**MISTRAL_7B, "tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    "OPT activation": ({**OPT_350M, "activation_function": "swish"}, "activation_function"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_names_file_and_key(tmp_path, case):
    cfg, key = BAD_CONFIGS[case]
    path = write_config(tmp_path, cfg)
    with pytest.raises(InputError) as err:
        load_model(path)
    assert err.value.key == key and err.value.file == str(path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_unknown_model_type_lists_the_families(tmp_path):
    with pytest.raises(InputError) as err:
        load_model(write_config(tmp_path, {**MISTRAL_7B, "model_type": "gpt2"}))
    assert err.value.allowed == ", ".join(FAMILIES) and "'gpt2'" in str(err.value)


def test_importing_the_model_module_is_cheap():
    code = ("import sys, kvnand.workload; before = set(sys.modules); import kvnand.workload.model; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('numpy', 'pint')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
