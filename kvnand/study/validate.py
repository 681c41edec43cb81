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
        disagrees: {opt-30b: "NOTES.md: ..."}    # rows documented to disagree with the paper (label: why)
        note: "..."

Cases are pydantic models (Case, CaseFile): every key is checked, and a bad file is one InputError naming
the file, line, case and key.

Row expansion: per-point metrics (tokens_per_s, speedup, oom, ...) give one row per model x context;
aggregates (geomean_speedup, best_speedup, geomean_energy_gain) one row per context; model metrics
(kv_bytes, weight_bytes, arithmetic_intensity) one row per model x context; cost metrics one row. A case
with several rows reports them as `<id>/<label>` (label = model, context, or model@context) and
`expected` may then be a mapping from label to value.

"Best" of several candidate systems is the lowest-latency one that fits at that point (the paper's
"KVNAND" = the better of KVNAND-C-16 and the best KVNAND-D split); energy metrics use that same
variant. rel_error is signed, (simulated - expected) / expected, as a fraction; `mape` is the mean of
|rel_error| over enforced numeric band rows that produced a value, documented disagreements included
(also a fraction; one-sided claims are bounds, not values). Each distinct (system, model, context,
precision, overrides) point is evaluated once per run. Exit code 1 when an enforced row fails or a row
listed under `disagrees` passes (the disagreement is gone: update the case and NOTES.md); tracked rows and
documented disagreements never fail the run; a bad case file is an InputError (exit 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from kvnand.config.loader import Source, read_yaml, validate_tree
from kvnand.config.schema import ConfigValueError
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
def _listed(v):
    return [v] if isinstance(v, str) else v


def _contexts(v):
    out = []
    for item in v if isinstance(v, list) else [v]:
        n = parse_context(item)
        if n is None:
            raise ConfigValueError("contexts are positive token counts", value=item,
                                   allowed="e.g. 128, 1k (=1000), 10k, 100k, 1Ki (=1024)")
        out.append(n)
    return out


Name = Annotated[str, Strict(), Field(min_length=1)]
Names = Annotated[list[Name], BeforeValidator(_listed)]


class DecodeKeys(BaseModel):
    """Batch / speculative decoding of a case's points: keywords of kvnand.evaluate (checked by
    scenario.Decode)."""

    model_config = ConfigDict(extra="forbid")
    # strict: true is not 1, "4" is not 4
    batch: Annotated[int, Strict()] | None = None
    spec_draft: Annotated[str, Strict()] | None = None
    spec_k: Annotated[int, Strict()] | None = None
    spec_accept: Annotated[float, Strict()] | None = None

    @model_validator(mode="after")
    def _a_decode(self):
        try:
            Decode(**self.keywords())
        except InputError as exc:
            raise ConfigValueError(exc.detail, key=exc.key, value=exc.value, allowed=exc.allowed) from None
        return self

    def keywords(self) -> dict:
        return self.model_dump(exclude_none=True)


def _decode(v):
    """The keywords of a `decode:` mapping, checked (as a DecodeKeys model) and without unset ones."""
    return DecodeKeys.model_validate({} if v is None else v).keywords()


def _not_a_number(name: str) -> str:
    if name.lower() in ("nan", "inf", "infinity"):
        raise ValueError("a case id is a name, not a number")
    return name


class Case(BaseModel):
    """One published claim: which systems, models and contexts, the metric and its expected value(s).

    `status` says whether a miss fails the run (enforced) or is only reported (tracked). `disagrees` names
    rows (by label, as in `expected`; a single-row case by its id) where the model is documented to disagree
    with the paper (validation/NOTES.md): they are reported, do not fail the run, and fail it once they
    agree, so the note is revisited."""

    model_config = ConfigDict(extra="forbid")

    # a name (letters first, not 'nan' or 'inf'): an id that reads as a number would print as one in the table
    id: Annotated[str, Strict(), Field(min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9_.:/+-]*$",
                                       description="a name: a letter, then letters, digits or _ . : / + -; "
                                                   "not nan, inf or infinity"),
                  AfterValidator(_not_a_number)]
    source: Annotated[str, Strict(), Field(min_length=1, pattern=r"\S",
                                           description="the paper and its section/table/figure")]
    metric: Literal[METRICS]
    expected: Any
    status: Literal[STATUSES]
    systems: Names = []
    baseline: Name | None = None
    overrides: Annotated[dict[str, Any], BeforeValidator(lambda v: v or {})] = {}
    baseline_overrides: Annotated[dict[str, Any], BeforeValidator(lambda v: v or {})] = {}
    decode: Annotated[dict[str, Any], BeforeValidator(_decode)] = {}
    baseline_decode: Annotated[dict[str, Any], BeforeValidator(_decode)] = {}
    models: Names = []
    contexts: Annotated[list[int], BeforeValidator(_contexts)] = []
    precision: Name | None = None
    tolerance: Annotated[float, Strict(), Field(ge=0, lt=10, allow_inf_nan=False,
                                                description="relative band, e.g. 0.15 for +-15 %")] | None = None
    check: Literal[CHECKS] = "band"
    skip_oom: Annotated[bool, Strict()] = False
    dram: Name = "lpddr5x"
    disagrees: dict[str, Name] = {}
    note: Annotated[str, BeforeValidator(lambda v: "" if v is None else str(v))] = ""
    _file: str = PrivateAttr("")  # the case file (set by load_cases)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        known = info.context or {}
        for key in ("systems", "baseline"):
            for s in _listed(getattr(self, key) or []):
                _check_system(key, s, known.get("systems"))
        if known.get("models") is not None:
            drafts = [(f"{k}.spec_draft", d["spec_draft"]) for k, d in (("decode", self.decode),
                                                                        ("baseline_decode", self.baseline_decode))
                      if "spec_draft" in d]
            for key, m in [("models", m) for m in self.models] + drafts:
                if m not in known["models"] and not m.endswith(".json"):
                    raise ConfigValueError("unknown model", key=key, value=m, allowed=", ".join(known["models"]))
        if self.precision is not None:
            from kvnand.workload.precision import PRECISIONS

            if self.precision not in PRECISIONS:
                raise ConfigValueError("unknown precision", key="precision", value=self.precision,
                                       allowed=", ".join(PRECISIONS))
        self._metric_needs()
        self._expected_values()
        labels = [lbl or self.id for lbl, _, _ in self.rows()]
        unknown = sorted(set(self.disagrees) - set(labels))
        if unknown:
            raise ConfigValueError("'disagrees' names rows the case does not have", key="disagrees", value=unknown,
                                   allowed=", ".join(labels))
        return self

    def _metric_needs(self):
        m = self.metric
        if m in BASELINE_METRICS and not self.baseline:
            raise ConfigValueError(f"metric '{m}' needs a baseline system", key="baseline")
        if m not in BASELINE_METRICS and self.baseline:
            raise ConfigValueError(f"metric '{m}' takes no baseline", key="baseline", value=self.baseline)
        if m in MODEL_METRICS:
            if self.systems:
                raise ConfigValueError(f"metric '{m}' is a property of the model and takes no systems", key="systems")
        elif not self.systems:
            raise ConfigValueError(f"metric '{m}' needs at least one system", key="systems")
        if m in SINGLE_SYSTEM_METRICS and len(self.systems) != 1:
            raise ConfigValueError(f"metric '{m}' takes exactly one system", key="systems", value=self.systems)
        if m in COST_METRICS:
            if self.models or self.contexts:
                raise ConfigValueError(f"metric '{m}' depends on the system only (no models or contexts)",
                                       key="models" if self.models else "contexts")
            return
        if not self.models:
            raise ConfigValueError(f"metric '{m}' needs at least one model", key="models")
        if not self.contexts:
            if m != "weight_bytes":
                raise ConfigValueError(f"metric '{m}' needs at least one context", key="contexts")
            self.contexts = [1]

    def _expected_values(self):
        m, labels = self.metric, [lbl for lbl, _, _ in self.rows()]
        if isinstance(self.expected, dict):
            self.expected = {str(k): v for k, v in self.expected.items()}
            if labels == [""]:
                raise ConfigValueError("a mapping of expected values needs several rows (models or contexts)",
                                       key="expected")
            extra = sorted(set(self.expected) - set(labels))
            missing = [lbl for lbl in labels if lbl not in self.expected]
            if extra or missing:
                raise ConfigValueError("expected-value labels must match the rows", key="expected",
                                       value=extra or missing, allowed=", ".join(labels))
            values = list(self.expected.values())
        else:
            values = [self.expected]
        for v in values:
            if m in BOOL_METRICS:
                if not isinstance(v, bool):
                    raise ConfigValueError(f"metric '{m}' expects true or false", key="expected", value=v)
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e300:
                # every metric is a positive quantity (a rate, a time, an energy, a ratio of them, bytes, dollars)
                raise ConfigValueError(f"metric '{m}' expects a positive number", key="expected", value=v)
        if m in BOOL_METRICS and self.tolerance is not None:
            raise ConfigValueError(f"metric '{m}' is true/false and takes no tolerance", key="tolerance",
                                   value=self.tolerance)
        if m not in BOOL_METRICS and self.tolerance is None:
            raise ConfigValueError("a relative tolerance is required (e.g. 0.15 for +-15 %)", key="tolerance")

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

    @property
    def file(self) -> str:
        return self._file

    def status_for(self, label: str) -> str:
        """'disagrees' for a row documented to disagree with the paper, else the case's status."""
        return "disagrees" if (label or self.id) in self.disagrees else self.status


class CaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1]
    cases: Annotated[list[Any], Field(min_length=1)]


def _check_system(key: str, name: str, known: list[str] | None):
    stem = name.removesuffix(":auto")
    if known is not None and stem not in known and Path(stem).suffix not in (".yaml", ".yml"):
        raise ConfigValueError("unknown system", key=key, value=name,
                               allowed=", ".join(known) + " (':auto' after a KVNAND-D system picks the best split)")


def _case_source(file: str, lines: dict[str, int], index: int) -> Source:
    """Where each key of case `index` is, relative to the case (for errors naming the key and line)."""
    prefix = f"cases[{index}]"
    src = Source(file)
    src.add("", file, {p[len(prefix) + 1:]: ln for p, ln in lines.items() if p.startswith(prefix + ".")})
    if prefix in lines:
        src.origin[""] = (file, lines[prefix])
    return src


def load_cases(paths: list[Path] | None = None) -> list[Case]:
    """Every case of the given files/directories (default validation/cases/*.yaml), strictly checked."""
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
    known = {"systems": _known_systems(), "models": _known_models()}
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for f in files:
        data, lines = read_yaml(f)
        if not isinstance(data, dict):
            raise InputError("a case file is a mapping with 'schema_version: 1' and 'cases: [...]'", file=str(f))
        src = Source(str(f))
        src.add("", str(f), lines)
        for k in data:  # a misspelt key says more than the required key it leaves missing
            if k not in CaseFile.model_fields:
                raise InputError("unknown key", file=str(f), key=str(k), line=lines.get(str(k)),
                                 allowed=", ".join(CaseFile.model_fields))
        for i, raw in enumerate(validate_tree(CaseFile, data, src).cases):
            cid = raw.get("id") if isinstance(raw, dict) else None
            try:
                c = Case.model_validate(raw, context=known)
            except ValidationError:
                try:
                    validate_tree(Case, raw, _case_source(str(f), lines, i), context=known)
                except InputError as exc:
                    where = f"case '{cid}'" if isinstance(cid, str) and cid.strip() else "a case without an id"
                    raise InputError(f"{where}: {exc.detail}", file=exc.file, key=exc.key, line=exc.line,
                                     value=exc.value, allowed=exc.allowed) from None
                raise
            c._file = str(f)
            if c.id in seen:
                raise InputError(f"case '{c.id}': duplicate case id (also in {seen[c.id]})", file=str(f), key="id",
                                 value=c.id)
            seen[c.id] = str(f)
            cases.append(c)
    return cases

