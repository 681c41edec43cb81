"""Read disturb: per-block page-read counts of a workload on every flash die group of a system.

A block is pages_per_block pages of one plane. Its counter counts reads of any of its pages since its
last erase (that is what disturbs its cells). Two kinds of block:

Weight blocks are never erased by the workload. Every weight page is read once per decode step (MoE
expert pages at the routed rate top_k/experts) and once per prefill. So a block's count grows by its
pages' reads every token until a refresh rewrites it.

KV blocks are written log-structured. Each lane appends its pages to its open block: page-level, a lane
is a group of g streams on one plane; naive, a lane is a plane. A block is erased once it is full and
its pages are stale, i.e. released at the end of their session. Between erases a block's count is the
sum over its pages of the reads each page took while valid: one per (phase that reads it, decode step
whose context exceeds the page's first token). Sessions repeat, so a lane's pages form a periodic
sequence and blocks are consecutive windows of it. The sums are closed-form (prefix sums over one
session's pages, no per-step loop).

Page-level mapping: a page holds one stream and is read once per step. Streams get their own blocks
when the plane has enough (KVNAND-C). KVNAND-D stripes every stream over every G2 plane, so g streams
share a block: their pages interleave, and g is the fewest that fit the plane's blocks. Naive mapping:
pages mix streams in generation order (layer, K|V, head). A page is read once per (layer, K|V, head
batch) phase it holds units of; head-parallel C reads all KV heads of a layer in one phase, the
pipelined designs one head group at a time. Block randomization does not change these counts (an
erase resets them whichever block is used next); it changes where the erases land (endurance.py).

A KV policy that senses fewer pages (sparse selection, evicted slots) keeps the share of blocks holding the
tokens it attends to at the dense count (persistent heavy hitters and recent tokens are read every step) and
reads the others less, so that the mean is its page-read fraction of the dense mean (sparse_reading).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from kvnand.config.schema import KvPolicy, System
from kvnand.errors import InputError
from kvnand.hw.flash import FlashGroup
from kvnand.lowering.step import Lowering, check_composition, fit, heads_per_phase
from kvnand.mapping.blocks import naive_page_table, streams_per_block
from kvnand.mapping.capacity import Fit
from kvnand.mapping.kv import KvLayout, naive_plane
from kvnand.reliability.profile import Profile, Session, get_profile, session
from kvnand.scenario import Point, resolve
from kvnand.workload.kv_policy import DENSE, is_dense
from kvnand.workload.model import ModelSpec
from kvnand.workload.precision import Precision

MAPPINGS = ("naive", "page")
_CHUNK = 1 << 22  # elements per numpy temporary when summing naive pages


def steps_reading(first_token, s: Session) -> np.ndarray:
    """Decode steps of session `s` that read a page whose first token is `first_token` (every step whose
    context exceeds it)."""
    t = np.asarray(first_token, dtype=np.int64)[..., None] + 1
    a = np.array([x for x, _ in s.turns], dtype=np.int64)
    b = np.array([y for _, y in s.turns], dtype=np.int64)
    return np.clip(b - np.maximum(a, t), 0, None).sum(axis=-1)


@dataclass(frozen=True)
class Blocks:
    """Kinds of block as parallel arrays: reads (between erases for KV, per decode token for weights), how
    many blocks (KV: written per session; weights: held) and the valid pages a refresh rewrites."""

    reads: np.ndarray
    count: np.ndarray
    pages: np.ndarray

    @staticmethod
    def join(parts: list[Blocks]) -> Blocks:
        return Blocks(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("reads", "count", "pages")))

    def max(self) -> float:
        return float(self.reads.max())

    def quantile(self, q: float) -> float:
        order = np.argsort(self.reads)
        cum = np.cumsum(self.count[order])
        return float(self.reads[order][np.searchsorted(cum, q * cum[-1])])

    def share_over(self, limit: float) -> float:
        return float(self.count[self.reads > limit].sum() / self.count.sum())

    def summary(self, limit: float) -> dict:
        return {"max": self.max(), "mean": float(np.average(self.reads, weights=self.count)),
                "p50": self.quantile(0.5), "p99": self.quantile(0.99), "share_over_limit": self.share_over(limit)}


@dataclass(frozen=True)
class KvLanes:
    """What endurance needs about the lanes: how many, and the busiest lane's blocks per session."""

    lanes: float
    blocks_per_session: float       # of the busiest lane (pages per session / pages per lane block)


