"""The operator list of one decode step (or a prefill of n tokens), per layer, also as a networkx DAG.

Each operator knows its kind (gemv, gemm, attention, vector, kv_write), FLOPs (2 x MACs), the bytes of
its operands (weights, KV, activations), which weight matrices it applies and, for a GEMV, its shape.
This list is what gets simulated: kvnand.lowering walks it and places each operator on the system's
units (`kvnand graph` shows it); the list itself is hardware-free.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kvnand.workload.model import LayerKind, Matrix, ModelSpec
from kvnand.workload.precision import Precision, get_precision


@dataclass(frozen=True)
class Operator:
    name: str
    kind: str                         # gemv | gemm | attention | vector | kv_write
    macs: float                       # multiply-accumulates (FLOPs = 2 x macs)
    weight_bytes: float = 0.0         # weights read (active experts only)
    kv_bytes: float = 0.0             # KV cache read (attention) or written (kv_write)
    act_in_bytes: float = 0.0         # activation input vector(s)
    act_out_bytes: float = 0.0
    elements: float = 0.0             # vector ops: elements processed
    matrices: tuple[Matrix, ...] = ()
    deps: tuple[str, ...] = ()
    in_dim: int = 0                   # GEMV shape y = x W: input length and output columns
    out_dim: int = 0

    @property
    def flops(self) -> float:
        return 2 * self.macs + self.elements


def _gemv(name, mats, p: Precision, tokens: int, deps, summed: bool = False) -> Operator:
    """Matrices applied to one input, their columns side by side (q|k|v, gate|up, the routed experts'
    up projections); `summed`: matrices whose active copies take different inputs and add their outputs
    (the shared and routed experts' down projections), i.e. their rows stacked."""
    macs = sum(m.in_dim * m.out_dim * m.active for m in mats) * tokens
    wb = sum(m.in_dim * m.out_dim * m.active for m in mats) * p.weight_bytes
    kind = "gemv" if tokens == 1 else "gemm"
    if summed:
        in_dim, out_dim = sum(m.in_dim * m.active for m in mats), mats[0].out_dim
    else:
        in_dim, out_dim = mats[0].in_dim, sum(m.out_dim * m.active for m in mats)
    return Operator(name, kind, macs, weight_bytes=wb, act_in_bytes=in_dim * p.act_bytes * tokens,
                    act_out_bytes=out_dim * p.act_bytes * tokens, matrices=tuple(mats), deps=deps,
                    in_dim=in_dim, out_dim=out_dim)


def _block_gemv(name, mat: Matrix, heads: int, transposed: bool, p: Precision, deps) -> Operator:
    """One head's block of a per-head (block-diagonal) matrix applied to every head's own vector: MLA's
    absorbed W_UK (q_nope -> latent, `transposed`) and W_UV (latent -> v). The weights and MACs are the
    whole matrix's; the shape is one head's input width by all heads' outputs (an assumption: the lowering
    broadcasts one head's input, not each head's)."""
    per_head_in = mat.out_dim // heads if transposed else mat.in_dim
    out_dim = mat.in_dim * heads if transposed else mat.out_dim
    macs = mat.in_dim * mat.out_dim
    return Operator(name, "gemv", macs, weight_bytes=macs * p.weight_bytes,
                    act_in_bytes=per_head_in * heads * p.act_bytes, act_out_bytes=out_dim * p.act_bytes,
                    matrices=(mat,), deps=deps, in_dim=per_head_in, out_dim=out_dim)


def default_kind(m: ModelSpec) -> LayerKind:
    """The kind of the model's first layers (its only kind for a uniform model)."""
    return m.layer_kinds[0][0]


def layer_operators(m: ModelSpec, precision: Precision | str, context: int, tokens: int = 1,
                    kind: LayerKind | None = None) -> list[Operator]:
    """Operators of one decoder layer of `kind` (default: the first) for `tokens` new tokens at `context`.

    Decode: tokens = 1, each new token attends to `context` tokens (a windowed layer to the last `window`).
    Prefill of n: tokens = context = n (causal: on average (n + 1) / 2 keys per query).
    """
    p = get_precision(precision)
    kind = kind or default_kind(m)
    mats = {x.name: x for x in m.matrices(kind.moe)}
    context = kind.context(context)
    d, h, k = m.head_dim, m.heads, m.kv_heads
    keys = context if tokens == 1 else (context + 1) / 2
    kv_read = k * d * p.kv_bytes * context
    attend_dim = m.mla.kv_lora_rank if m.latent_kv else d  # MLA attends over the latent's compressed part only
    attn = [
        Operator("logit", "attention", h * d * keys * tokens, kv_bytes=kv_read,
                 act_in_bytes=h * d * p.act_bytes * tokens, act_out_bytes=h * keys * p.act_bytes * tokens),
        Operator("softmax", "vector", 0, elements=h * keys * tokens, deps=("logit",)),
        Operator("attend", "attention", h * attend_dim * keys * tokens, kv_bytes=kv_read,
                 act_in_bytes=h * keys * p.act_bytes * tokens, act_out_bytes=h * attend_dim * p.act_bytes * tokens,
                 deps=("softmax", "kv_append")),
    ]
    ops = [Operator("attn_norm", "vector", 0, elements=m.hidden * tokens)]
    ops += _mla_operators(m, mats, p, tokens, attn) if m.mla else _mha_operators(m, mats, p, tokens, attn)
    ops += [Operator("residual_attn", "vector", 0, elements=m.hidden * tokens, deps=("o_proj",)),
            Operator("ffn_norm", "vector", 0, elements=m.hidden * tokens, deps=("residual_attn",))]
    ops += _ffn_operators(m, mats, p, tokens, kind.moe)
    ops.append(Operator("residual_ffn", "vector", 0, elements=m.hidden * tokens, deps=("ffn_down",)))
    return ops


def _mha_operators(m: ModelSpec, mats, p: Precision, tokens: int, attn: list[Operator]) -> list[Operator]:
    d, h, k = m.head_dim, m.heads, m.kv_heads
    logit, softmax, attend = attn
    return [
        _gemv("qkv", [mats["q"], mats["k"], mats["v"]], p, tokens, ("attn_norm",)),
        Operator("rope", "vector", 0, elements=(h + k) * d * tokens, deps=("qkv",)),
        Operator("kv_append", "kv_write", 0, kv_bytes=2 * k * d * p.kv_bytes * tokens, deps=("rope",)),
        _with_deps(logit, ("rope",)), softmax, attend,
        _gemv("o_proj", [mats["o"]], p, tokens, ("attend",)),
    ]


def _mla_operators(m: ModelSpec, mats, p: Precision, tokens: int, attn: list[Operator]) -> list[Operator]:
    """MLA in the absorbed form: the latent (c_kv | k_rope) is cached and read by Logit and Attend for all
    heads; q_nope is mapped into the latent space by W_UK per head, the attended latent back by W_UV.
    Expanded (`ModelSpec.expanded`): kv_b_proj makes the new token's per-head K and V, attention is MHA."""
    a, h = m.mla, m.heads
    logit, softmax, attend = attn
    q_in = [mats["q_a"]] if a.q_lora_rank else [mats["q"]]
    ops = [_gemv("qkv", [*q_in, mats["kv_a"]], p, tokens, ("attn_norm",))]
    q_last = "qkv"
    if a.q_lora_rank:
        ops += [Operator("q_norm", "vector", 0, elements=a.q_lora_rank * tokens, deps=("qkv",)),
                _gemv("q_b", [mats["q_b"]], p, tokens, ("q_norm",))]
        q_last = "q_b"
    ops.append(Operator("kv_norm", "vector", 0, elements=a.kv_lora_rank * tokens, deps=("qkv",)))
    if not m.latent_kv:
        return ops + [
            _gemv("kv_b", [mats["k_up"], mats["v_up"]], p, tokens, ("kv_norm",)),
            Operator("rope", "vector", 0, elements=(h + 1) * a.qk_rope_head_dim * tokens, deps=(q_last, "kv_b")),
            Operator("kv_append", "kv_write", 0, kv_bytes=m.kv_bytes_per_token_layer(p) * tokens, deps=("rope",)),
            _with_deps(logit, ("rope",)), softmax, attend,
            _gemv("o_proj", [mats["o"]], p, tokens, ("attend",)),
        ]
    return ops + [
        Operator("rope", "vector", 0, elements=(h + 1) * a.qk_rope_head_dim * tokens, deps=(q_last, "kv_norm")),
        Operator("kv_append", "kv_write", 0, kv_bytes=a.latent * p.kv_bytes * tokens, deps=("rope",)),
        _block_gemv("q_absorb", mats["k_up"], h, True, p, (q_last,)),
        _with_deps(logit, ("rope", "q_absorb")), softmax, attend,
        _block_gemv("v_absorb", mats["v_up"], h, False, p, ("attend",)),
        _gemv("o_proj", [mats["o"]], p, tokens, ("v_absorb",)),
    ]


def _ffn_operators(m: ModelSpec, mats, p: Precision, tokens: int, moe: bool) -> list[Operator]:
    if m.mlp != "swiglu":
        return [_gemv("ffn_up", [mats["fc1"]], p, tokens, ("ffn_norm",)),
                Operator("ffn_act", "vector", 0, elements=m.ffn * tokens, deps=("ffn_up",)),
                _gemv("ffn_down", [mats["fc2"]], p, tokens, ("ffn_act",))]
    ops, first = [], "ffn_norm"
    if moe:
        ops.append(_gemv("router", [mats["router"]], p, tokens, ("ffn_norm",)))
        first = "router"
    # shared experts take the same input as the routed ones and add to the same output: one GEMV each way
    shared = [mats[n] for n in ("shared_gate", "shared_up", "shared_down") if n in mats]
    up = shared[:2] + [mats["gate"], mats["up"]]
    width = sum(x.out_dim * x.active for x in up) // 2
    return ops + [_gemv("ffn_up", up, p, tokens, (first,)),
                  Operator("ffn_act", "vector", 0, elements=2 * width * tokens, deps=("ffn_up",)),
                  _gemv("ffn_down", shared[2:] + [mats["down"]], p, tokens, ("ffn_act",), summed=True)]


def _with_deps(op: Operator, deps: tuple[str, ...]) -> Operator:
    return replace(op, deps=deps)


def prologue_operators(m: ModelSpec, precision: Precision | str) -> list[Operator]:
    """Operators before the first layer: OPT's projection of the token embedding to the hidden size."""
    outer = {x.name: x for x in m.outer_matrices()}
    return [_gemv("project_in", [outer["project_in"]], get_precision(precision), 1, ())] if "project_in" in outer \
        else []


def head_operators(m: ModelSpec, precision: Precision | str, tokens: int = 1) -> list[Operator]:
    """Operators after the layers: final norm, OPT's projection out, LM head (only the last token in prefill)."""
    p = get_precision(precision)
    outer = {x.name: x for x in m.outer_matrices()}
    ops = [Operator("final_norm", "vector", 0, elements=m.hidden * tokens)]
    if "project_out" in outer:
        ops.append(_gemv("project_out", [outer["project_out"]], p, 1, ("final_norm",)))
    ops.append(_gemv("lm_head", [outer["lm_head"]], p, 1, (ops[-1].name,)))
    ops.append(Operator("sample", "vector", 0, elements=m.vocab, deps=("lm_head",)))
    return ops


def step_flops(m: ModelSpec, precision: Precision | str, context: int) -> float:
    """FLOPs of one decode step (2 x MACs of every GEMV and attention; vector ops excluded)."""
    layers = sum(n * sum(2 * o.macs for o in layer_operators(m, precision, context, kind=k))
                 for k, n in m.layer_kinds)
    return layers + sum(2 * o.macs for o in prologue_operators(m, precision) + head_operators(m, precision))


def layer_dag(m: ModelSpec, precision: Precision | str, context: int, tokens: int = 1,
              kind: LayerKind | None = None):
    """The layer's operators as a networkx DiGraph (node attributes: kind, macs, bytes)."""
    import networkx as nx

    g = nx.DiGraph()
    for o in layer_operators(m, precision, context, tokens, kind):
        g.add_node(o.name, kind=o.kind, macs=o.macs, flops=o.flops, weight_bytes=o.weight_bytes,
                   kv_bytes=o.kv_bytes, act_in_bytes=o.act_in_bytes, act_out_bytes=o.act_out_bytes,
                   elements=o.elements)
        for dep in o.deps:
            g.add_edge(dep, o.name)
    return g
