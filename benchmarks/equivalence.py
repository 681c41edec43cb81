"""Did a speed change alter any result? Compare `kvnand.evaluate` records on a grid against a baseline.

The grid is systems (and overrides, kvnand-d:auto) x models x contexts x precisions in fast mode, plus a smaller
one in event and page modes, OOM points and errors included. Compared: every numeric leaf (1e-9 relative by
default, `--rel`), the key set and key order of every dict, and every string.

    python -m benchmarks.equivalence --baseline-files DIR            # this tree vs this tree with DIR's files
                                                                     # (e.g. the old versions) laid over it
    python -m benchmarks.equivalence --save before.json.gz          # on the old code
    python -m benchmarks.equivalence --against before.json.gz       # on the new code

`--baseline-files` is the robust form while other people edit the tree: both sides run now, on the same
builder, presets and loader; only the files in DIR (paths relative to the repo, e.g. copies of kvnand/sim/*.py
before a change) differ. `--quick` uses a small grid.

Exit code 0 when everything matches, 1 otherwise (the first differences are printed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

REL = 1e-9

MODES_EVENT = ("event", "page")


def _grid(quick: bool):
    from kvnand.config.loader import system_names
    from kvnand.workload.model import zoo_names

    systems = system_names()
    models = zoo_names()
    contexts = [1, 128, 1000, 4096, 10_000, 100_000, 1_000_000]
    precisions = [None, "bf16", "w8a8", "w4a16"]
    if quick:
        models = ["llama3.1-8b", "llama3.1-70b", "mixtral-8x7b", "opt-6.7b"]
        contexts = [128, 100_000]
        precisions = [None]
    variants: list[tuple[str, dict]] = [(s, {}) for s in systems] + [("kvnand-d:auto", {})]
    variants += [("kvnand-c16", {"mapping": "naive"}), ("kvnand-d", {"mapping": "naive"}),
                 ("kvnand-d", {"hg_pipeline": False}), ("kvnand-d", {"g2_dies": 3}),
                 ("kvnand-c16", {"dies": 8}), ("kvnand-d:auto", {"dies": 8}),
                 ("kvnand-c16", {"hg_pipeline": True}), ("kvnand-c16", {"page_size": "4 KiB"}),
                 ("kvnand-d", {"dies": 8, "g2_dies": 4}), ("kvnand-d:auto", {"dies": 8, "g2_dies": 4}),
                 ("kvnand-d:auto", {"kv.g2_dies": 2}), ("kvnand-d:auto", {"mapping": "naive"})]
    fast = [(s, m, c, p, "fast", ov) for s, ov in variants for m in models for c in contexts for p in precisions]
    ev_models = ["llama3.1-8b", "opt-6.7b", "mixtral-8x7b"] + ([] if quick else ["llama2-70b"])
    ev_contexts = [128, 10_000]
    ev_variants = [(s, {}) for s in systems] + [("kvnand-d:auto", {}), ("kvnand-c16", {"mapping": "naive"}),
                                                 ("kvnand-d", {"hg_pipeline": False})]
    event = [(s, m, c, None, mode, ov) for mode in MODES_EVENT for s, ov in ev_variants for m in ev_models
             for c in ev_contexts]
    return fast + event


def _key(point) -> str:
    s, m, c, p, mode, ov = point
    return f"{s}|{m}|{c}|{p}|{mode}|{json.dumps(ov, sort_keys=True)}"


def _record(point) -> dict:
    from kvnand import evaluate
    from kvnand.errors import InputError

    s, m, c, p, mode, ov = point
    try:
        r = evaluate(s, m, c, precision=p, mode=mode, overrides=ov)
    except InputError as exc:  # the message names the preset file: make it independent of the tree's location
        from kvnand.paths import REPO_ROOT

        return {"error": str(exc).replace(str(REPO_ROOT), "<repo>")}
    return json.loads(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, default=float))


def compare(a, b, path: str, out: list[str], rel: float = REL, ordered: bool = True) -> None:
    """Append a line to `out` for every difference between `a` (reference) and `b` (`ordered`: a dict's key order
    counts too)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b) if ordered else set(a) != set(b):
            if set(a) != set(b):
                out.append(f"{path}: keys differ: only before {sorted(set(a) - set(b))}, "
                           f"only after {sorted(set(b) - set(a))}")
            else:
                out.append(f"{path}: key order differs: {list(a)} vs {list(b)}")
        for k in a:
            if k in b:
                compare(a[k], b[k], f"{path}.{k}", out, rel, ordered)
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            compare(x, y, f"{path}[{i}]", out, rel, ordered)
        return
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return
        if abs(a - b) <= rel * max(abs(a), abs(b)):
            return
        out.append(f"{path}: {a!r} vs {b!r} (rel {abs(a - b) / max(abs(a), abs(b)):.3g})")
        return
    if a != b:
        out.append(f"{path}: {a!r} vs {b!r}")


