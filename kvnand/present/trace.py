"""Event-mode timelines as a Chrome trace (`{"traceEvents": [...]}`, loadable in Perfetto / chrome://tracing).

One process per traced run (a system at a model and context), one thread track per system resource it
uses plus a "critical path" track; each task is a complete ("X") event on every resource it holds, times
in microseconds. On a task's first resource the event ends when that resource is free again (before the
pipeline drain), the same busy time `event.breakdown` counts, so events on one track never overlap.
"""

from __future__ import annotations

from kvnand.sim.event import Scheduled, Timeline

US = 1e6
CRITICAL = "critical path"


class _Events:
    """X events of one run; a task's args and tail are computed once (loops repeat the same Task object)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.memo: dict[int, tuple[dict, float]] = {}
        self.events: list[dict] = []

    def add(self, s: Scheduled, tid: int, start: float, end: float) -> None:
        t = s.task
        args = self.info(s)[0]
        self.events.append({"name": t.name, "cat": t.stage, "ph": "X", "ts": round(start * US, 6),
                            "dur": round(max(end - start, 0.0) * US, 6), "pid": self.pid, "tid": tid, "args": args})

    def info(self, s: Scheduled) -> tuple[dict, float]:
        t = s.task
        if id(t) not in self.memo:
            self.memo[id(t)] = ({"stage": t.stage, "bound_by": t.bound_by, "resources": list(t.resources)}, t.tail)
        return self.memo[id(t)]


def _meta(name: str, pid: int, args: dict, tid: int | None = None) -> dict:
    ev = {"name": name, "ph": "M", "pid": pid, "args": args}
    if tid is not None:
        ev["tid"] = tid
    return ev


def chrome_trace(runs: list[tuple[str, Timeline]]) -> dict:
    """`runs`: (process label, timeline) pairs, e.g. one per system at the same model and context."""
    events: list[dict] = []
    for pid, (label, tl) in enumerate(runs, start=1):
        events += [_meta("process_name", pid, {"name": label}), _meta("process_sort_index", pid, {"sort_index": pid})]
        tracks: dict[str, int] = {CRITICAL: 0}
        run = _Events(pid)
        for s in tl.items:
            tail = run.info(s)[1]
            for j, r in enumerate(s.task.resources):
                run.add(s, tracks.setdefault(r, len(tracks)), s.start, s.end - (tail if j == 0 else 0.0))
        t = 0.0
        for s in tl.critical_path():  # a burst may start inside its predecessor's drain: clip, as breakdown() does
            run.add(s, 0, max(t, s.start), s.end)
            t = s.end
        events += run.events
        for name, tid in tracks.items():
            events += [_meta("thread_name", pid, {"name": name}, tid),
                       _meta("thread_sort_index", pid, {"sort_index": tid}, tid)]
    return {"traceEvents": events, "displayTimeUnit": "ns"}
