"""`kvnand report`: JSON/CSV interface, OOM points, breakdowns, the on-disk cache, figures, bad input."""

from __future__ import annotations

import csv
import io
import json
import math
import time

import pytest

import kvnand
from kvnand.errors import InputError
from kvnand.present.table import geomeans
from kvnand.scenario import context_label, parse_contexts
from kvnand.study import cache as cache_mod

SMALL = ["--systems", "base1,kvnand-c16,kvnand-d:auto", "--models", "llama2-7b", "--contexts", "1k,100k"]
RECORD_KEYS = {"system", "model", "context", "precision", "oom", "oom_reason", "tokens_per_s", "latency_s",
               "energy_j_per_token", "breakdown_s", "energy_breakdown_j", "bottleneck", "config", "ttft_s"}


@pytest.fixture
def run(kvnand_cli):
    """Run `kvnand report ARGS` in-process through cli.main (the real exit-code path); -> (code, stdout, stderr)."""
    return lambda *args: kvnand_cli("report", *args)


def _json(run, *args) -> list[dict]:
    code, out, err = run(*SMALL, "--format", "json", *args)
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"schema", "results"} and doc["schema"] == "kvnand.report/1"
    return doc["results"]


def test_contexts_parse_paper_and_binary_suffixes():
    assert parse_contexts("128,1k,10k,100k,1Ki,1K,2.5k") == [128, 1000, 10_000, 100_000, 1024, 2500]
    assert [context_label(c) for c in (128, 1000, 100_000, 1024)] == ["128", "1k", "100k", "1Ki"]
    for bad in ("0", "1x", "-5", "1.5", "k", "1ki", ","):
        with pytest.raises(InputError, match="--contexts"):
            parse_contexts(bad)


def test_json_records_keys_oom_and_split(run):
    results = _json(run)
    assert len(results) == 6
    for r in results:
        assert RECORD_KEYS <= set(r) and not any(k.startswith("_") for k in r)
    oom = [r for r in results if r["oom"]]
    assert [(r["system"], r["context"]) for r in oom] == [("base1", 100_000)]
    assert oom[0]["tokens_per_s"] is None and oom[0]["latency_s"] is None and "DRAM" in oom[0]["oom_reason"]
    auto = [r for r in results if r["system"] == "kvnand-d:auto"]
    assert all(r["config"]["split"].count("+") == 1 for r in auto)


def test_fast_breakdown_sums_to_latency(run):
    for r in _json(run):
        if not r["oom"]:
            assert math.isclose(sum(r["breakdown_s"].values()), r["latency_s"], rel_tol=1e-6)
            assert r["tokens_per_s"] == pytest.approx(1 / r["latency_s"])


def test_event_mode_runs_every_point_in_the_event_engine(run):
    results = _json(run, "--mode", "event", "--systems", "kvnand-c16", "--contexts", "1k")
    assert [r["mode"] for r in results] == ["event"]


