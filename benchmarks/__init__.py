"""Speed benchmarks of the simulator itself (issue 9): `python -m benchmarks [--quick] [--no-write]`.

Not run as tests (tests/test_benchmarks_smoke.py only checks that the quick run works). Also here:
`benchmarks.equivalence` (results must not move when the engines are optimized) and its frozen oracle
`benchmarks.reference_engines`.
"""
