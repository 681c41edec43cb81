"""The result record of `kvnand.evaluate()` and `kvnand report --format json`, field by field.

FIELDS maps every dotted path of a record to (unit, meaning); `<stage>`, `<store>` and the like stand for
keys that vary with the system, `[]` for the items of a list. `kvnand fields` prints this table, and
tests/test_fields.py evaluates points of every kind (fitting, out of memory, KVNAND-D:auto, event mode,
with refresh) and fails when a record has a path not listed here or a listed path no record has, so the
documentation cannot drift from the code.
"""

from __future__ import annotations

# keys whose sub-keys vary (a stage, a resource, a memory...): documented once, by a placeholder
VARYING = {
    "breakdown_s": "<stage>", "breakdown_by_resource_s": "<resource>", "busy_s": "<unit>",
    "utilization": "<unit>", "energy_breakdown_j": "<part>", "capacity": "<store>", "actions": "<action>",
    "config.overrides": "<key>", "power_breakdown_w": "<part>", "config.kv_policy": "<field>",
}

FIELDS: dict[str, tuple[str, str]] = {
    "system": ("", "system preset or YAML path as given; NAME:auto picks the fastest G1/G2 split"),
    "model": ("", "model name (zoo name, or the name in the HF config.json given)"),
    "context": ("tokens", "context length: KV cache tokens at the decode step (with batch_contexts: the "
                          "longest sequence's)"),
    "precision": ("", "weights/activations precision (bf16, w8a8, w4a16); the system's default unless given"),
    "mode": ("", "timing engine: fast (analytic), event (scheduled timeline) or page (page-level events)"),
    "oom": ("", "true when the weights or the KV cache do not fit; the timing fields are then null"),
    "oom_reason": ("", "which memory is short and by how much (null when it fits)"),
    "max_context": ("tokens", "longest context that fits (0 when even the weights do not); batched: for every "
                              "sequence; with batch_contexts: the longest's, every sequence scaled with it"),
    "model_max_context": ("tokens", "longest context the model's positions are trained or scaled for "
                                    "(max_position_embeddings, or YaRN's reach)"),
    "beyond_model_context": ("", "true when the context exceeds model_max_context: the cost is modelled, "
                                 "the model's output there is not"),
    "tokens_per_s": ("tokens/s", "decode throughput of one request, 1 / latency_s"),
    "latency_s": ("s", "time per generated token of one request: one decode step (batched: step_latency_s; "
                       "speculative: step_latency_s / expected tokens per step), refresh included when asked for"),
    "energy_j_per_token": ("J/token", "energy per generated token (batched or speculative: the step's energy / "
                                      "tokens_per_step)"),
    "batch": ("sequences", "with batch or spec_draft: sequences decoded together in one step"),
    "batch_contexts": ("tokens", "with batch_contexts: each sequence's own context, in the order given (context is "
                                 "the longest; max_context the longest's, every sequence scaled with it)"),
    "queries_per_step": ("tokens", "query tokens one step carries: batch x (k + 1) when verifying k drafts, "
                                   "else batch; every weight page serves all of them"),
    "tokens_per_step": ("tokens", "expected tokens the step generates over all sequences: batch x (1 - a^(k+1)) "
                                  "/ (1 - a) with speculation, else batch"),
    "step_latency_s": ("s", "time of one batched (and speculative: k draft steps + verification) decode step; "
                            "null when out of memory"),
    "aggregate_tokens_per_s": ("tokens/s", "tokens/s over all sequences: tokens_per_step / step_latency_s"),
    "speculation": ("", "with spec_draft: the speculative decoding setup"),
    "speculation.draft": ("", "draft model name"),
    "speculation.draft_placement": ("", "placement.draft: 'weights' (like the target) or 'npu' (weights and KV "
                                        "in DRAM, on the NPU)"),
    "speculation.k": ("tokens", "draft tokens per sequence verified per step"),
    "speculation.accept_rate": ("", "probability a draft token is accepted (an input)"),
    "speculation.expected_tokens_per_step": ("tokens", "(1 - a^(k+1)) / (1 - a) per sequence (Leviathan et al., "
                                                       "ICML 2023)"),
    "power_w": ("W", "average decode power: energy_j_per_token x tokens_per_s (batched or speculative: x "
                     "aggregate_tokens_per_s)"),
    "power_breakdown_w": ("W", "average decode power by part; sums to power_w"),
    "power_breakdown_w.<part>": ("W", "average power of one part (energy_breakdown_j.<part> x tokens_per_s)"),
    "ttft_s": ("s", "time to first token: prefill of prefill_tokens prompt tokens (with batch_contexts and no "
                    "prefill_tokens given: every prompt at its own context, those of one length together)"),
    "prefill_tokens": ("tokens", "prompt length of the TTFT (the context unless given; with batch_contexts the "
                                 "longest prompt's)"),
    "breakdown_s": ("s", "decode step time by model stage; sums to the step time (latency_s, or step_latency_s "
                         "when batched or speculative)"),
    "breakdown_s.<stage>": ("s", "time of one stage (qkv, attention, ffn, ..., kv_select, kv_gc, draft, refresh)"),
    "breakdown_by_resource_s": ("s", "decode step time by the resource that bounds it"),
    "breakdown_by_resource_s.<resource>": ("s", "time during which this resource is the bottleneck"),
    "busy_s": ("s", "busy time of each hardware unit during the step"),
    "busy_s.<unit>": ("s", "busy time of one unit (npu, ch, ifc, g1, g2, ...)"),
    "utilization": ("", "busy_s / latency_s per unit"),
    "utilization.<unit>": ("", "fraction of the step the unit is busy (0..1)"),
    "energy_breakdown_j": ("J/token", "energy of the step by part; sums to energy_j_per_token"),
    "energy_breakdown_j.<part>": ("J/token", "energy of one part (flash array read, channel, NPU, ...)"),
    "bottleneck": ("", "the resource bounding the step and its share of the step"),
    "actions": ("count", "hardware actions of one decode step, priced by the energy tables"),
    "actions.<action>": ("count", "number of one action (bits sensed, MACs, channel bits, ...) per token"),
    "capacity": ("", "each memory store the model uses: what it needs and what it has"),
    "capacity.<store>": ("", "one store (e.g. 'G2 flash (4 dies, KV)')"),
    "capacity.<store>.capacity_bytes": ("bytes", "capacity of the store"),
    "capacity.<store>.used_bytes": ("bytes", "bytes the weights and/or KV cache need in it"),
    "cost_usd": ("USD", "memory cost of the system: capacity x price of every memory (kvnand.cost)"),
    "memories": ("", "every memory the system carries, with its capacity and price"),
    "memories[].memory": ("", "role of the memory (IFC flash, DRAM, plain NAND, host DRAM, ...)"),
    "memories[].part": ("", "device preset of the memory"),
    "memories[].units": ("count", "dies (flash) or channels (DRAM)"),
    "memories[].capacity_bytes": ("bytes", "capacity of the memory"),
    "memories[].usd_per_byte": ("USD/byte", "price of the memory, from its device preset"),
    "memories[].cost_usd": ("USD", "capacity_bytes x usd_per_byte"),
    "config": ("", "summary of the resolved configuration"),
    "config.overrides": ("", "--set overrides applied (including the split chosen by :auto)"),
    "config.overrides.<key>": ("", "one override, as given"),
    "config.dies": ("count", "flash dies of the in-flash computing array"),
    "config.channels": ("count", "flash channels"),
    "config.planes_per_die": ("count", "planes per flash die"),
    "config.page_size": ("bytes", "flash page size"),
    "config.fmacs_per_plane": ("count", "floating-point MAC units per plane on the logic die"),
    "config.g1_dies": ("count", "KVNAND-D: dies holding the weights (G1)"),
    "config.g2_dies": ("count", "KVNAND-D: dies holding the KV cache (G2)"),
    "config.kv_store": ("", "where the KV cache lives: colocated, flash_group, dram, nand or csd"),
    "config.kv_mapping": ("", "KV cache layout in flash: page (page-level) or naive"),
    "config.hg_pipeline": ("", "whether the head-group pipeline overlaps KV reads and compute"),
    "config.split": ("", "KVNAND-D:auto: the chosen split as G1+G2 dies"),
    "config.read_compute_fraction": ("", "share of the weight GEMV computed in flash (READ_COMPUTE) rather than "
                                         "shipped to the NPU, where the system splits it"),
    "kv_mapping": ("", "the KV layout in flash (systems whose KV cache is in flash)"),
    "kv_mapping.mapping": ("", "page or naive"),
    "kv_mapping.planes": ("count", "planes holding the KV cache"),
    "kv_mapping.planes_per_stream": ("count", "planes one K or V stream is striped over"),
    "kv_mapping.tokens_per_page_fill": ("tokens", "tokens after which every plane of a stream filled a page"),
    "kv_mapping.program_chunk_bytes": ("bytes", "bytes written by one program operation on a plane"),
    "kv_mapping.programs_per_token": ("count", "program operations per token, all planes, amortized"),
    "kv_mapping.partial_programs_per_page": ("count", "program operations that fill one page (never above nop)"),
    "kv_mapping.nop": ("count", "partial programs a page of the KV dies accepts (die geometry)"),
    "kv_mapping.min_program_bytes": ("bytes", "smallest legal program: whole ECC codewords, at least page / NOP"),
    "kv_mapping.staging_slot_bytes": ("bytes", "staging buffer share of one co-read group of KV streams (page "
                                                "mapping; null for naive)"),
    "kv_mapping.read_amplification": ("", "A: groups of streams sharing every page (1 when a slot holds a program)"),
    "kv_mapping.layout": ("", "the page layout the write granularity leads to (one group per page, A layers per "
                              "page, or the naive log)"),
    "kv_mapping.page_reads_per_token": ("pages", "KV pages sensed in one decode step, all planes"),
    "kv_mapping.busiest_plane_page_reads_per_token": ("pages", "KV pages sensed by the busiest plane, summed over "
                                                               "the step's attention phases"),
    "kv_mapping.useful_kv_bytes_per_token": ("bytes", "KV bytes attention needs in one step (context x KV per "
                                                      "token)"),
    "kv_mapping.sensed_kv_bytes_per_token": ("bytes", "KV bytes sensed in one step (page reads x page size)"),
    "config.kv_policy": ("", "with a KV policy (--kv-policy, kv_policy=, --set kv_policy.FIELD=): its fields"),
    "config.kv_policy.<field>": ("", "one policy field (name, bits, group, metadata_bytes, top_k, top_k_fraction, "
                                     "granularity, selector, selector_channels, budget, budget_fraction, "
                                     "recent_fraction, residual); `kvnand schema` describes them"),
    "kv_policy": ("", "with a KV policy: what it keeps, reads and costs at this point"),
    "kv_policy.name": ("", "policy name"),
    "kv_policy.reclaim": ("", "with eviction: gc (compacted by garbage collection) or none (evicted slots left "
                              "in place), as chosen; null without eviction"),
    "kv_policy.kv_bytes_per_element": ("bytes", "stored bytes per KV element (quantized data + scale/zero share)"),
    "kv_policy.stored_kv_bytes_per_token": ("bytes", "KV bytes one token adds in all layers, selection summaries "
                                                     "included"),
    "kv_policy.stored_tokens": ("tokens", "tokens a full-context layer has written (the conversation)"),
    "kv_policy.held_tokens": ("tokens", "tokens a full-context layer keeps after eviction"),
    "kv_policy.attended_tokens": ("tokens", "tokens a full-context layer attends to per step (top-k in whole "
                                            "units)"),
    "kv_policy.useful_fraction": ("", "attended / written tokens over all layers: the share of the "
                                      "conversation's KV attention uses (the accuracy proxy)"),
    "kv_policy.page_read_fraction": ("", "KV pages sensed / pages of every written token (null: KV not in "
                                         "flash); above useful_fraction when a page holds several selection "
                                         "units or evicted slots"),
    "kv_policy.window_tokens": ("tokens", "tokens of a full-context layer in the full-width residual window "
                                          "(kv_policy.residual, KIVI): read from where it waits, not sensed"),
    "kv_policy.window_memory": ("", "where the residual window waits: per-plane KV buffer (KVNAND-C), SoC KV "
                                    "staging buffer (D, Base-2, a linked device's buffer), drive DRAM buffer "
                                    "(CSD) or DRAM (Base-1, Cambricon); null without one"),
    "kv_policy.window_bytes": ("bytes", "full-width bytes of the residual window, every layer and sequence (its "
                                        "most: residual tokens); only quantized groups are programmed"),
    "kv_policy.selection_page_reads_per_token": ("pages", "pages of selection summaries sensed per decode step"),
    "kv_policy.gc": ("", "garbage collection of evicted slots, per decode token (kvnand.mapping.gc)"),
    "kv_policy.gc.write_amplification": ("", "bytes programmed per byte of new KV (1 without GC)"),
    "kv_policy.gc.copy_bytes_per_token": ("bytes", "valid KV copied back (sensed and programmed again)"),
    "kv_policy.gc.erases_per_token": ("count", "blocks erased per decode token beyond the one erase every KV "
                                               "block needs anyway: the P/E cycles eviction adds"),
    "kv_policy.hot_page_read_probability": ("", "chance a phase reads a page of persistent heavy hitters: 1, as "
                                                "without a policy, so read disturb of the hottest blocks does "
                                                "not drop with selection (the average does: page_read_fraction); "
                                                "null: KV not in flash"),
    "refresh": ("", "with refresh=PROFILE: the read-disturb refresh added to latency and energy"),
    "refresh.profile": ("", "usage profile the refresh is sized for"),
    "refresh.seconds_per_token": ("s", "refresh time amortized per decode token"),
    "refresh.joules_per_token": ("J", "refresh energy amortized per decode token"),
    "refresh.programs_per_token": ("count", "page programs of refresh per decode token"),
    "refresh.erases_per_token": ("count", "block erases of refresh per decode token"),
    "refresh.refreshes_per_day": ("1/day", "block refreshes per day under the profile"),
}


def paths(record: dict, prefix: str = "") -> set[str]:
    """Every documented-style path of a record: varying keys become their placeholder, list items `[]`."""
    out = set()
    for key, value in record.items():
        if key.startswith("_"):
            continue
        path = f"{prefix}{key}"
        out.add(path)
        if path in VARYING and isinstance(value, dict):
            for sub in value.values():
                out.add(f"{path}.{VARYING[path]}")
                if isinstance(sub, dict):
                    out |= paths(sub, f"{path}.{VARYING[path]}.")
        elif isinstance(value, dict):
            out |= paths(value, f"{path}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                out |= paths(item, f"{path}[].")
    return out
