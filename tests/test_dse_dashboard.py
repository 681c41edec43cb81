"""optuna-dashboard reads the study of `kvnand dse run` as we do: same feasibility, same Pareto front.

The study is opened through optuna-dashboard's public WSGI app (the server `kvnand dse run` recommends), and
its study-detail API is compared with our pareto.csv. Needs the `dev` extra (optuna-dashboard).
"""

from __future__ import annotations

import csv
import io
import json
from wsgiref.util import setup_testing_defaults

import optuna
import pytest

from kvnand.paths import DSE_ROOT
from kvnand.study.dse.space import load_space
from kvnand.study.dse.study import default_storage, open_storage, run

dashboard = pytest.importorskip("optuna_dashboard")


def test_constraints_key_is_optunas():
    from optuna.samplers._base import _CONSTRAINTS_KEY

    from kvnand.study.dse.study import CONSTRAINTS_KEY

    assert CONSTRAINTS_KEY == _CONSTRAINTS_KEY


def _get(app, path: str) -> dict:
    env: dict = {"PATH_INFO": path}
    setup_testing_defaults(env)
    status = []
    body = b"".join(app(env, lambda s, h, *_: status.append(s)))
    assert status[0].startswith("200"), (status, body[:300])
    return json.loads(body)


def test_dashboard_front_is_ours_and_excludes_infeasible_designs(tmp_path):
    # the paper space: 16 published designs, 14 of them out of memory somewhere in the workload
    s = run(load_space(DSE_ROOT / "kvnand-8die-70b.yaml"), tmp_path, trials=16, log=lambda *_: None)
    assert s["infeasible"] == 14
    storage = open_storage(default_storage(tmp_path))
    study = optuna.load_study(study_name="kvnand-8die-70b", storage=storage)
    detail = _get(dashboard.wsgi(storage), f"/api/studies/{study._study_id}")

    trials = {t["number"]: t for t in detail["trials"]}
    with open(tmp_path / "trials.csv", newline="") as f:
        ours = {int(r["number"]): r["feasible"] == "True" for r in csv.DictReader(f)}
    for n, feasible in ours.items():  # the dashboard sees each trial's constraints, with our verdict
        cons = trials[n]["constraints"]
        assert len(cons) == len(study.user_attrs["kvnand"]["constraints"])
        assert all(c <= 0 for c in cons) == feasible
    with open(tmp_path / "pareto.csv", newline="") as f:
        front = {int(r["number"]) for r in csv.DictReader(f)}
    assert {t["number"] for t in detail["best_trials"]} == front
    # optuna itself agrees (its best_trials honour the same stored constraints)
    assert {t.number for t in study.best_trials} == front
    # the per-trial record stays compact
    assert max(len(json.dumps(t.user_attrs)) for t in study.trials) < 12_000


def test_trials_csv_keeps_the_measured_values_of_infeasible_designs(tmp_path):
    run(load_space(DSE_ROOT / "kvnand-8die-70b.yaml"), tmp_path, trials=16, log=lambda *_: None)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "trials.csv").read_text())))
    infeasible = [r for r in rows if r["feasible"] == "False"]
    assert any(r["latency_s"] and float(r["latency_s"]) > 0 for r in infeasible)


def test_studies_with_per_key_constraints_still_read(tmp_path):
    """Trials recorded before the list format (Trial.set_constraint) keep their feasibility."""
    from kvnand.study.dse import export

    study = optuna.create_study(storage=open_storage(default_storage(tmp_path)), study_name="old",
                                directions=["minimize"])

    def objective(trial):
        trial.suggest_int("x", 0, 1)
        trial.set_constraint("capacity", 1.0 if trial.number == 0 else -1.0)
        return 1.0

    study.optimize(objective, n_trials=2)
    assert [r.feasible for r in export.rows_from_study(study, ["latency_s"])] == [False, True]
