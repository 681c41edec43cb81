"""`kvnand validate`: published results (validation/cases/*.yaml) against the model, as a table or JSON.

A case file holds the cases of one source:

    schema_version: 1
    cases:
      - id: kvnand-geomean-speedup-128          # unique over all files
        source: "KVNAND arXiv 2512.03608, Sec. V-B, Fig. 8"
        systems: [kvnand-c16, "kvnand-d:auto"]  # the candidate; several = the fastest per point
        baseline: base1                          # ratio metrics: the reference system
        overrides: {}                            # --set overrides of the candidate systems
        baseline_overrides: {}                   # --set overrides of the baseline
        decode: {}                               # batch / speculative decoding of the candidates: keywords
        baseline_decode: {}                      # of kvnand.evaluate (batch, spec_draft, spec_k, spec_accept)
        models: [opt-30b, llama2-7b]
        contexts: [128]                          # tokens; "1k" = 1000, "1Ki" = 1024
        precision: bf16                          # default: each system's default precision
        metric: geomean_speedup
        expected: 1.98                           # a number, true/false, or {row label: value}
        tolerance: 0.15                          # relative band |sim - exp| / |exp|
        check: band                              # band | at_least | at_most (one-sided claims)
        skip_oom: false                          # aggregates: leave out points whose baseline is OOM
        dram: lpddr5x                            # cost metrics: the DRAM device priced for "same capacity"
        status: enforced                         # enforced | tracked
        note: "..."

Row expansion: per-point metrics (tokens_per_s, speedup, oom, ...) give one row per model x context;
aggregates (geomean_speedup, best_speedup, geomean_energy_gain) one row per context; model metrics
(kv_bytes, weight_bytes, arithmetic_intensity) one row per model x context; cost metrics one row. A case
with several rows reports them as `<id>/<label>` (label = model, context, or model@context) and
`expected` may then be a mapping from label to value.

"Best" of several candidate systems is the lowest-latency one that fits at that point (the paper's
"KVNAND" = the better of KVNAND-C-16 and the best KVNAND-D split); energy metrics use that same
variant. rel_error is signed, (simulated - expected) / expected, as a fraction; `mape` is the mean of
|rel_error| over enforced numeric band rows that produced a value (also a fraction; one-sided
claims are bounds, not values). Each distinct
(system, model, context, precision, overrides) point is evaluated once per run. Exit code 1 when an
enforced row fails; tracked rows never fail the run; a bad case file is an InputError (exit 2).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from kvnand.errors import InputError
from kvnand.scenario import Decode, parse_context

SCHEMA = "kvnand.validate/1"

POINT_METRICS = ("tokens_per_s", "latency_s", "energy_j_per_token", "speedup", "energy_ratio", "oom", "fits",
                 "max_context")
AGGREGATE_METRICS = ("geomean_speedup", "best_speedup", "geomean_energy_gain")
MODEL_METRICS = ("kv_bytes", "weight_bytes", "arithmetic_intensity")
COST_METRICS = ("cost_usd", "dram_cost_usd", "cost_ratio")
METRICS = POINT_METRICS + AGGREGATE_METRICS + MODEL_METRICS + COST_METRICS
BOOL_METRICS = ("oom", "fits")
BASELINE_METRICS = ("speedup", "energy_ratio") + AGGREGATE_METRICS
SINGLE_SYSTEM_METRICS = ("oom", "fits", "max_context") + COST_METRICS
CHECKS = ("band", "at_least", "at_most")
STATUSES = ("enforced", "tracked")

CASE_KEYS = ("id", "source", "systems", "baseline", "overrides", "baseline_overrides", "decode", "baseline_decode",
             "models", "contexts", "precision", "metric", "expected", "tolerance", "check", "skip_oom", "dram",
             "status", "note")
DECODE_KEYS = ("batch", "spec_draft", "spec_k", "spec_accept")
FILE_KEYS = ("schema_version", "cases")


def default_cases_dir() -> Path:
    from kvnand.paths import VALIDATION_ROOT

    return VALIDATION_ROOT / "cases"


# ---------------------------------------------------------------------------------------------- metrics
def geomean(xs) -> float:
    """Geometric mean of positive numbers."""
    xs = list(xs)
    if not xs:
        raise ValueError("geomean of nothing")
    if any(x <= 0 for x in xs):
        raise ValueError("geomean needs positive numbers")
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either side is missing (an OOM point) or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def rel_error(simulated: float | None, expected: float) -> float | None:
    if simulated is None or expected == 0:
        return None
    return (simulated - expected) / abs(expected)


def judge(simulated: Any, expected: Any, tolerance: float | None, check: str = "band") -> tuple[float | None, bool]:
    """(rel_error, passed) of one row."""
    if isinstance(expected, bool):
        return None, simulated is expected
    err = rel_error(simulated, expected)
    if err is None:
        return None, False
    tol = tolerance or 0.0
    if check == "at_least":
        return err, err >= -tol
    if check == "at_most":
        return err, err <= tol
    return err, abs(err) <= tol + 1e-12


def context_label(n: int) -> str:
    """A case id's context part: "10k" for whole thousands, else the token count."""
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