@dataclass(frozen=True)
class GroupStress:
    """One die group's blocks under the workload: KV blocks, weight blocks, or both (KVNAND-C)."""

    group: FlashGroup
    kv: Blocks | None
    kv_lanes: KvLanes | None
    weights: Blocks | None

    @property
    def blocks(self) -> int:
        g = self.group.die.geometry
        return self.group.planes * g.blocks_per_plane


@dataclass(frozen=True)
class Workload:
    """A system point under a usage profile: the resolved parts, one session, and every group's blocks."""

    system_name: str
    system_overrides: dict
    system: System
    model: ModelSpec
    precision: Precision
    profile: Profile
    session: Session
    fit: Fit
    groups: tuple[GroupStress, ...]
    rate: float | None = None       # decode tokens/s measured by the caller (evaluate), if the profile has none
    kv_policy: KvPolicy = DENSE     # the workload's KV policy (its width sets the pages; GC adds erases)

    @property
    def mapping(self) -> str | None:
        return self.system.kv.mapping if any(g.kv is not None for g in self.groups) else None

    def tokens_per_s(self) -> float:
        """The profile's decode rate, else the one the caller measured (kvnand.evaluation.evaluate_reliability
        passes the system's own rate at the session's mean decode context)."""
        if self.profile.tokens_per_s is not None:
            return self.profile.tokens_per_s
        if self.rate is None:
            raise InputError("a decode rate is needed for per-day figures", key="profile.tokens_per_s",
                             allowed="a rate in the profile, or kvnand.evaluation.evaluate_reliability(), "
                                     "which measures the system's own")
        return self.rate


def workload(system: str, model: str, context: int, *, precision: str | None = None, mapping: str | None = None,
             overrides: dict | None = None, profile: str | Profile = "continuous",
             tokens_per_s: float | None = None) -> Workload:
    """Resolve a point of a concrete system (a ':auto' split is chosen by the caller). `overrides` holds
    system `--set` keys plus `profile.*` and `refresh.*` keys."""
    overrides = dict(overrides or {})
    prof = get_profile(profile, overrides)
    sys_over = system_overrides(overrides)
    if mapping is not None:
        if mapping not in MAPPINGS:
            raise InputError("unknown KV mapping", key="mapping", value=mapping, allowed=", ".join(MAPPINGS))
        sys_over["mapping"] = mapping
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise InputError("context must be a positive number of tokens", key="context", value=context)
    if system.endswith(":auto"):
        raise InputError("reliability ages one concrete split: choose it first (kvnand.evaluation."
                         "evaluate_reliability resolves ':auto' to the split evaluate() picks)", key="system",
                         value=system)
    sc = resolve(Point(system, model, context, precision, sys_over))  # evaluate()'s parts (the model is cached)
    cfg, spec, prec, kv_policy = sc.system, sc.model, sc.precision, sc.policy
    check_composition(cfg)
    fitted = fit(cfg, spec, prec, context, kv_policy)
    if not fitted.oom:  # a dataflow that overflows an on-chip buffer cannot run: reported like an OOM
        b = Lowering(cfg, spec, prec, context, kv_policy)
        error = b.buffer_error()
        if error is not None:
            fitted = dataclasses.replace(fitted, oom=True, reason=error)
    sess = session(prof, context)
    groups = () if fitted.oom else _groups(b.at(sess.context), cfg, spec, prec, sess, kv_policy)
    return Workload(system, sys_over, cfg, spec, prec, prof, sess, fitted, groups, tokens_per_s, kv_policy)


def system_overrides(overrides: dict) -> dict:
    """The system `--set` keys of `overrides` (without the profile.* and refresh.* keys)."""
    return {k: v for k, v in overrides.items() if not k.startswith(("profile.", "refresh."))}