def _baseline_records(overlay: Path, quick: bool) -> Path:
    """Records of a temporary copy of this tree with `overlay`'s files laid over it (in a subprocess)."""
    import os
    import subprocess

    from benchmarks.measure import REPO, overlay_tree

    tmp = overlay_tree(overlay)
    out = tmp / "baseline.json.gz"
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-c", "import kvnand, sys; assert kvnand.__file__.startswith(sys.argv[1]), kvnand.__file__; "
           "from benchmarks.equivalence import run; sys.exit(run(sys.argv[2:]))", str(tmp), "--save",
           str(out)] + (["--quick"] if quick else [])
    n = sum(1 for f in Path(overlay).rglob("*") if f.is_file())
    print(f"baseline: this tree with {n} file(s) of {overlay} laid over it, in {tmp}")
    subprocess.run(cmd, cwd=tmp, env=env, check=True)  # cwd first on sys.path: the copy, not the repo
    return out


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.equivalence", description=__doc__.splitlines()[0])
    ap.add_argument("--save", type=Path, metavar="FILE",
                    help="write the records of the grid to FILE (.json or .json.gz)")
    ap.add_argument("--against", type=Path, metavar="FILE", help="compare the records of the grid with FILE")
    ap.add_argument("--quick", action="store_true", help="a small grid")
    ap.add_argument("--baseline-files", type=Path, metavar="DIR",
                    help="directory of old versions of files (paths relative to the repo); records of this tree with "
                    "them laid over are the reference")
    ap.add_argument("--rel", type=float, default=REL, help=f"relative tolerance (default {REL:g}; 0 = bit-identical)")
    args = ap.parse_args(argv)
    if not (args.save or args.against or args.baseline_files):
        ap.error("nothing to do: give --baseline-files DIR, --save FILE or --against FILE")
    if args.baseline_files:
        args.against = _baseline_records(args.baseline_files, args.quick)
    points = _grid(args.quick)
    diffs: list[str] = []
    t0 = time.perf_counter()
    records = {_key(p): _record(p) for p in points}
    print(f"records: {len(records)} points evaluated ({time.perf_counter() - t0:.1f} s)")
    if args.save:
        opener = gzip.open if args.save.suffix == ".gz" else open
        with opener(args.save, "wt", encoding="utf-8") as f:
            json.dump(records, f)
        print(f"records: wrote {args.save}")
    if args.against:
        opener = gzip.open if args.against.suffix == ".gz" else open
        with opener(args.against, "rt", encoding="utf-8") as f:
            before = json.load(f)
        missing = [k for k in before if k not in records]
        if missing:
            print(f"records: {len(missing)} points of {args.against} are not in this grid (skipped)")
        for k, rec in records.items():
            if k in before:
                compare(before[k], rec, k, diffs, args.rel)
        print(f"records: {sum(k in before for k in records)} points compared with {args.against}, "
              f"{len(diffs)} differences")
    for line in diffs[:40]:
        print("  DIFF", line)
    if len(diffs) > 40:
        print(f"  ... and {len(diffs) - 40} more")
    print("equivalence:", "OK" if not diffs else "FAILED", f"(tolerance {args.rel:g} relative)")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(run())
