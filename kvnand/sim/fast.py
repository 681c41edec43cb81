"""Fast mode: closed-form evaluation of a program, O(tasks per layer), independent of context length.

Time of Seq = sum; Par = max(longest part, busiest shared resource); Loop = n x body;
Pipeline = A + B + (n-1) x max(A, B, busiest resource shared by A and B per iteration).
The breakdown follows the critical path, so it adds up to the total.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvnand.sim.program import Loop, Par, Pipeline, Seq, Task


@dataclass
class Eval:
    time: float
    stage: dict[str, float] = field(default_factory=dict)     # critical-path time by stage label
    bound: dict[str, float] = field(default_factory=dict)     # critical-path time by limiting resource
    busy: dict[str, float] = field(default_factory=dict)      # total busy time by system resource

    def scaled(self, k: float) -> Eval:
        return Eval(self.time * k, _scale(self.stage, k), _scale(self.bound, k), _scale(self.busy, k))


def _scale(d, k):
    return {a: v * k for a, v in d.items()}


def _merge(*ds):
    out: dict[str, float] = {}
    for d in ds:
        for a, v in d.items():
            out[a] = out.get(a, 0.0) + v
    return out


def evaluate(node) -> Eval:
    if isinstance(node, Task):
        d = node.duration
        return Eval(d, {node.stage: d}, {f"{node.bound_by} ({','.join(node.resources)})": d},
                    {r: d for r in node.resources})
    if isinstance(node, Seq):
        parts = [evaluate(p) for p in node.parts]
        return Eval(sum(p.time for p in parts), _merge(*(p.stage for p in parts)),
                    _merge(*(p.bound for p in parts)), _merge(*(p.busy for p in parts)))
    if isinstance(node, Par):
        parts = [evaluate(p) for p in node.parts]
        busy = _merge(*(p.busy for p in parts))
        longest = max(parts, key=lambda p: p.time)
        res, res_t = max(busy.items(), key=lambda kv: kv[1]) if busy else ("", 0.0)
        if res_t > longest.time * (1 + 1e-12):
            # a shared resource serializes the parts: the excess is that resource's contention
            extra = res_t - longest.time
            return Eval(res_t, _merge(longest.stage, {f"contention:{res}": extra}),
                        _merge(longest.bound, {f"contention ({res})": extra}), busy)
        return Eval(longest.time, longest.stage, longest.bound, busy)
    if isinstance(node, Loop):
        return evaluate(node.body).scaled(node.n)
    if isinstance(node, Pipeline):
        a, b = evaluate(node.a), evaluate(node.b)
        shared = {r: a.busy[r] + b.busy[r] for r in a.busy.keys() & b.busy.keys()}
        res, res_t = max(shared.items(), key=lambda kv: kv[1]) if shared else ("", 0.0)
        steady = max(a.time, b.time, res_t)
        if node.n <= 1:
            return Eval(a.time + b.time, _merge(a.stage, b.stage), _merge(a.bound, b.bound),
                        _merge(a.busy, b.busy))
        k = node.n - 1
        if steady == res_t and res_t > max(a.time, b.time):
            extra = res_t - max(a.time, b.time)
            top = a if a.time >= b.time else b
            st = _merge(top.stage, {f"contention:{res}": extra})
            bd = _merge(top.bound, {f"contention ({res})": extra})
            steady_eval = Eval(res_t, st, bd)
        else:
            steady_eval = a if a.time >= b.time else b
        return Eval(a.time + b.time + k * steady,
                    _merge(a.stage, b.stage, _scale(steady_eval.stage, k)),
                    _merge(a.bound, b.bound, _scale(steady_eval.bound, k)),
                    _merge(a.busy, b.busy, _scale(a.busy, k), _scale(b.busy, k)))
    raise TypeError(f"not a program node: {node!r}")
