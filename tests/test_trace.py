"""Chrome traces of event-mode timelines: valid structure, one track per resource, no overlaps, CLI `--trace`."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from kvnand.evaluation import evaluate
from kvnand.present.trace import CRITICAL, chrome_trace


@pytest.fixture(scope="module")
def traced():
    r = evaluate("kvnand-d", "llama3.1-8b", 1000, mode="event", with_timeline=True)
    return r, chrome_trace([("kvnand-d", r.timeline)])


def _tracks(doc) -> dict[tuple[int, int], list[dict]]:
    out = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            out[(e["pid"], e["tid"])].append(e)
    return out


def test_events_are_complete_events_in_microseconds_with_task_args(traced):
    r, doc = traced
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert xs and all(e["ts"] >= 0 and e["dur"] >= 0 for e in xs)
    assert all({"stage", "bound_by"} <= set(e["args"]) and e["name"] for e in xs)
    end_us = max(e["ts"] + e["dur"] for e in xs)
    assert end_us == pytest.approx(r["latency_s"] * 1e6, rel=1e-6)


def test_one_named_track_per_resource_without_overlaps(traced):
    r, doc = traced
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    tracks = _tracks(doc)
    assert set(tracks) <= set(names)
    assert {names[k] for k in tracks} == set(r["busy_s"]) | {CRITICAL}
    for key, evs in tracks.items():
        evs.sort(key=lambda e: e["ts"])
        for a, b in zip(evs, evs[1:], strict=False):
            assert b["ts"] >= a["ts"] + a["dur"] - 1e-5, names[key]  # ts and dur are rounded to 1e-6 us
        if names[key] != CRITICAL:  # resource tracks add up to the engine's busy time
            busy = sum(e["dur"] for e in evs) / 1e6
            assert busy == pytest.approx(r["busy_s"][names[key]], rel=1e-6)


def test_critical_path_track_spans_the_step(traced):
    r, doc = traced
    crit = [e for (pid, tid), evs in _tracks(doc).items() if tid == 0 for e in evs]
    assert sum(e["dur"] for e in crit) / 1e6 == pytest.approx(r["latency_s"], rel=1e-6)


def test_cli_trace_skips_an_oom_first_point(kvnand_cli, tmp_path):
    path = tmp_path / "t.json"
    code, _, err = kvnand_cli("report", "--format", "json", "--systems", "base1,kvnand-c16", "--models", "llama2-7b",
                              "--contexts", "100k", "--trace", str(path))
    assert code == 0, err
    doc = json.loads(path.read_text())
    procs = [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"]
    assert len(procs) == 1 and procs[0].startswith("kvnand-c16 | llama2-7b | 100k")
    assert len(_tracks(doc)) > 2


def test_cli_trace_with_nothing_that_fits_exits_2_and_writes_nothing(kvnand_cli, tmp_path):
    path = tmp_path / "t.json"
    code, _, err = kvnand_cli("report", "--format", "json", "--systems", "base1", "--models", "llama2-7b",
                              "--contexts", "100k", "--trace", str(path))
    assert code == 2 and "--trace" in err and not path.exists()
