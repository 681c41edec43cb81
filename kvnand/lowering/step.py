"""Lower one decode step (or one prefill) of a model on a system to a program.

The system's placement picks one strategy per axis from the registries (where weights live, where KV
lives, where attention runs); this module composes them into a layer and a step: the head-group schedule
(pipelined QKV of HG i+1 with attention of HG i, and the O-projection of HG i, when weights and KV are on
different units; all heads at once with head parallelism; else one after another; MLA's latent is one head
group), one loop per layer kind (a windowed kind attends over its window), attention rounds when
the NPU SRAM cannot hold every logits row at once, the LM head, and the amortized KV programs. A KV policy
(kvnand.workload.kv_policy) sets the tokens each layer kind holds and attends to, adds its selection before
each attention and garbage collection of evicted slots after the programs. Every task names the physical
resources it holds; the engines only schedule.

System resources: "ifc" (the weight dies of a co-located design), "g1"/"g2" (KVNAND-D groups), "ch"
(the flash channels), "npu", "dram", "nand" (plain NAND dies), "link" (PCIe), "csd" (the drive),
"host" (host DRAM).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from functools import lru_cache

from kvnand.config.schema import KvPolicy, System
from kvnand.errors import InputError
from kvnand.hw.flash import FlashGroup
from kvnand.hw.units import npu_matmul_pipe, npu_special_pipe
from kvnand.lowering.attention import ATTENTION_SITES
from kvnand.lowering.kv_homes import KV_HOMES
from kvnand.lowering.weights import WEIGHT_HOMES
from kvnand.mapping.capacity import Fit, KvGrowth, Store, check
from kvnand.mapping.gc import NO_GC, GcCost, combine, gc_per_token
from kvnand.mapping.kv import KvLayout, attention_working_set, min_program_bytes
from kvnand.mapping.weights import tile_gemv
from kvnand.program import Loop, Pipeline, Seq, Task, ceil, every, maximum, minimum, single_stage, uniform, where
from kvnand.workload import kv_policy as kvp
from kvnand.workload.graph import Operator, head_operators, layer_operators, prologue_operators
from kvnand.workload.model import LayerKind, ModelSpec
from kvnand.workload.precision import Precision

# the layer operators the attention block lowers together (see Lowering._attention_block); MLA adds its
# query and latent norms, the second query projection and the absorbed W_UK / W_UV
ATTENTION_BLOCK = ("qkv", "q_norm", "q_b", "kv_norm", "kv_b", "rope", "kv_append", "q_absorb", "logit", "softmax",
                   "attend", "v_absorb", "o_proj")


def check_composition(system: System) -> None:
    """One clear error when the registries cannot lower this system's placement."""
    weights, home = WEIGHT_HOMES[system.placement.weights], KV_HOMES[system.kv.store]
    site = ATTENTION_SITES[system.placement.attention]
    for key, value, why in (("placement.weights", weights.name, weights.missing(system)),
                            ("kv.store", home.name, home.missing(system)),
                            ("placement.attention", site.name, site.missing(system, home))):
        if why is not None:
            raise InputError(f"system '{system.name}': {key} '{value}' needs {why}", key=key, value=value)


def heads_per_phase(system: System, model: ModelSpec) -> int:
    """KV heads one attention phase works on: one head group at a time when head groups are pipelined
    (or run serially), every KV head at once with head parallelism."""
    if system.schedule.hg_pipeline and not KV_HOMES[system.kv.store].shares_weight_dies:
        return 1
    return model.kv_heads if system.schedule.head_parallel else 1


def fit(system: System, model: ModelSpec, precision: Precision, context: int, policy: KvPolicy = kvp.DENSE, *,
        batch: int = 1, draft: tuple[System, ModelSpec] | None = None, mix: tuple | None = None) -> Fit:
    """Weights and the KV of `batch` sequences of `context` tokens (or of the contexts of `mix`, whose longest is
    `context`), as the KV policy keeps it (and a draft model's weights and KV, on the system copy that places
    it), against the memories the placement puts them in; `max_context` is then the longest context every one
    of the `batch` sequences can have (with a mix: the longest sequence's, every sequence's context scaled
    with it)."""
    held = stores(system, model, precision, policy, batch, mix)
    if draft is not None:
        held = merge_stores(held, stores(*draft, precision, policy, batch, mix))
    return check(held, context, None if mix is None else f"batch_contexts ({batch} sequences, up to {context} tokens)")


