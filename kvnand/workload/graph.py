"""The operator list of one decode step (or a prefill of n tokens), per layer, also as a networkx DAG.

Each operator knows its kind (gemv, gemm, attention, vector, kv_write), FLOPs (2 x MACs), the bytes of
its operands (weights, KV, activations), which weight matrices it applies and, for a GEMV, its shape.
This list is what gets simulated: kvnand.lowering walks it and places each operator on the system's
units (`kvnand graph` shows it); the list itself is hardware-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvnand.workload.model import Matrix, ModelSpec
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
    up projections); `summed`: one matrix whose active copies take different inputs and add their
    outputs (the routed experts' down projections), i.e. their rows stacked."""
    macs = sum(m.in_dim * m.out_dim * m.active for m in mats) * tokens
    wb = sum(m.in_dim * m.out_dim * m.active for m in mats) * p.weight_bytes
    kind = "gemv" if tokens == 1 else "gemm"
    if summed:
        (mat,) = mats
        in_dim, out_dim = mat.in_dim * mat.active, mat.out_dim
    else:
        in_dim, out_dim = mats[0].in_dim, sum(m.out_dim * m.active for m in mats)
    return Operator(name, kind, macs, weight_bytes=wb, act_in_bytes=in_dim * p.act_bytes * tokens,
                    act_out_bytes=out_dim * p.act_bytes * tokens, matrices=tuple(mats), deps=deps,
                    in_dim=in_dim, out_dim=out_dim)


def layer_operators(m: ModelSpec, precision: Precision | str, context: int, tokens: int = 1) -> list[Operator]:
    """Operators of one decoder layer for `tokens` new tokens attending over `context` tokens.

    Decode: tokens = 1, each new token attends to `context` tokens. Prefill of n: tokens = context = n
    (causal: on average (n + 1) / 2 keys per query).
    """
    p = get_precision(precision)
    mats = {x.name: x for x in m.matrices()}
    d, h, k = m.head_dim, m.heads, m.kv_heads
    keys = context if tokens == 1 else (context + 1) / 2
    kv_read = k * d * p.kv_bytes * (context if tokens == 1 else context)
    attn_macs = h * d * keys * tokens
    ops = [
        Operator("attn_norm", "vector", 0, elements=m.hidden * tokens),
        _gemv("qkv", [mats["q"], mats["k"], mats["v"]], p, tokens, ("attn_norm",)),
        Operator("rope", "vector", 0, elements=(h + k) * d * tokens, deps=("qkv",)),
        Operator("kv_append", "kv_write", 0, kv_bytes=2 * k * d * p.kv_bytes * tokens, deps=("rope",)),
        Operator("logit", "attention", attn_macs, kv_bytes=kv_read, act_in_bytes=h * d * p.act_bytes * tokens,
                 act_out_bytes=h * keys * p.act_bytes * tokens, deps=("rope",)),
        Operator("softmax", "vector", 0, elements=h * keys * tokens, deps=("logit",)),
        Operator("attend", "attention", attn_macs, kv_bytes=kv_read, act_in_bytes=h * keys * p.act_bytes * tokens,
                 act_out_bytes=h * d * p.act_bytes * tokens, deps=("softmax", "kv_append")),
        _gemv("o_proj", [mats["o"]], p, tokens, ("attend",)),
        Operator("residual_attn", "vector", 0, elements=m.hidden * tokens, deps=("o_proj",)),
        Operator("ffn_norm", "vector", 0, elements=m.hidden * tokens, deps=("residual_attn",)),
    ]
    if m.mlp == "swiglu":
        first = "ffn_norm"
        if m.is_moe:
            ops.append(_gemv("router", [mats["router"]], p, tokens, ("ffn_norm",)))
            first = "router"
        ops += [_gemv("ffn_up", [mats["gate"], mats["up"]], p, tokens, (first,)),
                Operator("ffn_act", "vector", 0, elements=2 * m.ffn * m.top_k * tokens, deps=("ffn_up",)),
                _gemv("ffn_down", [mats["down"]], p, tokens, ("ffn_act",), summed=True)]
    else:
        ops += [_gemv("ffn_up", [mats["fc1"]], p, tokens, ("ffn_norm",)),
                Operator("ffn_act", "vector", 0, elements=m.ffn * tokens, deps=("ffn_up",)),
                _gemv("ffn_down", [mats["fc2"]], p, tokens, ("ffn_act",))]
    ops.append(Operator("residual_ffn", "vector", 0, elements=m.hidden * tokens, deps=("ffn_down",)))
    return ops


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
    layer = sum(2 * o.macs for o in layer_operators(m, precision, context))
    return m.layers * layer + sum(2 * o.macs for o in prologue_operators(m, precision) + head_operators(m, precision))


def layer_dag(m: ModelSpec, precision: Precision | str, context: int, tokens: int = 1):
    """The layer's operators as a networkx DiGraph (node attributes: kind, macs, bytes)."""
    import networkx as nx

    g = nx.DiGraph()
    for o in layer_operators(m, precision, context, tokens):
        g.add_node(o.name, kind=o.kind, macs=o.macs, flops=o.flops, weight_bytes=o.weight_bytes,
                   kv_bytes=o.kv_bytes, act_in_bytes=o.act_in_bytes, act_out_bytes=o.act_out_bytes,
                   elements=o.elements)
        for dep in o.deps:
            g.add_edge(dep, o.name)
    return g
