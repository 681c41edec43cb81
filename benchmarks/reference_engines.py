"""Frozen copies of the engines as they were before the speed work (issue 9): the oracle for refactors.

`benchmarks.equivalence` runs these and the live engines on the same program objects and requires the
same latency, breakdowns and busy times to 1e-9 relative. They read a Task only through its fields
(pipe.times, pipe.holds, items, resources, limiter), never through cached helpers, so a bug in a cache of
the live engines cannot hide here. Do not optimize this file.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from kvnand.sim.program import Loop, Par, Pipeline, Seq, Task

# ---------------------------------------------------------------- pipe/task arithmetic (program.py at 07c423f)


def occupancy(pipe) -> dict[str, float]:
    occ: dict[str, float] = {}
    for t, held in zip(pipe.times, pipe.holds, strict=True):
        for r in held:
            occ[r] = occ.get(r, 0.0) + t
    return occ


def cycle(pipe) -> tuple[float, str]:
    occ = occupancy(pipe)
    name = max(occ, key=occ.get)
    return occ[name], name


def makespan(pipe, items: float) -> float:
    if items <= 0:
        return 0.0
    return sum(pipe.times) + (items - 1) * cycle(pipe)[0]


def duration(t: Task) -> float:
    return makespan(t.pipe, t.items)


def tail(t: Task) -> float:
    if t.items <= 0:
        return 0.0
    return duration(t) - t.items * cycle(t.pipe)[0]


def bound_by(t: Task) -> str:
    if t.limiter:
        return t.limiter
    return cycle(t.pipe)[1] if t.items > 1 else max(zip(t.pipe.times, t.pipe.names, strict=True))[1]


# ---------------------------------------------------------------- fast mode (fast.py at 6073f7e)


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
    stage: dict = field(default_factory=dict)
    bound: dict = field(default_factory=dict)
    busy: dict = field(default_factory=dict)
    work: dict = field(default_factory=dict)

    def scaled(self, k: float) -> Eval:
        return Eval(self.time * k, _scale(self.stage, k), _scale(self.bound, k), _scale(self.busy, k),
                    _scale(self.work, k))


def _task(t: Task) -> Eval:
    d = duration(t)
    label = f"{bound_by(t)} ({','.join(t.resources)})"
    occ = {r: (d - tail(t) if j == 0 else d) for j, r in enumerate(t.resources)}
    work = {(r, t.stage, label): o for r, o in occ.items()}
    return Eval(d, {t.stage: d}, {label: d}, occ, work)


def _resource_view(work: dict, resource: str, total: float) -> tuple[dict, dict]:
    items = {k: v for k, v in work.items() if k[0] == resource}
    s = sum(items.values()) or 1.0
    stage: dict = {}
    bound: dict = {}
    for (_, st, bd), v in items.items():
        stage[st] = stage.get(st, 0.0) + total * v / s
        bound[bd] = bound.get(bd, 0.0) + total * v / s
    return stage, bound


def fast_evaluate(node) -> Eval:
    if isinstance(node, Task):
        return _task(node)
    if isinstance(node, Seq):
        parts = [fast_evaluate(p) for p in node.parts]
        return Eval(sum(p.time for p in parts), _merge(*(p.stage for p in parts)),
                    _merge(*(p.bound for p in parts)), _merge(*(p.busy for p in parts)),
                    _merge(*(p.work for p in parts)))
    if isinstance(node, Par):
        parts = [fast_evaluate(p) for p in node.parts]
        busy, work = _merge(*(p.busy for p in parts)), _merge(*(p.work for p in parts))
        longest = max(parts, key=lambda p: p.time)
        res, res_t = max(busy.items(), key=lambda kv: kv[1]) if busy else ("", 0.0)
        if res_t > longest.time * (1 + 1e-12):
            st, bd = _resource_view(work, res, res_t)
            return Eval(res_t, st, bd, busy, work)
        return Eval(longest.time, longest.stage, longest.bound, busy, work)
    if isinstance(node, Loop):
        return fast_evaluate(node.body).scaled(node.n)
    if isinstance(node, Pipeline):
        a, b = fast_evaluate(node.a), fast_evaluate(node.b)
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


# ---------------------------------------------------------------- event mode (event.py at 6073f7e)


def step_items(pipe, items: int) -> float:
    n = int(round(items))
    if n <= 0:
        return 0.0
    k = len(pipe.times)
    last_use = {}
    for i, held in enumerate(pipe.holds):
        for r in held:
            last_use[r] = i
    release: dict[str, float] = {}
    end_prev_item = 0.0
    for _ in range(n):
        t = 0.0
        new_release: dict[str, float] = {}
        for i in range(k):
            held = pipe.holds[i]
            acquire = [r for r in held if i == 0 or r not in pipe.holds[i - 1]]
            start = max([t] + [release.get(r, 0.0) for r in acquire])
            t = start + pipe.times[i]
            for r in held:
                if last_use[r] == i:
                    new_release[r] = t
        release = new_release
        end_prev_item = t
    return end_prev_item


@dataclass
class Scheduled:
    task: Task
    start: float
    end: float
    pred: int | None


def _build(node, deps, tasks, alldeps):
    if isinstance(node, Task):
        tasks.append(node)
        alldeps.append(deps)
        return [len(tasks) - 1]
    if isinstance(node, Seq):
        for p in node.parts:
            deps = _build(p, deps, tasks, alldeps)
        return deps
    if isinstance(node, Par):
        out: list[int] = []
        for p in node.parts:
            out += _build(p, deps, tasks, alldeps)
        return out
    if isinstance(node, Loop):
        for _ in range(node.n):
            deps = _build(node.body, deps, tasks, alldeps)
        return deps
    if isinstance(node, Pipeline):
        ends: list[int] = []
        for _ in range(node.n):
            ends += _build(node.b, _build(node.a, deps, tasks, alldeps), tasks, alldeps)
        return ends
    raise TypeError(f"not a program node: {node!r}")


def simulate(program, *, page_level: bool = False) -> list[Scheduled]:
    tasks: list[Task] = []
    alldeps: list[list[int]] = []
    _build(program, [], tasks, alldeps)
    n = len(tasks)
    succ: list[list[int]] = [[] for _ in range(n)]
    waiting = [len(d) for d in alldeps]
    for i, ds in enumerate(alldeps):
        for d in ds:
            succ[d].append(i)
    ready_at = [0.0] * n
    ready_pred: list[int | None] = [None] * n
    durations: dict[int, float] = {}
    res_free: dict[str, float] = {}
    res_holder: dict[str, int] = {}
    pending = [(0.0, i) for i in range(n) if waiting[i] == 0]
    heapq.heapify(pending)
    ready: list[int] = []
    wakeups: list[float] = []
    out: list[Scheduled | None] = [None] * n
    now = 0.0
    done = 0
    while done < n:
        while pending and pending[0][0] <= now:
            heapq.heappush(ready, heapq.heappop(pending)[1])
        blocked = []
        while ready:
            i = heapq.heappop(ready)
            task = tasks[i]
            if any(res_free.get(r, 0.0) > now for r in task.resources):
                blocked.append(i)
                continue
            key = id(task)
            if key not in durations:
                durations[key] = step_items(task.pipe, task.items) if page_level else duration(task)
            end = now + durations[key]
            pred, latest = ready_pred[i], ready_at[i]
            for r in task.resources:
                if r in res_holder and res_free[r] >= latest and res_free[r] > 0:
                    pred, latest = res_holder[r], res_free[r]
            for j, r in enumerate(task.resources):
                res_free[r] = end - tail(task) if j == 0 else end
                res_holder[r] = i
                heapq.heappush(wakeups, res_free[r])
            out[i] = Scheduled(task, now, end, pred)
            done += 1
            for s_ in succ[i]:
                if end >= ready_at[s_]:
                    ready_at[s_], ready_pred[s_] = end, i
                waiting[s_] -= 1
                if waiting[s_] == 0:
                    heapq.heappush(pending, (ready_at[s_], s_))
        for i in blocked:
            heapq.heappush(ready, i)
        while wakeups and wakeups[0] <= now:
            heapq.heappop(wakeups)
        upcoming = ([pending[0][0]] if pending else []) + ([wakeups[0]] if wakeups else [])
        if not upcoming:
            if done < n:
                raise RuntimeError("event engine stalled")
            break
        now = min(upcoming)
    return [s for s in out if s is not None]


def makespan_of(items: list[Scheduled]) -> float:
    return max((s.end for s in items), default=0.0)


def critical_path(items: list[Scheduled]) -> list[Scheduled]:
    if not items:
        return []
    i = max(range(len(items)), key=lambda j: items[j].end)
    path = []
    while i is not None:
        path.append(items[i])
        i = items[i].pred
    return path[::-1]


def breakdown(items: list[Scheduled]) -> tuple[dict, dict, dict]:
    stage: dict[str, float] = {}
    bound: dict[str, float] = {}
    t = 0.0
    for s in critical_path(items):
        gap = s.start - t
        if gap > 1e-15:
            stage["idle"] = stage.get("idle", 0.0) + gap
            bound["idle"] = bound.get("idle", 0.0) + gap
        d = s.end - max(t, s.start)
        stage[s.task.stage] = stage.get(s.task.stage, 0.0) + d
        b = f"{bound_by(s.task)} ({','.join(s.task.resources)})"
        bound[b] = bound.get(b, 0.0) + d
        t = s.end
    busy: dict[str, float] = {}
    for s in items:
        for j, r in enumerate(s.task.resources):
            busy[r] = busy.get(r, 0.0) + (s.end - s.start - (tail(s.task) if j == 0 else 0.0))
    return stage, bound, busy


# ---------------------------------------------------------------- counts and prices (program.py, energy/tables.py)


def count_actions(node, k: float = 1.0, out: dict | None = None) -> dict:
    out = {} if out is None else out
    if isinstance(node, Task):
        for a, v in dict(node.counts).items():  # as Counts.add(dict(node.counts), k): a repeated action keeps the last
            out[a] = out.get(a, 0.0) + v * k
    elif isinstance(node, (Seq, Par)):
        for p in node.parts:
            count_actions(p, k, out)
    elif isinstance(node, Loop):
        count_actions(node.body, k * node.n, out)
    elif isinstance(node, Pipeline):
        count_actions(node.a, k * node.n, out)
        count_actions(node.b, k * node.n, out)
    return out
