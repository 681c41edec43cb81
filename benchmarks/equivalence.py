"""Behaviour check for speed work: results must not move (1e-9 relative) on a grid of systems x models x contexts.

Two checks:

* engines (always, no file needed): on every program of the grid (decode step and prefill), the live fast
  and event engines, action counting and energy pricing against the frozen pre-optimization copies in
  `benchmarks.reference_engines`, on the very same program objects. Robust to edits of the builder.
* records (`--save FILE` before a change, `--against FILE` after): every numeric leaf of every
  `kvnand.evaluate` record (fast, event and page modes, kvnand-d:auto, overrides, OOM points, errors),
  key sets and key order of every dict, and every string.

    python -m benchmarks.equivalence --save /tmp/before.json.gz      # on the old code
    python -m benchmarks.equivalence --against /tmp/before.json.gz   # on the new code
    python -m benchmarks.equivalence --quick                         # engines only, small grid
    python -m benchmarks.equivalence --baseline-files DIR            # records: this tree vs this tree with
                                                                     # DIR's files (the old versions) laid over it
    python -m benchmarks.equivalence --baseline-files EMPTY_DIR --install benchmarks.proposals.builder_memo
                                                                     # a proposed change against the tree as is

`--baseline-files` is the robust form while other people edit the tree: both sides run now, on the same
builder, presets and loader; only the files in DIR differ (e.g. copies of kvnand/sim/*.py before a change).

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


def compare(a, b, path: str, out: list[str], rel: float = REL) -> None:
    """Append a line to `out` for every difference between `a` (reference) and `b`."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            if set(a) != set(b):
                out.append(f"{path}: keys differ: only before {sorted(set(a) - set(b))}, "
                           f"only after {sorted(set(b) - set(a))}")
            else:
                out.append(f"{path}: key order differs: {list(a)} vs {list(b)}")
        for k in a:
            if k in b:
                compare(a[k], b[k], f"{path}.{k}", out, rel)
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            compare(x, y, f"{path}[{i}]", out, rel)
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


# ---------------------------------------------------------------- engine differential


def _programs(point):
    """(system config, decode program, prefill program) as evaluate() builds them, or None when OOM."""
    from kvnand.config.loader import load_system
    from kvnand.mapping.capacity import check
    from kvnand.systems.builder import Builder
    from kvnand.workload.model import load_model
    from kvnand.workload.precision import get_precision

    s, m, c, p, mode, ov = point
    if s.endswith(":auto"):
        return None
    try:
        cfg = load_system(s, ov)
    except Exception:
        return None
    spec = load_model(m)
    prec = get_precision(p or cfg.default_precision)
    if check(cfg, spec, prec, c).oom:
        return None
    return cfg, Builder(cfg, spec, prec, c).decode_step(), Builder(cfg, spec, prec, c).prefill(c)


def check_engines(points, out: list[str]) -> int:
    """Live engines vs the reference copies on the same programs; returns the number of programs checked."""
    from benchmarks import reference_engines as ref
    from kvnand.energy.tables import price
    from kvnand.sim import event, fast
    from kvnand.sim.program import count_actions

    n = 0
    seen = set()
    for point in points:
        key = (point[0], point[1], point[2], point[3], json.dumps(point[5], sort_keys=True), point[4])
        if key in seen:
            continue
        seen.add(key)
        built = _programs(point)
        if built is None:
            continue
        cfg, decode, prefill = built
        name = _key(point)
        for label, prog in (("decode", decode), ("prefill", prefill)):
            n += 1
            if point[4] == "fast":
                a, b = ref.fast_evaluate(prog), fast.evaluate(prog)
                compare({"time": a.time, "stage": a.stage, "bound": a.bound, "busy": a.busy},
                        {"time": b.time, "stage": b.stage, "bound": b.bound, "busy": b.busy},
                        f"{name}:{label}:fast", out)
                ca, cb = ref.count_actions(prog), count_actions(prog).actions
                compare(ca, cb, f"{name}:{label}:counts", out)
                c = fast.evaluate(prog, with_work=False, with_counts=True)
                compare(ca, c.counts, f"{name}:{label}:counts in the fast walk", out)
                # exact: kvnand-d:auto ranks splits by latency() and reports evaluate()
                compare({"time": b.time, "stage": b.stage, "bound": b.bound, "busy": b.busy},
                        {"time": c.time, "stage": c.stage, "bound": c.bound, "busy": c.busy},
                        f"{name}:{label}:with_work=False", out, rel=0.0)
                compare(b.time, fast.latency(prog), f"{name}:{label}:latency()", out, rel=0.0)
                if label == "decode":
                    compare(_ref_price(ca, cfg, a.time), list(price(cb, cfg, b.time)), f"{name}:{label}:energy", out)
            else:
                page = point[4] == "page"
                items = ref.simulate(prog, page_level=page)
                tl = event.simulate(prog, page_level=page)
                compare({"makespan": ref.makespan_of(items), "bd": list(ref.breakdown(items)),
                         "starts": [s.start for s in items], "ends": [s.end for s in items],
                         "preds": [s.pred for s in items]},
                        {"makespan": tl.makespan, "bd": list(event.breakdown(tl)),
                         "starts": [s.start for s in tl.items], "ends": [s.end for s in tl.items],
                         "preds": [s.pred for s in tl.items]},
                        f"{name}:{label}:{point[4]}", out)
    return n


