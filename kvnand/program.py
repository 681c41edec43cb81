"""The one description of the work: a hierarchical program of tasks, consumed by both engines.

A Task is a burst of `items` identical items (pages, transfers, vector ops) through a pipeline of
stages on one unit; all units of its resource group work in parallel and the busiest unit sets the time.
Each stage holds a set of internal resources (plane data register, cache register, ECC decoder, PE ...);
a resource is held from the first to the last stage that names it. For identical items the exact
makespan of such a pipeline is  sum(stage times) + (items - 1) * max(resource occupancy per item)
(see `Pipe.makespan`); the page-level event mode checks this by stepping every item.

Composition: Seq (one after another), Par (together, sharing resources), Loop (n times in sequence),
Pipeline (two-stage software pipeline over n iterations: A(i+1) overlaps B(i)).

Leaf quantities (stage times, items, counts, loop trip counts) are numbers, or numpy arrays over the points
of a batch (`kvnand.evaluate_many`: one program per shape, its swept values as arrays). The helpers below
(`ceil`, `maximum`, `where`, `pick`, ...) are the scalar operation on numbers and the elementwise one on
arrays, so the lowering is one code for both. Where a scalar program names one branch (which stage limits a
pipe, which of two pipes is slower), a batch names it per point: a `Choice` of labels with boolean masks.
Only the fast engine takes arrays; the event engine takes scalar programs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


def batched(x) -> bool:
    """Whether `x` is an array over the points of a batch (numpy scalars count as numbers)."""
    return getattr(x, "ndim", 0) > 0


def _np():
    import numpy as np  # only a batch needs numpy; `import kvnand` stays light

    return np


def ceil(x):
    """math.ceil of a number (an int), np.ceil of an array."""
    return _np().ceil(x) if batched(x) else math.ceil(x)


def floor(x):
    return _np().floor(x) if batched(x) else math.floor(x)


def sqrt(x):
    return _np().sqrt(x) if batched(x) else math.sqrt(x)


def maximum(a, b):
    return _np().maximum(a, b) if batched(a) or batched(b) else max(a, b)


def minimum(a, b):
    return _np().minimum(a, b) if batched(a) or batched(b) else min(a, b)


def where(cond, a, b):
    """`a if cond else b`, per point for a batch."""
    return _np().where(cond, a, b) if batched(cond) else (a if cond else b)


def uniform(cond) -> bool:
    """A structural condition (one that picks which tasks exist) as one bool: the same at every point of a
    batch, else ValueError (such points lower to different programs and are walked apart)."""
    if not batched(cond):
        return bool(cond)
    np = _np()
    if np.all(cond):
        return True
    if not np.any(cond):
        return False
    raise ValueError("a structural condition differs between the points of a batch")


def every(cond) -> bool:
    """Whether `cond` holds at every point."""
    return bool(_np().all(cond)) if batched(cond) else bool(cond)


class Choice(tuple):
    """A label that differs between the points of a batch: ((label, mask), ...); the masks partition the
    points. Hashed by identity (a dict key for one walk of one program)."""

    __slots__ = ()

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__

    def map(self, f) -> Choice:
        return Choice((f(name), mask) for name, mask in self)


def label_parts(label) -> tuple:
    """((name, mask), ...) of a label; mask True (every point) for a plain string."""
    return tuple(label) if isinstance(label, Choice) else ((label, True),)


def _labels(pairs) -> str | Choice:
    """A label from (name, mask) pairs: a string when one name covers every point, else a Choice."""
    np = _np()
    merged: dict = {}
    for name, mask in pairs:
        if mask is True or np.any(mask):
            merged[name] = mask if name not in merged else (merged[name] | mask)
    if len(merged) == 1:
        return next(iter(merged))
    return Choice(merged.items())


def label_where(cond, a, b) -> str | Choice:
    """Label a where cond, else b."""
    if not batched(cond):
        return a if cond else b
    if a == b and not isinstance(a, Choice):
        return a
    return _labels([(n, cond & m) for n, m in label_parts(a)] + [(n, ~cond & m) for n, m in label_parts(b)])


def top(pairs):
    """(name, value) of the largest value, the first on ties (as max()); per point for a batch (name a
    Choice when the winner differs)."""
    pairs = list(pairs)
    if not any(batched(v) for _, v in pairs):
        return max(pairs, key=lambda kv: kv[1])
    np = _np()
    vals = np.stack(np.broadcast_arrays(*[v for _, v in pairs]))
    idx = np.argmax(vals, axis=0)
    first = idx.flat[0]
    if (idx == first).all():  # one winner everywhere (the usual case)
        return pairs[first][0], vals[first]
    return _labels((pairs[i][0], idx == i) for i in np.unique(idx)), vals.max(axis=0)


def pick(cond, a, b):
    """`a if cond else b` for two alternatives of one leaf (single-stage pipes, or tasks with the same name,
    stage, resources and action names), per point for a batch: a leaf whose numbers and labels follow each
    point's branch."""
    if not batched(cond):
        return a if cond else b
    if every(cond):
        return a
    if not _np().any(cond):
        return b
    if isinstance(a, Pipe):
        if len(a.names) != 1 or len(b.names) != 1:
            raise TypeError("pick() of pipes takes single-stage pipes")
        name = label_where(cond, a.names[0], b.names[0])
        return Pipe((name,), (where(cond, a.times[0], b.times[0]),), ((name,),))
    if (a.name, a.stage, a.resources) != (b.name, b.stage, b.resources) or \
            [k for k, _ in a.counts] != [k for k, _ in b.counts]:
        raise TypeError(f"pick() of tasks {a.name!r} and {b.name!r} that differ in more than their numbers")
    t = Task.__new__(Task)
    counts = tuple((k, where(cond, va, vb)) for (k, va), (_, vb) in zip(a.counts, b.counts, strict=True))
    t.__dict__.update(
        name=a.name, stage=a.stage, resources=a.resources, pipe=a.pipe, items=where(cond, a.items, b.items),
        counts=counts, _actions=_last_values(counts),
        limiter=a.limiter, duration=where(cond, a.duration, b.duration), tail=where(cond, a.tail, b.tail),
        bound_by=label_where(cond, a.bound_by, b.bound_by),
        occupancy=tuple((r, where(cond, oa, ob)) for (r, oa), (_, ob) in zip(a.occupancy, b.occupancy, strict=True)),
        label=label_where(cond, a.label, b.label))
    return t

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
        if len(occ) == 1 or not any(batched(t) for t in times):
            name = max(occ, key=occ.get) if occ else None
            cycle = (occ[name], name) if occ else None
        else:
            name, t = top(occ.items())
            cycle = (t, name)
        self.__dict__.update(names=names, times=times, holds=holds, _occupancy=occ, fill=sum(times),
                             _cycle=cycle)

    def occupancy(self) -> dict[str, float]:
        return dict(self._occupancy)

    def cycle(self) -> tuple[float, str]:
        """Steady-state time per item and the internal resource that sets it."""
        if self._cycle is None:
            raise ValueError("a pipe needs at least one internal resource")
        return self._cycle

    def makespan(self, items: float) -> float:
        if batched(items):
            return where(items > 0, self.fill + (items - 1) * self.cycle()[0], 0.0)
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
        if batched(items):
            cycle = pipe.cycle()[0]
            duration = where(items > 0, pipe.fill + (items - 1) * cycle, 0.0)
            tail = where(items > 0, duration - items * cycle, 0.0)
        elif items > 0:
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
        elif batched(items):
            bound_by = label_where(items > 1, pipe.cycle()[1], _slowest_stage(pipe))
        elif items > 1:
            bound_by = pipe.cycle()[1]
        else:
            bound_by = _slowest_stage(pipe)
        # (system resource, seconds it is held): the duration, less the drain for the first one
        if len(resources) == 1:
            occupancy = ((resources[0], duration - tail),)
        else:
            occupancy = tuple({r: (duration - tail if j == 0 else duration) for j, r in enumerate(resources)}.items())
        where_ = f" ({','.join(resources)})"
        self.__dict__.update(
            name=name, stage=stage, resources=resources, pipe=pipe, items=items, counts=counts, limiter=limiter,
            _actions=_last_values(counts),
            duration=duration, tail=tail, bound_by=bound_by, occupancy=occupancy,
            # the breakdown key of this task
            label=bound_by.map(lambda n: n + where_) if isinstance(bound_by, Choice) else f"{bound_by}{where_}")


def _last_values(counts: tuple) -> tuple:
    """The counts with each action once, at its last value (as count_actions takes a repeated one)."""
    return counts if len({a for a, _ in counts}) == len(counts) else tuple(dict(counts).items())


def _slowest_stage(pipe: Pipe):
    """The stage of a one-item burst that takes longest (the last name among equal times, as max() of
    (time, name) pairs)."""
    if len(pipe.names) == 1:
        return pipe.names[0]
    if not any(batched(t) for t in pipe.times):
        return max(zip(pipe.times, pipe.names, strict=True))[1]
    order = sorted(zip(pipe.names, pipe.times, strict=True), key=lambda nt: nt[0], reverse=True)
    return top(order)[0]


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
        for a, v in node._actions:  # a repeated action keeps its last value
            acts[a] = acts.get(a, 0.0) + v * k
    elif isinstance(node, (Seq, Par)):
        for p in node.parts:
            _count(p, k, acts)
    elif isinstance(node, Loop):
        _count(node.body, k * node.n, acts)
    elif isinstance(node, Pipeline):
        _count(node.a, k * node.n, acts)
        _count(node.b, k * node.n, acts)
