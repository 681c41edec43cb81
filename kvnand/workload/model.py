"""Model specs from Hugging Face config.json files: shapes, parameter counts, bytes and layer matrices.

Owns the model zoo (`arch_configs/models/*.json`, named by file stem) and reading any HF config.json of
the llama, mistral, mixtral, qwen2 and opt families. Every problem with a config file is reported as
an InputError naming the file and the key; raw KeyError/JSONDecodeError never escape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from kvnand import paths
from kvnand.errors import InputError
from kvnand.workload.precision import Precision, get_precision

FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "opt")


@dataclass(frozen=True)
class Matrix:
    """One weight matrix (y = x @ W, W is in_dim x out_dim), optionally with a bias vector.

    `experts` copies are stored and `count_per_token` of them are applied to each token: 1 and 1 for
    a dense matrix, num_experts and top_k for an MoE expert matrix.
    """

    name: str
    in_dim: int
    out_dim: int
    count_per_token: int = 1
    experts: int = 1
    bias: bool = False

    @property
    def active(self) -> int:
        return self.count_per_token

    @property
    def params_per_copy(self) -> int:
        return self.in_dim * self.out_dim + (self.out_dim if self.bias else 0)

    @cached_property
    def params(self) -> int:
        return self.experts * self.params_per_copy

    @cached_property
    def active_params(self) -> int:
        return self.count_per_token * self.params_per_copy


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer, as far as the hardware model needs it.

    Parameter counting (`params`) includes every stored tensor: the token embedding, OPT's learned
    positions (max_positions + 2 rows, HF's offset of 2) and project_in/out, every decoder layer
    (attention, MLP or all MoE experts, router, biases, norms: RMSNorm = hidden, LayerNorm = 2 * hidden
    weights), the final norm and the LM head (counted once when tied to the embedding). These match
    the published sizes (LLaMA2-7B 6.74 B, Mixtral 46.7 B, ...).

    `active_params` is the same count with only `top_k` experts per layer; the embedding and LM head
    stay in full although decode reads one embedding row. That is the convention behind Mixtral's
    "12.9 B active"; for dense models active_params == params.
    """

    name: str
    family: str  # one of FAMILIES
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int  # intermediate size of the dense MLP, or of one expert
    mlp: str  # "swiglu" (gate, up, down) or "relu" / "gelu" (OPT fc1, fc2)
    vocab: int
    tied_embeddings: bool
    bias: bool  # some linear layer carries a bias
    experts: int  # 1 for dense
    top_k: int  # 1 for dense
    max_positions: int
    source: str  # the config.json it came from
    embed_dim: int | None = None  # OPT word_embed_proj_dim; None means hidden
    final_norm: bool = True  # post-LN OPT (do_layer_norm_before false) has no final LayerNorm
    bias_on: frozenset[str] | None = None  # matrices with a bias when `bias`; None means all of them

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def token_embed_dim(self) -> int:
        return self.embed_dim or self.hidden

    @property
    def _norm_params(self) -> int:
        # OPT uses LayerNorm (weight + bias); the other families use RMSNorm (weight only).
        return 2 * self.hidden if self.family == "opt" else self.hidden

    def _has_bias(self, name: str) -> bool:
        return self.bias and (self.bias_on is None or name in self.bias_on)

    def _matrix(self, name: str, in_dim: int, out_dim: int, copies: int = 1, per_token: int = 1) -> Matrix:
        return Matrix(name, in_dim, out_dim, per_token, copies, self._has_bias(name))

    def matrices(self) -> list[Matrix]:
        """The weight matrices of one decoder layer, in execution order."""
        return list(self._matrices)

    @cached_property
    def _matrices(self) -> tuple[Matrix, ...]:  # computed once: every capacity check and program asks
        h, q_dim, kv_dim = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        out = [self._matrix("q", h, q_dim), self._matrix("k", h, kv_dim), self._matrix("v", h, kv_dim),
               self._matrix("o", q_dim, h)]
        if self.mlp == "swiglu":
            e, k = self.experts, self.top_k
            if self.is_moe:
                out.append(self._matrix("router", h, e))
            out += [self._matrix("gate", h, self.ffn, e, k), self._matrix("up", h, self.ffn, e, k),
                    self._matrix("down", self.ffn, h, e, k)]
        else:
            out += [self._matrix("fc1", h, self.ffn), self._matrix("fc2", self.ffn, h)]
        return tuple(out)

    def outer_matrices(self) -> list[Matrix]:
        """Matrices applied once per token outside the decoder layers: OPT project_in/out, the LM head."""
        e = self.token_embed_dim
        out = []
        if e != self.hidden:  # these two carry no bias in OPT
            out += [Matrix("project_in", e, self.hidden), Matrix("project_out", self.hidden, e)]
        out.append(Matrix("lm_head", e, self.vocab))
        return out

    @property
    def _non_layer_params(self) -> int:
        n = self.vocab * self.token_embed_dim
        if self.family == "opt":
            n += (self.max_positions + 2) * self.hidden
        # a tied LM head is the embedding matrix, already counted above
        n += sum(m.params for m in self.outer_matrices() if m.name != "lm_head" or not self.tied_embeddings)
        return n + (self._norm_params if self.final_norm else 0)

    @cached_property
    def params(self) -> int:
        per_layer = sum(m.params for m in self.matrices()) + 2 * self._norm_params
        return self._non_layer_params + self.layers * per_layer

    @cached_property
    def active_params(self) -> int:
        per_layer = sum(m.active_params for m in self.matrices()) + 2 * self._norm_params
        return self._non_layer_params + self.layers * per_layer

    def weight_bytes(self, precision: Precision | str) -> float:
        """All parameters at the weight width (norms, biases and embeddings included, a simplification)."""
        return self.params * get_precision(precision).weight_bytes

    def kv_bytes_per_token(self, precision: Precision | str) -> float:
        """K and V of every layer for one token, stored at the activation precision."""
        return 2 * self.layers * self.kv_heads * self.head_dim * get_precision(precision).kv_bytes


