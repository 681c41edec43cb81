"""`kvnand report`: sweep (system x model x context) points and present the results.

sweep.py runs the grid (with the on-disk cache of cache.py), table.py prints it and its geomean
speedups, figures.py draws the throughput/energy/breakdown figures, trace.py writes a Chrome trace of
an event-mode run (the typer command is kvnand/cli/report.py). Files and JSON go through kvnand.io.
"""
