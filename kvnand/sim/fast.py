"""Fast mode: closed-form evaluation of a program, O(tasks per layer), independent of context length.

Seq = sum of parts; Par = max(longest part, busiest shared resource); Loop = n x body;
Pipeline = latency(A) + latency(B) + (n - 1) x period, where the period is the busiest resource's
occupancy per iteration (iterations only share resources). A burst occupies its first resource for
its duration less its drain (Task.tail), as in the event engine. The breakdowns follow the critical
path (steady periods are attributed to the bottleneck resource's work), so they add up to the total.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvnand.sim.program import Loop, Par, Pipeline, Seq, Task


def _merge(*ds):
    out: dict = {}
    for d in ds:
        for a, v in d.items():
            out[a] = out.get(a, 0.0) + v
    return out


def _scale(d, k):
    return {a: v * k for a, v in d.items()}


@dataclass
class Eval:
    time: float
    stage: dict = field(default_factory=dict)    # critical-path time by stage label
    bound: dict = field(default_factory=dict)    # critical-path time by limiting physical resource
    busy: dict = field(default_factory=dict)     # occupancy by system resource
    work: dict = field(default_factory=dict)     # (resource, stage, bound) -> occupancy, for attributing periods

    def scaled(self, k: float) -> Eval:
        return Eval(self.time * k, _scale(self.stage, k), _scale(self.bound, k), _scale(self.busy, k),
                    _scale(self.work, k))


def _task(t: Task) -> Eval:
    d = t.duration
    label = f"{t.bound_by} ({','.join(t.resources)})"
    occ = {r: (d - t.tail if j == 0 else d) for j, r in enumerate(t.resources)}
    work = {(r, t.stage, label): o for r, o in occ.items()}
    return Eval(d, {t.stage: d}, {label: d}, occ, work)


def _resource_view(work: dict, resource: str, total: float) -> tuple[dict, dict]:
    """Stage and bound attribution of `total` seconds spent waiting on `resource`."""
    items = {k: v for k, v in work.items() if k[0] == resource}
    s = sum(items.values()) or 1.0
    stage: dict = {}
    bound: dict = {}
    for (_, st, bd), v in items.items():
        stage[st] = stage.get(st, 0.0) + total * v / s
        bound[bd] = bound.get(bd, 0.0) + total * v / s
    return stage, bound


def evaluate(node) -> Eval:
    if isinstance(node, Task):
        return _task(node)
    if isinstance(node, Seq):
        parts = [evaluate(p) for p in node.parts]
        return Eval(sum(p.time for p in parts), _merge(*(p.stage for p in parts)),
                    _merge(*(p.bound for p in parts)), _merge(*(p.busy for p in parts)),
                    _merge(*(p.work for p in parts)))
    if isinstance(node, Par):
        parts = [evaluate(p) for p in node.parts]
        busy, work = _merge(*(p.busy for p in parts)), _merge(*(p.work for p in parts))
        longest = max(parts, key=lambda p: p.time)
        res, res_t = max(busy.items(), key=lambda kv: kv[1]) if busy else ("", 0.0)
        if res_t > longest.time * (1 + 1e-12):
            st, bd = _resource_view(work, res, res_t)
            return Eval(res_t, st, bd, busy, work)
        return Eval(longest.time, longest.stage, longest.bound, busy, work)
    if isinstance(node, Loop):
        return evaluate(node.body).scaled(node.n)
    if isinstance(node, Pipeline):
        a, b = evaluate(node.a), evaluate(node.b)
        it_busy, it_work = _merge(a.busy, b.busy), _merge(a.work, b.work)
        lat = Eval(a.time + b.time, _merge(a.stage, b.stage), _merge(a.bound, b.bound), it_busy, it_work)
        if node.n <= 1:
            return lat
        res, period = max(it_busy.items(), key=lambda kv: kv[1])
        k = node.n - 1
        st, bd = _resource_view(it_work, res, period * k)
        return Eval(lat.time + k * period, _merge(lat.stage, st), _merge(lat.bound, bd),
                    _scale(it_busy, node.n), _scale(it_work, node.n))
    raise TypeError(f"not a program node: {node!r}")
