"""Measurement helpers: repeated timing, statistics, subprocess runs, the result record of one benchmark."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class Code:
    """Where the measured kvnand lives: this repo, or a copy (`python -m benchmarks --baseline-files DIR`)."""

    root: Path = REPO


def overlay_tree(overlay: Path) -> Path:
    """A temporary copy of this tree's kvnand/ with `overlay`'s files laid over it; presets are symlinked."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="kvnand-baseline-"))
    shutil.copytree(REPO / "kvnand", tmp / "kvnand", ignore=shutil.ignore_patterns("__pycache__"))
    for d in ("arch_configs", "validation", "dse"):
        if (REPO / d).exists():
            (tmp / d).symlink_to(REPO / d)
    for f in [f for f in Path(overlay).rglob("*") if f.is_file()]:
        dst = tmp / f.relative_to(overlay)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
    return tmp


def use_tree(root: Path) -> None:
    """Measure the kvnand package (and presets) under `root`: first on sys.path here and in every child."""
    Code.root = Path(root)
    sys.path.insert(0, str(Code.root))


@dataclass
class Result:
    """One benchmark: a target (`<=` a time or size, `>=` a rate), the samples and what else was learned."""

    name: str
    what: str
    unit: str                      # "s", "ms", "MB", "points/s"
    target: float | None           # None: informational, no pass/fail
    better: str = "lower"          # "lower" (times, sizes) or "higher" (rates)
    samples: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def quartiles(self) -> tuple[float, float] | None:
        if len(self.samples) < 4:
            return None
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[0], q[2]

    @property
    def ratio(self) -> float | None:
        """measured / target for times and sizes, target / measured for rates: <= 1 passes, either way."""
        m = self.median
        if m is None or not self.target:
            return None
        return m / self.target if self.better == "lower" else (self.target / m if m > 0 else float("inf"))

    @property
    def passed(self) -> bool | None:
        if self.error is not None:
            return False
        r = self.ratio
        return None if r is None else r <= 1.0

    def spread(self) -> str:
        if not self.samples:
            return ""
        q = self.quartiles()
        lo, hi = min(self.samples), max(self.samples)
        s = f"{_fmt(lo)}-{_fmt(hi)}"
        if q is not None:
            s += f" (IQR {_fmt(q[0])}-{_fmt(q[1])})"
        return s

    def as_dict(self) -> dict:
        q = self.quartiles()
        return {"name": self.name, "what": self.what, "unit": self.unit, "target": self.target,
                "better": self.better, "median": self.median, "min": min(self.samples, default=None),
                "max": max(self.samples, default=None), "q1": q[0] if q else None, "q3": q[1] if q else None,
                "n": len(self.samples), "ratio": self.ratio, "passed": self.passed, "samples": self.samples,
                "extra": self.extra, "error": self.error}


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt(x: float | None) -> str:
    return "-" if x is None else _fmt(x)


def repeat(fn: Callable[[], object], n: int, warmup: int = 0, clock=time.perf_counter) -> list[float]:
    """Seconds per call of `fn`, `n` times after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def env(**extra: str) -> dict:
    """The environment of a child: the measured kvnand (and this repo's benchmarks) importable first."""
    e = dict(os.environ)
    paths = [str(Code.root)] + ([str(REPO)] if Code.root != REPO else [])
    e["PYTHONPATH"] = os.pathsep.join(paths + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e.update(extra)
    return e


def run_timed(cmd: list[str], n: int, *, child_env: dict | None = None, cwd: Path | None = None,
              timeout: float = 600) -> tuple[list[float], subprocess.CompletedProcess]:
    """Wall-clock seconds of `n` runs of a command (interpreter start-up included); the last run's outcome."""
    times = []
    proc = None
    for _ in range(n):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env or env(), cwd=cwd or Code.root,
                              timeout=timeout)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            break
    return times, proc


def kvnand_command() -> list[str]:
    """The `kvnand` console script of this interpreter's environment (else `python -m kvnand.cli`)."""
    script = Path(PYTHON).parent / "kvnand"
    return [str(script)] if script.is_file() else [PYTHON, "-m", "kvnand.cli"]


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def table(results: list[Result]) -> str:
    head = ("benchmark", "target", "median", "spread: min-max (IQR)", "ratio", "result")
    rows = []
    for r in results:
        cmp_ = "<=" if r.better == "lower" else ">="
        target = f"{cmp_} {fmt(r.target)} {r.unit}" if r.target is not None else "(info)"
        verdict = "ERROR" if r.error else {True: "pass", False: "FAIL", None: "-"}[r.passed]
        rows.append((r.name, target, f"{fmt(r.median)} {r.unit}" if r.samples else "-", r.spread(),
                     fmt(r.ratio) if r.ratio is not None else "-", verdict))
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)