# ---------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    id: str
    source: str
    file: str
    metric: str
    expected: Any
    status: str
    systems: list[str] = field(default_factory=list)
    baseline: str | None = None
    overrides: dict = field(default_factory=dict)
    baseline_overrides: dict = field(default_factory=dict)
    decode: dict = field(default_factory=dict)
    baseline_decode: dict = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    contexts: list[int] = field(default_factory=list)
    precision: str | None = None
    tolerance: float | None = None
    check: str = "band"
    skip_oom: bool = False
    dram: str = "lpddr5x"
    note: str = ""

    def rows(self) -> list[tuple[str, list[str], list[int]]]:
        """(label, models, contexts) of each reported row."""
        if self.metric in COST_METRICS:
            return [("", [], [])]
        if self.metric in AGGREGATE_METRICS:
            if len(self.contexts) == 1:
                return [("", self.models, self.contexts)]
            return [(context_label(c), self.models, [c]) for c in self.contexts]
        models = self.models or [""]
        out = []
        for m in models:
            for c in self.contexts or [0]:
                if len(models) > 1 and len(self.contexts) > 1:
                    label = f"{m}@{context_label(c)}"
                elif len(models) > 1:
                    label = m
                elif len(self.contexts) > 1:
                    label = context_label(c)
                else:
                    label = ""
                out.append((label, [m] if m else [], [c] if c else []))
        return out

    def expected_for(self, label: str) -> Any:
        return self.expected[label] if isinstance(self.expected, dict) else self.expected

    def row_id(self, label: str) -> str:
        return f"{self.id}/{label}" if label else self.id


class _CaseErrors:
    def __init__(self, file: str):
        self.file = file

    def fail(self, message: str, case_id: str | None, key: str, value: Any = None, allowed: str | None = None):
        where = f"case '{case_id}'" if case_id else "a case without an id"
        raise InputError(f"{where}: {message}", file=self.file, key=key, value=value, allowed=allowed)


def _known_systems() -> list[str]:
    from kvnand.config.loader import system_names

    return system_names()


def _known_models() -> list[str]:
    from kvnand.workload.model import zoo_names

    return zoo_names()


