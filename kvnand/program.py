"""The one description of the work: a hierarchical program of tasks, consumed by both engines.

A Task is a burst of `items` identical items (pages, transfers, vector ops) through a pipeline of
stages on one unit; all units of its resource group work in parallel and the busiest unit sets the time.
Each stage holds a set of internal resources (plane data register, cache register, ECC decoder, PE ...);
a resource is held from the first to the last stage that names it. For identical items the exact
makespan of such a pipeline is  sum(stage times) + (items - 1) * max(resource occupancy per item)
(see `Pipe.makespan`); the page-level event mode checks this by stepping every item.

Composition: Seq (one after another), Par (together, sharing resources), Loop (n times in sequence),
Pipeline (two-stage software pipeline over n iterations: A(i+1) overlaps B(i)).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# The nodes are frozen dataclasses (hashable, safe to share between programs). What the engines need of a
# Pipe or Task (occupancy, cycle, duration, tail, label) is derived once, in __init__, and stored beside the
# fields in the instance __dict__ (eq, hash, repr, fields() and dataclasses.replace see only the fields).
# __init__ writes the __dict__ directly: a frozen dataclass's generated __init__ calls object.__setattr__
# once per field, which made building a program a visible part of evaluate().


@dataclass(frozen=True, init=False)
class Pipe:
    """Per-item stages: names, durations, and the internal resources each stage holds."""

    names: tuple[str, ...]
    times: tuple[float, ...]
    holds: tuple[tuple[str, ...], ...]  # per stage: internal resources held during it

    def __init__(self, names, times, holds):
        if len(times) == 1:  # most pipes (transfers, NPU ops) are one stage
            occ = dict.fromkeys(holds[0], times[0])
        else:
            occ = {}
            for t, held in zip(times, holds, strict=True):
                for r in held:
                    occ[r] = occ.get(r, 0.0) + t
        name = max(occ, key=occ.get) if occ else None
        self.__dict__.update(names=names, times=times, holds=holds, _occupancy=occ, fill=sum(times),
                             _cycle=(occ[name], name) if occ else None)

    def occupancy(self) -> dict[str, float]:
        return dict(self._occupancy)

    def cycle(self) -> tuple[float, str]:
        """Steady-state time per item and the internal resource that sets it."""
        if self._cycle is None:
            raise ValueError("a pipe needs at least one internal resource")
        return self._cycle

    def makespan(self, items: float) -> float:
        if items <= 0:
            return 0.0
        return self.fill + (items - 1) * self.cycle()[0]


def single_stage(name: str, time: float) -> Pipe:
    return Pipe((name,), (time,), ((name,),))


@dataclass(frozen=True, init=False)
class Task:
    name: str
    stage: str                          # breakdown label (qkv, attention, ffn, ...)
    resources: tuple[str, ...]          # system resources held exclusively for the whole task
    pipe: Pipe
    items: float                        # items on the busiest unit
    counts: tuple[tuple[str, float], ...] = ()   # action counts of the whole task (all units)
    limiter: str = ""                   # named physical resource that limits it (set from the pipe if "")

    def __init__(self, name, stage, resources, pipe, items, counts=(), limiter=""):
        if items > 0:
            cycle = pipe.cycle()[0]
            duration = pipe.fill + (items - 1) * cycle
            # the drain: time after the first-stage resource finished its last item. A following burst on the
            # same resource may start that much before this one ends (its first item overlaps our drain), so
            # back-to-back bursts cost  sum(stages) + (n1 + n2 - 1) x cycle, as one long burst
            tail = duration - items * cycle
        else:
            duration = tail = 0.0
        if limiter:
            bound_by = limiter
        elif items > 1:
            bound_by = pipe.cycle()[1]
        elif len(pipe.names) == 1:
            bound_by = pipe.names[0]
        else:
            bound_by = max(zip(pipe.times, pipe.names, strict=True))[1]
        # (system resource, seconds it is held): the duration, less the drain for the first one
        if len(resources) == 1:
            occupancy = ((resources[0], duration - tail),)
        else:
            occupancy = tuple({r: (duration - tail if j == 0 else duration) for j, r in enumerate(resources)}.items())
        self.__dict__.update(
            name=name, stage=stage, resources=resources, pipe=pipe, items=items, counts=counts, limiter=limiter,
            duration=duration, tail=tail, bound_by=bound_by, occupancy=occupancy,
            label=f"{bound_by} ({','.join(resources)})")  # the breakdown key of this task


@dataclass(frozen=True, init=False)
class _Group:
    parts: tuple
    name: str = ""

    def __init__(self, parts, name=""):
        d = self.__dict__
        d["parts"] = parts
        d["name"] = name


class Seq(_Group):
    """Parts one after another."""


class Par(_Group):
    """Parts together, sharing resources."""


@dataclass(frozen=True, init=False)
class Loop:
    body: object
    n: int
    name: str = ""

    def __init__(self, body, n, name=""):
        d = self.__dict__
        d["body"] = body
        d["n"] = n
        d["name"] = name


@dataclass(frozen=True, init=False)
class Pipeline:
    """n independent iterations of A then B (B(i) needs A(i)); iterations share only resources, so A(i+1)
    overlaps B(i) and B(i) overlaps B(i+1) wherever they use different resources."""

    a: object
    b: object
    n: int
    name: str = ""

    def __init__(self, a, b, n, name=""):
        d = self.__dict__
        d["a"] = a
        d["b"] = b
        d["n"] = n
        d["name"] = name


@dataclass
class Counts:
    actions: dict[str, float] = field(default_factory=dict)

    def add(self, other: dict[str, float], k: float = 1.0):
        for a, v in other.items():
            self.actions[a] = self.actions.get(a, 0.0) + v * k


def restage(node, stage: str):
    """The program with every task's breakdown stage set to `stage` (e.g. a draft model's steps show as one
    stage of the step they belong to)."""
    if isinstance(node, Task):
        return replace(node, stage=stage)
    if isinstance(node, (Seq, Par)):
        return type(node)(tuple(restage(p, stage) for p in node.parts), node.name)
    if isinstance(node, Loop):
        return Loop(restage(node.body, stage), node.n, node.name)
    if isinstance(node, Pipeline):
        return Pipeline(restage(node.a, stage), restage(node.b, stage), node.n, node.name)
    raise TypeError(f"not a program node: {type(node).__name__}")


def count_actions(node, k: float = 1.0, out: Counts | None = None) -> Counts:
    """Sum of action counts over the program (loops multiply); independent of timing."""
    out = out or Counts()
    _count(node, k, out.actions)
    return out


def _count(node, k: float, acts: dict[str, float]) -> None:
    if isinstance(node, Task):
        for a, v in dict(node.counts).items():  # a repeated action keeps its last value
            acts[a] = acts.get(a, 0.0) + v * k
    elif isinstance(node, (Seq, Par)):
        for p in node.parts:
            _count(p, k, acts)
    elif isinstance(node, Loop):
        _count(node.body, k * node.n, acts)
    elif isinstance(node, Pipeline):
        _count(node.a, k * node.n, acts)
        _count(node.b, k * node.n, acts)
