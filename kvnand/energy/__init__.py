"""Energy: action counts (from the program) x per-action energies (from the part configs) + static power."""