def _str_list(errs, cid, key, v) -> list[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        errs.fail("expected a list of names", cid, key, v)
    return v


def _check_system(errs, cid, key, name: str, allowed_systems: list[str]):
    stem = name.removesuffix(":auto")
    if stem not in allowed_systems and Path(stem).suffix not in (".yaml", ".yml"):
        errs.fail("unknown system", cid, key, name,
                  allowed=", ".join(allowed_systems) + " (':auto' after a KVNAND-D system picks the best split)")


def parse_case(raw: Any, index: int, file: str, systems: list[str], models: list[str]) -> Case:
    errs = _CaseErrors(file)
    if not isinstance(raw, dict):
        errs.fail("each case must be a mapping", None, f"cases[{index}]", raw)
    cid = raw.get("id")
    if not isinstance(cid, str) or not cid.strip():
        errs.fail("required key is missing or not a string", None, f"cases[{index}].id", cid)
    for k in raw:
        if k not in CASE_KEYS:
            errs.fail("unknown key", cid, k, allowed=", ".join(CASE_KEYS))
    for k in ("source", "metric", "expected", "status"):
        if k not in raw:
            errs.fail("required key is missing", cid, k)
    source = raw["source"]
    if not isinstance(source, str) or not source.strip():
        errs.fail("'source' must name the paper and its section/table/figure", cid, "source", source)
    metric = raw["metric"]
    if metric not in METRICS:
        errs.fail("unknown metric", cid, "metric", metric, allowed=", ".join(METRICS))
    status = raw["status"]
    if status not in STATUSES:
        errs.fail("value not allowed", cid, "status", status, allowed=", ".join(STATUSES))
    c = Case(id=cid, source=source, file=file, metric=metric, expected=raw["expected"], status=status)

    c.systems = _str_list(errs, cid, "systems", raw.get("systems", []))
    for s in c.systems:
        _check_system(errs, cid, "systems", s, systems)
    if "baseline" in raw:
        if not isinstance(raw["baseline"], str):
            errs.fail("expected a system name", cid, "baseline", raw["baseline"])
        c.baseline = raw["baseline"]
        _check_system(errs, cid, "baseline", c.baseline, systems)
    for k in ("overrides", "baseline_overrides"):
        v = raw.get(k, {}) or {}
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v):
            errs.fail("expected a mapping of --set keys to values", cid, k, v)
        setattr(c, k, dict(v))
    for k in ("decode", "baseline_decode"):
        v = raw.get(k, {}) or {}
        if not isinstance(v, dict) or not all(x in DECODE_KEYS for x in v):
            errs.fail("expected a mapping of decode keywords", cid, k, v, allowed=", ".join(DECODE_KEYS))
        try:
            Decode(**v)
        except InputError as exc:
            errs.fail(exc.detail, cid, f"{k}.{exc.key}", exc.value, allowed=exc.allowed)
        if v.get("spec_draft") is not None and v["spec_draft"] not in models and not v["spec_draft"].endswith(".json"):
            errs.fail("unknown model", cid, f"{k}.spec_draft", v["spec_draft"], allowed=", ".join(models))
        setattr(c, k, dict(v))
    c.models = _str_list(errs, cid, "models", raw.get("models", []))
    for m in c.models:
        if m not in models and not m.endswith(".json"):
            errs.fail("unknown model", cid, "models", m, allowed=", ".join(models))
    ctx = raw.get("contexts", [])
    if not isinstance(ctx, list):
        ctx = [ctx]
    for v in ctx:
        n = parse_context(v)
        if n is None:
            errs.fail("contexts are positive token counts", cid, "contexts", v,
                      allowed="e.g. 128, 1k (=1000), 10k, 100k, 1Ki (=1024)")
        c.contexts.append(n)
    if raw.get("precision") is not None:
        from kvnand.workload.precision import PRECISIONS

        if not isinstance(raw["precision"], str) or raw["precision"] not in PRECISIONS:
            errs.fail("unknown precision", cid, "precision", raw["precision"], allowed=", ".join(PRECISIONS))
        c.precision = raw["precision"]
    c.check = raw.get("check", "band")
    if c.check not in CHECKS:
        errs.fail("value not allowed", cid, "check", c.check, allowed=", ".join(CHECKS))
    c.skip_oom = raw.get("skip_oom", False)
    if not isinstance(c.skip_oom, bool):
        errs.fail("expected true or false", cid, "skip_oom", c.skip_oom)
    c.dram = raw.get("dram", "lpddr5x")
    if not isinstance(c.dram, str):
        errs.fail("expected a DRAM device preset name", cid, "dram", c.dram)
    note = raw.get("note", "")
    c.note = "" if note is None else str(note)

    # what each metric needs
    if metric in BASELINE_METRICS and not c.baseline:
        errs.fail(f"metric '{metric}' needs a baseline system", cid, "baseline")
    if metric not in BASELINE_METRICS and c.baseline:
        errs.fail(f"metric '{metric}' takes no baseline", cid, "baseline", c.baseline)
    if metric in MODEL_METRICS:
        if c.systems:
            errs.fail(f"metric '{metric}' is a property of the model and takes no systems", cid, "systems")
    elif not c.systems:
        errs.fail(f"metric '{metric}' needs at least one system", cid, "systems")
    if metric in SINGLE_SYSTEM_METRICS and len(c.systems) != 1:
        errs.fail(f"metric '{metric}' takes exactly one system", cid, "systems", c.systems)
    if metric in COST_METRICS:
        if c.models or c.contexts:
            errs.fail(f"metric '{metric}' depends on the system only (no models or contexts)", cid,
                      "models" if c.models else "contexts")
    else:
        if not c.models:
            errs.fail(f"metric '{metric}' needs at least one model", cid, "models")
        if not c.contexts and metric != "weight_bytes":
            errs.fail(f"metric '{metric}' needs at least one context", cid, "contexts")
        if metric == "weight_bytes" and not c.contexts:
            c.contexts = [1]

    # expected values and tolerance
    labels = [lbl for lbl, _, _ in c.rows()]
    exp = c.expected
    if isinstance(exp, dict):
        exp = c.expected = {str(k): v for k, v in exp.items()}
        if labels == [""]:
            errs.fail("a mapping of expected values needs several rows (models or contexts)", cid, "expected")
        extra = sorted(set(map(str, exp)) - set(labels))
        missing = [lbl for lbl in labels if lbl not in exp]
        if extra or missing:
            errs.fail("expected-value labels must match the rows", cid, "expected",
                      extra or missing, allowed=", ".join(labels))
        values = list(exp.values())
    else:
        values = [exp]
    for v in values:
        if metric in BOOL_METRICS:
            if not isinstance(v, bool):
                errs.fail(f"metric '{metric}' expects true or false", cid, "expected", v)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or v == 0 or not abs(v) < 1e300:
            errs.fail(f"metric '{metric}' expects a non-zero number", cid, "expected", v)
    if metric in BOOL_METRICS:
        if raw.get("tolerance") is not None:
            errs.fail(f"metric '{metric}' is true/false and takes no tolerance", cid, "tolerance", raw["tolerance"])
    else:
        tol = raw.get("tolerance")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 10:
            errs.fail("a relative tolerance is required (e.g. 0.15 for +-15 %)", cid, "tolerance", tol)
        c.tolerance = float(tol)
    return c


