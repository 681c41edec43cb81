"""Benchmarks of issue 14 that are not the batch engine: `kvnand dse run` (trials/s with TPE on the journal
storage, duplicate evaluations on a space smaller than the budget), reliability per design before/after, and
start-up of the commands against `python -c "import numpy"`.

Each measurement runs in a fresh process (optuna, scipy and the point caches start cold, as in a command).
"Before" numbers come from the kvnand package of git revision BASELINE (the commit this work started from),
extracted into a temporary folder and timed in the same run, so the ratio compares like with like under the
same load.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from benchmarks.measure import PYTHON, REPO, Code, Result, env, kvnand_command, run_timed

BASELINE = "ccba8d3"  # kvnand before issue 14's reliability and dse changes

# a space with a continuous knob (no two sampled designs are equal): the smoke space's 8-die KVNAND-C/D with
# the PE clock free, LLaMA3.1-8B at 1k and 10k tokens
_NO_DUPLICATES = {"clock": {"float": [200, 800], "unit": "MHz", "set": "flash.logic.clock", "default": 400}}

_RUN_CHILD = r"""
import json, sys, time, yaml
from kvnand.study.dse.space import load_space
from kvnand.study.dse.study import run
space_file, out, trials, storage = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] or None
evaluations = []
import kvnand.study.dse.study as st
real = st.evaluate_design
def counted(space, params):
    evaluations.append(1)
    return real(space, params)
st.evaluate_design = counted
s = run(load_space(space_file), out, trials=trials, storage=storage, log=lambda *a: None)
print(json.dumps({"trials_per_s": s["trials_per_s"], "elapsed_s": s["elapsed_s"], "taken": s["trials_taken"],
                  "duplicates": s["duplicates"], "evaluations": len(evaluations), "designs": s["trials"]}))
"""

_EVAL_CHILD = r"""
import json, sys, time, random
from kvnand.study.dse.objectives import evaluate_design
from kvnand.study.dse.space import load_space
space = load_space(sys.argv[1])
rng = random.Random(0)
designs = [{"variant": "C", "planes_per_die": rng.choice([16, 32, 64]), "precision": rng.choice(["w8a8", "w4a16"]),
            "clock": rng.uniform(200, 800)} for _ in range(int(sys.argv[2]))]
t0 = time.perf_counter()
for d in designs:
    evaluate_design(space, d)
print(json.dumps({"designs_per_s": len(designs) / (time.perf_counter() - t0)}))
"""

_RELIABILITY_CHILD = r"""
import json, sys, time
from kvnand.evaluation import evaluate_reliability
designs = [("kvnand-c16", {"dies": 8})] + [("kvnand-d", {"dies": 8, "g2_dies": g}) for g in range(1, 8)]
points = [(s, m, c, p, ov) for s, ov in designs for m in ("llama3.1-70b", "opt-30b") for p in ("w8a8", "w4a16")
          for c in (1000, 10_000, 30_000, 100_000)]
def one_pass():
    out = []
    for s, m, c, p, ov in points:
        try:
            out.append(evaluate_reliability(s, m, c, precision=p, overrides=ov))
        except Exception as exc:
            out.append({"error": str(exc)})
    return out
t0 = time.perf_counter(); first = one_pass(); cold = time.perf_counter() - t0
passes = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter(); one_pass(); passes.append(time.perf_counter() - t0)
# each design of the 8-die space ages its flash at its 16 workload points (2 models x 2 precisions x 4 contexts)
per_design = [t / len(designs) * 1e3 for t in passes]
print(json.dumps({"per_design_ms": per_design, "cold_pass_s": cold, "points": len(points),
                  "lifetimes": [r.get("lifetime_years") for r in first]}))
