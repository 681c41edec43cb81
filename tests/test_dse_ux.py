"""DSE usability: grids are optuna studies, range bounds that follow other parameters, infeasible spaces
said up front with the reason, `dse pareto` as a table and a figure, paper-ready DSE figures, progress, and a
clear message for a PostgreSQL URL without its driver."""

from __future__ import annotations

import csv
import importlib.util
import itertools

import optuna
import pytest
import yaml

from kvnand.errors import InputError
from kvnand.paths import DSE_ROOT
from kvnand.study.dse import export
from kvnand.study.dse.grid import run_grid
from kvnand.study.dse.space import load_space
from kvnand.study.dse.study import default_storage, open_storage, run

SMOKE = DSE_ROOT / "smoke.yaml"
PAPER = DSE_ROOT / "kvnand-8die-70b.yaml"


def _quiet(*_a, **_k) -> None:
    pass


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_is_an_optuna_study_that_pareto_opens(tmp_path, kvnand_cli):
    seen = []
    s = run_grid(load_space(SMOKE), tmp_path, log=_quiet, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (48, 48) and len(seen) == 48
    study = optuna.load_study(study_name="smoke", storage=open_storage(default_storage(tmp_path)))
    assert len(study.trials) == 48 == s["designs"]
    front = {int(r["number"]) for r in _csv(tmp_path / "pareto.csv")}
    assert {t.number for t in study.best_trials} == front  # optuna sees the same feasibility and front
    code, out, err = kvnand_cli("dse", "pareto", "--storage", default_storage(tmp_path), "--study", "smoke",
                                "--plot", str(tmp_path / "front.svg"))
    assert code == 0, err
    assert f"Pareto front: {len(front)} of {s['feasible']} feasible designs" in out
    assert (tmp_path / "front.svg").read_bytes().startswith(b"<?xml")
    code, out, _ = kvnand_cli("dse", "pareto", "--storage", default_storage(tmp_path), "--study", "smoke",
                              "--format", "csv")
    assert code == 0 and {int(r["number"]) for r in csv.DictReader(out.splitlines())} == front


def _space(tmp_path, **edits):
    data = yaml.safe_load(SMOKE.read_text())
    data["parameters"].update(dies={"choices": [4, 8], "default": 8},
                              g2_dies={"int": [1, "dies - 1"], "when": {"variant": "D"}, "default": 4})
    data["parameters"] = {k: data["parameters"][k] for k in ("dies", "variant", "g2_dies", "precision")}
    data.update(edits)
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return f


def test_range_bound_follows_an_earlier_parameter(tmp_path):
    space = load_space(_space(tmp_path))
    designs = space.grid()
    d = [(c["dies"], c["g2_dies"]) for c in designs if c["variant"] == "D"]
    assert sorted(set(d)) == [(4, g) for g in range(1, 4)] + [(8, g) for g in range(1, 8)]
    run(space, tmp_path / "run", trials=12, log=_quiet)
    rows = _csv(tmp_path / "run" / "trials.csv")
    assert all(int(r["g2_dies"]) < int(r["dies"]) for r in rows if r["g2_dies"])
    assert not any(k.startswith("g2_of") for k in rows[0])  # one parameter, one column


@pytest.mark.parametrize("bound, message", [("dice - 1", "earlier parameter"), ("dies ** 2", "only numbers")])
def test_bad_range_bound_is_a_clear_error(tmp_path, bound, message):
    f = _space(tmp_path)
    f.write_text(f.read_text().replace("dies - 1", bound))
    with pytest.raises(InputError, match=message) as exc:
        load_space(f)
    assert "parameters.g2_dies" in str(exc.value) and str(f) in str(exc.value)


def test_mostly_infeasible_space_says_so_and_why(tmp_path, kvnand_cli):
    code, out, err = kvnand_cli("dse", "grid", str(PAPER), "--out", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    warn = next(i for i, line in enumerate(lines) if line.startswith("warning: most of this space is infeasible"))
    assert "(14 of 16 designs)" in lines[warn]
    assert warn < next(i for i, line in enumerate(lines) if line.startswith("Pareto front"))  # before the front
    assert lines[warn + 1].strip().startswith("capacity: 14 design(s) (out of memory at opt-30b @100k in")


def test_pareto_figure_marks_infeasible_and_labels_do_not_overprint(tmp_path):
    space = load_space(PAPER)
    run_grid(space, tmp_path, log=_quiet)
    study = optuna.load_study(study_name=space.name, storage=open_storage(default_storage(tmp_path)))
    rows = export.rows_from_study(study, list(space.spec.objectives))
    front = export.pareto(rows, ["minimize", "minimize", "maximize"])
    fig = export.pareto_figure(None, rows, front, list(space.spec.objectives))
    (legend,) = fig.legends
    assert "infeasible (14)" in [t.get_text() for t in legend.get_texts()]
    assert "published, infeasible" in [t.get_text() for t in legend.get_texts()]
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert boxes and not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
        ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert not any(a.overlaps(b) for a, b in itertools.combinations(ticks, 2))
    heat = export.heatmap_figure(None, rows)
    images = [im for ax in heat.axes for im in ax.images]
    assert len(images) == 4 and all(im.colorbar is not None for im in images)


def test_postgres_without_driver_says_how_to_install(monkeypatch):
    from kvnand.study.dse.study import open_storage

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("psycopg") else real(name, *a))
    with pytest.raises(InputError, match=r"pip install 'kvnand\[postgres\]'"):
        open_storage("postgresql://user@localhost/db")