def _groups(b: Lowering, cfg: System, spec: ModelSpec, prec: Precision, sess: Session,
            kv_policy: KvPolicy = DENSE) -> tuple[GroupStress, ...]:
    """The stress on every die group of the lowering `b` (at the session's context)."""
    wg = b.wgroup if cfg.placement.weights in ("flash_pe", "flash_split") else None
    kg = b.kvgroup
    weights = weight_blocks(spec, prec, wg, sess) if wg is not None else None
    out = []
    if wg is not None and wg is not kg:
        out.append(GroupStress(wg, None, None, weights))
    if kg is not None:
        geo = kg.die.geometry
        held = math.ceil(spec.weight_bytes(prec) / geo.page_size / kg.planes / geo.pages_per_block) if (
            wg is kg) else 0
        hp = heads_per_phase(cfg, spec)
        kv, lanes = kv_blocks(b.layout, geo.pages_per_block, geo.blocks_per_plane - held, sess, hp)
        if not is_dense(kv_policy):  # (dense: every written token attended, every page read)
            kv = sparse_reading(kv, *b.at(sess.mean_decode_context).read_fractions(hp))
        out.append(GroupStress(kg, kv, lanes, weights if wg is kg else None))
    return tuple(out)


# ---------------------------------------------------------------------------------------------- weights
def weight_blocks(model: ModelSpec, prec: Precision, group: FlashGroup, s: Session) -> Blocks:
    """Weight blocks by read rate: dense pages every step, MoE expert pages at top_k/experts, all pages once
    per prefill. An untied embedding table is read one row per token: its blocks are left out as cold.
    Blocks hold one rate class, spread evenly over the group's planes."""
    by_rate: dict[float, float] = {}
    for m, layers in model.layer_matrices():
        rate = m.count_per_token / m.experts
        by_rate[rate] = by_rate.get(rate, 0.0) + layers * m.params
    for m in model.outer_matrices():
        by_rate[1.0] = by_rate.get(1.0, 0.0) + m.params
    geo = group.die.geometry
    ppb = geo.pages_per_block
    per_prefill = s.prefills / s.decode_steps
    reads, count, pages = [], [], []
    for rate, params in by_rate.items():
        per_plane = math.ceil(params * prec.weight_bytes / geo.page_size / group.planes)
        full, rest = divmod(per_plane, ppb)
        for n_pages, n_blocks in ((ppb, full), (rest, 1)):
            if n_pages and n_blocks:
                reads.append(n_pages * (rate + per_prefill))
                count.append(n_blocks * group.planes)
                pages.append(n_pages)
    return Blocks(np.array(reads, float), np.array(count, float), np.array(pages, float))


# ---------------------------------------------------------------------------------------------- KV
def kv_blocks(lay: KvLayout, ppb: int, blocks_per_plane: int, s: Session, heads: int) -> tuple[Blocks, KvLanes]:
    """KV blocks of the layout under repeated sessions `s`: reads between erases of every kind of block."""
    if lay.mapping == "page":
        return _page_level(lay, ppb, blocks_per_plane, s)
    return _naive(lay, ppb, s, heads)


def sparse_reading(kv: Blocks, useful: float, page_read: float) -> Blocks:
    """KV blocks under a policy that senses `page_read` of the pages a dense step reads (its selection, or
    evicted slots left in place) while attending to `useful` of the written tokens (both at the session's mean
    decode context; Lowering.read_fractions). Assumption: the attended tokens are persistent heavy hitters and
    recent tokens, whose pages share blocks (the log writes neighbours together), so a share `useful` of every
    kind of block is hot and read at every step as without a policy: the worst block keeps its dense count.
    The other blocks take the remaining reads, scaled so that the mean is `page_read` of the dense mean.
    Identity when every written token is attended (dense, quantized only)."""
    if useful >= 1.0 or page_read >= 1.0:
        return kv
    cold = (page_read - useful) / (1.0 - useful)   # >= 0: a step senses at least the useful tokens' pages
    return Blocks(np.concatenate([kv.reads, kv.reads * max(cold, 0.0)]),
                  np.concatenate([kv.count * useful, kv.count * (1.0 - useful)]), np.concatenate([kv.pages, kv.pages]))


