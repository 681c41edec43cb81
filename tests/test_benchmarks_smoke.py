"""The speed benchmarks run (behaviour only: no test asserts how fast anything is; see benchmarks/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # runs the whole quick benchmark suite in a subprocess
def test_quick_benchmarks_run_and_print_the_table(tmp_path):
    env = {**os.environ, "KVNAND_CACHE_DIR": str(tmp_path / "cache")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    results = REPO / "benchmarks" / "results"
    before = sorted(results.glob("*")) if results.is_dir() else []
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--no-write"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("benchmark"))
    for column in ("target", "median", "spread", "ratio", "result"):
        assert column in lines[header]
    rows = lines[header + 2:]
    for name in ("import kvnand", "kvnand --help", "fast evaluate 70B@100k", "event 8B@10k kvnand-c16",
                 "event 70B@100k kvnand-d", "event peak memory", "grid: evaluate() loop", "fast: context 1k->1M"):
        row = next((r for r in rows if r.startswith(name)), None)
        assert row is not None, f"no row for {name!r}:\n{proc.stdout}"
        assert row.split()[-1] in ("pass", "FAIL"), row  # measured against its target, not an error
    assert (sorted(results.glob("*")) if results.is_dir() else []) == before  # --no-write wrote nothing
