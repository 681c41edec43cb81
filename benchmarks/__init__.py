"""Speed benchmarks of the simulator itself (issue 9): `python -m benchmarks [--quick] [--no-write]`.

Not run as tests (tests/test_benchmarks_smoke.py only checks that the quick run works). Also here:
`python -m benchmarks.equivalence`, which checks that a speed change altered no result (the current tree's
`kvnand.evaluate` records against a baseline copy of source files, `--baseline-files DIR`, or a saved run).
"""