def test_csv_flat_columns_with_units(run):
    code, out, err = run(*SMALL, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 6
    for col in ("tokens_per_s", "latency_s", "energy_j_per_token", "ttft_s", "oom", "oom_reason", "bottleneck",
                "split", "breakdown_s.attention", "breakdown_s.ffn"):
        assert col in rows[0], col
    oom = [r for r in rows if r["oom"] == "True"]
    assert len(oom) == 1 and oom[0]["tokens_per_s"] == "" and oom[0]["oom_reason"]
    assert all(r["split"] for r in rows if r["system"] == "kvnand-d:auto")


def test_table_shows_speedup_over_base2_where_base1_is_oom(run):
    code, out, _ = run("--systems", "base1,base2,kvnand-c16", "--models", "llama2-7b", "--contexts", "1k,100k")
    assert code == 0
    assert "OOM" in out and "x base1" in out and "x base2" in out and "geomean" in out


def test_geomean_of_best_variant_over_base1():
    def rec(system, model, tps):
        return {"system": system, "model": model, "context": 128, "precision": "bf16", "oom": tps is None,
                "tokens_per_s": tps}

    results = [rec("base1", "a", 1.0), rec("kvnand-c16", "a", 2.0), rec("kvnand-d:auto", "a", 3.0),
               rec("base1", "b", None), rec("kvnand-c16", "b", 8.0), rec("kvnand-d:auto", "b", 4.0)]
    names, rows = geomeans(results)
    assert names == ["best KVNAND / base1", "kvnand-c16 / base1", "kvnand-d:auto / base1"]
    assert rows == [(128, ["3.00x (1/2)", "2.00x (1/2)", "3.00x (1/2)"])]


def test_cache_hit_is_identical_faster_and_resumes(run, tmp_path):
    t0 = time.perf_counter()
    cold = _json(run)
    t_cold = time.perf_counter() - t0
    entries = sorted((tmp_path / "cache" / "report").glob("*.json"))
    assert len(entries) == 6
    t0 = time.perf_counter()
    code, out, err = run(*SMALL, "--format", "json")
    t_warm = time.perf_counter() - t0
    assert json.loads(out)["results"] == cold and "6 from cache" in err
    assert t_warm < t_cold
    entries[0].unlink()  # as if the sweep had been interrupted before this point
    _, _, err = run(*SMALL, "--format", "json")
    assert "5 from cache" in err and len(list((tmp_path / "cache" / "report").glob("*.json"))) == 6


def test_no_cache_stores_nothing(run, tmp_path):
    _json(run, "--no-cache")
    assert not (tmp_path / "cache").exists()


def test_cache_key_covers_code_point_and_overrides(monkeypatch, tmp_path):
    c = cache_mod.Cache(tmp_path)
    key = c.key("kvnand-c16", "llama2-7b", 1000, None, "fast", {})
    assert key == c.key("kvnand-c16", "llama2-7b", 1000, None, "fast", {})
    others = [c.key("kvnand-c16", "llama2-7b", 1024, None, "fast", {}),
              c.key("kvnand-c16", "llama2-7b", 1000, "w8a8", "fast", {}),
              c.key("kvnand-c16", "llama2-7b", 1000, None, "event", {}),
              c.key("kvnand-c16", "llama2-7b", 1000, None, "fast", {"page_size": "8192"})]
    monkeypatch.setattr(cache_mod, "code_fingerprint", lambda: "edited")
    others.append(c.key("kvnand-c16", "llama2-7b", 1000, None, "fast", {}))
    assert key not in others and len(set(others)) == len(others)


def test_plot_writes_three_nonempty_figures_and_out_dir(run, tmp_path):
    code, _, err = run(*SMALL, "--plot", str(tmp_path / "fig.png"), "--out", str(tmp_path / "out"))
    assert code == 0, err
    for name in ("fig.png", "fig-energy.png", "fig-breakdown.png", "out/report.json", "out/report.csv"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert json.loads((tmp_path / "out" / "report.json").read_text())["schema"] == "kvnand.report/1"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("args, key", [
    (["--contexts", "1k,10q"], "--contexts"),
    (["--systems", "base1,no-such-system"], "--systems"),
    (["--models", "no-such-model"], "--models"),
    (["--set", "flash.no_such_key=3"], "flash.no_such_key"),
    (["--set", "page_size=lots"], "page_size"),
    (["--precision", "fp8"], "--precision"),
    (["--plot", "figure.jpg"], "--plot"),
    (["--systems", "base1:auto"], "system"),
])
def test_bad_input_exits_2_naming_the_key_and_writes_nothing(run, tmp_path, args, key):
    outputs = ["--plot", str(tmp_path / "f.png"), "--trace", str(tmp_path / "t.json"), "--out", str(tmp_path / "o")]
    if "--plot" in args:
        outputs = outputs[2:]
    code, out, err = run("--systems", "kvnand-c16", "--models", "llama2-7b", "--contexts", "1k", *outputs, *args)
    assert code == 2
    assert key in err and "Traceback" not in err and err.count("error") == 1
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == []


def test_plot_into_a_new_directory_creates_it(run, tmp_path):
    code, _, err = run("--systems", "kvnand-c16", "--models", "llama3.1-8b", "--contexts", "1k",
                       "--plot", "out/new/report.png")
    assert code == 0, err
    assert (tmp_path / "out" / "new" / "report.png").stat().st_size > 0


def test_plot_under_a_file_is_a_clear_error(run, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, _, err = run("--systems", "kvnand-c16", "--models", "llama3.1-8b", "--contexts", "1k",
                       "--plot", "afile/report.png")
    assert code == 2 and "not a directory" in err and "Traceback" not in err


def test_evaluate_returns_a_typed_result_that_is_its_record():
    """evaluate() gives a kvnand.Result: the record dict itself, typed numbers, standard JSON, and the engine's
    timeline and program beside the record (not in it)."""
    r = kvnand.evaluate("kvnand-d", "llama3.1-8b", 1000, mode="event", with_timeline=True)
    assert isinstance(r, kvnand.Result) and isinstance(r, dict)
    assert r.tokens_per_s == r["tokens_per_s"] > 0 and r.latency_s == r["latency_s"] and not r.oom
    assert r.timeline is not None and r.program is not None
    assert not any(k.startswith("_") for k in r)
    data = r.to_json()
    assert json.loads(json.dumps(data, allow_nan=False)) == data and data["tokens_per_s"] == r.tokens_per_s
    oom = kvnand.evaluate("base1", "llama3.1-70b", 100_000)
    assert isinstance(oom, kvnand.Result) and oom.oom and oom.tokens_per_s is None and oom.to_json()["oom"]
    auto = kvnand.evaluate("kvnand-d:auto", "llama3.1-8b", 1000)
    assert isinstance(auto, kvnand.Result) and auto["config"]["split"]
