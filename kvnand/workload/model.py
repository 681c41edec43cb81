"""Model specs from Hugging Face config.json files: shapes, parameter counts, bytes and layer matrices.

Owns the model zoo (`arch_configs/models/*.json`, named by file stem) and reading any HF config.json of
the families in FAMILIES, with their attention variants: grouped/multi-query heads, sliding-window layers
(per layer where the config says so), DeepSeek's multi-head latent attention (MLA), and MoE layers with
shared experts and leading dense layers. A model is a set of layer kinds (`LayerKind`: window, MoE or
dense FFN); identical layers are lowered together. Every problem with a config file is reported as an
InputError naming the file and the key; raw KeyError/JSONDecodeError never escape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from kvnand import paths
from kvnand.errors import InputError
from kvnand.workload.precision import Precision, get_precision

FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "phi3", "gemma2", "gemma3_text",
            "deepseek_v2", "deepseek_v3", "opt")


@dataclass(frozen=True)
class LayerKind:
    """What sets a decoder layer's cost apart: the tokens it attends over (the last `window`, or all when
    None) and whether its FFN is a mixture of experts."""

    window: int | None = None
    moe: bool = False

    def context(self, context: int) -> int:
        """Tokens this layer attends over (and keeps in its cache) at `context`."""
        if self.window is None:
            return context
        if getattr(context, "ndim", 0):  # an array of contexts (a batch, kvnand.program)
            import numpy as np

            return np.minimum(context, self.window)
        return min(context, self.window)


@dataclass(frozen=True)
class Mla:
    """DeepSeek's multi-head latent attention (the config.json keys of the same names). A token's cache is
    one latent of kv_lora_rank + qk_rope_head_dim values per layer, shared by every head; decode uses the
    absorbed form (q_nope x W_UK per head before the scores, W_UV after attending)."""

    q_lora_rank: int        # 0: a plain q_proj
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    absorbed: bool = True   # False: the cache holds the latent expanded to per-head K and V (`expanded`)

    @property
    def latent(self) -> int:
        return self.kv_lora_rank + self.qk_rope_head_dim


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
    (attention, MLP or all MoE experts with the shared ones, router, biases, norms: RMSNorm = hidden,
    LayerNorm = 2 * hidden weights, per-head q/k norms, MLA's latent norms), the final norm and the LM head
    (counted once when tied to the embedding). These match the published sizes (LLaMA2-7B 6.74 B, Mixtral
    46.7 B, DeepSeek-V3 671 B without its multi-token-prediction module, ...).

    `active_params` is the same count with only `top_k` experts per MoE layer; the embedding and LM head
    stay in full although decode reads one embedding row. That is the convention behind Mixtral's
    "12.9 B active"; for dense models active_params == params.

    `kv_heads` and `head_dim` describe the cache attention reads. For MLA that is one latent "head" of
    kv_lora_rank + qk_rope_head_dim values shared by all `heads` query heads (MQA over the latent), read by
    both Logit and Attend (`kv_streams` = 1 instead of separate K and V).
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
    windows: tuple[int | None, ...] = ()  # per layer: sliding window in tokens or None; () means all full
    moe_layers: tuple[bool, ...] = ()  # per layer: MoE FFN; () means every layer when experts > 1
    dense_ffn: int = 0  # MLP width of the dense layers of a MoE model (DeepSeek's first layers)
    shared_ffn: int = 0  # width of the shared experts every token goes through (DeepSeek), 0 if none
    mla: Mla | None = None
    qk_norm: bool = False  # RMSNorm over each head's q and k (Qwen3, Gemma-3): 2 x head_dim weights
    norms_per_layer: int = 2  # Gemma-2/3 also normalize after attention and after the MLP: 4
    context_limit: int = 0  # longest context the positions are trained or scaled for; 0 means max_positions

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def token_embed_dim(self) -> int:
        return self.embed_dim or self.hidden

    @property
    def latent_kv(self) -> bool:
        """The cache holds MLA latents (absorbed form), not per-head K and V."""
        return self.mla is not None and self.mla.absorbed

    @property
    def kv_streams(self) -> int:
        """Cache streams per (layer, KV head): K and V, or one MLA latent."""
        return 1 if self.latent_kv else 2

    def expanded(self) -> ModelSpec:
        """This MLA model with its latent expanded to per-head K and V in the cache (the non-absorbed form:
        kv_b_proj is applied once to each new token), when its K and V heads have one width."""
        a = self.mla
        if a is None or a.qk_nope_head_dim + a.qk_rope_head_dim != a.v_head_dim:
            raise ValueError("expanded() needs an MLA model whose K and V heads have the same width")
        return replace(self, mla=replace(a, absorbed=False), kv_heads=self.heads, head_dim=a.v_head_dim)

    @property
    def attn_macs_per_key(self) -> int:
        """MACs of Logit and Attend per (query, key) pair over all heads: q.k and p.v of head_dim each, or for
        MLA the latent (scores) and its compressed part (attending)."""
        if self.latent_kv:
            return self.heads * (self.mla.latent + self.mla.kv_lora_rank)
        return 2 * self.heads * self.head_dim

    @property
    def prefill_macs_per_key(self) -> int:
        """attn_macs_per_key of a prefill, where MLA runs expanded (compute-bound prompts make per-head K and V
        once per token rather than meeting the latent with every head): heads x (qk head + v head)."""
        a = self.mla
        return self.heads * (a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim) if a else self.attn_macs_per_key

    @property
    def max_context(self) -> int:
        return self.context_limit or self.max_positions

    @cached_property
    def layer_kinds(self) -> tuple[tuple[LayerKind, int], ...]:
        """(kind, number of layers) of each distinct layer kind, in order of first appearance."""
        windows = self.windows or (None,) * self.layers
        moe = self.moe_layers or (self.is_moe,) * self.layers
        counts: dict[LayerKind, int] = {}
        for w, e in zip(windows, moe, strict=True):
            kind = LayerKind(w, e)
            counts[kind] = counts.get(kind, 0) + 1
        return tuple(counts.items())

    @property
    def attention_kind(self) -> str:
        """MHA, GQA-n (n query heads per KV head), MQA or MLA, and the windows of windowed layers."""
        if self.mla:
            kind = "MLA" if self.latent_kv else "MLA expanded to MHA"
        elif self.kv_heads == self.heads:
            kind = "MHA"
        elif self.kv_heads == 1:
            kind = "MQA"
        else:
            kind = f"GQA-{self.heads // self.kv_heads}"
        windowed = [(k.window, n) for k, n in self.layer_kinds if k.window is not None]
        if not windowed:
            return kind
        sizes = "/".join(str(w) for w in sorted({w for w, _ in windowed}))
        return f"{kind}, window {sizes} on {sum(n for _, n in windowed)}/{self.layers} layers"

    @property
    def _norm_params(self) -> int:
        # OPT uses LayerNorm (weight + bias); the other families use RMSNorm (weight only).
        return 2 * self.hidden if self.family == "opt" else self.hidden

    def _has_bias(self, name: str) -> bool:
        return self.bias and (self.bias_on is None or name in self.bias_on)

    def _matrix(self, name: str, in_dim: int, out_dim: int, copies: int = 1, per_token: int = 1) -> Matrix:
        return Matrix(name, in_dim, out_dim, per_token, copies, self._has_bias(name))

    def matrices(self, moe: bool | None = None) -> list[Matrix]:
        """The weight matrices of one decoder layer, in execution order: of a MoE layer (the default in a
        MoE model) or of a dense layer (`moe` False)."""
        return list(self._matrix_sets[self.is_moe if moe is None else moe])

    def layer_matrices(self) -> list[tuple[Matrix, int]]:
        """Every layer matrix with the number of layers holding it."""
        return [(x, n) for kind, n in self.layer_kinds for x in self._matrix_sets[kind.moe]]

    @cached_property
    def _matrix_sets(self) -> dict[bool, tuple[Matrix, ...]]:  # built once: every capacity check and program asks
        return {moe: (*self._attention_matrices(), *self._ffn_matrices(moe)) for moe in (False, True)}

    def _attention_matrices(self) -> list[Matrix]:
        h, a = self.hidden, self.mla
        if a is None:
            q_dim, kv_dim = self.heads * self.head_dim, self.kv_heads * self.head_dim
            return [self._matrix("q", h, q_dim), self._matrix("k", h, kv_dim), self._matrix("v", h, kv_dim),
                    self._matrix("o", q_dim, h)]
        q_out = self.heads * (a.qk_nope_head_dim + a.qk_rope_head_dim)
        q = [self._matrix("q_a", h, a.q_lora_rank), self._matrix("q_b", a.q_lora_rank, q_out)] if a.q_lora_rank \
            else [self._matrix("q", h, q_out)]
        # kv_b_proj (kv_lora_rank -> heads x (nope + v)) as its two halves, which the absorbed form applies on
        # either side of attention: W_UK to the query, W_UV to the attended latent
        return [*q, self._matrix("kv_a", h, a.latent),
                self._matrix("k_up", a.kv_lora_rank, self.heads * a.qk_nope_head_dim),
                self._matrix("v_up", a.kv_lora_rank, self.heads * a.v_head_dim),
                self._matrix("o", self.heads * a.v_head_dim, h)]

    def _ffn_matrices(self, moe: bool) -> list[Matrix]:
        h = self.hidden
        if self.mlp != "swiglu":
            return [self._matrix("fc1", h, self.ffn), self._matrix("fc2", self.ffn, h)]
        if not moe:
            f = self.dense_ffn or self.ffn
            return [self._matrix("gate", h, f), self._matrix("up", h, f), self._matrix("down", f, h)]
        e, k, out = self.experts, self.top_k, [self._matrix("router", h, self.experts)]
        if self.shared_ffn:
            f = self.shared_ffn
            out += [self._matrix("shared_gate", h, f), self._matrix("shared_up", h, f),
                    self._matrix("shared_down", f, h)]
        return out + [self._matrix("gate", h, self.ffn, e, k), self._matrix("up", h, self.ffn, e, k),
                      self._matrix("down", self.ffn, h, e, k)]

    @property
    def _layer_norm_params(self) -> int:
        """Norm weights of one layer: its pre-/post-norms, per-head q/k norms, MLA's latent norms."""
        n = self.norms_per_layer * self._norm_params + (2 * self.head_dim if self.qk_norm else 0)
        return n + (self.mla.kv_lora_rank + self.mla.q_lora_rank if self.mla else 0)

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

    def _count(self, active: bool) -> int:
        per_kind = (sum(x.active_params if active else x.params for x in self._matrix_sets[k.moe]) for k, _ in
                    self.layer_kinds)
        return self._non_layer_params + sum(n * (p + self._layer_norm_params)
                                            for (_, n), p in zip(self.layer_kinds, per_kind, strict=True))

    @cached_property
    def params(self) -> int:
        return self._count(active=False)

    @cached_property
    def active_params(self) -> int:
        return self._count(active=True)

    def weight_bytes(self, precision: Precision | str) -> float:
        """All parameters at the weight width (norms, biases and embeddings included, a simplification)."""
        return self.params * get_precision(precision).weight_bytes

    def kv_bytes_per_token_layer(self, precision: Precision | str) -> float:
        """Bytes one token adds to one layer's cache: K and V of every KV head, or one MLA latent."""
        return self.kv_streams * self.kv_heads * self.head_dim * get_precision(precision).kv_bytes

    def kv_bytes_per_token(self, precision: Precision | str) -> float:
        """One token's cache in every layer, at the activation precision: what a token costs while every
        layer keeps it (a context within every window). `kv_bytes` is the cache at a given context."""
        return self.layers * self.kv_bytes_per_token_layer(precision)

    def kv_bytes(self, precision: Precision | str, context: int) -> float:
        """The whole cache at `context` tokens: a windowed layer keeps only its last `window` tokens."""
        unit = self.kv_bytes_per_token_layer(precision)
        return sum(n * unit * k.context(context) for k, n in self.layer_kinds)

    def kv_growth(self, precision: Precision | str) -> tuple[float, tuple[tuple[float, int], ...]]:
        """(bytes per token of the full-context layers, ((bytes per token, window) of each windowed kind))."""
        unit = self.kv_bytes_per_token_layer(precision)
        full = sum(n for k, n in self.layer_kinds if k.window is None) * unit
        return full, tuple((n * unit, k.window) for k, n in self.layer_kinds if k.window is not None)


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
        "attention": spec.attention_kind,
        "kv_bytes_per_token_layer": spec.kv_bytes_per_token_layer(precision),
        "windows": sorted({k.window for k, _ in spec.layer_kinds if k.window is not None}),
        "max_context": spec.max_context,
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

    def get_count(self, key: str, default: int = 0) -> int:
        """A non-negative integer (a count that may be zero, e.g. first_k_dense_replace)."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error("must be a non-negative integer", key, value)
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
    hidden, heads, layers = cfg.get_int("hidden_size"), cfg.get_int("num_attention_heads"), \
        cfg.get_int("num_hidden_layers")
    mla = _mla(cfg) if family.startswith("deepseek") else None
    if mla is not None:  # the cache is one latent per token, shared by all heads (num_key_value_heads unused)
        kv_heads, head_dim = 1, mla.latent
    else:
        kv_heads, head_dim = _heads(cfg, hidden, heads)
    common = dict(name=name, family=family, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                  head_dim=head_dim, vocab=cfg.get_int("vocab_size"),
                  max_positions=cfg.get_int("max_position_embeddings"), source=cfg.file)
    if family == "opt":
        return ModelSpec(**common, **_opt_fields(cfg, hidden))
    return ModelSpec(**common, **_gated_fields(cfg, family, layers), mla=mla, windows=_windows(cfg, family, layers),
                     context_limit=_context_limit(cfg))


def _heads(cfg: _Config, hidden: int, heads: int) -> tuple[int, int]:
    kv_heads = cfg.get_int("num_key_value_heads", heads)  # absent: plain multi-head attention
    if heads % kv_heads:
        raise cfg.error(f"num_attention_heads ({heads}) must be a multiple of it", "num_key_value_heads",
                        kv_heads, f"a divisor of {heads}")
    if cfg.has("head_dim"):  # Gemma, Qwen3, Mistral-NeMo: not hidden / heads
        return kv_heads, cfg.get_int("head_dim")
    if hidden % heads:
        raise cfg.error(f"hidden_size ({hidden}) is not a multiple of it and no head_dim is given",
                        "num_attention_heads", heads)
    return kv_heads, hidden // heads


def _mla(cfg: _Config) -> Mla:
    return Mla(q_lora_rank=cfg.get_count("q_lora_rank"),
               kv_lora_rank=cfg.get_int("kv_lora_rank"), qk_nope_head_dim=cfg.get_int("qk_nope_head_dim"),
               qk_rope_head_dim=cfg.get_int("qk_rope_head_dim"), v_head_dim=cfg.get_int("v_head_dim"))


def _context_limit(cfg: _Config) -> int:
    """max_position_embeddings, or YaRN's reach (factor x original_max_position_embeddings) when a YaRN
    rope_scaling block is added to extend it (Qwen's recipe). Other scalings (llama3, longrope) are already
    reflected in max_position_embeddings."""
    limit = cfg.get_int("max_position_embeddings")
    scaling = cfg.data.get("rope_scaling")
    if isinstance(scaling, dict) and "yarn" in (scaling.get("rope_type"), scaling.get("type")):
        factor, orig = scaling.get("factor"), scaling.get("original_max_position_embeddings")
        if not all(isinstance(x, int | float) and not isinstance(x, bool) and x > 0 for x in (factor, orig)):
            raise cfg.error("YaRN needs a positive factor and original_max_position_embeddings", "rope_scaling",
                            scaling)
        limit = max(limit, int(factor * orig))
    return limit


def _windows(cfg: _Config, family: str, layers: int) -> tuple[int | None, ...]:
    """Per layer: the sliding window it attends over, or None (all of the context), the way each family
    reads its config: `layer_types` when the config lists them; else Gemma-2 slides on even layers, Gemma-3
    on all but every `sliding_window_pattern`-th, Mistral/Mixtral/Phi-3 on every layer when `sliding_window`
    is set, Qwen on layers from `max_window_layers` on when `use_sliding_window` is true."""
    if cfg.has("layer_types"):
        types = cfg.data["layer_types"]
        allowed = ("full_attention", "sliding_attention")
        if not isinstance(types, list) or len(types) != layers or any(t not in allowed for t in types):
            raise cfg.error(f"must list one of {', '.join(allowed)} per layer ({layers})", "layer_types",
                            types if not isinstance(types, list) else f"{len(types)} entries")
        sliding = [t == "sliding_attention" for t in types]
    elif family == "gemma2":
        sliding = [i % 2 == 0 for i in range(layers)]
    elif family == "gemma3_text":
        pattern = cfg.get_int("sliding_window_pattern", 6)
        sliding = [(i + 1) % pattern != 0 for i in range(layers)]
    elif family in ("mistral", "mixtral", "phi3"):
        sliding = [cfg.has("sliding_window")] * layers
    elif family in ("qwen2", "qwen3", "qwen3_moe") and cfg.get_bool("use_sliding_window", False):
        first = cfg.get_count("max_window_layers", layers)
        sliding = [i >= first for i in range(layers)]
    else:
        sliding = [False] * layers
    if not any(sliding):
        return ()
    window = cfg.get_int("sliding_window")
    return tuple(window if s else None for s in sliding)


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


def _moe(cfg: _Config, family: str, layers: int) -> dict:
    """Experts of the MoE families: Mixtral (every layer), Qwen3-MoE (every decoder_sparse_step-th layer not in
    mlp_only_layers), DeepSeek (from first_k_dense_replace on, every moe_layer_freq-th, plus n_shared_experts
    shared experts)."""
    if family == "mixtral":
        experts_key, out = "num_local_experts", {}
    elif family == "qwen3_moe":
        experts_key, step = "num_experts", cfg.get_int("decoder_sparse_step", 1)
        dense = cfg.data.get("mlp_only_layers") or []
        if not isinstance(dense, list) or any(not isinstance(i, int) or isinstance(i, bool) for i in dense):
            raise cfg.error("must be a list of layer indices", "mlp_only_layers", dense)
        out = {"moe_layers": tuple(i not in dense and (i + 1) % step == 0 for i in range(layers)),
               "ffn": cfg.get_int("moe_intermediate_size"), "dense_ffn": cfg.get_int("intermediate_size")}
    else:  # deepseek_v2, deepseek_v3
        experts_key = "n_routed_experts"
        first, freq = cfg.get_count("first_k_dense_replace"), cfg.get_int("moe_layer_freq", 1)
        ffn, shared = cfg.get_int("moe_intermediate_size"), cfg.get_count("n_shared_experts")
        out = {"moe_layers": tuple(i >= first and i % freq == 0 for i in range(layers)), "ffn": ffn,
               "dense_ffn": cfg.get_int("intermediate_size"), "shared_ffn": shared * ffn}
    experts, top_k = cfg.get_int(experts_key), cfg.get_int("num_experts_per_tok")
    if top_k > experts:
        raise cfg.error(f"more experts per token than {experts_key} ({experts})", "num_experts_per_tok", top_k,
                        f"1..{experts}")
    return {"experts": experts, "top_k": top_k, **out}


def _biases(cfg: _Config, family: str) -> set[str]:
    if family == "qwen2":
        return {"q", "k", "v"}  # Qwen2 hard-wires q/k/v biases; o and the MLP have none
    if family.startswith("deepseek"):
        attn = {"q_a", "kv_a", "o"}  # HF DeepseekV2/V3 attention: q_proj, q_b_proj and kv_b_proj never biased
    elif family in ("llama", "qwen3", "qwen3_moe", "gemma2", "gemma3_text"):
        attn = {"q", "k", "v", "o"}
    else:
        return set()
    out = attn if cfg.get_bool("attention_bias", False) else set()
    if family == "llama" and cfg.get_bool("mlp_bias", False):
        out |= {"gate", "up", "down"}
    if cfg.data.get("topk_method") == "noaux_tc":  # DeepSeek-V3's router carries e_score_correction_bias
        out.add("router")
    return out


def _gated_fields(cfg: _Config, family: str, layers: int) -> dict:
    """Every family but OPT: gated MLP (SwiGLU, Gemma's GeGLU, Phi-3's fused gate_up: the same three
    matrices) or MoE of such experts, RMSNorm, rotary positions."""
    biased = _biases(cfg, family)
    moe = _moe(cfg, family, layers) if family in ("mixtral", "qwen3_moe") or family.startswith("deepseek") \
        else {"experts": 1, "top_k": 1}
    gemma = family.startswith("gemma")
    return {"ffn": cfg.get_int("intermediate_size"), "mlp": "swiglu",
            "tied_embeddings": cfg.get_bool("tie_word_embeddings", gemma), "bias": bool(biased),
            "bias_on": frozenset(biased), "qk_norm": family in ("qwen3", "qwen3_moe", "gemma3_text"),
            "norms_per_layer": 4 if gemma else 2, **moe}
