"""Lowering: a system's placement choices, one registered strategy per axis, turned into the program of a
decode step or a prefill (see step.py). Registries: WEIGHT_HOMES (placement.weights), KV_HOMES (kv.store),
ATTENTION_SITES (placement.attention)."""
