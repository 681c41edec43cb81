"""Golden records: the whole result record of kvnand.evaluate() is pinned for a grid of points.

This is the safety net for behaviour-preserving refactors: every shipped system preset (and kvnand-d:auto)
x llama2-7b (MHA), llama3.1-8b (GQA), llama3.1-70b (GQA-8), mixtral-8x7b (MoE), opt-30b x contexts 128, 10k,
100k x the fast and the event engine, plus non-default precisions, --set overrides, a refresh profile and a
short prefill (the case list is tests/golden/__init__.py: cases()). Every leaf of every record is compared:
floats within 1e-9 relative, ints, strings, bools and nulls exactly, keys exactly (OOM points pin oom,
oom_reason and max_context). A failure names the case and each key path that moved, golden -> now.

When a change of the numbers is intended (physics, calibration), regenerate from the repository root with

    python -m tests.golden --regen        # or: pytest --regen-golden

and review `git diff tests/golden/` (one file per system, one record per case) before committing. Nothing
regenerates the records implicitly: a missing golden file, or a case missing from it, is a failure.
Event-mode cases of opt-30b are marked `slow` (the bulk of the run); `pytest -m "not slow"` skips them.
"""

from __future__ import annotations

import pytest
from golden import HERE, REGEN_HINT, Case, cases, describe, diff, load, normalize

CASES = cases()


@pytest.fixture(scope="module")
def golden_files():
    """path -> {case id: record}, read once per module; a missing file is recorded as None."""
    return {path: (load(path) if path.exists() else None) for path in sorted({c.file for c in CASES})}


def _golden(golden_files, case: Case) -> dict:
    records = golden_files[case.file]
    if records is None:
        pytest.fail(f"golden file {case.file.name} is missing: {REGEN_HINT}", pytrace=False)
    if case.id not in records:
        pytest.fail(f"golden case {case.id} is not in {case.file.name}: {REGEN_HINT}", pytrace=False)
    return records[case.id]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_record_matches_golden(golden_files, case):
    """Every number, string and key of the record equals the golden one."""
    expected = _golden(golden_files, case)
    moved = list(diff(expected, normalize(case.evaluate())))
    if moved:
        pytest.fail(describe(case.id, moved), pytrace=False)


def test_golden_files_hold_exactly_the_cases():
    """No stale record or file outlives its case, so a dropped case cannot leave numbers nobody checks."""
    expected: dict[str, set[str]] = {}
    for c in CASES:
        expected.setdefault(c.file.name, set()).add(c.id)
    present = {p.name: set(load(p)) for p in HERE.glob("*.json")}
    problems = [f"{name}: missing" for name in sorted(expected.keys() - present.keys())]
    problems += [f"{name}: no case writes this file" for name in sorted(present.keys() - expected.keys())]
    for name in sorted(expected.keys() & present.keys()):
        problems += [f"{name}: stale case {i}" for i in sorted(present[name] - expected[name])]
        problems += [f"{name}: case {i} not recorded" for i in sorted(expected[name] - present[name])]
    if problems:
        pytest.fail("golden files out of step with cases():\n  " + "\n  ".join(problems) + f"\n{REGEN_HINT}",
                    pytrace=False)


def test_the_comparison_names_the_case_the_key_path_and_both_values():
    """The checker itself: a moved float, a changed type, a new key and a missing key are each reported."""
    old = {"latency_s": 1.0, "busy_s": {"g1": 0.5}, "oom": False, "actions": {"flash.macs": 4.0}}
    new = {"latency_s": 1.0 + 1e-12, "busy_s": {"g1": 0.5 + 1e-6}, "oom": 0, "extra": 1}
    moved = {path: (a, b) for path, a, b in diff(old, new)}
    assert moved == {"busy_s.g1": (0.5, 0.5 + 1e-6), "oom": (False, 0), "extra": ("<missing>", 1),
                     "actions": ({"flash.macs": 4.0}, "<missing>")}
    text = describe("kvnand-d/llama3.1-8b/10000/default/fast", list(diff(old, new)))
    assert "kvnand-d/llama3.1-8b/10000/default/fast" in text and "busy_s.g1: 0.5 -> 0.500001" in text
