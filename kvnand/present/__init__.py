"""Presentation of results, never evaluation: the report table and its geomean speedups (table.py), the
throughput/energy/breakdown/batch/policy figures (figures.py), terminal output that loses no number
(terminal.py), Chrome traces of an event-mode run (trace.py) and the documentation of every record field
(fields.py). Files and JSON go through kvnand.io; the commands are kvnand/cli/.
"""