def stores(system: System, model: ModelSpec, precision: Precision, policy: KvPolicy = kvp.DENSE,
           batch: int = 1, mix: tuple | None = None) -> list[Store]:
    """The memories the placement puts weights and the KV of `batch` sequences (as the policy keeps it) in, and
    what each holds; with `mix` ((context, sequences) pairs), the sum of the sequences' KV as a growth in the
    longest one's context (KvGrowth.mixed)."""
    per_token, windowed = kvp.kv_growth(policy, model.kv_growth(precision), model.kv_streams)
    home = KV_HOMES[system.kv.store]
    residual = kvp.residual(policy, precision)
    if residual and home.window_in_home:  # the last `residual` tokens are held at full width, not quantized
        full = dataclasses.replace(precision, kv_width=None)
        windowed = (*windowed, (model.kv_bytes_per_token(full) - model.kv_bytes_per_token(precision), residual))
    if mix is None:
        kv = KvGrowth(per_token * batch, tuple((b * batch, w) for b, w in windowed))
    else:
        kv = KvGrowth(per_token, tuple(windowed)).mixed(mix)
    return home.stores(system, model.weight_bytes(precision), kv, WEIGHT_HOMES[system.placement.weights])


def merge_stores(stores: list[Store], more: list[Store]) -> list[Store]:
    """`more` added to `stores` memory by memory: a store's name up to " (" names its memory ('DRAM (KV)' and
    'DRAM (weights)' are one DRAM); a memory only `more` uses is appended."""
    def memory(st: Store) -> str:
        return st.name.split(" (")[0]

    out = list(stores)
    for extra in more:
        i = next((j for j, st in enumerate(out) if memory(st) == memory(extra)), None)
        if i is None:
            out.append(extra)
            continue
        st = out[i]
        out[i] = Store(st.name, st.capacity_bytes, st.fixed_bytes + extra.fixed_bytes,
                       st.bytes_per_token + extra.bytes_per_token, st.windowed + extra.windowed)
    return out


# (id(system), model, precision) -> (system, error): the system object is kept so its id is not reused
_GLOBAL_BUFFER: dict[tuple, tuple[System, str | None]] = {}


def _global_buffer_error(s: System, wgroup: FlashGroup, m: ModelSpec, p: Precision) -> str | None:
    """The first GEMV whose input vector and per-die partial sums overflow the die's global buffer (once per
    system, model and precision: it does not depend on the context). Several query columns that do not fit
    together take passes over the pages (kvnand.lowering.weights.FlashPe.passes)."""
    key = (id(s), m, p)
    hit = _GLOBAL_BUFFER.get(key)
    if hit is not None and hit[0] is s:
        return hit[1]
    logic, error = s.flash.logic, None
    for op in _gemvs(m, p):
        til = tile_gemv(wgroup, op.in_dim, op.out_dim, p.weight_bytes)
        need = op.in_dim * p.act_bytes + til.cols_per_die * logic.psum_bytes
        if need > logic.global_buffer:
            error = (f"die global buffer: GEMV {op.name} needs {need / 1024:.1f} KiB (input vector + partial "
                     f"sums of {til.cols_per_die} columns) > {logic.global_buffer / 1024:.1f} KiB")
            break
    if len(_GLOBAL_BUFFER) >= 4096:
        _GLOBAL_BUFFER.clear()
    _GLOBAL_BUFFER[key] = (s, error)
    return error


@lru_cache(maxsize=256)
def _gemvs(m: ModelSpec, p: Precision) -> tuple[Operator, ...]:
    """The weight GEMVs of a decode step (the MoE router runs on the NPU), in step order."""
    layer_ops = [op for kind, _ in m.layer_kinds for op in layer_operators(m, p, 1, kind=kind)]
    return tuple(op for op in (*prologue_operators(m, p), *layer_ops, *head_operators(m, p))
                 if op.kind == "gemv" and op.name != "router")


def energy_prefix(g: FlashGroup) -> str:
    """Energy-table prefix of a die group: IFC dies price as 'flash', plain dies as 'nand' or 'csd'."""
    return "flash" if g.name in ("ifc", "g1", "g2") else g.name


