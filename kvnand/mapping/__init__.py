"""Mapping: where weights and KV pages live on the flash, and what a decode step reads and writes."""