"""


def _child(code: str, args: list[str], tree: Path | None = None, timeout: float = 900) -> dict:
    child_env = env()
    if tree is not None:  # the baseline package first on the path
        child_env["PYTHONPATH"] = str(tree) + ":" + child_env["PYTHONPATH"]
    proc = subprocess.run([PYTHON, "-c", code, *args], capture_output=True, text=True, env=child_env,
                          cwd=tree or Code.root, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-400:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _space(tmp: Path, extra: dict | None = None, **top) -> Path:
    import yaml

    data = yaml.safe_load((Code.root / "dse" / "smoke.yaml").read_text())
    data["parameters"].update(extra or {})
    data.update(top)
    f = tmp / "space.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return f


def dse_run(quick: bool) -> list[Result]:
    """`kvnand dse run`, one worker: trials/s with TPE on the journal (and on SQLite, same run), and how many
    designs a 16-design space evaluates with --trials 200."""
    n_runs, trials = (1, 100) if quick else (3, 200)
    out = []
    r = Result("dse run: TPE, journal, 1 worker", f"trials/s of `dse run` ({trials} TPE trials, one worker, "
               "journal storage) on a space with a continuous knob (no duplicates)", "trials/s", 50,
               better="higher")
    sql = Result("dse run: TPE, SQLite, 1 worker", "the same on optuna's RDB storage (SQLite file)", "trials/s",
                 None, better="higher")
    with tempfile.TemporaryDirectory(prefix="kvnand-bench-dse-") as tmp:
        space = _space(Path(tmp), _NO_DUPLICATES, known_designs=[],
                       study={"sampler": "tpe", "trials": trials, "seed": 0, "heartbeat_s": 10})
        try:
            for i in range(n_runs):
                j = _child(_RUN_CHILD, [str(space), f"{tmp}/j{i}", str(trials), ""])
                r.samples.append(j["trials_per_s"])
                r.extra.setdefault("duplicates", []).append(j["duplicates"])
                s = _child(_RUN_CHILD, [str(space), f"{tmp}/s{i}", str(trials), f"sqlite:///{tmp}/s{i}.db"])
                sql.samples.append(s["trials_per_s"])
            ev = _child(_EVAL_CHILD, [str(space), "60" if quick else "200"])
            r.extra["evaluation_only_designs_per_s"] = ev["designs_per_s"]
            r.extra["optuna_ms_per_trial"] = 1e3 / statistics.median(r.samples) - 1e3 / ev["designs_per_s"]
            r.extra["journal_over_sqlite"] = statistics.median(r.samples) / statistics.median(sql.samples)
        except RuntimeError as exc:
            r.error = str(exc)
    out += [r, sql]
    d = Result("dse run: evaluations, 16-design space", "designs evaluated by `dse run dse/kvnand-8die-70b.yaml "
               "--trials 200` (16 designs; was 200, i.e. 184 duplicates)", "evaluations", 16)
    with tempfile.TemporaryDirectory(prefix="kvnand-bench-dse-") as tmp:
        try:
            j = _child(_RUN_CHILD, [str(Code.root / "dse" / "kvnand-8die-70b.yaml"), tmp, "200", ""])
            d.samples = [j["evaluations"]]
            d.extra.update(trials=j["taken"], duplicates=j["duplicates"], elapsed_s=j["elapsed_s"])
        except RuntimeError as exc:
            d.error = str(exc)
    out.append(d)
    return out


def _baseline_tree(tmp: Path) -> Path:
    """The kvnand package of git revision BASELINE with that revision's presets (later presets may drop fields
    the old schema requires, or set new ones it refuses)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE, "kvnand", "arch_configs", "validation",
                              "dse"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    return tmp


def reliability(quick: bool) -> list[Result]:
    """Reliability of every design of the 8-die space (16 points each), warm, this tree against BASELINE."""
    n = "2" if quick else "5"
    r = Result("reliability per design (8-die space)", "evaluate_reliability at a design's 16 workload points, "
               "warm, ms per design", "ms", None)
    x = Result("reliability: before / after", f"ms per design of kvnand {BASELINE} (before) / this tree, same run, "
               "same records", "x", None, better="higher")
    try:
        after = _child(_RELIABILITY_CHILD, [n])
        r.samples = after["per_design_ms"]
    except RuntimeError as exc:
        r.error = x.error = str(exc)[-400:]
        return [r, x]
    try:
        with tempfile.TemporaryDirectory(prefix="kvnand-bench-baseline-") as tmp:
            before = _child(_RELIABILITY_CHILD, [n], _baseline_tree(Path(tmp)))
        x.samples = [statistics.median(before["per_design_ms"]) / statistics.median(after["per_design_ms"])]
        x.extra.update(before_median_ms=statistics.median(before["per_design_ms"]),
                       after_median_ms=statistics.median(after["per_design_ms"]),
                       same_lifetimes=before["lifetimes"] == after["lifetimes"], points=after["points"])
        if not x.extra["same_lifetimes"]:
            x.error = "the lifetimes differ from the baseline's"
    except (OSError, subprocess.CalledProcessError) as exc:  # no git history here: no before, not an error
        x.extra["baseline"] = f"unavailable ({type(exc).__name__}); the kvnand of {BASELINE} comes from git"
    except RuntimeError as exc:
        x.error = str(exc)[-400:]
    return [r, x]


def startup(quick: bool) -> list[Result]:
    """Whole commands against `python -c "import numpy"` (medians, interpreter start-up included)."""
    n = 3 if quick else 7
    base, _ = run_timed([PYTHON, "-c", "import numpy"], n)
    numpy_s = statistics.median(base)
    out = []
    with tempfile.TemporaryDirectory(prefix="kvnand-bench-start-") as tmp:
        child = env(KVNAND_CACHE_DIR=tmp)
        run_timed(kvnand_command() + ["report"], 1, child_env=child)  # fills the point cache
        for name, args, target in (
                ("startup: kvnand --help", ["--help"], 0.25),
                ("startup: kvnand report (cached)", ["report"], 1.0),
                ("startup: kvnand dse grid 8-die", ["dse", "grid", str(Code.root / "dse" / "kvnand-8die-70b.yaml"),
                                                    "--out", f"{tmp}/grid"], None)):
            shown = " ".join(Path(a).relative_to(Code.root).as_posix() if a.startswith(str(Code.root)) else a
                             for a in args[:3])
            r = Result(name, f"kvnand {shown} (wall, median of {n}); extra: x python -c 'import numpy'",
                       "s", target)
            r.samples, proc = run_timed(kvnand_command() + args, n, child_env=child)
            if proc.returncode != 0:
                r.error = f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"
            r.extra.update(import_numpy_s=numpy_s, times_import_numpy=statistics.median(r.samples) / numpy_s)
            out.append(r)
    return out


ALL = {"dse": dse_run, "reliability": reliability, "startup14": startup}