class Lowering:
    """The step at `context` tokens. `stored` is the tokens a layer has written to its cache, `held` those the
    KV policy keeps and `L` those attention works over (the policy's top-k of `held`; all three the context,
    or a window, without a policy): the most of any layer kind here, and a kind's own in the copy `for_kind`
    makes to lower that kind's layers.

    Queries per step: the step carries `batch` sequences of `context` tokens and `queries` query tokens per
    sequence (1 for plain decoding, k + 1 to verify k draft tokens). Every weight GEMV becomes a GEMM with
    `cols` = batch x queries columns on the same pages; attention reads each sequence's KV once for its
    queries; `accepted` tokens per sequence (the expected accepted tokens of a verification) are programmed.
    With `mix` ((context, sequences) pairs, the longest `context`) the sequences have different contexts:
    `groups` holds one copy per context with its sequences (`batch`) for their attention; the rest of the
    step (weights, KV writes) serves all `batch` sequences at once."""

    def __init__(self, system: System, model: ModelSpec, precision: Precision, context: int,
                 policy: KvPolicy = kvp.DENSE, *, batch: int = 1, queries: int = 1, accepted: float = 1.0,
                 mix: tuple[tuple[int, int], ...] | None = None):
        self.s, self.m, self.p, self.policy = system, model, precision, policy
        self.batch, self.queries, self.accepted = batch, queries, accepted
        self.cols = batch * queries
        self.residual = kvp.residual(policy, precision)  # tokens of every stream in the full-width window
        self.groups: tuple[Lowering, ...] | None = None
        self._set_context(context)
        self.weights = WEIGHT_HOMES[system.placement.weights]
        self.kv_home = KV_HOMES[system.kv.store]
        self.site = ATTENTION_SITES[system.placement.attention]
        self.split_alpha: float | None = None  # READ_COMPUTE fraction chosen by flash_split, for the record
        self.wgroup, self.kvgroup = self.kv_home.groups(system)
        self.window_buffer_bytes = 0.0  # of one staging buffer, taken by the residual window (_kv_layout)
        self.layout = self._kv_layout()
        # parts that do not depend on the context, made once for this lowering and its copies `at` other
        # contexts (a memoized maker must not read self.context or self.L)
        self._memo: dict = {}
        if mix is not None:
            self.groups = tuple(self._group(c, n) for c, n in mix)

    def _group(self, context: int, sequences: int) -> Lowering:
        """The copy that lowers the attention of the mix's `sequences` sequences of `context` tokens."""
        lw = self.at(context)
        lw.batch = sequences
        return lw

    def _set_context(self, context) -> None:
        self.context = context
        self._set_stored(_longest(k.context(context) for k, _ in self.m.layer_kinds))

    def _set_stored(self, stored) -> None:
        """Tokens written to a layer's cache, and from them those the policy holds, attention reads and the
        full-width window keeps."""
        self.stored = stored
        self.held = kvp.held(self.policy, stored)
        self.L = kvp.attended(self.policy, self.held)
        self.window = minimum(self.residual, self.held) if self.residual else 0

    def at(self, context) -> Lowering:
        """This lowering at another context (a number or an array of contexts), sharing what does not
        depend on it: the die groups, the KV layout and the context-independent parts of the program."""
        lw = copy.copy(self)
        lw._set_context(context)
        return lw

    def _once(self, key, make):
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = make()
        return hit

    # ------------------------------------------------------------------ placement of the KV pages
    def _kv_layout(self) -> KvLayout | None:
        g = self.kvgroup
        if g is None:
            return None
        s, m = self.s, self.m
        # head parallelism gives every (head, K|V) its own plane set when there are enough planes
        split = self.kv_home.shares_weight_dies and s.schedule.head_parallel and \
            uniform(g.planes >= m.kv_streams * m.kv_heads)
        hp = heads_per_phase(s, m)
        kw = {}
        if not self.kv_home.staged_in_soc and self.kv_home.on_ifc_dies and s.flash.logic is not None:
            # KV is staged in the plane's own buffer, beside what in-flash attention keeps there
            kw = {"staging_bytes": s.flash.logic.kv_buffer - self.plane_working_set(split, hp),
                  "per_plane_staging": True}
        elif s.kv.buffer is not None:
            kw = {"staging_bytes": s.kv.buffer.size}
        lay = KvLayout(s.kv.mapping, g.planes, m.layers, m.kv_heads, m.head_dim * self.p.kv_bytes, g.page_bytes,
                       split_kv_sets=split, codeword=g.array.ecc.codeword_data,
                       nop=g.die.geometry.partial_programs_per_page, heads_per_phase=hp,
                       streams_per_head=m.kv_streams, summary_units=kvp.summary_units_per_token(self.policy), **kw)
        self.window_buffer_bytes = self._window_buffer_bytes(lay) if kw else 0.0
        if self.window_buffer_bytes:  # the residual window shares the staging buffer with the programs
            lay = dataclasses.replace(lay, staging_bytes=lay.staging_bytes - self.window_buffer_bytes)
        return lay

    def _window_buffer_bytes(self, lay: KvLayout) -> float:
        """Bytes of one staging buffer the full-width residual window takes (its most, `residual` tokens, for
        every sequence): every stream's in the SoC or drive buffer; in a plane's own buffer, those of the
        streams whose next page that plane programs (a stream's window waits where its data is programmed)."""
        if not self.residual:
            return 0.0
        unit16 = lay.unit / self.p.kv_bytes * self.p.act_bytes
        streams = math.ceil(lay.groups_per_set * lay.co_read / lay.planes_per_stream) if lay.per_plane_staging \
            else lay.streams
        return streams * self.residual * unit16 * self.batch

    def window_memory(self) -> str | None:
        """Where the residual window lives: the memory named as in the on-chip errors, or None without one."""
        if not self.residual:
            return None
        if self.layout is None:
            return "DRAM" if self.kv_home.window_in_home else None
        return "per-plane KV buffer" if self.layout.per_plane_staging else self.kv_home.buffer_name

    def window_bytes(self) -> float:
        """Bytes of the full-width residual window of every layer and sequence (at its most)."""
        return self.batch * self.m.kv_bytes(dataclasses.replace(self.p, kv_width=None), self.residual)

    def window_read_counts(self, kv_heads: int) -> tuple:
        """The residual window of a phase's `kv_heads` heads read from the staging buffer instead of sensed
        (counted where the buffer's access energy is priced: SoC and drive buffers; a plane's own buffer is
        part of its PE)."""
        action = self.kv_home.window_read_action
        if not self.window or action is None or self.layout is None or self.layout.per_plane_staging:
            return ()
        return ((action, kv_heads * self.window * self.m.head_dim * self.p.act_bytes * 8),)

    def plane_working_set(self, split: bool, hp: int) -> float:
        """Bytes of a KV plane's buffer that in-flash attention needs (query, partial outputs, chunks)."""
        return self._working_set(self.query_heads_per_pass(split, hp), split, hp)

    def _working_set(self, q_heads: int, split: bool, hp: int) -> float:
        return attention_working_set(q_heads, self.m.head_dim, self.p.act_bytes, self.s.flash.logic.psum_bytes,
                                     self.kvgroup.page_bytes, self.p.kv_bytes, 1 if split else hp)

    def query_heads_per_pass(self, split: bool, hp: int) -> int:
        """Query rows (query heads x query tokens) a KV plane's PE works on at once: every query head of its KV
        head, except for MLA, whose one latent serves all heads and whose absorbed queries (heads x latent
        values) can outgrow the plane buffer, and for several query tokens per sequence. The PE then takes the
        rows in passes over the page it holds in its register (no new sense, the same MACs), as many at once
        as fit beside one minimum KV program when KV is staged there."""
        m = self.m
        q = m.heads // m.kv_heads * self.queries
        if not m.latent_kv and self.queries == 1:
            return q
        g = self.kvgroup
        staged_here = not self.kv_home.staged_in_soc and self.kv_home.on_ifc_dies
        budget = self.s.flash.logic.kv_buffer - (min_program_bytes(
            g.page_bytes, g.die.geometry.partial_programs_per_page, g.array.ecc.codeword_data) if staged_here else 0)
        return max((t for t in range(1, q + 1) if self._working_set(t, split, hp) <= budget), default=1)

    def on_chip_error(self) -> str | None:
        """The first on-chip memory the dataflow overflows (reported like an OOM), or None."""
        error = self.buffer_error()
        return self.logit_error() if error is None and self.logits_overflow() else error

    def buffer_error(self) -> str | None:
        """The first on-chip buffer the dataflow overflows whatever the context (the KV and global buffers)."""
        s, m, lay = self.s, self.m, self.layout
        logic = s.flash.logic if s.flash is not None else None
        if lay is not None and self.site.name == "flash_pe" and logic is not None:
            need = self.plane_working_set(lay.split, lay.heads_per_phase)
            if need > logic.kv_buffer:
                return (f"per-plane KV buffer: in-flash attention needs {need / 1024:.2f} KiB (query, partial "
                        f"outputs, logit chunks) > {logic.kv_buffer / 1024:.2f} KiB")
        if lay is not None and ((lay.mapping == "page" and not lay.staging_fits) or lay.staging_bytes < 0):
            where = "per-plane KV buffer" if lay.per_plane_staging else self.kv_home.buffer_name
            window = (f" beside the full-width residual window of {self.residual} tokens "
                      f"({self.window_buffer_bytes / 1024:.2f} KiB, kv_policy.residual)") if self.residual else ""
            return (f"{where}: {max(lay.staging_bytes, 0) / 1024:.2f} KiB left for KV writes{window} cannot stage "
                    f"one minimum program ({lay.min_program:.0f} B) per active page")
        if logic is not None and logic.global_buffer > 0 and self.weights.name == "flash_pe":
            return _global_buffer_error(s, self.wgroup, m, self.p)
        return None

    def logits_overflow(self):
        """Whether not even one KV head's logits fit the NPU SRAM (per point for a batch of contexts)."""
        return self.logit_rounds() > heads_per_phase(self.s, self.m)

    def logit_error(self) -> str:
        return self.logit_errors(self.L, self._logit_bytes(1))

    def logit_errors(self, tokens, logit_bytes) -> str | list[str]:
        """logit_error()'s wording at these attended tokens and one head group's logit bytes (lists of them, at
        the points of a batch that overflow)."""
        sram = self.s.npu.sram / 2**20
        if isinstance(tokens, list):
            return [f"NPU SRAM: the logits of one head group at {t} tokens ({b / 2**20:.2f} MiB) exceed {sram:.2f} MiB"
                    for t, b in zip(tokens, logit_bytes, strict=True)]
        return f"NPU SRAM: the logits of one head group at {tokens} tokens ({logit_bytes / 2**20:.2f} MiB) exceed " \
               f"{sram:.2f} MiB"

    def _logit_bytes(self, kv_heads: int) -> float:
        return kv_heads * (self.m.heads // self.m.kv_heads) * self.keys_per_head() * self.p.act_bytes

    def keys_per_head(self) -> float:
        """Query-key pairs of one query head of one sequence: each of the q query tokens sees the L cached
        keys and, causally masked, the verification tokens before it."""
        q = self.queries
        return q * self.L + q * (q - 1) / 2

    def logit_rounds(self) -> int:
        """Rounds an attention phase needs so that the logits row of every query head softmax works on at
        once fits the NPU SRAM (head-parallel C otherwise holds every head's row of a layer at once)."""
        sram = self.s.npu.sram
        if not sram or self.site.name == "csd":
            return 1
        return maximum(1, ceil(self._logit_bytes(heads_per_phase(self.s, self.m)) / sram - 1e-12))

    # ------------------------------------------------------------------ shared task makers
    def xfer(self, name: str, stage: str, bytes_per_channel: float, total_bytes: float,
             commands: int = 1) -> Task:
        """A transfer over the flash channels (all channels in parallel, busiest channel's bytes)."""
        ch = self.s.flash.channel if self.s.flash else self.s.nand.channel
        t = commands * ch.command_overhead + bytes_per_channel / ch.rate
        return Task(name, stage, ("ch",), single_stage("channel bus", t), 1, (("ch.bits", total_bytes * 8),))

    def npu_vec(self, name: str, stage: str, elements: float) -> Task:
        return Task(name, stage, ("npu",), npu_special_pipe(self.s.npu, elements), 1,
                    (("npu.special", elements),))

    def kv_reads(self, heads: int) -> tuple[float, float]:
        """Page reads of one attention phase over `heads` KV heads: (busiest plane, total). Every page of the
        held tokens, or the sparse model's expectation when the policy attends to fewer or leaves evicted
        slots in place."""
        lay, pol = self.layout, self.policy
        if self.window:  # the residual window is read from the staging buffer: only older tokens are sensed
            return self._sensed().kv_reads(heads)
        if kvp.evicts(pol) and not kvp.compacts(pol) and self.held < self.stored:
            # uncompacted eviction: the recent window fills its own pages; the heavy hitters lie scattered,
            # token by token, over the pages of everything older (the busiest plane: the two added, an upper
            # bound since they share the planes); never more than every page of the conversation
            recent = round(pol.recent_fraction * self.held)
            new_b, new_t = lay.phase_reads(recent, heads)
            old_b, old_t = lay.sparse_phase_reads(self.stored - recent, self.held - recent, 1, heads) \
                if self.held > recent else (0.0, 0.0)
            all_b, all_t = lay.phase_reads(self.stored, heads)
            return min(all_b, new_b + old_b), min(all_t, new_t + old_t)
        if every(self.L >= self.held):  # (every point of a batch: only dense policies are batched)
            return lay.phase_reads(self.L, heads)
        return lay.sparse_phase_reads(self.held, self.L, pol.granularity, heads)

    def read_fractions(self, heads: int) -> tuple[float, float | None]:
        """(useful fraction, page-read fraction) of a step over every layer kind: attended / written tokens (the
        accuracy proxy), and KV pages sensed by phases over `heads` KV heads / pages of every written token
        (None when the KV is not in flash)."""
        kinds = [(self.for_kind(kind), n) for kind, n in self.m.layer_kinds]
        useful = sum(n * lw.L for lw, n in kinds) / sum(n * lw.stored for lw, n in kinds)
        if self.layout is None:
            return useful, None
        sensed = sum(n * lw.kv_reads(heads)[1] for lw, n in kinds)
        dense = sum(n * self.layout.phase_reads(lw.stored, heads)[1] for lw, n in kinds)
        return useful, sensed / dense if dense else 1.0

    def _sensed(self) -> Lowering:
        """This lowering over the tokens in flash pages: those older than the residual window (at least one: a
        context within the window is charged one page, so that every site's read pipeline stays one)."""
        lw = copy.copy(self)
        lw.stored, lw.held, lw.L = (maximum(x - self.window, 1) for x in (self.stored, self.held, self.L))
        lw.window = 0
        return lw

    def _summaries(self) -> Lowering:
        """This lowering over the policy's summary vectors instead of the held tokens (all of them read)."""
        lw = copy.copy(self)
        lw.L = lw.held = lw.stored = kvp.summary_vectors_read(self.policy, self.held, self.m.head_dim)
        lw.window = 0
        return lw

    def selection_reads(self, heads: int) -> tuple[float, float]:
        """Page reads of the selection's summaries for `heads` KV heads: (busiest plane, total)."""
        return self._summaries().kv_reads(heads)

    def selection(self, kv_heads: int) -> Seq:
        """The policy's selection for `kv_heads` KV heads: the query against every summary vector (stored in
        the KV home beside the keys and read like them: all of their pages), then the top-k."""
        m = self.m
        lw = self._summaries()
        q_heads = kv_heads * (m.heads // m.kv_heads)
        macs = q_heads * self.queries * lw.L * (m.attn_macs_per_key // (2 * m.heads))
        return self.site.select(lw, kv_heads, q_heads, macs, kvp.scored_items(self.policy, self.held))

    def gc(self) -> GcCost:
        """Garbage collection per token of the KV slots the policy's eviction invalidates (none without)."""
        lay, pol = self.layout, self.policy
        if lay is None or not kvp.compacts(pol):
            return NO_GC
        block = self.kvgroup.page_bytes * self.kvgroup.die.geometry.pages_per_block
        per_layer = lay.written_bytes_per_token / lay.layers
        costs = []
        for kind, n in self.m.layer_kinds:
            tokens = kind.context(self.context)
            kept = kvp.held(pol, tokens)
            written = n * per_layer
            costs.append((written, gc_per_token(written, block, tokens, kept, round(pol.recent_fraction * kept))))
        return combine(costs)

    def softmax(self, q_heads: int) -> Task:
        return self.npu_vec("softmax", "softmax", q_heads * self.keys_per_head())

    part = staticmethod(energy_prefix)

    def kv_sense_action(self) -> str:
        """The action that counts sensed KV bits (IFC dies also sense weights, counted apart)."""
        prefix = self.part(self.kvgroup)
        return "flash.kv_sense_bits" if prefix == "flash" else f"{prefix}.sense_bits"

    def sense_counts(self, g: FlashGroup, pages: float, macs: float, kv: bool = False) -> tuple:
        prefix = self.part(g)
        ecc_bits = pages * g.page_bytes * 8 * (1 + g.array.ecc.codeword_parity / g.array.ecc.codeword_data)
        sense = self.kv_sense_action() if kv else f"{prefix}.sense_bits"
        return ((sense, pages * g.page_bytes * 8), (f"{prefix}.macs", macs),
                (f"{prefix}.ecc_decode_bits" if g.array.ecc.location == "on_die" else "ctrl.ecc_decode_bits",
                 ecc_bits))

    # ------------------------------------------------------------------ a layer, a step
    def gemv(self, name: str, stage: str, in_dim: int, out_dim: int) -> Seq:
        return Seq(self.weights.gemv_parts(self, name, stage, in_dim, out_dim))

    def attention(self, kv_heads: int) -> Seq | Loop:
        """Logit, softmax, attend for `kv_heads` KV heads (and their query heads) of one layer, sequence by
        sequence (each reads its own KV once for its query tokens; sequences of one context share a loop)."""
        if self.groups is not None:
            return Seq(tuple(g.attention(kv_heads) for g in self.groups), name="sequences")
        m, q = self.m, self.queries
        q_heads = kv_heads * (m.heads // m.kv_heads)
        # MACs of one phase: the mean of Logit's and Attend's per key and query head (head_dim for both, except
        # MLA's latent and its compressed part), over the cached keys; the policy's selection first
        per_key = m.attn_macs_per_key // (2 * m.heads)
        one = self.site.lower(self, kv_heads, q_heads, q_heads * q * self.L * per_key)
        if self.policy.selector is not None:
            one = Seq((self.selection(kv_heads), one))
        if q > 1:
            # the verification tokens' keys among themselves (causal), still on the NPU beside their queries
            macs = 2 * q_heads * q * (q - 1) / 2 * per_key
            one = Seq((one, Task("attention.causal", "attention", ("npu",),
                                 npu_matmul_pipe(self.s.npu, macs, self.p.mac_kind), 1, (("npu.ops", 2 * macs),))))
        return one if self.batch == 1 else Loop(one, self.batch, name="sequences")

    def _qkv(self, kv_heads: int):
        """QKV GEMV of `kv_heads` head groups, split into (input broadcast, compute, rest)."""
        m = self.m
        q_heads = kv_heads * (m.heads // m.kv_heads)
        bcast, compute, out = self.weights.gemv_parts(self, "qkv", "qkv", m.hidden,
                                                      (q_heads + 2 * kv_heads) * m.head_dim)
        tail = (out, self.npu_vec("rope", "npu_vector", (q_heads + kv_heads) * m.head_dim * self.cols),
                self.kv_home.append(self, 2 * kv_heads * m.head_dim * self.p.kv_bytes * self.cols))
        return bcast, compute, Seq(tail)

    def _attention_rounds(self, heads: int):
        """Attention of `heads` KV heads at once, in rounds when their logits overflow the NPU SRAM (a mix's
        sequences of each context in the rounds their own logits need)."""
        if self.groups is not None:
            return Seq(tuple(g._attention_rounds(heads) for g in self.groups), name="sequences")
        r = self.logit_rounds()
        # a batch whose points need different rounds takes the loop everywhere (one round: the same numbers)
        return self.attention(heads) if every(r == 1) else Loop(self.attention(ceil(heads / r)), r,
                                                                name="attention rounds (NPU SRAM)")

    def _mla_block(self, ops: list[Operator], kind: LayerKind) -> list:
        """MLA's attention block, one operator after another (the latent is one head group; an expanded cache
        has every head's K and V, attended at once or head group by head group)."""
        m, parts = self.m, []
        hp = heads_per_phase(self.s, m)
        for op in ops:
            if op.name not in ATTENTION_BLOCK or op.name in ("softmax", "attend"):
                continue
            if op.name == "logit":
                parts.append(self._attention_rounds(hp) if hp == m.kv_heads else
                             Loop(self.attention(1), m.kv_heads, name="head groups (serial)"))
            elif op.kind == "kv_write":
                parts.append(self._once(("append", op.kv_bytes),
                                        lambda op=op: self.kv_home.append(self, op.kv_bytes * self.cols)))
            else:
                parts.append(self._once(("mla", kind, op.name), lambda op=op: self._place(op, op.name)))
        return parts

    def _attention_block(self):
        """QKV and attention of a layer, plus the O-projection when it joins the head-group pipeline."""
        m, sch = self.m, self.s.schedule
        heads = heads_per_phase(self.s, m)
        bcast, compute, rest = self._once(("qkv", heads), lambda: self._qkv(heads))
        o_full = (m.heads * m.head_dim, m.hidden)
        o_proj = self._once("o_proj", lambda: self.gemv("o_proj", "o_proj", *o_full))
        if heads == m.kv_heads:
            return [bcast, compute, rest, self._attention_rounds(heads), o_proj]
        if sch.hg_pipeline and not self.kv_home.shares_weight_dies:
            # discrete designs: QKV of HG i+1 (weights' dies) overlaps attention of HG i (KV's home); the QKV
            # input vector is the same for every head group, so it is broadcast once
            if not sch.overlap_o_proj:
                return [bcast, Pipeline(compute, Seq((rest, self.attention(1))), m.kv_heads, name="head groups"),
                        o_proj]
            # O-projection rows of HG i run on the weights' dies as soon as its attention output is back; the
            # partial sums accumulate in the dies' global buffers and leave once per layer
            o_in, o_compute, o_out = self._once("o_proj parts", lambda: self.weights.gemv_parts(
                self, "o_proj", "o_proj", (m.heads // m.kv_heads) * m.head_dim, m.hidden))
            return [bcast, Pipeline(compute, Seq((rest, self.attention(1), o_in, o_compute)), m.kv_heads,
                                    name="head groups"), o_out]
        return [bcast, Loop(Seq((compute, rest, self.attention(1))), m.kv_heads, name="head groups (serial)"),
                o_proj]

    def _place(self, op: Operator, stage: str) -> Task | Seq:
        """A vector operator on the NPU's special-function units, the MoE router on the NPU's PE array, a
        GEMV on the weights' home (each once per query column)."""
        if op.kind == "vector":
            return self.npu_vec(op.name, "npu_vector", op.elements * self.cols)
        if op.name == "router":
            macs = op.macs * self.cols
            return Task("router", stage, ("npu",), npu_matmul_pipe(self.s.npu, macs, self.p.mac_kind), 1,
                        (("npu.ops", 2 * macs),))
        return self.gemv(op.name, stage, op.in_dim, op.out_dim)

    def for_kind(self, kind: LayerKind) -> Lowering:
        """This lowering with attention over the context `kind`'s layers attend over."""
        lw = copy.copy(self)
        lw._set_stored(kind.context(self.context))
        if self.groups is not None:
            lw.groups = tuple(g.for_kind(kind) for g in self.groups)
        return lw

    def layer(self, kind: LayerKind) -> Seq:
        """The workload's layer operators of `kind` in order; QKV through the O-projection form the attention
        block, scheduled by head groups, over the context the kind attends over."""
        lw = self.for_kind(kind)
        # the operator sequence does not depend on the context (attention is lowered from L, not from its
        # operators' counts): listed once
        ops = self._once(("ops", kind), lambda: layer_operators(self.m, self.p, 1, kind=kind))
        parts = []
        for op in ops:
            if op.name == "qkv":
                parts += lw._mla_block(ops, kind) if self.m.mla else lw._attention_block()
            elif op.name not in ATTENTION_BLOCK:
                parts.append(self._once(("ffn", kind, op.name), lambda op=op: lw._place(op, "ffn")))
        return Seq(tuple(parts), name="layer")

    def layers(self) -> list[Loop]:
        """One loop per layer kind over its layers (their order within the step does not change its cost)."""
        kinds = self.m.layer_kinds
        return [Loop(self.layer(k), n, name="layers" if len(kinds) == 1 else f"layers ({_label(k)})")
                for k, n in kinds]

    def decode_step(self) -> Seq:
        # (the READ_COMPUTE fraction flash_split chose is the one of the step's own GEMVs, made here)
        (prologue, head, kv), self.split_alpha = self._once("step", lambda: ((
            [self._place(op, "lm_head") for op in prologue_operators(self.m, self.p)],
            [self._place(op, "lm_head") for op in head_operators(self.m, self.p)], self.kv_home.program(self)),
            self.split_alpha))
        return Seq((*prologue, *self.layers(), *head, kv), name="decode step")

    def prefill(self, n: int) -> Seq:
        """Prefill of n prompt tokens of each of the `batch` sequences: GEMMs on the NPU (or host) with weights
        streamed once per layer, causal attention on the NPU (a windowed layer's queries see at most `window`
        keys; each sequence its own), the prompts' KV written to its home."""
        m, p, b = self.m, self.p, self.batch
        loops = []
        for kind, count in m.layer_kinds:
            per_layer_w = self._once(("weights", kind), lambda k=kind: sum(x.in_dim * x.out_dim * x.active
                                                                          for x in m.matrices(k.moe)))
            stream = self.weights.prefill_stream(self, per_layer_w * n * b, per_layer_w * p.weight_bytes)
            attn_macs = m.prefill_macs_per_key * _causal_keys(n, kind.window) * b
            attn = Task("layer.attention", "prefill", ("npu",), npu_matmul_pipe(self.s.npu, attn_macs, p.mac_kind),
                        1, (("npu.ops", 2 * attn_macs),))
            soft = self.npu_vec("layer.softmax", "prefill", m.heads * _causal_keys(n, kind.window) * b)
            loops.append(Loop(Seq((stream, attn, soft)), count, name="layers"))
        write = self.kv_home.prefill_write(self, self.kv_bytes_held(n) * b)
        return Seq((*loops, write), name="prefill")

    def kv_bytes_held(self, n: int) -> float:
        """Bytes of the KV cache (and the policy's summaries) the KV home holds after `n` prompt tokens (a residual
        window at full width in DRAM; in a staging buffer, not in the home)."""
        m, p, pol = self.m, self.p, self.policy
        if kvp.is_dense(pol):
            return m.kv_bytes(p, n)
        unit = m.kv_bytes_per_token_layer(p) * kvp.stored_scale(pol, m.kv_streams)
        keep = (lambda t: kvp.held(pol, t)) if kvp.compacts(pol) else (lambda t: t)
        held = sum(count * unit * keep(k.context(n)) for k, count in m.layer_kinds)
        if not self.residual:
            return held
        # the prompt's last `residual` tokens stay at full width: in DRAM, or in the staging buffer (not programmed)
        window = min(self.residual, n)
        if self.kv_home.window_in_home:
            return held + m.kv_bytes(dataclasses.replace(p, kv_width=None), window) - m.kv_bytes(p, window)
        return held - m.kv_bytes(p, window)


def _causal_keys(n: int, window: int | None) -> float:
    """Query-key pairs of a causal prefill of n tokens, each query seeing at most `window` keys."""
    if window is None:
        return n * (n + 1) / 2
    return where(window >= n, n * (n + 1) / 2, window * (window + 1) / 2 + (n - window) * window)


def _longest(contexts):
    """The largest of the layer kinds' contexts (per point for a batch)."""
    out = None
    for c in contexts:
        out = c if out is None else maximum(out, c)
    return out


def _label(kind: LayerKind) -> str:
    return ", ".join(x for x in ("full" if kind.window is None else f"window {kind.window}",
                                 "MoE" if kind.moe else "") if x)
