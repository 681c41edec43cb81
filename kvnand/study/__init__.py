"""Studies over evaluate(): a sweep of report points with its on-disk cache (sweep.py, cache.py), the published
results held against the model (validate.py), and design-space exploration (dse/). Printing and drawing are
kvnand.present's and kvnand.cli's."""
