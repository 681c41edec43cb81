"""`python -m benchmarks`: run every benchmark, print a table against the targets, keep the results.

    python -m benchmarks                 # everything (about a minute on a 2-core machine)
    python -m benchmarks --quick         # a fast subset (fewer repetitions, shorter sweeps)
    python -m benchmarks --only fast,event --no-write
    python -m benchmarks --baseline-files DIR  # this tree with DIR's files (e.g. old versions) laid over it

Results go to benchmarks/results/<UTC timestamp>.json and benchmarks/results/latest.json (schema
`kvnand.benchmarks/1`), the scaling figure to benchmarks/results/scaling.png; a `--baseline-files` run only to
<UTC timestamp>-baseline.json. Exit code 0 unless a benchmark could not run (a missed target is reported, not an
error: speed depends on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import cases, dse_run
from benchmarks.measure import REPO, Code, Result, load_average, overlay_tree, table, use_tree

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS = ("startup", "fast", "scaling", "event", "grid", "report", "batch", *dse_run.ALL)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description="Speed benchmarks of kvnand (issue 9).")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and shorter sweeps")
    ap.add_argument("--no-write", action="store_true", help="print only; write no result files or figure")
    ap.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of: {', '.join(GROUPS)}")
    ap.add_argument("--baseline-files", type=Path, metavar="DIR",
                    help="measure a temporary copy of this tree with DIR's files laid over it (e.g. the old versions "
                    "of optimized files), for before/after numbers under the same load; results get a -baseline "
                    "suffix and do not replace latest.json")
    args = ap.parse_args(argv)
    if args.baseline_files:
        use_tree(overlay_tree(args.baseline_files))
        print(f"[benchmarks] measuring {Code.root} (this tree + {args.baseline_files})", file=sys.stderr)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group(s) {unknown}; known: {', '.join(GROUPS)}")

    started = datetime.now(UTC)
    load_before = load_average()
    results: list[Result] = []
    scaling_data = None
    failures = 0
    for g in GROUPS:
        if g not in groups:
            continue
        t0 = time.perf_counter()
        print(f"[benchmarks] {g} ...", file=sys.stderr, flush=True)
        try:
            if g == "scaling":
                res, scaling_data = cases.scaling(args.quick)
            elif g == "batch":
                from benchmarks import batch

                res = batch.run(args.quick)
            else:
                res = {**cases.ALL, **dse_run.ALL}[g](args.quick)
        except Exception as exc:  # one broken group must not hide the others
            failures += 1
            res = [Result(g, "group failed", "", None, error=f"{type(exc).__name__}: {exc}")]
        results += res
        print(f"[benchmarks] {g} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    load_after = load_average()
    print(table(results))
    print(f"\nload average before/after: {load_before} / {load_after} on {os.cpu_count()} CPUs "
          f"(other processes slow every wall-clock number)")
    doc = {
        "schema": "kvnand.benchmarks/1",
        "timestamp": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "groups": groups,
        "git": _git_commit(),
        "tree": None if Code.root == REPO else {"baseline_files": str(args.baseline_files)},
        "host": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                 "load_before": load_before, "load_after": load_after},
        "results": [r.as_dict() for r in results],
        "scaling": scaling_data,
    }
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
        text = json.dumps(doc, indent=1)
        if Code.root != REPO:
            (RESULTS / f"{stamp}-baseline.json").write_text(text)
            written = [RESULTS / f"{stamp}-baseline.json"]
        else:
            (RESULTS / f"{stamp}.json").write_text(text)
            (RESULTS / "latest.json").write_text(text)
            written = [RESULTS / f"{stamp}.json", RESULTS / "latest.json"]
            if scaling_data is not None:
                cases.scaling_figure(scaling_data, RESULTS / "scaling.png")
                written.append(RESULTS / "scaling.png")
        print("wrote " + ", ".join(str(p.relative_to(REPO)) for p in written))
    errors = [r for r in results if r.error]
    return 1 if errors or failures else 0


if __name__ == "__main__":
    sys.exit(main())
