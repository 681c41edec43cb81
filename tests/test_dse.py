"""Design-space exploration end to end, with the real simulator, optuna and SQLite (no mocks).

The PostgreSQL (multi-machine) case is in test_dse_postgres.py.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from kvnand.errors import InputError
from kvnand.paths import DSE_ROOT, REPO_ROOT
from kvnand.study.dse.grid import run_grid
from kvnand.study.dse.objectives import dominates
from kvnand.study.dse.space import load_space
from kvnand.study.dse.study import default_storage, open_storage, run

SMOKE = DSE_ROOT / "smoke.yaml"
MIN3 = ["minimize"] * 3


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _values(row: dict, objectives: list[str]) -> list[float]:
    return [float(row[o]) for o in objectives]


def _quiet(*_a, **_k) -> None:
    pass


def test_shipped_spaces_load():
    paper = load_space(DSE_ROOT / "kvnand-8die-70b.yaml")
    labels = [label for label, _ in paper.known_designs()]
    assert len(labels) == 16 and "KVNAND-C-8 W8A8" in labels and "KVNAND-D-(4+4) W4A16" in labels
    assert len(paper.grid()) == 16                 # the whole paper space: C x 2 + D x 7 x 2
    assert [p.context for p in paper.points][-1] == 100_000
    edge = load_space(DSE_ROOT / "edge-device.yaml")
    assert "KVNAND-D-(12+4) BF16" in [label for label, _ in edge.known_designs()]
    d = edge.design(dict(edge.known_designs()[0][1]))
    assert d.system == "kvnand-c16" and dict(d.overrides)["flash.die.cell.mode"] == "SLC"


@pytest.mark.slow  # a full study plus its exports
def test_study_end_to_end(tmp_path):
    space = load_space(SMOKE)
    s = run(space, tmp_path, trials=24, log=_quiet)
    objectives = s["objectives"]
    for f in ("trials.csv", "pareto.csv", "known_designs.csv", "pareto.png", "summary.json", "study.journal"):
        assert (tmp_path / f).is_file(), f
    rows = _csv(tmp_path / "trials.csv")
    assert s["trials_taken"] == 24 and len(rows) == 24 - s["duplicates"]  # one row per evaluated design
    assert len({json.dumps({k: r[k] for k in ("variant", "g2_dies", "planes_per_die", "precision")}) for r in rows}) \
        == len(rows)
    assert [r["label"] for r in rows[:5]] == [label for label, _ in space.known_designs()]  # published first

    feasible = [r for r in rows if r["feasible"] == "True"]
    infeasible = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"] == "False"]
    assert feasible and infeasible
    assert all(r["violated"] for r in infeasible)  # recorded with the constraint they break
    front = _csv(tmp_path / "pareto.csv")
    assert front and all(r["feasible"] == "True" for r in front)
    for p in front:  # non-dominated among all feasible trials
        assert not any(dominates(_values(o, objectives), _values(p, objectives), MIN3) for o in feasible)
    front_values = [_values(p, objectives) for p in front]
    for r in feasible:  # and complete: every other feasible trial is dominated by, or equal to, a front member
        v = _values(r, objectives)
        assert v in front_values or any(dominates(f, v, MIN3) for f in front_values)

    for k in s["known_designs"]:
        assert k["status"] in ("pareto-optimal", "dominated", "infeasible", "failed")
        if k["status"] == "dominated":
            assert k["dominated_by"] in {int(p["number"]) for p in front}
            assert min(k["gain"].values()) >= 0 and max(k["gain"].values()) > 0

    study = optuna.load_study(study_name="smoke", storage=open_storage(default_storage(tmp_path)))
    t = study.trials[0]
    assert study.user_attrs["kvnand"]["constraints"] == ["config", "capacity", "power_w", "logic_area_fraction"]
    assert len(t.constraints) == 4
    report = t.user_attrs["report"]
    json.dumps(report)
    assert report["metrics"]["latency_s"] > 0 and "params" not in report  # compact: the params are the trial's
    assert [set(p) for p in report["points"]] == [{"model", "context", "oom"}] * 2

    # the study refuses to resume under a different space
    other = tmp_path / "other.yaml"
    other.write_text(SMOKE.read_text().replace("[latency_s, energy_j_per_token, cost_usd]",
                                               "[latency_s, cost_usd, energy_j_per_token]"))
    with pytest.raises(InputError, match="different space"):
        run(load_space(other), tmp_path, trials=25, log=_quiet)


def test_same_seed_same_result(tmp_path):
    space = load_space(SMOKE)
    runs = []
    for i in range(2):
        run(space, tmp_path / str(i), trials=14, seed=3, log=_quiet)
        study = optuna.load_study(study_name="smoke", storage=open_storage(default_storage(tmp_path / str(i))))
        runs.append([(t.params, t.values) for t in study.trials])
    assert runs[0] == runs[1]


def test_grid(tmp_path):
    space = load_space(SMOKE)
    s = run_grid(space, tmp_path, log=_quiet)
    rows = _csv(tmp_path / "trials.csv")
    assert len(rows) == s["designs"] == 48          # C: 3 planes x 2 precisions; D: 7 splits x 3 x 2
    assert (tmp_path / "heatmap.png").is_file() and (tmp_path / "pareto.png").is_file()
    assert sorted(r["label"] for r in rows if r["label"]) == sorted(label for label, _ in space.known_designs())
    assert any("logic_area_fraction" in r["violated"] for r in rows)  # 64 planes: logic > 3 % of the die
    front = _csv(tmp_path / "pareto.csv")
    feasible = [_values(r, s["objectives"]) for r in rows if r["feasible"] == "True"]
    for p in front:
        assert not any(dominates(o, _values(p, s["objectives"]), MIN3) for o in feasible)


def _kvnand(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kvnand.cli", *args], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for(pred, timeout: float, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (got := pred()) is not None:
            return got
        time.sleep(poll_s)
    raise AssertionError("timed out")


@pytest.mark.slow  # a 2-worker study killed and resumed in subprocesses
def test_kill9_then_resume(tmp_path, slow_smoke):
    """Kill -9 one worker mid-trial, then the whole run; resuming keeps every finished trial, fails the
    killed ones (stale heartbeat) and stops at exactly the budget."""
    budget = 40
    out_dir = tmp_path / "out"
    args = ("dse", "run", str(slow_smoke), "--trials", str(budget), "--out", str(out_dir))
    proc = _kvnand(*args, "--workers", "2")
    storage = None

    def running_worker():
        nonlocal storage
        if not (out_dir / "study.journal").exists():
            return None
        storage = storage or open_storage(default_storage(out_dir))
        try:
            study = optuna.load_study(study_name="smoke", storage=storage)
        except KeyError:  # the run has not created the study yet
            return None
        done = study.get_trials(states=(TrialState.COMPLETE,))
        running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "worker" in t.user_attrs]
        return running[0] if len(done) >= 6 and running else None

    victim = _wait_for(running_worker, 120, poll_s=0.02)
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)  # and at once the coordinator and the other worker
    proc.communicate(timeout=30)
    study = optuna.load_study(study_name="smoke", storage=storage)
    before = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(before) < budget

    resumed = _kvnand(*args)
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    study = optuna.load_study(study_name="smoke", storage=storage)
    trials = [t for t in study.trials if not t.user_attrs.get("surplus")]
    states = [t.state for t in trials if t.state != TrialState.WAITING]
    assert len(states) == budget and set(states) <= {TrialState.COMPLETE, TrialState.FAIL}
    after = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
    assert all(after.get(n) == v for n, v in before.items())          # no finished trial lost or changed
    assert study.trials[victim.number].state in (TrialState.COMPLETE, TrialState.FAIL)
    duplicates = sum("duplicate_of" in t.user_attrs for t in trials)  # told a stored design's values
    assert len(_csv(out_dir / "trials.csv")) == budget - duplicates


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from kvnand.cli import main

    old = sys.argv
    sys.argv = ["kvnand", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("edit", "key"), [
    (lambda d: d["parameters"]["g2_dies"].update(intt=[1, 7]), "parameters.g2_dies.intt"),
    (lambda d: d.update(objectives=["latency"]), "objectives[0]"),
    (lambda d: d["parameters"].update(clock={"float": [200, 800], "unit": "MHz", "set": "flash.logic.clok"}),
     "parameters.clock"),
    (lambda d: d["known_designs"][1]["params"].update(g2_dies=[9]), "known_designs[1].params.g2_dies"),
    (lambda d: d["workload"].update(contexts=["1k", "ten"]), "workload.contexts.ten"),
])
def test_bad_space_file_is_a_clear_error(tmp_path, capsys, edit, key):
    data = yaml.safe_load(SMOKE.read_text())
    edit(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, err = _cli(["dse", "run", str(bad), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert str(bad) in err and key in err and "Traceback" not in err


def test_malformed_space_and_options(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: [unclosed\n")
    code, _, err = _cli(["dse", "grid", str(bad)], capsys)
    assert code == 2 and str(bad) in err and "malformed YAML" in err
    code, _, err = _cli(["dse", "run", str(SMOKE), "--workers", "0", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--workers" in err
    code, _, err = _cli(["dse", "pareto", "--storage", default_storage(tmp_path), "--study", "nope"], capsys)
    assert code == 2 and "no such study journal" in err and not (tmp_path / "study.journal").exists()
    open_storage(default_storage(tmp_path))  # an empty study journal
    code, _, err = _cli(["dse", "pareto", "--storage", default_storage(tmp_path), "--study", "nope"], capsys)
    assert code == 2 and "nope" in err


def test_lifetime_objective_and_constraint(tmp_path):
    data = yaml.safe_load(SMOKE.read_text())
    data["objectives"] = ["latency_s@10k", "lifetime_years"]
    data["constraints"] = {"lifetime_years": {"min": 1}, "read_disturb_margin": {"min": 1}}
    data["parameters"] = {"dies": 8, "g2_dies": {"int": [1, 7], "default": 4}, "precision": "w8a8"}
    data["known_designs"] = [{"label": "KVNAND-D-({g1_dies}+{g2_dies})", "params": {"g2_dies": 4}}]
    f = tmp_path / "rel.yaml"
    f.write_text(yaml.safe_dump(data))
    s = run_grid(load_space(f), tmp_path / "out", log=_quiet)
    assert s["directions"] == ["minimize", "maximize"]
    rows = _csv(tmp_path / "out" / "trials.csv")
    assert len(rows) == 7
    for r in rows:
        assert float(r["lifetime_years"]) > 0 and float(r["read_disturb_margin"]) > 0
        assert math.isfinite(float(r["latency_s@10k"]))
