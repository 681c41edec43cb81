"""Event-mode timelines as a Chrome trace (`{"traceEvents": [...]}`, loadable in Perfetto / chrome://tracing).

One process per traced run (system), one thread track per system resource it uses plus a "critical path"
track; each task is a complete ("X") event on every resource it holds, times in microseconds. On a
task's first resource the event ends when that resource is free again (before the pipeline drain), the
same busy time `event.breakdown` counts, so events on one track never overlap.
"""

from __future__ import annotations

from kvnand.sim.event import Scheduled, Timeline

US = 1e6
CRITICAL = "critical path"


def _event(s: Scheduled, pid: int, tid: int, start: float, end: float) -> dict:
    t = s.task
    return {"name": t.name, "cat": t.stage, "ph": "X", "ts": start * US, "dur": max(end - start, 0.0) * US,
            "pid": pid, "tid": tid,
            "args": {"stage": t.stage, "bound_by": t.bound_by, "resources": list(t.resources)}}


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
        for s in tl.items:
            for j, r in enumerate(s.task.resources):
                tid = tracks.setdefault(r, len(tracks))
                events.append(_event(s, pid, tid, s.start, s.end - (s.task.tail if j == 0 else 0.0)))
        t = 0.0
        for s in tl.critical_path():  # a burst may start inside its predecessor's drain: clip, as breakdown() does
            events.append(_event(s, pid, 0, max(t, s.start), s.end))
            t = s.end
        for name, tid in tracks.items():
            events += [_meta("thread_name", pid, {"name": name}, tid),
                       _meta("thread_sort_index", pid, {"sort_index": tid}, tid)]
    return {"traceEvents": events, "displayTimeUnit": "ns"}