def load_cases(paths: list[Path] | None = None) -> list[Case]:
    """Every case of the given files/directories (default validation/cases/*.yaml), strictly checked."""
    from kvnand.config.loader import read_yaml

    files: list[Path] = []
    for p in paths or [default_cases_dir()]:
        p = Path(p)
        if p.is_dir():
            files += sorted(list(p.glob("*.yaml")) + list(p.glob("*.yml")))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError("no such case file or directory", file=str(p), key="--cases")
    if not files:
        raise InputError("no case files (*.yaml) found", file=", ".join(map(str, paths or [])), key="--cases")
    systems, models = _known_systems(), _known_models()
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for f in files:
        data, _ = read_yaml(f)
        if not isinstance(data, dict):
            raise InputError("a case file is a mapping with 'schema_version: 1' and 'cases: [...]'", file=str(f))
        for k in data:
            if k not in FILE_KEYS:
                raise InputError("unknown key", file=str(f), key=str(k), allowed=", ".join(FILE_KEYS))
        if data.get("schema_version") != 1:
            raise InputError("value not allowed", file=str(f), key="schema_version", value=data.get("schema_version"),
                             allowed="1")
        raw_cases = data.get("cases")
        if not isinstance(raw_cases, list) or not raw_cases:
            raise InputError("expected a non-empty list of cases", file=str(f), key="cases")
        for i, raw in enumerate(raw_cases):
            c = parse_case(raw, i, str(f), systems, models)
            if c.id in seen:
                raise InputError(f"case '{c.id}': duplicate case id (also in {seen[c.id]})", file=str(f), key="id",
                                 value=c.id)
            seen[c.id] = str(f)
            cases.append(c)
    return cases


