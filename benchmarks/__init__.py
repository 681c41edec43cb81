"""Speed benchmarks of the simulator itself (issue 9): `python -m benchmarks [--quick] [--no-write]`.

benchmarks/dse_run.py (issue 14): `kvnand dse run` trials/s and duplicate evaluations, reliability per design
before/after, and command start-up against `python -c "import numpy"` (groups dse, reliability, startup14).

Not run as tests (tests/test_benchmarks_smoke.py only checks that the quick run works). Also here:
`python -m benchmarks.equivalence`, which checks that a speed change altered no result (the current tree's
`kvnand.evaluate` records against a baseline copy of source files, `--baseline-files DIR`, or a saved run).
"""
