"""The decode step of a batch of sequences, plain or speculative, as one program.

A plain step is the target model's step with `batch` sequences and one query token each. A speculative step
(Leviathan et al., ICML 2023, arXiv 2211.17192) first runs the draft model's k steps (autoregressive, one
token per sequence each, on the units placement.draft names), then verifies the k drafts and the token after
them in one step of the target model with k + 1 query tokens per sequence; a sequence gains
(1 - a^(k+1)) / (1 - a) tokens per step on average, and only those are programmed into the KV cache.

placement.draft 'weights': the draft runs like the target (its weights and KV in the target's homes, on the
same units); 'npu': its weights and KV in DRAM, its GEMVs and attention on the NPU.
"""

from __future__ import annotations

from kvnand.config.schema import System
from kvnand.lowering.step import Lowering, fit
from kvnand.mapping.capacity import Fit
from kvnand.program import Loop, Seq, restage
from kvnand.scenario import Scenario


def draft_system(system: System) -> System:
    """The system as the draft model sees it: itself, or (placement.draft 'npu') a copy whose weights and KV
    are in its DRAM and whose attention runs on the NPU."""
    if system.placement.draft != "npu":
        return system
    return system.model_copy(update={
        "placement": system.placement.model_copy(update={"weights": "dram", "attention": "npu"}),
        "kv": system.kv.model_copy(update={"store": "dram"})})


class DecodeStep:
    """The lowerings of a scenario's step: `target` (the verified or plain step) and `draft` (None without
    speculation), and the expected tokens a sequence gains per step."""

    def __init__(self, sc: Scenario, target: Lowering | None = None):
        """`target`: the plain step's lowering at this context when the caller keeps one per design (its
        context-independent parts made once); it is then also moved to the prompt's length for the prefill."""
        d = sc.point.decode
        self.sc, self.batch, self.k = sc, d.sequences, (d.spec_k if sc.draft is not None else 0)
        self.tokens_per_sequence = d.accepted_tokens
        self.mix = d.mix  # the sequences' contexts when they differ (sc.context is the longest)
        self._shared = target is not None
        self.target = target or Lowering(sc.system, sc.model, sc.precision, sc.context, sc.policy,
                                         batch=self.batch, queries=d.queries, accepted=self.tokens_per_sequence,
                                         mix=self.mix)
        self.draft_system = draft_system(sc.system) if sc.draft is not None else None
        self.draft = None if sc.draft is None else Lowering(self.draft_system, sc.draft, sc.precision, sc.context,
                                                            sc.policy, batch=self.batch, mix=self.mix)

    def fit(self) -> Fit:
        sc = self.sc
        draft = (self.draft_system, sc.draft) if sc.draft is not None else None
        return fit(sc.system, sc.model, sc.precision, sc.context, sc.policy, batch=self.batch, draft=draft,
                   mix=self.mix)

    def on_chip_error(self) -> str | None:
        error = self.target.on_chip_error()
        if error is None and self.draft is not None:
            error = self.draft.on_chip_error()
            return None if error is None else f"draft model {self.sc.draft.name}: {error}"
        return error

    def program(self):
        step = self.target.decode_step()
        if self.draft is None:
            return step
        drafts = restage(Loop(self.draft.decode_step(), self.k, name="draft steps"), "draft")
        return Seq((drafts, step), name="speculative step")

    def prefill(self, n: int):
        """The prompts' prefill (the draft model's too: it needs its own KV of the prompt). With a mix of
        contexts and n its longest, each sequence's prompt is its own context: the prompts of each length are
        prefilled together, one length after the other."""
        if self.mix is not None and n == self.sc.context:
            return Seq(tuple(self._prefill(c, sequences) for c, sequences in self.mix), name="prefill")
        return self._prefill(n, self.batch)

    def _prefill(self, n: int, batch: int):
        sc = self.sc
        target = self.target if n == sc.context and batch == self.batch else self._target_at(n, batch)
        pre = target.prefill(n)
        if self.draft is None:
            return pre
        draft = Lowering(self.draft_system, sc.draft, sc.precision, n, sc.policy, batch=batch).prefill(n)
        return Seq((pre, restage(draft, "draft")), name="prefill")

    def _target_at(self, n: int, batch: int) -> Lowering:
        if self._shared:  # (a plain step's: one sequence)
            return self.target.at(n)
        sc = self.sc
        return Lowering(sc.system, sc.model, sc.precision, n, sc.policy, batch=batch)