# ---------------------------------------------------------------------------------------------- running
def _freeze(d: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


class Runner:
    """Evaluates each distinct point once per run."""

    def __init__(self):
        self._points: dict[tuple, dict] = {}
        self._cost: dict[tuple, dict] = {}

    def point(self, system: str, model: str, context: int, precision: str | None, overrides: dict,
              decode: dict | None = None) -> dict:
        decode = decode or {}
        key = (system, model, context, precision, _freeze(overrides), _freeze(decode))
        if key not in self._points:
            from kvnand.evaluation import evaluate

            self._points[key] = evaluate(system, model, context, precision=precision, overrides=overrides, **decode)
        return self._points[key]

    @property
    def evaluations(self) -> int:
        return len(self._points)

    def best(self, systems: list[str], model: str, context: int, precision: str | None,
             overrides: dict, decode: dict | None = None) -> dict | None:
        """The lowest-latency record among `systems` that fits, or None when all are OOM."""
        recs = [self.point(s, model, context, precision, overrides, decode) for s in systems]
        fits = [r for r in recs if not r["oom"]]
        return min(fits, key=lambda r: r["latency_s"]) if fits else None

    def cost(self, system: str, overrides: dict, dram: str) -> dict:
        key = (system, _freeze(overrides), dram)
        if key not in self._cost:
            from kvnand import cost

            rec = cost.memory_cost(system, overrides)
            # a DRAM-backed design provisions DRAM for the same KV capacity (KVNAND Sec. V-C)
            rec["dram_cost_usd"] = cost.dram_equivalent_cost(rec["kv_capacity_bytes"], dram)
            rec["cost_ratio"] = rec["cost_usd"] / rec["dram_cost_usd"] if rec["dram_cost_usd"] else None
            self._cost[key] = rec
        return self._cost[key]

    # one row ---------------------------------------------------------------------------------------
    def value(self, c: Case, models: list[str], contexts: list[int]) -> tuple[Any, str]:
        """(simulated value, detail text) of one row."""
        m = c.metric
        if m in COST_METRICS:
            rec = self.cost(c.systems[0], c.overrides, c.dram)
            return rec[m], f"{rec['capacity_bytes'] / 2**30:.1f} GiB, KV {rec['kv_capacity_bytes'] / 2**30:.1f} GiB"
        if m in MODEL_METRICS:
            return _model_metric(m, models[0], contexts[0], c.precision or "bf16"), ""
        if m in AGGREGATE_METRICS:
            return self._aggregate(c, models, contexts[0])
        model, ctx = models[0], contexts[0]
        if m in ("oom", "fits", "max_context"):
            r = self.point(c.systems[0], model, ctx, c.precision, c.overrides, c.decode)
            split = r["config"].get("split")
            detail = _fullest_store(r) + (f"; split {split}" if split else "")
            if m == "max_context":
                return r["max_context"], detail
            return (r["oom"] if m == "oom" else not r["oom"]), detail
        best = self.best(c.systems, model, ctx, c.precision, c.overrides, c.decode)
        detail = _describe(best) if best else "all OOM"
        if m in ("tokens_per_s", "latency_s", "energy_j_per_token"):
            return (best[m] if best else None), detail
        base = self.point(c.baseline, model, ctx, c.precision, c.baseline_overrides, c.baseline_decode)
        if base["oom"]:
            return None, f"{detail}; baseline {c.baseline} OOM"
        if best is None:
            return None, detail
        if m == "speedup":
            return ratio(best["tokens_per_s"], base["tokens_per_s"]), detail
        return ratio(best["energy_j_per_token"], base["energy_j_per_token"]), detail  # energy_ratio

    def _aggregate(self, c: Case, models: list[str], ctx: int) -> tuple[float | None, str]:
        xs, skipped, missing = [], [], []
        for model in models:
            best = self.best(c.systems, model, ctx, c.precision, c.overrides, c.decode)
            base = self.point(c.baseline, model, ctx, c.precision, c.baseline_overrides, c.baseline_decode)
            if base["oom"] and c.skip_oom:
                skipped.append(model)
                continue
            if best is None or base["oom"]:
                missing.append(model)
                continue
            if c.metric == "geomean_energy_gain":
                xs.append(base["energy_j_per_token"] / best["energy_j_per_token"])
            else:
                xs.append(best["tokens_per_s"] / base["tokens_per_s"])
        detail = f"{len(xs)}/{len(models)} models"
        if skipped:
            detail += f"; baseline OOM, left out: {', '.join(skipped)}"
        if missing:
            return None, detail + f"; OOM: {', '.join(missing)}"
        if not xs:
            return None, detail
        if c.metric == "best_speedup":
            i = max(range(len(xs)), key=lambda k: xs[k])
            kept = [mm for mm in models if mm not in skipped]
            return xs[i], detail + f"; best: {kept[i]}"
        return geomean(xs), detail


def _fullest_store(r: dict) -> str:
    """The memory closest to (or over) its capacity: 'DRAM (KV) 13.1/17.2 GB'."""
    stores = r.get("capacity") or {}
    if not stores:
        return r.get("oom_reason") or ""
    name, st = max(stores.items(), key=lambda kv: kv[1]["used_bytes"] / kv[1]["capacity_bytes"])
    return f"{name} {st['used_bytes'] / 1e9:.1f}/{st['capacity_bytes'] / 1e9:.1f} GB"


def _describe(r: dict) -> str:
    s = r["system"]
    if r["config"].get("split"):
        s += f" ({r['config']['split']})"
    return s


def _model_metric(metric: str, model: str, context: int, precision: str) -> float:
    from kvnand.workload.model import load_model

    spec = load_model(model)
    if metric == "kv_bytes":
        return spec.kv_bytes(precision, context)
    if metric == "weight_bytes":
        return spec.weight_bytes(precision)
    # arithmetic_intensity: decode ops (2 per MAC: weights and attention) per byte read (weights + KV)
    from kvnand.workload.precision import get_precision

    p = get_precision(precision)
    attn_macs = sum(n * spec.attn_macs_per_key * k.context(context) for k, n in spec.layer_kinds)  # q.K^T, p.V
    ops = 2 * (spec.active_params + attn_macs)
    read = spec.active_params * p.weight_bytes + spec.kv_bytes(p, context)
    return ops / read


@dataclass
class Row:
    id: str
    source: str
    metric: str
    expected: Any
    simulated: Any
    rel_error: float | None
    tolerance: float | None
    status: str
    passed: bool
    check: str = "band"
    detail: str = ""
    file: str = ""

    def as_json(self) -> dict:
        return {"id": self.id, "source": self.source, "metric": self.metric, "expected": self.expected,
                "simulated": self.simulated, "rel_error": self.rel_error, "tolerance": self.tolerance,
                "check": self.check, "status": self.status, "passed": self.passed}


def run(cases: list[Case], runner: Runner | None = None) -> list[Row]:
    runner = runner or Runner()
    rows = []
    for c in cases:
        for label, models, contexts in c.rows():
            try:
                sim, detail = runner.value(c, models, contexts)
            except InputError as exc:
                raise InputError(f"case '{c.id}': {exc}", file=c.file) from None
            exp = c.expected_for(label)
            err, ok = judge(sim, exp, c.tolerance, c.check)
            rows.append(Row(c.row_id(label), c.source, c.metric, exp, sim, err, c.tolerance, c.status, ok,
                            c.check, detail, c.file))
    return rows


def mape(rows: list[Row]) -> float | None:
    # one-sided claims (at_least / at_most) have a bound, not a value to miss by: they stay out of the MAPE
    errs = [abs(r.rel_error) for r in rows
            if r.status == "enforced" and r.check == "band" and r.rel_error is not None]
    return sum(errs) / len(errs) if errs else None


def calibration_constants() -> int:
    from kvnand.config.loader import load_calibration

    return len(load_calibration().constants)


def fitted_cases() -> dict[str, list[str]]:
    """case id -> names of the calibration constants fitted on it."""
    from kvnand.config.loader import load_calibration

    out: dict[str, list[str]] = {}
    for name, const in load_calibration().constants.items():
        for cid in const.fitted_on:
            out.setdefault(cid, []).append(name)
    return out


def mark_fitted(rows: list[Row], cases: list[Case]) -> list[str]:
    """Note on each row a constant was fitted on; return the fitted_on ids that name no case (stale)."""
    fitted = fitted_cases()
    ids = {c.id for c in cases} | {r.id for r in rows}
    for r in rows:
        names = fitted.get(r.id) or fitted.get(r.id.split("/")[0])
        if names:
            r.detail = f"FITTED ({', '.join(names)})" + (f"; {r.detail}" if r.detail else "")
    return sorted(cid for cid in fitted if cid not in ids)


def summary(rows: list[Row], n_cal: int) -> dict:
    enforced = [r for r in rows if r.status == "enforced"]
    tracked = [r for r in rows if r.status == "tracked"]
    return {"rows": len(rows), "enforced": len(enforced), "enforced_passed": sum(r.passed for r in enforced),
            "tracked": len(tracked), "tracked_passed": sum(r.passed for r in tracked), "mape": mape(rows),
            "calibration_constants": n_cal}


# ---------------------------------------------------------------------------------------------- output
def _fmt(v: Any, metric: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if metric in ("kv_bytes", "weight_bytes"):
        return f"{v / 1e9:.2f} GB"
    if metric in COST_METRICS and metric != "cost_ratio":
        return f"${v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}"


def _band(r: Row) -> str:
    if r.tolerance is None:
        return "exact"
    sign = {"band": "+-", "at_least": ">= -", "at_most": "<= +"}[r.check]
    return f"{sign}{r.tolerance:.0%}"


def print_table(rows: list[Row], summ: dict) -> None:
    from rich.table import Table

    from kvnand.report.terminal import show

    t = Table(title="kvnand validate: published results vs the model")
    for col in ("case", "metric", "expected", "simulated", "rel. err", "band", "status", "result", "detail"):
        t.add_column(col, justify="right" if col in ("expected", "simulated", "rel. err", "band") else "left",
                     overflow="fold")
    for r in rows:
        res = "[green]pass[/green]" if r.passed else ("[red]FAIL[/red]" if r.status == "enforced" else
                                                       "[yellow]miss[/yellow]")
        err = f"{r.rel_error:+.1%}" if r.rel_error is not None else "-"
        t.add_row(r.id, r.metric, _fmt(r.expected, r.metric), _fmt(r.simulated, r.metric), err, _band(r), r.status,
                  res, r.detail)
    show(t, optional=("status", "band", "detail"), text_columns=("case", "detail"))
    m = summ["mape"]
    typer.echo(f"enforced: {summ['enforced_passed']}/{summ['enforced']} passed; tracked: {summ['tracked_passed']}/"
               f"{summ['tracked']} passed; MAPE (enforced numeric): {'-' if m is None else f'{m:.1%}'}; "
               f"calibration constants: {summ['calibration_constants']}")


class Format(StrEnum):
    table = "table"
    json = "json"


app = typer.Typer()


@app.command()
def validate(
    format: Annotated[Format, typer.Option("--format")] = Format.table,
    cases: Annotated[list[str] | None, typer.Option(
        "--cases", help="case files or directories (default: validation/cases)")] = None,
):
    """Published results (validation/cases/*.yaml) against the model; exit 1 when an enforced case fails."""
    loaded = load_cases([Path(p) for p in cases] if cases else None)
    rows = run(loaded)
    n_cal = calibration_constants()
    stale = mark_fitted(rows, loaded)
    if stale and not cases:
        typer.echo(f"kvnand: warning: arch_configs/calibration.yaml names fitted_on cases that do not exist: "
                   f"{', '.join(stale)}", err=True)
    summ = summary(rows, n_cal)
    if format == Format.json:
        from kvnand.io import emit_json

        emit_json({"schema": SCHEMA, "cases": [r.as_json() for r in rows], "mape": summ["mape"],
                   "calibration_constants": n_cal})
    else:
        print_table(rows, summ)
    if summ["enforced_passed"] < summ["enforced"]:
        sys.exit(1)  # SystemExit: typer's Exit code would be dropped by cli.main (standalone_mode=False)
