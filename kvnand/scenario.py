"""A query (Point: system, model, context, precision, overrides and the decode shape as the user gave them)
resolved once into a Scenario (the System, ModelSpec, Precision and KV policy objects, the context and the draft
model): the one place that knows that a system name may end in ':auto' (pick the fastest G1/G2 split), how
overrides reach the system, that a precision defaults to the system's own, and what a batch and a speculative
decoding setup may be."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from kvnand.errors import InputError

if TYPE_CHECKING:  # the config layer (pydantic) loads on the first resolve(): context parsing stays cheap
    from kvnand.config.schema import KvPolicy, System
    from kvnand.workload.model import ModelSpec
    from kvnand.workload.precision import Precision

AUTO = ":auto"

_SCALE = {"": 1, "k": 1000, "K": 1000, "M": 10**6, "Ki": 1024, "Mi": 1024**2}
_CONTEXT = re.compile(r"(\d{1,12}(?:\.\d{1,12})?)(" + "|".join(s for s in _SCALE if s) + r")?")
MAX_CONTEXT = 10**9  # tokens; far beyond any model's window, small enough that every count stays exact
CONTEXT_HELP = ("positive token counts up to 1e9, optionally with k or K (x1000), M, Ki (x1024) or Mi: "
                "e.g. 128,1k,10k,100k,1Ki")


def split_list(text: str, option: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise InputError("needs at least one comma-separated value", key=option, value=text)
    return list(dict.fromkeys(items))


def parse_context(item) -> int | None:
    """128, "1k" (1000), "10K", "100k", "1Ki" (1024) -> tokens; None when not a positive whole token count."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item if 0 < item <= MAX_CONTEXT else None
    m = _CONTEXT.fullmatch(str(item).strip())
    n = float(m.group(1)) * _SCALE[m.group(2) or ""] if m else 0.0
    return int(n) if 1 <= n <= MAX_CONTEXT and n == int(n) else None


def parse_contexts(text: str, option: str = "--contexts") -> list[int]:
    """`128,1k,10k,100k,1Ki` -> [128, 1000, 10000, 100000, 1024] (the paper's "1K" is 1000 tokens)."""
    out = []
    for item in split_list(text, option):
        n = parse_context(item)
        if n is None:
            raise InputError("not a context length", key=option, value=item, allowed=CONTEXT_HELP)
        out.append(n)
    return list(dict.fromkeys(out))


def parse_batch_contexts(text: str, option: str = "--batch-contexts") -> tuple[int, ...]:
    """`1k,1k,100k` -> (1000, 1000, 100000): one context per listed sequence, repeats kept."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise InputError("needs at least one comma-separated value", key=option, value=text)
    out = tuple(parse_context(item) for item in items)
    for item, n in zip(items, out, strict=True):
        if n is None:
            raise InputError("not a context length", key=option, value=item, allowed=CONTEXT_HELP)
    return out


def context_label(n: int) -> str:
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    if n % 1024 == 0:
        return f"{n // 1024}Ki"
    return str(n)


def parse_sets(items: list[str] | None) -> dict:
    """`--set key.path=value` items -> {key.path: value text} (the loader parses the values)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError("--set takes key.path=value", key="--set", value=item)
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def split_auto(name: str) -> tuple[str, bool]:
    """('kvnand-d', True) for 'kvnand-d:auto'; (name, False) otherwise."""
    return (name.removesuffix(AUTO), True) if name.endswith(AUTO) else (name, False)


MAX_BATCH = 4096
MAX_SPEC_K = 64


def cycle_contexts(contexts, batch: int) -> tuple:
    """The contexts of `batch` sequences from a shorter list, cycled: sequence i has contexts[i mod n]."""
    return tuple(contexts[i % len(contexts)] for i in range(batch))