def _windows(values: np.ndarray, block: int) -> np.ndarray:
    """Sums of consecutive `block`-page windows of periodic page sequences (one period per row), over one
    cycle of n / gcd(n, block) windows: lanes x windows."""
    n = values.shape[1]
    k = n // math.gcd(n, block)
    pre = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)
    x = np.arange(k + 1) * block
    return np.diff((x // n) * pre[:, -1:] + pre[:, x % n], axis=1)


def _lane_blocks(values: np.ndarray, block: int, streams: int, lanes_per_row: float) -> Blocks:
    """Blocks of lanes whose streams have identical page sequences `values` (rows: lanes of one kind)."""
    n = values.shape[1]
    sums = _windows(values, block)
    k = sums.shape[1]
    return Blocks(streams * sums.ravel(), np.full(sums.size, lanes_per_row * n / (block * k)),
                  np.full(sums.size, float(streams * min(block, n))))


def _ceil_div(a, b):
    return -(-a // b)


def _page_level(lay: KvLayout, ppb: int, blocks_per_plane: int, s: Session) -> tuple[Blocks, KvLanes]:
    """Page-level lanes: a share (the A co-read groups that fill pages together) on one plane of its set.
    Page i of a share sits on position i mod P; it is read once per step by each of its A groups."""
    p, a = lay.planes_per_stream, lay.read_amplification
    n_pages = lay.group_pages(s.context)
    pos = np.arange(min(p, n_pages))
    pages = _ceil_div(n_pages - pos, p)                      # pages of a share on each plane position
    tokens_per_page = lay.group_bytes_per_page / (lay.co_read * lay.unit)
    shares_per_set = math.ceil(lay.groups_per_set / a)
    shares = shares_per_set * lay.sets
    hosted = math.ceil(shares_per_set * len(pos) / p)        # shares with pages on one plane
    g = streams_per_block(hosted, int(pages.max()), ppb, blocks_per_plane)
    block = ppb // g
    parts = []
    for n in np.unique(pages):
        rows = pos[pages == n]
        first = np.floor((rows[:, None] + np.arange(n)[None, :] * p) * tokens_per_page + 1e-9).astype(np.int64)
        parts.append(_lane_blocks(a * steps_reading(first, s), block, g, shares / g))
    return Blocks.join(parts), KvLanes(shares / g * len(pos), int(pages.max()) / block)


def _naive(lay: KvLayout, ppb: int, s: Session, heads: int) -> tuple[Blocks, KvLanes]:
    t0, pp, offsets, counts = naive_page_table(lay, heads)
    total = _ceil_div(s.context * lay.streams * int(lay.unit), int(lay.page))
    # reads of every page of a session, computed one run of periods at a time (global page = q * pp + k)
    periods = _ceil_div(total, pp)
    fits32 = int(counts.sum(axis=1).max()) * s.decode_steps < 2**31
    v = np.zeros(periods * pp, np.int32 if fits32 else np.int64)
    step = max(1, _CHUNK // (pp * offsets.shape[1] * len(s.turns)))
    for q0 in range(0, periods, step):
        q = np.arange(q0, min(periods, q0 + step))[:, None, None] * t0
        v[q0 * pp:(q0 + q.shape[0]) * pp] = (counts * steps_reading(q + offsets, s)).sum(axis=-1).ravel()
    # pages go to planes by the log's rotated round-robin (kvnand.mapping.kv.naive_plane); per plane the
    # pages keep their order, and every stripe of `planes` pages puts one page on each plane
    n = _ceil_div(total, lay.planes)
    order = np.argsort(naive_plane(np.arange(n * lay.planes), lay.planes), kind="stable")
    v = np.pad(v[:total], (0, n * lay.planes - total))[order].reshape(lay.planes, n).T
    full = np.zeros(lay.planes, bool)                       # planes holding n pages; the others n - 1
    full[naive_plane(np.arange((n - 1) * lay.planes, total), lay.planes)] = True
    parts = [_lane_blocks(np.ascontiguousarray(v[:, full].T), ppb, 1, 1.0)]
    if n > 1 and not full.all():
        parts.append(_lane_blocks(np.ascontiguousarray(v[:-1, ~full].T), ppb, 1, 1.0))
    return Blocks.join(parts), KvLanes(float(min(lay.planes, total)), n / ppb)