def _ref_price(counts, cfg, seconds):
    """energy.tables.price as it was: the table rebuilt from the config on every call."""
    from kvnand.energy.tables import action_prices, static_power

    prices = action_prices(cfg)
    by: dict[str, float] = {}
    for action, n in counts.items():
        e, comp = prices[action]
        by[comp] = by.get(comp, 0.0) + n * e
    for comp, w in static_power(cfg).items():
        by[comp] = by.get(comp, 0.0) + w * seconds
    return [sum(by.values()), by]


# ---------------------------------------------------------------- main


def overlay_tree(overlay: Path) -> Path:
    """A temporary copy of this tree's kvnand/ with `overlay`'s files laid over it; presets are symlinked."""
    import shutil
    import tempfile

    repo = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="kvnand-baseline-"))
    shutil.copytree(repo / "kvnand", tmp / "kvnand", ignore=shutil.ignore_patterns("__pycache__"))
    for d in ("arch_configs", "validation", "dse"):
        if (repo / d).exists():
            (tmp / d).symlink_to(repo / d)
    for f in [f for f in Path(overlay).rglob("*") if f.is_file()]:
        dst = tmp / f.relative_to(overlay)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
    return tmp


def _baseline_records(overlay: Path, quick: bool) -> Path:
    """Records of a temporary copy of this tree with `overlay`'s files laid over it (in a subprocess)."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    tmp = overlay_tree(overlay)
    out = tmp / "baseline.json.gz"
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{repo}"}
    cmd = [sys.executable, "-c", "import kvnand, sys; assert kvnand.__file__.startswith(sys.argv[1]), kvnand.__file__; "
           "from benchmarks.equivalence import run; sys.exit(run(sys.argv[2:]))", str(tmp), "--no-engines",
           "--save", str(out)] + (["--quick"] if quick else [])
    n = sum(1 for f in Path(overlay).rglob("*") if f.is_file())
    print(f"baseline: this tree with {n} file(s) of {overlay} laid over it, in {tmp}")
    subprocess.run(cmd, cwd=tmp, env=env, check=True)  # cwd first on sys.path: the copy, not the repo
    return out


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.equivalence", description=__doc__.splitlines()[0])
    ap.add_argument("--save", type=Path, help="write the records of the grid to FILE (.json or .json.gz)")
    ap.add_argument("--against", type=Path, help="compare the records of the grid with FILE")
    ap.add_argument("--quick", action="store_true", help="a small grid")
    ap.add_argument("--baseline-files", type=Path, help="directory of old versions of files (paths relative to "
                    "the repo); records of this tree with them laid over are the reference")
    ap.add_argument("--no-engines", action="store_true", help="skip the engine differential")
    ap.add_argument("--rel", type=float, default=REL, help=f"relative tolerance (default {REL:g}; 0 = bit-identical)")
    ap.add_argument("--install", action="append", default=[], metavar="MODULE",
                    help="call MODULE.install() first (a proposal in benchmarks/proposals: check that it changes no "
                    "result, e.g. with --baseline-files pointing to an empty directory)")
    args = ap.parse_args(argv)
    import importlib

    for mod in args.install:
        importlib.import_module(mod).install()
        print(f"installed {mod}")
    if args.baseline_files:
        args.against = _baseline_records(args.baseline_files, args.quick)
    points = _grid(args.quick)
    diffs: list[str] = []
    t0 = time.perf_counter()
    if not args.no_engines:
        n = check_engines(points, diffs)
        print(f"engines: {n} programs checked against benchmarks/reference_engines.py, "
              f"{len(diffs)} differences ({time.perf_counter() - t0:.1f} s)")
    if args.save or args.against:
        t1 = time.perf_counter()
        records = {_key(p): _record(p) for p in points}
        print(f"records: {len(records)} points evaluated ({time.perf_counter() - t1:.1f} s)")
        if args.save:
            opener = gzip.open if args.save.suffix == ".gz" else open
            with opener(args.save, "wt", encoding="utf-8") as f:
                json.dump(records, f)
            print(f"records: wrote {args.save}")
        if args.against:
            opener = gzip.open if args.against.suffix == ".gz" else open
            with opener(args.against, "rt", encoding="utf-8") as f:
                before = json.load(f)
            before_n = len(diffs)
            missing = [k for k in before if k not in records]
            if missing:
                print(f"records: {len(missing)} points of {args.against} are not in this grid (skipped)")
            for k, rec in records.items():
                if k in before:
                    compare(before[k], rec, k, diffs, args.rel)
            print(f"records: {sum(k in before for k in records)} points compared with {args.against}, "
                  f"{len(diffs) - before_n} differences")
    for line in diffs[:40]:
        print("  DIFF", line)
    if len(diffs) > 40:
        print(f"  ... and {len(diffs) - 40} more")
    print("equivalence:", "OK" if not diffs else "FAILED", f"(records: tolerance {args.rel:g} relative; "
          f"engines: {REL:g})")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(run())