def zoo_dir() -> Path:
    return paths.CONFIG_ROOT / "models"


def zoo_names() -> list[str]:
    return sorted(p.stem for p in zoo_dir().glob("*.json"))


def load_model(name_or_path: str | Path) -> ModelSpec:
    """A zoo model by name (stem of arch_configs/models/*.json), or any HF config.json (file or folder)."""
    path, name = _locate(str(name_or_path))
    return _spec_from_config(_Config(_read_json(path), str(path)), name)


def models_record(spec: ModelSpec, precision: Precision | str) -> dict:
    """One entry of `kvnand models --format json`."""
    return {
        "name": spec.name, "family": spec.family,
        "params": spec.params, "active_params": spec.active_params,
        "layers": spec.layers, "heads": spec.heads, "kv_heads": spec.kv_heads, "head_dim": spec.head_dim,
        "weight_bytes": spec.weight_bytes(precision),
        "kv_bytes_per_token": spec.kv_bytes_per_token(precision),
    }


def _is(path: Path, what: str) -> bool:
    try:
        return path.is_dir() if what == "dir" else path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a file
        return False


def _locate(name_or_path: str) -> tuple[Path, str]:
    if name_or_path in zoo_names():
        return zoo_dir() / f"{name_or_path}.json", name_or_path
    path = Path(name_or_path).expanduser()
    if _is(path, "dir"):  # a downloaded HF snapshot folder
        path = path / "config.json"
    if _is(path, "file"):
        # "config.json" says nothing; the folder holding it usually carries the model's name.
        return path, path.resolve().parent.name if path.name == "config.json" else path.stem
    if path.suffix == ".json" or "/" in name_or_path or "\\" in name_or_path:
        raise InputError("model config file not found", file=str(path))
    raise InputError("unknown model", key="model", value=name_or_path,
                     allowed=", ".join(zoo_names()) + ", or a path to a Hugging Face config.json")


def _not_json(constant: str):
    raise ValueError(f"{constant} is not standard JSON")


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is allowed, as in YAML files
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read model config: {e}", file=str(path)) from None
    try:
        data = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                         file=str(path), line=e.lineno) from None
    except (ValueError, RecursionError) as e:  # NaN/Infinity, a 5000-digit integer, 100000-deep nesting
        problem = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
        raise InputError(f"malformed JSON: {problem}", file=str(path),
                         allowed="a Hugging Face config.json (plain numbers, modest nesting)") from None
    if not isinstance(data, dict):
        raise InputError("a config.json must hold a JSON object", file=str(path), value=type(data).__name__)
    return data


_REQUIRED = object()
MAX_DIM = 2**24  # any size or count in a config.json (layers, hidden, vocab, experts, ...)
MAX_POSITIONS = 2**31


