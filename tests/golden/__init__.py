"""Golden result records: the cases, how a record is normalized, stored, compared and regenerated.

Shared by tests/test_golden.py (compares), tests/conftest.py (`pytest --regen-golden`) and
`python -m tests.golden --regen` (tests/golden/__main__.py). The data are one JSON file per system in this
directory: {case id: record}, sorted keys, one pretty-printed record per case, so a diff reads per case.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REGEN_HINT = "regenerate with `python -m tests.golden --regen` (or `pytest --regen-golden`) and review the diff"
REL_TOL = 1e-9
# Event-mode breakdown entries are differences of absolute times along the critical path, so their precision
# is that of the makespan, not their own: an entry of microseconds in a step of seconds moves at ~1e-9 relative
# when the same work is split into two tasks. Every float also passes within ABS_TOL_OF_LATENCY x the record's
# latency (1e-12 of a step).
ABS_TOL_OF_LATENCY = 1e-12
# Stored floats keep 12 significant digits: far inside REL_TOL, and a regenerated file does not churn in
# digits no comparison looks at.
STORED_DIGITS = 12

MODELS = ("llama2-7b", "llama3.1-8b", "llama3.1-70b", "mixtral-8x7b", "opt-30b")  # MHA, GQA, GQA-8, MoE, OPT
CONTEXTS = (128, 10_000, 100_000)
# The event engine unrolls every head of every layer: opt-30b (48 layers x 56 MHA heads) costs ~1 s per
# point there, most of the golden run, so those cases are the `slow` part.
EVENT_HEAVY_MODELS = ("opt-30b",)


@dataclass(frozen=True)
class Case:
    """One kvnand.evaluate() call whose whole record is pinned."""

    system: str
    model: str
    context: int
    mode: str = "fast"
    precision: str | None = None          # None: the system's default precision
    overrides: tuple[tuple[str, Any], ...] = field(default=())  # --set keys, in the order given
    refresh: str | None = None
    prefill_tokens: int | None = None

    @property
    def id(self) -> str:
        parts = [self.system, self.model, str(self.context), self.precision or "default", self.mode]
        parts += [f"{k}={v}" for k, v in self.overrides]
        if self.refresh:
            parts.append(f"refresh={self.refresh}")
        if self.prefill_tokens:
            parts.append(f"prefill={self.prefill_tokens}")
        return "/".join(parts)

    @property
    def file(self) -> Path:
        return HERE / (self.system.replace(":", "_") + ".json")

    @property
    def slow(self) -> bool:
        return self.mode != "fast" and self.model in EVENT_HEAVY_MODELS

    def evaluate(self) -> dict:
        import kvnand

        return kvnand.evaluate(self.system, self.model, self.context, precision=self.precision, mode=self.mode,
                               overrides=dict(self.overrides), refresh=self.refresh,
                               prefill_tokens=self.prefill_tokens)


def systems() -> list[str]:
    """Every shipped system preset, plus the auto-split variant of KVNAND-D."""
    from kvnand.config.loader import system_names

    return [*system_names(), "kvnand-d:auto"]


def cases() -> list[Case]:
    """The grid (every system x MODELS x CONTEXTS x both engines), then precisions, overrides, refresh, prefill."""
    out = [Case(s, m, c, mode) for s in systems() for m in MODELS for c in CONTEXTS for mode in ("fast", "event")]
    for s in ("kvnand-c16", "kvnand-d:auto", "base1", "base2", "cambricon-llm-m", "csd-offload"):
        out += [Case(s, "llama3.1-8b", 10_000, precision=p) for p in ("bf16", "w8a8", "w4a16")]
    for s in ("kvnand-d:auto", "cambricon-llm-m"):
        out += [Case(s, "llama3.1-8b", 10_000, "event", precision=p) for p in ("w8a8", "w4a16")]
    out.append(Case("kvnand-c16", "mixtral-8x7b", 100_000, precision="w4a16"))
    sets = [  # (system, model, context, overrides, also in event mode)
        ("kvnand-d", "llama3.1-70b", 100_000, (("dies", 32), ("g2_dies", 8)), True),
        ("kvnand-d:auto", "llama3.1-70b", 100_000, (("dies", 32),), False),
        ("kvnand-d", "llama3.1-8b", 10_000, (("g2_dies", 3),), False),
        ("kvnand-d", "llama2-7b", 10_000, (("mapping", "naive"),), False),
        ("kvnand-c16", "llama3.1-8b", 10_000, (("mapping", "naive"),), True),
        ("kvnand-d", "llama3.1-8b", 10_000, (("hg_pipeline", False),), False),
        ("base1", "llama2-7b", 10_000, (("hg_pipeline", False),), False),
        ("kvnand-c16", "llama3.1-8b", 10_000, (("fmacs_per_plane", 32), ("page_size", "16 KiB")), False),
    ]
    for s, m, c, ov, event in sets:
        out += [Case(s, m, c, mode, overrides=ov) for mode in (("fast", "event") if event else ("fast",))]
    out += [Case("kvnand-d", "llama3.1-8b", 10_000, refresh="continuous"),
            Case("kvnand-c16", "llama2-7b", 10_000, refresh="continuous"),
            Case("kvnand-c16", "llama3.1-8b", 100_000, prefill_tokens=1000)]
    ids = [c.id for c in out]
    assert len(ids) == len(set(ids)), "two golden cases share an id"
    return out


# ------------------------------------------------------------------------------------------ records
def _not_json(obj):
    raise TypeError(f"the result record holds a {type(obj).__name__}, which the golden file cannot pin")


def normalize(record: dict) -> Any:
    """The record as JSON data (tuples become lists), without in-memory extras (`_timeline`, `_program`)."""
    public = {k: v for k, v in record.items() if not k.startswith("_")}
    return json.loads(json.dumps(public, default=_not_json))


def _stored(x: Any) -> Any:
    if isinstance(x, float) and math.isfinite(x):
        return float(f"{x:.{STORED_DIGITS}g}")
    if isinstance(x, dict):
        return {k: _stored(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_stored(v) for v in x]
    return x


def _kind(x: Any) -> str:
    return "number" if isinstance(x, float) else type(x).__name__  # bool stays apart from int


def diff(old: Any, new: Any, path: str = "", abs_tol: float | None = None) -> Iterator[tuple[str, Any, Any]]:
    """(key path, golden value, new value) of every leaf that moved. Floats agree within REL_TOL or within
    ABS_TOL_OF_LATENCY x the record's latency (NaN equals NaN); ints, strings, bools and None must be equal
    and keep their type; keys must match exactly."""
    if abs_tol is None:
        latency = old.get("latency_s") if isinstance(old, dict) else None
        abs_tol = ABS_TOL_OF_LATENCY * latency if isinstance(latency, float) else 0.0
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(old.keys() | new.keys()):
            sub = f"{path}.{k}" if path else k
            if k not in new:
                yield sub, old[k], "<missing>"
            elif k not in old:
                yield sub, "<missing>", new[k]
            else:
                yield from diff(old[k], new[k], sub, abs_tol)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from diff(a, b, f"{path}[{i}]", abs_tol)
    elif _kind(old) != _kind(new):
        yield path, old, new
    elif isinstance(old, float):
        if not (math.isclose(old, new, rel_tol=REL_TOL, abs_tol=abs_tol) or (math.isnan(old) and math.isnan(new))):
            yield path, old, new
    elif old != new:
        yield path, old, new


def describe(case_id: str, moved: list[tuple[str, Any, Any]]) -> str:
    """The failure message: the case, then one line per moved key path with golden and new values."""
    lines = [f"golden case {case_id}: {len(moved)} value(s) moved (golden -> now)"]
    for path, old, new in moved:
        rel = ""
        if isinstance(old, float) and isinstance(new, float) and old:
            rel = f"  (rel {(new - old) / abs(old):+.3g})"
        lines.append(f"  {path or '<record>'}: {old!r} -> {new!r}{rel}")
    lines.append(REGEN_HINT + " if the change is intended")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ files
def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def dumps(records: dict[str, Any]) -> str:
    return json.dumps(records, indent=1, sort_keys=True) + "\n"


def regenerate(log=print) -> int:
    """Evaluate every case and rewrite every golden file (stale files removed). Returns the number of cases."""
    by_file: dict[Path, dict[str, Any]] = {}
    all_cases = cases()
    for case in all_cases:
        by_file.setdefault(case.file, {})[case.id] = _stored(normalize(case.evaluate()))
    for stale in set(HERE.glob("*.json")) - set(by_file):
        stale.unlink()
    for path, records in sorted(by_file.items()):
        path.write_text(dumps(records))
        log(f"wrote {len(records):4d} cases to {path.relative_to(HERE.parent.parent)}")
    return len(all_cases)
