"""KV-cache management policies: what a policy does to the cache, independent of where it is stored.

A policy (kvnand.config.schema.KvPolicy; shipped ones in arch_configs/kv_policies/*.yaml, chosen with
`--kv-policy NAME` or the `kv_policy` override, fields with `--set kv_policy.FIELD=`) is part of the
workload. It changes:
- the stored width of a KV element (`bits`, plus a scale and zero point of `metadata_bytes` per `group`
  elements when the width is below the precision's): applied by giving the precision a KV width, so every
  byte count, page fill and PE work per page follows;
- with `residual` R (KIVI), the most recent R tokens of every stream stay at the precision's full width until
  they are quantized (keys wait for their group of tokens, values slide out one by one): that window lives in
  the KV home's staging buffer (flash cannot update a page in place, so only quantized data is programmed) or
  in DRAM, is read from there rather than sensed, and must fit (kvnand.lowering.step.Lowering.window_*);
- the tokens held (`budget` / `budget_fraction`: eviction; the rest of the conversation is gone); with
  `reclaim: gc` the FTL compacts the held tokens (kvnand.mapping.gc), with `none` the evicted slots stay
  in their pages (the flash holds the whole conversation and the held tokens are read scattered over its
  pages, like a token-granular selection), `auto` takes the faster that fits;
- the tokens attended per step (`top_k` / `top_k_fraction`, whole units of `granularity` tokens) and the
  selection work that picks them: a summary stream stored beside K in the KV home (Quest's min/max keys: two
  K vectors per unit; SparF's channel-major copy of K: one K vector per token, of which `selector_channels`
  channels of every held token are read per step).

The dense policy (every default) is the identity: the same precision, tokens and bytes as without one.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

from kvnand.config.loader import POLICY_KEY as KEY
from kvnand.config.loader import Source, load_file, parse_value, preset_path, validate_tree
from kvnand.config.schema import KvPolicy
from kvnand.errors import InputError
from kvnand.paths import CONFIG_ROOT
from kvnand.workload.precision import Precision

PREFIX = KEY + "."       # overrides of one field: kv_policy.bits, kv_policy.top_k, ...
DENSE = KvPolicy()
_DENSE_FIELDS = DENSE.model_dump(exclude={"name", "source", "note"})


def policy_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / "kv_policies").glob("*.yaml"))


@lru_cache(maxsize=64)
def _load(name: str) -> KvPolicy:
    return load_file(preset_path("kv_policies", name), KvPolicy)


def resolve_policy(overrides: dict) -> KvPolicy:
    """The policy a point's overrides ask for: the named one (dense by default), then its `kv_policy.FIELD`
    overrides, validated together (one error naming the key and what is allowed)."""
    name = overrides.get(KEY)
    if name is not None and not isinstance(name, str):
        raise InputError("a KV policy is named by a string", key=KEY, value=name,
                         allowed=", ".join(policy_names()) + ", or a path to a .yaml file")
    base = _load(name) if name else DENSE
    fields = {k[len(PREFIX):]: v for k, v in overrides.items() if isinstance(k, str) and k.startswith(PREFIX)}
    if not fields:
        return base
    tree = base.model_dump(exclude_unset=False)
    for field, value in fields.items():
        settable = [f for f in KvPolicy.model_fields if f not in ("source", "note")]
        if field not in settable:
            raise InputError("unknown KV policy field", key=PREFIX + field,
                             allowed=", ".join(PREFIX + f for f in settable))
        tree[field] = parse_value(value) if isinstance(value, str) else value
    try:
        return validate_tree(KvPolicy, tree, Source("--set" if not name else f"--set on kv policy '{name}'"))
    except InputError as exc:  # name the key as the user wrote it
        raise InputError(exc.detail, file=exc.file, key=PREFIX + exc.key if exc.key else None, value=exc.value,
                         allowed=exc.allowed) from None


# ---------------------------------------------------------------------------------------------- width
def kv_width_bytes(policy: KvPolicy, precision: Precision) -> float | None:
    """Bytes per stored KV element (data + its share of the group's scale and zero point), or None when the
    policy keeps the precision's width."""
    if policy.bits is None:
        return None
    data = policy.bits / 8
    return data + (policy.metadata_bytes / policy.group if data < precision.kv_bytes else 0.0)


def residual(policy: KvPolicy, precision: Precision) -> int:
    """Tokens of every stream kept in the full-width residual window once the context exceeds them (0 unless
    the policy quantizes below the precision's width: a full-width window would change nothing)."""
    return policy.residual if precision.kv_bytes < precision.act_bytes else 0


def apply_precision(policy: KvPolicy, precision: Precision) -> Precision:
    width = kv_width_bytes(policy, precision)
    return precision if width is None else dataclasses.replace(precision, kv_width=width)


# ---------------------------------------------------------------------------------------------- tokens
def held(policy: KvPolicy, tokens: int) -> int:
    """Tokens of a layer's cache kept after eviction when `tokens` would be kept without it."""
    n = tokens
    if policy.budget is not None:
        n = min(n, policy.budget)
    if policy.budget_fraction is not None:
        n = min(n, max(1, math.ceil(policy.budget_fraction * tokens - 1e-9)))
    return n


def attended(policy: KvPolicy, kept: int) -> int:
    """Tokens attended per step out of `kept` held: the top-k rounded up to whole selection units."""
    if policy.top_k is not None:
        k = policy.top_k
    elif policy.top_k_fraction is not None:
        k = math.ceil(policy.top_k_fraction * kept - 1e-9)
    else:
        return kept
    g = policy.granularity
    return min(kept, math.ceil(k / g) * g)


def summary_vectors_read(policy: KvPolicy, kept: int, head_dim: int) -> int:
    """K-sized vectors the selection reads per (layer, KV head) and step: min and max of every unit (Quest),
    or `selector_channels` of `head_dim` channels of every held key (SparF); 0 without selection."""
    if policy.selector == "minmax":
        return 2 * math.ceil(kept / policy.granularity)
    if policy.selector == "channels":
        return math.ceil(kept * policy.selector_channels / head_dim)
    return 0


def scored_items(policy: KvPolicy, kept: int) -> int:
    """Scores the selection produces per query head (units for minmax, tokens for channels)."""
    return math.ceil(kept / policy.granularity) if policy.selector == "minmax" else kept


def summary_units_per_token(policy: KvPolicy) -> float:
    """K-sized vectors stored per (layer, KV head) per token besides K and V (the selection's summaries)."""
    if policy.selector == "minmax":
        return 2 / policy.granularity
    if policy.selector == "channels":
        return 1.0  # K stored twice: token-major for attention, channel-major for the selection
    return 0.0


def stored_scale(policy: KvPolicy, kv_streams: int) -> float:
    """Stored bytes per token over the K and V bytes (summary streams included)."""
    return (kv_streams + summary_units_per_token(policy)) / kv_streams


def evicts(policy: KvPolicy) -> bool:
    return policy.budget is not None or policy.budget_fraction is not None


def compacts(policy: KvPolicy) -> bool:
    """Whether evicted slots are reclaimed by garbage collection (`auto` is resolved by evaluate())."""
    return evicts(policy) and policy.reclaim != "none"


def is_dense(policy: KvPolicy) -> bool:
    """Whether the policy keeps, stores and reads the cache exactly as without one (its name aside)."""
    return policy.model_dump(exclude={"name", "source", "note"}) == _DENSE_FIELDS


def kv_growth(policy: KvPolicy, growth: tuple[float, tuple], kv_streams: int) -> tuple[float, tuple]:
    """A model's KV growth (bytes per token for good, ((bytes per token, window), ...)) under the policy:
    summaries scale the bytes, a budget caps every layer kind at the budget (a windowed kind at the smaller
    of the two), a budget fraction grows it at that fraction of the context. Identity for the dense policy."""
    per_token, windowed = growth
    if is_dense(policy):
        return growth
    if not compacts(policy):  # evicted slots stay in flash: the cache grows with the whole conversation
        policy = policy.model_copy(update={"budget": None, "budget_fraction": None, "reclaim": "auto"})
    scale = stored_scale(policy, kv_streams)
    kinds = [(b * scale, w) for b, w in ([(per_token, math.inf), *windowed] if per_token else windowed)]
    f = policy.budget_fraction or 1.0
    cap = policy.budget if policy.budget is not None else math.inf
    full, capped = 0.0, []
    for b, w in kinds:
        limit = min(w, cap) / f
        if math.isinf(limit):
            full += b * f
        else:
            capped.append((b * f, limit))
    return full, tuple(capped)


def summary(policy: KvPolicy) -> dict:
    """The policy as the record's config shows it."""
    return policy.model_dump(exclude={"source", "note"})