class _Config:
    """Typed access to the keys of one config.json; a JSON null counts as absent (HF writes nulls)."""

    def __init__(self, data: dict, file: str):
        self.data, self.file = data, file

    def error(self, message: str, key: str, value: object = None, allowed: str | None = None) -> InputError:
        return InputError(message, file=self.file, key=key, value=value, allowed=allowed)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _get(self, key: str, default: object) -> object:
        if self.has(key):
            return self.data[key]
        if default is _REQUIRED:
            raise self.error("missing required key", key)
        return default

    def get_int(self, key: str, default: int | object = _REQUIRED) -> int:
        value = self._get(key, default)
        # bool is an int subclass in Python; `true` is not a size. The bound keeps every count and product exact.
        high = MAX_POSITIONS if key == "max_position_embeddings" else MAX_DIM
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= high:
            raise self.error("must be a positive integer", key, value, allowed=f"an integer 1 to {high}")
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error("must be true or false", key, value)
        return value

    def get_str(self, key: str, default: str | object = _REQUIRED) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.error("must be a string", key, value)
        return value


def _spec_from_config(cfg: _Config, name: str) -> ModelSpec:
    family = cfg.get_str("model_type")
    if family not in FAMILIES:
        raise cfg.error("unsupported model_type", "model_type", family, ", ".join(FAMILIES))
    hidden, heads = cfg.get_int("hidden_size"), cfg.get_int("num_attention_heads")
    kv_heads = cfg.get_int("num_key_value_heads", heads)  # absent: plain multi-head attention
    if heads % kv_heads:
        raise cfg.error(f"num_attention_heads ({heads}) must be a multiple of it", "num_key_value_heads",
                        kv_heads, f"a divisor of {heads}")
    if cfg.has("head_dim"):
        head_dim = cfg.get_int("head_dim")
    else:
        if hidden % heads:
            raise cfg.error(f"hidden_size ({hidden}) is not a multiple of it and no head_dim is given",
                            "num_attention_heads", heads)
        head_dim = hidden // heads
    common = dict(name=name, family=family, layers=cfg.get_int("num_hidden_layers"), hidden=hidden,
                  heads=heads, kv_heads=kv_heads, head_dim=head_dim, vocab=cfg.get_int("vocab_size"),
                  max_positions=cfg.get_int("max_position_embeddings"), source=cfg.file)
    if family == "opt":
        return ModelSpec(**common, **_opt_fields(cfg, hidden))
    return ModelSpec(**common, **_gated_fields(cfg, family))


def _opt_fields(cfg: _Config, hidden: int) -> dict:
    act = cfg.get_str("activation_function", "relu")
    if act != "relu" and not act.startswith("gelu"):
        raise cfg.error("unsupported OPT activation", "activation_function", act, "relu, gelu*")
    pre_ln = cfg.get_bool("do_layer_norm_before", True)
    return dict(
        ffn=cfg.get_int("ffn_dim"), mlp="relu" if act == "relu" else "gelu",
        tied_embeddings=cfg.get_bool("tie_word_embeddings", True),  # OPTForCausalLM ties the LM head
        bias=cfg.get_bool("enable_bias", True), experts=1, top_k=1,
        embed_dim=cfg.get_int("word_embed_proj_dim", hidden),
        final_norm=pre_ln and not cfg.get_bool("_remove_final_layer_norm", False),
    )


def _gated_fields(cfg: _Config, family: str) -> dict:
    """llama, mistral, mixtral, qwen2: SwiGLU MLP (or MoE of SwiGLU experts), RMSNorm, rotary positions."""
    experts = top_k = 1
    if family == "mixtral":
        experts, top_k = cfg.get_int("num_local_experts"), cfg.get_int("num_experts_per_tok")
        if top_k > experts:
            raise cfg.error(f"more experts per token than num_local_experts ({experts})",
                            "num_experts_per_tok", top_k, f"1..{experts}")
    if family == "qwen2":
        biased = {"q", "k", "v"}  # Qwen2 hard-wires q/k/v biases; o and the MLP have none
    elif family == "llama":
        biased = ({"q", "k", "v", "o"} if cfg.get_bool("attention_bias", False) else set()) | (
            {"gate", "up", "down"} if cfg.get_bool("mlp_bias", False) else set())
    else:
        biased = set()
    return dict(ffn=cfg.get_int("intermediate_size"), mlp="swiglu",
                tied_embeddings=cfg.get_bool("tie_word_embeddings", False), bias=bool(biased),
                experts=experts, top_k=top_k, bias_on=frozenset(biased))
