"""Engines: one program (kvnand.program) evaluated in closed form (fast) or by events (event)."""