def _known_systems() -> list[str]:
    from kvnand.config.loader import system_names

    return system_names()


def _known_models() -> list[str]:
    from kvnand.workload.model import zoo_names

    return zoo_names()


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
class CaseRow:
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


def run(cases: list[Case], runner: Runner | None = None) -> list[CaseRow]:
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
            status = c.status_for(label)
            if status == "disagrees":
                detail = f"disagrees: {c.disagrees[label or c.id]}" + (f"; {detail}" if detail else "")
            rows.append(CaseRow(c.row_id(label), c.source, c.metric, exp, sim, err, c.tolerance, status, ok,
                            c.check, detail, c.file))
    return rows


def mape(rows: list[CaseRow]) -> float | None:
    # one-sided claims (at_least / at_most) have a bound, not a value to miss by: they stay out of the MAPE;
    # documented disagreements stay in (the model is still held to the published number)
    errs = [abs(r.rel_error) for r in rows
            if r.status in ("enforced", "disagrees") and r.check == "band" and r.rel_error is not None]
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


def mark_fitted(rows: list[CaseRow], cases: list[Case]) -> list[str]:
    """Note on each row a constant was fitted on; return the fitted_on ids that name no case (stale)."""
    fitted = fitted_cases()
    ids = {c.id for c in cases} | {r.id for r in rows}
    for r in rows:
        names = fitted.get(r.id) or fitted.get(r.id.split("/")[0])
        if names:
            r.detail = f"FITTED ({', '.join(names)})" + (f"; {r.detail}" if r.detail else "")
    return sorted(cid for cid in fitted if cid not in ids)


def summary(rows: list[CaseRow], n_cal: int) -> dict:
    enforced = [r for r in rows if r.status == "enforced"]
    tracked = [r for r in rows if r.status == "tracked"]
    disagrees = [r for r in rows if r.status == "disagrees"]
    return {"rows": len(rows), "enforced": len(enforced), "enforced_passed": sum(r.passed for r in enforced),
            "tracked": len(tracked), "tracked_passed": sum(r.passed for r in tracked),
            "disagrees": len(disagrees), "disagrees_agreeing": sum(r.passed for r in disagrees), "mape": mape(rows),
            "calibration_constants": n_cal}


def failed(summ: dict) -> bool:
    """The run fails on a missed enforced row, and on a documented disagreement that now agrees (its status
    and the note in validation/NOTES.md are out of date)."""
    return summ["enforced_passed"] < summ["enforced"] or summ["disagrees_agreeing"] > 0
