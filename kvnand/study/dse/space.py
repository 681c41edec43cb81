"""Search spaces: the YAML schema of a design-space study, its loader, and designs built from parameters.

A space names a base system, the parameters that vary (categorical, int or float ranges, optionally log
scaled, with a unit, or a categorical whose labels map to bundles of `--set` overrides, e.g. a cell
mode), the workload (models and contexts with weights, the usage profile for reliability), the
objectives and constraints, the published designs to compare against, and study settings. Every
parameter turns into `kvnand.evaluate` arguments: `system`, `precision` or an override key (a KV policy's
name `kv_policy` or a field `kv_policy.top_k` etc. included: the policy is searched beside the hardware).

    parameters:
      dies: 8                                              # fixed
      variant: {choices: {C: {system: kvnand-c16}, D: {system: kvnand-d}}, default: D}
      g2_dies: {int: [1, "dies - 1"], when: {variant: D}, default: 4}   # a bound may use earlier parameters
      clock: {float: [200, 800], unit: MHz, set: flash.logic.clock, default: 400}

Errors name the space file, the key path (and line) and what is allowed.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import operator
import re
import string
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from kvnand.errors import InputError

# Strict and finite: YAML's `true` is not the number 1, NaN and Infinity are not values of a design.
_Int = Annotated[int, Strict(), Field(ge=-10**12, le=10**12)]
_Float = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=-1e300, le=1e300)]
_Str = Annotated[str, Strict()]
Scalar = _Str | Annotated[bool, Strict()] | _Int | _Float
Weight = Annotated[float, Strict(), Field(gt=0, le=1e6, allow_inf_nan=False, description="a weight > 0, <= 1e6")]
# parameter targets that are evaluate() arguments, not overrides; the decode ones batch and speculate
DECODE_TARGETS = ("batch", "spec_draft", "spec_k", "spec_accept")
SPECIAL_TARGETS = ("system", "precision", *DECODE_TARGETS)
MAX_GRID_DESIGNS = 100_000
SEED_RANGE = 2**32  # numpy's samplers take seeds 0 .. 2^32 - 1
MAX_LABEL = 200  # characters of a filled-in known-design label


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def bound_names(bound) -> list[str]:
    """Parameter names a range bound refers to ("dies - 1" -> ["dies"]; a number -> [])."""
    if not isinstance(bound, str):
        return []
    return [n.id for n in ast.walk(_parse_bound(bound)) if isinstance(n, ast.Name)]


def _parse_bound(text: str) -> ast.Expression:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"range bound {text!r} is not an expression") from None
    for node in ast.walk(tree):
        if not isinstance(node, _BOUND_NODES) or (isinstance(node, ast.Constant) and not isinstance(
                node.value, (int, float))):
            raise ValueError(f"range bound {text!r}: only numbers, earlier parameter names and + - * // are allowed")
    return tree


_BOUND_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, ast.Constant, ast.Add, ast.Sub,
                ast.Mult, ast.FloorDiv, ast.USub)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def eval_bound(bound, values: dict[str, Any]):
    """A range bound's value: a number, or an expression over earlier parameters' values."""
    if not isinstance(bound, str):
        return bound

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            v = values.get(node.id)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"range bound {bound!r}: '{node.id}' is {v!r}, not a number")
            return v
        if isinstance(node, ast.UnaryOp):
            return -ev(node.operand)
        return _OPS[type(node.op)](ev(node.left), ev(node.right))

    return ev(_parse_bound(bound))


class Param(_Strict):
    """One searched parameter: exactly one of `choices`, `int`, `float`. A range bound is a number or an
    expression over earlier parameters ("dies - 1"), evaluated per design."""

    set: str | None = None                              # override key; default: the parameter's name
    choices: list[Scalar] | dict[str, dict[str, Scalar]] | None = None
    int: tuple[_Int | str, _Int | str] | None = None
    float: tuple[_Float | str, _Float | str] | None = None
    step: Annotated[_Float, Field(gt=0)] | None = None
    log: Annotated[bool, Strict()] = False
    unit: str | None = None                             # appended to int/float values ("400 MHz")
    default: Scalar | None = None                       # the paper's value (used by known designs)
    when: dict[str, Scalar | Annotated[list[Scalar], Field(min_length=1)]] = {}  # active if earlier ones match
    source: str | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k, v in (("choices", self.choices), ("int", self.int), ("float", self.float))
                 if v is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of choices, int, float (got {', '.join(kinds) or 'none'})")
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices must not be empty")
            if self.step is not None or self.log or self.unit:
                raise ValueError("step, log and unit apply to int/float ranges, not to choices")
        else:
            low, high = self.int or self.float
            for b in (low, high):
                bound_names(b)  # a malformed expression fails here
            fixed = not isinstance(low, str) and not isinstance(high, str)
            if fixed and low > high:
                raise ValueError(f"range [{low}, {high}] is empty")
            if self.log and (self.step is not None or (not isinstance(low, str) and low <= 0)):
                raise ValueError("a log range needs low > 0 and no step")
            if self.int is not None and self.step is not None and self.step != int(self.step):
                raise ValueError("an int range takes an integer step")
        return self

    @property
    def labels(self) -> list[Scalar] | None:
        """The categorical values (bundle labels for a mapping), None for a range."""
        if self.choices is None:
            return None
        return list(self.choices) if isinstance(self.choices, dict) else list(self.choices)

    def contains(self, value: Any) -> bool:
        """Whether `value` is in the domain (a bound that is an expression is not checked here: a design
        that breaks it is caught as an invalid configuration)."""
        if self.choices is not None:
            return value in self.labels
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.int is not None and value != int(value):
            return False
        low, high = self.int or self.float
        return (isinstance(low, str) or low <= value) and (isinstance(high, str) or value <= high)

    def grid_size(self, low, high) -> int:
        """How many values grid_values(low, high) has, without listing them."""
        if self.int is not None:
            return max(0, (high - low) // int(self.step or 1) + 1)
        if self.step is None:
            raise ValueError("a float range needs a step to be enumerated")
        return int(math.floor(min((high - low) / self.step + 1e-9, 1e18))) + 1

    def grid_values(self, low, high) -> list[Scalar]:
        """Every value of a range between its evaluated bounds (float ranges need a step)."""
        if self.int is not None:
            return list(range(low, high + 1, int(self.step or 1)))
        return [round(low + i * self.step, 12) for i in range(self.grid_size(low, high))]

    def assignments(self, name: str, value: Scalar) -> dict[str, Any]:
        """The evaluate() arguments / overrides this parameter sets for `value`."""
        if isinstance(self.choices, dict):
            return dict(self.choices[value])
        if self.unit:
            value = f"{value:g} {self.unit}"
        return {self.set or name: value}


_Context = _Str | Annotated[int, Strict()]


class Workload(_Strict):
    models: Annotated[dict[_Str, Weight] | list[_Str], Field(min_length=1)]
    contexts: Annotated[dict[_Context, Weight] | list[_Context], Field(min_length=1)]
    profile: str = "continuous"                         # usage profile of the reliability model


class Bound(_Strict):
    max: _Float | None = None
    min: _Float | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of max, min")
        return self


class KnownDesign(_Strict):
    label: str                                          # format string over the parameter values
    params: dict[str, Scalar | Annotated[list[Scalar], Field(min_length=1)]] = {}  # lists: every combination
    source: str | None = None


class StudySettings(_Strict):
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    trials: Annotated[int, Strict(), Field(gt=0, le=10**7, description="an integer 1 to 10^7")] = 100
    seed: Annotated[int, Strict(), Field(ge=0, lt=SEED_RANGE, description="an integer 0 to 2^32 - 1")] = 0
    # a worker silent for 2x this is presumed dead
    heartbeat_s: Annotated[int, Strict(), Field(gt=0, le=3600, description="seconds, an integer 1 to 3600")] = 10


class SpaceFile(_Strict):
    schema_version: Literal[1]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")]
    description: str = ""
    source: str | None = None
    system: str
    workload: Workload
    parameters: dict[str, Any] = {}                    # name -> Param mapping or a fixed scalar
    objectives: Annotated[list[str], Field(min_length=1)]
    constraints: dict[str, Bound] = {}
    known_designs: list[KnownDesign] = []
    study: StudySettings = StudySettings()


@dataclass(frozen=True)
class Design:
    """What one evaluate() call per workload point needs: system, precision, overrides and the decode keywords
    (batch, speculative decoding), each sorted."""

    system: str
    precision: str | None
    overrides: tuple[tuple[str, Any], ...]
    decode: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict:
        out = {"system": self.system, "precision": self.precision, "overrides": dict(self.overrides)}
        return {**out, "decode": dict(self.decode)} if self.decode else out


@dataclass(frozen=True)
class WorkloadPoint:
    model: str
    context: int
    weight: float                                       # normalized: the weights of a workload sum to 1


class Space:
    """A loaded, checked search space."""

    def __init__(self, spec: SpaceFile, file: str, raw: dict):
        self.spec, self.file, self.raw = spec, file, raw
        self.fixed = {k: v for k, v in spec.parameters.items() if not isinstance(v, Param)}
        self.varying: dict[str, Param] = {k: v for k, v in spec.parameters.items() if isinstance(v, Param)}

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def digest(self) -> str:
        """Identity of what is searched and how it is judged (study settings such as the budget may change
        between runs): a study refuses to resume under a different space."""
        content = {k: v for k, v in self.raw.items() if k != "study"}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @cached_property
    def points(self) -> list[WorkloadPoint]:
        from kvnand.scenario import parse_contexts

        w = self.spec.workload
        models = w.models if isinstance(w.models, dict) else dict.fromkeys(w.models, 1.0)
        contexts = w.contexts if isinstance(w.contexts, dict) else dict.fromkeys(w.contexts, 1.0)
        parsed = {}
        for key, weight in contexts.items():
            try:
                (n,) = parse_contexts(str(key), "workload.contexts")
            except (InputError, ValueError):
                raise InputError("not a context length", file=self.file, key=f"workload.contexts.{key}",
                                 allowed="token counts such as 128, 1k, 10k, 100k, 1Ki") from None
            parsed[n] = weight
        total = sum(models.values()) * sum(parsed.values())
        return [WorkloadPoint(m, c, mw * cw / total) for m, mw in models.items() for c, cw in sorted(parsed.items())]

    @property
    def contexts(self) -> list[int]:
        return sorted({p.context for p in self.points})

    # ------------------------------------------------------------------ parameters -> designs
    def active(self, name: str, params: dict[str, Any]) -> bool:
        for other, want in self.varying[name].when.items():
            wanted = want if isinstance(want, list) else [want]
            if params.get(other, self.fixed.get(other)) not in wanted:
                return False
        return True

    def bounds(self, name: str, params: dict[str, Any]) -> tuple:
        """(low, high) of a range parameter, its expressions evaluated over the earlier parameters."""
        values = {**self.fixed, **params}
        try:
            low, high = (eval_bound(b, values) for b in (self.varying[name].int or self.varying[name].float))
        except ValueError as exc:
            raise InputError(str(exc), file=self.file, key=f"parameters.{name}") from None
        if low > high:
            raise InputError(f"range [{low}, {high}] is empty for this design", file=self.file,
                             key=f"parameters.{name}", value={k: values[k] for k in values if k in params})
        return low, high

    def distribution(self, name: str, params: dict[str, Any]):
        """The optuna distribution of parameter `name` given the earlier parameters (what `suggest` asks)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        p = self.varying[name]
        if p.choices is not None:
            return CategoricalDistribution(p.labels)
        low, high = self.bounds(name, params)
        if p.int is not None:
            return IntDistribution(low, high, step=int(p.step or 1), log=p.log)
        return FloatDistribution(low, high, step=p.step, log=p.log)

    def suggest(self, trial) -> dict[str, Any]:
        """Ask an optuna trial for every active parameter, in declaration order."""
        params: dict[str, Any] = {}
        for name, p in self.varying.items():
            if not self.active(name, params):
                continue
            if p.choices is not None:
                params[name] = trial.suggest_categorical(name, p.labels)
            elif p.int is not None:
                params[name] = trial.suggest_int(name, *self.bounds(name, params), step=int(p.step or 1), log=p.log)
            else:
                params[name] = trial.suggest_float(name, *self.bounds(name, params), step=p.step, log=p.log)
        return params

    def design(self, params: dict[str, Any]) -> Design:
        args: dict[str, Any] = {"system": self.spec.system, "precision": None}
        overrides: dict[str, Any] = {}
        for name, value in self.spec.parameters.items():
            if isinstance(value, Param):
                if name not in params:
                    continue
                sets = value.assignments(name, params[name])
            else:
                sets = {name: value}
            for key, v in sets.items():
                (args if key in SPECIAL_TARGETS else overrides)[key] = v
        decode = tuple(sorted((k, v) for k, v in args.items() if k in DECODE_TARGETS))
        return Design(args["system"], args["precision"], tuple(sorted(overrides.items(), key=lambda kv: kv[0])),
                      decode)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the active parameters' values (conditional parameters only where active)."""
        combos: list[dict[str, Any]] = [{}]
        for name, p in self.varying.items():
            # counted before anything is listed: a range of 10^7 values must not be built to be refused
            try:
                size = sum((len(p.labels) if p.choices is not None else p.grid_size(*self.bounds(name, c)))
                           if self.active(name, c) else 1 for c in combos)
            except ValueError as exc:
                raise InputError(f"grid mode: {exc}", file=self.file, key=f"parameters.{name}") from None
            if size > MAX_GRID_DESIGNS:
                raise InputError(f"grid mode: more than {MAX_GRID_DESIGNS} designs; use `kvnand dse run`",
                                 file=self.file, key=f"parameters.{name}",
                                 allowed=f"at most {MAX_GRID_DESIGNS} combinations (a coarser step, fewer choices)")
            nxt = []
            for c in combos:
                if not self.active(name, c):
                    nxt.append(c)
                    continue
                try:
                    values = p.labels if p.choices is not None else p.grid_values(*self.bounds(name, c))
                except ValueError as exc:
                    raise InputError(f"grid mode: {exc}", file=self.file, key=f"parameters.{name}") from None
                nxt.extend({**c, name: v} for v in values)
            combos = nxt
        return combos

    def known_designs(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, full parameter dict) of every published design, lists expanded, defaults filled in."""
        out = []
        for i, kd in enumerate(self.spec.known_designs):
            lists = {k: (v if isinstance(v, list) else [v]) for k, v in kd.params.items()}
            for combo in itertools.product(*lists.values()):
                given = dict(zip(lists, combo, strict=True))
                params: dict[str, Any] = {}
                for name, p in self.varying.items():
                    if not self.active(name, params):
                        continue
                    if name in given:
                        params[name] = given[name]
                    elif p.default is not None:
                        params[name] = p.default
                    else:
                        raise InputError(f"known design does not set '{name}' and the parameter has no default",
                                         file=self.file, key=f"known_designs[{i}].params")
                out.append((self._label(kd.label, params, i), params))
        return out

    def _label(self, template: str, params: dict, i: int) -> str:
        d = self.design(params)
        values = {**dict(d.overrides), **params, "system": d.system, "precision": d.precision or ""}
        if isinstance(values.get("dies"), int) and isinstance(values.get("g2_dies"), int):
            values["g1_dies"] = values["dies"] - values["g2_dies"]
        values = {k: (v.upper() if k == "precision" and isinstance(v, str) else v) for k, v in values.items()}
        try:
            label = template.format_map(values)
        except (KeyError, ValueError, IndexError, TypeError, AttributeError) as exc:
            raise InputError(f"label template cannot be filled: {exc}", file=self.file,
                             key=f"known_designs[{i}].label", value=template,
                             allowed="{NAME} of a parameter or override key, {system}, {precision}, {g1_dies}",
                             ) from None
        if len(label) > MAX_LABEL:
            raise InputError(f"label longer than {MAX_LABEL} characters", file=self.file,
                             key=f"known_designs[{i}].label", value=template, allowed="a short design name")
        return label


# ---------------------------------------------------------------------- loading
def load_space(path: str | Path) -> Space:
    """Read, validate and check a space file; every problem is one InputError naming file and key."""
    from kvnand.config.loader import read_source

    path = Path(path)
    if not path.is_file():
        from kvnand.paths import DSE_ROOT

        shipped = DSE_ROOT / f"{path}.yaml"
        if path.suffix == "" and shipped.is_file():
            path = shipped
        else:
            avail = ", ".join(sorted(p.name for p in DSE_ROOT.glob("*.yaml")))
            raise InputError("space file not found", file=str(path), allowed=f"a YAML file, e.g. dse/{{{avail}}}")
    return _space(*read_source(path), path)


def stored_space(data: dict, file: str) -> Space:
    """A space from the tree a study stored (`kvnand dse show`), checked as a file would be; `file` names it."""
    from kvnand.config.loader import Source

    return _space(data, Source(file), Path(file))


def _space(data: dict, src, path: Path) -> Space:
    from kvnand.config.loader import validate_tree

    spec = validate_tree(SpaceFile, data, src)
    params = {name: _param(name, v, path, src) for name, v in spec.parameters.items()}
    space = Space(spec.model_copy(update={"parameters": params}), str(path), data)
    _check(space, src)
    return space


def _param(name: str, value: Any, path: Path, src) -> Param | Scalar:
    from pydantic import ValidationError

    key = f"parameters.{name}"
    if not isinstance(value, dict):
        if isinstance(value, (str, int, float, bool)):
            return value
        file, line = src.where(key)
        raise InputError("a parameter is a fixed value or a mapping", file=file, key=key, line=line,
                         allowed="a scalar, or {choices: ...}, {int: [low, high]}, {float: [low, high]}")
    try:
        return Param.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join([key, *(str(x) for x in err["loc"])])
        file, line = src.where(key)
        unknown = err["type"] == "extra_forbidden"
        raise InputError("unknown key" if unknown else err["msg"].removeprefix("Value error, "), file=file, key=key,
                         line=line, allowed=", ".join(Param.model_fields) if unknown else None) from None


def _err(space: Space, src, key: str, msg: str, **kw) -> InputError:
    file, line = src.where(key)
    return InputError(msg, file=file, key=key, line=line, **kw)


def _check(space: Space, src) -> None:
    """Cross-field checks the schema cannot express."""
    from kvnand.study.dse.objectives import check_metric_key

    spec = space.spec
    names = list(spec.parameters)
    for name, p in space.varying.items():
        for other, want in p.when.items():
            if other not in names[: names.index(name)]:
                raise _err(space, src, f"parameters.{name}.when.{other}", "'when' must name an earlier parameter",
                           allowed=", ".join(names[: names.index(name)]) or "(none before this one)")
            domain = space.varying.get(other)
            for v in want if isinstance(want, list) else [want]:
                if domain is not None and not domain.contains(v):
                    raise _err(space, src, f"parameters.{name}.when.{other}", "value outside that parameter's domain",
                               value=v, allowed=str(domain.labels or domain.int or domain.float))
        for b in p.int or p.float or ():
            for ref in bound_names(b):
                if ref not in names[: names.index(name)]:
                    raise _err(space, src, f"parameters.{name}", f"range bound {b!r} must name an earlier parameter",
                               value=ref, allowed=", ".join(names[: names.index(name)]) or "(none before this one)")
        if p.default is not None and not p.contains(p.default):
            raise _err(space, src, f"parameters.{name}.default", "default outside the parameter's domain",
                       value=p.default)
        if isinstance(p.choices, dict) and p.set:
            raise _err(space, src, f"parameters.{name}.set",
                       "a bundle (choices mapping) names its own keys; drop 'set'")
    for i, obj in enumerate(spec.objectives):
        check_metric_key(obj, space, lambda msg, i=i, **kw: _err(space, src, f"objectives[{i}]", msg, **kw))
    if len(set(spec.objectives)) != len(spec.objectives):
        raise _err(space, src, "objectives", "objectives repeat")
    for key in spec.constraints:
        check_metric_key(key, space, lambda msg, key=key, **kw: _err(space, src, f"constraints.{key}", msg, **kw))
    _check_workload(space, src)
    _check_special_values(space, src)
    for i, kd in enumerate(spec.known_designs):
        _check_template(kd.label, lambda msg, i=i, **kw: _err(space, src, f"known_designs[{i}].label", msg, **kw))
        for k, v in kd.params.items():
            if k not in space.varying:
                raise _err(space, src, f"known_designs[{i}].params.{k}", "not a varying parameter",
                           allowed=", ".join(space.varying) or "(no varying parameters)")
            for x in v if isinstance(v, list) else [v]:
                if not space.varying[k].contains(x):
                    raise _err(space, src, f"known_designs[{i}].params.{k}", "value outside the parameter's domain",
                               value=x)
    _check_targets(space, src)


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPEC = re.compile(r"[^{}]{0,20}")  # a short format spec with no nested fields


def _check_template(template: str, error) -> None:
    """A label template names plain fields with short format specs: '{dies:>99999999}' would allocate
    gigabytes and '{system.__class__}' would reach into Python objects."""
    try:
        fields = [(f, spec) for _, f, spec, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise error(f"label template cannot be read: {exc}", value=template) from None
    for f, spec in fields:
        if not _FIELD.fullmatch(f) or not _SPEC.fullmatch(spec or "") or re.search(r"\d{4}", spec or ""):
            raise error("label template field not allowed", value=f"{{{f}{':' + spec if spec else ''}}}",
                        allowed="{NAME} or {NAME:SPEC} with a plain name and a short spec such as {x:.3g}")


NAME_TARGETS = ("system", "precision", "spec_draft")  # evaluate() arguments that are names (the others: numbers)


def _check_special_values(space: Space, src) -> None:
    """Values that become `system`, `precision` or `spec_draft` arguments are names (strings); batch and the
    other speculative decoding numbers are checked by kvnand.scenario.Decode with the known designs."""
    for name, p in space.spec.parameters.items():
        if not isinstance(p, Param):
            if name in NAME_TARGETS and not isinstance(p, str):
                raise _err(space, src, f"parameters.{name}", f"'{name}' takes a name", value=p)
            continue
        if isinstance(p.choices, dict):
            for label, bundle in p.choices.items():
                for k, v in bundle.items():
                    if k in NAME_TARGETS and not isinstance(v, str):
                        raise _err(space, src, f"parameters.{name}.choices.{label}.{k}", f"'{k}' takes a name",
                                   value=v, allowed=f"a {k} name (a string)")
        elif (p.set or name) in NAME_TARGETS:
            target = p.set or name
            if p.choices is None or not all(isinstance(c, str) for c in p.choices):
                raise _err(space, src, f"parameters.{name}", f"a parameter setting '{target}' chooses among names",
                           allowed=f"choices: [a list of {target} names (strings)]")


def _check_workload(space: Space, src) -> None:
    from kvnand.reliability.profile import get_profile
    from kvnand.workload.model import load_model

    w = space.spec.workload
    try:
        get_profile(w.profile)
    except InputError as exc:
        raise _err(space, src, "workload.profile", exc.detail, value=w.profile, allowed=exc.allowed) from None
    for m in w.models:
        try:
            load_model(m)
        except InputError as exc:
            raise _err(space, src, f"workload.models.{m}", exc.detail, allowed=exc.allowed) from None
    space.points  # noqa: B018 -- parses the contexts now, so a bad one fails at load


def _check_targets(space: Space, src) -> None:
    """Override keys must exist in the systems they apply to, and every published design must be a valid
    configuration (this catches unit typos: each parameter's value appears in the known designs)."""
    from kvnand.config.loader import (
        DERIVED_KEYS,
        POLICY_KEY,
        SHORT_KEYS,
        is_policy_key,
        load_system,
        resolve_system_tree,
    )
    from kvnand.config.schema import KvPolicy

    systems = {space.spec.system}
    for p in space.varying.values():
        if isinstance(p.choices, dict):
            systems |= {b["system"] for b in p.choices.values() if "system" in b}
    trees = {}
    for s in sorted(systems):
        try:
            trees[s] = resolve_system_tree(s)[0]
        except InputError as exc:
            raise _err(space, src, "system", exc.detail, value=s, allowed=exc.allowed) from None

    def exists(key: str) -> bool:
        if key in SHORT_KEYS or key in DERIVED_KEYS or key in SPECIAL_TARGETS:
            return True
        if is_policy_key(key):  # the workload's KV policy: its name, or one of its fields
            return key == POLICY_KEY or key[len(POLICY_KEY) + 1:] in KvPolicy.model_fields
        return any(_has_path(t, key) for t in trees.values())

    for name, p in space.spec.parameters.items():
        keys = [(f"parameters.{name}", name)] if not isinstance(p, Param) else (
            [(f"parameters.{name}.choices.{lab}.{k}", k) for lab, b in p.choices.items() for k in b]
            if isinstance(p.choices, dict) else [(f"parameters.{name}", p.set or name)])
        for where, key in keys:
            if not exists(key):
                raise _err(space, src, where, f"'{key}' is not a path in the resolved config of "
                           f"{' or '.join(sorted(systems))}",
                           allowed="a dotted path shown by `kvnand show-config`, or one of "
                           + ", ".join(sorted([*SHORT_KEYS, *DERIVED_KEYS, *SPECIAL_TARGETS]))
                           + f", {POLICY_KEY} or {POLICY_KEY}.FIELD")
    designs = space.known_designs() or [("default design", {n: p.default if p.default is not None else
                                                             (p.labels or p.int or p.float)[0]
                                                             for n, p in space.varying.items()})]
    for label, params in designs:
        d = space.design(params)
        try:
            load_system(d.system, dict(d.overrides))
            if d.decode:
                from kvnand.scenario import Decode

                Decode(**dict(d.decode))
            from kvnand.workload.kv_policy import resolve_policy

            resolve_policy(dict(d.overrides))
            if d.precision is not None:
                from kvnand.workload.precision import get_precision

                get_precision(d.precision)
        except InputError as exc:
            raise InputError(f"design '{label}' is not a valid configuration: {exc}", file=space.file,
                             key="known_designs" if space.spec.known_designs else "parameters") from None


def _has_path(tree: dict, dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
