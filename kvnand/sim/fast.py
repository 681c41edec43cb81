"""Fast mode: closed-form evaluation of a program, O(tasks per layer), independent of context length.

Seq = sum of parts; Par = max(longest part, busiest shared resource); Loop = n x body;
Pipeline = latency(A) + latency(B) + (n - 1) x period, where the period is the busiest resource's
occupancy per iteration (iterations only share resources). A burst occupies its first resource for
its duration less its drain (Task.tail), as in the event engine. The breakdowns follow the critical
path (steady periods are attributed to the bottleneck resource's work), so they add up to the total.

Cost: one walk of the program tree (a loop body is evaluated once, whatever its trip count; context length
only changes numbers, never the tree). Breakdown dicts are accumulated in place: a Seq writes straight into
its parent's sums, and only Loop, Par and Pipeline (whose results are scaled or chosen) keep their own.
`latency()` is the same walk without the breakdowns, for callers that need only the time.

A batch program (leaf numbers as numpy arrays over points, kvnand.program) is walked by the same rules, per
point: where a scalar walk picks one resource or part (Pipeline's busiest resource, Par's longest part or
busiest resource) each point picks its own, and a label that differs between points (a Choice) adds to each
of its names where its mask holds. `Eval.masked` names the breakdown keys that only some points have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvnand.program import Choice, Loop, Par, Pipeline, Seq, Task, batched, label_parts, top, where


def _merge(*ds):
    out: dict = {}
    for d in ds:
        for a, v in d.items():
            out[a] = out.get(a, 0.0) + v
    return out


@dataclass
class Eval:
    time: float
    stage: dict = field(default_factory=dict)    # critical-path time by stage label
    bound: dict = field(default_factory=dict)    # critical-path time by limiting physical resource
    busy: dict = field(default_factory=dict)     # occupancy by system resource
    work: dict = field(default_factory=dict)     # (resource, stage, bound) -> occupancy, for attributing periods
    masked: set = field(default_factory=set)     # bound keys a batch has at some points only (0.0 elsewhere)


def _resource_view(work: dict, resource, total) -> tuple[dict, dict]:
    """Stage and bound attribution of `total` seconds spent waiting on `resource` (per point for a batch
    whose busiest resource is a Choice)."""
    stage: dict = {}
    bound: dict = {}
    for res, mask in label_parts(resource):
        items = {k: v for k, v in work.items() if k[0] == res}
        s = sum(items.values())
        s = where(s == 0, 1.0, s) if batched(s) else (s or 1.0)
        share = total if mask is True else where(mask, total, 0.0)
        for (_, st, bd), v in items.items():
            stage[st] = stage.get(st, 0.0) + share * v / s
            bound[bd] = bound.get(bd, 0.0) + share * v / s
    return stage, bound


def _add(into: dict, d: dict) -> None:
    for a, v in d.items():
        into[a] = into.get(a, 0.0) + v


def _add_scaled(into: dict, d: dict, k: float) -> None:
    for a, v in d.items():
        into[a] = into.get(a, 0.0) + v * k


class _Acc:
    """Running sums of a subtree: stage, bound, busy and (when someone needs it) work."""

    __slots__ = ("stage", "bound", "busy", "work", "masked")

    def __init__(self, work: bool, busy: dict | None = None, shared_work: dict | None = None,
                 masked: set | None = None):
        self.stage: dict = {}
        self.bound: dict = {}
        self.busy: dict = {} if busy is None else busy
        self.work: dict | None = shared_work if shared_work is not None else ({} if work else None)
        self.masked: set = set() if masked is None else masked  # one set for the whole walk


def _walk(node, acc: _Acc) -> float:
    """Add `node`'s breakdowns into `acc`; return its time."""
    if isinstance(node, Task):
        d = node.duration
        stage, bound, busy = acc.stage, acc.bound, acc.busy
        stage[node.stage] = stage.get(node.stage, 0.0) + d
        label = node.label
        occ = node.occupancy
        for r, o in occ:
            busy[r] = busy.get(r, 0.0) + o
        work = acc.work
        if isinstance(label, Choice):  # a batch whose points differ in what limits this task
            acc.masked.update(name for name, _ in label)
            for name, mask in label:
                bound[name] = bound.get(name, 0.0) + where(mask, d, 0.0)
                if work is not None:
                    for r, o in occ:
                        key = (r, node.stage, name)
                        work[key] = work.get(key, 0.0) + where(mask, o, 0.0)
            return d
        bound[label] = bound.get(label, 0.0) + d
        if work is not None:
            st = node.stage
            for r, o in occ:
                key = (r, st, label)
                work[key] = work.get(key, 0.0) + o
        return d
    if isinstance(node, Seq):
        return sum([_walk(p, acc) for p in node.parts])
    if isinstance(node, Loop):
        sub = _Acc(acc.work is not None, masked=acc.masked)
        t = _walk(node.body, sub)
        n = node.n
        _add_scaled(acc.stage, sub.stage, n)
        _add_scaled(acc.bound, sub.bound, n)
        _add_scaled(acc.busy, sub.busy, n)
        if acc.work is not None:
            _add_scaled(acc.work, sub.work, n)
        return t * n
    if isinstance(node, Pipeline):
        sub = _Acc(True, masked=acc.masked)
        lat = _walk(node.a, sub) + _walk(node.b, sub)
        if node.n <= 1:
            _add(acc.stage, sub.stage)
            _add(acc.bound, sub.bound)
            _add(acc.busy, sub.busy)
            if acc.work is not None:
                _add(acc.work, sub.work)
            return lat
        res, period = top(sub.busy.items())
        k = node.n - 1
        st, bd = _resource_view(sub.work, res, period * k)
        _add(sub.stage, st)
        _add(sub.bound, bd)
        _add(acc.stage, sub.stage)
        _add(acc.bound, sub.bound)
        _add_scaled(acc.busy, sub.busy, node.n)
        if acc.work is not None:
            _add_scaled(acc.work, sub.work, node.n)
        return lat + k * period
    if isinstance(node, Par):
        busy: dict = {}
        work: dict = {}
        parts = []
        for p in node.parts:
            sub = _Acc(True, busy, work, acc.masked)
            parts.append((_walk(p, sub), sub))
        longest_i, longest_t = top((i, t) for i, (t, _) in enumerate(parts))
        res, res_t = top(busy.items()) if busy else ("", 0.0)
        by_resource = res_t > longest_t * (1 + 1e-12)
        if batched(by_resource):  # each point takes its own branch; keys of the other are 0.0 there
            st, bd = _resource_view(work, res, res_t)
            lst, lbd = {}, {}
            for i, mask in label_parts(longest_i):
                for into, d in ((lst, parts[i][1].stage), (lbd, parts[i][1].bound)):
                    _add(into, {a: v if mask is True else where(mask, v, 0.0) for a, v in d.items()})
            st = {a: where(by_resource, st.get(a, 0.0), lst.get(a, 0.0)) for a in {**lst, **st}}
            bd = {a: where(by_resource, bd.get(a, 0.0), lbd.get(a, 0.0)) for a in {**lbd, **bd}}
            acc.masked.update(st)
            acc.masked.update(bd)
            t = where(by_resource, res_t, longest_t)
        elif by_resource:
            st, bd = _resource_view(work, res, res_t)
            t = res_t
        else:
            longest = parts[longest_i][1]
            st, bd, t = longest.stage, longest.bound, longest_t
        _add(acc.stage, st)
        _add(acc.bound, bd)
        _add(acc.busy, busy)
        if acc.work is not None:
            _add(acc.work, work)
        return t
    raise TypeError(f"not a program node: {node!r}")


def evaluate(node, *, with_work: bool = True) -> Eval:
    """Time, critical-path breakdowns by stage and by limiting resource, and busy time per resource.

    `with_work=False` leaves `Eval.work` empty at the top level (it is only needed inside Par/Pipeline)."""
    acc = _Acc(with_work)
    t = _walk(node, acc)
    return Eval(t, acc.stage, acc.bound, acc.busy, acc.work if acc.work is not None else {}, acc.masked)


def latency(node) -> float:
    """The time of `evaluate(node)` (for ranking candidates, where the breakdowns are not needed)."""
    return _walk(node, _Acc(False))
