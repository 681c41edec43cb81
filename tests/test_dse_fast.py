"""`kvnand dse run` without waste: no design evaluated twice, small spaces enumerated, a journal file shared
by workers on one machine, the global budget held, compact trial records with the full report on demand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import kvnand.study.dse.study as study_mod
from kvnand.errors import InputError
from kvnand.paths import DSE_ROOT
from kvnand.study.dse.grid import run_grid
from kvnand.study.dse.space import load_space
from kvnand.study.dse.study import JOURNAL, default_storage, enumerable, make_sampler, open_storage, run

PAPER = DSE_ROOT / "kvnand-8die-70b.yaml"   # 16 designs: C x 2 precisions + D x G2 = 1..7 x 2
SMOKE = DSE_ROOT / "smoke.yaml"             # 48 designs


def _quiet(*_a, **_k) -> None:
    pass


def _counting(monkeypatch) -> list[dict]:
    """Record every design the study evaluates."""
    seen: list[dict] = []
    real = study_mod.evaluate_design

    def counted(space, params):
        seen.append(dict(params))
        return real(space, params)

    monkeypatch.setattr(study_mod, "evaluate_design", counted)
    return seen


def _front(out) -> set[str]:
    import csv

    with open(out / "pareto.csv", newline="") as f:
        return {json.dumps({k: r[k] for k in ("system", "precision", "g2_dies")}) for r in csv.DictReader(f)}


@pytest.mark.slow  # a run and a grid of the paper space
def test_small_space_is_enumerated_each_design_once(tmp_path, monkeypatch):
    """The README's `--trials 200` on the 16-design paper space: 16 evaluations, no duplicate, the grid's front."""
    space = load_space(PAPER)
    seen = _counting(monkeypatch)
    s = run(space, tmp_path / "run", trials=200, log=_quiet)
    assert len(seen) == 16 and len({json.dumps(p, sort_keys=True) for p in seen}) == 16
    assert s["trials_taken"] == 16 and s["duplicates"] == 0 and s["trials"] == 16
    assert (tmp_path / "run" / JOURNAL).is_file()
    run_grid(space, tmp_path / "grid", log=_quiet)
    assert _front(tmp_path / "run") == _front(tmp_path / "grid")
    # optuna's own front agrees with ours (one trial per design)
    st = optuna.load_study(study_name=space.name, storage=open_storage(default_storage(tmp_path / "run")))
    assert {t.number for t in st.best_trials} == {p["number"] for p in s["pareto"]}
    # a second run finds every design done: nothing is asked, evaluated or stored
    again = run(space, tmp_path / "run", trials=200, log=_quiet)
    assert len(seen) == 16 and again["trials_taken"] == 16 and again["trials_this_run"] == 0


def test_brute_force_only_when_the_space_fits_the_budget(tmp_path):
    space = load_space(PAPER)
    assert enumerable(space, 16) == 16 and enumerable(space, 15) is None
    assert isinstance(make_sampler(space, 0, 16), optuna.samplers.BruteForceSampler)
    assert isinstance(make_sampler(space, 0, 15), optuna.samplers.TPESampler)
    data = yaml.safe_load(SMOKE.read_text())  # 3 x 601 clocks x (C + 7 D splits) x 2 designs: too many to enumerate
    data["parameters"]["clock"] = {"float": [200, 800], "step": 1, "unit": "MHz", "set": "flash.logic.clock",
                                   "default": 400}
    f = Path(tmp_path) / "space.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert enumerable(load_space(f), 10**6) is None


def test_continuous_space_is_sampled(tmp_path):
    data = yaml.safe_load(SMOKE.read_text())
    data["parameters"]["clock"] = {"float": [200, 800], "unit": "MHz", "set": "flash.logic.clock", "default": 400}
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert enumerable(load_space(f), 10**6) is None


def test_repeated_design_is_told_the_stored_values(tmp_path, monkeypatch):
    """TPE on a 48-design space repeats designs: each is evaluated once, repeats carry the stored values and
    constraints, and the budget counts them."""
    space = load_space(SMOKE)
    seen = _counting(monkeypatch)
    s = run(space, tmp_path, trials=40, seed=1, log=_quiet)
    st = optuna.load_study(study_name="smoke", storage=open_storage(default_storage(tmp_path)))
    trials = st.get_trials()
    assert s["trials_taken"] == 40 == sum(t.state != TrialState.WAITING for t in trials)
    dups = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert len(dups) == s["duplicates"] > 0
    assert len(seen) == 40 - len(dups) == len({json.dumps(p, sort_keys=True) for p in seen})
    for t in dups:
        first = trials[t.user_attrs["duplicate_of"]]
        assert "duplicate_of" not in first.user_attrs and first.number < t.number
        assert (first.params, first.values, first.constraints) == (t.params, t.values, t.constraints)
        assert "report" not in t.user_attrs  # nothing stored twice


def test_compact_record_and_full_report_on_demand(tmp_path, kvnand_cli):
    space = load_space(PAPER)
    run(space, tmp_path, trials=16, log=_quiet)
    st = optuna.load_study(study_name=space.name, storage=open_storage(default_storage(tmp_path)))
    sizes = [len(json.dumps(t.user_attrs)) for t in st.trials]
    assert max(sizes) < 1500  # was ~4.8 KB a trial with every point's record
    code, out, err = kvnand_cli("dse", "show", "8", "--storage", default_storage(tmp_path), "--study", space.name)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["label"] == "KVNAND-D-(4+4) W8A8" and len(doc["points"]) == 8
    assert doc["values"]["latency_s"] == st.trials[8].values[0] == doc["metrics"]["latency_s"]
    assert doc["points"][0]["latency_s"] > 0 and "energy_j_per_token" in doc["points"][0]
    code, _, err = kvnand_cli("dse", "show", "99", "--storage", default_storage(tmp_path), "--study", space.name)
    assert code == 2 and "TRIAL" in err and "0 to 15" in err
    code, _, err = kvnand_cli("dse", "show", "0", "--storage", str(tmp_path / "none.journal"), "--study", "x")
    assert code == 2 and "no such study journal" in err and not (tmp_path / "none.journal").exists()


def test_a_file_that_is_not_a_journal_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.journal"
    bad.write_text("not json\n{\n")
    with pytest.raises(InputError, match="journal"):
        open_storage(str(bad)).get_all_studies()


def test_dead_worker_trial_is_failed(tmp_path):
    """A journal has no heartbeats: a running trial whose worker process is gone is failed by the next look."""
    storage = open_storage(str(tmp_path / "s.journal"))
    st = optuna.create_study(storage=storage, study_name="s")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    import socket

    gone, alive = st.ask(), st.ask()
    gone.set_user_attr("worker", f"{socket.gethostname()}:{dead}")
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    assert study_mod.fail_dead_workers(st) == [gone.number]
    assert [t.state for t in st.get_trials()] == [TrialState.FAIL, TrialState.RUNNING]


@pytest.mark.slow  # two worker processes
def test_two_workers_share_the_journal_and_hold_the_budget(tmp_path, slow_smoke):
    budget = 30
    out = tmp_path / "out"
    s = run(load_space(slow_smoke), out, trials=budget, workers=2, log=_quiet)
    assert s["worker_exit_codes"] == [0, 0] and s["storage"].endswith(JOURNAL)
    st = optuna.load_study(study_name="smoke", storage=open_storage(default_storage(out)))
    taken = [t for t in st.get_trials() if t.state != TrialState.WAITING and not t.user_attrs.get("surplus")]
    assert len(taken) == budget == s["trials_taken"]
    assert all(t.state == TrialState.COMPLETE for t in taken)
    assert len({t.user_attrs["worker"] for t in taken}) == 2, "both workers should have run trials"
    # a second run with the same budget takes nothing more
    again = run(load_space(slow_smoke), out, trials=budget, workers=2, log=_quiet)
    assert again["trials_taken"] == budget and again["trials_this_run"] == 0


def test_plain_path_to_an_sqlite_study_opens_it(tmp_path):
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="g")
    storage = open_storage(str(tmp_path / "study.db"))  # as optuna-dashboard takes a path
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["g"]


def test_grid_loads_no_sqlalchemy_or_scipy_stats(tmp_path):
    """`kvnand dse grid` pays for what it uses: optuna's journal (no SQLAlchemy), no scipy.stats, and no
    matplotlib without --plot (which then draws the Pareto scatter and the heatmap)."""
    data = yaml.safe_load(SMOKE.read_text())
    data["parameters"] = {"dies": 8, "g2_dies": {"choices": [3, 4], "default": 4}, "precision": "w8a8"}
    data["known_designs"] = []
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    code = ("import sys, json; from kvnand.cli import main; sys.argv = ['kvnand', 'dse', 'grid', sys.argv[1], "
            "'--out', sys.argv[2]]\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', "
            "'matplotlib') or m.startswith('scipy.stats'))))")
    proc = subprocess.run([sys.executable, "-c", code, str(f), str(tmp_path / "out")], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    assert (tmp_path / "out" / JOURNAL).is_file() and not list((tmp_path / "out").glob("*.png"))
    plotted = subprocess.run([sys.executable, "-m", "kvnand.cli", "dse", "grid", str(f), "--out",
                              str(tmp_path / "plotted"), "--plot"], capture_output=True, text=True, cwd=DSE_ROOT.parent)
    assert plotted.returncode == 0, plotted.stderr[-2000:]
    assert (tmp_path / "plotted" / "pareto.png").is_file() and (tmp_path / "plotted" / "heatmap.png").is_file()
