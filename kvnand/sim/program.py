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

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pipe:
    """Per-item stages: names, durations, and the internal resources each stage holds."""

    names: tuple[str, ...]
    times: tuple[float, ...]
    holds: tuple[tuple[str, ...], ...]  # per stage: internal resources held during it

    def occupancy(self) -> dict[str, float]:
        occ: dict[str, float] = {}
        for t, held in zip(self.times, self.holds, strict=True):
            for r in held:
                occ[r] = occ.get(r, 0.0) + t
        return occ

    def cycle(self) -> tuple[float, str]:
        """Steady-state time per item and the internal resource that sets it."""
        occ = self.occupancy()
        name = max(occ, key=occ.get)
        return occ[name], name

    def makespan(self, items: float) -> float:
        if items <= 0:
            return 0.0
        return sum(self.times) + (items - 1) * self.cycle()[0]


def single_stage(name: str, time: float) -> Pipe:
    return Pipe((name,), (time,), ((name,),))


@dataclass(frozen=True)
class Task:
    name: str
    stage: str                          # breakdown label (qkv, attention, ffn, ...)
    resources: tuple[str, ...]          # system resources held exclusively for the whole task
    pipe: Pipe
    items: float                        # items on the busiest unit
    counts: tuple[tuple[str, float], ...] = ()   # action counts of the whole task (all units)
    limiter: str = ""                   # named physical resource that limits it (set from the pipe if "")

    @property
    def duration(self) -> float:
        return self.pipe.makespan(self.items)

    @property
    def tail(self) -> float:
        """Time after the first-stage resource finished its last item (the pipeline drain). A following
        burst on the same resource may start that much before this one ends (its first item overlaps
        our drain): back-to-back bursts cost  sum(stages) + (n1 + n2 - 1) x cycle, as one long burst."""
        if self.items <= 0:
            return 0.0
        return self.duration - self.items * self.pipe.cycle()[0]

    @property
    def bound_by(self) -> str:
        if self.limiter:
            return self.limiter
        return self.pipe.cycle()[1] if self.items > 1 else max(
            zip(self.pipe.times, self.pipe.names, strict=True))[1]


@dataclass(frozen=True)
class Seq:
    parts: tuple
    name: str = ""


@dataclass(frozen=True)
class Par:
    parts: tuple
    name: str = ""


@dataclass(frozen=True)
class Loop:
    body: object
    n: int
    name: str = ""


@dataclass(frozen=True)
class Pipeline:
    """n independent iterations of A then B (B(i) needs A(i)); iterations share only resources, so A(i+1)
    overlaps B(i) and B(i) overlaps B(i+1) wherever they use different resources."""

    a: object
    b: object
    n: int
    name: str = ""


@dataclass
class Counts:
    actions: dict[str, float] = field(default_factory=dict)

    def add(self, other: dict[str, float], k: float = 1.0):
        for a, v in other.items():
            self.actions[a] = self.actions.get(a, 0.0) + v * k


def count_actions(node, k: float = 1.0, out: Counts | None = None) -> Counts:
    """Sum of action counts over the program (loops multiply); independent of timing."""
    out = out or Counts()
    if isinstance(node, Task):
        out.add(dict(node.counts), k)
    elif isinstance(node, (Seq, Par)):
        for p in node.parts:
            count_actions(p, k, out)
    elif isinstance(node, Loop):
        count_actions(node.body, k * node.n, out)
    elif isinstance(node, Pipeline):
        count_actions(node.a, k * node.n, out)
        count_actions(node.b, k * node.n, out)
    return out


def tasks(node):
    """Every distinct task object of the program (loops not unrolled)."""
    if isinstance(node, Task):
        yield node
    elif isinstance(node, (Seq, Par)):
        for p in node.parts:
            yield from tasks(p)
    elif isinstance(node, Loop):
        yield from tasks(node.body)
    elif isinstance(node, Pipeline):
        yield from tasks(node.a)
        yield from tasks(node.b)
