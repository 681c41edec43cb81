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


class cached_property:  # noqa: N801 (named after functools.cached_property, which it replaces)
    """functools.cached_property without its per-access lock (Python 3.11 takes an RLock on every first
    access, which dominated fast mode: each task is evaluated once per program). Stores the value in the
    instance __dict__ (so it works on frozen dataclasses); later reads are plain attribute lookups."""

    def __init__(self, func):
        self.func = func
        self.attrname = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner, name):
        self.attrname = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = self.func(instance)
        instance.__dict__[self.attrname] = value
        return value


# The nodes are frozen dataclasses (hashable, safe to share between programs). Two speed-ups, same behaviour:
# - what is derived from a Pipe's or Task's fields is computed once per object (cached_property above); the
#   engines need cycle/duration/tail/label of every task;
# - __init__ stores the fields straight into the instance __dict__ (init=False + a hand-written __init__): the
#   generated __init__ of a frozen dataclass calls object.__setattr__ once per field, which made building a
#   program (tens of nodes per evaluation) a visible part of evaluate(). eq, hash, repr, fields() and
#   dataclasses.replace are the dataclass ones.


@dataclass(frozen=True, init=False)
class Pipe:
    """Per-item stages: names, durations, and the internal resources each stage holds."""

    names: tuple[str, ...]
    times: tuple[float, ...]
    holds: tuple[tuple[str, ...], ...]  # per stage: internal resources held during it

    def __init__(self, names, times, holds):
        d = self.__dict__
        d["names"] = names
        d["times"] = times
        d["holds"] = holds

    def _derive(self) -> None:
        """Occupancy per internal resource, cycle and fill at once (one call per pipe in the engines)."""
        occ: dict[str, float] = {}
        for t, held in zip(self.times, self.holds, strict=True):
            for r in held:
                occ[r] = occ.get(r, 0.0) + t
        d = self.__dict__
        d["_occupancy"] = occ
        d["fill"] = sum(self.times)
        if occ:
            name = max(occ, key=occ.get)
            d["_cycle"] = (occ[name], name)

    @cached_property
    def _occupancy(self) -> dict[str, float]:
        self._derive()
        return self.__dict__["_occupancy"]

    def occupancy(self) -> dict[str, float]:
        return dict(self._occupancy)

    @cached_property
    def _cycle(self) -> tuple[float, str]:
        occ = self._occupancy
        cyc = self.__dict__.get("_cycle")
        if cyc is None:
            name = max(occ, key=occ.get)  # no internal resource: ValueError, as always
            cyc = occ[name], name
        return cyc

    def cycle(self) -> tuple[float, str]:
        """Steady-state time per item and the internal resource that sets it."""
        return self._cycle

    @cached_property
    def fill(self) -> float:
        """Time of one item through every stage (sum of the stage times)."""
        self._derive()
        return self.__dict__["fill"]

    def makespan(self, items: float) -> float:
        if items <= 0:
            return 0.0
        return self.fill + (items - 1) * self._cycle[0]


def single_stage(name: str, time: float) -> Pipe:
    p = Pipe.__new__(Pipe)
    # the fields, and what Pipe._derive would compute from them, without the loop (most tasks are single-stage)
    p.__dict__.update(names=(name,), times=(time,), holds=((name,),), _occupancy={name: 0.0 + time},
                      fill=0 + time, _cycle=(0.0 + time, name))
    return p


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
        d = self.__dict__
        d["name"] = name
        d["stage"] = stage
        d["resources"] = resources
        d["pipe"] = pipe
        d["items"] = items
        d["counts"] = counts
        d["limiter"] = limiter

    def derive(self, label: bool = True) -> dict:
        """duration, tail and occupancy (and bound_by, label) computed at once: the engines need them for
        every task, once. Returns the instance dict that now holds them. Same arithmetic as the properties."""
        d = self.__dict__
        pipe = self.pipe
        pd = pipe.__dict__
        if "fill" not in pd:
            pipe._derive()
        items = self.items
        if items > 0:
            c = pd["_cycle"][0] if "_cycle" in pd else pipe._cycle[0]
            dur = pd["fill"] + (items - 1) * c
            tail = dur - items * c
        else:
            dur = tail = 0.0
        d["duration"] = dur
        d["tail"] = tail
        res = self.resources
        if len(res) == 1:
            d["occupancy"] = ((res[0], dur - tail),)
        else:
            d["occupancy"] = tuple({r: (dur - tail if j == 0 else dur) for j, r in enumerate(res)}.items())
        if label and "label" not in d:
            if self.limiter:
                bound = self.limiter
            elif items > 1:
                bound = pd["_cycle"][1]
            elif len(pipe.times) == 1:
                bound = pipe.names[0]  # max(zip(times, names)) of one stage
            else:
                return d  # several stages (or none): let the property compute it
            d["bound_by"] = bound
            d["label"] = f"{bound} ({res[0] if len(res) == 1 else ','.join(res)})"
        return d

    @cached_property
    def duration(self) -> float:
        return self.derive()["duration"]

    @cached_property
    def tail(self) -> float:
        """Time after the first-stage resource finished its last item (the pipeline drain). A following
        burst on the same resource may start that much before this one ends (its first item overlaps
        our drain): back-to-back bursts cost  sum(stages) + (n1 + n2 - 1) x cycle, as one long burst."""
        return self.derive()["tail"]

    @cached_property
    def occupancy(self) -> tuple[tuple[str, float], ...]:
        """(system resource, seconds it is held): the duration, less the drain (tail) for the first one."""
        return self.derive()["occupancy"]

    @cached_property
    def bound_by(self) -> str:
        if self.limiter:
            return self.limiter
        return self.pipe.cycle()[1] if self.items > 1 else max(
            zip(self.pipe.times, self.pipe.names, strict=True))[1]

    @cached_property
    def label(self) -> str:
        """The breakdown key of this task: limiting resource and the system resources it holds."""
        return f"{self.bound_by} ({','.join(self.resources)})"


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
