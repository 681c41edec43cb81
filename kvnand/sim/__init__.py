"""Engines: one program (kvnand.sim.program) evaluated in closed form (fast) or by events (event)."""
