"""Event mode: the program unrolled into a task DAG and list-scheduled over exclusive system resources.

Each task starts when its predecessors are done and every resource it holds is free (earliest-ready
first, program order on ties), so concurrent parts contend for channels, the NPU, DRAM and flash
groups. A task's duration comes from its pipeline: by the exact burst recurrence (default), or by
stepping each item through the stages (`page_level=True`, for small configurations and tests).
The timeline can be written as a Chrome trace (kvnand.present.trace).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from kvnand.errors import InputError
from kvnand.program import Loop, Par, Pipe, Pipeline, Seq, Task

MAX_TASKS = 500_000  # ~10x the largest shipped point (OPT-66B on KVNAND-D: ~52000 tasks, ~2 s)


def step_items(pipe: Pipe, items: int) -> float:
    """Greedy item-by-item pipeline: a stage starts when the item left the previous stage and every
    internal resource it newly acquires was released by the previous item (registers block)."""
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
    pred: int | None            # index of the node that set this task's start (critical path)


@dataclass
class Timeline:
    items: list[Scheduled] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        return max((s.end for s in self.items), default=0.0)

    def critical_path(self) -> list[Scheduled]:
        if not self.items:
            return []
        i = max(range(len(self.items)), key=lambda j: self.items[j].end)
        path = []
        while i is not None:
            path.append(self.items[i])
            i = self.items[i].pred
        return path[::-1]


class _Dag:
    def __init__(self):
        self.tasks: list[Task] = []
        self.deps: list[list[int]] = []

    def add(self, task: Task, deps: list[int]) -> int:
        self.tasks.append(task)
        self.deps.append(deps)
        return len(self.tasks) - 1

    def build(self, node, deps: list[int]) -> list[int]:
        """Add `node` after `deps`; return the ids it ends with."""
        if isinstance(node, Task):
            return [self.add(node, deps)]
        if isinstance(node, Seq):
            for p in node.parts:
                deps = self.build(p, deps)
            return deps
        if isinstance(node, Par):
            out: list[int] = []
            for p in node.parts:
                out += self.build(p, deps)
            return out
        if isinstance(node, Loop):
            for _ in range(node.n):
                deps = self.build(node.body, deps)
            return deps
        if isinstance(node, Pipeline):
            ends: list[int] = []
            for _ in range(node.n):
                ends += self.build(node.b, self.build(node.a, deps))
            return ends
        raise TypeError(f"not a program node: {node!r}")


def task_count(node, _memo: dict | None = None) -> int:
    """Tasks the program unrolls to, counted without unrolling it (shared subprograms counted once each)."""
    memo = {} if _memo is None else _memo
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, Task):
        n = 1
    elif isinstance(node, (Seq, Par)):
        n = sum(task_count(p, memo) for p in node.parts)
    elif isinstance(node, Loop):
        n = node.n * task_count(node.body, memo)
    elif isinstance(node, Pipeline):
        n = node.n * (task_count(node.a, memo) + task_count(node.b, memo))
    else:
        raise TypeError(f"not a program node: {node!r}")
    memo[id(node)] = n
    return n


def simulate(program, *, page_level: bool = False) -> Timeline:
    """List scheduling: whenever time advances, start every ready task whose resources are free, in
    program order (earlier layers and head groups first); a task is ready when its predecessors ended.

    List scheduling is greedy, so it is not monotone: making one task slower can shift which ready task takes
    a freed resource and end the step slightly earlier (seen: a slower channel command, 0.1 % faster step).
    Fast mode has no such anomaly; event mode's "never slower" holds up to this small tolerance."""
    n_tasks = task_count(program)
    if n_tasks > MAX_TASKS:  # each task costs memory and scheduling time; fast mode has no such limit
        raise InputError(f"event mode would schedule {n_tasks} tasks", key="mode", value="event",
                         allowed=f"programs of at most {MAX_TASKS} tasks (the largest shipped point has ~52000); "
                                 "use fast mode for this model")
    dag = _Dag()
    dag.build(program, [])
    n = len(dag.tasks)
    succ: list[list[int]] = [[] for _ in range(n)]
    waiting = [len(d) for d in dag.deps]
    for i, ds in enumerate(dag.deps):
        for d in ds:
            succ[d].append(i)
    ready_at = [0.0] * n
    ready_pred: list[int | None] = [None] * n
    durations: dict[int, float] = {}
    res_free: dict[str, float] = {}
    res_holder: dict[str, int] = {}
    pending = [(0.0, i) for i in range(n) if waiting[i] == 0]   # (ready time, task) not yet released
    heapq.heapify(pending)
    ready: list[int] = []                                         # released, sorted by program order
    wakeups: list[float] = []                                     # times a resource frees
    out: list[Scheduled | None] = [None] * n
    now = 0.0
    done = 0
    while done < n:
        while pending and pending[0][0] <= now:
            heapq.heappush(ready, heapq.heappop(pending)[1])
        blocked = []
        while ready:
            i = heapq.heappop(ready)
            task = dag.tasks[i]
            if any(res_free.get(r, 0.0) > now for r in task.resources):
                blocked.append(i)
                continue
            key = id(task)
            if key not in durations:
                durations[key] = step_items(task.pipe, task.items) if page_level else task.duration
            end = now + durations[key]
            pred, latest = ready_pred[i], ready_at[i]
            for r in task.resources:
                if r in res_holder and res_free[r] >= latest and res_free[r] > 0:
                    pred, latest = res_holder[r], res_free[r]
            for j, r in enumerate(task.resources):
                # the first resource (the one sensing/issuing) is free once the burst's drain begins
                res_free[r] = end - task.tail if j == 0 else end
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
                raise RuntimeError("event engine stalled: a task waits for a resource nobody frees")
            break
        now = min(upcoming)
    return Timeline([s for s in out if s is not None])


def breakdown(tl: Timeline) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Critical-path time by stage and by limiting resource (both add up to the makespan), busy by resource."""
    stage: dict[str, float] = {}
    bound: dict[str, float] = {}
    t = 0.0
    for s in tl.critical_path():
        gap = s.start - t
        if gap > 1e-15:
            stage["idle"] = stage.get("idle", 0.0) + gap
            bound["idle"] = bound.get("idle", 0.0) + gap
        d = s.end - max(t, s.start)  # a burst may start inside its predecessor's drain
        stage[s.task.stage] = stage.get(s.task.stage, 0.0) + d
        b = s.task.label  # "{bound_by} ({resources})", computed once per task
        bound[b] = bound.get(b, 0.0) + d
        t = s.end
    busy: dict[str, float] = {}
    for s in tl.items:
        for j, r in enumerate(s.task.resources):
            busy[r] = busy.get(r, 0.0) + (s.end - s.start - (s.task.tail if j == 0 else 0.0))
    return stage, bound, busy