@dataclass(frozen=True)
class Decode:
    """What one decode step carries: `batch` sequences (None: the plain single-sequence step, whose record
    has no batch fields), each of the point's context or, with `contexts`, of its own (one per sequence;
    token counts or texts like "10k"; `batch` defaults to their number) and, with a draft model
    (`spec_draft`: zoo name or config.json), `spec_k` draft tokens per sequence verified at once, each
    accepted with probability `spec_accept` (an input: from a source, never fitted)."""

    batch: int | None = None
    spec_draft: str | None = None
    spec_k: int | None = None
    spec_accept: float | None = None
    contexts: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.contexts is not None:
            self._check_contexts()
        b = self.batch
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_BATCH):
            raise InputError("batch must be a whole number of sequences", key="batch", value=b,
                             allowed=f"1 to {MAX_BATCH}")
        if self.spec_draft is None:
            for key, value in (("spec_k", self.spec_k), ("spec_accept", self.spec_accept)):
                if value is not None:
                    raise InputError("speculative decoding needs a draft model", key=key, value=value,
                                     allowed="spec_draft (--spec-draft MODEL) with spec_k and spec_accept")
            return
        k, a = self.spec_k, self.spec_accept
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_SPEC_K:
            raise InputError("spec_k (draft tokens per step) must be a whole number", key="spec_k", value=k,
                             allowed=f"1 to {MAX_SPEC_K}")
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a < 1:
            raise InputError("spec_accept (probability a draft token is accepted) is needed", key="spec_accept",
                             value=a, allowed="a number with 0 <= a < 1")

    def _check_contexts(self) -> None:
        given = self.contexts
        if isinstance(given, (str, bytes, dict)) or not hasattr(given, "__len__") or not 1 <= len(given) <= MAX_BATCH:
            raise InputError("batch_contexts needs one context per sequence", key="batch_contexts",
                             value=str(given)[:80], allowed=f"a list of 1 to {MAX_BATCH} contexts")
        contexts = tuple(parse_context(c) for c in given)
        bad = next((c for c, n in zip(given, contexts, strict=True) if n is None), None)
        if None in contexts:
            raise InputError("not a context length", key="batch_contexts", value=bad, allowed=CONTEXT_HELP)
        b = self.batch
        if b is None:
            b = len(contexts)
        elif isinstance(b, int) and not isinstance(b, bool) and b != len(contexts):
            raise InputError(f"batch_contexts has {len(contexts)} contexts for a batch of {b}",
                             key="batch_contexts", value=str(list(given))[:80], allowed=f"exactly {b} contexts")
        object.__setattr__(self, "contexts", contexts)
        object.__setattr__(self, "batch", b)

    @property
    def longest(self) -> int | None:
        """The longest sequence's context (None without per-sequence contexts)."""
        return max(self.contexts) if self.contexts is not None else None

    @property
    def mix(self) -> tuple[tuple[int, int], ...] | None:
        """((context, sequences), ...) in increasing context when the sequences' contexts differ; None when
        they are all equal (or not given): then the step is the equal-context batch itself."""
        if self.contexts is None or len(set(self.contexts)) == 1:
            return None
        return tuple(sorted(Counter(self.contexts).items()))

    @property
    def active(self) -> bool:
        """True when the step is batched or speculative (the record then has the batch fields)."""
        return self.batch is not None or self.spec_draft is not None

    @property
    def sequences(self) -> int:
        return self.batch or 1

    @property
    def queries(self) -> int:
        """Query tokens per sequence and step: the k drafts and the token after them, or one."""
        return self.spec_k + 1 if self.spec_draft is not None else 1

    @property
    def accepted_tokens(self) -> float:
        """Expected tokens a sequence gains per step: (1 - a^(k+1)) / (1 - a) with k drafts accepted with
        probability a each (Leviathan et al., Fast Inference from Transformers via Speculative Decoding,
        ICML 2023, arXiv 2211.17192); 1 without a draft."""
        if self.spec_draft is None:
            return 1.0
        a = float(self.spec_accept)
        return (1 - a ** (self.spec_k + 1)) / (1 - a)


@dataclass(frozen=True)
class Point:
    system: str
    model: str
    context: int
    precision: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    decode: Decode = Decode()

    def __post_init__(self):
        if isinstance(self.context, bool) or not isinstance(self.context, int) or self.context < 1:
            raise InputError("context must be a positive number of tokens", key="context", value=self.context)


@dataclass(frozen=True)
class Scenario:
    point: Point
    system: System
    model: ModelSpec
    precision: Precision        # with the KV width the policy stores
    policy: KvPolicy
    draft: ModelSpec | None = None  # the speculative draft model (point.decode.spec_draft)

    @property
    def context(self) -> int:
        return self.point.context


@lru_cache(maxsize=256)
def _model(name: str) -> ModelSpec:
    from kvnand.workload.model import load_model

    return load_model(name)


def resolve_many(system: str, model: str, precision: str | None, overrides: list[dict]) -> list[Scenario]:
    """resolve() of one concrete system and model under each of many overrides (their points at context 1, as
    the context-independent parts of a design need): the system's files are found and checked once, and the
    policy and precision of overrides without KV-policy keys are resolved once per precision."""
    from kvnand.config.loader import load_systems

    if split_auto(system)[1]:
        raise InputError("resolve one G1/G2 split at a time", key="system", value=system)
    spec = _model(model)
    memo: dict = {}
    return [_scenario(Point(system, model, 1, precision, ov), s, spec, memo)
            for ov, s in zip(overrides, load_systems(system, overrides), strict=True)]


def _scenario(point: Point, system: System, spec: ModelSpec, memo: dict | None = None) -> Scenario:
    """The scenario of a point on its loaded system; `memo`: (policy, precision) by precision name, for points
    whose overrides name no KV policy (resolve_many's)."""
    from kvnand.config.loader import is_policy_key

    name = point.precision or system.default_precision
    if memo is None or any(is_policy_key(k) for k in point.overrides):
        policy, precision = _policy_precision(point.overrides, name)
    else:
        policy, precision = memo.get(name) or memo.setdefault(name, _policy_precision({}, name))
    draft = point.decode.spec_draft
    return Scenario(point, system, spec, precision, policy, _model(draft) if draft is not None else None)


def _policy_precision(overrides: dict, precision: str) -> tuple:
    from kvnand.workload.kv_policy import apply_precision, resolve_policy
    from kvnand.workload.precision import get_precision

    policy = resolve_policy(overrides)
    return policy, apply_precision(policy, get_precision(precision))


def resolve(point: Point) -> Scenario:
    """The parts of a concrete system point (a ':auto' system is resolved by evaluate(), split by split)."""
    from kvnand.config.loader import load_system

    name, auto = split_auto(point.system)
    if auto:
        raise InputError("resolve one G1/G2 split at a time", key="system", value=point.system)
    # load_system skips the KV-policy overrides, which resolve_policy reads
    return _scenario(point, load_system(name, point.overrides), _model(point.model))
