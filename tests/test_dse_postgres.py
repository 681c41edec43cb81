"""Distributed DSE on a real PostgreSQL server: two `kvnand dse run` processes (as on two machines) share
one study; the global budget holds exactly, the published designs are enqueued once, and the Pareto set
reported by `kvnand dse pareto` is the non-dominated feasible set of the stored trials."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from kvnand.paths import REPO_ROOT
from kvnand.study.dse.objectives import dominates
from kvnand.study.dse.space import load_space
from kvnand.study.dse.study import directions


def _kvnand(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kvnand.cli", *args], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.slow  # two `kvnand dse run` processes against a real server
def test_two_processes_share_one_study(postgres_url, tmp_path, slow_smoke):
    budget = 30
    procs = [_kvnand("dse", "run", str(slow_smoke), "--storage", postgres_url, "--study", "shared", "--trials",
                     str(budget), "--seed", str(i), "--out", str(tmp_path / f"machine{i}")) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "optuna-dashboard postgresql" in out

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials()
    taken = [t for t in trials if t.state != TrialState.WAITING and not t.user_attrs.get("surplus")]
    assert len(taken) == budget
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in taken)
    failed = [t.user_attrs.get("error", "worker died") for t in taken if t.state == TrialState.FAIL]
    assert not failed, f"{len(failed)} trials failed, e.g. {failed[0]}"  # a study of failures proves nothing
    assert len({t.user_attrs["worker"] for t in taken}) == 2, "both processes should have run trials"
    labels = [t.user_attrs["known_design"] for t in trials if "known_design" in t.user_attrs]
    assert len(labels) == len(set(labels)) == 5

    # a design already stored is not evaluated again: its trial is told the stored values (two workers may
    # still evaluate one design at the same moment, before either has stored it)
    evaluated = [t for t in taken if "duplicate_of" not in t.user_attrs]
    for t in taken:
        if "duplicate_of" in t.user_attrs:
            first = trials[t.user_attrs["duplicate_of"]]
            assert (first.params, first.values, first.constraints) == (t.params, t.values, t.constraints)

    # the Pareto set, recomputed here from the stored trials by brute force
    dirs = directions(load_space(slow_smoke))
    feasible = [t for t in evaluated if t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())]
    assert feasible, "no feasible trial: the Pareto comparison below would be empty on both sides"
    front = [t for t in feasible if not any(dominates(o.values, t.values, dirs) for o in feasible)]
    firsts = {}
    for t in sorted(front, key=lambda t: t.number):
        firsts.setdefault(json.dumps(t.params, sort_keys=True), t.number)
    expected = sorted(firsts.values())

    p = _kvnand("dse", "pareto", "--storage", postgres_url, "--study", "shared", "--format", "json")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert sorted(r["number"] for r in doc["pareto"]) == expected
    assert doc["trials"] == len(evaluated)
    for i in range(2):  # both runs waited for each other's last trials, so both exported the final front
        rows = (tmp_path / f"machine{i}" / "pareto.csv").read_text().splitlines()[1:]
        assert sorted(int(r.split(",")[0]) for r in rows) == expected
