"""A query (Point: system, model, context, precision, overrides as the user gave them) resolved once into a
Scenario (the System, ModelSpec and Precision objects and the context): the one place that knows that a
system name may end in ':auto' (pick the fastest G1/G2 split), how overrides reach the system, and that a
precision defaults to the system's own."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from kvnand.config.loader import load_system
from kvnand.config.schema import System
from kvnand.errors import InputError
from kvnand.workload.model import ModelSpec, load_model
from kvnand.workload.precision import Precision, get_precision

AUTO = ":auto"


def split_auto(name: str) -> tuple[str, bool]:
    """('kvnand-d', True) for 'kvnand-d:auto'; (name, False) otherwise."""
    return (name.removesuffix(AUTO), True) if name.endswith(AUTO) else (name, False)


@dataclass(frozen=True)
class Point:
    system: str
    model: str
    context: int
    precision: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.context, bool) or not isinstance(self.context, int) or self.context < 1:
            raise InputError("context must be a positive number of tokens", key="context", value=self.context)


@dataclass(frozen=True)
class Scenario:
    point: Point
    system: System
    model: ModelSpec
    precision: Precision

    @property
    def context(self) -> int:
        return self.point.context


@lru_cache(maxsize=256)
def _model(name: str) -> ModelSpec:
    return load_model(name)


def resolve(point: Point) -> Scenario:
    """The parts of a concrete system point (a ':auto' system is resolved by evaluate(), split by split)."""
    name, auto = split_auto(point.system)
    if auto:
        raise InputError("resolve one G1/G2 split at a time", key="system", value=point.system)
    system = load_system(name, point.overrides)
    return Scenario(point, system, _model(point.model), get_precision(point.precision or system.default_precision))
